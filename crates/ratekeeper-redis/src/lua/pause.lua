-- pause NAME END_KIND(for|until) END_US REASON|'' REPORTER|'': nothing is
-- granted on NAME before the end; a pause is extended, never shortened.
-- The request was checked by the caller (core's `PauseSpec::until`).
local name = arg_name
local limit = load_limit(name)
if not limit then return cjson.encode({ err = 'limit_not_found', name = name }) end
local until_us = tonumber(arg_end_us)
if arg_end_kind == 'for' then until_us = NOW + until_us end
local current = math.max(limit.paused or 0, NOW)
if until_us > current then
  local key = lkey(name)
  redis.call('HSET', key, 'paused', int(until_us), 'paused_since', int(NOW))
  for field, value in pairs({ pause_reason = arg_reason, pause_reporter = arg_reporter }) do
    if value ~= '' then redis.call('HSET', key, field, value) else redis.call('HDEL', key, field) end
  end
  forget(name)
  touch(name)
  -- Its head may be waiting for decay: it now waits for the pause.
  promote({ name })
end
return finish({ ok = view(load_limit(name)) })
