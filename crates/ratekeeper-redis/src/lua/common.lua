-- Shared by every operation: the library's first part; each operation's
-- file becomes one function after it (see `scripts.rs`). A call acts on
-- one partition, whose key prefix is ARGV[1] (one hash tag, so one Redis
-- Cluster slot; see `layout.rs`); ARGV[2] is the time in microseconds for
-- tests, or '' to use Redis's own clock. Each operation's own arguments
-- follow, and reach its body as locals named `arg_NAME` (the `operations!`
-- table in `scripts.rs` names them, in order).
--
-- Keys, with P the prefix:
--   P seq              request counter: the global arrival order
--   P uid              limit counter: a limit's identity, never reused
--   P names            set of limit names
--   P l:NAME           hash: a limit (definition, occupancy, counters)
--   P q:NAME           zset: request tokens queued on NAME, scored by arrival
--   P r:TOKEN          hash: a queued request
--   P lease:ID         hash: a live lease
--   P ll:NAME          set: lease ids holding slots on NAME
--   P exp              zset: lease id -> expiry (us)
--   P revoked          zset: revoked lease id -> when it would have expired
--   P ready            zset: limit name -> when its head fits by decay alone
--   P next             string: the instant instances sleep until (us)
--   P watched          string (expires): someone watches the changes
--   P res:TOKEN        string (expires): how a queued request ended
--   P inst:ID          string (expires): an instance that is alive
--   P templates        set of template names (`tenant:*`)
--   P ti:TEMPLATE      set: the template's instances in this partition
--   P idle             zset: instance name -> when it may be idle (us)
--   P recover          zset: adaptive limit -> its next step back up (us)
--
-- Templates. A template is kept in every partition (the same definition,
-- each copy with the sums and counters of its own partition's instances);
-- an instance lives in the partition of its own name, as any limit does.
-- A template's hash has `max`, this partition's share of its
-- `max_instances` (`maxall`), and `n`, its instances here; an instance's
-- hash has `of`, its template's name. An instance is made when a key of
-- a template is first asked for, and dropped at the end of the call that
-- left it holding nothing, with nobody waiting, no decaying slots and no
-- pause (or at the instant the last of those ends: `P idle`).
--
-- Adaptive limits. An adaptive limit's hash has `ad_factor` and
-- `ad_recovery` (its settings), and, while lowered, `scale` (the share of
-- its configured value in force, which multiplies its draining rate, or
-- its slots if it has no decay), `lowered` (the instant of the last
-- decrease) and an entry in `P recover`. As in the engine (`adaptive.rs`),
-- a report lowers the scale at most once a second, and it climbs back one
-- step a second.
-- Channels: P wake (how queued requests ended), P events (changes),
-- P timer (an earlier instant to wake at).
--
-- The library is loaded once, so everything below that a call changes
-- is set afresh by `begin` at the start of each call.

-- The key prefix and the call's instant (us); set by `begin`.
local P, NOW
local US = 1000000
local RESULT_TTL_MS = 60000
-- How long an instance counts as alive after its heartbeat (`INSTANCE_TTL`).
local INSTANCE_TTL_MS = @INSTANCE_TTL_MS@

local function num(x) return string.format('%.17g', x) end
-- Integers go into replies as strings: cjson keeps only 14 significant
-- digits of a number, fewer than a time in microseconds has. ('%d' takes
-- 64 bits here, and is twice as fast as '%.0f'.)
local function int(x) return string.format('%d', x) end

-- A list of names (or uids) as a hash keeps it: JSON, which every version
-- of these functions reads (instances of two versions may share a store
-- during an upgrade). A list given as an argument may also be names
-- separated by spaces (names have none).
local function words(text)
  local first = string.byte(text, 1)
  if first == 91 then return cjson.decode(text) end -- '['
  if first and not string.find(text, ' ', 1, true) then return { text } end
  local list = {}
  for word in string.gmatch(text, '%S+') do list[#list + 1] = word end
  return list
end

-- Names are letters, digits and `.`, `_`, `-`, `:`, `*` (the engine's
-- rule, checked before any call) and uids integers, so the JSON of a
-- lease's lists is written here without cjson (measured: the same output,
-- 4 000 instructions less per grant); a name that would need an escape
-- still goes through cjson. (Reading them back with cjson is cheaper than
-- any pattern matching in Lua.)
local function json_names(names)
  if #names == 0 then return '[]' end
  for _, name in ipairs(names) do
    if string.find(name, '["\\%c]') then return cjson.encode(names) end
  end
  return '["' .. table.concat(names, '","') .. '"]'
end

-- '%.14g' for each number, as cjson writes one.
local function json_uids(uids)
  return '[' .. table.concat(uids, ',') .. ']'
end

local function lkey(name) return P .. 'l:' .. name end
local function qkey(name) return P .. 'q:' .. name end
local function rkey(token) return P .. 'r:' .. token end
local function lease_key(id) return P .. 'lease:' .. id end
local function llkey(name) return P .. 'll:' .. name end

local NUMERIC = {
  uid = true, slots = true, decay = true, active = true, held = true, drained = true,
  created = true, updated = true, granted = true, granted_slots = true, waited = true,
  expired = true, denied = true, qslots = true, occupy = true, ttl = true, enq = true,
  seq = true, expires = true, granted_at = true, deadline = true, paused = true,
  paused_since = true, max = true, maxall = true, n = true, scale = true, lowered = true,
  ad_factor = true, ad_recovery = true,
}

local function hash(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return nil end
  local t = {}
  for i = 1, #flat, 2 do
    local k, v = flat[i], flat[i + 1]
    t[k] = NUMERIC[k] and tonumber(v) or v
  end
  return t
end

-- What deciding a request needs of a limit; its other counters are only
-- read to describe it (`view`), which reads the whole hash. `qslots` says
-- whether anyone is queued (each request asks for a slot or more), without
-- looking at the queue. `x` marks a limit that has (or once had) any of
-- EXTRA: only such a limit has them read, since looking up a field a hash
-- lacks costs a scan of the whole hash.
local CORE = {
  'uid', 'slots', 'decay', 'active', 'held', 'drained', 'qslots', 'granted', 'granted_slots', 'x',
}
-- `max` is only on a template, `of` (a name) only on an instance.
local EXTRA = { 'paused', 'max', 'scale', 'of' }

-- Limits read in this call, by name (false: it does not exist), with the
-- CORE fields. Every change of a limit goes through `bump` or is followed
-- by `forget`, so the cache always says what Redis holds.
local cache

local function load_limit(name)
  local cached = cache[name]
  if cached ~= nil then return cached or nil end
  local values = redis.call('HMGET', lkey(name), unpack(CORE))
  local limit = false
  if values[1] then
    limit = { name = name }
    for i = 1, #CORE - 1 do limit[CORE[i]] = tonumber(values[i]) end
    if values[#CORE] then
      local extra = redis.call('HMGET', lkey(name), unpack(EXTRA))
      limit.paused, limit.max, limit.scale = tonumber(extra[1]), tonumber(extra[2]), tonumber(extra[3])
      limit.of = extra[4] or nil
    end
  end
  cache[name] = limit
  return limit or nil
end

-- Adds to up to three fields of a limit (`bump(name, field, by[, field,
-- by[, field, by]])`), in Redis and in the cache; for an instance, to its
-- template's too (sums and counters). Fields the cache holds are written
-- in one HSET, from the cached values (a script runs alone, so they are
-- Redis's); others with HINCRBY. The pairs are spelled out, not gathered
-- into a table: every grant and release comes here, and the table cost
-- more than the write (measured with `scripts/bench-redis-calls`).
local touch
local function bump(name, f1, b1, f2, b2, f3, b3)
  local limit = load_limit(name)
  local key = lkey(name)
  if limit and limit[f1] and (not f2 or limit[f2]) and (not f3 or limit[f3]) then
    limit[f1] = limit[f1] + b1
    if not f2 then
      redis.call('HSET', key, f1, int(limit[f1]))
    elseif not f3 then
      limit[f2] = limit[f2] + b2
      redis.call('HSET', key, f1, int(limit[f1]), f2, int(limit[f2]))
    else
      limit[f2], limit[f3] = limit[f2] + b2, limit[f3] + b3
      redis.call('HSET', key, f1, int(limit[f1]), f2, int(limit[f2]), f3, int(limit[f3]))
    end
  else
    for _, pair in ipairs({ { f1, b1 }, { f2, b2 }, { f3, b3 } }) do
      local field, by = pair[1], pair[2]
      if field and limit and limit[field] then
        limit[field] = limit[field] + by
        redis.call('HSET', key, field, int(limit[field]))
      elseif field then
        redis.call('HINCRBY', key, field, by)
      end
    end
  end
  if limit and limit.of then
    local template = lkey(limit.of)
    redis.call('HINCRBY', template, f1, b1)
    if f2 then redis.call('HINCRBY', template, f2, b2) end
    if f3 then redis.call('HINCRBY', template, f3, b3) end
    touch(limit.of)
  end
end

local function forget(name)
  cache[name] = nil
end


-- Why a request for `occupy` slots in `mode` ('lease' or 'rate') can never
-- be granted on `limit` as it is defined (nil if it can): a request is
-- refused at once for it, a waiter failed when a change makes it so.
local function impossible(limit, occupy, mode)
  if limit.active ~= 1 then return nil end
  if limit.slots > 0 and occupy > limit.slots then
    return { err = 'occupy_exceeds_slots', name = limit.name, occupy = int(occupy), slots = int(limit.slots) }
  end
  if mode == 'rate' and limit.decay <= 0 then
    return { err = 'rate_mode_needs_decay', name = limit.name }
  end
end

-- The draining rate in force: the decay, times the scale of a lowered
-- adaptive limit.
local function rate(limit)
  return limit.decay * (limit.scale or 1)
end

-- The slots in force: a lowered adaptive concurrency limit has fewer than
-- its configured slots (at least 1 of a nonzero count).
local function effective_slots(limit)
  local scale = limit.scale
  if not scale or scale >= 1 or limit.decay > 0 or limit.slots == 0 then return limit.slots end
  return math.max(1, math.floor(limit.slots * scale))
end

-- Capacity, as the engine computes it: held + decaying + occupy <= slots,
-- with the decaying level kept as the instant it drains completely.
-- Returns 'now', or 'at' and the instant it fits by decay alone, or
-- 'blocked'.
local function capacity(limit, occupy)
  local free = effective_slots(limit) - limit.held - occupy
  if free < 0 then return 'blocked' end
  if limit.drained <= NOW then return 'now' end
  local ready = limit.drained - math.floor(free * US / rate(limit))
  if ready <= NOW then return 'now' end
  return 'at', ready
end

-- Capacity, and not before the limit's pause ends (`paused`, an instant):
-- a paused limit's head waits for the pause as it waits for decay.
local function room(limit, occupy)
  local fits, at = capacity(limit, occupy)
  local paused = limit.paused
  if not paused or paused <= NOW or fits == 'blocked' then return fits, at end
  return 'at', math.max(at or 0, paused)
end

local function decaying(limit)
  if limit.drained <= NOW or limit.decay <= 0 then return 0 end
  return (limit.drained - NOW) * rate(limit) / US
end

local function add_decaying(limit, occupy)
  local drain = math.ceil(occupy * US / rate(limit))
  limit.drained = math.max(limit.drained, NOW) + drain
  redis.call('HSET', lkey(limit.name), 'drained', int(limit.drained))
end

-- A rate template's decaying slots: the sum over its instances here.
local function template_decaying(name, decay)
  if decay <= 0 then return 0 end
  local sum = 0
  for _, instance in ipairs(redis.call('SMEMBERS', P .. 'ti:' .. name)) do
    local fields = redis.call('HMGET', lkey(instance), 'drained', 'scale')
    local drained, scale = tonumber(fields[1]), tonumber(fields[2]) or 1
    if drained and drained > NOW then sum = sum + (drained - NOW) * decay * scale / US end
  end
  return sum
end

-- A limit as the API shows it, read afresh from Redis.
local function view(limit)
  local full = hash(lkey(limit.name))
  local decaying_now = decaying(full)
  local template = nil
  if full.max then
    decaying_now = template_decaying(limit.name, full.decay)
    template = { instances = int(full.n or 0), max_instances = int(full.maxall) }
  end
  local adaptive = nil
  if full.ad_factor then
    local scale = full.scale or 1
    adaptive = {
      decrease_factor = full.ad_factor, recovery_seconds = full.ad_recovery, scale = scale,
      effective = full.decay > 0 and full.decay * scale or effective_slots(full),
    }
  end
  return {
    template = template, instance_of = full.of, adaptive = adaptive,
    name = limit.name, slots = int(full.slots), decay = full.decay,
    active = full.active == 1, description = full.description,
    held = int(full.held), decaying = decaying_now,
    waiting = int(full.max and (full.qn or 0) or redis.call('ZCARD', qkey(limit.name))),
    waiting_slots = int(full.qslots),
    granted = int(full.granted), granted_slots = int(full.granted_slots),
    waited = int(full.waited), expired = int(full.expired), denied = int(full.denied),
    created = int(full.created), updated = int(full.updated),
    paused = (full.paused and full.paused > NOW) and {
      ['until'] = int(full.paused), since = int(full.paused_since or NOW),
      reason = full.pause_reason, reporter = full.pause_reporter,
    } or nil,
  }
end

-- Limits whose state changed in this script; each is published once, at
-- the end, with `finish`.
local touched, touched_order
function touch(name)
  if not touched[name] then
    touched[name] = true
    touched_order[#touched_order + 1] = name
  end
end

-- Two keys most calls look at, read together once per call (`peek`):
-- whether anyone watches the changes live (an instance with event
-- receivers keeps `P watched` from expiring: a key, not the channel's
-- subscriber count, which on a cluster counts one node's subscribers), and
-- the instant instances sleep until (`P next`, see `announce_due`).
-- Describing every change is skipped while nobody would read it.
local peeked, watched, known_next
local function peek()
  if not peeked then
    local values = redis.call('MGET', P .. 'watched', P .. 'next')
    watched = values[1] ~= false
    known_next = values[2] and tonumber(values[2]) or nil
    peeked = true
  end
end

local function is_watched()
  peek()
  return watched
end

-- Stores the instant instances sleep until (nil: nothing is due).
local function set_next(at)
  peek()
  if at then redis.call('SET', P .. 'next', int(at)) else redis.call('DEL', P .. 'next') end
  known_next = at
end

-- Publishes a change, made by `describe` only if someone listens.
local function publish(describe)
  if is_watched() then
    redis.call('@PUBLISH@', P .. 'events', cjson.encode(describe()))
  end
end

-- The limits a lease still holds: those deleted since its grant are gone.
local function lease_limits(lease)
  local live = {}
  local uids = words(lease.uids)
  for i, name in ipairs(words(lease.names)) do
    local limit = load_limit(name)
    if limit and limit.uid == tonumber(uids[i]) then live[#live + 1] = name end
  end
  return live
end

-- A lease as the API shows it; a part of a lease across partitions also
-- names every limit of the whole request, in the request's order.
local function lease_view(id, lease)
  return {
    id = id, limits = lease_limits(lease), occupy = int(lease.occupy),
    holder = lease.holder, granted_at = int(lease.granted_at), expires = int(lease.expires),
    ttl = int(lease.ttl), whole = lease.whole and words(lease.whole) or nil,
  }
end

-- The earliest instant this script scheduled (a lease expiry, a head
-- fitting by decay, a tombstone to drop); announced by `finish`.
local earliest_scheduled

-- Adds `member` at instant `at` to one of the timed sets: exp, ready,
-- revoked.
local function schedule(set, at, member, at_text)
  -- A number given to Redis is formatted with '%.17g': the caller's text,
  -- if it has one, saves that.
  redis.call('ZADD', P .. set, at_text or at, member)
  if not earliest_scheduled or at < earliest_scheduled then earliest_scheduled = at end
end

-- Every instance sleeps until the instant `P next` names (or an earlier
-- one it computed itself) and then runs `tick`, which stores the next due
-- instant there. So no instance sleeps past the instant in `P next`, and
-- only an instant scheduled before it has to be announced; taking
-- things off the timed sets can only make an instance wake early, which
-- is harmless.
local function announce_due()
  if not earliest_scheduled then return end
  peek()
  if not known_next or earliest_scheduled < known_next then
    set_next(earliest_scheduled)
    redis.call('@PUBLISH@', P .. 'timer', int(earliest_scheduled))
  end
  earliest_scheduled = nil
end

-- The template whose prefix is the longest that starts `name`, if any.
local templates
local function template_for(name)
  if templates == nil then templates = redis.call('SMEMBERS', P .. 'templates') end
  local best = nil
  for _, template in ipairs(templates) do
    local prefix = string.sub(template, 1, -2)
    if string.sub(name, 1, #prefix) == prefix and (not best or #template > #best) then
      best = template
    end
  end
  return best
end

-- A new instance `name` of `template`, as the template is now (its
-- pause included). The caller checked the template's room for it.
local function new_instance(name, template)
  local t = hash(lkey(template))
  local uid = redis.call('INCR', P .. 'uid')
  local key = lkey(name)
  redis.call('HSET', key, 'uid', uid, 'slots', int(t.slots), 'decay', num(t.decay),
    'active', t.active, 'held', 0, 'drained', int(NOW), 'qslots', 0, 'granted', 0,
    'granted_slots', 0, 'waited', 0, 'expired', 0, 'denied', 0, 'created', int(NOW),
    'updated', int(NOW), 'of', template, 'x', 1)
  if t.description then redis.call('HSET', key, 'description', t.description) end
  if t.ad_factor then
    redis.call('HSET', key, 'ad_factor', num(t.ad_factor), 'ad_recovery', num(t.ad_recovery))
  end
  if t.paused and t.paused > NOW then
    redis.call('HSET', key, 'paused', int(t.paused), 'paused_since', int(t.paused_since), 'x', 1)
    if t.pause_reason then redis.call('HSET', key, 'pause_reason', t.pause_reason) end
    if t.pause_reporter then redis.call('HSET', key, 'pause_reporter', t.pause_reporter) end
  end
  redis.call('SADD', P .. 'ti:' .. template, name)
  redis.call('HINCRBY', lkey(template), 'n', 1)
  forget(name)
  forget(template)
  touch(name)
  touch(template)
end

-- Refuses a new key of `template` beyond this partition's share of its
-- instances (`adding`: the keys this request adds already, counting this
-- one). `share` tells the caller another partition may lend room.
local function no_room_for_instance(name, template, adding)
  local t = redis.call('HMGET', lkey(template), 'n', 'max', 'maxall')
  if tonumber(t[1] or 0) + adding <= tonumber(t[2]) then return nil end
  return { err = 'too_many_instances', name = name, template = template, max = t[3], share = true }
end

-- Makes sure limit `name` exists: a key of a template without an instance
-- gets one. Answers a refusal if it cannot.
local function limit_or_key(name)
  if load_limit(name) then return nil end
  local template = template_for(name)
  if not template then return { err = 'limit_not_found', name = name } end
  local refusal = no_room_for_instance(name, template, 1)
  if refusal then return refusal end
  new_instance(name, template)
end

-- Takes an instance out of its template (its sums and count): it is
-- deleted, dropped, or made a limit of its own.
local function detach(name)
  local limit = load_limit(name)
  if not (limit and limit.of) then return end
  local template = limit.of
  local t = lkey(template)
  local fields = redis.call('HMGET', lkey(name), 'held', 'qslots')
  local out = { held = fields[1], qslots = fields[2], qn = redis.call('ZCARD', qkey(name)), n = 1 }
  for field, value in pairs(out) do
    -- Only what is there: Redis reads '-0' as no integer.
    if tonumber(value) ~= 0 then redis.call('HINCRBY', t, field, -tonumber(value)) end
  end
  redis.call('SREM', P .. 'ti:' .. template, name)
  redis.call('HDEL', lkey(name), 'of')
  redis.call('ZREM', P .. 'idle', name)
  forget(name)
  forget(template)
  touch(template)
end

-- Drops an instance that holds nothing and has nobody waiting.
local function drop_instance(name)
  detach(name)
  redis.call('DEL', lkey(name), qkey(name), llkey(name))
  redis.call('ZREM', P .. 'ready', name)
  forget(name)
  publish(function() return { limit_deleted = name } end)
end

-- Drops each instance among `names` that is idle now; one that will be
-- once its decaying slots drain or its pause ends is looked at again then.
local function drop_idle(names)
  for _, name in ipairs(names) do
    local limit = load_limit(name)
    -- A lowered adaptive instance is kept until it has climbed back (each
    -- step looks again): a new one would start at full speed.
    if limit and limit.of and limit.held == 0 and not limit.scale
      and redis.call('EXISTS', qkey(name)) == 0 then
      local busy_until = math.max(limit.drained, limit.paused or 0)
      if busy_until > NOW then
        schedule('idle', busy_until, name)
      else
        drop_instance(name)
        touched[name] = nil
      end
    end
  end
end

local function finish(reply)
  drop_idle(touched_order)
  announce_due()
  if #touched_order > 0 and is_watched() then
    for _, name in ipairs(touched_order) do
      local limit = load_limit(name)
      if limit then publish(function() return { limit = view(limit) } end) end
    end
  end
  return cjson.encode(reply)
end

local function count(names, field, by)
  for _, name in ipairs(names) do
    local limit = load_limit(name)
    if limit and limit.active == 1 then
      bump(name, field, by or 1)
      touch(name)
    end
  end
end

-- The lease's holdings: names it holds slots on, each with the limit's uid
-- at the grant, so that a limit deleted and created again is not touched.
local function give_back(lease)
  local names = words(lease.names)
  local uids = words(lease.uids)
  for i, name in ipairs(names) do
    local limit = load_limit(name)
    if limit and limit.uid == tonumber(uids[i]) then
      bump(name, 'held', -lease.occupy)
      redis.call('SREM', llkey(name), lease.id)
      touch(name)
    end
  end
  return names
end

local function drop_lease(id, lease)
  redis.call('DEL', lease_key(id))
  redis.call('ZREM', P .. 'exp', id)
  lease.id = id
  local names = give_back(lease)
  publish(function() return { lease_ended = id } end)
  return names
end

-- A lease granted to a queued request lives this long until the instance
-- that parks the request confirms it (by renewing it to its full TTL): if
-- that instance died, the slot comes back within seconds, not a TTL.
local CLAIM_US = 3 * US

-- Grants a request: occupies its active limits, writes its lease (in
-- concurrency mode). Returns the outcome sent to its waiter.
local function grant(req, queued)
  local names = req.list or words(req.names)
  local held_names, held_uids = {}, {}
  for _, name in ipairs(names) do
    local limit = load_limit(name)
    if limit and limit.active == 1 then
      if req.mode == 'rate' then
        bump(name, 'granted', 1, 'granted_slots', req.occupy)
        add_decaying(limit, req.occupy)
      else
        bump(name, 'granted', 1, 'granted_slots', req.occupy, 'held', req.occupy)
        redis.call('SADD', llkey(name), req.token)
        held_names[#held_names + 1] = name
        held_uids[#held_uids + 1] = limit.uid
      end
      touch(name)
    end
  end
  local now = int(NOW)
  local outcome = { granted_at = now, waited = req.enq and int(NOW - req.enq) or '0' }
  if req.mode ~= 'rate' then
    local expires = NOW + req.ttl
    if queued then expires = NOW + math.min(req.ttl, CLAIM_US) end
    local expires_at = int(expires)
    -- A lease on no active limit holds nothing; its lists are still lists
    -- (`[]`, where cjson would have written an empty table as `{}`).
    local names, uids = json_names(held_names), json_uids(held_uids)
    local key = lease_key(req.token)
    if req.holder or req.whole then
      local fields = {
        'names', names, 'uids', uids, 'occupy', int(req.occupy),
        'granted_at', now, 'expires', expires_at, 'ttl', int(req.ttl),
      }
      if req.holder then fields[#fields + 1] = 'holder'; fields[#fields + 1] = req.holder end
      if req.whole then fields[#fields + 1] = 'whole'; fields[#fields + 1] = req.whole end
      redis.call('HSET', key, unpack(fields))
    else
      redis.call('HSET', key, 'names', names, 'uids', uids, 'occupy', int(req.occupy),
        'granted_at', now, 'expires', expires_at, 'ttl', int(req.ttl))
    end
    schedule('exp', expires, req.token, expires_at)
    outcome.lease = req.token
    outcome.expires = expires_at
    publish(function()
      local lease = {
        names = names, uids = uids, occupy = req.occupy, holder = req.holder,
        granted_at = NOW, expires = expires, ttl = req.ttl, whole = req.whole,
      }
      return { lease = lease_view(req.token, lease) }
    end)
  end
  return outcome
end

-- Counts a request into (1) or out of (-1) an instance's template's
-- waiting requests.
local function queued_here(name, by)
  local limit = load_limit(name)
  if limit and limit.of then redis.call('HINCRBY', lkey(limit.of), 'qn', by) end
end

-- Takes a queued request out of every queue.
local function unqueue(token, req)
  if req.owner then redis.call('SREM', P .. 'owned:' .. req.owner, token) end
  for _, name in ipairs(words(req.names)) do
    if redis.call('ZREM', qkey(name), token) == 1 then
      bump(name, 'qslots', -req.occupy)
      queued_here(name, -1)
      touch(name)
    end
  end
  redis.call('DEL', rkey(token))
end

-- Tells a queued request's waiter how it ended: published for the instance
-- that parks it, and kept a while for one that missed the message.
local function settle(token, outcome)
  outcome.token = token
  local text = cjson.encode(outcome)
  redis.call('SET', P .. 'res:' .. token, text, 'PX', RESULT_TTL_MS)
  redis.call('@PUBLISH@', P .. 'wake', text)
end

local function head(name)
  return redis.call('ZRANGE', qkey(name), 0, 0)[1]
end

-- Whether a queued request may be granted now: on every active limit it
-- names it is first in line and fits. A head that waits only for decay
-- sets that limit's ready instant.
local function eligible(token, req)
  for _, name in ipairs(words(req.names)) do
    local limit = load_limit(name)
    if limit and limit.active == 1 then
      if head(name) ~= token then return false end
      local fits, at = room(limit, req.occupy)
      if fits ~= 'now' then
        if at then schedule('ready', at, name) end
        return false
      end
    end
  end
  return true
end

-- Grants every request that became grantable on these limits, following
-- each grant to the other limits it touched.
local function promote(names)
  local work, seen_at = {}, {}
  for _, name in ipairs(names) do work[#work + 1] = name end
  local i = 1
  while i <= #work do
    local name = work[i]
    i = i + 1
    local limit = load_limit(name)
    if limit then
      -- An active limit's queue is served from its head; an inactive
      -- limit orders nothing, so any of its waiters may pass.
      local candidates
      if limit.qslots == 0 then
        candidates = {}
      elseif limit.active == 1 then
        candidates = { head(name) }
      else
        candidates = redis.call('ZRANGE', qkey(name), 0, -1)
      end
      local granted_one = false
      for _, token in ipairs(candidates) do
        local req = hash(rkey(token))
        if req then
          req.token = token
          if req.owner and redis.call('EXISTS', P .. 'inst:' .. req.owner) == 0 then
            -- Its instance is gone: nobody would hear of a grant.
            unqueue(token, req)
            granted_one = true
            for _, other in ipairs(words(req.names)) do work[#work + 1] = other end
          elseif eligible(token, req) then
            unqueue(token, req)
            settle(token, { ok = grant(req, true) })
            granted_one = true
            for _, other in ipairs(words(req.names)) do work[#work + 1] = other end
          end
        end
      end
      -- A new head may fit too.
      if granted_one and limit.active == 1 then work[#work + 1] = name end
    end
  end
end

local MIN_SCALE = 0.01
local MAX_DRAIN_SECONDS = 100 * 365 * 86400

-- Sets the share of its configured value an adaptive limit has in force,
-- keeping its decaying level (core's `Limit::set_scale`).
local function set_scale(name, scale)
  local limit = load_limit(name)
  local floor = MIN_SCALE
  if limit.decay > 0 then floor = math.max(limit.slots / (limit.decay * MAX_DRAIN_SECONDS), MIN_SCALE) end
  -- Steps of 1/recovery_seconds add up to 1 only up to rounding.
  if scale > 1 - 1e-9 then scale = 1 end
  scale = math.max(math.min(floor, 1), math.min(scale, 1))
  local level = decaying(limit)
  local drained = NOW
  if level > 0 and limit.decay > 0 then drained = NOW + math.ceil(level * US / (limit.decay * scale)) end
  if scale < 1 then
    redis.call('HSET', lkey(name), 'scale', num(scale), 'drained', int(drained), 'x', 1)
  else
    redis.call('HSET', lkey(name), 'drained', int(drained))
    redis.call('HDEL', lkey(name), 'scale')
    redis.call('ZREM', P .. 'recover', name)
  end
  forget(name)
  touch(name)
  return scale
end

-- A throttling report on an adaptive limit: its scale is multiplied by its
-- decrease factor, at most once a second, and climbs back from a second
-- later on (see `tick`). A template itself is never lowered.
local function lower(name)
  local limit = load_limit(name)
  local fields = redis.call('HMGET', lkey(name), 'ad_factor', 'lowered')
  if not fields[1] or limit.max then return end
  if fields[2] and NOW < tonumber(fields[2]) + US then return end
  local scale = set_scale(name, (limit.scale or 1) * tonumber(fields[1]))
  redis.call('HSET', lkey(name), 'lowered', int(NOW))
  if scale < 1 then schedule('recover', NOW + US, name) end
end

-- One step of an adaptive limit's climb back to its configured value.
local function recover(name)
  local limit = load_limit(name)
  local recovery = limit and redis.call('HGET', lkey(name), 'ad_recovery')
  if not (recovery and limit.scale) then return end
  local scale = set_scale(name, limit.scale + 1 / tonumber(recovery))
  if scale < 1 then schedule('recover', NOW + US, name) end
end

-- Sets a limit's definition from `def` (strings as the update function
-- takes them; '' leaves a field as it is). `def.adaptive` is '' (as it
-- is), 'off', or 'FACTOR RECOVERY_SECONDS'.
local function redefine(name, def)
  local limit = load_limit(name)
  local key = lkey(name)
  if def.slots ~= '' then redis.call('HSET', key, 'slots', def.slots) end
  if def.decay ~= '' then
    -- Keep the decaying level; at a rate of 0 nothing would ever decay, so
    -- decaying slots are dropped.
    local level = decaying(limit)
    local decay = tonumber(def.decay)
    local drained = NOW
    if decay > 0 then drained = NOW + math.ceil(level * US / (decay * (limit.scale or 1))) end
    redis.call('HSET', key, 'decay', def.decay, 'drained', int(drained))
  end
  if def.active ~= '' then redis.call('HSET', key, 'active', def.active) end
  if def.adaptive == 'off' then
    redis.call('HDEL', key, 'ad_factor', 'ad_recovery', 'lowered')
    forget(name)
    -- A limit made fixed is back at its configured value.
    set_scale(name, 1)
  elseif def.adaptive ~= '' then
    local factor, recovery = string.match(def.adaptive, '^(%S+) (%S+)$')
    redis.call('HSET', key, 'ad_factor', factor, 'ad_recovery', recovery)
  end
  if def.description_change == 'set' then redis.call('HSET', key, 'description', def.description) end
  if def.description_change == 'clear' then redis.call('HDEL', key, 'description') end
  redis.call('HSET', key, 'updated', int(NOW))
  forget(name)
  touch(name)
end

-- Fails the waiters a limit can no longer ever grant, as the engine would
-- have refused them had they come after its change; adds the limits they
-- leave to `freed`.
local function fail_impossible(name, freed)
  local limit = load_limit(name)
  if limit.active ~= 1 then return end
  for _, token in ipairs(redis.call('ZRANGE', qkey(name), 0, -1)) do
    local req = hash(rkey(token))
    if req then
      local refusal = impossible(limit, req.occupy, req.mode)
      if refusal then
        req.token = token
        unqueue(token, req)
        settle(token, refusal)
        for _, other in ipairs(words(req.names)) do freed[#freed + 1] = other end
      end
    end
  end
end

-- A limit and, for a template, its instances in this partition.
local function with_instances(name)
  local names = { name }
  if load_limit(name).max then
    for _, instance in ipairs(redis.call('SMEMBERS', P .. 'ti:' .. name)) do
      names[#names + 1] = instance
    end
  end
  return names
end

-- The next instant anything is due: a lease expiry, a head fitting by
-- decay, a tombstone to drop.
local function next_due()
  local best = nil
  for _, key in ipairs({ 'exp', 'ready', 'revoked', 'idle', 'recover' }) do
    local first = redis.call('ZRANGE', P .. key, 0, 0, 'WITHSCORES')
    if first[2] then
      local at = tonumber(first[2])
      if not best or at < best then best = at end
    end
  end
  return best
end

-- Starts a call: reads the prefix and the instant, and forgets whatever
-- the previous call left behind.
local function begin(args)
  P = args[1]
  if args[2] ~= '' then
    NOW = tonumber(args[2])
  else
    local t = redis.call('TIME')
    NOW = tonumber(t[1]) * US + tonumber(t[2])
  end
  cache, touched, touched_order, templates = {}, {}, {}, nil
  peeked, watched, known_next, earliest_scheduled = false, nil, nil, nil
end
