//! Operations: health and metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use crate::state::AppState;

/// 200 when every dependency (the database; Redis in a fleet) answers, 503 otherwise.
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
    let mut info = json!({ "database": { "status": if database_up { "up" } else { "down" } } });
    let mut healthy = database_up;
    if let Some(fleet) = &state.fleet {
        let mut redis = fleet.redis.clone();
        let redis_up = crate::fleet::bounded(redis::cmd("PING").query_async::<()>(&mut redis)).await.is_ok();
        if !redis_up {
            tracing::warn!("health: Redis is down");
        }
        info["redis"] = json!({ "status": if redis_up { "up" } else { "down" } });
        healthy &= redis_up;
    }
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({ "status": if healthy { "ok" } else { "error" }, "info": info });
    (status, axum::Json(body))
}

/// Prometheus text.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.metrics.hot_state(state.chat.hot().stats());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}
