-- Argo CD health check for flotilla.dev/v1alpha1 FirmwareRollout.
-- Written for Argo CD's Lua VM: only the base, table and (safe) os libraries are loaded, so
-- this script uses no string functions. The rollout controller writes status.phase (Pending,
-- AwaitingApproval, Progressing, Paused, WaitingForWindow, Succeeded, Failed, RollingBack,
-- RolledBack, Aborted), status.observedGeneration, status.counts and the Ready, Progressing,
-- ReleaseReady, Approved, DevicesContended, FailureThresholdExceeded and InMaintenanceWindow
-- conditions. The Progressing condition's message says why the rollout is in its phase.
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

local function isTrue(c)
  return c ~= nil and c.status == "True"
end

local function isFalse(c)
  return c ~= nil and c.status == "False"
end

local function messageOf(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local function counts(status)
  local c = status.counts
  if c == nil then
    return ""
  end
  local text = " (" .. tostring(c.succeeded or 0) .. "/" .. tostring(c.targeted or 0)
    .. " devices succeeded, " .. tostring(c.failed or 0) .. " failed"
  if c.skipped ~= nil and c.skipped > 0 then
    text = text .. ", " .. tostring(c.skipped) .. " skipped"
  end
  if status.currentWave ~= nil and status.currentWave > 0 then
    text = text .. ", wave " .. tostring(status.currentWave)
  end
  return text .. ")"
end

local hs = {}
local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the rollout controller to compute the plan"
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
local progressing = condition(status, "Progressing")
local threshold = condition(status, "FailureThresholdExceeded")
local why = messageOf(progressing, phase)

if isFalse(ready) and ready.reason == "InvalidSpec" then
  hs.status = "Degraded"
  hs.message = messageOf(ready, "the spec is invalid")
  return hs
end
if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = why .. counts(status)
  return hs
end
if phase == "Failed" or phase == "Aborted" or phase == "RolledBack" then
  hs.status = "Degraded"
  hs.message = phase .. ": " .. why .. counts(status)
  return hs
end
if phase == "Progressing" or phase == "RollingBack" then
  hs.status = "Progressing"
  hs.message = why .. counts(status)
  return hs
end
if phase == "Paused" then
  if isTrue(threshold) then
    -- Held by the failure threshold: devices failed, and only a person can judge whether to
    -- go on (spec.resume) or stop.
    hs.status = "Degraded"
    hs.message = why .. counts(status)
    return hs
  end
  hs.status = "Suspended"
  hs.message = why .. counts(status)
  return hs
end
if phase == "WaitingForWindow" then
  hs.status = "Suspended"
  hs.message = messageOf(condition(status, "InMaintenanceWindow"), why) .. counts(status)
  return hs
end
if phase == "AwaitingApproval" then
  hs.status = "Suspended"
  hs.message = messageOf(condition(status, "Approved"), why)
  return hs
end
if phase == "Pending" then
  hs.status = "Progressing"
  local release = condition(status, "ReleaseReady")
  local contended = condition(status, "DevicesContended")
  if isFalse(release) then
    hs.message = messageOf(release, "waiting for the FirmwareRelease to be Ready")
  elseif isTrue(contended) then
    hs.message = messageOf(contended, "selected devices are held by another rollout")
  else
    hs.message = why
  end
  return hs
end
hs.status = "Unknown"
hs.message = "unexpected phase " .. tostring(phase)
return hs
