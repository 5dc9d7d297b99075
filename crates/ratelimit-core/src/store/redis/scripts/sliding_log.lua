-- Sliding window log: the Lua twin of algorithm/sliding_log.rs.
-- State: one ZSET per key. Each admitted request is one member "ts:cost" scored by its time ts (µs);
-- same-microsecond admissions are merged into one member, so members are unique (no timestamp-as-member
-- collision) and a weighted cost is one member, not one per unit: at most `limit` members per key. The
-- member "#" is scored -(total units logged), so the total is one ZSCORE away and never falls inside a
-- time range (times are >= 0). Params: p1 = limit, p2 = period (µs).

local function sl_cost(member)
  return tonumber(string.match(member, ':(%d+)$'))
end

local function sl_load(key)
  local total = redis.call('ZSCORE', key, '#')
  local s = { key = key, total = 0 }
  if total then
    s.total = -tonumber(total)
  end
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
      units = units + sl_cost(gone[i])
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
      member, ts = r[1], tonumber(r[2])
    end
  end
  s.newest_known, s.newest_member, s.newest_ts = true, member, ts
  return member, ts
end

local function sl_evaluate(p, s, now, cost)
  local limit, period = p[1], p[2]
  local used = s.total - sl_expired(p, s, now)
  local remaining = limit - used
  if remaining < 0 then
    remaining = 0
  end
  local reset = 0
  local _, newest = sl_newest(s)
  if newest and used > 0 then
    reset = newest + period - now
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
    freed = freed + sl_cost(live[i])
    if freed >= excess then
      retry = tonumber(live[i + 1]) + period - now
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
    local merged = fmt(ts) .. ':' .. fmt(sl_cost(member) + cost)
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
    local c = sl_cost(member)
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
