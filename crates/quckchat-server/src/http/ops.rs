//! Operations: health and metrics.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use serde_json::json;

use crate::state::AppState;

/// 200 when every dependency answers, 503 otherwise.
#[utoipa::path(get, path = "/api/v1/health", tag = "operations", responses((status = 200, body = Object), (status = 503, body = Object)))]
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let database_up = match tokio::time::timeout(std::time::Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health: database is down");
            false
        }
        Err(_) => {
            tracing::warn!("health: database did not answer within 2 s");
            false
        }
    };
    let status = if database_up { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if database_up { "ok" } else { "error" },
        "info": { "database": { "status": if database_up { "up" } else { "down" } } },
    });
    (status, axum::Json(body))
}

/// Prometheus text.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}
