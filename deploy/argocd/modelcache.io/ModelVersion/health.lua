-- Argo CD health check for modelcache.io/ModelVersion (docs/operator.md, "GitOps health").
-- Progressing until the operator has observed the current generation and while a rollout
-- runs; Degraded when a rollout failed (and was flipped back); Healthy when available.
-- Argo CD opens only the base and table libraries: no string library here.
local hs = {}
if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile"
  return hs
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
local conditions = {}
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    conditions[condition.type] = condition
  end
end
local function message(condition)
  if condition.message ~= nil and condition.message ~= "" then
    return condition.message
  end
  return condition.reason or ""
end
local stalled = conditions["Stalled"]
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = message(stalled)
  return hs
end
local reconciling = conditions["Reconciling"]
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = message(reconciling)
  return hs
end
local ready = conditions["Ready"]
if ready ~= nil then
  if ready.status == "True" then
    hs.status = "Healthy"
  else
    hs.status = "Progressing"
  end
  hs.message = message(ready)
  return hs
end
-- A status written before the Ready/Reconciling/Stalled conditions: read the phase.
local phase = obj.status.phase
if phase == "Available" then
  hs.status = "Healthy"
elseif phase == "Degraded" then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
hs.message = "Phase: " .. tostring(phase)
return hs
