//! The Lua script, its SHA-1, and how a PolicySet is encoded for it.
//!
//! Each algorithm's Lua twin lives in `scripts/<algorithm>.lua` (its Rust reference is
//! `src/algorithm/<algorithm>.rs`); `scripts/main.lua` checks, peeks or refunds all the policies of one
//! identity in one atomic call. The script sent for a policy set holds only the algorithms it uses.

use std::sync::OnceLock;

use redis::Value;

use crate::clock::{duration_to_micros, Micros};
use crate::decision::{Decision, Status, MAX_POLICIES};
use crate::policy::{AnyAlgorithm, PolicySet};
use crate::store::StoreError;

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
/// (`prefix:{hash}:`) is `base`.
pub(crate) fn command(
    functions: bool,
    op: Op,
    set: &PolicySet,
    base: &mut String,
    client_now: Option<(Micros, Micros)>,
    cost: u64,
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
    push_args(&mut cmd, op, set, client_now, cost, !(functions && lean));
    cmd
}

/// The number of keys and of arguments one call for `op` over `set` sends (the lean GCRA call's
/// arguments counted with its `'g'`).
pub(crate) fn shape(
    op: Op,
    set: &PolicySet,
    client_now: Option<(Micros, Micros)>,
) -> (usize, usize) {
    if lean_gcra(op, set, client_now.is_none()).is_some() {
        (1, 4)
    } else {
        (
            set.len() + usize::from(client_now.is_some()),
            5 + 7 * set.len(),
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

/// Appends the arguments of one call (see `scripts/main.lua`). `tag_lean`: whether a lean GCRA call
/// carries its `'g'` (it does everywhere but in its own `FCALL` function).
pub(crate) fn push_args(
    cmd: &mut redis::Cmd,
    op: Op,
    set: &PolicySet,
    client_now: Option<(Micros, Micros)>,
    cost: u64,
    tag_lean: bool,
) {
    if let Some([t, tau, _]) = lean_gcra(op, set, client_now.is_none()) {
        if tag_lean {
            cmd.arg("g");
        }
        cmd.arg(cost).arg(t).arg(tau);
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
}

fn int(v: &Value) -> Result<i64, StoreError> {
    match v {
        Value::Int(i) => Ok(*i),
        other => Err(StoreError::Protocol(format!(
            "expected an integer in the script reply, got {other:?}"
        ))),
    }
}

fn non_negative(v: &Value) -> Result<u64, StoreError> {
    let i = int(v)?;
    u64::try_from(i)
        .map_err(|_| StoreError::Protocol(format!("negative value {i} in the script reply")))
}

/// Parses the lean `'g'` call's reply `{now, reset, outcome}` for a GCRA of `[T, tau, burst]` and `cost`:
/// the rest of the status is what `gcra_evaluate` (and the Rust reference) derives from `reset`.
pub(crate) fn lean_decision(
    reply: &Value,
    [t, tau, burst]: [u64; 3],
    cost: u64,
) -> Result<(Micros, Decision), StoreError> {
    let items = match reply {
        Value::Array(items) if items.len() == 3 => items,
        other => {
            return Err(StoreError::Protocol(format!(
                "expected 3 values from the script's GCRA path, got {other:?} (is another version of the script loaded under the same name?)"
            )))
        }
    };
    let now = non_negative(&items[0])?;
    let reset = non_negative(&items[1])?;
    let remaining = match tau.checked_sub(reset) {
        Some(left) if t > 0 => left / t,
        _ => 0,
    };
    let retry = match int(&items[2])? {
        1 => 0,
        -1 => Status::NEVER,
        0 => cost
            .checked_mul(t)
            .and_then(|c| c.checked_add(reset))
            .and_then(|a| a.checked_sub(tau))
            .filter(|r| *r > 0)
            .ok_or_else(|| {
                StoreError::Protocol(format!(
                    "a limited GCRA reply with reset {reset} cannot hold cost {cost}"
                ))
            })?,
        o => {
            return Err(StoreError::Protocol(format!(
                "invalid outcome {o} in the script reply"
            )))
        }
    };
    let status = Status {
        limit: burst,
        remaining,
        reset,
        retry,
        delay: 0,
    };
    Ok((now, Decision::combine(&[status])))
}

/// Parses the reply to [`command`]'s call for `op` over `set`.
pub(crate) fn parse(
    reply: &Value,
    op: Op,
    set: &PolicySet,
    server_time: bool,
    cost: u64,
) -> Result<(Micros, Decision), StoreError> {
    match lean_gcra(op, set, server_time) {
        Some(params) => lean_decision(reply, params, cost),
        None => decision(reply, set.len()),
    }
}

/// Parses a reply `{now, (limit, remaining, reset, retry, delay) × n}` into the server's time and a
/// decision.
pub(crate) fn decision(reply: &Value, n: usize) -> Result<(Micros, Decision), StoreError> {
    let Value::Array(items) = reply else {
        return Err(StoreError::Protocol(format!(
            "expected an array from the script, got {reply:?}"
        )));
    };
    if items.len() != 1 + 5 * n || n > MAX_POLICIES {
        return Err(StoreError::Protocol(format!(
            "expected {} values from the script, got {} (is another version of the script loaded under the same name?)",
            1 + 5 * n,
            items.len()
        )));
    }
    let now = non_negative(&items[0])?;
    let mut statuses = [Status::default(); MAX_POLICIES];
    for (i, s) in statuses.iter_mut().take(n).enumerate() {
        let f = &items[1 + 5 * i..6 + 5 * i];
        let retry = match int(&f[3])? {
            -1 => Status::NEVER,
            r => u64::try_from(r).map_err(|_| {
                StoreError::Protocol(format!("invalid retry {r} in the script reply"))
            })?,
        };
        *s = Status {
            limit: non_negative(&f[0])?,
            remaining: non_negative(&f[1])?,
            reset: non_negative(&f[2])?,
            retry,
            delay: non_negative(&f[4])?,
        };
    }
    Ok((now, Decision::combine(&statuses[..n])))
}
