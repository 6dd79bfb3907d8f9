//! `/auth`: register, login, refresh, logout.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use super::error::{ApiError, Json};
use super::extract::{AuthUser, ClientAddr};
use crate::auth::AuthResponse;
use crate::state::AppState;

/// `POST /auth/register` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisterBody {
    /// 3–32 ASCII letters, digits and `_` (`^[a-zA-Z0-9_]+$`); unique case-insensitively.
    pub username: String,
    /// 8–128 characters.
    pub password: String,
    /// Defaults to the username.
    pub display_name: Option<String>,
}

/// `POST /auth/login` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct LoginBody {
    /// The username.
    pub username: String,
    /// The password.
    pub password: String,
}

/// `POST /auth/refresh` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefreshBody {
    /// The refresh token from the last `AuthResponse`.
    pub refresh_token: String,
}

/// Creates an account and logs it in.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = RegisterBody,
    responses((status = 201, body = AuthResponse), (status = 400, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody),
        (status = 429, description = "too many attempts from this address (Retry-After)", body = super::error::ErrorBody),
        (status = 503, description = "every hashing thread busy (Retry-After)", body = super::error::ErrorBody)))]
pub async fn register(
    State(state): State<AppState>,
    ClientAddr(from): ClientAddr,
    Json(body): Json<RegisterBody>,
) -> Result<(StatusCode, Json<AuthResponse>), ApiError> {
    let response = state.auth.register(from, body.username, body.password, body.display_name).await?;
    Ok((StatusCode::CREATED, Json(response)))
}

/// Logs in.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginBody,
    responses((status = 200, body = AuthResponse), (status = 401, body = super::error::ErrorBody),
        (status = 429, description = "too many attempts from this address or for this username (Retry-After)", body = super::error::ErrorBody),
        (status = 503, description = "every hashing thread busy (Retry-After)", body = super::error::ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    ClientAddr(from): ClientAddr,
    Json(body): Json<LoginBody>,
) -> Result<Json<AuthResponse>, ApiError> {
    Ok(Json(state.auth.login(from, &body.username, body.password).await?))
}

/// Exchanges a refresh token for a new pair; the old one stops working.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshBody,
    responses((status = 200, body = AuthResponse), (status = 401, body = super::error::ErrorBody)))]
pub async fn refresh(
    State(state): State<AppState>,
    ClientAddr(from): ClientAddr,
    Json(body): Json<RefreshBody>,
) -> Result<Json<AuthResponse>, ApiError> {
    Ok(Json(state.auth.refresh(from, &body.refresh_token).await?))
}

/// Ends the session and disconnects its sockets.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = super::error::ErrorBody)))]
pub async fn logout(State(state): State<AppState>, AuthUser(who): AuthUser) -> Result<StatusCode, ApiError> {
    state.auth.logout(who).await?;
    Ok(StatusCode::NO_CONTENT)
}
