-- Argo CD health check for flotilla.dev/v1alpha1 Subscription (cluster-scoped).
-- Written for Argo CD's Lua VM: only the base, table and (safe) os libraries are loaded, so
-- this script uses no string functions. The Subscription controller writes status.phase
-- (Pending, Provisioning, Trialing, Active, PastDue, Suspended, Cancelling, Cancelled),
-- status.observedGeneration and the Ready, PlanFound, Provisioned, QuotaApplied and OverQuota
-- conditions; Ready's reason says why a subscription is not Ready.
local function condition(status, type_)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

-- Ready=False reasons that need someone to change something: the spec, the Plan, a namespace
-- held by someone else, or a ResourceQuota that refuses Flotilla's objects.
local needsAction = {
  InvalidSpec = true,
  NotFound = true,
  NotReady = true,
  NamespaceConflict = true,
  QuotaExceeded = true,
}

local hs = {}
local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the Subscription controller"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "waiting for the controller to observe generation " .. tostring(generation)
  return hs
end
local phase = status.phase
local ready = condition(status, "Ready")
local message = phase
if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
  message = ready.message
end
hs.message = message

if phase == "Cancelled" then
  -- The end state spec.state asked for: nothing is provisioned any more, nothing is pending.
  hs.status = "Healthy"
  return hs
end
if phase == "Cancelling" then
  hs.status = "Progressing"
  return hs
end
if ready ~= nil and ready.status == "False" and needsAction[ready.reason] then
  hs.status = "Degraded"
  return hs
end
if phase == "Suspended" then
  hs.status = "Suspended"
  return hs
end
if phase == "Trialing" or phase == "Active" or phase == "PastDue" then
  if ready ~= nil and ready.status == "True" then
    -- PastDue is Ready: the tenant still runs, and the message says when it will be
    -- suspended; a billing state is not a deployment failure.
    hs.status = "Healthy"
    local overQuota = condition(status, "OverQuota")
    if overQuota ~= nil and overQuota.status == "True" then
      hs.message = message .. "; over quota: " .. overQuota.message
    end
    return hs
  end
  -- Not Ready without a reason that needs action: namespaces still terminating.
  hs.status = "Progressing"
  return hs
end
if phase == "Pending" or phase == "Provisioning" then
  hs.status = "Progressing"
  return hs
end
hs.status = "Unknown"
hs.message = "unexpected phase " .. tostring(phase)
return hs
