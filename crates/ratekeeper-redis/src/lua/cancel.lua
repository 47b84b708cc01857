-- cancel TOKEN REASON(timeout|abandon): withdraws a queued request. If it
-- was granted meanwhile, a timed-out waiter takes the grant; an abandoned
-- one's lease is released.
local token = arg_token
local req = hash(rkey(token))
if req then
  req.token = token
  local names = words(req.names)
  unqueue(token, req)
  if arg_reason == 'timeout' then count(names, 'denied') end
  -- Whoever waited behind it may go now.
  promote(names)
  return finish({ cancelled = true })
end
local result = redis.call('GET', P .. 'res:' .. token)
if not result then return finish({ gone = true }) end
redis.call('DEL', P .. 'res:' .. token)
local outcome = cjson.decode(result)
if arg_reason == 'abandon' and outcome.ok and outcome.ok.lease then
  local lease = hash(lease_key(token))
  if lease then promote(drop_lease(token, lease)) end
  return finish({ gone = true })
end
return finish({ settled = outcome })
