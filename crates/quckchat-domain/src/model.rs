//! The domain's records, as clients see them. Field names follow the wire contract
//! (camelCase); serde derives only say how the records are named, not which format
//! carries them.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{ConversationId, MessageId, PushJobId, SessionId, UserId};

/// A point in time, always UTC and rounded to milliseconds so that every store gives
/// back exactly what it was given.
pub type Timestamp = DateTime<Utc>;

/// Now, rounded to milliseconds.
pub fn now() -> Timestamp {
    Utc::now().trunc_subsecs(3)
}

/// Whether a user has a socket anywhere, as shown to those allowed to see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnlineStatus {
    /// At least one socket connected.
    Online,
    /// No socket, or the viewer may not know.
    Offline,
}

/// A registered user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// The user's id.
    pub id: UserId,
    /// The unique login name.
    pub username: String,
    /// The name shown to others.
    pub display_name: String,
    /// A short text about the user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bio: Option<String>,
    /// An avatar URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    /// Online or offline, as the viewer may see it.
    pub status: OnlineStatus,
    /// When the user's last socket went away.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Timestamp>,
    /// When the account was made.
    pub created_at: Timestamp,
}

/// A user as the store writes it at registration.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// The new id.
    pub id: UserId,
    /// The unique login name (the store compares it case-insensitively).
    pub username: String,
    /// The name shown to others.
    pub display_name: String,
    /// The argon2id PHC string.
    pub password_hash: String,
    /// Creation time.
    pub created_at: Timestamp,
}

/// A profile change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ProfilePatch {
    /// New display name.
    pub display_name: Option<String>,
    /// New bio.
    pub bio: Option<String>,
    /// New avatar URL.
    pub avatar: Option<String>,
}

/// A login session: refresh tokens rotate inside it; revoking it ends every token and
/// socket it issued.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// The session id (the `sid` claim of its tokens).
    pub id: SessionId,
    /// Whose session.
    pub user_id: UserId,
    /// A hash of the one refresh token that is valid now.
    pub refresh_token_hash: String,
    /// When the session started.
    pub created_at: Timestamp,
    /// When the current refresh token stops working.
    pub expires_at: Timestamp,
    /// Set when the session was ended.
    pub revoked_at: Option<Timestamp>,
    /// When the refresh token was last rotated (`None`: never). A client that presents the
    /// token it just rotated away again within the reuse grace gets the same successor.
    pub rotated_at: Option<Timestamp>,
}

/// Single (two people) or group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConversationKind {
    /// Exactly two participants, at most one such conversation per pair.
    Single,
    /// Any number of participants, managed by admins.
    Group,
}

impl ConversationKind {
    /// The stored / wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::Group => "group",
        }
    }

    /// Parses the stored / wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "single" => Some(Self::Single),
            "group" => Some(Self::Group),
            _ => None,
        }
    }
}

/// A participant's role in a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May rename the group, add and remove members, delete others' messages.
    Admin,
    /// Takes part.
    Member,
}

impl Role {
    /// The stored / wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Member => "member",
        }
    }

    /// Parses the stored / wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "member" => Some(Self::Member),
            _ => None,
        }
    }
}

/// One member of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Participant {
    /// The member.
    pub user_id: UserId,
    /// Admin or member.
    pub role: Role,
    /// When the member joined.
    pub joined_at: Timestamp,
    /// The highest `seq` the member has read.
    pub last_read_seq: i64,
}

/// A conversation as one viewer sees it (`unread_count` is the viewer's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conversation {
    /// The conversation's id.
    pub id: ConversationId,
    /// Single or group.
    #[serde(rename = "type")]
    pub kind: ConversationKind,
    /// The group's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The group's avatar URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    /// Everyone in it, the creator first.
    pub participants: Vec<Participant>,
    /// Who made it.
    pub created_by: UserId,
    /// When it was made.
    pub created_at: Timestamp,
    /// When its latest message was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_message_at: Option<Timestamp>,
    /// The `seq` of its latest message (0 when empty).
    pub last_seq: i64,
    /// Messages from others after the viewer's `lastReadSeq`, not deleted.
    pub unread_count: i64,
}

impl Conversation {
    /// The participant entry of `user`, if a member.
    pub fn participant(&self, user: UserId) -> Option<&Participant> {
        self.participants.iter().find(|p| p.user_id == user)
    }

    /// Whether `user` is a member.
    pub fn is_member(&self, user: UserId) -> bool {
        self.participant(user).is_some()
    }

    /// Whether `user` is an admin of it.
    pub fn is_admin(&self, user: UserId) -> bool {
        self.participant(user).is_some_and(|p| p.role == Role::Admin)
    }

    /// Everyone in it but `user`.
    pub fn others(&self, user: UserId) -> impl Iterator<Item = UserId> + '_ {
        self.participants.iter().map(|p| p.user_id).filter(move |u| *u != user)
    }

    /// All member ids.
    pub fn member_ids(&self) -> Vec<UserId> {
        self.participants.iter().map(|p| p.user_id).collect()
    }
}

/// A conversation as the store writes it at creation.
#[derive(Debug, Clone)]
pub struct NewConversation {
    /// The new id.
    pub id: ConversationId,
    /// Single or group.
    pub kind: ConversationKind,
    /// Group name.
    pub name: Option<String>,
    /// Group avatar.
    pub avatar: Option<String>,
    /// The creator (an admin of a group).
    pub created_by: UserId,
    /// Participants and their roles, the creator first.
    pub participants: Vec<(UserId, Role)>,
    /// Creation time.
    pub created_at: Timestamp,
}

/// What a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    /// Plain text.
    #[default]
    Text,
    /// An image attachment.
    Image,
    /// A video attachment.
    Video,
    /// An audio attachment.
    Audio,
    /// Any file.
    File,
    /// A shared location.
    Location,
    /// Written by the server (member added, call missed).
    System,
}

impl MessageKind {
    /// The stored / wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Image => "image",
            Self::Video => "video",
            Self::Audio => "audio",
            Self::File => "file",
            Self::Location => "location",
            Self::System => "system",
        }
    }

    /// Parses the stored / wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "text" => Self::Text,
            "image" => Self::Image,
            "video" => Self::Video,
            "audio" => Self::Audio,
            "file" => Self::File,
            "location" => Self::Location,
            "system" => Self::System,
            _ => return None,
        })
    }
}

/// A file attached to a message (uploaded elsewhere; the message holds its URL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// Where the file is.
    pub url: String,
    /// image, video, audio, file…
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// File name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// MIME type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// A preview image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail_url: Option<String>,
    /// Pixel width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Pixel height.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Length of audio or video, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
}

/// One user's reaction to a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reaction {
    /// The emoji.
    pub emoji: String,
    /// Who reacted.
    pub user_id: UserId,
}

/// When a user first read up to (at least) a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadReceipt {
    /// The reader.
    pub user_id: UserId,
    /// When the reader's read pointer first passed the message.
    pub read_at: Timestamp,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// The message's id.
    pub id: MessageId,
    /// The conversation it is stored in.
    pub conversation_id: ConversationId,
    /// Who sent it.
    pub sender_id: UserId,
    /// Its place in the conversation: 1, 2, 3… without gaps.
    pub seq: i64,
    /// What it carries.
    #[serde(rename = "type")]
    pub kind: MessageKind,
    /// The text (emptied when deleted).
    pub content: String,
    /// Attached files.
    pub attachments: Vec<Attachment>,
    /// The message it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<MessageId>,
    /// The sender's own id for it, for idempotent retries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_message_id: Option<String>,
    /// Reactions, oldest first.
    pub reactions: Vec<Reaction>,
    /// Who has read it (the sender excluded).
    pub read_by: Vec<ReadReceipt>,
    /// When the server accepted it.
    pub created_at: Timestamp,
    /// When it was last edited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<Timestamp>,
    /// When it was deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<Timestamp>,
}

/// A message as the store appends it; the store gives it its `seq`.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The new id.
    pub id: MessageId,
    /// Where it goes.
    pub conversation_id: ConversationId,
    /// Who sends it.
    pub sender_id: UserId,
    /// What it carries.
    pub kind: MessageKind,
    /// The text.
    pub content: String,
    /// Attached files.
    pub attachments: Vec<Attachment>,
    /// The message it answers (in the same conversation).
    pub reply_to: Option<MessageId>,
    /// The sender's idempotency key.
    pub client_message_id: Option<String>,
    /// Acceptance time.
    pub created_at: Timestamp,
}

impl NewMessage {
    /// The message as stored with `seq`: no reactions or readers yet, never edited. Every
    /// backend answers an append with this.
    pub fn stored(self, seq: i64) -> Message {
        Message {
            id: self.id,
            conversation_id: self.conversation_id,
            sender_id: self.sender_id,
            seq,
            kind: self.kind,
            content: self.content,
            attachments: self.attachments,
            reply_to: self.reply_to,
            client_message_id: self.client_message_id,
            reactions: Vec::new(),
            read_by: Vec::new(),
            created_at: self.created_at,
            edited_at: None,
            deleted_at: None,
        }
    }
}

/// What `append_message` did.
#[derive(Debug, Clone, PartialEq)]
pub enum Appended {
    /// A new message was stored with the next `seq`.
    Created(Message),
    /// The sender had already sent this `clientMessageId`: the first message, unchanged.
    Existing(Message),
    /// The sender is not (or no longer) a member of the conversation at the moment of the
    /// write; nothing was stored. The store's own check, so that an instance whose cached
    /// membership is stale still cannot store a removed member's message.
    NotMember,
}

/// What `remove_member` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// The member is gone; `promoted` became an admin because no admin was left.
    Removed {
        /// Who was made an admin in the same step, if anyone.
        promoted: Option<UserId>,
    },
    /// The target was not (or no longer) a member.
    NotMember,
    /// `by` is neither the target nor an admin (any more).
    NotAllowed,
}

/// What a push notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushKind {
    /// A new message.
    Message,
    /// An incoming call.
    Call,
}

impl PushKind {
    /// The stored / wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Call => "call",
        }
    }

    /// Parses the stored / wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "message" => Some(Self::Message),
            "call" => Some(Self::Call),
            _ => None,
        }
    }
}

/// A push notification waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushJob {
    /// The job's id (also the idempotency key the receiver sees).
    pub id: PushJobId,
    /// Who is notified.
    pub user_id: UserId,
    /// Message or call.
    pub kind: PushKind,
    /// The conversation concerned.
    pub conversation_id: ConversationId,
    /// The message (for `message`).
    pub message_id: Option<MessageId>,
    /// The call (for `call`).
    pub call_id: Option<String>,
    /// Who caused it.
    pub sender_id: UserId,
    /// The sender's display name.
    pub sender_name: String,
    /// A short preview of the content.
    pub preview: String,
    /// When it was queued.
    pub created_at: Timestamp,
    /// Failed delivery attempts so far (a success is recorded by `delivered_at`).
    pub attempts: u32,
    /// Not before this time.
    pub next_attempt_at: Timestamp,
    /// Set once delivered.
    pub delivered_at: Option<Timestamp>,
    /// Set when the worker gave up.
    pub failed_at: Option<Timestamp>,
    /// The last failure, for operators.
    pub last_error: Option<String>,
}

impl PushJob {
    /// A fresh job, due now.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        user_id: UserId,
        kind: PushKind,
        conversation_id: ConversationId,
        message_id: Option<MessageId>,
        call_id: Option<String>,
        sender_id: UserId,
        sender_name: String,
        preview: String,
        at: Timestamp,
    ) -> Self {
        Self {
            id: PushJobId::new(),
            user_id,
            kind,
            conversation_id,
            message_id,
            call_id,
            sender_id,
            sender_name,
            preview,
            created_at: at,
            attempts: 0,
            next_attempt_at: at,
            delivered_at: None,
            failed_at: None,
            last_error: None,
        }
    }
}

/// A short preview of a message for a notification: at most 100 characters.
pub fn preview_of(kind: MessageKind, content: &str) -> String {
    const MAX: usize = 100;
    if content.is_empty() {
        return format!("[{}]", kind.as_str());
    }
    let mut out: String = content.chars().take(MAX).collect();
    if content.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}
