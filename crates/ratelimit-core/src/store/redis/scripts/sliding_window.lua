-- Sliding window counter: the Lua twin of algorithm/sliding_window.rs.
-- State: "start,prev,cur" (current window start in µs, units in the previous and current windows);
-- absent = fresh. Params: p1 = limit, p2 = period (µs); limit × period < 2^53 (checked when built).

-- Counts clamped to the limit (no window of state the policy wrote holds more), which also keeps
-- prev × rest and cur × period below 2^53.
local function sw_load(key, p)
  local s = load_numbers(key, 3, 'a sliding window state "start,prev,cur" (decimal integers below 2^53)')
  if s[2] > p[1] then
    s[2] = p[1]
  end
  if s[3] > p[1] then
    s[3] = p[1]
  end
  return s
end

local function sw_roll(p, s, now)
  local period = p[2]
  local start = now - math.fmod(now, period)
  if s[1] == start then
    return start, s[2], s[3]
  elseif s[1] + period == start then
    return start, s[3], 0
  end
  return start, 0, 0
end

local function sw_reset_after(p, prev, cur, rest)
  if cur > 0 then
    return rest + p[2]
  elseif prev > 0 then
    return rest
  end
  return 0
end

local function sw_evaluate(p, s, now, cost)
  local limit, period = p[1], p[2]
  local start, prev, cur = sw_roll(p, s, now)
  local rest = period - (now - start)
  local capacity = limit * period
  -- estimate × period = prev × rest + cur × period; each term is below 2^53 but their sum may not be,
  -- so compare by subtracting from the capacity instead of adding.
  local weighted = prev * rest
  local free = capacity - cur * period -- >= 0: cur never exceeds the limit
  local remaining = 0
  if weighted < free then
    remaining = idiv(free - weighted, period)
  end
  if cost > limit then
    return { limit, remaining, sw_reset_after(p, prev, cur, rest), NEVER, 0 }
  end
  -- Cost 0 is a query and always allowed, even while a penalty holds the estimate above the limit.
  if cost == 0 then
    return { limit, remaining, sw_reset_after(p, prev, cur, rest), 0, 0 }
  end
  if cur + cost <= limit and weighted <= free - cost * period then
    local room = free - cost * period - weighted
    return { limit, idiv(room, period), sw_reset_after(p, prev, cur + cost, rest), 0, 0 }
  end
  local retry
  if cur + cost <= limit then
    local room = (limit - cur - cost) * period
    retry = rest - idiv(room, prev)
  else
    local room = (limit - cost) * period
    local w = idiv(room, cur)
    if w > period then
      w = period
    end
    retry = rest + period - w
  end
  return { limit, remaining, sw_reset_after(p, prev, cur, rest), retry, 0 }
end

local function sw_commit(p, s, now, cost)
  local start, prev, cur = sw_roll(p, s, now)
  if prev == 0 and cur + cost == 0 then
    s[1], s[2], s[3] = 0, 0, 0
  else
    s[1], s[2], s[3] = start, prev, cur + cost
  end
end

local function sw_penalise(p, s, now, cost)
  local start, prev, cur = sw_roll(p, s, now)
  local c = cur + cost
  if c > p[1] then
    c = p[1]
  end
  s[1], s[2], s[3] = start, prev, c
end

local function sw_release(p, s, now, cost)
  local start, prev, cur = sw_roll(p, s, now)
  local from_cur = cost
  if from_cur > cur then
    from_cur = cur
  end
  local from_prev = cost - from_cur
  if from_prev > prev then
    from_prev = prev
  end
  prev, cur = prev - from_prev, cur - from_cur
  if prev == 0 and cur == 0 then
    s[1], s[2], s[3] = 0, 0, 0
  else
    s[1], s[2], s[3] = start, prev, cur
  end
end

local function sw_store(key, p, s, now, slack)
  local fresh_at = 0
  if s[3] > 0 then
    fresh_at = s[1] + 2 * p[2]
  elseif s[2] > 0 then
    fresh_at = s[1] + p[2]
  end
  return put_string(key, fmt(s[1]) .. ',' .. fmt(s[2]) .. ',' .. fmt(s[3]), fresh_at, now, slack)
end

ALGS[7] = { load = sw_load, evaluate = sw_evaluate, commit = sw_commit, penalise = sw_penalise,
            release = sw_release, store = sw_store }
