-- acquire NAMES(json) OCCUPY MODE(lease|rate) TTL_US HAS_HOLDER HOLDER
--         CREATE_IF_MISSING TOKEN TRY_ONCE INSTANCE DEADLINE_US|'' CHECK_ONLY
--         WHOLE(json)|''
-- WHOLE: for a part of a request across partitions, all of its names.
local names = words(arg_names)
local occupy = tonumber(arg_occupy)
local mode = arg_mode
local token = arg_token

-- Refuse first, create after: a refused request changes nothing.
local missing, keys, adding = {}, {}, {}
for _, name in ipairs(names) do
  local limit = load_limit(name)
  local refusal = nil
  if limit and limit.max then
    refusal = { err = 'limit_is_template', name = name }
  elseif limit then
    refusal = impossible(limit, occupy, mode)
  else
    local template = template_for(name)
    if template then
      adding[template] = (adding[template] or 0) + 1
      refusal = no_room_for_instance(name, template, adding[template])
        or impossible(load_limit(template), occupy, mode)
      keys[#keys + 1] = { name, template }
    elseif arg_create_if_missing == '1' then
      missing[#missing + 1] = name
    else
      refusal = { err = 'limit_not_found', name = name }
    end
  end
  if refusal then return cjson.encode(refusal) end
end
-- A request across partitions is checked on every one before any part
-- of it is taken.
if arg_check_only == '1' then return cjson.encode({ ok = true }) end
for _, key in ipairs(keys) do new_instance(key[1], key[2]) end
-- A missing limit is created inactive, with 1 slot, and passes through.
for _, name in ipairs(missing) do
  local uid = redis.call('INCR', P .. 'uid')
  redis.call('HSET', lkey(name), 'uid', uid, 'slots', 1, 'decay', 0, 'active', 0,
    'held', 0, 'drained', int(NOW), 'qslots', 0, 'granted', 0, 'granted_slots', 0,
    'waited', 0, 'expired', 0, 'denied', 0, 'created', int(NOW), 'updated', int(NOW))
  redis.call('SADD', P .. 'names', name)
  forget(name)
  touch(name)
end

local req = {
  token = token, names = arg_names, list = names, occupy = occupy, mode = mode,
  ttl = tonumber(arg_ttl_us), enq = NOW,
}
if arg_has_holder == '1' then req.holder = arg_holder end
if arg_whole ~= '' then req.whole = arg_whole end

local fits = true
for _, name in ipairs(names) do
  local limit = load_limit(name)
  if limit.active == 1 and ((limit.qslots or 0) > 0 or room(limit, occupy) ~= 'now') then
    fits = false
  end
end
if fits then return finish({ ok = grant(req) }) end
if arg_try_once == '1' then
  count(names, 'denied')
  return finish({ err = 'would_block' })
end

local seq = redis.call('INCR', P .. 'seq')
local instance = arg_instance
local fields = {
  'names', arg_names, 'occupy', occupy, 'mode', mode, 'ttl', int(req.ttl),
  'enq', int(NOW), 'seq', seq, 'owner', instance,
}
if req.holder then
  fields[#fields + 1] = 'holder'
  fields[#fields + 1] = req.holder
end
if arg_deadline_at ~= '' then
  fields[#fields + 1] = 'deadline'
  fields[#fields + 1] = arg_deadline_at
end
if req.whole then
  fields[#fields + 1] = 'whole'
  fields[#fields + 1] = req.whole
end
redis.call('HSET', rkey(token), unpack(fields))
redis.call('SADD', P .. 'owned:' .. instance, token)
-- Its instance is alive now, whatever became of its last heartbeat here
-- (lost to a failover, say): the request is not withdrawn as a dead one's.
redis.call('SET', P .. 'inst:' .. instance, 1, 'PX', INSTANCE_TTL_MS)
redis.call('SADD', P .. 'instances', instance)
for _, name in ipairs(names) do
  redis.call('ZADD', qkey(name), seq, token)
  bump(name, 'qslots', occupy)
  queued_here(name, 1)
  if load_limit(name).active == 1 then bump(name, 'waited', 1) end
  touch(name)
end
-- It may head every queue and wait for decay alone: that sets its timer.
eligible(token, req)
return finish({ queued = int(seq) })
