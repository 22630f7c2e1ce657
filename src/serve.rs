//! The worker's HTTP endpoints on `metrics.listen`: `/metrics` (Prometheus text format 0.0.4),
//! `/healthz` for readiness (200 when `pcsync status` would say OK or WARNING, 503 for
//! CRITICAL or UNKNOWN, with its first line as the body) and `/livez` for liveness (200 while
//! the process serves). Part of every build, the production image's included.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::metrics::Metrics;

/// What the endpoints read.
#[derive(Clone)]
pub struct Endpoints {
    pub metrics: Arc<Metrics>,
    pub pool: PgPool,
    pub max_age: Duration,
    pub clock: Clock,
}

async fn metrics(State(e): State<Endpoints>) -> impl IntoResponse {
    match e.metrics.render(e.clock.now()) {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

async fn healthz(State(e): State<Endpoints>) -> impl IntoResponse {
    match crate::status::read(&e.pool, e.max_age, &e.clock, None).await {
        Ok(s) if s.healthy => (StatusCode::OK, format!("{}\n", s.summary)),
        Ok(s) => (StatusCode::SERVICE_UNAVAILABLE, format!("{}\n", s.summary)),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{}\n",
                crate::status::unknown_line(&format!("cannot read the status: {err}"))
            ),
        ),
    }
}

async fn livez() -> &'static str {
    "alive\n"
}

/// Serves the endpoints on `listener` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    endpoints: Endpoints,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .with_state(endpoints);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}
