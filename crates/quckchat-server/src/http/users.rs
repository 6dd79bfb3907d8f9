//! `/users`: one's profile, other users, search.

use axum::extract::{Path, State};
use quckchat_domain::UserId;
use quckchat_domain::model::{ProfilePatch, User};
use quckchat_domain::values::{BoundedText, DisplayName};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, Json, Query, parse_id};
use super::extract::AuthUser;
use crate::state::AppState;

/// `PUT /users/me` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileBody {
    /// 1–100 characters.
    pub display_name: Option<String>,
    /// At most 500 characters.
    pub bio: Option<String>,
    /// An URL, at most 2048 characters.
    pub avatar: Option<String>,
}

/// `GET /users/search` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct SearchQuery {
    /// Part of a username or display name.
    pub q: Option<String>,
    /// At most this many (1–100, default 20).
    pub limit: Option<u32>,
}

/// A list of users.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserList {
    /// The users.
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<User>,
}

/// The caller's own profile.
#[utoipa::path(get, path = "/api/v1/users/me", tag = "users", security(("bearer" = [])), responses((status = 200, body = Object)))]
pub async fn me(State(state): State<AppState>, AuthUser(who): AuthUser) -> Result<Json<User>, ApiError> {
    Ok(Json(state.chat.user(who.user_id, who.user_id).await?))
}

/// Changes the caller's profile.
#[utoipa::path(put, path = "/api/v1/users/me", tag = "users", security(("bearer" = [])), request_body = ProfileBody, responses((status = 200, body = Object)))]
pub async fn update_me(
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    Json(body): Json<ProfileBody>,
) -> Result<Json<User>, ApiError> {
    let patch = ProfilePatch {
        display_name: body.display_name.map(DisplayName::parse).transpose()?.map(|d| d.as_str().to_string()),
        bio: body.bio.map(|b| BoundedText::parse(b, 500, "bio")).transpose()?.map(|b| b.as_str().to_string()),
        avatar: body.avatar.map(|a| BoundedText::parse(a, 2048, "avatar")).transpose()?.map(|a| a.as_str().to_string()),
    };
    Ok(Json(state.chat.update_profile(who.user_id, patch).await?))
}

/// Finds users by username or display name.
#[utoipa::path(get, path = "/api/v1/users/search", tag = "users", security(("bearer" = [])), params(SearchQuery), responses((status = 200, body = UserList)))]
pub async fn search(
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    Query(q): Query<SearchQuery>,
) -> Result<Json<UserList>, ApiError> {
    let data = state.chat.search_users(who.user_id, q.q.as_deref().unwrap_or(""), q.limit.unwrap_or(20)).await?;
    Ok(Json(UserList { data }))
}

/// One user. `status` and `lastSeen` are shown only to those who share a conversation.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", security(("bearer" = [])), params(("id" = String, Path)), responses((status = 200, body = Object), (status = 404, body = super::error::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<User>, ApiError> {
    let id = parse_id(&id, "user", UserId::parse)?;
    Ok(Json(state.chat.user(who.user_id, id).await?))
}
