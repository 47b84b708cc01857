-- update NAME SLOTS|'' DECAY|'' ACTIVE|'' DESCRIPTION_MODE(''|set|clear)
--        DESCRIPTION MAX_SHARE|'' MAX_ALL|'' ADAPTIVE(''|off|'FACTOR RECOVERY')
-- A template's change is made to every instance of it in this partition:
-- every definition first, then the waiters it lets in or makes impossible.
-- MAX_SHARE: this partition's share of a template's MAX_ALL instances.
local name = arg_name
local limit = load_limit(name)
if not limit then return cjson.encode({ err = 'limit_not_found', name = name }) end
if limit.of then
  return cjson.encode({ err = 'limit_is_instance', name = name, template = limit.of })
end
-- Core's check_drain, on the limit as it would be: a full load must decay
-- within MAX_DRAIN_SECONDS (100 years; the differential and conformance
-- tests hold the two rules together).
local new_slots, new_decay = limit.slots, limit.decay
if arg_slots ~= '' then new_slots = tonumber(arg_slots) end
if arg_decay ~= '' then new_decay = tonumber(arg_decay) end
if new_decay > 0 and new_slots / new_decay > 100 * 365 * 86400 then
  return cjson.encode({ err = 'decay_too_slow', slots = int(new_slots), decay = new_decay })
end
local def = {
  slots = arg_slots, decay = arg_decay, active = arg_active,
  description_change = arg_description_change, description = arg_description,
  adaptive = arg_adaptive,
}
local changed = with_instances(name)
for _, each in ipairs(changed) do redefine(each, def) end
if limit.max and arg_max_share ~= '' then
  redis.call('HSET', lkey(name), 'max', arg_max_share, 'maxall', arg_max_all)
end
-- More slots, a faster decay or deactivation may let waiters in.
local freed = {}
for _, each in ipairs(changed) do
  fail_impossible(each, freed)
  freed[#freed + 1] = each
end
promote(freed)
return finish({ ok = view(load_limit(name)) })
