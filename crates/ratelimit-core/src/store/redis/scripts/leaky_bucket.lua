-- Leaky bucket (meter): the Lua twin of algorithm/leaky_bucket.rs.
-- State: "level,last" (level × period, time of the last computation in µs); absent = empty.
-- Params: p1 = limit, p2 = period (µs), p3 = burst, p4 = capacity = burst × period (< 2^53).

-- Clamped to what the policy can hold (a penalty fills at most 2 × capacity; the last computation is never
-- in the future), as tb_load.
local function lb_load(key, p, now)
  local s = load_numbers(key, 2, 'a leaky bucket state "level,last" (decimal integers below 2^53)')
  if s[1] > 2 * p[4] then
    s[1] = 2 * p[4]
  end
  if s[2] > now then
    s[2] = now
  end
  return s
end

local function lb_level_at(p, s, now)
  local level = s[1]
  if level == 0 then
    return 0
  end
  local elapsed = now - s[2]
  if elapsed <= 0 then
    return level
  end
  -- Compare before multiplying: elapsed × limit may pass 2^53 after a long idle spell.
  if elapsed >= cdiv(level, p[1]) then
    return 0
  end
  return level - elapsed * p[1]
end

local function lb_evaluate(p, s, now, cost)
  local level = lb_level_at(p, s, now)
  local period, burst, capacity = p[2], p[3], p[4]
  local lv = level
  if lv > capacity then
    lv = capacity
  end
  local remaining = idiv(capacity - lv, period)
  if cost > burst then
    return { burst, remaining, cdiv(level, p[1]), NEVER, 0 }
  end
  local after = level + cost * period
  -- Cost 0 is a query and always allowed, even while a penalty holds the level above the capacity.
  if cost == 0 or after <= capacity then
    local left = 0
    if after < capacity then
      left = idiv(capacity - after, period)
    end
    return { burst, left, cdiv(after, p[1]), 0, 0 }
  end
  return { burst, remaining, cdiv(level, p[1]), cdiv(after - capacity, p[1]), 0 }
end

local function lb_commit(p, s, now, cost)
  local level = lb_level_at(p, s, now) + cost * p[2]
  if level == 0 then
    s[1], s[2] = 0, 0
  else
    s[1], s[2] = level, now
  end
end

local function lb_penalise(p, s, now, cost)
  local level = lb_level_at(p, s, now)
  local cap = 2 * p[4]
  local add = cost * p[2]
  if add >= cap - level then
    level = cap
  else
    level = level + add
  end
  s[1], s[2] = level, now
end

local function lb_release(p, s, now, cost)
  local level = lb_level_at(p, s, now)
  local sub = cost * p[2]
  if sub >= level then
    s[1], s[2] = 0, 0
  else
    s[1], s[2] = level - sub, now
  end
end

local function lb_store(key, p, s, now, slack)
  local fresh_at = 0
  if s[1] > 0 then
    fresh_at = s[2] + cdiv(s[1], p[1])
  end
  return put_string(key, fmt(s[1]) .. ',' .. fmt(s[2]), fresh_at, now, slack)
end

ALGS[4] = { load = lb_load, evaluate = lb_evaluate, commit = lb_commit, penalise = lb_penalise,
            release = lb_release, store = lb_store }
