//! Extractors shared by the REST handlers.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::error::ApiError;
use crate::auth::{Principal, strip_bearer};
use crate::state::AppState;

/// The authenticated caller: a valid access token whose session still stands.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser(pub Principal);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header =
            parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or_else(ApiError::unauthorized)?;
        let token = strip_bearer(header).ok_or_else(ApiError::unauthorized)?;
        Ok(Self(state.auth.verify(token).await?))
    }
}
