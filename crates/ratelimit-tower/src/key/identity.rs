//! Keys from authenticated identities, routes, and closures.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use http::header::{HeaderName, AUTHORIZATION};

use super::{tag, KeyBuf, KeyError, KeyExtractor, RequestInfo};
use crate::first_requests::{
    ExtensionWatch, LAYER_ORDER_FIX, REQUESTS_WITHOUT_EXTENSION_BEFORE_WARNING,
};

/// An authenticated user's id, inserted as a request extension by your auth middleware (after it verified
/// the credential). Read by [`User<UserId>`](User).
///
/// ```
/// use ratelimit_tower::key::UserId;
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(UserId::new("alice"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(pub Arc<str>);

impl UserId {
    /// A user id.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        UserId(id.into())
    }
}

impl AsRef<str> for UserId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Keys by the authenticated user: the request extension `T` (default [`UserId`]) that your auth
/// middleware sets. [`KeyError::Missing`] when absent (anonymous) — combine with
/// [`or`](super::KeyExtractorExt::or) to key anonymous clients by IP.
///
/// If none of the first 1,000 requests carries `T`, one warning says so: the limiter most likely runs
/// before the auth middleware (see [Layer order](crate#layer-order)).
pub struct User<T = UserId> {
    seen: Arc<ExtensionWatch>,
    _extension: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for User<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("User")
    }
}

impl<T> Clone for User<T> {
    fn clone(&self) -> Self {
        User {
            seen: self.seen.clone(),
            _extension: PhantomData,
        }
    }
}

impl<T> Default for User<T> {
    fn default() -> Self {
        User {
            seen: Arc::default(),
            _extension: PhantomData,
        }
    }
}

impl<T> User<T> {
    /// Reads the extension `T`.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<T: AsRef<str> + Send + Sync + 'static> KeyExtractor for User<T> {
    #[inline]
    fn extract(&self, req: &RequestInfo<'_>, key: &mut KeyBuf) -> Result<(), KeyError> {
        let user = req.extensions().get::<T>();
        if self.seen.warn_now(user.is_some()) {
            tracing::warn!(
                extension = std::any::type_name::<T>(),
                requests = REQUESTS_WITHOUT_EXTENSION_BEFORE_WARNING,
                "no request carried the authenticated-user extension the User key reads, so every client is keyed by the fallback or refused: {LAYER_ORDER_FIX}"
            );
        }
        let user = user.ok_or(KeyError::Missing("authenticated user extension"))?;
        key.push(tag::USER, user.as_ref().as_bytes());
        Ok(())
    }
}

/// Keys by API key, always hashed (SHA-256): the raw key never reaches the store, logs or headers.
///
/// **Not safe on unauthenticated input**: a client that sends a fresh random key with every request gets a
/// fresh bucket every time. Put it behind middleware that verifies the key (and then prefer [`User`]), or
/// resolve unknown keys to a default tier keyed by IP.
///
/// ```
/// use ratelimit_tower::key::ApiKey;
/// let from_header = ApiKey::header("x-api-key");
/// let from_bearer = ApiKey::bearer();
/// let either = ApiKey::header_or_bearer("x-api-key");
/// # let _ = (from_header, from_bearer, either);
/// ```
#[derive(Debug, Clone)]
pub struct ApiKey {
    header: Option<HeaderName>,
    bearer: bool,
}

/// API keys longer than this are rejected as invalid rather than hashed (they are not keys, they are junk).
const MAX_API_KEY: usize = 4096;

impl ApiKey {
    /// From the header `name` (panics never: an invalid header name is treated as never present).
    pub fn header(name: &str) -> Self {
        ApiKey {
            header: HeaderName::try_from(name).ok(),
            bearer: false,
        }
    }

    /// From `Authorization: Bearer <token>`.
    pub fn bearer() -> Self {
        ApiKey {
            header: None,
            bearer: true,
        }
    }

    /// From the header `name`, else `Authorization: Bearer`.
    pub fn header_or_bearer(name: &str) -> Self {
        ApiKey {
            header: HeaderName::try_from(name).ok(),
            bearer: true,
        }
    }

    /// The raw key in `req`, if any (for tier lookups; never log it).
    pub fn raw<'a>(&self, req: &RequestInfo<'a>) -> Result<&'a [u8], KeyError> {
        if let Some(h) = &self.header {
            if let Some(v) = req.headers().get(h) {
                return check(v.as_bytes());
            }
        }
        if self.bearer {
            if let Some(v) = req.headers().get(AUTHORIZATION) {
                let v = v.as_bytes();
                if v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ") {
                    return check(v[7..].trim_ascii());
                }
                return Err(KeyError::Invalid("Authorization header (expected Bearer)"));
            }
        }
        Err(KeyError::Missing("API key"))
    }
}

fn check(k: &[u8]) -> Result<&[u8], KeyError> {
    if k.is_empty() {
        Err(KeyError::Missing("API key"))
    } else if k.len() > MAX_API_KEY {
        Err(KeyError::Invalid("API key (too long)"))
    } else {
        Ok(k)
    }
}

impl KeyExtractor for ApiKey {
    fn extract(&self, req: &RequestInfo<'_>, key: &mut KeyBuf) -> Result<(), KeyError> {
        let raw = self.raw(req)?;
        key.push_hashed(tag::API_KEY, raw);
        Ok(())
    }
}

/// A route template for servers that route without axum: insert it as a request extension before the
/// layer runs (`/users/{id}`, never the raw path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTemplate(pub Arc<str>);

/// Keys by the matched route template — axum's `MatchedPath` (available when the layer is added with
/// `Router::layer` or `route_layer`), else a [`RouteTemplate`] extension. Never the raw path: `/users/1`
/// and `/users/2` are one route, and clients cannot mint keys by varying the path.
#[derive(Debug, Clone, Default)]
pub struct Route(());

impl Route {
    /// The matched route.
    pub fn new() -> Self {
        Route(())
    }

    /// The template for `req`, if known.
    pub fn template<'a>(req: &RequestInfo<'a>) -> Option<&'a str> {
        #[cfg(feature = "axum")]
        if let Some(m) = req.extensions().get::<axum::extract::MatchedPath>() {
            return Some(m.as_str());
        }
        req.extensions().get::<RouteTemplate>().map(|r| &*r.0)
    }
}

impl KeyExtractor for Route {
    fn extract(&self, req: &RequestInfo<'_>, key: &mut KeyBuf) -> Result<(), KeyError> {
        let t = Route::template(req).ok_or(KeyError::Missing(
            "matched route (add the layer with Router::layer/route_layer, or insert a RouteTemplate)",
        ))?;
        key.push(tag::ROUTE, t.as_bytes());
        Ok(())
    }
}

/// One key for every request: a global cap.
#[derive(Debug, Clone, Copy, Default)]
pub struct Global;

impl KeyExtractor for Global {
    #[inline]
    fn extract(&self, _req: &RequestInfo<'_>, key: &mut KeyBuf) -> Result<(), KeyError> {
        key.push(tag::GLOBAL, b"");
        Ok(())
    }
}

/// A key extractor from a closure.
///
/// ```
/// use ratelimit_tower::key::{tag, KeyError, KeyFn};
///
/// let by_tenant = KeyFn::new(|req, key| {
///     let t = req.headers().get("x-tenant").ok_or(KeyError::Missing("x-tenant header"))?;
///     key.push(tag::custom(0), t.as_bytes());
///     Ok(())
/// });
/// # let _ = by_tenant;
/// ```
#[derive(Clone)]
pub struct KeyFn<F>(F);

impl<F> fmt::Debug for KeyFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyFn")
    }
}

impl<F> KeyFn<F>
where
    F: Fn(&RequestInfo<'_>, &mut KeyBuf) -> Result<(), KeyError> + Send + Sync + 'static,
{
    /// Wraps `f`.
    pub fn new(f: F) -> Self {
        KeyFn(f)
    }
}

impl<F> KeyExtractor for KeyFn<F>
where
    F: Fn(&RequestInfo<'_>, &mut KeyBuf) -> Result<(), KeyError> + Send + Sync + 'static,
{
    fn extract(&self, req: &RequestInfo<'_>, key: &mut KeyBuf) -> Result<(), KeyError> {
        (self.0)(req, key)
    }
}
