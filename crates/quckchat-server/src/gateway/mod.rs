//! The Socket.IO gateway: the handshake, the `/chat` namespace, and the realtime port
//! implementation. Events become typed commands here and nowhere else.

pub mod ack;
pub mod chat;
pub mod dispatch;
pub mod drain;
mod handshake;
pub mod realtime;
pub mod session;
pub mod webrtc;

use std::fmt;
use std::sync::{Arc, Weak};

use quckchat_domain::realtime::{Device, DeviceId};
use quckchat_domain::{ConversationId, SessionId, UserId};
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Event, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide_core::adapter::DefinedAdapter;

use crate::state::AppState;
use session::{PresenceGuard, Queued, SocketCtx};

/// The room of every socket of a user.
pub fn user_room(user: UserId) -> String {
    format!("user:{user}")
}

/// The room of every socket opened with one session.
pub fn session_room(session: SessionId) -> String {
    format!("session:{session}")
}

/// The room of one socket (so one socket can be addressed through any adapter).
pub fn device_room(device: &DeviceId) -> String {
    format!("dev:{device}")
}

/// The room of a conversation's members' sockets.
pub fn conversation_room(conversation: ConversationId) -> String {
    format!("conv:{conversation}")
}

/// Why a handshake was refused; its text is the CONNECT_ERROR message.
#[derive(Debug)]
enum HandshakeError {
    Unauthorized,
    TooManySockets,
    Unavailable,
}

impl From<handshake::Refused> for HandshakeError {
    fn from(r: handshake::Refused) -> Self {
        match r {
            handshake::Refused::Unauthorized => Self::Unauthorized,
            handshake::Refused::TooManySockets => Self::TooManySockets,
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unauthorized => "unauthorized",
            Self::TooManySockets => "too many connections for this user",
            Self::Unavailable => "internal error",
        })
    }
}

/// Registers the namespaces on the Socket.IO server.
pub fn register<A: Adapter + DefinedAdapter>(io: &SocketIo<A>, state: &Arc<AppState>) -> Vec<A::InitRes> {
    // Handlers hold the state weakly: the state holds the Socket.IO server (through the
    // realtime port), and a strong reference back would keep both alive forever.
    let weak = Arc::downgrade(state);
    let on_connect = {
        let weak = weak.clone();
        move |socket: SocketRef<A>| chat_connected(weak.clone(), socket)
    };
    let handshake = {
        let weak = weak.clone();
        move |socket: SocketRef<A>, TryData(auth): TryData<Value>| chat_handshake(weak.clone(), socket, auth)
    };
    let mut inits = vec![io.ns(chat::NAMESPACE, on_connect.with(handshake))];

    // socket.io-client 2.x (Engine.IO v3) always joins the root namespace first, with the
    // token it put in the query. It is authenticated like the others and carries no events.
    let root = {
        let weak = weak.clone();
        move |socket: SocketRef<A>, TryData(auth): TryData<Value>| {
            let weak = weak.clone();
            async move {
                let state = weak.upgrade().ok_or(HandshakeError::Unavailable)?;
                handshake::authenticate(&state, &socket, &auth, "/").await.map(|_| ()).map_err(HandshakeError::from)
            }
        }
    };
    inits.push(io.ns("/", (async |_: SocketRef<A>| {}).with(root)));

    let handshake =
        move |socket: SocketRef<A>, TryData(auth): TryData<Value>| webrtc_handshake(weak.clone(), socket, auth);
    inits.push(io.ns(webrtc::NAMESPACE, (async |_: SocketRef<A>| {}).with(handshake)));
    inits
}

/// Authenticates a `/webrtc` socket, joins its user's and its own rooms, counts the
/// device and installs the handlers, all before the CONNECT reply.
async fn webrtc_handshake<A: Adapter>(
    weak: Weak<AppState>,
    socket: SocketRef<A>,
    auth: Result<Value, socketioxide::ParserError>,
) -> Result<(), HandshakeError> {
    let state = weak.upgrade().ok_or(HandshakeError::Unavailable)?;
    let who = handshake::authenticate(&state, &socket, &auth, webrtc::NAMESPACE).await.map_err(HandshakeError::from)?;
    let device = Device { user: who.user_id, id: DeviceId(socket.id.to_string()) };
    socket.join(device_room(&device.id));
    // Counted before the CONNECT reply, so no event of this device can come first; the
    // guard undoes it however the socket ends.
    state.calls.device_connected(&device).await.map_err(|e| {
        tracing::error!(user = %who.user_id, error = %e, "could not count a call device");
        HandshakeError::Unavailable
    })?;
    if let Some(ctx) = socket.extensions.get::<Arc<SocketCtx>>() {
        // Weak, like the handlers: a socket must not keep the services alive.
        let calls = Arc::downgrade(&state.calls);
        ctx.hold_presence(PresenceGuard::new(state.metrics.clone(), webrtc::NAMESPACE, async move {
            if let Some(calls) = calls.upgrade() {
                calls.device_gone(&device).await;
            }
        }));
    }
    let on_event = move |s: SocketRef<A>, event: Event, data: TryData<Value>, ack: AckSender<A>, queued: Queued| {
        webrtc::on_event(weak.clone(), s, event, data, ack, queued)
    };
    socket.on_fallback(on_event);
    socket.on_disconnect(|s: SocketRef<A>| async move {
        if let Some(ctx) = s.extensions.get::<Arc<SocketCtx>>() {
            ctx.release_presence();
        }
    });
    Ok(())
}

/// Authenticates, joins the user's conversation rooms and installs the event handlers,
/// all before the CONNECT reply, so that a connected socket already receives its
/// conversations' events and no early event finds no handler.
async fn chat_handshake<A: Adapter>(
    weak: Weak<AppState>,
    socket: SocketRef<A>,
    auth: Result<Value, socketioxide::ParserError>,
) -> Result<(), HandshakeError> {
    let state = weak.upgrade().ok_or(HandshakeError::Unavailable)?;
    let who = handshake::authenticate(&state, &socket, &auth, chat::NAMESPACE).await.map_err(HandshakeError::from)?;
    let conversations = state.chat.conversation_ids(who.user_id).await.map_err(|e| {
        tracing::error!(error = %e, "handshake: could not list conversations");
        HandshakeError::Unavailable
    })?;
    socket.join(conversations.into_iter().map(conversation_room).collect::<Vec<_>>());

    let on_event = move |s: SocketRef<A>, event: Event, data: TryData<Value>, ack: AckSender<A>, queued: Queued| {
        chat::on_event(weak.clone(), s, event, data, ack, queued)
    };
    socket.on_fallback(on_event);
    socket.on_disconnect(|s: SocketRef<A>| async move {
        if let Some(ctx) = s.extensions.get::<Arc<SocketCtx>>() {
            ctx.release_presence();
        }
    });
    Ok(())
}

/// After the CONNECT reply: count the socket for presence (co-members learn the user is
/// online on its first socket anywhere).
async fn chat_connected<A: Adapter>(weak: Weak<AppState>, socket: SocketRef<A>) {
    let Some(state) = weak.upgrade() else { return };
    let Some(ctx) = socket.extensions.get::<Arc<SocketCtx>>() else { return };
    match state.chat.socket_connected(ctx.user).await {
        Ok(()) => {
            // Weak, like the handlers: a socket must not keep the services alive.
            let (chat, user) = (Arc::downgrade(&state.chat), ctx.user);
            ctx.hold_presence(PresenceGuard::new(state.metrics.clone(), chat::NAMESPACE, async move {
                let Some(chat) = chat.upgrade() else { return };
                if let Err(e) = chat.socket_disconnected(user).await {
                    tracing::warn!(%user, error = %e, "could not record a socket leaving");
                }
            }))
        }
        Err(e) => tracing::error!(user = %ctx.user, error = %e, "could not record presence"),
    }
}
