-- Sliding window log: the Lua twin of algorithm/sliding_log.rs.
-- State: one ZSET per key. Each admitted request is one member "ts:cost" scored by its time ts (µs);
-- same-microsecond admissions are merged into one member, so members are unique (no timestamp-as-member
-- collision) and a weighted cost is one member, not one per unit: at most `limit` members per key. The
-- member "#" is scored -(total units logged), so the total is one ZSCORE away and never falls inside a
-- time range (times are >= 0). Params: p1 = limit, p2 = period (µs).

local SL_ENTRY = 'a sliding log entry "ts:cost" scored by its time (decimal integers below 2^53)'
local SL_TOTAL = "a sliding log whose '#' member is scored by minus its total units (an integer in [-2^53, -1])"

-- An entry's cost; RLCORRUPT for a member this script did not write.
local function sl_cost(key, member)
  local c = string.match(member, '^%d+:(%d+)$')
  if not c then
    corrupt(key, member, SL_ENTRY)
  end
  c = tonumber(c)
  if c > MAX_EXACT then
    corrupt(key, member, SL_ENTRY)
  end
  return c
end

-- An entry's time, from its score: an integer in [0, 2^53), else RLCORRUPT (a score may read as a
-- fraction, inf or nan).
local function sl_time(key, member, score)
  local ts = tonumber(score)
  if not ts or ts ~= math.floor(ts) or ts < 0 or ts > MAX_EXACT then
    corrupt(key, member .. ' scored ' .. tostring(score), SL_ENTRY)
  end
  return ts
end

-- The log's total. '#' is written with every non-empty log and with nothing else, so a log without it,
-- or with a total that is not a positive integer, was not written by this script. A key of another type
-- raises Redis's own WRONGTYPE from the ZSCORE.
local function sl_load(key)
  local total = redis.call('ZSCORE', key, '#')
  local s = { key = key, total = 0 }
  if not total then
    if redis.call('EXISTS', key) == 1 then
      corrupt(key, 'a sorted set without #', SL_TOTAL)
    end
    return s
  end
  local t = -tonumber(total)
  if t ~= math.floor(t) or t < 1 or t > MAX_EXACT then
    corrupt(key, '# scored ' .. total, SL_TOTAL)
  end
  s.total = t
  return s
end

-- Units logged at or before now - period (they have left the window), cached per `now`.
local function sl_expired(p, s, now)
  if s.expired_at == now then
    return s.expired
  end
  local units = 0
  local cutoff = now - p[2]
  if s.total > 0 and cutoff >= 0 then
    local gone = redis.call('ZRANGEBYSCORE', s.key, '0', fmt(cutoff))
    for i = 1, #gone do
      units = units + sl_cost(s.key, gone[i])
    end
  end
  s.expired_at, s.expired = now, units
  return units
end

-- The newest entry: member and time, or nil. Cached in s until an entry is added or removed.
local function sl_newest(s)
  if s.newest_known then
    return s.newest_member, s.newest_ts
  end
  local member, ts = nil, nil
  if s.total > 0 then
    local r = redis.call('ZRANGE', s.key, -1, -1, 'WITHSCORES')
    if r[1] ~= nil and r[1] ~= '#' then
      sl_cost(s.key, r[1])
      member, ts = r[1], sl_time(s.key, r[1], r[2])
    end
  end
  s.newest_known, s.newest_member, s.newest_ts = true, member, ts
  return member, ts
end

local function sl_evaluate(p, s, now, cost)
  local limit, period = p[1], p[2]
  local used = s.total - sl_expired(p, s, now)
  if used < 0 then
    corrupt(s.key, '# scored ' .. fmt(-s.total), 'a total at least the units of the entries it counts')
  end
  local remaining = limit - used
  if remaining < 0 then
    remaining = 0
  end
  local reset = 0
  local _, newest = sl_newest(s)
  if newest and used > 0 then
    reset = newest + period - now
    -- An entry ahead of now (a server clock that stepped back) never makes a wait beyond one period.
    if reset > period then
      reset = period
    end
  end
  if cost > limit then
    return { limit, remaining, reset, NEVER, 0 }
  end
  if cost <= remaining then
    if cost > 0 then
      reset = period
    end
    return { limit, remaining - cost, reset, 0, 0 }
  end
  -- Wait until enough of the oldest live entries have left the window.
  local excess = used + cost - limit
  local cutoff = now - period
  local lo = '0'
  if cutoff >= 0 then
    lo = '(' .. fmt(cutoff)
  end
  local live = redis.call('ZRANGEBYSCORE', s.key, lo, '+inf', 'WITHSCORES')
  local freed, retry = 0, period
  for i = 1, #live, 2 do
    freed = freed + sl_cost(s.key, live[i])
    if freed >= excess then
      retry = sl_time(s.key, live[i], live[i + 1]) + period - now
      if retry > period then
        retry = period
      end
      break
    end
  end
  return { limit, remaining, reset, retry, 0 }
end

local function sl_prune(p, s, now)
  local units = sl_expired(p, s, now)
  if units > 0 then
    redis.call('ZREMRANGEBYSCORE', s.key, '0', fmt(now - p[2]))
    s.total = s.total - units
    s.newest_known = false
  end
  s.expired_at, s.expired = now, 0
end

local function sl_commit(p, s, now, cost)
  sl_prune(p, s, now)
  if cost == 0 then
    return
  end
  local member, ts = sl_newest(s)
  if member and ts >= now then
    -- Same microsecond (or a server clock that stepped back): merge into the newest entry.
    local merged = fmt(ts) .. ':' .. fmt(sl_cost(s.key, member) + cost)
    redis.call('ZREM', s.key, member)
    redis.call('ZADD', s.key, fmt(ts), merged)
    s.newest_member = merged
  else
    local added = fmt(now) .. ':' .. fmt(cost)
    redis.call('ZADD', s.key, fmt(now), added)
    s.newest_member, s.newest_ts = added, now
  end
  s.newest_known = true
  s.total = s.total + cost
end

local function sl_release(p, s, now, cost)
  sl_prune(p, s, now)
  while cost > 0 do
    local member, ts = sl_newest(s)
    if not member then
      break
    end
    local c = sl_cost(s.key, member)
    local take = c
    if take > cost then
      take = cost
    end
    redis.call('ZREM', s.key, member)
    if c > take then
      redis.call('ZADD', s.key, fmt(ts), fmt(ts) .. ':' .. fmt(c - take))
    end
    s.newest_known = false
    s.total = s.total - take
    cost = cost - take
  end
end

local function sl_store(key, p, s, now, slack)
  local _, newest = sl_newest(s)
  if not newest then
    redis.call('DEL', key)
    return 0
  end
  local fresh_at = newest + p[2]
  if fresh_at <= now then
    redis.call('DEL', key)
    return 0
  end
  redis.call('ZADD', key, fmt(-s.total), '#')
  local ttl = cdiv(fresh_at - now + slack, 1000)
  redis.call('PEXPIRE', key, fmt(ttl))
  return ttl
end

ALGS[6] = { load = sl_load, evaluate = sl_evaluate, commit = sl_commit, release = sl_release,
            store = sl_store }
