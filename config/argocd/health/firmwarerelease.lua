-- Argo CD health check for flotilla.dev/v1alpha1 FirmwareRelease.
-- Written for Argo CD's Lua VM: only the base, table and (safe) os libraries are loaded, so
-- this script uses no string functions. The release controller writes status.phase (Pending,
-- Ready, Invalid, Terminating), status.observedGeneration and the Ready and InUse conditions.
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

local hs = {}
local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the release controller to validate the release"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "waiting for the controller to observe generation " .. tostring(generation)
  return hs
end
local ready = condition(status, "Ready")
local inUse = condition(status, "InUse")
local phase = status.phase
if phase == "Terminating" then
  hs.status = "Progressing"
  if inUse ~= nil and inUse.status == "True" then
    hs.message = inUse.message
  else
    hs.message = "being deleted"
  end
  return hs
end
if phase == "Invalid" or (ready ~= nil and ready.status == "False") then
  hs.status = "Degraded"
  if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
    hs.message = ready.message
  else
    hs.message = "the release is invalid"
  end
  return hs
end
if phase == "Ready" and ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
  if inUse ~= nil and inUse.status == "True" then
    hs.message = hs.message .. "; " .. inUse.message
  end
  return hs
end
if phase == "Pending" then
  hs.status = "Progressing"
  hs.message = "waiting for the release controller to validate the release"
  return hs
end
hs.status = "Unknown"
hs.message = "unexpected phase " .. tostring(phase)
return hs
