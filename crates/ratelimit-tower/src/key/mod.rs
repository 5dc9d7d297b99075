//! Who is being limited: key extractors.
//!
//! A [`KeyExtractor`] looks at a request and writes an identity into a [`KeyBuf`] — a fixed-size buffer on
//! the stack, so building a key never allocates. The layer prefixes every key with its scope, so two layers
//! (or two services sharing one Redis) never share counters by accident.
//!
//! | extractor | key | safe on unauthenticated input? |
//! |---|---|---|
//! | [`ClientIp::peer()`] (default) | TCP peer address, IPv6 by /64 | **yes** — a client cannot choose its peer address, and rotating IPv6 addresses inside a /64 stays one key |
//! | [`ClientIp`] with [`TrustedProxies`] | right-most untrusted hop of `X-Forwarded-For` / `Forwarded` | **yes**, if the trusted set is exactly your proxies — spoofed elements to the left are never reached |
//! | [`User`] | a request extension set by your auth middleware | yes, *if* that middleware only sets it after verifying the credential |
//! | [`ApiKey`] | a header or `Authorization: Bearer`, hashed (SHA-256) | **no** — anyone can send a fresh random key per request and get a fresh bucket; use it only after the key was verified, or behind `user.or(ip)` |
//! | [`Route`] | the matched route template (`/users/{id}`, never the raw path) | yes (bounded by your routes) |
//! | [`Global`] | one key for everything | yes |
//! | [`KeyFn`] | your closure | your call |
//!
//! Combinators: [`KeyExtractorExt::or`] (first that succeeds — e.g. *the verified user, else the client
//! IP*, the safe default for tiered APIs) and [`KeyExtractorExt::and`] (composite keys, e.g. user + route).
//!
//! ```
//! use ratelimit_tower::key::{ClientIp, KeyExtractorExt, Route, User, UserId};
//!
//! // Per user (as set by auth middleware) and per route; anonymous clients by IP.
//! let key = User::<UserId>::new().or(ClientIp::peer()).and(Route::new());
//! # let _ = key;
//! ```

pub mod forwarded;
mod identity;
mod ip;
pub mod tag;

use std::fmt;
use std::net::SocketAddr;

use http::{Extensions, HeaderMap, Method, Request, Uri};
use sha2::{Digest, Sha256};

pub use forwarded::{Cidr, CidrError, TrustedProxies};
pub use identity::{ApiKey, Global, KeyFn, Route, RouteTemplate, User, UserId};
pub use ip::{ClientIp, ForwardedHeader, PeerAddr};

/// A borrowed view of the parts of a request that key extractors, tier selectors, cost functions and skip
/// predicates may look at (never the body).
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    extensions: &'a Extensions,
}

impl<'a> RequestInfo<'a> {
    /// Views `req`.
    #[inline]
    pub fn new<B>(req: &'a Request<B>) -> Self {
        RequestInfo {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            extensions: req.extensions(),
        }
    }

    /// The method.
    #[inline]
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The URI.
    #[inline]
    pub fn uri(&self) -> &'a Uri {
        self.uri
    }

    /// The headers.
    #[inline]
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// The extensions.
    #[inline]
    pub fn extensions(&self) -> &'a Extensions {
        self.extensions
    }

    /// The TCP peer's address: axum's `ConnectInfo<SocketAddr>` (with the `axum` feature), else a
    /// [`PeerAddr`] or bare `SocketAddr` extension.
    #[inline]
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        #[cfg(feature = "axum")]
        if let Some(ci) = self
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
        {
            return Some(ci.0);
        }
        if let Some(p) = self.extensions.get::<PeerAddr>() {
            return Some(p.0);
        }
        self.extensions.get::<SocketAddr>().copied()
    }
}

/// The most bytes a key holds (scope included). Longer identities are hashed.
pub const KEY_CAPACITY: usize = 128;

/// Longest component stored verbatim; longer ones are replaced by 16 bytes of their SHA-256.
const MAX_RAW_COMPONENT: usize = 40;

/// A store key under construction, on the stack: the layer's scope, then length-prefixed components
/// (so `("ab", "c")` and `("a", "bc")` differ).
#[derive(Clone)]
pub struct KeyBuf {
    buf: [u8; KEY_CAPACITY],
    len: u8,
    base: u8,
}

impl fmt::Debug for KeyBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print raw key bytes: they may hold user identifiers.
        write!(
            f,
            "KeyBuf({})",
            crate::observe::KeyHash::of(self.as_bytes())
        )
    }
}

/// The most bytes of a scope (the layer's builder rejects longer ones).
const MAX_SCOPE: usize = 32;

/// A layer's scope as every key starts: its bytes, then a 0 separator, padded with zeros to a fixed size,
/// so that starting a key is a fixed-size copy (a variable-length one was a `memcpy` call per request).
#[derive(Clone)]
pub(crate) struct Scope {
    prefix: [u8; MAX_SCOPE + 1],
    /// Scope bytes plus the separator.
    len: u8,
}

impl Scope {
    /// `scope`, cut to [`MAX_SCOPE`] bytes.
    pub(crate) fn new(scope: &[u8]) -> Self {
        let n = scope.len().min(MAX_SCOPE);
        let mut prefix = [0; MAX_SCOPE + 1];
        prefix[..n].copy_from_slice(&scope[..n]);
        Scope {
            prefix,
            len: (n + 1) as u8,
        }
    }

    /// The scope's bytes (without the separator).
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.prefix[..self.len as usize - 1]
    }
}

impl KeyBuf {
    /// An empty key under `scope` (at most 32 bytes; longer scopes are rejected when the layer is built).
    #[inline]
    pub fn new(scope: &[u8]) -> Self {
        Self::scoped(&Scope::new(scope))
    }

    /// An empty key under `scope`.
    #[inline]
    pub(crate) fn scoped(scope: &Scope) -> Self {
        let mut k = KeyBuf {
            buf: [0; KEY_CAPACITY],
            len: scope.len,
            base: scope.len,
        };
        k.buf[..MAX_SCOPE + 1].copy_from_slice(&scope.prefix);
        k
    }

    /// The key's bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    /// Whether no component was pushed yet.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == self.base
    }

    /// Drops every component (keeps the scope).
    #[inline]
    pub fn clear(&mut self) {
        self.len = self.base;
    }

    /// Appends a component: a tag byte saying what it is (see [`tag`]: custom extractors take theirs
    /// from [`tag::custom`]), then the bytes (SHA-256-hashed to 16 bytes when
    /// longer than 40). When the buffer would overflow, everything after the scope is folded into a hash.
    pub fn push(&mut self, tag: u8, bytes: &[u8]) {
        debug_assert_valid(tag);
        if bytes.len() > MAX_RAW_COMPONENT {
            let h = sha16(bytes);
            self.push_raw(tag | 0x80, &h);
        } else {
            self.push_raw(tag, bytes);
        }
    }

    /// Appends a component hashed with SHA-256 whatever its length (for secrets such as API keys).
    pub fn push_hashed(&mut self, tag: u8, bytes: &[u8]) {
        debug_assert_valid(tag);
        let h = sha16(bytes);
        self.push_raw(tag | 0x80, &h);
    }

    fn push_raw(&mut self, tag: u8, bytes: &[u8]) {
        let len = self.len as usize;
        let need = 2 + bytes.len();
        if len + need <= KEY_CAPACITY {
            self.buf[len] = tag;
            self.buf[len + 1] = bytes.len() as u8;
            self.buf[len + 2..len + need].copy_from_slice(bytes);
            self.len = (len + need) as u8;
        } else {
            let mut h = Sha256::new();
            h.update(&self.buf[self.base as usize..len]);
            h.update([tag, bytes.len() as u8]);
            h.update(bytes);
            let digest = h.finalize();
            let base = self.base as usize;
            self.buf[base] = 0xff;
            self.buf[base + 1] = 16;
            self.buf[base + 2..base + 18].copy_from_slice(&digest[..16]);
            self.len = (base + 18) as u8;
        }
    }
}

/// In debug builds, a tag that is neither built in nor custom is a bug in its extractor.
#[inline]
fn debug_assert_valid(tag: u8) {
    debug_assert!(
        tag::is_valid(tag),
        "key tag {tag:#04x} is reserved: a custom extractor takes its tags from key::tag::custom(n) (0x01..=0x1f)"
    );
}

pub(crate) fn sha16(bytes: &[u8]) -> [u8; 16] {
    let d = Sha256::digest(bytes);
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// Why no key could be built for a request. What happens next is the layer's
/// [`OnKeyError`](crate::OnKeyError) setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// No peer address: the server was not set up to record it.
    #[error("no peer address in the request: serve axum with `into_make_service_with_connect_info::<SocketAddr>()`, or insert a `PeerAddr` extension in your hyper accept loop")]
    NoPeerAddr,
    /// Something the extractor needs is absent from the request (a header, an extension).
    #[error("rate-limit key unavailable: missing {0}")]
    Missing(&'static str),
    /// Something the extractor reads is malformed.
    #[error("rate-limit key unavailable: invalid {0}")]
    Invalid(&'static str),
}

impl KeyError {
    /// Whether the server (not the client) is at fault: a missing peer address is a deployment mistake.
    pub fn is_server_error(&self) -> bool {
        matches!(self, KeyError::NoPeerAddr)
    }
}

/// Builds the store key for a request; see the [module docs](self) for the built-in ones.
///
/// Implementations must be cheap and must not allocate on the common path: they run on every request.
///
/// ```
/// use ratelimit_tower::key::{tag, KeyBuf, KeyError, KeyExtractor, RequestInfo};
///
/// /// Keys by tenant, from a header that an upstream gateway has already authenticated.
/// struct Tenant;
///
/// /// Custom extractors take their tags from the range the crate leaves them (see [`tag`]).
/// const TENANT: u8 = tag::custom(0);
///
/// impl KeyExtractor for Tenant {
///     fn extract(&self, req: &RequestInfo<'_>, key: &mut KeyBuf) -> Result<(), KeyError> {
///         let tenant = req.headers().get("x-tenant").ok_or(KeyError::Missing("x-tenant header"))?;
///         key.push(TENANT, tenant.as_bytes());
///         Ok(())
///     }
/// }
/// ```
pub trait KeyExtractor: Send + Sync + 'static {
    /// Appends this extractor's identity for `req` to `key`.
    fn extract(&self, req: &RequestInfo<'_>, key: &mut KeyBuf) -> Result<(), KeyError>;
}

impl<K: KeyExtractor + ?Sized> KeyExtractor for Box<K> {
    fn extract(&self, req: &RequestInfo<'_>, key: &mut KeyBuf) -> Result<(), KeyError> {
        (**self).extract(req, key)
    }
}

impl<K: KeyExtractor + ?Sized> KeyExtractor for std::sync::Arc<K> {
    fn extract(&self, req: &RequestInfo<'_>, key: &mut KeyBuf) -> Result<(), KeyError> {
        (**self).extract(req, key)
    }
}

/// Combinators for key extractors.
pub trait KeyExtractorExt: KeyExtractor + Sized {
    /// This extractor, or `other` when this one fails (e.g. `User::new().or(ClientIp::peer())`).
    fn or<B: KeyExtractor>(self, other: B) -> Or<Self, B> {
        Or(self, other)
    }

    /// Both identities in one key (e.g. `User::new().and(Route::new())`); fails if either fails.
    fn and<B: KeyExtractor>(self, other: B) -> And<Self, B> {
        And(self, other)
    }
}

impl<K: KeyExtractor> KeyExtractorExt for K {}

/// See [`KeyExtractorExt::or`].
#[derive(Debug, Clone)]
pub struct Or<A, B>(A, B);

impl<A: KeyExtractor, B: KeyExtractor> KeyExtractor for Or<A, B> {
    fn extract(&self, req: &RequestInfo<'_>, key: &mut KeyBuf) -> Result<(), KeyError> {
        let mark = key.len;
        match self.0.extract(req, key) {
            Ok(()) => Ok(()),
            Err(_) => {
                key.len = mark;
                self.1.extract(req, key)
            }
        }
    }
}

/// See [`KeyExtractorExt::and`].
#[derive(Debug, Clone)]
pub struct And<A, B>(A, B);

impl<A: KeyExtractor, B: KeyExtractor> KeyExtractor for And<A, B> {
    fn extract(&self, req: &RequestInfo<'_>, key: &mut KeyBuf) -> Result<(), KeyError> {
        self.0.extract(req, key)?;
        self.1.extract(req, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_starts_with_its_scope_and_a_separator() {
        let k = KeyBuf::new(b"scope");
        assert_eq!(k.as_bytes(), b"scope\0");
        assert!(k.is_empty());
        let long = [b'a'; 40];
        let k = KeyBuf::new(&long);
        assert_eq!(k.as_bytes().len(), MAX_SCOPE + 1);
        assert_eq!(Scope::new(b"rl").as_bytes(), b"rl");
    }

    #[test]
    fn components_are_length_prefixed() {
        let mut a = KeyBuf::new(b"s");
        a.push(tag::custom(0), b"ab");
        a.push(tag::custom(0), b"c");
        let mut b = KeyBuf::new(b"s");
        b.push(tag::custom(0), b"a");
        b.push(tag::custom(0), b"bc");
        assert_ne!(a.as_bytes(), b.as_bytes());
    }

    #[test]
    fn long_and_many_components_fold_into_a_hash() {
        let mut k = KeyBuf::new(b"scope");
        k.push(tag::custom(0), &[7u8; 1000]);
        assert!(k.as_bytes().len() < 40);
        for i in 0..100u8 {
            k.push(tag::custom(1), &[i; 40]);
        }
        assert!(k.as_bytes().len() <= KEY_CAPACITY);
        let mut k2 = KeyBuf::new(b"scope");
        k2.push(tag::custom(0), &[7u8; 1000]);
        for i in 0..100u8 {
            k2.push(tag::custom(1), &[i; 40]);
        }
        assert_eq!(k.as_bytes(), k2.as_bytes());
        k2.push(tag::custom(1), b"1");
        assert_ne!(k.as_bytes(), k2.as_bytes());
    }

    #[test]
    fn hashed_components_never_hold_the_raw_secret() {
        let mut k = KeyBuf::new(b"s");
        k.push_hashed(tag::API_KEY, b"secret-api-key");
        assert!(!k.as_bytes().windows(6).any(|w| w == b"secret"));
    }
}
