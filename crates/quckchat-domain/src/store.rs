//! The store port: everything QuckChat keeps. Each backend crate implements [`Store`]
//! and passes the shared conformance suite (`quckchat-store-tests`).
//!
//! Rules every implementation keeps:
//! - `seq` is 1, 2, 3… per conversation with no gaps and no repeats, even with many
//!   concurrent writers (and, for shared backends, many processes);
//! - a `(sender, clientMessageId)` pair is stored once;
//! - a single conversation between two users exists at most once;
//! - usernames are unique, compared case-insensitively;
//! - timestamps come back exactly as they were written (millisecond precision).

use async_trait::async_trait;

use crate::error::StoreError;
use crate::ids::{ConversationId, MessageId, PushJobId, SessionId, UserId};
use crate::model::Removal;
use crate::model::{
    Appended, Conversation, Message, NewConversation, NewMessage, NewUser, ProfilePatch, PushJob, Role, Session,
    Timestamp, User,
};

/// Result of the store port.
pub type StoreResult<T> = Result<T, StoreError>;

/// A user with the password hash that login checks.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The user.
    pub user: User,
    /// argon2id PHC string.
    pub password_hash: String,
}

/// Where to start a page of history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryCursor {
    /// The newest messages, newest first.
    Latest,
    /// Messages older than this one, newest first.
    Before(MessageId),
    /// Messages with `seq` greater than this, ascending.
    AfterSeq(i64),
}

/// Everything QuckChat keeps.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // ---- users -------------------------------------------------------------------
    /// Stores a new user; `Conflict` when the username is taken (case-insensitively).
    async fn create_user(&self, user: NewUser) -> StoreResult<User>;
    /// A user by id.
    async fn user(&self, id: UserId) -> StoreResult<Option<User>>;
    /// Several users by id (unknown ids are left out; order unspecified).
    async fn users(&self, ids: &[UserId]) -> StoreResult<Vec<User>>;
    /// A user and password hash by username (case-insensitively), for login.
    async fn credentials(&self, username: &str) -> StoreResult<Option<Credentials>>;
    /// Changes a profile; `NotFound` for an unknown user.
    async fn update_profile(&self, id: UserId, patch: ProfilePatch) -> StoreResult<User>;
    /// Users whose username or display name contains `query` (case-insensitively),
    /// at most `limit`, by username.
    async fn search_users(&self, query: &str, limit: u32) -> StoreResult<Vec<User>>;
    /// Records when the user's last socket went away.
    async fn set_last_seen(&self, id: UserId, at: Timestamp) -> StoreResult<()>;

    // ---- sessions ----------------------------------------------------------------
    /// Stores a new session.
    async fn create_session(&self, session: Session) -> StoreResult<()>;
    /// A session by id (revoked ones too).
    async fn session(&self, id: SessionId) -> StoreResult<Option<Session>>;
    /// Replaces the session's refresh token if `current_hash` is still the valid one and
    /// the session is not revoked, recording `at` as `rotated_at`; `false` otherwise (a
    /// reused or stale token).
    async fn rotate_refresh_token(
        &self,
        id: SessionId,
        current_hash: &str,
        new_hash: &str,
        new_expires_at: Timestamp,
        at: Timestamp,
    ) -> StoreResult<bool>;
    /// Ends a session; `false` when it was unknown or already ended.
    async fn revoke_session(&self, id: SessionId, at: Timestamp) -> StoreResult<bool>;

    // ---- conversations -----------------------------------------------------------
    /// Stores a new conversation with its participants. For `single`, `Conflict` when the
    /// pair already has one (see [`Store::single_between`]).
    async fn create_conversation(&self, new: NewConversation) -> StoreResult<()>;
    /// The single conversation between two users, as `viewer` sees it.
    async fn single_between(&self, a: UserId, b: UserId, viewer: UserId) -> StoreResult<Option<Conversation>>;
    /// A conversation with its participants, `unread_count` being `viewer`'s.
    async fn conversation(&self, id: ConversationId, viewer: UserId) -> StoreResult<Option<Conversation>>;
    /// The conversations `user` belongs to, most recent activity (last message, else
    /// creation) first, older than `before` when given, at most `limit`.
    async fn conversations_of(
        &self,
        user: UserId,
        before: Option<Timestamp>,
        limit: u32,
    ) -> StoreResult<Vec<Conversation>>;
    /// `user`'s role in a conversation; `None` when not a member or the conversation is
    /// unknown. The cheap check every event makes.
    async fn member_role(&self, id: ConversationId, user: UserId) -> StoreResult<Option<Role>>;
    /// The ids of every conversation `user` belongs to.
    async fn conversation_ids_of(&self, user: UserId) -> StoreResult<Vec<ConversationId>>;
    /// Everyone who shares at least one conversation with `user` (not `user`).
    async fn co_members_of(&self, user: UserId) -> StoreResult<Vec<UserId>>;
    /// Renames or re-pictures a conversation; `NotFound` when unknown.
    async fn update_conversation(
        &self,
        id: ConversationId,
        name: Option<String>,
        avatar: Option<String>,
    ) -> StoreResult<()>;
    /// Adds members (role `member`) on behalf of `by`, who must be an admin of the
    /// conversation *at the moment of the write* (checked in the same transaction or
    /// conditional write, so an admin who has just left cannot add anyone). Users already
    /// in it are left as they are. Returns the ids actually added, or `None` when `by` is
    /// not (or no longer) an admin. `NotFound` for an unknown conversation.
    async fn add_members(
        &self,
        id: ConversationId,
        by: UserId,
        users: &[UserId],
        at: Timestamp,
    ) -> StoreResult<Option<Vec<UserId>>>;
    /// Removes `target` on behalf of `by` (`by == target`: leaving; otherwise `by` must be
    /// an admin at the moment of the write) and, when that leaves members but no admin,
    /// makes the first remaining member (the creator, then the earliest joined) an admin,
    /// all in one atomic step: however removals race, a group with members always keeps
    /// an admin.
    async fn remove_member(&self, id: ConversationId, by: UserId, target: UserId) -> StoreResult<Removal>;

    // ---- messages ----------------------------------------------------------------
    /// Appends a message: the next `seq` of its conversation, the conversation's
    /// `last_seq` / `last_message_at`, the sender's read pointer, and the push jobs,
    /// all in one transaction. When the sender already sent `client_message_id`, returns
    /// [`Appended::Existing`] and writes nothing; when the sender is not a member at the
    /// moment of the write, [`Appended::NotMember`] and writes nothing. `NotFound` for an
    /// unknown conversation.
    async fn append_message(&self, new: NewMessage, pushes: Vec<PushJob>) -> StoreResult<Appended>;
    /// A message by id, with reactions and receipts.
    async fn message(&self, id: MessageId) -> StoreResult<Option<Message>>;
    /// A page of a conversation's history (see [`HistoryCursor`]), at most `limit`.
    async fn history(
        &self,
        conversation: ConversationId,
        cursor: HistoryCursor,
        limit: u32,
    ) -> StoreResult<Vec<Message>>;
    /// Replaces a message's content and sets `edited_at`; `NotFound` when unknown.
    async fn edit_message(&self, id: MessageId, content: &str, at: Timestamp) -> StoreResult<Message>;
    /// Empties a message and sets `deleted_at` (it keeps its `seq`); its reactions go.
    async fn delete_message(&self, id: MessageId, at: Timestamp) -> StoreResult<Message>;
    /// Moves `user`'s read pointer in `conversation` up to `seq` (never down). Returns
    /// `true` when it moved; a receipt is recorded only then.
    async fn mark_read(&self, conversation: ConversationId, user: UserId, seq: i64, at: Timestamp)
    -> StoreResult<bool>;
    /// Adds a reaction; `false` when that user already reacted so.
    async fn add_reaction(&self, message: MessageId, user: UserId, emoji: &str, at: Timestamp) -> StoreResult<bool>;
    /// Removes a reaction; `false` when there was none.
    async fn remove_reaction(&self, message: MessageId, user: UserId, emoji: &str) -> StoreResult<bool>;

    // ---- push outbox -------------------------------------------------------------
    /// Queues push jobs on their own (calls); message pushes go with `append_message`.
    async fn enqueue_pushes(&self, jobs: Vec<PushJob>) -> StoreResult<()>;
    /// Takes up to `limit` due jobs (not delivered, not failed, `next_attempt_at <= now`)
    /// and moves their `next_attempt_at` to `lease_until`, so that no other worker takes
    /// them meanwhile. Oldest first.
    async fn claim_pushes(&self, now: Timestamp, lease_until: Timestamp, limit: u32) -> StoreResult<Vec<PushJob>>;
    /// Marks a job delivered.
    async fn push_delivered(&self, id: PushJobId, at: Timestamp) -> StoreResult<()>;
    /// Records a failed attempt: the count, the error, and either the next attempt or,
    /// with `give_up`, the end.
    async fn push_failed(
        &self,
        id: PushJobId,
        error: &str,
        next_attempt_at: Timestamp,
        give_up: bool,
        at: Timestamp,
    ) -> StoreResult<()>;
    /// Every job for a user, oldest first (operators and tests).
    async fn pushes_for(&self, user: UserId) -> StoreResult<Vec<PushJob>>;

    // ---- operations --------------------------------------------------------------
    /// Checks the backend answers.
    async fn ping(&self) -> StoreResult<()>;
}
