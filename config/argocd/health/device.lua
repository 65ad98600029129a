-- Argo CD health check for flotilla.dev/v1alpha1 Device.
-- Written for Argo CD's Lua VM: only the base, table and (safe) os libraries are loaded, so
-- this script uses no string functions. The device gateway writes the status as the device
-- reports: status.phase (Online or Updating; Pending and Offline exist in the schema),
-- status.currentVersion, status.update (state Idle, Downloading, Installing, Verifying,
-- Succeeded, Failed or Cancelled, with the error) and status.lastSeen. It writes no conditions
-- and no observedGeneration, so this check compares spec.firmware with what the device reports.
local hs = {}
local status = obj.status
local firmware = nil
if obj.spec ~= nil then
  firmware = obj.spec.firmware
end
if status == nil or status.phase == nil or status.phase == "Pending" then
  hs.status = "Progressing"
  hs.message = "waiting for the device to report to the gateway"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "waiting for the controller to observe generation " .. tostring(generation)
  return hs
end
local running = status.currentVersion
local update = status.update
-- The update reported is about what the spec asks for now (or the spec asks for nothing).
local current = update ~= nil and (firmware == nil or firmware.actionId == nil or update.actionId == firmware.actionId)

if current and update.state == "Failed" then
  hs.status = "Degraded"
  local text = "update to " .. tostring(update.targetVersion) .. " failed"
  if update.attempt ~= nil and update.attempt > 0 then
    text = text .. " (attempt " .. tostring(update.attempt) .. ")"
  end
  if update.error ~= nil then
    text = text .. ": " .. tostring(update.error.code)
    if update.error.message ~= nil and update.error.message ~= "" then
      text = text .. ": " .. update.error.message
    end
  end
  hs.message = text
  return hs
end
if status.phase == "Offline" then
  hs.status = "Degraded"
  hs.message = "offline: last seen " .. tostring(status.lastSeen)
  return hs
end
if status.phase == "Updating" then
  hs.status = "Progressing"
  local text = "updating"
  if update ~= nil then
    text = text .. " to " .. tostring(update.targetVersion) .. ": " .. tostring(update.state)
    if update.progress ~= nil then
      text = text .. " " .. tostring(update.progress) .. "%"
    end
  end
  hs.message = text
  return hs
end
if firmware ~= nil and firmware.version ~= nil and firmware.version ~= running then
  hs.status = "Progressing"
  local text = "firmware " .. firmware.version .. " offered"
  if firmware.rollout ~= nil then
    text = text .. " by rollout " .. firmware.rollout
  end
  hs.message = text .. "; the device runs " .. tostring(running)
  return hs
end
hs.status = "Healthy"
if running ~= nil then
  hs.message = "runs firmware " .. running
else
  hs.message = "reporting; no firmware version reported yet"
end
return hs
