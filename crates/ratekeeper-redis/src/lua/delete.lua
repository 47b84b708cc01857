-- delete NAME: its waiters fail with limit_deleted; leases stop holding it.
-- A template is deleted with every instance of it in this partition.
local name = arg_name
if not load_limit(name) then
  return cjson.encode({ err = 'limit_not_found', name = name })
end
local gone = with_instances(name)
local others = {}
for _, each in ipairs(gone) do
  detach(each)
  for _, token in ipairs(redis.call('ZRANGE', qkey(each), 0, -1)) do
    local req = hash(rkey(token))
    if req then
      req.token = token
      unqueue(token, req)
      settle(token, { err = 'limit_deleted', name = each })
      for _, other in ipairs(words(req.names)) do others[#others + 1] = other end
    end
  end
  redis.call('DEL', lkey(each), qkey(each), llkey(each))
  forget(each)
  redis.call('SREM', P .. 'names', each)
  redis.call('ZREM', P .. 'ready', each)
  redis.call('ZREM', P .. 'recover', each)
  touched[each] = nil
  publish(function() return { limit_deleted = each } end)
end
redis.call('DEL', P .. 'ti:' .. name)
redis.call('SREM', P .. 'templates', name)
-- Waiters that also named other limits left those queues too.
promote(others)
return finish({ ok = true })
