//! The store port: everything QuckChat keeps, split by aggregate into [`UserStore`],
//! [`ConversationStore`], [`MessageStore`], [`PushOutbox`] and [`CallStore`] (with
//! [`StoreHealth`]); [`Store`] is all of them. Each backend crate implements each part in a
//! module of its own and passes the shared conformance suite (`quckchat-store-tests`).
//!
//! A part is declared once, through `store_part!`, which also writes its pass-through for
//! [`Observed`] (the decorator that times every call): a new method touches its part here,
//! the backends and the conformance suite, nothing else.
//!
//! Rules every implementation keeps:
//! - `seq` is 1, 2, 3… per conversation with no gaps and no repeats, even with many
//!   concurrent writers (and, for shared backends, many processes);
//! - a `(sender, clientMessageId)` pair is stored once;
//! - a single conversation between two users exists at most once;
//! - usernames are unique, compared case-insensitively;
//! - timestamps come back exactly as they were written (millisecond precision).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::call_model::Call;
use crate::error::StoreError;
use crate::ids::{CallId, ConversationId, MessageId, PushJobId, SessionId, UserId};
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

/// Declares one part of the store port: the trait, the list of its method names (for
/// observers that resolve one metric handle per method up front), and its pass-through
/// for [`Observed`].
macro_rules! store_part {
    (
        $methods:ident;
        $(#[$meta:meta])*
        pub trait $part:ident {
            $(
                $(#[$fmeta:meta])*
                async fn $name:ident(&self $(, $arg:ident : $ty:ty)* $(,)?) -> StoreResult<$ret:ty>;
            )*
        }
    ) => {
        $(#[$meta])*
        #[async_trait]
        pub trait $part: Send + Sync + 'static {
            $(
                $(#[$fmeta])*
                async fn $name(&self $(, $arg: $ty)*) -> StoreResult<$ret>;
            )*
        }

        #[doc = concat!("The names of [`", stringify!($part), "`]'s methods, as [`StoreObserver::observe`] gets them.")]
        pub const $methods: &[&str] = &[$(stringify!($name)),*];

        #[async_trait]
        impl $part for Observed {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> StoreResult<$ret> {
                    let started = Instant::now();
                    let result = self.inner.$name($($arg),*).await;
                    self.observer.observe(stringify!($name), started.elapsed());
                    result
                }
            )*
        }
    };
}

store_part! {
    USER_STORE_METHODS;
    /// People and their sessions.
    pub trait UserStore {
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

        // ---- sessions ----------------------------------------------------------
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
    }
}

store_part! {
    CONVERSATION_STORE_METHODS;
    /// Conversations and their members. Membership decided here is what every append
    /// checks at the moment of its write.
    pub trait ConversationStore {
        /// Stores a new conversation with its participants. For `single`, `Conflict` when the
        /// pair already has one (see [`ConversationStore::single_between`]).
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
    }
}

store_part! {
    MESSAGE_STORE_METHODS;
    /// Messages and what hangs off them (reactions, read pointers).
    pub trait MessageStore {
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
    }
}

store_part! {
    PUSH_OUTBOX_METHODS;
    /// Push jobs: durable, leased to one worker at a time, retried, delivered once.
    pub trait PushOutbox {
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
    }
}

store_part! {
    CALL_STORE_METHODS;
    /// Where calls are kept.
    pub trait CallStore {
        /// Stores a new call with its participants (its `version` as given, usually 0).
        async fn create_call(&self, call: &Call) -> StoreResult<()>;
        /// A call by id, with its participants in the order they were stored.
        async fn call(&self, id: CallId) -> StoreResult<Option<Call>>;
        /// Replaces a call's state and participants if the stored `version` is still
        /// `expected_version`; the stored version becomes `call.version`. `false` when
        /// someone else saved first (the caller reloads and retries).
        async fn save_call(&self, call: &Call, expected_version: i64) -> StoreResult<bool>;
        /// A conversation's calls, newest first, older than `before` (by `createdAt`) when
        /// given, at most `limit`.
        async fn calls_of_conversation(
            &self,
            conversation: ConversationId,
            before: Option<Timestamp>,
            limit: u32,
        ) -> StoreResult<Vec<Call>>;
        /// Live calls (ringing or active) in which `user` is ringing or joined.
        async fn live_calls_of(&self, user: UserId) -> StoreResult<Vec<Call>>;
        /// Every live call (ringing or active): what a restart must settle.
        async fn live_calls(&self) -> StoreResult<Vec<Call>>;
    }
}

store_part! {
    STORE_HEALTH_METHODS;
    /// The backend's own health.
    pub trait StoreHealth {
        /// Checks the backend answers.
        async fn ping(&self) -> StoreResult<()>;
    }
}

/// Everything QuckChat keeps: every part of the port. Implemented for any type that
/// implements all of them.
pub trait Store: UserStore + ConversationStore + MessageStore + PushOutbox + CallStore + StoreHealth {}

impl<T> Store for T where T: UserStore + ConversationStore + MessageStore + PushOutbox + CallStore + StoreHealth {}

/// Told how long each store call took (metrics).
pub trait StoreObserver: Send + Sync + 'static {
    /// `method` (one of the parts' `*_METHODS`) returned after `took`.
    fn observe(&self, method: &'static str, took: Duration);
}

/// A store that tells an observer how long each call took, whatever the backend.
pub struct Observed {
    inner: Arc<dyn Store>,
    observer: Arc<dyn StoreObserver>,
}

impl Observed {
    /// Wraps a backend.
    pub fn new(inner: Arc<dyn Store>, observer: Arc<dyn StoreObserver>) -> Self {
        Self { inner, observer }
    }
}

/// Every part of the port, for code that calls a concrete backend (tests, tools):
/// `use quckchat_domain::store::prelude::*;`.
pub mod prelude {
    pub use super::{CallStore, ConversationStore, MessageStore, PushOutbox, Store, StoreHealth, UserStore};
}
