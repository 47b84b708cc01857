-- release LEASE_ID
local id = arg_id
-- Only what giving the slots back needs.
local held = redis.call('HMGET', lease_key(id), 'names', 'uids', 'occupy')
if held[1] then
  local lease = { names = held[1], uids = held[2], occupy = tonumber(held[3]) }
  promote(drop_lease(id, lease))
  return finish({ ok = true })
end
if redis.call('ZSCORE', P .. 'revoked', id) then return cjson.encode({ err = 'lease_revoked' }) end
return cjson.encode({ err = 'lease_expired' })
