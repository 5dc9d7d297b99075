//! Which part of a request names the credential whose limits it draws on.
//!
//! Upstreams count per credential: each API key or token has its own buckets and global limit, and a 401
//! stops only the credential it refused. The limiter keeps its state per credential, so it must know where a
//! request carries it: the `Authorization` header by default, another header (`x-api-key`), or anything a
//! closure finds in the request (a query parameter, a tenant id in the extensions).
//!
//! The value is never stored or logged: it is hashed with a per-limiter random seed into a 64-bit digest,
//! which is all the limiter keeps (so any credential, however long, costs eight bytes).

use std::fmt;
use std::sync::Arc;

use http::{Extensions, HeaderMap, HeaderName, Method, Uri};

/// A read-only view of an outgoing request, for [`Credential::from_fn`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct RequestView<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The request URI.
    pub uri: &'a Uri,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The request extensions.
    pub extensions: &'a Extensions,
}

type Extract = dyn for<'a> Fn(RequestView<'a>) -> Option<&'a [u8]> + Send + Sync;

#[derive(Clone)]
enum Source {
    Header(HeaderName),
    Fn(Arc<Extract>),
    Shared,
}

/// Where a request carries its credential; set it with
/// [`LimiterBuilder::credential`](crate::LimiterBuilder::credential).
///
/// Requests with different credentials never wait on each other's buckets; requests with none share one
/// state.
///
/// ```
/// use http::HeaderName;
/// use ratelimit_client::{profile::Ietf, Credential, Limiter};
///
/// // One state per `x-api-key` value:
/// let limiter = Limiter::builder(Ietf::new())
///     .credential(Credential::header(HeaderName::from_static("x-api-key")))
///     .build()?;
///
/// // Or per `api_key` query parameter:
/// let by_query = Credential::from_fn(|req| {
///     req.uri.query()?.split('&').find_map(|kv| kv.strip_prefix("api_key=")).map(str::as_bytes)
/// });
/// # Ok::<(), ratelimit_client::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct Credential(Source);

impl Default for Credential {
    /// The `Authorization` header.
    fn default() -> Self {
        Credential::authorization()
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Source::Header(h) => f.debug_tuple("Credential::header").field(h).finish(),
            Source::Fn(_) => f.write_str("Credential::from_fn(..)"),
            Source::Shared => f.write_str("Credential::shared()"),
        }
    }
}

impl Credential {
    /// The `Authorization` header (the default): Discord's bot token, a bearer token, basic auth.
    pub fn authorization() -> Self {
        Credential(Source::Header(http::header::AUTHORIZATION))
    }

    /// The value of header `name`, e.g. `x-api-key`.
    pub fn header(name: HeaderName) -> Self {
        Credential(Source::Header(name))
    }

    /// Whatever `f` finds in the request; `None` means no credential (such requests share one state).
    pub fn from_fn<F>(f: F) -> Self
    where
        F: for<'a> Fn(RequestView<'a>) -> Option<&'a [u8]> + Send + Sync + 'static,
    {
        Credential(Source::Fn(Arc::new(f)))
    }

    /// No credential: every request shares one state (an upstream that limits per IP only).
    pub fn shared() -> Self {
        Credential(Source::Shared)
    }

    /// The credential's bytes in `req`, if it carries one.
    pub(crate) fn find<'a>(&self, req: RequestView<'a>) -> Option<&'a [u8]> {
        match &self.0 {
            Source::Header(name) => req.headers.get(name).map(http::HeaderValue::as_bytes),
            Source::Fn(f) => f(req),
            Source::Shared => None,
        }
    }
}
