//! The chat service: conversations, messages, receipts, reactions, typing and presence.
//! Every operation checks membership and roles here, whatever transport asked for it,
//! so REST and Socket.IO cannot disagree.

mod conversations;
mod messages;
mod people;

use std::sync::Arc;

use tokio::sync::Notify;

use crate::error::DomainError;
use crate::ids::{ConversationId, UserId};
use crate::model::Role;
use crate::ordering::ConversationOrder;
use crate::presence::PresenceRegistry;
use crate::realtime::Realtime;
use crate::store::Store;

pub use conversations::{CreateConversation, CreatedConversation};
pub use messages::{ClientMessageId, ReadMark, SendMessage};

/// Result of the chat service.
pub type ChatResult<T> = Result<T, DomainError>;

/// The most members a group may have.
pub const MAX_GROUP_MEMBERS: usize = 1024;

/// The chat service. Cheap to share behind an `Arc`; it owns no socket and no SQL.
pub struct Chat {
    store: Arc<dyn Store>,
    realtime: Arc<dyn Realtime>,
    presence: Arc<dyn PresenceRegistry>,
    /// A conversation's turn: a message is stored and broadcast before the next one in
    /// the same conversation starts, so every member receives them in `seq` order.
    order: Arc<dyn ConversationOrder>,
    /// Woken when push jobs were queued, so the outbox worker need not poll fast.
    push_queued: Arc<Notify>,
}

impl Chat {
    /// Wires the service to its ports.
    pub fn new(
        store: Arc<dyn Store>,
        realtime: Arc<dyn Realtime>,
        presence: Arc<dyn PresenceRegistry>,
        order: Arc<dyn ConversationOrder>,
        push_queued: Arc<Notify>,
    ) -> Self {
        Self { store, realtime, presence, order, push_queued }
    }

    /// The store behind the service.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// `actor`'s role in a conversation, or `Forbidden` when not a member (an unknown
    /// conversation is `NotFound`).
    async fn require_member(&self, conversation: ConversationId, actor: UserId) -> ChatResult<Role> {
        match self.store.member_role(conversation, actor).await? {
            Some(role) => Ok(role),
            None => {
                // Tell "unknown" from "not yours" only after the cheap check failed.
                if self.store.conversation(conversation, actor).await?.is_none() {
                    Err(DomainError::NotFound("conversation"))
                } else {
                    Err(DomainError::Forbidden("not a member of this conversation"))
                }
            }
        }
    }
}
