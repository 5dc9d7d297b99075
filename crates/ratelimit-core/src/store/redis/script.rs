//! The Lua script, its SHA-1, and how a PolicySet is encoded for it.
//!
//! Each algorithm's Lua twin lives in `scripts/<algorithm>.lua` (its Rust reference is
//! `src/algorithm/<algorithm>.rs`); `scripts/main.lua` checks, peeks or refunds all the policies of one
//! identity in one atomic call. The script sent for a policy set holds only the algorithms it uses.

use std::sync::OnceLock;

use redis::Value;

use crate::clock::{duration_to_micros, Micros};
use crate::decision::{Decision, Status, MAX_POLICIES};
use crate::policy::{AnyAlgorithm, Policy, PolicySet};
use crate::quota::MAX_EXACT;
use crate::store::StoreError;

use super::reply;

const PRELUDE: &str = include_str!("scripts/prelude.lua");
const MAIN: &str = include_str!("scripts/main.lua");

/// The algorithm files, in the order their bits appear in a script mask.
const PARTS: [&str; 6] = [
    include_str!("scripts/gcra.lua"), // GCRA (code 1) and the shaper (code 2)
    include_str!("scripts/token_bucket.lua"),
    include_str!("scripts/leaky_bucket.lua"),
    include_str!("scripts/fixed_window.lua"),
    include_str!("scripts/sliding_log.lua"),
    include_str!("scripts/sliding_window.lua"),
];

/// Every algorithm.
pub(crate) const ALL: u8 = (1 << PARTS.len()) - 1;

/// One variant of the script: the prelude, the algorithms of a mask, the entry point; as an `EVAL`
/// script and as a `FUNCTION` library.
#[derive(Debug)]
pub(crate) struct Script {
    /// The `EVAL` script.
    pub(crate) source: String,
    /// Its SHA-1, for `EVALSHA`.
    pub(crate) sha: String,
    /// The same code as a library (`#!lua name=…`), registering [`Script::function`].
    pub(crate) library: String,
    /// The function's name, for `FCALL`: versioned by the code's hash, so two versions of this crate can
    /// share a server.
    pub(crate) function: String,
    /// The lean GCRA path's own function (`rl_run_gcra`), for `FCALL` without the op argument.
    pub(crate) lean_function: String,
    /// The batch entry point (`rl_run_batch`): several calls coalesced into one.
    pub(crate) batch_function: String,
}

/// The script holding the algorithms in `mask` (a script that builds only the closures it can run: a
/// Lua call pays for every function its body defines, and the server's time is the shared resource).
pub(crate) fn script(mask: u8) -> &'static Script {
    static SCRIPTS: [OnceLock<Script>; 1 << PARTS.len()] =
        [const { OnceLock::new() }; 1 << PARTS.len()];
    let mask = mask & ALL;
    SCRIPTS[usize::from(mask)].get_or_init(|| {
        let mut body = String::from(PRELUDE);
        for (i, part) in PARTS.iter().enumerate() {
            if mask & (1 << i) != 0 {
                body.push_str(part);
            }
        }
        body.push_str(MAIN);
        let source = format!("{body}return rl_eval(KEYS, ARGV)\n");
        let sha = redis::Script::new(&source).get_hash().to_owned();
        let function = format!("ratelimit_{}", &sha[..16]);
        let lean_function = format!("{function}_gcra");
        let batch_function = format!("{function}_batch");
        let library = format!(
            "#!lua name={function}\n{body}redis.register_function('{function}', rl_run)\nredis.register_function('{lean_function}', rl_run_gcra)\nredis.register_function('{batch_function}', rl_run_batch)\n"
        );
        Script {
            source,
            sha,
            library,
            function,
            lean_function,
            batch_function,
        }
    })
}

/// The mask of the algorithm files a policy set needs.
pub(crate) fn mask(set: &PolicySet) -> u8 {
    set.policies()
        .iter()
        .fold(0, |m, p| m | (1 << part(p.algorithm())))
}

fn part(algorithm: &AnyAlgorithm) -> u8 {
    match algorithm {
        AnyAlgorithm::Gcra(_) | AnyAlgorithm::Shaper(_) => 0,
        AnyAlgorithm::TokenBucket(_) => 1,
        AnyAlgorithm::LeakyBucket(_) => 2,
        AnyAlgorithm::FixedWindow(_) => 3,
        AnyAlgorithm::SlidingLog(_) => 4,
        AnyAlgorithm::SlidingWindow(_) => 5,
    }
}

/// What identifies a policy set's state in Redis and its decisions: every policy's name, algorithm,
/// parameters and penalty flag, hashed. Two sets built apart with the same policies get the same id (so
/// the local caches keyed by it — the deny cache, the hybrid leases — hit for sets rebuilt per request);
/// sets that differ in any of these get different ids.
pub(crate) fn set_id(set: &PolicySet) -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = foldhash::quality::FixedState::with_seed(0x7261_7465_6c69_6d74).build_hasher();
    for p in set.policies() {
        p.name().hash(&mut h);
        let (code, ps) = params(p.algorithm());
        (code, ps, p.penalises()).hash(&mut h);
    }
    h.finish()
}

/// The key suffix of a policy: its name, then its algorithm, so that changing a policy's algorithm under
/// the same name starts fresh state instead of misreading the old one (a sorted set read as a string).
pub(crate) fn push_policy_key(base: &mut String, policy: &crate::policy::Policy) {
    base.push_str(policy.name());
    base.push(':');
    base.push_str(policy.algorithm().kind().name());
}

/// What the script is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Check,
    Peek,
    Refund,
}

impl Op {
    fn code(self) -> &'static str {
        match self {
            Op::Check => "c",
            Op::Peek => "p",
            Op::Refund => "r",
        }
    }
}

/// The algorithm code and parameters `scripts/main.lua` expects for one policy.
pub(crate) fn params(algorithm: &AnyAlgorithm) -> (u8, [u64; 4]) {
    let q = algorithm.quota();
    let (limit, period, burst, interval) = (
        q.limit(),
        q.period_micros(),
        q.burst(),
        q.emission_interval_micros(),
    );
    match algorithm {
        AnyAlgorithm::Gcra(_) => (1, [interval, burst * interval, burst, 0]),
        AnyAlgorithm::Shaper(s) => (
            2,
            [
                interval,
                burst * interval,
                burst,
                duration_to_micros(s.max_delay()),
            ],
        ),
        AnyAlgorithm::TokenBucket(_) => (3, [interval, burst, 0, 0]),
        AnyAlgorithm::LeakyBucket(_) => (4, [limit, period, burst, burst * period]),
        AnyAlgorithm::FixedWindow(_) => (5, [limit, period, 0, 0]),
        AnyAlgorithm::SlidingLog(_) => (6, [limit, period, 0, 0]),
        AnyAlgorithm::SlidingWindow(_) => (7, [limit, period, 0, 0]),
    }
}

/// The parameters `[T, tau, burst]` of the lean `'g'` call when it applies: a check of a set of one GCRA
/// policy that does not penalise, on the server's time (the shape most deployments run, given its own
/// short path in `scripts/main.lua`).
pub(crate) fn lean_gcra(op: Op, set: &PolicySet, server_time: bool) -> Option<[u64; 3]> {
    if op != Op::Check || !server_time {
        return None;
    }
    let [p] = set.policies() else {
        return None;
    };
    match p.algorithm() {
        AnyAlgorithm::Gcra(_) if !p.penalises() => {
            let (_, ps) = params(p.algorithm());
            // Lua compares cost × T with tau in doubles: exact while tau + T < 2^53.
            (ps[1].saturating_add(ps[0]) < 1 << 53).then_some([ps[0], ps[1], ps[2]])
        }
        _ => None,
    }
}

/// Builds the `FCALL` (with `functions`) or `EVALSHA` command for `op` over every policy of `set` for the identity whose key prefix
/// (`prefix:{hash}:`) is `base`, carrying `token` for the script to echo ([`untag`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn command(
    functions: bool,
    op: Op,
    set: &PolicySet,
    base: &mut String,
    client_now: Option<(Micros, Micros)>,
    cost: u64,
    token: Token,
) -> redis::Cmd {
    let script = script(mask(set));
    let lean = lean_gcra(op, set, client_now.is_none()).is_some();
    let (keys, args) = shape(op, set, client_now);
    // Sized up front: a grown Cmd reallocates its argument list and its buffer several times per call.
    let mut cmd =
        redis::Cmd::with_capacity(3 + keys + args, 64 + keys * (base.len() + 32) + args * 8);
    match (functions, lean) {
        (true, true) => cmd.arg("FCALL").arg(&script.lean_function),
        (true, false) => cmd.arg("FCALL").arg(&script.function),
        (false, _) => cmd.arg("EVALSHA").arg(&script.sha),
    };
    cmd.arg(keys);
    push_keys(&mut cmd, set, base, client_now);
    // Through FCALL the lean function takes no op argument; through EVALSHA it is dispatched on 'g'.
    push_args(
        &mut cmd,
        op,
        set,
        client_now,
        cost,
        token,
        !(functions && lean),
    );
    cmd
}

/// The number of keys and of arguments one call for `op` over `set` sends (the lean GCRA call's
/// arguments counted with its `'g'`; the token counted).
pub(crate) fn shape(
    op: Op,
    set: &PolicySet,
    client_now: Option<(Micros, Micros)>,
) -> (usize, usize) {
    if lean_gcra(op, set, client_now.is_none()).is_some() {
        (1, 5)
    } else {
        (
            set.len() + usize::from(client_now.is_some()),
            6 + 7 * set.len(),
        )
    }
}

/// Appends the keys of one call: every policy's key, then the identity's clock key in client-time mode.
/// `base` is the identity's key prefix (`prefix:{hash}:`), restored on return.
pub(crate) fn push_keys(
    cmd: &mut redis::Cmd,
    set: &PolicySet,
    base: &mut String,
    client_now: Option<(Micros, Micros)>,
) {
    let base_len = base.len();
    for p in set.policies() {
        base.truncate(base_len);
        push_policy_key(base, p);
        cmd.arg(base.as_bytes());
    }
    if client_now.is_some() {
        // '@' cannot appear in a policy name, so this never collides with a policy's key.
        base.truncate(base_len);
        base.push_str("@now");
        cmd.arg(base.as_bytes());
    }
    base.truncate(base_len);
}

/// Appends the arguments of one call (see `scripts/main.lua`), the call's token last. `tag_lean`:
/// whether a lean GCRA call carries its `'g'` (it does everywhere but in its own `FCALL` function).
pub(crate) fn push_args(
    cmd: &mut redis::Cmd,
    op: Op,
    set: &PolicySet,
    client_now: Option<(Micros, Micros)>,
    cost: u64,
    token: Token,
    tag_lean: bool,
) {
    if let Some([t, tau, _]) = lean_gcra(op, set, client_now.is_none()) {
        if tag_lean {
            cmd.arg("g");
        }
        cmd.arg(cost).arg(t).arg(tau).arg(token.0);
        return;
    }
    cmd.arg(op.code());
    match client_now {
        Some((now, slack)) => cmd.arg(now).arg(slack),
        None => cmd.arg("").arg(0u64),
    };
    cmd.arg(cost).arg(set.len());
    for p in set.policies() {
        let (code, ps) = params(p.algorithm());
        cmd.arg(code)
            .arg(if p.penalises() { "1" } else { "0" })
            .arg(ps[0])
            .arg(ps[1])
            .arg(ps[2])
            .arg(ps[3])
            .arg(0u8);
    }
    cmd.arg(token.0);
}

/// A call's token: echoed by the script as the last value of the call's reply, so that a reply is only
/// ever taken for the call it answers. Below 2^53, so Lua's doubles carry it exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token(pub(crate) u64);

impl Token {
    /// The `n`-th token of a store (distinct from every other token of that store's connection in flight).
    pub(crate) fn nth(n: u64) -> Self {
        Token(n & MAX_EXACT)
    }
}

/// A reply that does not end with its call's token.
#[derive(Debug)]
pub(crate) struct ForeignReply(pub(crate) StoreError);

/// Takes `token` off the end of a script call's reply: the reply without it, or [`ForeignReply`] when the
/// reply does not carry it — it answers another request, so the connection's replies are out of step with
/// its requests. No allocation (the token is popped in place).
pub(crate) fn untag(reply: Value, token: Token) -> Result<Value, ForeignReply> {
    match reply {
        Value::Array(mut items) => match items.last() {
            Some(Value::Int(t)) if u64::try_from(*t) == Ok(token.0) => {
                items.pop();
                Ok(Value::Array(items))
            }
            last => Err(foreign(
                last.map_or_else(|| "an empty array".to_owned(), reply::describe),
                token,
            )),
        },
        other => Err(foreign(reply::describe(&other), token)),
    }
}

/// [`untag`] for one entry of a batch reply: an entry that failed is its error's text (see
/// [`batch_item`]) and carries no token; any other entry must carry its call's.
pub(crate) fn untag_entry(entry: Value, token: Token) -> Result<Value, ForeignReply> {
    match entry {
        e @ (Value::BulkString(_) | Value::SimpleString(_)) => Ok(e),
        other => untag(other, token),
    }
}

fn foreign(last: String, token: Token) -> ForeignReply {
    ForeignReply(StoreError::Protocol(format!(
        "a reply ending with {last} is not this call's (its token is {}): it answers another request, so the connection's replies are out of step with its requests; the store replaces the connection",
        token.0
    )))
}

fn int(v: &Value) -> Result<i64, StoreError> {
    match v {
        Value::Int(i) => Ok(*i),
        other => Err(StoreError::Protocol(format!(
            "expected an integer in the script reply, got {}",
            reply::describe(other)
        ))),
    }
}

/// An integer the script can answer: in `0 ..= 2^53 − 1` (it never handles a larger one).
fn exact(v: &Value, what: &str) -> Result<u64, StoreError> {
    let i = int(v)?;
    u64::try_from(i)
        .ok()
        .filter(|u| *u <= MAX_EXACT)
        .ok_or_else(|| {
            StoreError::Protocol(format!(
                "{what} {i}, outside 0 ..= 2^53 − 1 where the script keeps every value,"
            ))
        })
}

/// Parses the lean `'g'` call's reply `{now, reset, outcome}` for `policy`, a GCRA of `[T, tau, burst]`,
/// and `cost`: the rest of the status is what `gcra_evaluate` (and the Rust reference) derives from
/// `reset`, and the status is checked against what the policy can produce ([`reply::check_status`]).
pub(crate) fn lean_decision(
    reply: &Value,
    policy: &Policy,
    [t, tau, burst]: [u64; 3],
    cost: u64,
) -> Result<(Micros, Decision), StoreError> {
    let items = match reply {
        Value::Array(items) if items.len() == 3 => items,
        other => {
            return Err(StoreError::Protocol(format!(
                "expected 3 values from the script's GCRA path, got {} (is another version of the script loaded under the same name?)",
                reply::describe(other)
            )))
        }
    };
    let now = reply::check_now(exact(&items[0], "time")?, true)?;
    // Any non-negative reset is held to the policy's longest wait by `check_status` below.
    let reset = match int(&items[1])? {
        r @ 0.. => r as u64,
        r => return Err(reply::out_of_range(policy, format_args!("reset {r} µs"))),
    };
    let remaining = match tau.checked_sub(reset) {
        Some(left) if t > 0 => left / t,
        _ => 0,
    };
    let retry = match int(&items[2])? {
        // An admitted cost books at most tau ahead (a cost of 0 reports the state as it is).
        1 if cost > 0 && reset > tau => {
            return Err(reply::out_of_range(
                policy,
                format_args!("an admission leaving reset {reset} µs, beyond its burst's {tau} µs"),
            ))
        }
        1 => 0,
        -1 => Status::NEVER,
        0 => cost
            .checked_mul(t)
            .and_then(|c| c.checked_add(reset))
            .and_then(|a| a.checked_sub(tau))
            .filter(|r| *r > 0)
            .ok_or_else(|| {
                reply::out_of_range(
                    policy,
                    format_args!(
                        "a denial with reset {reset} µs, which leaves room for cost {cost}"
                    ),
                )
            })?,
        o => {
            return Err(reply::out_of_range(
                policy,
                format_args!("the outcome code {o} (the script answers 1, 0 or −1)"),
            ))
        }
    };
    let status = Status {
        limit: burst,
        remaining,
        reset,
        retry,
        delay: 0,
    };
    reply::check_status(policy, &status, cost)?;
    Ok((now, Decision::combine(&[status])))
}

/// Parses the reply to [`command`]'s call for `op` over `set`, and checks every value against what
/// `set`'s policies can produce for `cost` (see [`reply`]): a reply they cannot produce is a
/// [`StoreError::Protocol`], never a decision.
pub(crate) fn parse(
    reply: &Value,
    op: Op,
    set: &PolicySet,
    server_time: bool,
    cost: u64,
) -> Result<(Micros, Decision), StoreError> {
    if let Some(params) = lean_gcra(op, set, server_time) {
        return lean_decision(reply, &set.policies()[0], params, cost);
    }
    let (now, decision) = decode(reply, set.len(), Some(set.policies()))?;
    reply::check_now(now, server_time)?;
    for (policy, status) in set.policies().iter().zip(decision.statuses()) {
        reply::check_status(policy, status, cost)?;
    }
    Ok((now, decision))
}

/// Parses a reply `{now, (limit, remaining, reset, retry, delay) × n}` into the time and a decision,
/// checking what holds for any policy: the shape, every value an integer the script can answer (below
/// 2^53; retry −1 for never), remaining within the limit, a delay only on an admission. What the policies
/// themselves can produce is [`parse`]'s to check.
#[cfg(test)]
pub(crate) fn decision(reply: &Value, n: usize) -> Result<(Micros, Decision), StoreError> {
    decode(reply, n, None)
}

/// [`decision`], naming the policy a bad value belongs to when `policies` are known.
fn decode(
    reply: &Value,
    n: usize,
    policies: Option<&[Policy]>,
) -> Result<(Micros, Decision), StoreError> {
    let Value::Array(items) = reply else {
        return Err(StoreError::Protocol(format!(
            "expected an array from the script, got {}",
            reply::describe(reply)
        )));
    };
    if items.len() != 1 + 5 * n || n > MAX_POLICIES {
        return Err(StoreError::Protocol(format!(
            "expected {} values from the script, got {} (is another version of the script loaded under the same name?)",
            1 + 5 * n,
            items.len()
        )));
    }
    let now = exact(&items[0], "time")?;
    let mut statuses = [Status::default(); MAX_POLICIES];
    for (i, s) in statuses.iter_mut().take(n).enumerate() {
        let f = &items[1 + 5 * i..6 + 5 * i];
        let named = |e: StoreError| match (e, policies.and_then(|p| p.get(i))) {
            (StoreError::Protocol(m), Some(p)) => reply::out_of_range(p, m),
            (e, _) => e,
        };
        let retry = match int(&f[3])? {
            -1 => Status::NEVER,
            _ => exact(&f[3], "retry").map_err(named)?,
        };
        *s = Status {
            limit: exact(&f[0], "limit").map_err(named)?,
            remaining: exact(&f[1], "remaining").map_err(named)?,
            reset: exact(&f[2], "reset").map_err(named)?,
            retry,
            delay: exact(&f[4], "delay").map_err(named)?,
        };
        if s.remaining > s.limit || (s.delay > 0 && s.retry != 0) {
            return Err(named(StoreError::Protocol(format!(
                "remaining {} of limit {} and delay {} with retry {} (no policy answers that)",
                s.remaining, s.limit, s.delay, s.retry
            ))));
        }
    }
    Ok((now, Decision::combine(&statuses[..n])))
}

/// The longest wait (µs) any policy of `set` can produce: the most a denial of the set can last, which
/// bounds how long the deny cache may answer for it ([`DenyCache::insert`]).
///
/// [`DenyCache::insert`]: super::deny_cache::DenyCache::insert
pub(crate) fn max_wait(set: &PolicySet) -> Micros {
    reply::max_wait(set.policies())
}

/// One item of a batch reply (`rl_batch` in `scripts/main.lua`) as its call alone would have had it: a
/// string item is the error that call raised, as `"CODE detail"` (`RLCORRUPT …`, `WRONGTYPE …`), and
/// comes back as the same [`redis::RedisError`] a direct call gets from the server, code and all; any
/// other item is the call's reply, for [`parse`].
pub(crate) fn batch_item(item: Value) -> Result<Value, redis::RedisError> {
    /// An error line's bytes kept: enough for a key and its explanation, bounded whatever the script sent.
    const ERROR_BYTES: usize = 1024;
    let text = match item {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => s.into_bytes(),
        other => return Ok(other),
    };
    let mut line = Vec::with_capacity(ERROR_BYTES.min(text.len()) + 3);
    line.push(b'-');
    line.extend(
        text.iter()
            .take(ERROR_BYTES)
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    line.extend_from_slice(b"\r\n");
    // Through redis-rs's own parser: the error is classified exactly as the server's reply would be.
    redis::parse_redis_value(&line)?.extract_error()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::policy::{Policy, PolicyStates};
    use crate::{AlgorithmKind, Outcome, Quota, Rule};

    /// Realistic Unix-epoch microseconds.
    const EPOCH: u64 = 1_795_000_000_000_000;

    fn one(policy: Policy) -> PolicySet {
        PolicySet::new([policy]).unwrap()
    }

    fn ints(values: &[i64]) -> Value {
        Value::Array(values.iter().map(|v| Value::Int(*v)).collect())
    }

    /// The incident: one reply `{now, i64::MAX, 0}` on the lean GCRA path for a global cap became a
    /// 429 with `Retry-After: 9223372036854` for every client, and the deny cache kept it.
    #[test]
    fn the_incident_reply_is_a_protocol_error_not_a_denial() {
        let set = one(Policy::gcra("global", Quota::per_second(100).build().unwrap()).unwrap());
        assert!(lean_gcra(Op::Check, &set, true).is_some());
        let reply = ints(&[EPOCH as i64, i64::MAX, 0]);
        match parse(&reply, Op::Check, &set, true, 1) {
            Err(StoreError::Protocol(m)) => {
                assert!(
                    m.contains("reset 9223372036854775807") && m.contains("`global`"),
                    "{m}"
                )
            }
            other => panic!("believed {other:?}"),
        }
        // The same values on the generic path (a penalising policy).
        let set = one(
            Policy::gcra("global", Quota::per_second(100).build().unwrap())
                .unwrap()
                .penalise(true),
        );
        let reply = ints(&[EPOCH as i64, 100, 0, i64::MAX, i64::MAX, 0]);
        assert!(matches!(
            parse(&reply, Op::Check, &set, true, 1),
            Err(StoreError::Protocol(_))
        ));
    }

    #[test]
    fn each_field_is_held_to_what_the_policy_can_produce() {
        // 10/s, burst 20: T = 100 ms, tau = 2 s, longest wait 4 s.
        let set = one(
            Policy::gcra("g", Quota::per_second(10).burst(20).build().unwrap())
                .unwrap()
                .penalise(true),
        );
        let now = EPOCH as i64;
        let ok = |r: &[i64], cost| parse(&ints(r), Op::Check, &set, true, cost);
        assert!(ok(&[now, 20, 0, 0, 0, 0], 1).is_ok());
        assert!(ok(&[now, 20, 0, 4_000_000, 4_000_000, 0], 1).is_ok());
        for (reply, cost, what) in [
            (vec![now, 21, 0, 0, 0, 0], 1, "limit 21"),
            (vec![now, 20, 21, 0, 0, 0], 1, "remaining"),
            (vec![now, 20, 0, 4_000_001, 0, 0], 1, "reset 4000001"),
            (vec![now, 20, 0, 0, 4_000_001, 0], 1, "retry 4000001"),
            (vec![now, 20, 0, 0, -1, 0], 20, "never for cost 20"),
            (vec![now, 20, 0, 0, 0, 0], 21, "no never for cost 21"),
            (vec![now, 20, 0, 0, 5, 0], 0, "cost 0"),
            (vec![now, 20, 0, 0, 0, 1], 1, "delay"),
            (vec![0, 20, 0, 0, 0, 0], 1, "time 0"),
            (vec![1 << 53, 20, 0, 0, 0, 0], 1, "time"),
            (vec![now, 20, 0, -5, 0, 0], 1, "reset -5"),
            (vec![now, 20, 0, 0, -2, 0], 1, "retry -2"),
            (vec![now, 20, 0, 0], 1, "expected 6 values"),
        ] {
            match ok(&reply, cost) {
                Err(StoreError::Protocol(m)) => assert!(m.contains(what), "{what}: {m}"),
                other => panic!("{reply:?} for cost {cost} believed: {other:?}"),
            }
        }
        // Client time may start at 0 (a manual clock); the server's never does.
        assert!(parse(&ints(&[0, 20, 0, 0, 0, 0]), Op::Check, &set, false, 1).is_ok());
    }

    #[test]
    fn a_lean_reply_is_checked_too() {
        let set = one(Policy::gcra("g", Quota::per_second(10).burst(20).build().unwrap()).unwrap());
        let now = EPOCH as i64;
        let p = |r: &[i64], cost| parse(&ints(r), Op::Check, &set, true, cost);
        assert!(p(&[now, 100_000, 1], 1).is_ok());
        assert!(p(&[now, 2_000_000, 0], 1).is_ok());
        assert!(p(&[now, 4_000_000, 0], 20).is_ok());
        assert!(p(&[now, 0, -1], 21).is_ok());
        for (reply, cost, what) in [
            (vec![now, 4_000_001, 0], 1, "reset 4000001"),
            (vec![now, 2_000_001, 1], 1, "admission"),
            (vec![now, 0, 2], 1, "outcome code 2"),
            (vec![now, 0, -1], 20, "never for cost 20"),
            (vec![now, 100, 0], 1, "room for cost 1"),
            (vec![-now, 0, 1], 1, "time"),
        ] {
            match p(&reply, cost) {
                Err(StoreError::Protocol(m)) => assert!(m.contains(what), "{what}: {m}"),
                other => panic!("{reply:?} for cost {cost} believed: {other:?}"),
            }
        }
    }

    #[test]
    fn a_failed_batch_entry_is_the_error_its_own_call_gets() {
        let e = batch_item(Value::BulkString(
            b"RLCORRUPT rl:{ab}:p:gcra holds 'abc', not a time\r\nforged".to_vec(),
        ))
        .unwrap_err();
        assert_eq!(e.code(), Some("RLCORRUPT"));
        assert!(e.to_string().contains("holds 'abc'"), "{e}");
        let e = batch_item(Value::BulkString(
            b"WRONGTYPE Operation against a key".to_vec(),
        ))
        .unwrap_err();
        assert_eq!(e.code(), Some("WRONGTYPE"));
        let e = batch_item(Value::BulkString(vec![b'x'; 1 << 20])).unwrap_err();
        assert!(e.to_string().len() < 2048);
        let reply = ints(&[EPOCH as i64, 3, 1]);
        assert_eq!(batch_item(reply.clone()).unwrap(), reply);
    }

    /// A policy of any algorithm, with any penalty and any quota the tests' other strategies use.
    fn policy() -> impl Strategy<Value = Policy> {
        (
            0u8..7,
            1u64..=50,
            prop_oneof![Just(1_000_000u64), Just(333_333), 1_000u64..100_000_000],
            proptest::option::of(1u64..=60),
            0u64..5_000_000,
            any::<bool>(),
        )
            .prop_map(|(algo, limit, period, burst, max_delay, penalise)| {
                let kind = match algo {
                    0 => AlgorithmKind::Gcra,
                    1 => AlgorithmKind::TokenBucket,
                    2 => AlgorithmKind::LeakyBucket,
                    3 => AlgorithmKind::Shaper {
                        max_delay: Duration::from_micros(max_delay),
                    },
                    4 => AlgorithmKind::FixedWindow,
                    5 => AlgorithmKind::SlidingLog,
                    _ => AlgorithmKind::SlidingWindow,
                };
                let mut q = Quota::new(limit, Duration::from_micros(period.max(limit)));
                if algo <= 3 {
                    if let Some(b) = burst {
                        q = q.burst(b);
                    }
                }
                Policy::new("p", kind, q.build().unwrap())
                    .unwrap()
                    .penalise(penalise)
            })
    }

    fn policy_set() -> impl Strategy<Value = PolicySet> {
        proptest::collection::vec(policy(), 1..=3).prop_map(|ps| {
            PolicySet::new(ps.into_iter().enumerate().map(|(i, p)| {
                Policy::new(&format!("p{i}"), p.algorithm().kind(), *p.quota())
                    .unwrap()
                    .penalise(p.penalises())
            }))
            .unwrap()
        })
    }

    /// Any value, of any shape: what a foreign server, a proxy or a corrupted stream could send.
    fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::Int),
            (-2i64..5_000_000).prop_map(Value::Int),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::BulkString),
            Just(Value::Nil),
            Just(Value::Okay),
            any::<f64>().prop_map(Value::Double),
            any::<bool>().prop_map(Value::Boolean),
            "[A-Z]{2,9} [a-z ]{0,20}".prop_map(Value::SimpleString),
        ];
        leaf.prop_recursive(3, 64, 12, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..12).prop_map(Value::Array),
                proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Value::Map),
            ]
        })
    }

    /// An integer the script could answer in `lo ..= hi` most of the time, else one just out of range,
    /// negative, huge, or not an integer at all.
    fn near(lo: u64, hi: u64) -> BoxedStrategy<Value> {
        let (lo, hi) = (lo as i64, hi as i64);
        prop_oneof![
            40 => (lo..=hi).prop_map(Value::Int),
            2 => (hi..=hi.saturating_add(2)).prop_map(Value::Int),
            1 => (-3i64..0).prop_map(Value::Int),
            1 => any::<i64>().prop_map(Value::Int),
            1 => Just(Value::Int(i64::MAX)),
            1 => Just(Value::Int(1 << 53)),
            1 => (0.0f64..1e7).prop_map(Value::Double),
            1 => Just(Value::BulkString(b"12".to_vec())),
        ]
        .boxed()
    }

    /// A reply shaped like the script's for `op` over `set` and `cost`, field by field mostly within the
    /// policies' bounds and sometimes just beyond them.
    fn shaped(set: &PolicySet, op: Op, server_time: bool, cost: u64) -> BoxedStrategy<Value> {
        let now = prop_oneof![10 => Just(Value::Int(EPOCH as i64)), 1 => near(0, MAX_EXACT)];
        if let Some([_, tau, burst]) = lean_gcra(op, set, server_time) {
            let outcome = if cost > burst { -1 } else { 0 };
            return (
                now,
                near(0, 2 * tau),
                prop_oneof![Just(1), Just(outcome), -2i64..=2],
            )
                .prop_map(|(n, r, o)| Value::Array(vec![n, r, Value::Int(o)]))
                .boxed();
        }
        let mut fields = vec![now.boxed()];
        for p in set.policies() {
            let b = reply::Bounds::of(p.algorithm());
            let never = cost > b.max_cost;
            let retry = match (never, cost) {
                (true, _) => prop_oneof![20 => Just(Value::Int(-1)), 1 => near(0, b.max_wait)].boxed(),
                (false, 0) => prop_oneof![20 => Just(Value::Int(0)), 1 => near(0, b.max_wait)].boxed(),
                (false, _) => prop_oneof![10 => Just(Value::Int(0)), 10 => near(1, b.max_wait), 1 => Just(Value::Int(-1))].boxed(),
            };
            fields.push(prop_oneof![20 => Just(Value::Int(b.capacity as i64)), 1 => near(0, b.capacity + 1)].boxed());
            fields.push(near(0, b.capacity));
            fields.push(near(0, b.max_wait));
            fields.push(retry);
            fields.push(prop_oneof![20 => Just(Value::Int(0)), 1 => near(0, b.max_delay)].boxed());
        }
        fields.prop_map(Value::Array).boxed()
    }

    fn cost_for(set: &PolicySet) -> impl Strategy<Value = u64> {
        let most = set
            .policies()
            .iter()
            .map(|p| p.quota().burst())
            .max()
            .unwrap_or(1);
        prop_oneof![8 => 0..=most + 2, 1 => any::<u64>()]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![Just(Op::Check), Just(Op::Peek), Just(Op::Refund)]
    }

    /// The longest wait of a policy, derived here from its quota independently of `reply::Bounds`.
    fn longest_wait(p: &Policy) -> u64 {
        let q = p.quota();
        let tau = q.burst() * q.emission_interval_micros();
        match p.algorithm() {
            AnyAlgorithm::Gcra(_) | AnyAlgorithm::TokenBucket(_) => 2 * tau,
            AnyAlgorithm::Shaper(s) => tau + s.max_delay().as_micros() as u64,
            AnyAlgorithm::LeakyBucket(_) => (2 * q.burst() * q.period_micros()).div_ceil(q.limit()),
            AnyAlgorithm::FixedWindow(_) | AnyAlgorithm::SlidingLog(_) => q.period_micros(),
            AnyAlgorithm::SlidingWindow(_) => 2 * q.period_micros(),
        }
    }

    /// What every decision the parsers let through must satisfy.
    fn assert_within(
        set: &PolicySet,
        server_time: bool,
        cost: u64,
        now: Micros,
        d: &Decision,
    ) -> Result<(), TestCaseError> {
        prop_assert!(
            now <= MAX_EXACT && (!server_time || now > 0),
            "time {}",
            now
        );
        prop_assert_eq!(d.statuses().len(), set.len());
        for (p, s) in set.policies().iter().zip(d.statuses()) {
            let wait = longest_wait(p);
            prop_assert_eq!(s.limit, p.quota().burst());
            prop_assert!(s.remaining <= s.limit, "{:?}", s);
            prop_assert!(s.reset <= wait, "reset {:?} beyond {}", s, wait);
            prop_assert!(
                s.never() || s.retry <= wait,
                "retry {:?} beyond {}",
                s,
                wait
            );
            prop_assert!(cost > 0 || s.allowed(), "{:?} for cost 0", s);
            prop_assert!(s.delay == 0 || s.allowed(), "{:?}", s);
            match p.algorithm() {
                AnyAlgorithm::Shaper(sh) => {
                    prop_assert!(s.delay <= sh.max_delay().as_micros() as u64)
                }
                _ => prop_assert_eq!(s.delay, 0),
            }
            if cost > p.quota().burst() && !matches!(p.algorithm(), AnyAlgorithm::Shaper(_)) {
                prop_assert!(
                    s.never(),
                    "{:?} for cost {} above {}",
                    s,
                    cost,
                    p.quota().burst()
                );
            }
        }
        match d.outcome() {
            Outcome::Allowed => prop_assert!(d.statuses().iter().all(|s| s.retry == 0)),
            Outcome::Limited => {
                let r = d.retry_after().unwrap().as_micros() as u64;
                prop_assert!(r > 0 && r <= max_wait(set));
            }
            Outcome::Never => prop_assert!(d.binding().never()),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2048, failure_persistence: None, ..ProptestConfig::default() })]

        /// Any reply, for any policy set, op and cost: no panic, and whatever is believed is within the
        /// policies' bounds.
        #[test]
        fn random_replies_never_yield_a_decision_out_of_bounds(
            (set, reply, cost, op, server_time) in policy_set()
                .prop_flat_map(|set| (Just(set.clone()), cost_for(&set), op(), any::<bool>()))
                .prop_flat_map(|(set, cost, op, server_time)| {
                    let reply = prop_oneof![1 => any_value().boxed(), 3 => shaped(&set, op, server_time, cost)];
                    (Just(set), reply, Just(cost), Just(op), Just(server_time))
                })
        ) {
            if let Ok((now, d)) = parse(&reply, op, &set, server_time, cost) {
                assert_within(&set, server_time, cost, now, &d)?;
            }
            // The shape-only parser never panics either.
            let _ = decision(&reply, set.len());
            let _ = batch_item(reply);
        }

        /// Every reply the reference can produce passes: the bounds are not tighter than the algorithms,
        /// penalties and quota-capped costs included.
        #[test]
        fn the_references_replies_all_pass(
            (set, steps) in policy_set().prop_flat_map(|set| {
                let most = set.policies().iter().map(|p| p.quota().burst()).max().unwrap_or(1);
                let step = (0u64..3_000_000, 0..=most + 1, 0u8..4);
                (Just(set), proptest::collection::vec(step, 1..40))
            })
        ) {
            let mut state = PolicyStates::default();
            let mut now = EPOCH;
            for (advance, cost, kind) in steps {
                now += advance;
                let d = match kind {
                    0 => set.peek(&state, now, cost),
                    1 => {
                        set.refund(&mut state, now, cost);
                        continue;
                    }
                    _ => set.check(&mut state, now, cost),
                };
                let mut reply = vec![Value::Int(now as i64)];
                for s in d.statuses() {
                    let retry = if s.never() { -1 } else { s.retry as i64 };
                    reply.extend([s.limit as i64, s.remaining as i64, s.reset as i64, retry, s.delay as i64].map(Value::Int));
                }
                let op = if kind == 0 { Op::Peek } else { Op::Check };
                // Client time: the generic reply shape whatever the set.
                let (at, got) = parse(&Value::Array(reply), op, &set, false, cost)
                    .map_err(|e| TestCaseError::fail(format!("{d:?} for cost {cost} refused: {e}")))?;
                prop_assert_eq!(at, now);
                prop_assert_eq!(got.statuses(), d.statuses());
                assert_within(&set, false, cost, now, &got)?;
            }
        }
    }
}
