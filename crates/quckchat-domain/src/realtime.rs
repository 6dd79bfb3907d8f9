//! The realtime port: how the domain reaches connected clients. The server crate
//! implements it over Socket.IO rooms (and, with several instances, over the Redis
//! adapter); the domain only names audiences.

use async_trait::async_trait;

use crate::events::ServerEvent;
use crate::ids::{ConversationId, SessionId, UserId};

/// Who should get an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Every socket of every member of a conversation (on `/chat`).
    Conversation(ConversationId),
    /// Every member's sockets but those of one user (typing indicators).
    ConversationExcept(ConversationId, UserId),
    /// Every socket of one user.
    User(UserId),
    /// Every socket of each of these users (each socket once).
    Users(Vec<UserId>),
    /// One socket.
    Device(DeviceId),
    /// Every socket of a user but one.
    UserExceptDevice(UserId, DeviceId),
}

/// One connected socket, as the domain sees it: opaque, unique while it lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceId(pub String);

impl std::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user's connected socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Device {
    /// Whose.
    pub user: UserId,
    /// Which socket.
    pub id: DeviceId,
}

/// Delivery to connected clients, wherever they are connected. Each event belongs to a
/// [`crate::events::Channel`] (chat or calls) and reaches only sockets of that channel.
///
/// Delivery is best effort by design: a client that misses an event (a full buffer, a
/// dropped connection) notices the gap by `seq` and fills it from the history. Errors
/// are therefore logged and counted by the implementation, not returned.
#[async_trait]
pub trait Realtime: Send + Sync + 'static {
    /// Sends an event to an audience.
    async fn publish(&self, to: Audience, event: ServerEvent);
    /// Makes every socket of `user` join the conversation's room.
    async fn join_conversation(&self, user: UserId, conversation: ConversationId);
    /// Makes every socket of `user` leave the conversation's room.
    async fn leave_conversation(&self, user: UserId, conversation: ConversationId);
    /// Disconnects every socket opened with a session, on every namespace.
    async fn disconnect_session(&self, session: SessionId);
}
