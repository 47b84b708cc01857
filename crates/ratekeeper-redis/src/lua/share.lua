-- share TEMPLATE CHANGE: moves room for instances of a template between
-- partitions. A negative CHANGE asks this partition to lend up to -CHANGE
-- of its spare room (its share less its instances), answering how much it
-- lent; a positive one adds CHANGE to its share. Room in transit is lent
-- and not yet added, so the shares never add up to more than the
-- template's max_instances.
local limit = load_limit(arg_template)
if not (limit and limit.max) then return cjson.encode({ ok = '0' }) end
local change = tonumber(arg_change)
if change > 0 then
  redis.call('HINCRBY', lkey(arg_template), 'max', change)
  return cjson.encode({ ok = int(change) })
end
local n = tonumber(redis.call('HGET', lkey(arg_template), 'n') or 0)
local lent = math.max(0, math.min(-change, limit.max - n))
if lent > 0 then redis.call('HINCRBY', lkey(arg_template), 'max', -lent) end
return cjson.encode({ ok = int(lent) })
