//! What a failed call says, and about whom: Redis as a whole (the breaker's business), one identity's
//! key, or one reply.
//!
//! * **Redis** — no answer in time, a broken connection, or a server-wide condition (`OOM`, `LOADING`,
//!   `READONLY`, `MASTERDOWN`, `CLUSTERDOWN`, `BUSY`, `NOPERM`, a generic `ERR`, …): every identity would see
//!   the same, so it feeds the breaker. Any error not known to be per key lands here: failing closed on
//!   the unknown is the safe default.
//! * **One key** — `WRONGTYPE` (a foreign value at the identity's key) and `RLCORRUPT` (state the scripts
//!   found corrupt): that identity's requests fail, nobody else's. Redis answered, so for the breaker it
//!   is a success.
//! * **One reply** — a reply that fails validation (a protocol error). It counts towards the breaker once
//!   per identity in a row ([`ProtocolStreak`]): a server answering garbage to everyone opens it after
//!   `threshold` identities, one bad key asked a million times never does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::{ErrorKind, RedisError};

use super::keys::IdentityHash;
use crate::store::StoreError;

/// The error code the scripts answer for state they find corrupt (`-RLCORRUPT <what>`).
pub(crate) const CORRUPT_STATE_CODE: &str = "RLCORRUPT";

/// Redis's answer to a command on a key holding another type (a foreign value).
const FOREIGN_VALUE_CODE: &str = "WRONGTYPE";

/// Why a call produced no decision, before it becomes the caller's [`StoreError`].
#[derive(Debug)]
pub(crate) enum Failure {
    /// No answer within the budget.
    Timeout(Duration),
    /// Redis (or the connection) answered with an error.
    Redis(RedisError),
    /// Already typed: a failed script reload, or a reply that failed validation.
    Store(StoreError),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout(d) => write!(f, "no answer within {d:?}"),
            Failure::Redis(e) => e.fmt(f),
            Failure::Store(e) => e.fmt(f),
        }
    }
}

/// The kinds of failure, each counted and logged on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Timeout,
    Connection,
    Server,
    KeyState,
    Protocol,
}

/// How many [`Kind`]s there are (one log throttle each).
pub(crate) const KINDS: usize = 5;

impl Kind {
    /// Whether a failure of this kind is Redis's as a whole. Protocol errors decide per identity.
    pub(crate) fn is_server_wide(self) -> bool {
        matches!(self, Kind::Timeout | Kind::Connection | Kind::Server)
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Counts one failure of this kind in `ratelimit_redis_errors_total{kind}` (literal labels: no
    /// allocation per failed call).
    pub(crate) fn count(self) {
        match self {
            Kind::Timeout => metrics::counter!("ratelimit_redis_errors_total", "kind" => "timeout"),
            Kind::Connection => {
                metrics::counter!("ratelimit_redis_errors_total", "kind" => "connection")
            }
            Kind::Server => metrics::counter!("ratelimit_redis_errors_total", "kind" => "server"),
            Kind::KeyState => {
                metrics::counter!("ratelimit_redis_errors_total", "kind" => "key_state")
            }
            Kind::Protocol => {
                metrics::counter!("ratelimit_redis_errors_total", "kind" => "protocol")
            }
        }
        .increment(1);
    }
}

/// The kind of a Redis error.
pub(crate) fn classify(e: &RedisError) -> Kind {
    if matches!(e.code(), Some(FOREIGN_VALUE_CODE | CORRUPT_STATE_CODE)) {
        return Kind::KeyState;
    }
    match e.kind() {
        ErrorKind::Io | ErrorKind::ClusterConnectionNotFound | ErrorKind::Parse => Kind::Connection,
        _ if e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() => {
            Kind::Connection
        }
        _ => Kind::Server,
    }
}

impl Failure {
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Failure::Timeout(_) => Kind::Timeout,
            Failure::Redis(e) => classify(e),
            Failure::Store(e) => match e {
                StoreError::Timeout(_) => Kind::Timeout,
                StoreError::Protocol(_) => Kind::Protocol,
                StoreError::KeyState { .. } => Kind::KeyState,
                StoreError::Unavailable(_) => Kind::Connection,
                StoreError::Backend(b) => b
                    .downcast_ref::<RedisError>()
                    .map_or(Kind::Server, classify),
                _ => Kind::Server,
            },
        }
    }

    /// The caller's error. `keys` names the identity's keys, asked only for a per-key error.
    pub(crate) fn into_error(self, keys: impl FnOnce() -> String) -> StoreError {
        match self {
            Failure::Timeout(d) => StoreError::Timeout(d),
            Failure::Redis(e) if classify(&e) == Kind::KeyState => StoreError::KeyState {
                keys: keys(),
                reason: e.to_string(),
            },
            Failure::Redis(e) => StoreError::Backend(Box::new(e)),
            Failure::Store(e) => e,
        }
    }
}

/// Protocol errors count towards the breaker once per identity in a row: the identity of the last one
/// is remembered, and a protocol error counts only when it comes from another identity.
#[derive(Debug, Default)]
pub(crate) struct ProtocolStreak {
    /// The first 8 bytes of the last such identity's hash, with the low bit set (0 = none yet).
    last: AtomicU64,
}

impl ProtocolStreak {
    /// Whether a protocol error from `identity` (`None`: a whole batch's reply, nobody's in particular)
    /// counts towards the breaker.
    pub(crate) fn counts(&self, identity: Option<&IdentityHash>) -> bool {
        let Some(hash) = identity else {
            return true;
        };
        let mut head = [0u8; 8];
        head.copy_from_slice(&hash[..8]);
        let id = u64::from_le_bytes(head) | 1;
        self.last.swap(id, Ordering::Relaxed) != id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str) -> RedisError {
        redis::make_extension_error(code.to_owned(), Some("detail".to_owned()))
    }

    #[test]
    fn per_key_codes_are_the_keys_and_name_them() {
        for code in [CORRUPT_STATE_CODE, FOREIGN_VALUE_CODE] {
            let f = Failure::Redis(server(code));
            assert_eq!(f.kind(), Kind::KeyState, "{code}");
            assert!(!f.kind().is_server_wide());
            let e = f.into_error(|| "rl:{ab}:*".to_owned());
            assert!(matches!(&e, StoreError::KeyState { keys, .. } if keys == "rl:{ab}:*"));
            let msg = e.to_string();
            assert!(msg.contains(code) && msg.contains("delete it"), "{msg}");
        }
    }

    #[test]
    fn everything_else_is_server_wide() {
        for code in [
            "OOM",
            "BUSY",
            "MISCONF",
            "NOPERM",
            "ERR",
            "LOADING",
            "READONLY",
            "MASTERDOWN",
        ] {
            assert!(
                Failure::Redis(server(code)).kind().is_server_wide(),
                "{code}"
            );
        }
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(Failure::Redis(io).kind(), Kind::Connection);
        assert_eq!(Failure::Timeout(Duration::ZERO).kind(), Kind::Timeout);
        let reply = Failure::Store(StoreError::Protocol("x".to_owned()));
        assert_eq!(reply.kind(), Kind::Protocol);
        assert!(!Kind::Protocol.is_server_wide());
    }

    #[test]
    fn protocol_errors_count_once_per_identity_in_a_row() {
        let s = ProtocolStreak::default();
        let (a, b) = ([1u8; 16], [2u8; 16]);
        assert!(s.counts(Some(&a)));
        assert!(!s.counts(Some(&a)), "the same identity again");
        assert!(!s.counts(Some(&a)));
        assert!(s.counts(Some(&b)), "another identity");
        assert!(s.counts(Some(&a)));
        assert!(s.counts(None), "a batch reply is nobody's");
    }
}
