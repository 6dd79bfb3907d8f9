//! Creating conversations, listing them, and managing group membership. Membership
//! changes reach connected sockets at once through the realtime port.

use std::collections::BTreeSet;

use tracing::instrument;

use super::{Chat, ChatResult, MAX_GROUP_MEMBERS};
use crate::error::{DomainError, StoreError};
use crate::events::ServerEvent;
use crate::hot::Changed;
use crate::ids::{ConversationId, UserId};
use crate::model::{Conversation, ConversationKind, NewConversation, Removal, Role, Timestamp, now};
use crate::realtime::Audience;
use crate::values::{BoundedText, DisplayName};

/// A conversation to create, validated at the edge.
#[derive(Debug, Clone)]
pub struct CreateConversation {
    /// Single or group.
    pub kind: ConversationKind,
    /// The other participants (the creator is added if missing).
    pub participants: Vec<UserId>,
    /// The group's name.
    pub name: Option<DisplayName>,
}

/// The outcome of creating a conversation.
#[derive(Debug, Clone)]
pub struct CreatedConversation {
    /// The conversation, as the creator sees it.
    pub conversation: Conversation,
    /// `false` when an existing single conversation was returned.
    pub created: bool,
}

impl Chat {
    /// Creates a conversation, or returns the pair's existing single one. Every member's
    /// connected sockets join its room and get `conversation:new`.
    #[instrument(skip_all, fields(%actor))]
    pub async fn create_conversation(&self, actor: UserId, cmd: CreateConversation) -> ChatResult<CreatedConversation> {
        let others: BTreeSet<UserId> = cmd.participants.iter().copied().filter(|u| *u != actor).collect();
        match cmd.kind {
            ConversationKind::Single if others.len() != 1 => {
                return Err(DomainError::InvalidInput(
                    "a single conversation has exactly one other participant".into(),
                ));
            }
            ConversationKind::Group if others.len() + 1 > MAX_GROUP_MEMBERS => {
                return Err(DomainError::InvalidInput(format!("a group has at most {MAX_GROUP_MEMBERS} members")));
            }
            _ => {}
        }
        let others: Vec<UserId> = others.into_iter().collect();
        let known = self.store.users(&others).await?;
        if known.len() != others.len() {
            return Err(DomainError::NotFound("user"));
        }

        if cmd.kind == ConversationKind::Single {
            let peer = others[0];
            if let Some(existing) = self.store.single_between(actor, peer, actor).await? {
                return Ok(CreatedConversation { conversation: existing, created: false });
            }
        }
        let new = NewConversation {
            id: ConversationId::new(),
            kind: cmd.kind,
            name: match cmd.kind {
                ConversationKind::Group => cmd.name.map(|n| n.as_str().to_string()),
                ConversationKind::Single => None,
            },
            avatar: None,
            created_by: actor,
            participants: std::iter::once((
                actor,
                if cmd.kind == ConversationKind::Group { Role::Admin } else { Role::Member },
            ))
            .chain(others.iter().map(|u| (*u, Role::Member)))
            .collect(),
            created_at: now(),
        };
        let id = new.id;
        match self.store.create_conversation(new).await {
            Ok(()) => {}
            // Two creators raced for the same pair: the other one won, return its conversation.
            Err(StoreError::Conflict(_)) if cmd.kind == ConversationKind::Single => {
                let existing = self
                    .store
                    .single_between(actor, others[0], actor)
                    .await?
                    .ok_or(DomainError::Conflict("conversation is being created".into()))?;
                return Ok(CreatedConversation { conversation: existing, created: false });
            }
            Err(e) => return Err(e.into()),
        }
        let conversation = self.store.conversation(id, actor).await?.ok_or(DomainError::NotFound("conversation"))?;
        for member in conversation.member_ids() {
            self.realtime.join_conversation(member, id).await;
        }
        self.realtime
            .publish(Audience::Users(conversation.member_ids()), ServerEvent::ConversationNew(conversation.clone()))
            .await;
        Ok(CreatedConversation { conversation, created: true })
    }

    /// A conversation as a member sees it; `NotFound` for anyone else.
    pub async fn conversation(&self, actor: UserId, id: ConversationId) -> ChatResult<Conversation> {
        match self.store.conversation(id, actor).await? {
            Some(c) if c.is_member(actor) => Ok(c),
            _ => Err(DomainError::NotFound("conversation")),
        }
    }

    /// `actor`'s conversations, most recent activity first.
    pub async fn conversations(
        &self,
        actor: UserId,
        before: Option<Timestamp>,
        limit: u32,
    ) -> ChatResult<Vec<Conversation>> {
        Ok(self.store.conversations_of(actor, before, limit.clamp(1, 200)).await?)
    }

    /// The activity time of one of `actor`'s conversations (a listing cursor).
    pub async fn activity_of(&self, actor: UserId, id: ConversationId) -> ChatResult<Timestamp> {
        let c = self.conversation(actor, id).await?;
        Ok(c.last_message_at.unwrap_or(c.created_at))
    }

    /// The ids of every conversation `actor` belongs to (rooms to join on connect).
    pub async fn conversation_ids(&self, actor: UserId) -> ChatResult<Vec<ConversationId>> {
        Ok(self.store.conversation_ids_of(actor).await?)
    }

    async fn require_group_admin(&self, actor: UserId, id: ConversationId) -> ChatResult<Conversation> {
        let c = self.conversation(actor, id).await?;
        if c.kind != ConversationKind::Group {
            return Err(DomainError::Forbidden("a single conversation has no admins"));
        }
        if !c.is_admin(actor) {
            return Err(DomainError::Forbidden("only a group admin may do this"));
        }
        Ok(c)
    }

    /// Renames or re-pictures a group (admins).
    #[instrument(skip_all, fields(%actor, conversation = %id))]
    pub async fn update_conversation(
        &self,
        actor: UserId,
        id: ConversationId,
        name: Option<DisplayName>,
        avatar: Option<BoundedText>,
    ) -> ChatResult<Conversation> {
        self.require_group_admin(actor, id).await?;
        self.store
            .update_conversation(id, name.map(|n| n.as_str().to_string()), avatar.map(|a| a.as_str().to_string()))
            .await?;
        let updated = self.conversation(actor, id).await?;
        self.realtime.publish(Audience::Conversation(id), ServerEvent::ConversationUpdated(updated.clone())).await;
        Ok(updated)
    }

    /// Adds members to a group (admins). The new members' sockets join the room at once
    /// and get `conversation:new`; the others get `conversation:updated`.
    #[instrument(skip_all, fields(%actor, conversation = %id))]
    pub async fn add_members(&self, actor: UserId, id: ConversationId, users: Vec<UserId>) -> ChatResult<Conversation> {
        let before = self.require_group_admin(actor, id).await?;
        let wanted: BTreeSet<UserId> = users.into_iter().filter(|u| !before.is_member(*u)).collect();
        if before.participants.len() + wanted.len() > MAX_GROUP_MEMBERS {
            return Err(DomainError::InvalidInput(format!("a group has at most {MAX_GROUP_MEMBERS} members")));
        }
        let wanted: Vec<UserId> = wanted.into_iter().collect();
        if self.store.users(&wanted).await?.len() != wanted.len() {
            return Err(DomainError::NotFound("user"));
        }
        // The store checks again, atomically with the insert, that `actor` is still an admin.
        let added = self
            .store
            .add_members(id, actor, &wanted, now())
            .await?
            .ok_or(DomainError::Forbidden("only a group admin may do this"))?;
        self.changed(Changed::Conversation(id)).await;
        let updated = self.conversation(actor, id).await?;
        self.realtime.publish(Audience::Conversation(id), ServerEvent::ConversationUpdated(updated.clone())).await;
        for user in added {
            self.realtime.join_conversation(user, id).await;
            if let Some(view) = self.store.conversation(id, user).await? {
                self.realtime.publish(Audience::User(user), ServerEvent::ConversationNew(view)).await;
            }
        }
        Ok(updated)
    }

    /// Removes a member from a group: an admin removing anyone, or a member leaving.
    /// The removed user's sockets leave the room at once.
    #[instrument(skip_all, fields(%actor, conversation = %id, %target))]
    pub async fn remove_member(&self, actor: UserId, id: ConversationId, target: UserId) -> ChatResult<()> {
        let c = self.conversation(actor, id).await?;
        if c.kind != ConversationKind::Group {
            return Err(DomainError::Forbidden("members cannot leave a single conversation"));
        }
        if actor != target && !c.is_admin(actor) {
            return Err(DomainError::Forbidden("only a group admin may remove others"));
        }
        if !c.is_member(target) {
            return Err(DomainError::NotFound("member"));
        }
        // The checks above are from a snapshot; the store repeats them atomically with the
        // removal and the promotion that keeps an admin (two members leaving at once
        // cannot both skip it), so what it answers is the truth.
        match self.store.remove_member(id, actor, target).await? {
            Removal::Removed { promoted } => {
                self.changed(Changed::Conversation(id)).await;
                if let Some(heir) = promoted {
                    tracing::info!(%heir, "the last admin left; promoted the next member");
                }
            }
            // Someone else removed them first: the outcome the caller asked for holds.
            Removal::NotMember if actor == target => return Ok(()),
            Removal::NotMember => return Err(DomainError::NotFound("member")),
            Removal::NotAllowed => return Err(DomainError::Forbidden("only a group admin may remove others")),
        }
        self.realtime.leave_conversation(target, id).await;
        self.realtime
            .publish(Audience::User(target), ServerEvent::ConversationRemoved { conversation_id: id, user_id: target })
            .await;
        if let Some(updated) = self.store.conversation(id, actor).await? {
            self.realtime.publish(Audience::Conversation(id), ServerEvent::ConversationUpdated(updated)).await;
        }
        Ok(())
    }
}
