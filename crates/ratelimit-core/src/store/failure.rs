//! What to do when a store cannot answer: one vocabulary for every place that decides it.

/// What a failed store call becomes: an error, an admission, or a local decision.
///
/// The Redis store takes all three (`RedisStoreBuilder::on_failure`, `redis`
/// feature): for a call that fails, times out, or meets an open circuit breaker. A caller of any store
/// that sees a [`StoreError`](crate::StoreError) uses the same names for its own choice: the
/// `ratelimit-tower` layer takes [`OnFailure::Error`] (fail closed) and [`OnFailure::Allow`] (fail open);
/// a local fallback needs per-key state, so [`OnFailure::Local`] belongs on the store.
///
/// ```
/// use ratelimit_core::OnFailure;
///
/// // Fail closed unless told otherwise.
/// assert_eq!(OnFailure::default(), OnFailure::Error);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnFailure {
    /// Return the [`StoreError`](crate::StoreError) (fail closed: the caller decides; never a fake
    /// denial). The default.
    #[default]
    Error,
    /// Admit, with the full quota (fail open).
    Allow,
    /// Decide locally, with every quota divided by `instances` (at least 1 unit each).
    Local {
        /// How many processes share the quota.
        instances: u32,
    },
}
