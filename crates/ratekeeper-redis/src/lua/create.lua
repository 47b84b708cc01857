-- create NAME SLOTS DECAY ACTIVE HAS_DESCRIPTION DESCRIPTION
local name = arg_name
if redis.call('EXISTS', lkey(name)) == 1 then
  return cjson.encode({ err = 'limit_exists', name = name })
end
local uid = redis.call('INCR', P .. 'uid')
local fields = {
  'uid', uid, 'slots', arg_slots, 'decay', arg_decay, 'active', arg_active,
  'held', 0, 'drained', int(NOW), 'qslots', 0,
  'granted', 0, 'granted_slots', 0, 'waited', 0, 'expired', 0, 'denied', 0,
  'created', int(NOW), 'updated', int(NOW),
}
if arg_has_description == '1' then
  fields[#fields + 1] = 'description'
  fields[#fields + 1] = arg_description
end
redis.call('HSET', lkey(name), unpack(fields))
forget(name)
redis.call('SADD', P .. 'names', name)
touch(name)
return finish({ ok = view(load_limit(name)) })
