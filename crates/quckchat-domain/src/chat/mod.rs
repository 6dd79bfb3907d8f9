//! The chat service: conversations, messages, receipts, reactions, typing and presence.
//! Every operation checks membership and roles here, whatever transport asked for it,
//! so REST and Socket.IO cannot disagree.

mod conversations;
mod messages;
mod people;

use std::sync::Arc;

use tokio::sync::Notify;

use crate::error::DomainError;
use crate::hot::{ChangeFeed, Changed, ConversationMeta, HotState};
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
    /// Members, roles and display names in memory (see [`crate::hot`]).
    hot: Arc<HotState>,
    /// Where changes to what `hot` holds are announced to the rest of a fleet.
    feed: Arc<dyn ChangeFeed>,
}

impl Chat {
    /// Wires the service to its ports.
    pub fn new(
        store: Arc<dyn Store>,
        realtime: Arc<dyn Realtime>,
        presence: Arc<dyn PresenceRegistry>,
        order: Arc<dyn ConversationOrder>,
        push_queued: Arc<Notify>,
        hot: Arc<HotState>,
        feed: Arc<dyn ChangeFeed>,
    ) -> Self {
        Self { store, realtime, presence, order, push_queued, hot, feed }
    }

    /// The hot state the service reads through.
    pub fn hot(&self) -> &Arc<HotState> {
        &self.hot
    }

    /// A conversation's kind and members: from memory, else from the store (and kept).
    /// `None` for an unknown conversation.
    async fn meta(&self, id: ConversationId, viewer: UserId) -> ChatResult<Option<Arc<ConversationMeta>>> {
        if let Some(meta) = self.hot.conversation(id) {
            return Ok(Some(meta));
        }
        self.load_meta(id, viewer).await
    }

    /// A conversation's kind and members from the store (and kept).
    async fn load_meta(&self, id: ConversationId, viewer: UserId) -> ChatResult<Option<Arc<ConversationMeta>>> {
        let epoch = self.hot.epoch();
        Ok(self.store.conversation(id, viewer).await?.map(|c| self.hot.fill_conversation(epoch, &c)))
    }

    /// `actor`'s role, from memory when it says "member"; a "not a member" from memory is
    /// asked of the store again before anyone is refused (they may have just been added on
    /// another instance whose announcement has not arrived). `Ok(None)`: not a member.
    async fn role_of(
        &self,
        conversation: ConversationId,
        actor: UserId,
    ) -> ChatResult<Option<(Role, Arc<ConversationMeta>)>> {
        if let Some(meta) = self.hot.conversation(conversation)
            && let Some(role) = meta.role_of(actor)
        {
            return Ok(Some((role, meta)));
        }
        // A miss, or a refusal from memory: the store answers (once).
        let meta = self.load_meta(conversation, actor).await?.ok_or(DomainError::NotFound("conversation"))?;
        Ok(meta.role_of(actor).map(|role| (role, meta)))
    }

    /// A user's display name: from memory, else from the store (and kept).
    pub(crate) async fn display_name(&self, id: UserId) -> ChatResult<Arc<str>> {
        if let Some(name) = self.hot.display_name(id) {
            return Ok(name);
        }
        let epoch = self.hot.epoch();
        let user = self.store.user(id).await?.ok_or(DomainError::NotFound("user"))?;
        Ok(self.hot.fill_display_name(epoch, id, &user.display_name))
    }

    /// Forgets what a change (already written to the store) made stale, here and on every
    /// other instance.
    pub(crate) async fn changed(&self, change: Changed) {
        self.hot.forget(change);
        self.feed.announce(change).await;
    }

    /// Tells the other instances only (this one has already put the new state in `hot`).
    pub(crate) async fn announce(&self, change: Changed) {
        self.feed.announce(change).await;
    }

    /// The store behind the service.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// `actor`'s role in a conversation, or `Forbidden` when not a member (an unknown
    /// conversation is `NotFound`).
    async fn require_member(&self, conversation: ConversationId, actor: UserId) -> ChatResult<Role> {
        let (role, _) = self
            .role_of(conversation, actor)
            .await?
            .ok_or(DomainError::Forbidden("not a member of this conversation"))?;
        Ok(role)
    }
}
