-- delete NAME: its waiters fail with limit_deleted; leases stop holding it.
local name = arg_name
if redis.call('EXISTS', lkey(name)) == 0 then
  return cjson.encode({ err = 'limit_not_found', name = name })
end
local others = {}
for _, token in ipairs(redis.call('ZRANGE', qkey(name), 0, -1)) do
  local req = hash(rkey(token))
  if req then
    unqueue(token, req)
    settle(token, { err = 'limit_deleted', name = name })
    for _, other in ipairs(cjson.decode(req.names)) do
      if other ~= name then others[#others + 1] = other end
    end
  end
end
redis.call('DEL', lkey(name), qkey(name), llkey(name))
forget(name)
redis.call('SREM', P .. 'names', name)
redis.call('ZREM', P .. 'ready', name)
touched[name] = nil
publish(function() return { limit_deleted = name } end)
-- Waiters that also named other limits left those queues too.
promote(others)
return finish({ ok = true })
