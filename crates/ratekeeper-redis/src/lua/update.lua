-- update NAME SLOTS|'' DECAY|'' ACTIVE|'' DESCRIPTION_MODE(''|set|clear) DESCRIPTION
local name = ARGV[3]
local limit = load_limit(name)
if not limit then return cjson.encode({ err = 'limit_not_found', name = name }) end
if ARGV[4] ~= '' then redis.call('HSET', lkey(name), 'slots', ARGV[4]) end
if ARGV[5] ~= '' then
  -- Keep the decaying level; at a rate of 0 nothing would ever decay, so
  -- decaying slots are dropped.
  local level = decaying(limit)
  local decay = tonumber(ARGV[5])
  local drained = NOW
  if decay > 0 then drained = NOW + math.ceil(level * US / decay) end
  redis.call('HSET', lkey(name), 'decay', ARGV[5], 'drained', int(drained))
end
if ARGV[6] ~= '' then redis.call('HSET', lkey(name), 'active', ARGV[6]) end
if ARGV[7] == 'set' then redis.call('HSET', lkey(name), 'description', ARGV[8]) end
if ARGV[7] == 'clear' then redis.call('HDEL', lkey(name), 'description') end
redis.call('HSET', lkey(name), 'updated', int(NOW))
forget(name)
touch(name)
-- More slots, a faster decay or deactivation may let waiters in.
promote({ name })
return finish({ ok = view(load_limit(name)) })
