//! What every shipped profile shares in reading a response: the caps on header values, the record of
//! problems already logged (each kind once), and the shape of a limit the upstream reports.

use http::StatusCode;
use ratelimit_core::Micros;

use super::{is_transient, BucketInfo, Limited, Observation, Scope};
use crate::parse::{Caps, Problems, Reported};

/// The wait after a 429 that names none (no `Retry-After`, no exhausted bucket).
pub(super) const UNNAMED_LIMIT_WAIT: Micros = 1_000_000;

/// A profile's caps and the problems it already logged.
#[derive(Debug, Clone, Default)]
pub(super) struct Reading {
    pub(super) caps: Caps,
    reported: Reported,
}

impl Reading {
    /// Reads a response with `read`; the first problem it found goes into the observation.
    pub(super) fn observe(
        &self,
        read: impl FnOnce(&mut Problems<'_>) -> Observation,
    ) -> Observation {
        let mut p = Problems::new(&self.reported);
        let mut obs = read(&mut p);
        obs.malformed = p.first;
        obs
    }

    /// A limit of `scope` for `retry`, capped at the longest wait believed (a longer one is reported as
    /// `source`'s).
    pub(super) fn limited(
        &self,
        scope: Scope,
        retry: Micros,
        source: &'static str,
        p: &mut Problems<'_>,
    ) -> Limited {
        Limited {
            scope,
            retry_after: p.cap(source, retry, self.caps.max_retry),
        }
    }

    /// What the profiles that read headers alone (IETF, GitHub, Retry-After) observe: `buckets`, a
    /// caller's limit of `retry` when there is one, a refused credential on 401, and a transient server
    /// error that is not a limit.
    pub(super) fn headers_only(
        &self,
        status: StatusCode,
        buckets: Vec<BucketInfo>,
        retry: Option<Micros>,
        p: &mut Problems<'_>,
    ) -> Observation {
        let limited = retry.map(|r| self.limited(Scope::User, r, "retry-after", p));
        Observation {
            buckets,
            limited,
            unauthorized: status == StatusCode::UNAUTHORIZED,
            server_error: is_transient(status) && limited.is_none(),
            ..Observation::default()
        }
    }
}
