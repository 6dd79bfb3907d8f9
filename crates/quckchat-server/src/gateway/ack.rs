//! The socket boundary's one error type: every refused event is acked as
//! `{success: false, error: {code, message}}` (CONTRACT §3).

use quckchat_domain::DomainError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// Why an event was refused, as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckError {
    /// Malformed, wrong-typed or out-of-range input, or an unknown event.
    InvalidPayload(String),
    /// Unknown conversation, message or user.
    NotFound(String),
    /// Not a member, not the sender, not an admin.
    Forbidden(String),
    /// Too fast.
    RateLimited,
    /// Conflicts with the current state.
    Conflict(String),
    /// Something failed on our side; details are in the log.
    Internal,
}

impl AckError {
    /// The contract's error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidPayload(_) => "invalid_payload",
            Self::NotFound(_) => "not_found",
            Self::Forbidden(_) => "forbidden",
            Self::RateLimited => "rate_limited",
            Self::Conflict(_) => "conflict",
            Self::Internal => "internal",
        }
    }

    fn message(&self) -> String {
        match self {
            Self::InvalidPayload(m) | Self::NotFound(m) | Self::Forbidden(m) | Self::Conflict(m) => m.clone(),
            Self::RateLimited => "rate limited: slow down".into(),
            Self::Internal => "internal error".into(),
        }
    }

    /// The ack body.
    pub fn to_ack(&self) -> Value {
        json!({ "success": false, "error": { "code": self.code(), "message": self.message() } })
    }
}

impl From<DomainError> for AckError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::InvalidInput(m) => Self::InvalidPayload(m),
            DomainError::NotFound(what) => Self::NotFound(format!("{what} not found")),
            DomainError::Forbidden(m) => Self::Forbidden(m.into()),
            DomainError::Conflict(m) => Self::Conflict(m),
            DomainError::RateLimited => Self::RateLimited,
            DomainError::Store(e) => {
                tracing::error!(error = %e, "store failed while handling an event");
                Self::Internal
            }
        }
    }
}

/// Reads an event's payload object into its typed form; anything else is `invalid_payload`.
pub fn payload<T: DeserializeOwned>(data: Value) -> Result<T, AckError> {
    if !data.is_object() {
        return Err(AckError::InvalidPayload("the payload must be an object".into()));
    }
    serde_json::from_value(data).map_err(|e| AckError::InvalidPayload(format!("invalid payload: {e}")))
}

/// An ack body already serialized: what every handler answers, so that the hot path can
/// write its ack straight from typed records (see [`ok_raw`]).
pub type AckBody = Box<RawValue>;

/// A successful ack serialized from a typed body that already carries `success: true`.
pub fn ok_raw(body: &impl Serialize) -> AckBody {
    serde_json::value::to_raw_value(body).unwrap_or_else(|_| raw(json!({ "success": true })))
}

/// A JSON value as an ack body.
pub fn raw(value: Value) -> AckBody {
    // Serializing a `Value` cannot fail.
    serde_json::value::to_raw_value(&value).unwrap_or_default()
}

/// Parses an id field; a malformed one is `invalid_payload`, naming the field.
pub fn id<T>(raw: &str, what: &str, parse: impl Fn(&str) -> Option<T>) -> Result<T, AckError> {
    parse(raw).ok_or_else(|| AckError::InvalidPayload(format!("`{what}` is not a valid id")))
}

/// A successful ack: `{success: true, ...fields}`.
pub fn ok_ack(fields: impl Serialize) -> AckBody {
    let mut body = serde_json::to_value(fields).unwrap_or(Value::Null);
    raw(match body.as_object_mut() {
        Some(map) => {
            map.insert("success".into(), Value::Bool(true));
            body
        }
        None => json!({ "success": true }),
    })
}
