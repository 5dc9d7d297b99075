-- ratelimit-core Redis store: shared helpers.
--
-- Every number handled here is an integer below 2^53, so Lua 5.1 doubles hold it exactly; the only
-- operations that could round are division and the formatting of arguments, handled below. Replies are
-- integers only (a Lua float reply is truncated by Redis) and numbers passed to redis.call are formatted
-- with '%d' (tostring uses '%.14g' and drops digits of a microsecond timestamp).


-- floor(a / b) for integers 0 <= a, 0 < b below 2^53: fmod is exact, so is the division of a multiple.
local function idiv(a, b)
  return (a - math.fmod(a, b)) / b
end

-- ceil(a / b), the rounding for waits that must never be reported early.
local function cdiv(a, b)
  local r = math.fmod(a, b)
  if r == 0 then
    return a / b
  end
  return (a - r) / b + 1
end

-- Lua 5.1's '%d' converts the double to a C long (64 bits on every platform Redis ships on): exact for
-- these integers, and integer formatting, where '%.0f' runs glibc's multi-precision float printer (a
-- visible share of the server's time per call).
local function fmt(n)
  return string.format('%d', n)
end

-- Parses "a,b,c" into numbers; nil when the key is absent.
local function unpack_state(raw)
  if not raw then
    return nil
  end
  local out = {}
  for d in string.gmatch(raw, '%d+') do
    out[#out + 1] = tonumber(d)
  end
  return out
end

-- Reads a string state "a,b,…" as numbers; an absent key reads as `n` zeros, the fresh state.
local function load_numbers(key, n)
  local st = unpack_state(redis.call('GET', key))
  if st then
    return st
  end
  st = {}
  for i = 1, n do
    st[i] = 0
  end
  return st
end

-- Writes a string state with a millisecond TTL reaching its fresh time, or deletes it when it is fresh.
-- `slack` (client-time mode) keeps state a little longer than the client clock says, for clock skew.
local function put_string(key, value, fresh_at, now, slack)
  if fresh_at <= now then
    redis.call('DEL', key)
    return 0
  end
  local ttl = cdiv(fresh_at - now + slack, 1000)
  redis.call('SET', key, value, 'PX', fmt(ttl))
  return ttl
end

local NEVER = -1

-- Algorithm code -> its functions; each algorithm file registers itself.
local ALGS = {}
