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

-- The largest integer a double holds exactly: no state this script writes ever exceeds it.
local MAX_EXACT = 9007199254740991

-- State the script did not write (a foreign value, a hand edit, a bit flip) is never read as fresh: the
-- call fails with an error whose code is RLCORRUPT, for this key only (the client does not count it
-- against Redis's health). `raw` is shown truncated and printable only: the reply stays small and one line.
local function corrupt(key, raw, what)
  local shown = string.gsub(string.sub(tostring(raw), 1, 32), '[^%w%p ]', '?')
  error(redis.error_reply('RLCORRUPT ' .. key .. " holds '" .. shown .. "', not " .. what ..
    '; the rate limiter did not write it: DEL the key to start this identity afresh'))
end

-- A non-negative integer below 2^53 in the '%d' form this script writes, else RLCORRUPT.
local function parse_count(key, raw, what)
  if not string.match(raw, '^%d+$') then
    corrupt(key, raw, what)
  end
  local n = tonumber(raw)
  if n > MAX_EXACT then
    corrupt(key, raw, what)
  end
  return n
end

-- What a GCRA or shaper key holds (the lean path in main.lua reads it too).
local TAT = 'a theoretical arrival time (a decimal integer of microseconds below 2^53)'

-- The exact shape of a string state of 1, 2 or 3 fields.
local STATE_PATTERNS = { '^(%d+)$', '^(%d+),(%d+)$', '^(%d+),(%d+),(%d+)$' }

-- Reads a string state "a,b,…" of `n` integers; an absent key reads as `n` zeros, the fresh state. A
-- state of another shape, or a field beyond 2^53, is RLCORRUPT (`what` says what the key should hold). A
-- key of another type raises Redis's own WRONGTYPE from the GET.
local function load_numbers(key, n, what)
  local raw = redis.call('GET', key)
  if not raw then
    local st = {}
    for i = 1, n do
      st[i] = 0
    end
    return st
  end
  local st = { string.match(raw, STATE_PATTERNS[n]) }
  if #st ~= n then
    corrupt(key, raw, what)
  end
  for i = 1, n do
    local v = tonumber(st[i])
    if v > MAX_EXACT then
      corrupt(key, raw, what)
    end
    st[i] = v
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
