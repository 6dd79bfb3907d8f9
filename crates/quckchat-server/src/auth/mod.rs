//! Accounts and sessions: register, login, rotating refresh tokens, logout, and the
//! verification every REST request and socket handshake goes through.

mod password;
pub mod throttle;
mod tokens;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use quckchat_domain::hot::{ChangeFeed, Changed, HotState};
use quckchat_domain::model::{NewUser, Session, User, now};
use quckchat_domain::realtime::Realtime;
use quckchat_domain::store::Store;
use quckchat_domain::values::{DisplayName, Username};
use quckchat_domain::{DomainError, SessionId, StoreError, UserId};
use serde::Serialize;
use thiserror::Error;
use tracing::instrument;

pub use password::PasswordHasher;
use throttle::AuthThrottle;
pub use tokens::{Claims, JwtKeys};

/// Why an auth operation failed.
#[derive(Debug, Error)]
pub enum AuthError {
    /// Malformed input (too short a password, a bad username).
    #[error("{0}")]
    InvalidInput(String),
    /// The username is taken.
    #[error("username is already taken")]
    UsernameTaken,
    /// Wrong username or password.
    #[error("invalid username or password")]
    BadCredentials,
    /// A missing, malformed, expired or revoked token.
    #[error("invalid or expired token")]
    InvalidToken,
    /// Every password hashing thread is busy and the queue is full: try again shortly.
    #[error("too many logins at once")]
    Busy,
    /// Too many attempts from this address or for this username.
    #[error("too many attempts")]
    Throttled {
        /// When another attempt may succeed, seconds.
        retry_after_secs: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Hashing failed or its task died.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<DomainError> for AuthError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::InvalidInput(m) => Self::InvalidInput(m),
            DomainError::Store(s) => Self::Store(s),
            other => Self::Internal(other.to_string()),
        }
    }
}

/// What register, login and refresh answer (CONTRACT §2 `AuthResponse`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthResponse {
    /// A JWT (HS256), `sub` = user id, `sid` = session id.
    pub access_token: String,
    /// Opaque; exchanged once at `/auth/refresh` for a new pair.
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The account.
    #[schema(value_type = Object)]
    pub user: User,
}

/// The verified holder of an access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    /// The user.
    pub user_id: UserId,
    /// The session the token belongs to.
    pub session_id: SessionId,
}

/// How long tokens live.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// Access tokens.
    pub access_ttl: Duration,
    /// Refresh tokens (sessions).
    pub refresh_ttl: Duration,
    /// How long a rotated-away refresh token still answers its successor.
    pub refresh_grace: Duration,
}

/// The accounts service.
pub struct Auth {
    store: Arc<dyn Store>,
    realtime: Arc<dyn Realtime>,
    keys: JwtKeys,
    hasher: PasswordHasher,
    throttle: AuthThrottle,
    access_ttl: Duration,
    refresh_ttl: Duration,
    refresh_grace: Duration,
    /// Valid sessions in memory: every socket handshake and authenticated request checks
    /// one (see `quckchat_domain::hot`).
    hot: Arc<HotState>,
    feed: Arc<dyn ChangeFeed>,
}

impl Auth {
    /// Wires the service.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        realtime: Arc<dyn Realtime>,
        keys: JwtKeys,
        hasher: PasswordHasher,
        throttle: AuthThrottle,
        lifetimes: Lifetimes,
        hot: Arc<HotState>,
        feed: Arc<dyn ChangeFeed>,
    ) -> Self {
        let Lifetimes { access_ttl, refresh_ttl, refresh_grace } = lifetimes;
        Self { store, realtime, keys, hasher, throttle, access_ttl, refresh_ttl, refresh_grace, hot, feed }
    }

    /// Creates an account and logs it in. `from` is the client's address (throttled).
    #[instrument(skip_all)]
    pub async fn register(
        &self,
        from: IpAddr,
        username: String,
        password: String,
        display_name: Option<String>,
    ) -> Result<AuthResponse, AuthError> {
        self.throttle.attempt(from, None)?;
        let username = Username::parse(username)?;
        password::check_rules(&password)?;
        let display_name = match display_name {
            Some(d) => DisplayName::parse(d)?.as_str().to_string(),
            None => username.as_str().to_string(),
        };
        let password_hash = self.hasher.hash(password).await?;
        let user = self
            .store
            .create_user(NewUser {
                id: UserId::new(),
                username: username.as_str().to_string(),
                display_name,
                password_hash,
                created_at: now(),
            })
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => AuthError::UsernameTaken,
                other => other.into(),
            })?;
        self.start_session(user).await
    }

    /// Checks a username and password and starts a session.
    #[instrument(skip_all)]
    pub async fn login(&self, from: IpAddr, username: &str, password: String) -> Result<AuthResponse, AuthError> {
        // No account has a longer name (usernames were always 3 to 32 characters): refuse
        // at once, before it can become a throttle key or cost a hash.
        if username.trim().chars().count() > 32 {
            self.throttle.attempt(from, None)?;
            return Err(AuthError::BadCredentials);
        }
        self.throttle.attempt(from, Some(username))?;
        let credentials = self.store.credentials(username.trim()).await?;
        let Some(credentials) = credentials else {
            // Spend the same time as a real check, so timing does not reveal usernames.
            self.hasher.verify(password, None).await?;
            return Err(AuthError::BadCredentials);
        };
        if !self.hasher.verify(password, Some(credentials.password_hash)).await? {
            return Err(AuthError::BadCredentials);
        }
        self.start_session(credentials.user).await
    }

    async fn start_session(&self, user: User) -> Result<AuthResponse, AuthError> {
        let session_id = SessionId::new();
        let (refresh_token, refresh_hash) = tokens::new_refresh_token(session_id);
        let created_at = now();
        self.store
            .create_session(Session {
                id: session_id,
                user_id: user.id,
                refresh_token_hash: refresh_hash,
                created_at,
                expires_at: created_at
                    + chrono::Duration::from_std(self.refresh_ttl).unwrap_or(chrono::Duration::days(30)),
                revoked_at: None,
                rotated_at: None,
            })
            .await?;
        let access_token = self.keys.issue(user.id, session_id, self.access_ttl)?;
        Ok(AuthResponse { access_token, refresh_token, expires_in: self.access_ttl.as_secs(), user })
    }

    /// Exchanges a refresh token for a new pair; the old refresh token stops working. A
    /// reused (already rotated) token ends the whole session, as it means it leaked,
    /// except within `refresh_grace` of its rotation: then it answers the pair it was
    /// rotated into (a mobile client that fired the same refresh twice stays logged in).
    #[instrument(skip_all)]
    pub async fn refresh(&self, from: IpAddr, refresh_token: &str) -> Result<AuthResponse, AuthError> {
        self.throttle.attempt(from, None)?;
        let (session_id, hash) = tokens::parse_refresh_token(refresh_token).ok_or(AuthError::InvalidToken)?;
        let session = self.store.session(session_id).await?.ok_or(AuthError::InvalidToken)?;
        if session.revoked_at.is_some() || session.expires_at <= Utc::now() {
            return Err(AuthError::InvalidToken);
        }
        let (next_token, next_hash) = self.keys.successor_refresh_token(session_id, refresh_token);
        if !tokens::constant_time_eq(&session.refresh_token_hash, &hash) {
            if self.just_rotated_into(&session, &next_hash) {
                return self.pair(session.user_id, session_id, next_token).await;
            }
            tracing::warn!(session = %session_id, "refresh token reused; ending the session");
            self.logout(Principal { user_id: session.user_id, session_id }).await?;
            return Err(AuthError::InvalidToken);
        }
        let at = now();
        let expires_at = at + chrono::Duration::from_std(self.refresh_ttl).unwrap_or(chrono::Duration::days(30));
        if !self.store.rotate_refresh_token(session_id, &hash, &next_hash, expires_at, at).await? {
            // A concurrent refresh with the same token rotated it first (into the same
            // successor, which is deterministic): answer what it answered.
            let now_session = self.store.session(session_id).await?.ok_or(AuthError::InvalidToken)?;
            if now_session.revoked_at.is_none() && self.just_rotated_into(&now_session, &next_hash) {
                return self.pair(session.user_id, session_id, next_token).await;
            }
            return Err(AuthError::InvalidToken);
        }
        self.pair(session.user_id, session_id, next_token).await
    }

    /// `session`'s current token is `next_hash`'s, and it was rotated within the grace.
    fn just_rotated_into(&self, session: &Session, next_hash: &str) -> bool {
        let grace = chrono::Duration::from_std(self.refresh_grace).unwrap_or_default();
        tokens::constant_time_eq(&session.refresh_token_hash, next_hash)
            && session.rotated_at.is_some_and(|at| Utc::now() - at < grace)
    }

    /// The answer to a refresh: a fresh access token with `refresh_token`.
    async fn pair(&self, user: UserId, session: SessionId, refresh_token: String) -> Result<AuthResponse, AuthError> {
        let user = self.store.user(user).await?.ok_or(AuthError::InvalidToken)?;
        let access_token = self.keys.issue(user.id, session, self.access_ttl)?;
        Ok(AuthResponse { access_token, refresh_token, expires_in: self.access_ttl.as_secs(), user })
    }

    /// Ends a session and disconnects every socket opened with it.
    #[instrument(skip_all, fields(user = %who.user_id, session = %who.session_id))]
    pub async fn logout(&self, who: Principal) -> Result<(), AuthError> {
        self.store.revoke_session(who.session_id, now()).await?;
        self.hot.forget(Changed::Session(who.session_id));
        self.feed.announce(Changed::Session(who.session_id)).await;
        self.realtime.disconnect_session(who.session_id).await;
        Ok(())
    }

    /// Verifies an access token: signature, expiry, and that its session still stands.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let claims = self.keys.verify(token)?;
        let user = match self.hot.session(claims.session_id) {
            Some(user) => user,
            None => {
                let epoch = self.hot.epoch();
                let session = self.store.session(claims.session_id).await?.ok_or(AuthError::InvalidToken)?;
                if session.revoked_at.is_some() {
                    return Err(AuthError::InvalidToken);
                }
                self.hot.fill_session(epoch, session.id, session.user_id);
                session.user_id
            }
        };
        if user != claims.user_id {
            return Err(AuthError::InvalidToken);
        }
        Ok(Principal { user_id: claims.user_id, session_id: claims.session_id })
    }
}

/// The refresh-token parser, for the property tests.
#[cfg(test)]
pub(crate) fn parse_refresh_token_for_tests(raw: &str) -> Option<(SessionId, String)> {
    tokens::parse_refresh_token(raw)
}

/// Takes the token out of `Bearer <jwt>` or a bare `<jwt>`.
pub fn strip_bearer(raw: &str) -> Option<&str> {
    let raw = raw.trim();
    let token = match raw.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case("bearer ") => raw[7..].trim(),
        _ => raw,
    };
    (!token.is_empty()).then_some(token)
}
