//! `/conversations`: create (single conversations are deduplicated), list, read,
//! rename, and manage group members.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use quckchat_domain::chat::CreateConversation;
use quckchat_domain::model::{Conversation, ConversationKind};
use quckchat_domain::values::{BoundedText, DisplayName};
use quckchat_domain::{ConversationId, UserId};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, Json, Query, parse_id};
use super::extract::AuthUser;
use crate::state::AppState;

/// `POST /conversations` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateBody {
    /// `single` or `group`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: ConversationKind,
    /// The other participants' ids.
    pub participants: Vec<String>,
    /// A group's name.
    pub name: Option<String>,
}

/// `PUT /conversations/{id}` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct UpdateBody {
    /// New name.
    pub name: Option<String>,
    /// New avatar URL.
    pub avatar: Option<String>,
}

/// `POST /conversations/{id}/members` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddMembersBody {
    /// Users to add.
    pub user_ids: Vec<String>,
}

/// `GET /conversations` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// At most this many (1–200, default 50).
    pub limit: Option<u32>,
    /// Only conversations whose last activity is older: an RFC 3339 time, or the id of the
    /// last conversation of the previous page.
    pub before: Option<String>,
}

/// A list of conversations.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationList {
    /// The conversations.
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<Conversation>,
}

fn parse_users(ids: &[String]) -> Result<Vec<UserId>, ApiError> {
    ids.iter().map(|raw| parse_id(raw, "user", UserId::parse)).collect()
}

/// Creates a conversation; for a pair that already has a single one, answers 200 with it.
#[utoipa::path(post, path = "/api/v1/conversations", tag = "conversations", security(("bearer" = [])), request_body = CreateBody,
    responses((status = 201, body = Object), (status = 200, body = Object), (status = 400, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    Json(body): Json<CreateBody>,
) -> Result<(StatusCode, Json<Conversation>), ApiError> {
    let cmd = CreateConversation {
        kind: body.kind,
        participants: parse_users(&body.participants)?,
        name: body.name.map(DisplayName::parse).transpose()?,
    };
    let created = state.chat.create_conversation(who.user_id, cmd).await?;
    let status = if created.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(created.conversation)))
}

/// The caller's conversations, most recent activity first.
#[utoipa::path(get, path = "/api/v1/conversations", tag = "conversations", security(("bearer" = [])), params(ListQuery), responses((status = 200, body = ConversationList)))]
pub async fn list(
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    Query(q): Query<ListQuery>,
) -> Result<Json<ConversationList>, ApiError> {
    let before = match q.before.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => match chrono::DateTime::parse_from_rfc3339(raw) {
            Ok(t) => Some(t.with_timezone(&chrono::Utc)),
            Err(_) => {
                let id = parse_id(raw, "conversation", ConversationId::parse)?;
                Some(state.chat.activity_of(who.user_id, id).await?)
            }
        },
    };
    let data = state.chat.conversations(who.user_id, before, q.limit.unwrap_or(50)).await?;
    Ok(Json(ConversationList { data }))
}

/// One conversation; 404 for anyone not in it.
#[utoipa::path(get, path = "/api/v1/conversations/{id}", tag = "conversations", security(("bearer" = [])), params(("id" = String, Path)), responses((status = 200, body = Object), (status = 404, body = super::error::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Conversation>, ApiError> {
    let id = parse_id(&id, "conversation", ConversationId::parse)?;
    Ok(Json(state.chat.conversation(who.user_id, id).await?))
}

/// Renames or re-pictures a group (admins).
#[utoipa::path(put, path = "/api/v1/conversations/{id}", tag = "conversations", security(("bearer" = [])), params(("id" = String, Path)), request_body = UpdateBody, responses((status = 200, body = Object), (status = 403, body = super::error::ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    Path(id): Path<String>,
    Json(body): Json<UpdateBody>,
) -> Result<Json<Conversation>, ApiError> {
    let id = parse_id(&id, "conversation", ConversationId::parse)?;
    let name = body.name.map(DisplayName::parse).transpose()?;
    let avatar = body.avatar.map(|a| BoundedText::parse(a, 2048, "avatar")).transpose()?;
    Ok(Json(state.chat.update_conversation(who.user_id, id, name, avatar).await?))
}

/// Adds members to a group (admins).
#[utoipa::path(post, path = "/api/v1/conversations/{id}/members", tag = "conversations", security(("bearer" = [])), params(("id" = String, Path)), request_body = AddMembersBody, responses((status = 200, body = Object), (status = 403, body = super::error::ErrorBody)))]
pub async fn add_members(
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    Path(id): Path<String>,
    Json(body): Json<AddMembersBody>,
) -> Result<Json<Conversation>, ApiError> {
    let id = parse_id(&id, "conversation", ConversationId::parse)?;
    let users = parse_users(&body.user_ids)?;
    Ok(Json(state.chat.add_members(who.user_id, id, users).await?))
}

/// Removes a member (admins), or leaves (the member itself).
#[utoipa::path(delete, path = "/api/v1/conversations/{id}/members/{userId}", tag = "conversations", security(("bearer" = [])), params(("id" = String, Path), ("userId" = String, Path)), responses((status = 204), (status = 403, body = super::error::ErrorBody)))]
pub async fn remove_member(
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    Path((id, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id, "conversation", ConversationId::parse)?;
    let user = parse_id(&user, "user", UserId::parse)?;
    state.chat.remove_member(who.user_id, id, user).await?;
    Ok(StatusCode::NO_CONTENT)
}
