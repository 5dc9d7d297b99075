-- The client's shared state, one atomic step per call, on the Redis server's clock (µs from TIME).
--
-- Every key shares the hash tag of the namespace (`{ns}:`), so one namespace lives in one Redis Cluster
-- slot and a step may touch the counter keys it derives from the route map (same slot as the declared keys).
--
-- KEYS: 1 the token's global slots (sorted set: request id -> until when the slot is taken)
--       2 the token's global lock (µs until which a global 429 stops it)
--       3 the route's counter (name of the counter the route draws on; '' when its responses name none)
--       4 the route's probe (id of the one request learning an unknown route's counter)
--       5 the ban (µs until which the egress identity is banned; kept past that until a probe is answered
--         without a ban; `…:probe` holds the id of the one request, from any process, probing it)
--       6 the invalid-request log (sorted set: id -> µs of the invalid response)
--       7 the route's sub-limits (hash: body fingerprint -> µs until which requests of that shape wait)
--       8 the token's claims (sorted set: counter -> its window's end, for counters whose requests wait
--         for that end and will want global slots then; `{ns}:w:<counter>` holds the waiting requests)
-- ARGV: 1 op ('reserve', 'reconcile', 'release'), 2 request id, 3 key prefix of counters (`{ns}:`),
--       4 global limit (0: none), 5 global window µs, 6 in-flight lease µs, then per op (below).
-- Replies end with the request id, so that a reply answering another call is never believed.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local op, id, prefix = ARGV[1], ARGV[2], ARGV[3]
local glimit, gwindow, lease = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])

local ADMIT, WAIT, BANNED, STOPPED, FINGERPRINT = 0, 1, 2, 3, 4
-- A route keeps at most this many body shapes under a sub-limit (a shape is a set of top-level keys).
local SHAPES_KEPT = 64
-- Counters and route maps outlive their windows by a day: what a bucket is does not change often.
local REMEMBER_MS = 86400000

local function d(x) return string.format('%d', x) end
local function ms(us) return math.floor((us + 999) / 1000) end
local function num(v) return tonumber(v) or 0 end
local function counter_keys(name) return prefix .. 'c:' .. name, prefix .. 'f:' .. name end

-- Responses needed before a window is released early: the smallest of fewer round trips may be a lucky
-- one the next request does not repeat.
local RTT_SAMPLES = 8
-- `Reset-After` is rounded to the millisecond.
local HEADER_ROUNDING = 1000

-- When the window's requests may leave so that they *arrive* at its reset, never later than `reset`.
-- The upstream counts a request at some moment between its send `s` and the reading of its response
-- `r`, so every response bounds the reset: `s + reset_after <= reset <= r + reset_after`. Here `r` is
-- this script's clock when the response was reported and `s` that less the time the client measured since
-- the send: both late by the report's way in, which only makes the bounds later (safe). Two estimates,
-- each safe under its own assumption, and the later is taken: (a) the largest lower bound plus the spread
-- of the lower bounds over their number (a request sent then arrives at the reset unless its way in beats
-- the fastest seen); (b) the smallest upper bound less the smallest round trip seen. Only for a bucket its
-- responses showed to run fixed windows: a drain's reset moves with every request. A request reserved at
-- the release still has to reach its client and leave: later again.
local function release_at(w)
  if w.reset == 0 or w.ev_n == 0 or w.sh_win == 0 or w.rtt_n < RTT_SAMPLES or w.pct == 0 then
    return w.reset
  end
  local upper = w.reset
  if w.ev_maxlo <= w.ev_minhi + HEADER_ROUNDING then upper = math.min(upper, w.ev_minhi) end
  local by_way_in = w.ev_maxlo + math.floor((w.ev_maxlo - w.ev_minlo) / w.ev_n)
  local by_round_trip = upper - w.rtt_min
  local take = math.max(0, upper - math.max(by_way_in, by_round_trip))
  take = math.floor(take * math.min(w.pct, 100) / 100)
  return math.min(upper - take + w.margin, w.reset)
end

-- What a response says about the bucket's shape. A drain (a leaky bucket) reports, for a request that
-- makes its count `count = lim - remaining`, `(count - 1) * interval < reset_after <= count * interval`:
-- its responses all agree on one interval. A fixed window reports one reset whatever the count, so two of
-- its responses with counts two apart allow no common interval: `sh_win`, for good.
local function learn_shape(w, lim, remaining, reset_after)
  local count = lim - remaining
  if w.sh_win == 1 or count <= 0 then return end
  w.sh_lo = math.max(w.sh_lo, math.floor((reset_after - HEADER_ROUNDING) / count))
  if count > 1 then
    local hi = math.floor(reset_after / (count - 1))
    if w.sh_hi == 0 or hi < w.sh_hi then w.sh_hi = hi end
  end
  if w.sh_hi > 0 and w.sh_lo > w.sh_hi then
    w.sh_win = 1
    return
  end
  -- The smallest count seen (`sh_fc`) with its smallest reset-after, the largest with its largest.
  if w.sh_fc == 0 or count < w.sh_fc or (count == w.sh_fc and reset_after < w.sh_fr) then
    w.sh_fc, w.sh_fr = count, reset_after
  end
  if count > w.sh_mc or (count == w.sh_mc and reset_after > w.sh_mr) then
    w.sh_mc, w.sh_mr = count, reset_after
  end
end

-- Counts two apart: two responses of one fixed window with adjacent counts, counted within the same
-- millisecond, can agree on an interval (the whole window); counts two apart cannot.
local DRAIN_COUNT_SPAN = 2

-- The drain interval, once the responses show a drain (0 until then): they agree on an interval, their
-- counts span `DRAIN_COUNT_SPAN` or more, and reset-after grew with the count. The largest interval they
-- allow: pacing slower than the upstream drains is safe.
local function drain_interval(w)
  if w.sh_win == 1 or w.sh_hi == 0 or w.sh_fc == 0 then return 0 end
  if w.sh_mc - w.sh_fc < DRAIN_COUNT_SPAN or w.sh_mr <= w.sh_fr + HEADER_ROUNDING then return 0 end
  return math.max(1, w.sh_hi)
end

-- A drain, paced: requests leave while the bucket, as counted here, has room, then one per interval. It
-- is empty at the latest at `empty_at`: the latest moment a response said so, plus an interval for each
-- request in flight (it may be counted after that response), or later when requests that left after it
-- emptied fill it from their own reservation (`dr_adm`). One request's room is kept free, and as many
-- more as the spread of the paced round trips covers intervals: a request whose way in is the shortest
-- still finds the bucket below its limit. Returns the room now and when the next request may leave.
local function drain_room(w)
  local empty_at = math.max(w.empty_by + w.in_flight * w.dr_int, w.dr_adm)
  local spread = 0
  if w.dr_rmax > 0 then spread = w.dr_rmax - w.dr_rmin end
  local usable = math.max(1, w.lim - 1 - math.ceil(spread / w.dr_int))
  local level = math.ceil(math.max(0, empty_at - now) / w.dr_int)
  return usable - level, empty_at - (usable - 1) * w.dr_int
end

-- A response of the window: its bounds on the reset, sent `sent_ago` µs before now.
local function add_evidence(w, sent_ago, reset_after)
  local lo, hi = now - sent_ago + reset_after, now + reset_after
  if w.ev_n == 0 then
    w.ev_maxlo, w.ev_minlo, w.ev_minhi = lo, lo, hi
  else
    w.ev_maxlo = math.max(w.ev_maxlo, lo)
    w.ev_minlo = math.min(w.ev_minlo, lo)
    w.ev_minhi = math.min(w.ev_minhi, hi)
  end
  w.ev_n = w.ev_n + 1
end

-- A counter's window: `lim` per window, `minrem` (the smallest remaining count its responses reported;
-- `lim` until one did), `lost` (requests that left it without a response, or whose response belongs to an
-- earlier window: they may be counted in it), `reset` (µs; 0 = not known yet), `start` (µs; responses to
-- requests reserved before it belong to an earlier window), `len` (the longest reset-after seen: a
-- window's length at most), `last` (µs of the window's latest reservation), `floor` (µs: the latest
-- `response time + reset-after` of responses to earlier windows' requests), `hold` (µs until which the
-- resource is contended by others: a shared-scope 429 holds every process), `back` and `back_at` (units
-- of `lost` whose count ends at µs `back_at`, see `give_back_later`), `in_flight` (requests reserved
-- and not ended: the `f` set), what the window's responses say about its reset (`ev_*`, see
-- `release_at`), and, kept across windows, what the responses say about the bucket's shape (`sh_*`, see
-- `learn_shape`), the latest moment a response said the bucket is empty (`empty_by`), the pacing of a
-- drain (`dr_*`, see `drain_room`), the smallest round trip and how many were seen, and the limiter's
-- early-release settings (`pct`, `margin`).
--
-- What may still be sent is `minrem - in_flight - lost` (see `avail`): the latest count answered, less
-- everything that may be counted after it. It rises when a request in flight turns out to be in the count
-- already, or not counted at all (a shared-scope 429), and never above what the count allows: a stale
-- response cannot raise the smallest count.
--
-- A counter's state, all integers (0: none yet), packed into its hash's field `w` as 64-bit integers:
-- one field read and written per step (its fields one by one cost as much again as the rest of the
-- script). The hash also keeps `lim`, `avail` and `reset` as text, for other counters' steps and for
-- people looking.
local FIELDS = { 'lim', 'minrem', 'lost', 'reset', 'start', 'len', 'last', 'hold', 'floor', 'back',
  'back_at', 'ev_n', 'ev_maxlo', 'ev_minlo', 'ev_minhi', 'sh_lo', 'sh_hi', 'sh_win', 'sh_fc', 'sh_fr',
  'sh_mc', 'sh_mr', 'empty_by', 'dr_int', 'dr_adm', 'dr_since', 'dr_rmin', 'dr_rmax', 'rtt_min', 'rtt_n',
  'pct', 'margin' }
local PACKED = '<' .. string.rep('i8', #FIELDS)

-- A counter first described by a response now.
local function fresh(lim)
  local w = {}
  for _, k in ipairs(FIELDS) do w[k] = 0 end
  w.lim = lim
  return w
end

-- `describing`: the caller holds a response of this counter (its window is being described now).
local function load(c, f, describing)
  -- Requests whose lease ran out (their process died, or is very late) may still be counted.
  local expired = redis.call('ZREMRANGEBYSCORE', f, '-inf', d(now))
  local in_flight = redis.call('ZCARD', f)
  local packed = redis.call('HGET', c, 'w')
  if not packed then return nil end
  local st = { struct.unpack(PACKED, packed) }
  local w = { in_flight = in_flight }
  for i, k in ipairs(FIELDS) do w[k] = st[i] end
  local lim = w.lim
  w.lost = w.lost + expired
  -- `ends`: when the window is over at the latest. Its reset, once a response described it; else, when
  -- nothing is in flight that could still describe it (its requests were cancelled, failed, refused by
  -- the global limit, or their process died), one window length after the last of them left. Never
  -- before `floor`: a request of an earlier window may have reached the upstream after this window's
  -- first ones, and a draining bucket holds it until then.
  w.ends = release_at(w)
  if w.ends == 0 and not describing and in_flight == 0 then
    w.ends = math.max(w.start, w.last) + w.len
  end
  if w.ends > 0 and w.floor > w.ends then w.ends = w.floor end
  if w.ends > 0 and w.ends <= now then
    -- The window is over (at the latest response's estimate of its end, or at its early release): a new
    -- one starts, less what is still in flight, which may be counted in it.
    w.minrem = lim
    w.lost = 0
    w.reset = 0
    w.ends = 0
    w.floor = 0
    w.back = 0
    w.back_at = 0
    w.ev_n = 0
    w.start = now
  elseif w.back > 0 and w.back_at <= now then
    -- Earlier windows' requests whose count has ended by now: they are no longer this window's.
    w.lost = math.max(0, w.lost - w.back)
    w.back = 0
    w.back_at = 0
  end
  return w
end

-- What may be sent now: a window's allowance, or a drain's room.
local function avail(w)
  if w.dr_int > 0 then return (drain_room(w)) end
  return w.minrem - w.in_flight - w.lost
end

local function store(c, w)
  local vals = {}
  for i, k in ipairs(FIELDS) do vals[i] = w[k] end
  redis.call('HSET', c, 'w', struct.pack(PACKED, unpack(vals)), 'lim', d(w.lim), 'avail', d(avail(w)),
    'reset', d(w.reset))
  redis.call('PEXPIRE', c, REMEMBER_MS)
end

-- A request of counter `name` left it without a response that describes it: it may be counted.
local function lose(name)
  local c, f = counter_keys(name)
  local w = load(c, f)
  if not w then return end
  w.lost = w.lost + 1
  store(c, w)
end

local function take_probe(wait_poll)
  if redis.call('SET', KEYS[4], id, 'NX', 'PX', ms(lease)) then return nil end
  local left = redis.call('PTTL', KEYS[4]) * 1000
  return { WAIT, d(math.max(1, math.min(wait_poll, left))), id }
end

-- Extends `key`'s time to live to `ttl` ms, never shortens it (claims of other waiters may need longer).
local function keep(key, ttl)
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end

-- `waiter` waits for `name`'s window to end (`w.ends`) and comes back at `back`: its counter claims a
-- global slot for it then.
local function claim(name, w, back)
  local wk = prefix .. 'w:' .. name
  redis.call('ZADD', wk, d(back), ARGV[11])
  keep(wk, ms(back - now + gwindow))
  redis.call('ZADD', KEYS[8], d(w.ends), name)
  keep(KEYS[8], ms(math.max(w.ends - now, 0) + gwindow))
end

-- Global slots claimed by the waiting requests of counters other than `own` whose windows end within
-- a window from now: as many as wait, at most each counter's limit. Waiters that did not come back
-- within a window of when they said they would are gone (cancelled, or their process died), and so are
-- claims a window past their end.
local function set_aside(own)
  redis.call('ZREMRANGEBYSCORE', KEYS[8], '-inf', d(now - gwindow))
  local n = 0
  for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[8], '-inf', d(now + gwindow))) do
    if name ~= own then
      local wk = prefix .. 'w:' .. name
      redis.call('ZREMRANGEBYSCORE', wk, '-inf', d(now - gwindow))
      local waiting = redis.call('ZCARD', wk)
      if waiting == 0 then
        redis.call('ZREM', KEYS[8], name)
      else
        n = n + math.min(waiting, num(redis.call('HGET', prefix .. 'c:' .. name, 'lim')))
      end
    end
  end
  return n
end

local function reserve()
  local poll = tonumber(ARGV[7])
  local inv_stop, inv_window = tonumber(ARGV[8]), tonumber(ARGV[9])
  local shape = ARGV[10]
  local waiter, waited = ARGV[11], tonumber(ARGV[12])
  local ban = num(redis.call('GET', KEYS[5]))
  if ban > now then return { BANNED, d(ban - now), id } end
  local ban_probe = ban > 0
  if ban_probe then
    -- The ban's backoff is over: one request probes it; the others wait for its answer.
    local left = redis.call('PTTL', KEYS[5] .. ':probe')
    if left > 0 then return { BANNED, d(math.max(1, math.min(poll, left * 1000))), id } end
  end
  if inv_stop > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', d(now - inv_window))
    local count = redis.call('ZCARD', KEYS[6])
    if count >= inv_stop then return { STOPPED, d(count), id } end
  end
  local lock = num(redis.call('GET', KEYS[2]))
  if lock > now then return { WAIT, d(lock - now), id } end
  local counter = redis.call('GET', KEYS[3])
  local c, f, w
  if counter and counter ~= '' then
    c, f = counter_keys(counter)
    w = load(c, f)
    if w and w.hold > now then return { WAIT, d(w.hold - now), id } end
    if w and avail(w) <= 0 then
      local wait = poll
      if w.dr_int > 0 then
        local _, next_at = drain_room(w)
        w.ends = next_at
      end
      if w.ends > 0 then wait = w.ends - now end
      wait = math.max(1, wait)
      store(c, w)
      if glimit > 0 and w.ends > 0 and waiter ~= '' then claim(counter, w, now + wait) end
      return { WAIT, d(wait), id }
    end
  end
  if glimit > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', d(now))
    local used = redis.call('ZCARD', KEYS[1])
    if used >= glimit then
      -- The oldest slot frees at its score, or, while its request is still out (score past one window
      -- from now), no earlier than one window from now: ask again then rather than at its lease's end.
      local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
      return { WAIT, d(math.max(1, math.min(num(first[2]) - now, gwindow))), id }
    end
    -- Slots set aside for other counters' waiting requests, due within a window. A request held back
    -- by them for a whole window goes anyway: they are a preference, never a starvation.
    if waited < gwindow and used + set_aside(counter or '') >= glimit then
      return { WAIT, d(poll), id }
    end
  end
  -- A route with sub-limits holds the shapes they refused: the caller names its request's shape
  -- ('' when it has not read its body yet, '0' for a body without one).
  if redis.call('EXISTS', KEYS[7]) == 1 then
    if shape == '' then return { FINGERPRINT, '1', id } end
    local held = num(redis.call('HGET', KEYS[7], shape))
    if held > now then return { WAIT, d(held - now), id } end
  end
  local probe = 0
  if w then
    w.in_flight = w.in_flight + 1
    if w.dr_int > 0 then w.dr_adm = math.max(w.dr_adm, now) + w.dr_int end
    w.last = now
    store(c, w)
    redis.call('ZADD', f, d(now + lease), id)
    redis.call('PEXPIRE', f, ms(lease))
    if waiter ~= '' then redis.call('ZREM', prefix .. 'w:' .. counter, waiter) end
  elseif counter and counter ~= '' then
    counter = false
  end
  if not counter then
    -- An unknown route (or a forgotten counter): one request, from any process, learns it.
    local waiting = take_probe(poll)
    if waiting then return waiting end
    counter = ''
    probe = 1
  end
  if glimit > 0 then
    redis.call('ZADD', KEYS[1], d(now + lease), id)
    redis.call('PEXPIRE', KEYS[1], ms(lease + gwindow))
  end
  if ban_probe then redis.call('SET', KEYS[5] .. ':probe', id, 'PX', ms(lease)) end
  return { ADMIT, d(now), id, counter, probe }
end

-- The request was sent and ended: its global slot stays taken for one window from now (the upstream
-- counted it at an unknown moment before now). `only_if_held`: a request that may never have left
-- (its reservation may not exist) does not take a slot it never had. Returns whether the request was
-- the ban's probe, and whether it was still in flight on `reserved_counter`.
local function end_request(reserved_counter, only_if_held)
  if glimit > 0 then
    if only_if_held then
      redis.call('ZADD', KEYS[1], 'XX', d(now + gwindow), id)
    else
      redis.call('ZADD', KEYS[1], d(now + gwindow), id)
    end
    redis.call('PEXPIRE', KEYS[1], ms(lease + gwindow))
  end
  if redis.call('GET', KEYS[4]) == id then redis.call('DEL', KEYS[4]) end
  local probed_ban = redis.call('GET', KEYS[5] .. ':probe') == id
  if probed_ban then redis.call('DEL', KEYS[5] .. ':probe') end
  local was_in_flight = false
  if reserved_counter ~= '' then
    local _, f = counter_keys(reserved_counter)
    was_in_flight = redis.call('ZREM', f, id) == 1
  end
  return probed_ban, was_in_flight
end

-- A request of an earlier window, still in flight when the current one started, was taken from it as if
-- it counted there: its response does not say whether it does, so it stays taken (`lost`). The response
-- does show when its count ends at the latest, `now + reset_after`, whatever the bucket's shape (a fixed
-- window's reset, or a leaky bucket's drain, which later requests do not delay): from then on its unit is
-- the current window's again. Units come back together, at the latest of their times.
local function give_back_later(w, reset_after)
  w.lost = w.lost + 1
  w.back = w.back + 1
  if now + reset_after > w.back_at then w.back_at = now + reset_after end
end

-- Starts, keeps or stops pacing the counter as a drain, from what its responses now say about its shape.
-- Only round trips of requests reserved while it was paced measure the spread (those of a first burst,
-- opening connections, say nothing of the paced ones' way in).
local function pace(w, reserved_at, rtt)
  local interval = drain_interval(w)
  if interval == 0 then
    if w.dr_int > 0 then
      -- Later responses contradict the drain: counted by windows again, from a full bucket's end.
      w.dr_int = 0
      w.minrem = 0
      if w.empty_by > w.reset then w.reset = w.empty_by end
    end
    return
  end
  if w.dr_int == 0 then
    w.dr_since, w.dr_adm, w.dr_rmin, w.dr_rmax = now, 0, 0, 0
  elseif reserved_at >= w.dr_since and rtt > 0 then
    if w.dr_rmax == 0 or rtt < w.dr_rmin then w.dr_rmin = rtt end
    if rtt > w.dr_rmax then w.dr_rmax = rtt end
  end
  w.dr_int = interval
end

local function reconcile()
  local reserved_at, reserved_counter, named = tonumber(ARGV[7]), ARGV[8], ARGV[9]
  local lim, remaining, reset_after = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
  local block, glock, ban = tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15])
  local invalid, inv_window, inv_keep = ARGV[16] == '1', tonumber(ARGV[17]), tonumber(ARGV[18])
  local hold = tonumber(ARGV[19])
  local shape, shape_wait = ARGV[20], tonumber(ARGV[21])
  local sent_ago, rtt, pct, margin = tonumber(ARGV[22]), tonumber(ARGV[23]), tonumber(ARGV[24]),
    tonumber(ARGV[25])
  local probed_ban, was_in_flight = end_request(reserved_counter, false)
  if named == '-' then
    -- The response named no limit: the route is unlimited unless another response said otherwise.
    redis.call('SET', KEYS[3], '', 'PX', REMEMBER_MS, 'NX')
  elseif named ~= '' then
    redis.call('SET', KEYS[3], named, 'PX', REMEMBER_MS)
    if was_in_flight and reserved_counter ~= named then
      -- Its route now draws on another counter: the one it was reserved on may still count it.
      lose(reserved_counter)
    end
    local c, f = counter_keys(named)
    local w = load(c, f, true)
    if not w then
      w = fresh(lim)
      w.minrem, w.reset, w.start, w.len, w.last = remaining, now + reset_after, reserved_at, reset_after,
        reserved_at
      w.in_flight = redis.call('ZCARD', f)
      add_evidence(w, sent_ago, reset_after)
    elseif reserved_at >= w.start then
      -- A response of this window: its count includes this request (unless the upstream refused it
      -- uncounted, a shared-scope 429) and everything that arrived before it.
      if remaining < w.minrem then w.minrem = remaining end
      add_evidence(w, sent_ago, reset_after)
      if now + reset_after > w.reset then w.reset = now + reset_after end
      if reset_after > w.len then w.len = reset_after end
      w.lim = lim
    else
      -- A response to an earlier window's request: its count is not this window's, but what it says about
      -- when the bucket drains still holds.
      if now + reset_after > w.floor then w.floor = now + reset_after end
      if was_in_flight and reserved_counter == named then give_back_later(w, reset_after) end
    end
    if hold > 0 and now + hold > w.hold then w.hold = now + hold end
    learn_shape(w, lim, remaining, reset_after)
    if now + reset_after > w.empty_by then w.empty_by = now + reset_after end
    pace(w, reserved_at, rtt)
    if rtt > 0 then
      if w.rtt_n == 0 or rtt < w.rtt_min then w.rtt_min = rtt end
      w.rtt_n = w.rtt_n + 1
    end
    w.pct, w.margin = pct, margin
    if block > 0 then
      w.minrem = 0
      w.ev_n = 0
      w.back = 0
      -- A drain: nothing drains before the block ends, and then the bucket is full less one.
      local full = now + block + (w.lim - 1) * w.dr_int
      if w.dr_int > 0 and full > w.empty_by then w.empty_by = full end
      if now + block > w.reset then w.reset = now + block end
    end
    store(c, w)
  end
  if shape_wait > 0 and shape ~= '0' then
    if redis.call('HLEN', KEYS[7]) >= SHAPES_KEPT then redis.call('DEL', KEYS[7]) end
    redis.call('HSET', KEYS[7], shape, d(now + shape_wait))
    redis.call('PEXPIRE', KEYS[7], REMEMBER_MS)
  end
  if glock > 0 and now + glock > num(redis.call('GET', KEYS[2])) then
    redis.call('SET', KEYS[2], d(now + glock), 'PX', ms(glock))
  end
  if ban > 0 then
    -- Kept past its backoff (a day at most) until a probe is answered without a ban.
    redis.call('SET', KEYS[5], d(now + ban), 'PX', ms(ban) + REMEMBER_MS)
  elseif probed_ban then
    redis.call('DEL', KEYS[5])
  end
  if invalid then
    redis.call('ZADD', KEYS[6], d(now), id)
    redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', d(now - inv_window))
    redis.call('ZREMRANGEBYRANK', KEYS[6], 0, -(inv_keep + 1))
    redis.call('PEXPIRE', KEYS[6], ms(inv_window))
  end
  return { id }
end

local function release()
  local counter = ARGV[7]
  if counter == '' then
    -- The reservation's reply never arrived (the call was dropped or timed out): if it was applied, it
    -- marked the route's counter in flight. Removing an id that is not there is harmless.
    counter = redis.call('GET', KEYS[3]) or ''
  end
  local _, was_in_flight = end_request(counter, true)
  if was_in_flight then lose(counter) end
  return { id }
end

if op == 'reserve' then return reserve() end
if op == 'reconcile' then return reconcile() end
if op == 'release' then return release() end
return redis.error_reply('RLPROTO unknown op')
