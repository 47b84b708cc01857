-- release LEASE_ID
local id = arg_id
local lease = hash(lease_key(id))
if lease then
  promote(drop_lease(id, lease))
  return finish({ ok = true })
end
if redis.call('ZSCORE', P .. 'revoked', id) then return cjson.encode({ err = 'lease_revoked' }) end
return cjson.encode({ err = 'lease_expired' })
