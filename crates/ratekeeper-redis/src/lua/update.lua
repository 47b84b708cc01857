-- update NAME SLOTS|'' DECAY|'' ACTIVE|'' DESCRIPTION_MODE(''|set|clear) DESCRIPTION
local name = arg_name
local limit = load_limit(name)
if not limit then return cjson.encode({ err = 'limit_not_found', name = name }) end
-- Core's check_drain, on the limit as it would be: a full load must decay
-- within MAX_DRAIN_SECONDS (100 years; the differential and conformance
-- tests hold the two rules together).
local new_slots, new_decay = limit.slots, limit.decay
if arg_slots ~= '' then new_slots = tonumber(arg_slots) end
if arg_decay ~= '' then new_decay = tonumber(arg_decay) end
if new_decay > 0 and new_slots / new_decay > 100 * 365 * 86400 then
  return cjson.encode({ err = 'decay_too_slow', slots = int(new_slots), decay = new_decay })
end
if arg_slots ~= '' then redis.call('HSET', lkey(name), 'slots', arg_slots) end
if arg_decay ~= '' then
  -- Keep the decaying level; at a rate of 0 nothing would ever decay, so
  -- decaying slots are dropped.
  local level = decaying(limit)
  local decay = tonumber(arg_decay)
  local drained = NOW
  if decay > 0 then drained = NOW + math.ceil(level * US / decay) end
  redis.call('HSET', lkey(name), 'decay', arg_decay, 'drained', int(drained))
end
if arg_active ~= '' then redis.call('HSET', lkey(name), 'active', arg_active) end
if arg_description_change == 'set' then redis.call('HSET', lkey(name), 'description', arg_description) end
if arg_description_change == 'clear' then redis.call('HDEL', lkey(name), 'description') end
redis.call('HSET', lkey(name), 'updated', int(NOW))
forget(name)
touch(name)
-- A waiter this limit can no longer ever grant fails now, as the engine
-- would have refused it had it come after the change.
local freed = { name }
limit = load_limit(name)
if limit.active == 1 then
  for _, token in ipairs(redis.call('ZRANGE', qkey(name), 0, -1)) do
    local req = hash(rkey(token))
    if req then
      local refusal = nil
      if limit.slots > 0 and req.occupy > limit.slots then
        refusal = { err = 'occupy_exceeds_slots', name = name, occupy = int(req.occupy), slots = int(limit.slots) }
      elseif req.mode == 'rate' and limit.decay <= 0 then
        refusal = { err = 'rate_mode_needs_decay', name = name }
      end
      if refusal then
        req.token = token
        unqueue(token, req)
        settle(token, refusal)
        for _, other in ipairs(cjson.decode(req.names)) do freed[#freed + 1] = other end
      end
    end
  end
end
-- More slots, a faster decay or deactivation may let waiters in.
promote(freed)
return finish({ ok = view(load_limit(name)) })
