-- read limits | limit NAME | leases [NAME] | lease ID
--      | instances TEMPLATE QUERY({prefix, after?, count?} as JSON)
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
if what == 'instances' then
  -- This partition's instances of a template whose names start with
  -- `prefix`; by name, after `after`, at most `count` of them, if given
  -- (the caller merges the partitions' pages and orders them).
  local query = cjson.decode(arg_query)
  local after, count = query.after, query.count
  if after == cjson.null then after = nil end
  if count == cjson.null then count = nil end
  local limit = load_limit(name)
  if not limit then return cjson.encode({ err = 'limit_not_found', name = name }) end
  local names = {}
  for _, instance in ipairs(redis.call('SMEMBERS', P .. 'ti:' .. name)) do
    if string.sub(instance, 1, #query.prefix) == query.prefix
      and (not after or instance > after) then
      names[#names + 1] = instance
    end
  end
  table.sort(names)
  local views = {}
  for i, instance in ipairs(names) do
    if count and i > count then break end
    views[#views + 1] = view(load_limit(instance))
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
      seq = int(req.seq), limits = words(req.names), occupy = int(req.occupy),
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
