//! Events the server pushes to clients. Each variant is one event name of the wire
//! contract; serializing an event gives its payload.

use serde::Serialize;

use crate::ids::{ConversationId, MessageId, UserId};
use crate::model::{Conversation, Message, Timestamp};

/// Something that happened, to be delivered to an [`crate::realtime::Audience`].
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ServerEvent {
    /// `message:new`
    MessageNew(Message),
    /// `message:updated`
    MessageUpdated(Message),
    /// `message:deleted`
    #[serde(rename_all = "camelCase")]
    MessageDeleted {
        /// The deleted message.
        message_id: MessageId,
        /// Its conversation.
        conversation_id: ConversationId,
    },
    /// `message:read`
    #[serde(rename_all = "camelCase")]
    MessageRead {
        /// Read up to this message.
        message_id: MessageId,
        /// The reader.
        user_id: UserId,
        /// Its conversation.
        conversation_id: ConversationId,
        /// When.
        read_at: Timestamp,
        /// The `seq` of that message.
        seq: i64,
    },
    /// `user:typing`
    #[serde(rename_all = "camelCase")]
    Typing {
        /// Who types.
        user_id: UserId,
        /// Where.
        conversation_id: ConversationId,
    },
    /// `user:stop-typing`
    #[serde(rename_all = "camelCase")]
    StopTyping {
        /// Who stopped.
        user_id: UserId,
        /// Where.
        conversation_id: ConversationId,
    },
    /// `reaction:added`
    ReactionAdded(ReactionChange),
    /// `reaction:removed`
    ReactionRemoved(ReactionChange),
    /// `user:online`
    #[serde(rename_all = "camelCase")]
    UserOnline {
        /// Who came online.
        user_id: UserId,
    },
    /// `user:offline`
    #[serde(rename_all = "camelCase")]
    UserOffline {
        /// Who went offline.
        user_id: UserId,
        /// When the last socket went.
        last_seen: Timestamp,
    },
    /// `conversation:new`: the user was added to (or created) a conversation.
    ConversationNew(Conversation),
    /// `conversation:updated`: name, avatar or members changed.
    ConversationUpdated(Conversation),
    /// `conversation:removed`: the user is no longer a member.
    #[serde(rename_all = "camelCase")]
    ConversationRemoved {
        /// The conversation left.
        conversation_id: ConversationId,
        /// The member who left or was removed.
        user_id: UserId,
    },
}

/// The payload of `reaction:added` / `reaction:removed`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReactionChange {
    /// The message.
    pub message_id: MessageId,
    /// Its conversation.
    pub conversation_id: ConversationId,
    /// The emoji.
    pub emoji: String,
    /// Who reacted.
    pub user_id: UserId,
}

impl ServerEvent {
    /// The event's name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Self::MessageNew(_) => "message:new",
            Self::MessageUpdated(_) => "message:updated",
            Self::MessageDeleted { .. } => "message:deleted",
            Self::MessageRead { .. } => "message:read",
            Self::Typing { .. } => "user:typing",
            Self::StopTyping { .. } => "user:stop-typing",
            Self::ReactionAdded(_) => "reaction:added",
            Self::ReactionRemoved(_) => "reaction:removed",
            Self::UserOnline { .. } => "user:online",
            Self::UserOffline { .. } => "user:offline",
            Self::ConversationNew(_) => "conversation:new",
            Self::ConversationUpdated(_) => "conversation:updated",
            Self::ConversationRemoved { .. } => "conversation:removed",
        }
    }
}
