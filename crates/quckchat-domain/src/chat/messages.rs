//! Sending, editing, deleting, reading and reacting to messages; typing indicators.

use tracing::instrument;

use super::{Chat, ChatResult};
use crate::error::DomainError;
use crate::events::{ReactionChange, ServerEvent};
use crate::hot::Changed;
use crate::ids::{ConversationId, MessageId, UserId};
use crate::model::{
    Appended, Attachment, ConversationKind, Message, MessageKind, NewMessage, PushJob, PushKind, Role, Timestamp, now,
    preview_of,
};
use crate::realtime::Audience;
use crate::values::{Emoji, MAX_ATTACHMENTS, MessageContent};

/// A sender's own id for a message, so that a retry stores nothing twice: 1 to 128
/// printable characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMessageId(String);

impl ClientMessageId {
    /// Validates a client message id.
    pub fn parse(s: String) -> Result<Self, DomainError> {
        if s.is_empty() || s.len() > 128 || s.chars().any(char::is_control) {
            return Err(DomainError::InvalidInput("clientMessageId must be 1 to 128 printable characters".into()));
        }
        Ok(Self(s))
    }
}

/// A message to send, validated.
#[derive(Debug, Clone)]
pub struct SendMessage {
    /// Where it goes.
    pub conversation_id: ConversationId,
    /// The text.
    pub content: MessageContent,
    /// What it carries (never `system` from a client).
    pub kind: MessageKind,
    /// Attached files.
    pub attachments: Vec<Attachment>,
    /// The message it answers.
    pub reply_to: Option<MessageId>,
    /// The sender's idempotency key.
    pub client_message_id: Option<ClientMessageId>,
}

impl SendMessage {
    /// Checks the rules that involve several fields: clients may not send `system`
    /// messages; a message needs text or an attachment; attachments are bounded.
    pub fn validate(self) -> Result<Self, DomainError> {
        if self.kind == MessageKind::System {
            return Err(DomainError::InvalidInput("clients may not send system messages".into()));
        }
        if self.attachments.len() > MAX_ATTACHMENTS {
            return Err(DomainError::InvalidInput(format!("at most {MAX_ATTACHMENTS} attachments")));
        }
        if self.content.as_str().trim().is_empty() && self.attachments.is_empty() {
            return Err(DomainError::InvalidInput("a message needs content or an attachment".into()));
        }
        if self.attachments.iter().any(|a| a.url.is_empty() || a.url.len() > 2048) {
            return Err(DomainError::InvalidInput("every attachment needs a url of at most 2048 bytes".into()));
        }
        if self
            .attachments
            .iter()
            .any(|a| !is_web_url(&a.url) || a.thumbnail_url.as_deref().is_some_and(|t| !is_web_url(t)))
        {
            return Err(DomainError::InvalidInput("attachment urls must be http:// or https:// urls".into()));
        }
        Ok(self)
    }
}

/// An absolute `http:` or `https:` URL with a host and no whitespace or control
/// characters: what a client can safely put in an `<img src>` or open. `javascript:`,
/// `data:`, `file:` and relative URLs are refused, since every member's client renders
/// what one member sent.
pub fn is_web_url(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &url[8..]
    } else if lower.starts_with("http://") {
        &url[7..]
    } else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    !host.is_empty() && !host.starts_with('@') && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A read receipt as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadMark {
    /// Read up to this message.
    pub message_id: MessageId,
    /// In this conversation (the stored one).
    pub conversation_id: ConversationId,
    /// The message's `seq`.
    pub seq: i64,
    /// When.
    pub read_at: Timestamp,
    /// Whether the read pointer moved (false: it was already past).
    pub moved: bool,
}

impl Chat {
    /// Stores a message and delivers it to the conversation, in `seq` order. Offline
    /// members get a push job in the same transaction. A repeated `clientMessageId`
    /// returns the first message and changes nothing.
    #[instrument(skip_all, fields(%actor, conversation = %cmd.conversation_id))]
    pub async fn send_message(&self, actor: UserId, cmd: SendMessage) -> ChatResult<Message> {
        let cmd = cmd.validate()?;
        // Every decision here is answered from memory on the hot path (see `crate::hot`);
        // the store sees one call, the append, which checks membership itself.
        let (_, conversation) = self
            .role_of(cmd.conversation_id, actor)
            .await?
            .ok_or(DomainError::Forbidden("not a member of this conversation"))?;
        if let Some(reply_to) = cmd.reply_to {
            let original = self.store.message(reply_to).await?;
            if original.is_none_or(|m| m.conversation_id != conversation.id) {
                return Err(DomainError::InvalidInput("replyTo must be a message of this conversation".into()));
            }
        }
        let sender_name = self.display_name(actor).await?;

        let _turn = self.order.turn(conversation.id).await;
        let others: Vec<UserId> = conversation.others(actor).collect();
        // Presence is advisory here: if it cannot be read (its registry is down), everyone
        // counts as offline and gets a push, and the message is stored all the same.
        let online = self.presence.online_among(&others).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "presence unavailable; pushing to every other member");
            Default::default()
        });
        let at = now();
        let new = NewMessage {
            id: MessageId::new(),
            conversation_id: conversation.id,
            sender_id: actor,
            kind: cmd.kind,
            content: cmd.content.into_inner(),
            attachments: cmd.attachments,
            reply_to: cmd.reply_to,
            client_message_id: cmd.client_message_id.map(|c| c.0),
            created_at: at,
        };
        let preview = preview_of(new.kind, &new.content);
        let pushes: Vec<PushJob> = others
            .iter()
            .filter(|u| !online.contains(u))
            .map(|u| {
                PushJob::new(
                    *u,
                    PushKind::Message,
                    conversation.id,
                    Some(new.id),
                    None,
                    actor,
                    sender_name.to_string(),
                    preview.clone(),
                    at,
                )
            })
            .collect();
        let queued_pushes = !pushes.is_empty();
        match self.store.append_message(new, pushes).await? {
            Appended::Created(message) => {
                self.realtime
                    .publish(Audience::Conversation(message.conversation_id), ServerEvent::MessageNew(message.clone()))
                    .await;
                if queued_pushes {
                    self.push_queued.notify_one();
                }
                Ok(message)
            }
            Appended::Existing(message) => Ok(message),
            Appended::NotMember => {
                // Our cached membership was stale (changed on another instance): drop it.
                self.hot.forget(Changed::Conversation(conversation.id));
                Err(DomainError::Forbidden("not a member of this conversation"))
            }
        }
    }

    /// A message `actor` may see (a member of its conversation).
    async fn visible_message(&self, actor: UserId, id: MessageId) -> ChatResult<(Message, Role)> {
        let message = self.store.message(id).await?.ok_or(DomainError::NotFound("message"))?;
        let role = self.require_member(message.conversation_id, actor).await?;
        Ok((message, role))
    }

    /// Replaces the content of one's own message.
    #[instrument(skip_all, fields(%actor, message = %id))]
    pub async fn edit_message(&self, actor: UserId, id: MessageId, content: MessageContent) -> ChatResult<Message> {
        let (message, _) = self.visible_message(actor, id).await?;
        if message.sender_id != actor {
            return Err(DomainError::Forbidden("only the sender may edit a message"));
        }
        if message.deleted_at.is_some() {
            return Err(DomainError::Conflict("the message was deleted".into()));
        }
        if content.as_str().trim().is_empty() && message.attachments.is_empty() {
            return Err(DomainError::InvalidInput("content must not be empty".into()));
        }
        let updated = self.store.edit_message(id, content.as_str(), now()).await?;
        self.realtime
            .publish(Audience::Conversation(updated.conversation_id), ServerEvent::MessageUpdated(updated.clone()))
            .await;
        Ok(updated)
    }

    /// Deletes a message (the sender, or an admin of a group). It keeps its `seq`.
    #[instrument(skip_all, fields(%actor, message = %id))]
    pub async fn delete_message(&self, actor: UserId, id: MessageId) -> ChatResult<Message> {
        let (message, role) = self.visible_message(actor, id).await?;
        let is_group_admin = role == Role::Admin
            && self.meta(message.conversation_id, actor).await?.is_some_and(|c| c.kind == ConversationKind::Group);
        if message.sender_id != actor && !is_group_admin {
            return Err(DomainError::Forbidden("only the sender or a group admin may delete a message"));
        }
        if message.deleted_at.is_some() {
            return Ok(message);
        }
        let deleted = self.store.delete_message(id, now()).await?;
        self.realtime
            .publish(
                Audience::Conversation(deleted.conversation_id),
                ServerEvent::MessageDeleted { message_id: deleted.id, conversation_id: deleted.conversation_id },
            )
            .await;
        Ok(deleted)
    }

    /// Records that `actor` has read up to a message. The conversation is the message's
    /// own, whatever the client claimed.
    #[instrument(skip_all, fields(%actor, message = %id))]
    pub async fn mark_read(&self, actor: UserId, id: MessageId) -> ChatResult<ReadMark> {
        let (message, _) = self.visible_message(actor, id).await?;
        let at = now();
        let moved = self.store.mark_read(message.conversation_id, actor, message.seq, at).await?;
        if moved {
            self.realtime
                .publish(
                    Audience::Conversation(message.conversation_id),
                    ServerEvent::MessageRead {
                        message_id: message.id,
                        user_id: actor,
                        conversation_id: message.conversation_id,
                        read_at: at,
                        seq: message.seq,
                    },
                )
                .await;
        }
        Ok(ReadMark {
            message_id: message.id,
            conversation_id: message.conversation_id,
            seq: message.seq,
            read_at: at,
            moved,
        })
    }

    /// Adds (`add`) or removes a reaction. Repeating either is harmless and tells no one.
    #[instrument(skip_all, fields(%actor, message = %id))]
    pub async fn react(&self, actor: UserId, id: MessageId, emoji: Emoji, add: bool) -> ChatResult<ReactionChange> {
        let (message, _) = self.visible_message(actor, id).await?;
        if message.deleted_at.is_some() {
            return Err(DomainError::Conflict("the message was deleted".into()));
        }
        let changed = if add {
            self.store.add_reaction(id, actor, emoji.as_str(), now()).await?
        } else {
            self.store.remove_reaction(id, actor, emoji.as_str()).await?
        };
        let change = ReactionChange {
            message_id: id,
            conversation_id: message.conversation_id,
            emoji: emoji.as_str().to_string(),
            user_id: actor,
        };
        if changed {
            let event = if add {
                ServerEvent::ReactionAdded(change.clone())
            } else {
                ServerEvent::ReactionRemoved(change.clone())
            };
            self.realtime.publish(Audience::Conversation(message.conversation_id), event).await;
        }
        Ok(change)
    }

    /// Tells the other members that `actor` started (`typing`) or stopped typing.
    #[instrument(skip_all, fields(%actor, %conversation))]
    pub async fn typing(&self, actor: UserId, conversation: ConversationId, typing: bool) -> ChatResult<()> {
        self.require_member(conversation, actor).await?;
        let event = if typing {
            ServerEvent::Typing { user_id: actor, conversation_id: conversation }
        } else {
            ServerEvent::StopTyping { user_id: actor, conversation_id: conversation }
        };
        self.realtime.publish(Audience::ConversationExcept(conversation, actor), event).await;
        Ok(())
    }

    /// A page of history for a member.
    pub async fn history(
        &self,
        actor: UserId,
        conversation: ConversationId,
        cursor: crate::store::HistoryCursor,
        limit: u32,
    ) -> ChatResult<Vec<Message>> {
        self.require_member(conversation, actor).await?;
        if let crate::store::HistoryCursor::Before(id) = cursor {
            let anchor = self.store.message(id).await?;
            if anchor.is_none_or(|m| m.conversation_id != conversation) {
                return Err(DomainError::InvalidInput("`before` must be a message of this conversation".into()));
            }
        }
        Ok(self.store.history(conversation, cursor, limit.clamp(1, 200)).await?)
    }
}

#[cfg(test)]
mod url_tests {
    use super::is_web_url;

    #[test]
    fn only_absolute_http_urls_are_attachments() {
        for ok in ["https://cdn.example/a.png", "HTTP://example.com", "https://h:8443/x?y#z"] {
            assert!(is_web_url(ok), "{ok}");
        }
        for bad in [
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "data:text/html,<script>",
            "file:///etc/passwd",
            "/relative.png",
            "https://",
            "https:///path",
            "https://exa mple.com",
            "https://example.com/\n",
            "vbscript:x",
            "ftp://example.com/f",
        ] {
            assert!(!is_web_url(bad), "{bad}");
        }
    }
}
