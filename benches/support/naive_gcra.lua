-- The naive baseline most crates ship: a GCRA as a plain redis::Script (EVALSHA), float division and
-- all. Used by benches/redis.rs (store vs baseline) and benches/tower_wrk.rs (layer vs a naive
-- middleware). KEYS[1]: the key; ARGV: emission interval (µs), tau (µs), cost. Reply {allowed, wait}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, tau, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + cost * interval
if new_tat - tau > now then
  return {0, new_tat - tau - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, 0}
