//! The handshake: every namespace authenticates its sockets here (CONTRACT §3). The
//! token comes from `auth.token` (with or without `Bearer `), the `?token=` query
//! (socket.io-client 2.x cannot send `auth`), or the `Authorization` header. Anything
//! else is refused with a CONNECT_ERROR whose message is `unauthorized`.

use std::fmt;
use std::sync::Arc;

use axum::http::header::AUTHORIZATION;
use serde_json::Value;
use socketioxide::ParserError;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;

use super::session::SocketCtx;
use super::{session_room, user_room};
use crate::auth::{Principal, strip_bearer};
use crate::state::AppState;

/// Why a handshake is refused; the text is the CONNECT_ERROR message.
#[derive(Debug)]
pub enum Refused {
    /// No valid token (the contract's one refusal for that).
    Unauthorized,
    /// The user already holds `MAX_SOCKETS_PER_USER` sockets here.
    TooManySockets,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unauthorized => "unauthorized",
            Self::TooManySockets => "too many connections for this user",
        })
    }
}

/// Finds the token a client presented, in the contract's order of precedence.
fn presented_token<A: Adapter>(socket: &SocketRef<A>, auth: &Result<Value, ParserError>) -> Option<String> {
    if let Ok(auth) = auth
        && let Some(raw) = auth.get("token").and_then(Value::as_str)
    {
        return strip_bearer(raw).map(str::to_string);
    }
    let parts = socket.req_parts();
    if let Some(query) = parts.uri.query()
        && let Some((_, raw)) = url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "token")
    {
        return strip_bearer(&raw).map(str::to_string);
    }
    let header = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    strip_bearer(header).map(str::to_string)
}

/// Verifies the presented token and stores the socket's context, joining the rooms
/// that address it (`user:`, `session:`). Runs before the CONNECT reply, so a socket is
/// never connected without them.
pub async fn authenticate<A: Adapter>(
    state: &AppState,
    socket: &SocketRef<A>,
    auth: &Result<Value, ParserError>,
    namespace: &'static str,
) -> Result<Principal, Refused> {
    let refuse = || {
        state.metrics.handshake_refused(namespace);
        Refused::Unauthorized
    };
    let token = presented_token(socket, auth).ok_or_else(refuse)?;
    let who = state.auth.verify(&token).await.map_err(|e| {
        tracing::debug!(error = %e, namespace, "handshake refused");
        refuse()
    })?;
    let slot = state.sockets.admit(who.user_id).ok_or_else(|| {
        state.metrics.handshake_refused(namespace);
        tracing::info!(user = %who.user_id, namespace, "handshake refused: too many sockets for this user");
        Refused::TooManySockets
    })?;
    socket.extensions.insert(Arc::new(SocketCtx::new(who.user_id, who.session_id, &state.config, slot)));
    socket.join([user_room(who.user_id), session_room(who.session_id)]);
    Ok(who)
}
