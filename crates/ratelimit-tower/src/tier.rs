//! Tiers: identity → tier → a set of named policies, changeable at run time.
//!
//! A [`Tiers`] table maps tier names (`"free"`, `"pro"`, …) to [`PolicySet`]s, plus a **default** set for
//! anonymous clients and unknown tiers, plus an optional **global cap** checked on one shared key after the
//! client's own set. Which tier a request is in comes from a [`TierSource`]: by default the [`Tier`] request
//! extension that your auth middleware sets after verifying the credential — unverified input never picks a
//! tier.
//!
//! The table can be replaced while the server runs ([`TiersHandle`]). Counters live in the store under the
//! client's key, not under the tier, so changing a tier's quota — or moving a client to another tier — keeps
//! what the client already used: a policy at the same position with the same algorithm carries its state
//! over (see [`PolicyStates`](ratelimit_core::PolicyStates)).
//!
//! ```
//! use ratelimit_tower::{Policy, PolicySet, Quota, RateLimitLayer, Tiers};
//!
//! let free = PolicySet::new([Policy::gcra("burst", Quota::per_second(5).build()?)?])?;
//! let pro = PolicySet::new([Policy::gcra("burst", Quota::per_second(50).build()?)?])?;
//! let layer = RateLimitLayer::builder().tiers(Tiers::new(free).tier("pro", pro)).build()?;
//!
//! // Later, at run time: raise the pro quota; nobody's counters reset.
//! let pro2 = PolicySet::new([Policy::gcra("burst", Quota::per_second(100).build()?)?])?;
//! layer.tiers().set_tier("pro", pro2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use ratelimit_core::PolicySet;

use crate::headers::Rendered;
use crate::key::RequestInfo;
use crate::rate_limit::PolicyName;

/// A tier name, as a request extension (set by auth middleware) or returned by a tier closure.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Tier(TierName);

#[derive(Clone, PartialEq, Eq, Hash)]
enum TierName {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Tier {
    /// A tier from a static name (no allocation).
    pub const fn new_static(name: &'static str) -> Self {
        Tier(TierName::Static(name))
    }

    /// A tier from any name.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Tier(TierName::Shared(name.into()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            TierName::Static(s) => s,
            TierName::Shared(s) => s,
        }
    }
}

impl fmt::Debug for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tier({:?})", self.as_str())
    }
}

/// Where a request's tier comes from. A name that is not in the table gets the default tier and is
/// logged at `warn` once per name; with [`TierSource::Extension`], tiers configured while the first
/// requests carry no [`Tier`] are logged once too (see [Layer order](crate#layer-order)).
#[derive(Clone, Default)]
pub enum TierSource {
    /// The [`Tier`] request extension (absent → the default tier). The default.
    #[default]
    Extension,
    /// A closure (absent or unknown → the default tier).
    Fn(TierFn),
}

/// A closure choosing a request's tier.
pub type TierFn = Arc<dyn Fn(&RequestInfo<'_>) -> Option<Tier> + Send + Sync>;

impl fmt::Debug for TierSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TierSource::Extension => f.write_str("Extension"),
            TierSource::Fn(_) => f.write_str("Fn"),
        }
    }
}

/// The tier table; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Tiers {
    default: PolicySet,
    named: Vec<(Arc<str>, PolicySet)>,
    global_cap: Option<PolicySet>,
}

impl Tiers {
    /// A table whose default tier (anonymous clients, unknown tiers) uses `default`.
    pub fn new(default: PolicySet) -> Self {
        Tiers {
            default,
            named: Vec::new(),
            global_cap: None,
        }
    }

    /// Adds (or replaces) the tier `name`.
    pub fn tier(mut self, name: &str, policies: PolicySet) -> Self {
        self.named.retain(|(n, _)| &**n != name);
        self.named.push((Arc::from(name), policies));
        self
    }

    /// The default tier's policies.
    pub fn default_policies(&self) -> &PolicySet {
        &self.default
    }

    /// The policies of tier `name`, if it exists.
    pub fn tier_policies(&self, name: &str) -> Option<&PolicySet> {
        self.named
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, s)| s)
    }

    /// The names of the named tiers, in the order added.
    pub fn tier_names(&self) -> impl Iterator<Item = &str> {
        self.named.iter().map(|(n, _)| &**n)
    }

    /// The global cap, if any.
    pub fn global_cap_policies(&self) -> Option<&PolicySet> {
        self.global_cap.as_ref()
    }

    /// A global cap: after a request passes its own tier's policies, these are checked on one key shared
    /// by every client (reserve-then-refund: if the cap rejects, the client's charge is refunded). Give
    /// them names distinct from the tiers' policy names: both appear in the same headers.
    pub fn global_cap(mut self, policies: PolicySet) -> Self {
        self.global_cap = Some(policies);
        self
    }
}

/// One tier: its policies, and what every response under them reuses (rendered once).
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) name: Arc<str>,
    pub(crate) set: PolicySet,
    /// The header values and item prefixes of this set (with the global cap's).
    pub(crate) headers: Rendered,
    /// Each policy's name, as admitted requests carry it.
    pub(crate) names: Box<[PolicyName]>,
}

impl Entry {
    fn new(name: Arc<str>, set: PolicySet, global: Option<&PolicySet>) -> Self {
        Entry {
            name,
            names: set
                .policies()
                .iter()
                .map(|p| PolicyName::new(p.name()))
                .collect(),
            headers: Rendered::new(&set, global),
            set,
        }
    }
}

/// An immutable snapshot of the table, swapped atomically.
#[derive(Debug)]
pub(crate) struct TierTable {
    pub(crate) default: Arc<Entry>,
    pub(crate) named: HashMap<Arc<str>, Arc<Entry>>,
    pub(crate) global: Option<Arc<Entry>>,
    pub(crate) source: Tiers,
}

impl TierTable {
    pub(crate) fn build(tiers: Tiers) -> Self {
        let g = tiers.global_cap.as_ref();
        TierTable {
            default: Arc::new(Entry::new(Arc::from("default"), tiers.default.clone(), g)),
            named: tiers
                .named
                .iter()
                .map(|(n, s)| (n.clone(), Arc::new(Entry::new(n.clone(), s.clone(), g))))
                .collect(),
            global: g.map(|s| Arc::new(Entry::new(Arc::from("global"), s.clone(), None))),
            source: tiers,
        }
    }

    /// The entry of tier `name` (`None` for the default tier), or `Err` with the default tier's when the
    /// table has no such tier.
    #[inline]
    pub(crate) fn entry(&self, tier: Option<&str>) -> Result<&Arc<Entry>, &Arc<Entry>> {
        match tier {
            None => Ok(&self.default),
            Some(t) => self.named.get(t).ok_or(&self.default),
        }
    }
}

/// Changes the tier table of a running layer (and of every service it made); from
/// [`RateLimitLayer::tiers`](crate::RateLimitLayer::tiers). Changes apply to the next request; counters
/// are kept. Unlike [`RateLimitBuilder::build`](crate::RateLimitBuilder::build), these setters cannot
/// refuse a shaping policy: its delay is not applied (the layer admits or rejects, it never waits).
#[derive(Clone)]
pub struct TiersHandle {
    pub(crate) table: Arc<ArcSwap<TierTable>>,
}

impl fmt::Debug for TiersHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TiersHandle")
            .field("tiers", &self.get())
            .finish()
    }
}

impl TiersHandle {
    /// The current table.
    pub fn get(&self) -> Tiers {
        self.table.load().source.clone()
    }

    /// Replaces the whole table.
    pub fn replace(&self, tiers: Tiers) {
        self.table.store(Arc::new(TierTable::build(tiers)));
    }

    /// Adds or replaces one tier.
    pub fn set_tier(&self, name: &str, policies: PolicySet) {
        self.table.rcu(|t| {
            Arc::new(TierTable::build(
                t.source.clone().tier(name, policies.clone()),
            ))
        });
    }

    /// Removes a tier (its clients fall back to the default tier).
    pub fn remove_tier(&self, name: &str) {
        self.table.rcu(|t| {
            let mut s = t.source.clone();
            s.named.retain(|(n, _)| &**n != name);
            Arc::new(TierTable::build(s))
        });
    }

    /// Replaces the default tier's policies.
    pub fn set_default(&self, policies: PolicySet) {
        self.table.rcu(|t| {
            let mut s = t.source.clone();
            s.default = policies.clone();
            Arc::new(TierTable::build(s))
        });
    }

    /// Sets or clears the global cap.
    pub fn set_global_cap(&self, policies: Option<PolicySet>) {
        self.table.rcu(|t| {
            let mut s = t.source.clone();
            s.global_cap = policies.clone();
            Arc::new(TierTable::build(s))
        });
    }
}
