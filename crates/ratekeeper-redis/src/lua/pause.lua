-- pause NAME END_KIND(for|until) END_US REASON|'' REPORTER|'': nothing is
-- granted on NAME before the end; a pause is extended, never shortened.
-- The request was checked by the caller (core's `PauseSpec::until`).
-- Pausing a template pauses every instance of it here, and instances made
-- meanwhile start paused; pausing a key of a template pauses that key
-- alone, making its instance if it has none.
local name = arg_name
local refusal = limit_or_key(name)
if refusal then return cjson.encode(refusal) end
local until_us = tonumber(arg_end_us)
if arg_end_kind == 'for' then until_us = NOW + until_us end
for _, each in ipairs(with_instances(name)) do
  local current = math.max(load_limit(each).paused or 0, NOW)
  if until_us > current then
    local key = lkey(each)
    redis.call('HSET', key, 'paused', int(until_us), 'paused_since', int(NOW), 'x', 1)
    for field, value in pairs({ pause_reason = arg_reason, pause_reporter = arg_reporter }) do
      if value ~= '' then redis.call('HSET', key, field, value) else redis.call('HDEL', key, field) end
    end
    forget(each)
    touch(each)
    -- Its head may be waiting for decay: it now waits for the pause.
    promote({ each })
  end
end
return finish({ ok = view(load_limit(name)) })
