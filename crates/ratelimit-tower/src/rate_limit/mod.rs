//! The rate-limiting middleware: [`RateLimitLayer`], the [`RateLimit`] service and its
//! [`ResponseFuture`].
//!
//! Per request: method filter and skip predicate → key extraction → tier → policy set and cost → store
//! check (then the global cap, if any) → allowed: call the inner service and add `RateLimit` headers to its
//! response; limited: 429; store error: the configured [`OnFailure`](ratelimit_core::OnFailure).
//!
//! # The store call
//!
//! [`Store`](crate::Store) futures borrow the store, the policy set and the key, so a response future
//! cannot own one without boxing (or `unsafe`). So the layer first asks
//! [`Store::check_now`](crate::Store::check_now), inside `call`: a store that answers without I/O (the
//! in-memory store, whatever its clock, and any wrapper that delegates `check_now`) decides there — no
//! future at all, nothing boxed, the key on the stack. A store that cannot (Redis) gets one boxed future
//! per request, which is noise next to a network round trip.
//!
//! # Files
//!
//! `layer.rs`, `service.rs`, `future.rs` as in tower; `settings.rs` what a built layer is configured to
//! do; `decide.rs` the decision pipeline (filters, key, cost, store checks, the global cap);
//! `respond.rs` from decisions to an action (admit, 429, store-error policy); `extensions.rs` what a
//! handler gets; `reservation.rs` the refund guards; `store_health.rs` and `tier_checks.rs` the
//! once-only reports. Which headers a response carries is [`crate::headers`]'s.

mod decide;
mod extensions;
mod future;
mod layer;
mod reservation;
mod respond;
mod service;
mod settings;
mod store_health;
mod tier_checks;

use std::sync::Arc;

use arc_swap::ArcSwap;

pub(crate) use decide::{KeyOutcome, Now};
pub(crate) use extensions::PolicyName;
pub use extensions::{MissingRateLimitInfo, NearLimit, RateLimitInfo};
pub use future::ResponseFuture;
pub use layer::RateLimitLayer;
pub(crate) use reservation::HeldCharge;
pub(crate) use respond::{most_binding, Action, Part};
pub use service::RateLimit;
pub use settings::OnKeyError;
pub(crate) use settings::{Config, Cost, HeaderConfig, RejectFn, SkipFn, StoreFailure};

use crate::observe;
use crate::tier::TierTable;

/// What every service of a layer shares: the store, the settings, the tier table and the state of the
/// once-only reports.
pub(crate) struct Shared<S> {
    pub(crate) store: S,
    pub(crate) cfg: Config,
    /// Metric handles, when a recorder was installed at build time (see [`observe::Meters`]).
    pub(crate) meters: Option<observe::Meters>,
    pub(crate) tiers: Arc<ArcSwap<TierTable>>,
    /// Whether the store is failing: outages are logged when they start and end.
    pub(crate) health: store_health::StoreHealth,
    /// Unknown tier names and a missing `Tier` extension, reported once.
    pub(crate) tier_checks: tier_checks::TierChecks,
}
