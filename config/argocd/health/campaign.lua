-- Argo CD health check for flotilla.dev/v1alpha1 Campaign.
-- Written for Argo CD's Lua VM: only the base, table and (safe) os libraries are loaded, so
-- this script uses no string functions. The Campaign controller writes status.phase (Draft,
-- Scheduled, Running, Paused, Completed, Cancelled, Failed), status.observedGeneration,
-- status.counts and the Ready, TemplatesValid, ChannelsReady and FailureThresholdExceeded
-- conditions; Ready's reason says what the campaign is doing or waiting for.
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

local function counts(status)
  local c = status.counts
  if c == nil then
    return ""
  end
  return " (" .. tostring(c.sent or 0) .. "/" .. tostring(c.targeted or 0) .. " sent, "
    .. tostring(c.failed or 0) .. " failed)"
end

-- Ready=False reasons that need someone to change the Campaign or its Channels.
local needsAction = {
  InvalidSpec = true,
  TemplatesInvalid = true,
  NoChannelReady = true,
}

local hs = {}
local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the Campaign controller"
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

if phase == "Completed" then
  hs.status = "Healthy"
  hs.message = message .. counts(status)
  return hs
end
if phase == "Cancelled" then
  -- The end state spec.cancel asked for.
  hs.status = "Healthy"
  hs.message = message .. counts(status)
  return hs
end
if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = message .. counts(status)
  return hs
end
if ready ~= nil and ready.status == "False" and needsAction[ready.reason] then
  hs.status = "Degraded"
  hs.message = message
  return hs
end
if phase == "Running" then
  local trigger = obj.spec ~= nil and obj.spec.trigger ~= nil
  if trigger and ready ~= nil and ready.status == "True" then
    -- An always-on campaign never completes: Running (listening for its trigger) is its
    -- steady state.
    hs.status = "Healthy"
    hs.message = message .. counts(status)
    return hs
  end
  hs.status = "Progressing"
  hs.message = message .. counts(status)
  return hs
end
if phase == "Paused" then
  local threshold = condition(status, "FailureThresholdExceeded")
  if threshold ~= nil and threshold.status == "True" then
    hs.status = "Degraded"
    hs.message = message .. counts(status)
    return hs
  end
  hs.status = "Suspended"
  hs.message = message .. counts(status)
  return hs
end
if phase == "Draft" then
  hs.status = "Suspended"
  hs.message = message
  return hs
end
if phase == "Scheduled" then
  hs.status = "Progressing"
  hs.message = message
  if status.nextSendAt ~= nil then
    hs.message = message .. " (" .. tostring(status.nextSendAt) .. ")"
  end
  return hs
end
hs.status = "Unknown"
hs.message = "unexpected phase " .. tostring(phase)
return hs
