//! `/calls` and `/ice-servers`: a call's record and a conversation's call history, for
//! participants and members; ICE servers with per-user TURN credentials.

use axum::extract::{Path, State};
use quckchat_domain::call_model::Call;
use quckchat_domain::{CallId, ConversationId};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, Json, Query, parse_id};
use super::extract::AuthUser;
use crate::ice::IceConfig;
use crate::state::AppState;

/// `GET /calls/history/{conversationId}` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct HistoryQuery {
    /// At most this many (1–200, default 50).
    pub limit: Option<u32>,
    /// Calls placed before this: an RFC 3339 time, or a call id.
    pub before: Option<String>,
}

/// A list of calls.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CallList {
    /// The calls, newest first.
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<Call>,
}

/// One call (participants only).
#[utoipa::path(get, path = "/api/v1/calls/{id}", tag = "calls", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = Object), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Call>, ApiError> {
    let id = parse_id(&id, "call", CallId::parse)?;
    Ok(Json(state.calls.call_for(who.user_id, id).await?))
}

/// A conversation's calls, newest first (members).
#[utoipa::path(get, path = "/api/v1/calls/history/{conversationId}", tag = "calls", security(("bearer" = [])),
    params(("conversationId" = String, Path), HistoryQuery), responses((status = 200, body = CallList), (status = 404, body = super::error::ErrorBody)))]
pub async fn history(
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    Path(id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<CallList>, ApiError> {
    let conversation = parse_id(&id, "conversation", ConversationId::parse)?;
    let before = match q.before.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => match chrono::DateTime::parse_from_rfc3339(raw) {
            Ok(t) => Some(t.with_timezone(&chrono::Utc)),
            Err(_) => {
                let call = parse_id(raw, "call", CallId::parse)?;
                Some(state.calls.call_for(who.user_id, call).await?.created_at)
            }
        },
    };
    let data = state.calls.history(who.user_id, conversation, before, q.limit.unwrap_or(50)).await?;
    Ok(Json(CallList { data }))
}

/// ICE servers for the caller, with TURN credentials minted for them.
#[utoipa::path(get, path = "/api/v1/ice-servers", tag = "calls", security(("bearer" = [])), responses((status = 200, body = Object)))]
pub async fn ice_servers(State(state): State<AppState>, AuthUser(who): AuthUser) -> Json<IceConfig> {
    Json(state.ice.for_user(who.user_id))
}
