//! The admin listener: `/metrics` (Prometheus text) and `/status` (JSON), apart from the bots' port so
//! that it can stay private.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use ratelimit_client::profile::Discord;
use ratelimit_client::shared::SharedBudget;
use ratelimit_client::Limiter;

use crate::status::Status;

#[derive(Clone)]
struct Admin {
    limiter: Limiter<Discord>,
    shared: Option<SharedBudget>,
    prometheus: Option<PrometheusHandle>,
}

/// The admin routes.
pub(crate) fn router(
    limiter: Limiter<Discord>,
    shared: Option<SharedBudget>,
    prometheus: Option<PrometheusHandle>,
) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(Admin {
            limiter,
            shared,
            prometheus,
        })
}

async fn metrics(State(admin): State<Admin>) -> Response {
    match admin.prometheus {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "no metrics recorder installed in this process\n",
        )
            .into_response(),
    }
}

async fn status(State(admin): State<Admin>) -> Response {
    let mut doc = Status::new(admin.limiter.snapshot(), admin.limiter.occupancy());
    if let Some(budget) = &admin.shared {
        doc = doc.with_shared(budget);
    }
    match serde_json::to_string(&doc) {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
