-- create NAME SLOTS DECAY ACTIVE HAS_DESCRIPTION DESCRIPTION MAX_SHARE MAX_ALL
--        ADAPTIVE(''|'FACTOR RECOVERY_SECONDS')
-- A name ending in '*' makes (this partition's copy of) a template: MAX_ALL
-- is its max_instances, MAX_SHARE this partition's share of them. A name
-- that is a live instance becomes a limit of its own, holders and queue
-- included, overriding the template for that key.
local name = arg_name
local existing = load_limit(name)
if existing and not existing.of then
  return cjson.encode({ err = 'limit_exists', name = name })
end
if existing then
  detach(name)
  redefine(name, {
    slots = arg_slots, decay = arg_decay, active = arg_active,
    description_change = arg_has_description == '1' and 'set' or 'clear',
    description = arg_description, adaptive = arg_adaptive == '' and 'off' or arg_adaptive,
  })
  redis.call('SADD', P .. 'names', name)
  local freed = {}
  fail_impossible(name, freed)
  freed[#freed + 1] = name
  promote(freed)
  return finish({ ok = view(load_limit(name)) })
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
if arg_adaptive ~= '' then
  local factor, recovery = string.match(arg_adaptive, '^(%S+) (%S+)$')
  for _, field in ipairs({ 'ad_factor', factor, 'ad_recovery', recovery }) do
    fields[#fields + 1] = field
  end
end
if string.sub(name, -1) == '*' then
  for _, field in ipairs({ 'max', arg_max_share, 'maxall', arg_max_all, 'n', 0, 'qn', 0, 'x', 1 }) do
    fields[#fields + 1] = field
  end
  redis.call('SADD', P .. 'templates', name)
end
redis.call('HSET', lkey(name), unpack(fields))
forget(name)
redis.call('SADD', P .. 'names', name)
touch(name)
return finish({ ok = view(load_limit(name)) })
