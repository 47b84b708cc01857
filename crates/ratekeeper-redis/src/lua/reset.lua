-- reset NAME: revokes every lease on it and clears its decaying slots; a
-- template's, on every instance of it in this partition too.
local name = arg_name
local limit = load_limit(name)
if not limit then return cjson.encode({ err = 'limit_not_found', name = name }) end
local freed = {}
for _, each in ipairs(with_instances(name)) do
  freed[#freed + 1] = each
  for _, id in ipairs(redis.call('SMEMBERS', llkey(each))) do
    local lease = hash(lease_key(id))
    if lease then
      -- Its holder hears lease_revoked until the lease would have expired.
      schedule('revoked', lease.expires, id)
      for _, other in ipairs(drop_lease(id, lease)) do freed[#freed + 1] = other end
    end
  end
  redis.call('HSET', lkey(each), 'drained', int(NOW))
  forget(each)
  touch(each)
end
promote(freed)
return finish({ ok = view(load_limit(name)) })
