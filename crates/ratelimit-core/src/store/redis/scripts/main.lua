-- ratelimit-core Redis store: the entry point. One call checks, peeks or refunds every policy of one
-- identity atomically (a script runs alone on the server).
--
-- KEYS[i] (i = 1..n): the state of policy i, all under one {hash tag}. KEYS[n + 1]: the identity's
-- last-seen client time (client-time mode only).
-- ARGV[1]: 'c' check, 'p' peek, 'r' refund. ARGV[2]: '' = server time (TIME, once), else the client's
-- time in µs. ARGV[3]: extra TTL in µs for client-time mode. ARGV[4]: cost. ARGV[5]: n.
-- Then 7 fields per policy: algorithm code, penalise ('1'/'0'), p1, p2, p3, p4, reserved.
-- Reply: { now, then per policy: limit, remaining, reset, retry (-1 = never), delay } -- integers only.

local ALGS = {
  [1] = { load = tat_load, evaluate = gcra_evaluate, commit = tat_commit, penalise = gcra_penalise,
          release = tat_release, store = tat_store },
  [2] = { load = tat_load, evaluate = shaper_evaluate, commit = tat_commit, release = tat_release,
          store = tat_store },
  [3] = { load = tb_load, evaluate = tb_evaluate, commit = tb_commit, penalise = tb_penalise,
          release = tb_release, store = tb_store },
  [4] = { load = lb_load, evaluate = lb_evaluate, commit = lb_commit, penalise = lb_penalise,
          release = lb_release, store = lb_store },
  [5] = { load = fw_load, evaluate = fw_evaluate, commit = fw_commit, penalise = fw_penalise,
          release = fw_release, store = fw_store },
  [6] = { load = sl_load, evaluate = sl_evaluate, commit = sl_commit, release = sl_release,
          store = sl_store },
  [7] = { load = sw_load, evaluate = sw_evaluate, commit = sw_commit, penalise = sw_penalise,
          release = sw_release, store = sw_store },
}

local op = ARGV[1]
local cost = tonumber(ARGV[4])
local n = tonumber(ARGV[5])
local slack = 0
local now
local clock_key
if ARGV[2] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  -- Client time, kept monotonic per identity: never behind the latest time this identity has seen.
  now = tonumber(ARGV[2])
  slack = tonumber(ARGV[3])
  clock_key = KEYS[n + 1]
  local seen = tonumber(redis.call('GET', clock_key))
  if seen and seen > now then
    now = seen
  end
end

local policies = {}
for i = 1, n do
  local b = 5 + (i - 1) * 7
  local alg = ALGS[tonumber(ARGV[b + 1])]
  if not alg then
    return redis.error_reply('ERR ratelimit: unknown algorithm code ' .. tostring(ARGV[b + 1]))
  end
  local p = { tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6]) }
  policies[i] = { alg = alg, key = KEYS[i], penalise = ARGV[b + 2] == '1', p = p, state = alg.load(KEYS[i]) }
end

local max_ttl = 0
local function store(pol)
  local ttl = pol.alg.store(pol.key, pol.p, pol.state, now, slack)
  if ttl > max_ttl then
    max_ttl = ttl
  end
end

local reply = { now }
if op == 'r' then
  for i = 1, n do
    local pol = policies[i]
    pol.alg.release(pol.p, pol.state, now, cost)
    store(pol)
  end
else
  local never, limited = false, false
  for i = 1, n do
    local pol = policies[i]
    local st = pol.alg.evaluate(pol.p, pol.state, now, cost)
    if st[4] == NEVER then
      never = true
    elseif st[4] > 0 then
      limited = true
    end
    for j = 1, 5 do
      reply[#reply + 1] = st[j]
    end
  end
  if op == 'c' then
    if not never and not limited then
      if cost > 0 then
        for i = 1, n do
          local pol = policies[i]
          pol.alg.commit(pol.p, pol.state, now, cost)
          store(pol)
        end
      end
    elseif not never then
      -- Denied: nothing is written unless a policy penalises.
      for i = 1, n do
        local pol = policies[i]
        if pol.penalise and pol.alg.penalise then
          pol.alg.penalise(pol.p, pol.state, now, cost)
          store(pol)
        end
      end
    end
  end
end

if clock_key and max_ttl > 0 then
  local left = redis.call('PTTL', clock_key)
  if left > max_ttl then
    max_ttl = left
  end
  redis.call('SET', clock_key, fmt(now), 'PX', fmt(max_ttl))
end
return reply
