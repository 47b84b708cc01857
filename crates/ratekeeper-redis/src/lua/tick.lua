-- tick: does whatever is due, on any instance (doing it twice is
-- harmless): expires leases, drops tombstones, lets heads in whose decay
-- has made room, withdraws the requests of instances that died, steps
-- lowered adaptive limits back up, and drops idle instances of templates.
local freed = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'exp', '-inf', NOW)) do
  local lease = hash(lease_key(id))
  if lease then
    lease.id = id
    count(lease_limits(lease), 'expired')
    for _, name in ipairs(drop_lease(id, lease)) do freed[#freed + 1] = name end
  else
    redis.call('ZREM', P .. 'exp', id)
  end
end
redis.call('ZREMRANGEBYSCORE', P .. 'revoked', '-inf', NOW)
for _, name in ipairs(redis.call('ZRANGEBYSCORE', P .. 'ready', '-inf', NOW)) do
  redis.call('ZREM', P .. 'ready', name)
  freed[#freed + 1] = name
end
for _, instance in ipairs(redis.call('SMEMBERS', P .. 'instances')) do
  if redis.call('EXISTS', P .. 'inst:' .. instance) == 0 then
    for _, token in ipairs(redis.call('SMEMBERS', P .. 'owned:' .. instance)) do
      local req = hash(rkey(token))
      if req then
        req.token = token
        unqueue(token, req)
        for _, name in ipairs(words(req.names)) do freed[#freed + 1] = name end
      end
    end
    redis.call('DEL', P .. 'owned:' .. instance)
    redis.call('SREM', P .. 'instances', instance)
  end
end
-- Adaptive limits whose next step back up is due.
for _, name in ipairs(redis.call('ZRANGEBYSCORE', P .. 'recover', '-inf', NOW)) do
  redis.call('ZREM', P .. 'recover', name)
  recover(name)
  freed[#freed + 1] = name
end
promote(freed)
-- Instances whose decaying slots have drained or whose pause has ended:
-- `finish` drops those that are idle now.
for _, name in ipairs(redis.call('ZRANGEBYSCORE', P .. 'idle', '-inf', NOW)) do
  redis.call('ZREM', P .. 'idle', name)
  touch(name)
end
-- Announce what this tick scheduled against the instant instances sleep
-- until now, then store the full next instant for the next sleepers.
announce_due()
local due = next_due()
set_next(due)
return finish({ ok = { next = due and int(due) or nil } })
