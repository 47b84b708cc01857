-- status TOKEN: how a queued request ended, for a waiter that may have
-- missed the message.
local token = arg_token
local result = redis.call('GET', P .. 'res:' .. token)
if result then return cjson.encode({ settled = cjson.decode(result) }) end
if redis.call('EXISTS', rkey(token)) == 1 then return cjson.encode({ pending = true }) end
return cjson.encode({ gone = true })
