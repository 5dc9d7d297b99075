-- ratelimit-core Redis store: the entry point. One call checks, peeks or refunds every policy of one
-- identity atomically (a script or function runs alone on the server).
--
-- KEYS[i] (i = 1..n): the state of policy i, all under one {hash tag}. KEYS[n + 1]: the identity's
-- last-seen client time (client-time mode only).
-- ARGV[1]: 'c' check, 'p' peek, 'r' refund ('g': the lean GCRA check, see rl_gcra).
-- ARGV[2]: '' = server time (TIME, once), else the client's
-- time in µs. ARGV[3]: extra TTL in µs for client-time mode. ARGV[4]: cost. ARGV[5]: n.
-- Then 7 fields per policy: algorithm code, penalise ('1'/'0'), p1, p2, p3, p4, reserved. Last: the
-- call's token (an integer below 2^53).
-- Reply: { now, then per policy: limit, remaining, reset, retry (-1 = never), delay, then the token } --
-- integers only. The token, echoed last in every reply, is how the client knows a reply answers its own
-- call: on a multiplexed connection that lost a reply, each later reply answers an older request.
--
-- What is sent to Redis is the prelude, the files of the algorithms a policy set uses (each registers
-- itself in ALGS) and this file, followed by `return rl_run(KEYS, ARGV)` (EVALSHA) or by the function's
-- registration (FUNCTION LOAD / FCALL, where nothing but rl_run's body runs per call).

-- Every policy's status for `cost`. When the set denies, nothing is charged, so a policy that would have
-- allowed the cost reports what it really has left (its status for cost 0) -- as PolicySet does.
local function rl_statuses(policies, n, now, cost)
  local out, never, limited = {}, false, false
  for i = 1, n do
    local pol = policies[i]
    local st = pol.alg.evaluate(pol.p, pol.state, now, cost)
    if st[4] == NEVER then
      never = true
    elseif st[4] > 0 then
      limited = true
    end
    out[i] = st
  end
  if never or limited then
    for i = 1, n do
      if out[i][4] == 0 then
        local pol = policies[i]
        out[i] = pol.alg.evaluate(pol.p, pol.state, now, 0)
      end
    end
  end
  return out, never, limited
end

-- The server's time in µs (one TIME).
local function rl_server_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- The common shape, lean: a check of one GCRA policy that does not penalise, on the server's time. The
-- same arithmetic as gcra_evaluate, tat_commit and put_string (slack 0), without the generic set loop,
-- its tables and closures: the server's time per call is what every client shares.
-- Arguments: the policy's key, then cost, T, tau as strings. `cost × T > tau` is gcra_evaluate's
-- `cost > burst` (tau = burst × T; the client takes this path only while tau + T < 2^53, so the products
-- that decide are exact or, for a hostile cost, rounded upwards of tau).
-- Reply: { now, reset, outcome (1 allowed, 0 limited, -1 never) }, to which its callers append the call's
-- token: the client derives limit (burst),
-- remaining (floor((tau - reset) / T)), retry (reset + cost × T - tau when limited) and delay (0) exactly
-- as gcra_evaluate would, so the server neither divides nor sends them.
local function rl_gcra(key, cost_s, t_s, tau_s, now)
  local cost, t_, tau = tonumber(cost_s), tonumber(t_s), tonumber(tau_s)
  now = now or rl_server_now()
  local raw = redis.call('GET', key)
  local ahead = 0
  if raw then
    -- As gcra_load: never read as fresh when corrupt, never further ahead than a penalty can put it.
    ahead = parse_count(key, raw, TAT) - now
    if ahead < 0 then
      ahead = 0
    elseif ahead > 2 * tau then
      ahead = 2 * tau
    end
  end
  local charge = cost * t_
  if charge > tau then
    return { now, ahead, NEVER }
  end
  if cost == 0 then
    return { now, ahead, 1 }
  end
  local new_ahead = ahead + charge
  if new_ahead > tau then
    return { now, ahead, 0 }
  end
  -- new_ahead > 0 here (cost >= 1, T >= 1): the state is never fresh after a charge.
  redis.call('SET', key, fmt(now + new_ahead), 'PX', fmt(cdiv(new_ahead, 1000)))
  return { now, new_ahead, 1 }
end

-- The lean path's own entry point for FCALL (no op argument, no dispatch): ARGV = cost, T, tau, token.
local function rl_run_gcra(KEYS, ARGV)
  local r = rl_gcra(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
  r[4] = tonumber(ARGV[4])
  return r
end

-- Client-time mode: the identity's last-seen time, kept at least as long as its longest-lived state.
local function rl_touch_clock(clock_key, now, ttl)
  local left = redis.call('PTTL', clock_key)
  if left > ttl then
    ttl = left
  end
  redis.call('SET', clock_key, fmt(now), 'PX', fmt(ttl))
end

-- `server_now`: the server's time already read by the caller (a batch reads it once), or nil.
local function rl_run(KEYS, ARGV, server_now)
  local op = ARGV[1]
  if op == 'g' then
    local r = rl_gcra(KEYS[1], ARGV[2], ARGV[3], ARGV[4], server_now)
    r[4] = tonumber(ARGV[5])
    return r
  end
  local cost = tonumber(ARGV[4])
  local n = tonumber(ARGV[5])
  local token = tonumber(ARGV[6 + 7 * n])
  local slack = 0
  local now
  local clock_key
  if ARGV[2] == '' then
    now = server_now or rl_server_now()
  else
    -- Client time, kept monotonic per identity: never behind the latest time this identity has seen.
    now = tonumber(ARGV[2])
    slack = tonumber(ARGV[3])
    clock_key = KEYS[n + 1]
    local raw = redis.call('GET', clock_key)
    local seen = raw and parse_count(clock_key, raw, 'a client time (a decimal integer of microseconds below 2^53)')
    if seen and seen > now then
      now = seen
    end
  end

  local max_ttl = 0
  if n == 1 and op == 'c' and ARGV[7] ~= '1' then
    -- One policy that does not penalise, checked: the common shape of every algorithm, without the set
    -- machinery (no policy tables, no second evaluation: a lone policy's status for the cost is the set's
    -- status, allowed or denied, as PolicySet reports it). A denial writes nothing.
    local alg = ALGS[tonumber(ARGV[6])]
    if not alg then
      return redis.error_reply('ERR ratelimit: unknown algorithm code ' .. tostring(ARGV[6]))
    end
    local p = { tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11]) }
    local state = alg.load(KEYS[1], p, now)
    local st = alg.evaluate(p, state, now, cost)
    if st[4] == 0 and cost > 0 then
      alg.commit(p, state, now, cost)
      max_ttl = alg.store(KEYS[1], p, state, now, slack)
    end
    if clock_key and max_ttl > 0 then
      rl_touch_clock(clock_key, now, max_ttl)
    end
    return { now, st[1], st[2], st[3], st[4], st[5], token }
  end

  local policies = {}
  for i = 1, n do
    local b = 5 + (i - 1) * 7
    local alg = ALGS[tonumber(ARGV[b + 1])]
    if not alg then
      return redis.error_reply('ERR ratelimit: unknown algorithm code ' .. tostring(ARGV[b + 1]))
    end
    local p = { tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6]) }
    policies[i] = { alg = alg, key = KEYS[i], penalise = ARGV[b + 2] == '1', p = p, state = alg.load(KEYS[i], p, now) }
  end

  local reply = { now }
  if op == 'r' then
    for i = 1, n do
      local pol = policies[i]
      pol.alg.release(pol.p, pol.state, now, cost)
      local ttl = pol.alg.store(pol.key, pol.p, pol.state, now, slack)
      if ttl > max_ttl then
        max_ttl = ttl
      end
    end
  else
    local out, never, limited = rl_statuses(policies, n, now, cost)
    if op == 'c' then
      if not never and not limited then
        if cost > 0 then
          for i = 1, n do
            local pol = policies[i]
            pol.alg.commit(pol.p, pol.state, now, cost)
            local ttl = pol.alg.store(pol.key, pol.p, pol.state, now, slack)
            if ttl > max_ttl then
              max_ttl = ttl
            end
          end
        end
      elseif not never then
        -- Denied: nothing is written unless a policy penalises; then report the state the penalty left.
        local penalised = false
        for i = 1, n do
          local pol = policies[i]
          if pol.penalise and pol.alg.penalise then
            pol.alg.penalise(pol.p, pol.state, now, cost)
            local ttl = pol.alg.store(pol.key, pol.p, pol.state, now, slack)
            if ttl > max_ttl then
              max_ttl = ttl
            end
            penalised = true
          end
        end
        if penalised then
          out = rl_statuses(policies, n, now, cost)
        end
      end
    end
    for i = 1, n do
      local st = out[i]
      local k = #reply
      reply[k + 1], reply[k + 2], reply[k + 3], reply[k + 4], reply[k + 5] = st[1], st[2], st[3], st[4], st[5]
    end
  end

  if clock_key and max_ttl > 0 then
    rl_touch_clock(clock_key, now, max_ttl)
  end
  reply[#reply + 1] = token
  return reply
end

-- Several calls in one (the store coalesces the calls that wait while others are in flight): each entry is
-- exactly what rl_run takes for one call, and its reply is rl_run's reply for it, in order. They run one
-- after the other inside this one atomic call, on one reading of the server's time (read only when an
-- entry runs on server time), as if each had been its own call at the same instant.
-- ARGV[o + 1]: m, the number of entries; ARGV[o + 2e], ARGV[o + 2e + 1]: entry e's number of keys and
-- of arguments; then every entry's arguments, in order (o = 0 through FCALL, 1 through EVALSHA, whose
-- ARGV[1] is 'B'). KEYS: every entry's keys, in order.
-- Reply: { reply of entry 1, ..., reply of entry m } (each with its own entry's token), where an entry that failed (RLCORRUPT state, a
-- WRONGTYPE key, any error its own call would have answered) is its error's text as a string ("CODE
-- detail", e.g. "RLCORRUPT <key> holds ..."): one identity's bad key fails its own call only, never the
-- batch. A string, not an error element: clients turn an error nested in an array into an error for the
-- whole reply. Replies that succeed are arrays, so the two never mix up.

-- The error an entry raised or returned, as "CODE detail" (Redis 7 hands pcall a string, older servers an
-- error table; a Lua runtime error has no code, and is ERR as Redis would report it).
local function rl_entry_error(e)
  if type(e) == 'table' then
    e = e.err
  end
  e = tostring(e)
  if not string.match(e, '^[A-Z]+ ') then
    e = 'ERR ' .. e
  end
  return e
end

local function rl_batch(KEYS, ARGV, o)
  local m = tonumber(ARGV[o + 1])
  local ki, ai = 1, o + 2 + 2 * m
  local now
  local out = {}
  for e = 1, m do
    local nk, na = tonumber(ARGV[o + 2 * e]), tonumber(ARGV[o + 2 * e + 1])
    if not now and (ARGV[ai] == 'g' or ARGV[ai + 1] == '') then
      now = rl_server_now()
    end
    local ok, r
    local lean = ARGV[ai] == 'g'
    if lean then
      -- The lean GCRA entry, read in place: no per-entry tables.
      ok, r = pcall(rl_gcra, KEYS[ki], ARGV[ai + 1], ARGV[ai + 2], ARGV[ai + 3], now)
    else
      local keys, args = {}, {}
      for j = 1, nk do
        keys[j] = KEYS[ki + j - 1]
      end
      for j = 1, na do
        args[j] = ARGV[ai + j - 1]
      end
      ok, r = pcall(rl_run, keys, args, now)
    end
    if not ok or r.err then
      r = rl_entry_error(r)
    elseif lean then
      r[4] = tonumber(ARGV[ai + 4])
    end
    out[e] = r
    ki, ai = ki + nk, ai + na
  end
  return out
end

-- The batch's own entry point for FCALL.
local function rl_run_batch(KEYS, ARGV)
  return rl_batch(KEYS, ARGV, 0)
end

-- The EVALSHA entry point: one call, or a batch ('B').
local function rl_eval(KEYS, ARGV)
  if ARGV[1] == 'B' then
    return rl_batch(KEYS, ARGV, 1)
  end
  return rl_run(KEYS, ARGV)
end
