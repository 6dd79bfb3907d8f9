//! `/messages`: history (newest first before a message, or ascending after a `seq`),
//! edit and delete. Edits and deletes reach connected members like their socket events.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use quckchat_domain::model::Message;
use quckchat_domain::store::HistoryCursor;
use quckchat_domain::values::MessageContent;
use quckchat_domain::{ConversationId, MessageId};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, Json, Query, parse_id};
use super::extract::AuthUser;
use crate::state::AppState;

/// `GET /messages/conversation/{id}` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct HistoryQuery {
    /// At most this many (1–200, default 50).
    pub limit: Option<u32>,
    /// Messages older than this message id, newest first.
    pub before: Option<String>,
    /// Messages with a greater `seq`, ascending: how a client catches up.
    pub after_seq: Option<i64>,
}

/// A page of messages.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessageList {
    /// The messages.
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<Message>,
}

/// `PUT /messages/{id}` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct EditBody {
    /// The new text (at most 10,000 characters).
    pub content: String,
}

/// A page of a conversation's history.
#[utoipa::path(get, path = "/api/v1/messages/conversation/{conversationId}", tag = "messages", security(("bearer" = [])),
    params(("conversationId" = String, Path), HistoryQuery), responses((status = 200, body = MessageList), (status = 403, body = super::error::ErrorBody)))]
pub async fn history(
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    Path(id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<MessageList>, ApiError> {
    let id = parse_id(&id, "conversation", ConversationId::parse)?;
    let cursor = match (q.before.as_deref().filter(|s| !s.is_empty()), q.after_seq) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("use either `before` or `afterSeq`, not both")),
        (Some(before), None) => HistoryCursor::Before(parse_id(before, "message", MessageId::parse)?),
        (None, Some(seq)) if seq < 0 => return Err(ApiError::bad_request("`afterSeq` must not be negative")),
        (None, Some(seq)) => HistoryCursor::AfterSeq(seq),
        (None, None) => HistoryCursor::Latest,
    };
    let data = state.chat.history(who.user_id, id, cursor, q.limit.unwrap_or(50)).await?;
    Ok(Json(MessageList { data }))
}

/// Edits one's own message.
#[utoipa::path(put, path = "/api/v1/messages/{id}", tag = "messages", security(("bearer" = [])), params(("id" = String, Path)), request_body = EditBody,
    responses((status = 200, body = Object), (status = 403, body = super::error::ErrorBody)))]
pub async fn edit(
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    Path(id): Path<String>,
    Json(body): Json<EditBody>,
) -> Result<Json<Message>, ApiError> {
    let id = parse_id(&id, "message", MessageId::parse)?;
    let content = MessageContent::parse(body.content, true)?;
    Ok(Json(state.chat.edit_message(who.user_id, id, content).await?))
}

/// Deletes a message (the sender, or a group admin); it keeps its `seq`.
#[utoipa::path(delete, path = "/api/v1/messages/{id}", tag = "messages", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = super::error::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id, "message", MessageId::parse)?;
    state.chat.delete_message(who.user_id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
