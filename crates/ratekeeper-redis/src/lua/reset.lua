-- reset NAME: revokes every lease on it and clears its decaying slots.
local name = arg_name
local limit = load_limit(name)
if not limit then return cjson.encode({ err = 'limit_not_found', name = name }) end
local freed = { name }
for _, id in ipairs(redis.call('SMEMBERS', llkey(name))) do
  local lease = hash(lease_key(id))
  if lease then
    -- Its holder hears lease_revoked until the lease would have expired.
    schedule('revoked', lease.expires, id)
    for _, other in ipairs(drop_lease(id, lease)) do freed[#freed + 1] = other end
  end
end
redis.call('HSET', lkey(name), 'drained', int(NOW))
forget(name)
touch(name)
promote(freed)
return finish({ ok = view(load_limit(name)) })
