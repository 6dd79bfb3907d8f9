//! The realtime port over Socket.IO rooms. Every audience maps to rooms, so that the
//! adapter (local alone, Redis in a fleet) reaches sockets wherever they are connected:
//! `conv:{id}` holds the sockets of a conversation's members, `user:{id}` all of a
//! user's sockets, `session:{id}` the sockets opened with one login, `dev:{sid}` one
//! socket. When the other instances are out of reach (Redis down), each operation falls
//! back to this instance's own sockets, so local delivery never stops.

use async_trait::async_trait;
use quckchat_domain::events::{Channel, ServerEvent};
use quckchat_domain::realtime::{Audience, Realtime};
use quckchat_domain::{ConversationId, SessionId, UserId};
use serde_json::value::RawValue;
use socketioxide::adapter::Adapter;
use socketioxide::operators::BroadcastOperators;
use socketioxide::{BroadcastError, SocketIo};

use super::{conversation_room, device_room, session_room, user_room};
use crate::metrics::Metrics;

/// Delivers domain events through socketioxide.
pub struct SocketIoRealtime<A: Adapter> {
    io: SocketIo<A>,
    metrics: Metrics,
}

/// `{callId, from, <field>: <payload>}` with the payload written as the sender sent it.
fn signal_body(
    call_id: impl std::fmt::Display,
    from: impl std::fmt::Display,
    field: &str,
    payload: &str,
) -> Option<Box<RawValue>> {
    let payload = RawValue::from_string(payload.to_string()).ok()?;
    RawValue::from_string(format!("{{\"callId\":\"{call_id}\",\"from\":\"{from}\",\"{field}\":{payload}}}")).ok()
}

impl<A: Adapter> SocketIoRealtime<A> {
    /// Wraps the Socket.IO server.
    pub fn new(io: SocketIo<A>, metrics: Metrics) -> Self {
        Self { io, metrics }
    }

    fn record(&self, event: &'static str, result: Result<(), BroadcastError>) {
        match result {
            Ok(()) => {}
            Err(BroadcastError::Socket(errors)) => {
                // A socket whose buffer is full misses this event; the client sees the gap
                // by `seq` on the next message, or catches up after reconnecting.
                tracing::warn!(event, sockets = errors.len(), "event not queued for some sockets");
                self.metrics.broadcast_failed(event, errors.len());
            }
            Err(e) => {
                tracing::error!(event, error = %e, "broadcast failed");
                self.metrics.broadcast_failed(event, 1);
            }
        }
    }

    /// Emits `event` through `ns` (every instance, or `.local()`) to the audience.
    async fn emit(&self, ns: BroadcastOperators<A>, to: &Audience, event: &ServerEvent) -> Result<(), BroadcastError> {
        let ops = match to.clone() {
            Audience::Conversation(c) => ns.to(conversation_room(c)),
            Audience::ConversationExcept(c, u) => ns.to(conversation_room(c)).except(user_room(u)),
            Audience::User(u) => ns.to(user_room(u)),
            Audience::Users(users) if users.is_empty() => return Ok(()),
            Audience::Users(users) => ns.to(users.into_iter().map(user_room).collect::<Vec<_>>()),
            Audience::Device(d) => ns.to(device_room(&d)),
            Audience::UserExceptDevice(u, d) => ns.to(user_room(u)).except(device_room(&d)),
        };
        let name = event.name();
        match event.signal() {
            // A relayed SDP or candidate goes out as the sender wrote it.
            Some((call_id, from, field, payload)) => match signal_body(call_id, from, field, payload) {
                Some(body) => ops.emit(name, &body).await,
                None => {
                    tracing::error!(event = name, "a relayed signal could not be framed");
                    Ok(())
                }
            },
            None => ops.emit(name, event).await,
        }
    }
}

#[async_trait]
impl<A: Adapter> Realtime for SocketIoRealtime<A> {
    async fn publish(&self, to: Audience, event: ServerEvent) {
        let namespace = match event.channel() {
            Channel::Chat => super::chat::NAMESPACE,
            Channel::Calls => super::webrtc::NAMESPACE,
        };
        let Some(ns) = self.io.of(namespace) else { return };
        let name = event.name();
        let result = match self.emit(ns.clone(), &to, &event).await {
            // The other instances are out of reach: the sockets here still get the event;
            // the others reconnect (or Redis returns) and catch up by `seq`.
            Err(BroadcastError::Adapter(e)) => {
                tracing::warn!(event = name, error = %e, "cross-instance delivery failed; delivering locally");
                self.metrics.broadcast_failed(name, 1);
                self.emit(ns.local(), &to, &event).await
            }
            other => other,
        };
        self.record(name, result);
    }

    async fn join_conversation(&self, user: UserId, conversation: ConversationId) {
        let Some(chat) = self.io.of(super::chat::NAMESPACE) else { return };
        let result = match chat.clone().to(user_room(user)).join(conversation_room(conversation)).await {
            Err(e) => {
                tracing::warn!(%user, %conversation, error = %e, "cross-instance join failed; joining local sockets");
                chat.local().to(user_room(user)).join(conversation_room(conversation)).await
            }
            ok => ok,
        };
        if let Err(e) = result {
            tracing::error!(%user, %conversation, error = %e, "could not join sockets to a conversation");
        }
    }

    async fn leave_conversation(&self, user: UserId, conversation: ConversationId) {
        let Some(chat) = self.io.of(super::chat::NAMESPACE) else { return };
        let result = match chat.clone().to(user_room(user)).leave(conversation_room(conversation)).await {
            Err(e) => {
                tracing::warn!(%user, %conversation, error = %e, "cross-instance leave failed; removing local sockets");
                chat.local().to(user_room(user)).leave(conversation_room(conversation)).await
            }
            ok => ok,
        };
        if let Err(e) = result {
            tracing::error!(%user, %conversation, error = %e, "could not remove sockets from a conversation");
        }
    }

    async fn disconnect_session(&self, session: SessionId) {
        for ns in self.io.nsps() {
            if let Err(e) = ns.clone().to(session_room(session)).disconnect().await {
                tracing::warn!(%session, error = %e, "cross-instance disconnect failed; disconnecting local sockets");
                if let Err(e) = ns.local().to(session_room(session)).disconnect().await {
                    tracing::warn!(%session, error = %e, "could not disconnect every socket of a session");
                }
            }
        }
    }
}
