-- resume NAME: ends its pause now and grants its queue from the head.
local name = arg_name
local limit = load_limit(name)
if not limit then return cjson.encode({ err = 'limit_not_found', name = name }) end
if limit.paused then
  redis.call('HDEL', lkey(name), 'paused', 'paused_since', 'pause_reason', 'pause_reporter')
  forget(name)
  touch(name)
  promote({ name })
end
return finish({ ok = view(load_limit(name)) })
