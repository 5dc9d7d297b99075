-- GCRA and the shaper: the Lua twins of algorithm/gcra.rs and algorithm/shaper.rs.
-- State: the theoretical arrival time (µs) as a decimal string; absent = 0 (fresh).
-- Params: p1 = emission interval T, p2 = tau = burst × T, p3 = burst, p4 = max delay (shaper only).

-- The state, at most `cap` ahead of now: a state further ahead than the policy can put it (written under
-- a larger quota, or read on a server clock that stepped back) reads as the policy's fullest state, so no
-- reply exceeds the longest wait the policy can produce. State the policy wrote is never beyond it.
local function tat_load(key, cap, now)
  local raw = redis.call('GET', key)
  if not raw then
    return { 0 }
  end
  local tat = parse_count(key, raw, TAT)
  if tat - now > cap then
    tat = now + cap
  end
  return { tat }
end

-- GCRA's fullest state is a penalised one: 2 × tau ahead.
local function gcra_load(key, p, now)
  return tat_load(key, 2 * p[2], now)
end

-- The shaper's: tau plus the longest delay it grants.
local function shaper_load(key, p, now)
  return tat_load(key, p[2] + p[4], now)
end

local function gcra_remaining(p, ahead)
  if ahead >= p[2] then
    return 0
  end
  return idiv(p[2] - ahead, p[1])
end

local function gcra_evaluate(p, s, now, cost)
  local tat = s[1]
  local base = tat
  if now > base then
    base = now
  end
  local ahead = base - now
  local burst = p[3]
  if cost > burst then
    return { burst, gcra_remaining(p, ahead), ahead, NEVER, 0 }
  end
  local new_ahead = ahead + cost * p[1]
  -- Cost 0 is a query and always allowed, even while a penalty holds the key beyond its capacity.
  if cost > 0 and new_ahead > p[2] then
    return { burst, gcra_remaining(p, ahead), ahead, new_ahead - p[2], 0 }
  end
  return { burst, gcra_remaining(p, new_ahead), new_ahead, 0, 0 }
end

local function shaper_evaluate(p, s, now, cost)
  local tat = s[1]
  local base = tat
  if now > base then
    base = now
  end
  local ahead = base - now
  local burst = p[3]
  -- cost × T may exceed 2^53 for a hostile cost; the comparison still holds (rounding is monotonic).
  if cost * p[1] > p[2] + p[4] then
    return { burst, gcra_remaining(p, ahead), ahead, NEVER, 0 }
  end
  local new_ahead = ahead + cost * p[1]
  local delay = new_ahead - p[2]
  if delay < 0 then
    delay = 0
  end
  if delay > p[4] then
    return { burst, gcra_remaining(p, ahead), ahead, delay - p[4], 0 }
  end
  return { burst, gcra_remaining(p, new_ahead), new_ahead, 0, delay }
end

local function tat_commit(p, s, now, cost)
  local base = s[1]
  if now > base then
    base = now
  end
  s[1] = base + cost * p[1]
end

local function gcra_penalise(p, s, now, cost)
  local base = s[1]
  if now > base then
    base = now
  end
  local add = cost * p[1]
  local cap = now + 2 * p[2]
  if add >= cap - base then
    s[1] = cap
  else
    s[1] = base + add
  end
end

local function tat_release(p, s, now, cost)
  local sub = cost * p[1]
  if sub >= s[1] then
    s[1] = 0
  else
    s[1] = s[1] - sub
  end
end

local function tat_store(key, p, s, now, slack)
  return put_string(key, fmt(s[1]), s[1], now, slack)
end

ALGS[1] = { load = gcra_load, evaluate = gcra_evaluate, commit = tat_commit, penalise = gcra_penalise,
            release = tat_release, store = tat_store }
ALGS[2] = { load = shaper_load, evaluate = shaper_evaluate, commit = tat_commit, release = tat_release,
            store = tat_store }
