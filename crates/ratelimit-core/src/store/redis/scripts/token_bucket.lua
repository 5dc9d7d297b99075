-- Token bucket: the Lua twin of algorithm/token_bucket.rs.
-- State: "missing,last" (tokens missing from a full bucket, time of the last whole-token refill in µs);
-- absent = full. Params: p1 = emission interval T, p2 = capacity (burst).

-- Clamped to what the policy can hold (a penalty leaves at most 2 × capacity missing, and the last refill
-- is never in the future): state written under a larger quota, or read on a server clock that stepped
-- back, reads as the policy's fullest state, never beyond the longest wait it can produce.
local function tb_load(key, p, now)
  local s = load_numbers(key, 2, 'a token bucket state "missing,last" (decimal integers below 2^53)')
  if s[1] > 2 * p[2] then
    s[1] = 2 * p[2]
  end
  if s[2] > now then
    s[2] = now
  end
  return s
end

-- Refilled to now: missing tokens and the time of the last whole refill.
local function tb_refill(p, s, now)
  local missing, last = s[1], s[2]
  if missing == 0 then
    return 0, now
  end
  local elapsed = now - last
  if elapsed < 0 then
    elapsed = 0
  end
  local dripped = idiv(elapsed, p[1])
  if dripped >= missing then
    return 0, now
  end
  return missing - dripped, last + dripped * p[1]
end

local function tb_reset_after(p, missing, last, now)
  if missing == 0 then
    return 0
  end
  local r = last + missing * p[1] - now
  if r < 0 then
    return 0
  end
  return r
end

local function tb_evaluate(p, s, now, cost)
  local missing, last = tb_refill(p, s, now)
  local capacity = p[2]
  local tokens = capacity - missing
  if tokens < 0 then
    tokens = 0
  end
  if cost > capacity then
    return { capacity, tokens, tb_reset_after(p, missing, last, now), NEVER, 0 }
  end
  if cost <= tokens then
    if missing == 0 then
      last = now
    end
    return { capacity, tokens - cost, tb_reset_after(p, missing + cost, last, now), 0, 0 }
  end
  -- Whole tokens still to drip; more than cost - tokens while a penalty left the bucket in debt.
  local short = missing + cost - capacity
  return { capacity, tokens, tb_reset_after(p, missing, last, now), last + short * p[1] - now, 0 }
end

local function tb_commit(p, s, now, cost)
  local missing, last = tb_refill(p, s, now)
  if missing == 0 then
    last = now
  end
  s[1], s[2] = missing + cost, last
end

local function tb_penalise(p, s, now, cost)
  local missing, last = tb_refill(p, s, now)
  if missing == 0 then
    last = now
  end
  local m = missing + cost
  if m > 2 * p[2] then
    m = 2 * p[2]
  end
  s[1], s[2] = m, last
end

local function tb_release(p, s, now, cost)
  local missing, last = tb_refill(p, s, now)
  if cost >= missing then
    s[1], s[2] = 0, 0
  else
    s[1], s[2] = missing - cost, last
  end
end

local function tb_store(key, p, s, now, slack)
  local fresh_at = 0
  if s[1] > 0 then
    fresh_at = s[2] + s[1] * p[1]
  end
  return put_string(key, fmt(s[1]) .. ',' .. fmt(s[2]), fresh_at, now, slack)
end

ALGS[3] = { load = tb_load, evaluate = tb_evaluate, commit = tb_commit, penalise = tb_penalise,
            release = tb_release, store = tb_store }
