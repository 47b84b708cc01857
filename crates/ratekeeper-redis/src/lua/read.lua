-- read limits | limit NAME | leases [NAME] | lease ID
local what, name = arg_what, arg_name

local function leases_of(ids)
  local views = {}
  for _, id in ipairs(ids) do
    local lease = hash(lease_key(id))
    if lease then views[#views + 1] = lease_view(id, lease) end
  end
  table.sort(views, function(a, b) return tonumber(a.granted_at) < tonumber(b.granted_at) end)
  return views
end

if what == 'lease' then
  local lease = hash(lease_key(name))
  return cjson.encode({ leases = lease and { lease_view(name, lease) } or {} })
end
if what == 'limits' then
  local names = redis.call('SMEMBERS', P .. 'names')
  table.sort(names)
  local views = {}
  for _, n in ipairs(names) do
    local limit = load_limit(n)
    if limit then views[#views + 1] = view(limit) end
  end
  return cjson.encode({ limits = views })
end
if what == 'leases' then
  if name == '' then return cjson.encode({ leases = leases_of(redis.call('ZRANGE', P .. 'exp', 0, -1)) }) end
  if not load_limit(name) then return cjson.encode({ err = 'limit_not_found', name = name }) end
  return cjson.encode({ leases = leases_of(redis.call('SMEMBERS', llkey(name))) })
end
local limit = load_limit(name)
if not limit then return cjson.encode({ err = 'limit_not_found', name = name }) end
local waiters = {}
for _, token in ipairs(redis.call('ZRANGE', qkey(name), 0, -1)) do
  local req = hash(rkey(token))
  if req then
    waiters[#waiters + 1] = {
      seq = int(req.seq), limits = cjson.decode(req.names), occupy = int(req.occupy),
      mode = req.mode, holder = req.holder, enq = int(req.enq),
      deadline = req.deadline and int(req.deadline) or nil,
    }
  end
end
return cjson.encode({
  limit = view(limit),
  leases = leases_of(redis.call('SMEMBERS', llkey(name))),
  waiters = waiters,
})
