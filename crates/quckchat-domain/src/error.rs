//! The domain's errors: what a caller did wrong, and what went wrong below it.

use thiserror::Error;

/// A failure of the store port. Backend details are kept for the log, never shown to
/// clients.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The row asked for does not exist.
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was broken (a username taken, a duplicate key).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The backend failed (connection lost, I/O, a bug in a query).
    #[error("store backend failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// Wraps any backend error.
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(e))
    }
}

/// Why a domain operation was refused or failed. Each boundary (HTTP, socket ack)
/// converts this once into its own shape.
#[derive(Debug, Error)]
pub enum DomainError {
    /// The input is malformed or breaks a rule (too long, empty, wrong kind).
    #[error("{0}")]
    InvalidInput(String),
    /// The thing does not exist, or the caller may not know that it does.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The caller is known but not allowed to do this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The request conflicts with the current state (a taken username).
    #[error("{0}")]
    Conflict(String),
    /// The caller is going too fast.
    #[error("rate limited")]
    RateLimited,
    /// Something below failed; the details are logged, not shown.
    #[error("internal error")]
    Store(#[from] StoreError),
}
