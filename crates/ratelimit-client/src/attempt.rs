//! The attempt loop shared by the tower layer and the reqwest middleware: admit, send, read the response
//! into the limiter, and retry (after the limiter's wait for a 429, with backoff for transient errors) while
//! retries are left and the request can be replayed.
//!
//! Each adapter describes how it sends one attempt and how its responses look ([`Exchange`]); the counting,
//! the replay rules, the backoff and what a caller gets at the end ([`Attempts`], [`Error::RetriesExhausted`])
//! live here once.

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{Extensions, HeaderMap, StatusCode};
use ratelimit_core::Micros;

use crate::parse::micros;
use crate::profile::Profile;
use crate::scheduler::{Next, Ticket};
use crate::{Error, Exhausted, Limiter, SentAt};

/// Largest response body read to observe a limit (a Discord 429 body is ~100 bytes).
pub(crate) const MAX_OBSERVED_BODY: usize = 64 * 1024;

/// How a request went: attempts sent, time spent waiting, and whether retries ran out. In the extensions of
/// every response the layer or the middleware returns; read it with [`Attempts::of`].
///
/// A request sent at once and answered on its first attempt carries nothing (so the common case costs no
/// allocation): [`Attempts::of`] reads that as one attempt, no wait, not exhausted.
///
/// ```
/// use ratelimit_client::Attempts;
/// let res = http::Response::new(());
/// let a = Attempts::of(res.extensions());
/// assert_eq!((a.attempts, a.waited, a.exhausted), (1, std::time::Duration::ZERO, false));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Attempts {
    /// Attempts sent, the first included.
    pub attempts: u32,
    /// Time the request was held before its attempts: waiting for the rate limit (queues, resets, the waits
    /// after 429s) and backing off after transient errors.
    pub waited: Duration,
    /// The last response still called for a retry (a 429, a 5xx) but none was left: with
    /// [`Exhausted::Respond`] a rate-limited response arrives this way; a 5xx always does.
    pub exhausted: bool,
}

impl Attempts {
    const FIRST_TRY: Attempts = Attempts {
        attempts: 1,
        waited: Duration::ZERO,
        exhausted: false,
    };

    /// The attempts recorded in a response's extensions (`response.extensions()`, for reqwest and http
    /// responses alike); one attempt with no wait when none are recorded.
    pub fn of(extensions: &Extensions) -> Attempts {
        extensions
            .get::<Attempts>()
            .copied()
            .unwrap_or(Self::FIRST_TRY)
    }
}

/// One adapter's way of sending a request and looking at its responses.
pub(crate) trait Exchange: Send {
    /// The response the adapter returns.
    type Response: Send;
    /// A failure to get any response (connection, timeout).
    type Error: Send;

    /// Whether the original request is still held, so that another attempt can follow this one.
    fn replayable(&self) -> bool;

    /// The request body's bytes, if buffered (read for sub-limit fingerprints).
    fn body(&self) -> Option<Cow<'_, [u8]>>;

    /// Sends the next attempt: a copy of the request while it can be copied, else the original (once).
    /// `None` when the original was already sent.
    fn send(
        &mut self,
    ) -> Option<impl Future<Output = Result<Self::Response, Self::Error>> + Send + '_>;

    fn status(res: &Self::Response) -> StatusCode;

    fn headers(res: &Self::Response) -> &HeaderMap;

    fn extensions(res: &Self::Response) -> &Extensions;

    fn extensions_mut(res: &mut Self::Response) -> &mut Extensions;

    /// Reads up to [`MAX_OBSERVED_BODY`] of the body; returns the response rebuilt around what was read
    /// (an empty body if it could not be read) and the bytes, if read.
    fn buffer(res: Self::Response) -> impl Future<Output = (Self::Response, Option<Bytes>)> + Send;

    /// The response head, for [`Error::RetriesExhausted`].
    fn into_head(res: Self::Response) -> http::response::Parts;
}

/// Why the loop ended without a response to return.
pub(crate) enum Failure<E> {
    /// The limiter refused or gave up (deadline, ban, retries spent, …).
    Limiter(Error),
    /// The last attempt got no response.
    Transport(E),
}

/// Counts kept across one request's attempts.
#[derive(Default)]
struct Tally {
    /// Retries after rate-limit responses.
    limit: u32,
    /// Retries after transient errors.
    error: u32,
    sent: u32,
    waited: Micros,
}

impl Tally {
    fn attempts(&self, exhausted: bool) -> Attempts {
        Attempts {
            attempts: self.sent,
            waited: micros(self.waited),
            exhausted,
        }
    }
}

/// Runs one request to its end through `x` (see the [module docs](self)).
pub(crate) async fn run<P: Profile, X: Exchange>(
    limiter: &Limiter<P>,
    mut ticket: Ticket,
    deadline: Option<Micros>,
    x: &mut X,
) -> Result<X::Response, Failure<X::Error>> {
    let mut tally = Tally::default();
    loop {
        #[cfg_attr(not(feature = "redis"), allow(unused_mut))]
        let mut permit = limiter
            .acquire(&mut ticket, || x.body(), deadline)
            .await
            .map_err(Failure::Limiter)?;
        #[cfg(feature = "redis")]
        {
            let mut shape = None;
            while limiter
                .admit_shared(&mut permit, &ticket, shape, deadline)
                .await
                .map_err(Failure::Limiter)?
                == crate::scheduler::SharedStep::NeedShape
            {
                shape = Some(crate::scheduler::body_fingerprint(x.body().as_deref()));
            }
        }
        tally.waited = tally.waited.saturating_add(permit.waited());
        let Some(sending) = x.send() else {
            return Err(Failure::Limiter(Error::NotReplayable {
                route: ticket.template().to_owned(),
                status: None,
            }));
        };
        tally.sent += 1;
        let response = match sending.await {
            Ok(r) => r,
            Err(e) => {
                drop(permit);
                if tally.error < limiter.config().max_error_retries && x.replayable() {
                    let wait = limiter.backoff(tally.error);
                    tracing::debug!(
                        route = ticket.template(),
                        upstream = limiter.profile().name(),
                        wait_ms = wait / 1000,
                        "no response from the upstream; retrying"
                    );
                    back_off(&mut tally, wait).await;
                    continue;
                }
                return Err(Failure::Transport(e));
            }
        };
        let status = X::status(&response);
        let (response, read) = if permit.wants_body(status, X::headers(&response)) {
            X::buffer(response).await
        } else {
            (response, None)
        };
        let sent_at = X::extensions(&response).get::<SentAt>().copied();
        let next = permit.complete(
            status,
            X::headers(&response),
            read.as_deref(),
            || x.body(),
            (tally.limit, tally.error),
            sent_at,
        );
        match next {
            Next::Done => return Ok(finish::<X>(response, &tally, false)),
            Next::Fail(e) => return Err(Failure::Limiter(e)),
            Next::Exhausted { limited } => {
                if !limited || limiter.on_exhausted() == Exhausted::Respond {
                    return Ok(finish::<X>(response, &tally, true));
                }
                return Err(Failure::Limiter(
                    exhausted::<X>(ticket.template(), response, read, &tally).await,
                ));
            }
            Next::Retry { .. } if !x.replayable() => {
                return Err(Failure::Limiter(Error::NotReplayable {
                    route: ticket.template().to_owned(),
                    status: Some(status),
                }))
            }
            Next::Retry {
                backoff: Some(wait),
            } => back_off(&mut tally, wait).await,
            Next::Retry { backoff: None } => tally.limit += 1,
        }
    }
}

/// Waits `wait` before the next attempt after a transient error.
async fn back_off(tally: &mut Tally, wait: Micros) {
    tally.error += 1;
    tally.waited = tally.waited.saturating_add(wait);
    tokio::time::sleep(micros(wait)).await;
}

/// The response as returned: with [`Attempts`] unless it went out at once and first time.
fn finish<X: Exchange>(mut response: X::Response, tally: &Tally, exhausted: bool) -> X::Response {
    let attempts = tally.attempts(exhausted);
    if attempts != Attempts::FIRST_TRY {
        X::extensions_mut(&mut response).insert(attempts);
    }
    response
}

/// [`Error::RetriesExhausted`] with the upstream's last response (its body read, if it was not yet).
async fn exhausted<X: Exchange>(
    route: &str,
    response: X::Response,
    read: Option<Bytes>,
    tally: &Tally,
) -> Error {
    let (response, body) = match read {
        Some(body) => (response, body),
        None => {
            let (response, body) = X::buffer(response).await;
            (response, body.unwrap_or_default())
        }
    };
    let mut head = X::into_head(response);
    head.extensions.insert(tally.attempts(true));
    metrics::counter!("ratelimit_client_retries_exhausted_total").increment(1);
    Error::RetriesExhausted {
        route: route.to_owned(),
        attempts: tally.sent,
        waited: micros(tally.waited),
        response: Box::new(http::Response::from_parts(head, body)),
    }
}
