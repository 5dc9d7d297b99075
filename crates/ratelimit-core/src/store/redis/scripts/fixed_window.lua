-- Fixed window: the Lua twin of algorithm/fixed_window.rs.
-- State: "start,count" (window start in µs since the epoch, units charged in it); absent = unused.
-- Params: p1 = limit, p2 = period (µs).

-- Any well-formed state answers within one period (a count above the limit reads as a full window).
local function fw_load(key)
  return load_numbers(key, 2, 'a fixed window state "start,count" (decimal integers below 2^53)')
end

local function fw_window(p, s, now)
  local start = now - math.fmod(now, p[2])
  if s[1] == start then
    return start, s[2]
  end
  return start, 0
end

local function fw_evaluate(p, s, now, cost)
  local limit = p[1]
  local start, count = fw_window(p, s, now)
  local ends = start + p[2] - now
  local remaining = limit - count
  if remaining < 0 then
    remaining = 0
  end
  local function reset(c)
    if c == 0 then
      return 0
    end
    return ends
  end
  if cost > limit then
    return { limit, remaining, reset(count), NEVER, 0 }
  end
  if cost <= remaining then
    return { limit, remaining - cost, reset(count + cost), 0, 0 }
  end
  return { limit, remaining, reset(count), ends, 0 }
end

local function fw_commit(p, s, now, cost)
  local start, count = fw_window(p, s, now)
  if count + cost == 0 then
    s[1], s[2] = 0, 0
  else
    s[1], s[2] = start, count + cost
  end
end

local function fw_penalise(p, s, now, cost)
  local start, count = fw_window(p, s, now)
  local c = count + cost
  if c > p[1] then
    c = p[1]
  end
  s[1], s[2] = start, c
end

local function fw_release(p, s, now, cost)
  local start, count = fw_window(p, s, now)
  if cost >= count then
    s[1], s[2] = 0, 0
  else
    s[1], s[2] = start, count - cost
  end
end

local function fw_store(key, p, s, now, slack)
  local fresh_at = 0
  if s[2] > 0 then
    fresh_at = s[1] + p[2]
  end
  return put_string(key, fmt(s[1]) .. ',' .. fmt(s[2]), fresh_at, now, slack)
end

ALGS[5] = { load = fw_load, evaluate = fw_evaluate, commit = fw_commit, penalise = fw_penalise,
            release = fw_release, store = fw_store }
