//! The realtime port over Socket.IO rooms. Every audience maps to rooms, so that the
//! adapter (local now, Redis in a fleet) reaches sockets wherever they are connected:
//! `conv:{id}` holds the sockets of a conversation's members, `user:{id}` all of a
//! user's sockets, `session:{id}` the sockets opened with one login.

use async_trait::async_trait;
use quckchat_domain::events::{Channel, ServerEvent};
use quckchat_domain::realtime::{Audience, Realtime};
use serde_json::value::RawValue;
use quckchat_domain::{ConversationId, SessionId, UserId};
use socketioxide::adapter::Adapter;
use socketioxide::{BroadcastError, SocketIo};

use super::{conversation_room, device_room, session_room, user_room};
use crate::metrics::Metrics;

/// Delivers domain events through socketioxide.
pub struct SocketIoRealtime<A: Adapter> {
    io: SocketIo<A>,
    metrics: Metrics,
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
        let ops = match to {
            Audience::Conversation(c) => ns.to(conversation_room(c)),
            Audience::ConversationExcept(c, u) => ns.to(conversation_room(c)).except(user_room(u)),
            Audience::User(u) => ns.to(user_room(u)),
            Audience::Users(users) => {
                if users.is_empty() {
                    return;
                }
                ns.to(users.into_iter().map(user_room).collect::<Vec<_>>())
            }
            Audience::Device(d) => ns.to(device_room(&d)),
            Audience::UserExceptDevice(u, d) => ns.to(user_room(u)).except(device_room(&d)),
        };
        let result = match event.signal() {
            // A relayed SDP or candidate goes out exactly as the sender wrote it.
            Some((call_id, from, field, payload)) => match RawValue::from_string(payload.to_string()) {
                Ok(raw) => {
                    let mut body = serde_json::Map::new();
                    body.insert("callId".into(), serde_json::json!(call_id));
                    body.insert("from".into(), serde_json::json!(from));
                    let mut text = serde_json::to_string(&body).unwrap_or_else(|_| "{}".into());
                    text.pop();
                    text.push_str(&format!(",\"{field}\":{raw}}}"));
                    match RawValue::from_string(text) {
                        Ok(whole) => ops.emit(name, &whole).await,
                        Err(e) => {
                            tracing::error!(error = %e, "could not frame a relayed signal");
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "a stored signal payload is not JSON");
                    return;
                }
            },
            None => ops.emit(name, &event).await,
        };
        self.record(name, result);
    }

    async fn join_conversation(&self, user: UserId, conversation: ConversationId) {
        if let Some(chat) = self.io.of(super::chat::NAMESPACE)
            && let Err(e) = chat.to(user_room(user)).join(conversation_room(conversation)).await
        {
            tracing::error!(%user, %conversation, error = %e, "could not join sockets to a conversation");
        }
    }

    async fn leave_conversation(&self, user: UserId, conversation: ConversationId) {
        if let Some(chat) = self.io.of(super::chat::NAMESPACE)
            && let Err(e) = chat.to(user_room(user)).leave(conversation_room(conversation)).await
        {
            tracing::error!(%user, %conversation, error = %e, "could not remove sockets from a conversation");
        }
    }

    async fn disconnect_session(&self, session: SessionId) {
        for ns in self.io.nsps() {
            if let Err(e) = ns.to(session_room(session)).disconnect().await {
                tracing::warn!(%session, error = %e, "could not disconnect every socket of a session");
            }
        }
    }
}
