-- Argo CD health check for flotilla.dev/v1alpha1 Channel.
-- Written for Argo CD's Lua VM: only the base, table and (safe) os libraries are loaded, so
-- this script uses no string functions. The Channel controller writes status.phase (Pending,
-- Ready, NotReady, Terminating), status.observedGeneration, status.breaker and the Ready,
-- SecretFound, InUse and CircuitClosed conditions.
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
  hs.message = "waiting for the Channel controller to check the channel"
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
if phase == "Terminating" then
  hs.status = "Progressing"
  local inUse = condition(status, "InUse")
  if inUse ~= nil and inUse.status == "True" then
    hs.message = inUse.message
  else
    hs.message = "being deleted"
  end
  return hs
end
if phase == "NotReady" or (ready ~= nil and ready.status == "False") then
  hs.status = "Degraded"
  if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
    hs.message = ready.message
  else
    hs.message = "the channel is not usable"
  end
  return hs
end
if phase == "Ready" then
  local circuit = condition(status, "CircuitClosed")
  local breaker = "Closed"
  if status.breaker ~= nil and status.breaker.state ~= nil then
    breaker = status.breaker.state
  end
  if breaker == "Open" or (circuit ~= nil and circuit.reason == "BreakerOpen") then
    hs.status = "Degraded"
    if circuit ~= nil and circuit.message ~= nil then
      hs.message = "circuit breaker open: " .. circuit.message
    else
      hs.message = "circuit breaker open: nothing is sent until the cool-down passes"
    end
    return hs
  end
  if breaker == "HalfOpen" or (circuit ~= nil and circuit.reason == "BreakerHalfOpen") then
    hs.status = "Progressing"
    if circuit ~= nil and circuit.message ~= nil then
      hs.message = "circuit breaker half-open: " .. circuit.message
    else
      hs.message = "circuit breaker half-open: probe messages test the channel"
    end
    return hs
  end
  hs.status = "Healthy"
  if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
    hs.message = ready.message
  else
    hs.message = "campaigns can send through this channel"
  end
  return hs
end
if phase == "Pending" then
  hs.status = "Progressing"
  hs.message = "waiting for the Channel controller to check the channel"
  return hs
end
hs.status = "Unknown"
hs.message = "unexpected phase " .. tostring(phase)
return hs
