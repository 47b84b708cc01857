-- resume NAME: ends its pause now and grants its queue from the head; a
-- template's, and every instance's of it in this partition.
local name = arg_name
if not load_limit(name) then return cjson.encode({ err = 'limit_not_found', name = name }) end
for _, each in ipairs(with_instances(name)) do
  if load_limit(each).paused then
    redis.call('HDEL', lkey(each), 'paused', 'paused_since', 'pause_reason', 'pause_reporter')
    forget(each)
    touch(each)
    promote({ each })
  end
end
return finish({ ok = view(load_limit(name)) })
