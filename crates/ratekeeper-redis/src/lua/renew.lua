-- renew LEASE_ID TTL_US|''
local id = arg_id
local lease = hash(lease_key(id))
if not lease then
  if redis.call('ZSCORE', P .. 'revoked', id) then return cjson.encode({ err = 'lease_revoked' }) end
  return cjson.encode({ err = 'lease_expired' })
end
local ttl = lease.ttl
if arg_ttl_us ~= '' then ttl = tonumber(arg_ttl_us) end
lease.expires = NOW + ttl
lease.ttl = ttl
redis.call('HSET', lease_key(id), 'expires', int(lease.expires), 'ttl', int(ttl))
schedule('exp', lease.expires, id)
publish(function() return { lease = lease_view(id, lease) } end)
return finish({ ok = { expires = int(lease.expires) } })
