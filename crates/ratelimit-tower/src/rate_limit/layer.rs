//! [`RateLimitLayer`].

use std::fmt;
use std::sync::Arc;

use ratelimit_core::{PolicySet, Store};
use tower_layer::Layer;

use super::{RateLimit, Shared};
use crate::builder::{ConfigError, DefaultStore, RateLimitBuilder};
use crate::tier::TiersHandle;

/// Applies rate limiting to a service; see the [crate docs](crate).
///
/// Cheap to clone; every clone, and every service it makes, shares one store and one tier table
/// (through an `Arc`), so `Router::layer` (which clones the layer per route), `route_layer`, and plain
/// tower stacks all count against the same limits.
///
/// ```
/// use ratelimit_tower::{Policy, PolicySet, Quota, RateLimitLayer};
///
/// let layer = RateLimitLayer::new(PolicySet::new([Policy::gcra("burst", Quota::per_second(10).build()?)?])?)?;
/// let app: axum::Router = axum::Router::new()
///     .route("/", axum::routing::get(|| async { "hello" }))
///     .layer(layer);
/// # let _ = app;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RateLimitLayer<S = DefaultStore> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for RateLimitLayer<S> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            shared: self.shared.clone(),
        }
    }
}

impl<S> fmt::Debug for RateLimitLayer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field(
                "scope",
                &String::from_utf8_lossy(self.shared.cfg.scope.as_bytes()),
            )
            .finish_non_exhaustive()
    }
}

impl RateLimitLayer<DefaultStore> {
    /// Limits every request by `policies` (all-or-nothing), keyed by the TCP peer address, in memory, with
    /// every other setting at its default. Use [`RateLimitLayer::builder`] for more.
    ///
    /// # Errors
    /// [`ConfigError::Shaper`] if a policy is a shaper (the layer answers at once and never delays a
    /// request); every other default is valid.
    pub fn new(policies: PolicySet) -> Result<Self, ConfigError> {
        RateLimitBuilder::new().policies(policies).build()
    }

    /// A builder with the in-memory store.
    pub fn builder() -> RateLimitBuilder<DefaultStore> {
        RateLimitBuilder::new()
    }
}

impl<S> RateLimitLayer<S> {
    /// A builder with `store` (e.g. a Redis store).
    pub fn with_store(store: S) -> RateLimitBuilder<S> {
        RateLimitBuilder::with_store(store)
    }

    pub(crate) fn from_shared(shared: Arc<Shared<S>>) -> Self {
        RateLimitLayer { shared }
    }

    /// A handle to change the tiers and policies while the server runs (counters are kept).
    pub fn tiers(&self) -> TiersHandle {
        TiersHandle {
            table: self.shared.tiers.clone(),
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.shared.store
    }
}

impl<I, S> Layer<I> for RateLimitLayer<S>
where
    S: Store<[u8], PolicySet> + 'static,
{
    type Service = RateLimit<I, S>;

    fn layer(&self, inner: I) -> Self::Service {
        RateLimit::from_parts(inner, self.shared.clone())
    }
}
