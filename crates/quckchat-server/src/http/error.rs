//! The HTTP boundary's one error type: every failure becomes
//! `{statusCode, message, error, timestamp}` with the matching status (CONTRACT §2).

use axum::extract::FromRequest;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quckchat_domain::DomainError;
use serde::Serialize;

use crate::auth::AuthError;

/// An error answered to an HTTP client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// Seconds for a `Retry-After` header (429 and 503).
    retry_after: Option<u64>,
}

/// The error body (CONTRACT §2).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// The HTTP status again.
    pub status_code: u16,
    /// What went wrong, for people.
    pub message: String,
    /// The status's reason phrase.
    pub error: String,
    /// When (RFC 3339).
    pub timestamp: String,
}

impl ApiError {
    /// An error with a status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), retry_after: None }
    }

    /// With a `Retry-After` header of `seconds` (at least 1).
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// 429 with `Retry-After`.
    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "too many attempts; try again later").retry_after(retry_after_secs)
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "missing, invalid or expired access token")
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            status_code: self.status.as_u16(),
            message: self.message,
            error: self.status.canonical_reason().unwrap_or("Error").to_string(),
            timestamp: quckchat_domain::model::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        response
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::InvalidInput(m) => Self::bad_request(m),
            DomainError::NotFound(what) => Self::not_found(format!("{what} not found")),
            DomainError::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, m),
            DomainError::Conflict(m) => Self::new(StatusCode::CONFLICT, m),
            DomainError::RateLimited => Self::new(StatusCode::TOO_MANY_REQUESTS, "rate limited"),
            DomainError::Store(e) => {
                tracing::error!(error = %e, "store failed");
                Self::internal()
            }
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidInput(m) => Self::bad_request(m),
            AuthError::UsernameTaken => Self::new(StatusCode::CONFLICT, "username is already taken"),
            AuthError::BadCredentials => Self::new(StatusCode::UNAUTHORIZED, "invalid username or password"),
            AuthError::InvalidToken => Self::unauthorized(),
            AuthError::Busy => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "too many logins at once; try again shortly").retry_after(1)
            }
            AuthError::Throttled { retry_after_secs } => Self::too_many_requests(retry_after_secs),
            AuthError::Store(e) => {
                tracing::error!(error = %e, "store failed");
                Self::internal()
            }
            AuthError::Internal(m) => {
                tracing::error!(error = %m, "auth failed");
                Self::internal()
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::BytesRejection(_) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "request body is too large")
            }
            other => Self::bad_request(other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::bad_request(r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::bad_request(r.body_text())
    }
}

/// `Json` whose rejections answer in our error shape.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `Query` whose rejections answer in our error shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

use axum::extract::FromRequestParts;

/// Parses an id from a path segment: 400 when it is not an id at all.
pub fn parse_id<T>(raw: &str, what: &str, parse: impl Fn(&str) -> Option<T>) -> Result<T, ApiError> {
    parse(raw).ok_or_else(|| ApiError::bad_request(format!("`{raw}` is not a valid {what} id")))
}
