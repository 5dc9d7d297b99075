//! Where the shared state lives, and joining it when Redis answers only after the process started
//! ([`wait_for_redis(false)`](super::SharedBudgetBuilder::wait_for_redis)).

use std::sync::Arc;
use std::time::Duration;

use ratelimit_core::store::redis::conn::{Connection, Connector};
use redis::RedisError;

use super::budget::SharedBudget;
use super::script::SOURCE;

/// Where connection replacements are counted, by reason.
pub(super) const RECONNECTS_METRIC: &str = "ratelimit_client_shared_reconnects_total";

/// Connects with `connector` and loads the script (on every primary of a Cluster), so that a wrong URL,
/// a refused password or a server refusing scripts shows now, not on the first request.
pub(super) async fn open(
    connector: &Connector,
    script: &redis::Script,
    spacing: Duration,
) -> Result<Arc<Connection>, RedisError> {
    let mut conn = connector.connect().await?;
    script.prepare_invoke().load_async(&mut conn).await?;
    Ok(Connection::new(
        conn,
        connector.clone(),
        spacing,
        RECONNECTS_METRIC,
    ))
}

/// Whether `e` says that Redis does not answer (yet), rather than that it answered and refused.
pub(super) fn unreachable(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_refusal() || e.is_timeout() || e.is_connection_dropped()
}

/// Tries `connector` once per `cooldown` until it answers, then puts the connection in place: the next call
/// goes to Redis. Stops when the budget is dropped.
pub(super) fn later(
    budget: &SharedBudget,
    connector: Connector,
    cooldown: Duration,
    spacing: Duration,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak = Arc::downgrade(&budget.inner);
    runtime.spawn(async move {
        let script = redis::Script::new(SOURCE);
        let mut refused_logged = false;
        loop {
            tokio::time::sleep(cooldown).await;
            if weak.strong_count() == 0 {
                return;
            }
            match open(&connector, &script, spacing).await {
                Ok(connection) => {
                    let Some(inner) = weak.upgrade() else { return };
                    *inner.connection.write() = Some(connection);
                    metrics::gauge!("ratelimit_client_shared_degraded").set(0.0);
                    tracing::info!(
                        namespace = %inner.namespace,
                        "shared rate-limit state reachable: this process joined the shared budget"
                    );
                    return;
                }
                Err(e) if unreachable(&e) => {
                    tracing::debug!(error = %e, "shared rate-limit state: Redis does not answer yet");
                }
                Err(e) => {
                    if !std::mem::replace(&mut refused_logged, true) {
                        tracing::warn!(
                            error = %e,
                            "shared rate-limit state: Redis answers but refuses this process (check the password, ACL and that scripts are allowed); still deciding alone, trying again"
                        );
                    }
                }
            }
        }
    });
}
