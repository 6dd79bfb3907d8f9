//! The embedded SQLite store behind QuckChat's [`Store`] and [`CallStore`] ports.
//!
//! One file (or an in-memory database for tests) in WAL mode. Every write that reads
//! before it writes runs in a `BEGIN IMMEDIATE` transaction, which takes SQLite's single
//! write lock up front and waits for it (the busy timeout) instead of failing: that is
//! what keeps `seq` gap-free and `clientMessageId` idempotent under concurrent appends.
//! The schema lives in `migrations/` and is applied by [`SqliteStore::connect`].

mod calls;
mod codec;
mod conversations;
mod messages;
mod pushes;
mod users;
mod writer;

pub use writer::Durability;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use quckchat_domain::call_model::Call;
use quckchat_domain::call_store::CallStore;
use quckchat_domain::model::Removal;
use quckchat_domain::model::{
    Appended, Conversation, Message, NewConversation, NewMessage, NewUser, ProfilePatch, PushJob, Role, Session,
    Timestamp, User,
};
use quckchat_domain::store::{Credentials, HistoryCursor, Store, StoreResult};
use quckchat_domain::{CallId, ConversationId, MessageId, PushJobId, SessionId, StoreError, UserId};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection, SqlitePool};

use crate::codec::db;

/// How long a statement waits for the write lock before failing with `SQLITE_BUSY`.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections in a file database's pool. Readers run in parallel (WAL); writers queue
/// for the one write lock.
const POOL_SIZE: u32 = 8;

/// The schema, applied at connect.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// QuckChat's data in one SQLite database. Cheap to clone (a pool handle).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The one writer of appends, with group commit (file databases; an in-memory
    /// database lives in the pool's single connection, so it appends there).
    writer: Option<writer::Writer>,
}

impl SqliteStore {
    /// Opens the database at `url` and brings its schema up to date.
    ///
    /// - `sqlite://PATH` (or `sqlite:PATH`): a file, created with its parent directories
    ///   when missing, in WAL mode with `synchronous=NORMAL`;
    /// - `sqlite::memory:`: a private in-memory database that lives as long as the store.
    ///   It is served by a single connection (an in-memory database exists per
    ///   connection), so concurrent callers take turns.
    ///
    /// Foreign keys are enforced and lock waits time out after five seconds.
    pub async fn connect(url: &str) -> anyhow::Result<SqliteStore> {
        Self::connect_with(url, Durability::default()).await
    }

    /// [`SqliteStore::connect`] with the durability of a commit chosen (file databases).
    pub async fn connect_with(url: &str, durability: Durability) -> anyhow::Result<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| format!("invalid SQLite URL {url:?}"))?
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);

        let mut writer_path = None;
        let pool = if is_in_memory(url) {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options)
                .await
                .context("opening the in-memory SQLite database")?
        } else {
            let synchronous = match durability {
                Durability::Normal => SqliteSynchronous::Normal,
                Durability::Full => SqliteSynchronous::Full,
            };
            // Checkpoints are the writer's checkpointer thread's job, never a commit's.
            let options = options.create_if_missing(true).synchronous(synchronous).pragma("wal_autocheckpoint", "0");
            let path = options.get_filename().to_path_buf();
            writer_path = Some(path.clone());
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating the directory {}", parent.display()))?;
            }
            // Switch to WAL once, on a lone connection: the switch needs an exclusive lock
            // that the busy timeout does not wait for, so pooled connections opening
            // together could fail on it. The mode is stored in the file and stays.
            let first = SqliteConnection::connect_with(&options.clone().journal_mode(SqliteJournalMode::Wal))
                .await
                .with_context(|| format!("opening {}", path.display()))?;
            first.close().await.context("closing the set-up connection")?;
            // No ping before handing out a connection: a connection to a local file does not
            // go stale, and the ping was a round trip to its worker thread on every call.
            SqlitePoolOptions::new()
                .max_connections(POOL_SIZE)
                .test_before_acquire(false)
                .connect_with(options)
                .await
                .with_context(|| format!("opening {}", path.display()))?
        };

        MIGRATOR.run(&pool).await.context("applying the SQLite migrations")?;
        let writer = match writer_path {
            Some(path) => Some(writer::Writer::start(path, durability).context("starting the SQLite writer")?),
            None => None,
        };
        tracing::debug!(url, ?durability, "SQLite store ready");
        Ok(SqliteStore { pool, writer })
    }

    /// Closes every connection, waiting for those in use to be returned. Later calls
    /// fail; an in-memory database is gone.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Whether `url` names an in-memory database (`sqlite::memory:`, `sqlite://:memory:`,
/// or `mode=memory`).
fn is_in_memory(url: &str) -> bool {
    let rest = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    database == ":memory:" || params.split('&').any(|p| p == "mode=memory")
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_user(&self, user: NewUser) -> StoreResult<User> {
        users::create_user(&self.pool, user).await
    }

    async fn user(&self, id: UserId) -> StoreResult<Option<User>> {
        users::user(&self.pool, id).await
    }

    async fn users(&self, ids: &[UserId]) -> StoreResult<Vec<User>> {
        users::users(&self.pool, ids).await
    }

    async fn credentials(&self, username: &str) -> StoreResult<Option<Credentials>> {
        users::credentials(&self.pool, username).await
    }

    async fn update_profile(&self, id: UserId, patch: ProfilePatch) -> StoreResult<User> {
        users::update_profile(&self.pool, id, patch).await
    }

    async fn search_users(&self, query: &str, limit: u32) -> StoreResult<Vec<User>> {
        users::search_users(&self.pool, query, limit).await
    }

    async fn set_last_seen(&self, id: UserId, at: Timestamp) -> StoreResult<()> {
        users::set_last_seen(&self.pool, id, at).await
    }

    async fn create_session(&self, session: Session) -> StoreResult<()> {
        users::create_session(&self.pool, session).await
    }

    async fn session(&self, id: SessionId) -> StoreResult<Option<Session>> {
        users::session(&self.pool, id).await
    }

    async fn rotate_refresh_token(
        &self,
        id: SessionId,
        current_hash: &str,
        new_hash: &str,
        new_expires_at: Timestamp,
        at: Timestamp,
    ) -> StoreResult<bool> {
        users::rotate_refresh_token(&self.pool, id, current_hash, new_hash, new_expires_at, at).await
    }

    async fn revoke_session(&self, id: SessionId, at: Timestamp) -> StoreResult<bool> {
        users::revoke_session(&self.pool, id, at).await
    }

    async fn create_conversation(&self, new: NewConversation) -> StoreResult<()> {
        conversations::create_conversation(&self.pool, new).await
    }

    async fn single_between(&self, a: UserId, b: UserId, viewer: UserId) -> StoreResult<Option<Conversation>> {
        conversations::single_between(&self.pool, a, b, viewer).await
    }

    async fn conversation(&self, id: ConversationId, viewer: UserId) -> StoreResult<Option<Conversation>> {
        conversations::conversation(&self.pool, id, viewer).await
    }

    async fn conversations_of(
        &self,
        user: UserId,
        before: Option<Timestamp>,
        limit: u32,
    ) -> StoreResult<Vec<Conversation>> {
        conversations::conversations_of(&self.pool, user, before, limit).await
    }

    async fn member_role(&self, id: ConversationId, user: UserId) -> StoreResult<Option<Role>> {
        conversations::member_role(&self.pool, id, user).await
    }

    async fn conversation_ids_of(&self, user: UserId) -> StoreResult<Vec<ConversationId>> {
        conversations::conversation_ids_of(&self.pool, user).await
    }

    async fn co_members_of(&self, user: UserId) -> StoreResult<Vec<UserId>> {
        conversations::co_members_of(&self.pool, user).await
    }

    async fn update_conversation(
        &self,
        id: ConversationId,
        name: Option<String>,
        avatar: Option<String>,
    ) -> StoreResult<()> {
        conversations::update_conversation(&self.pool, id, name, avatar).await
    }

    async fn add_members(
        &self,
        id: ConversationId,
        by: UserId,
        users: &[UserId],
        at: Timestamp,
    ) -> StoreResult<Option<Vec<UserId>>> {
        conversations::add_members(&self.pool, id, by, users, at).await
    }

    async fn remove_member(&self, id: ConversationId, by: UserId, target: UserId) -> StoreResult<Removal> {
        conversations::remove_member(&self.pool, id, by, target).await
    }

    async fn append_message(&self, new: NewMessage, pushes: Vec<PushJob>) -> StoreResult<Appended> {
        let Some(writer) = &self.writer else {
            return messages::append_message(&self.pool, new, pushes).await;
        };
        Ok(match writer.append(new, pushes).await? {
            writer::Outcome::Created(message) => Appended::Created(message),
            // Committed before the writer looked: the pool reads it whole (reactions, receipts).
            writer::Outcome::Existing(id) => {
                Appended::Existing(messages::message(&self.pool, id).await?.ok_or(StoreError::NotFound)?)
            }
            writer::Outcome::NotMember => Appended::NotMember,
        })
    }

    async fn message(&self, id: MessageId) -> StoreResult<Option<Message>> {
        messages::message(&self.pool, id).await
    }

    async fn history(
        &self,
        conversation: ConversationId,
        cursor: HistoryCursor,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        messages::history(&self.pool, conversation, cursor, limit).await
    }

    async fn edit_message(&self, id: MessageId, content: &str, at: Timestamp) -> StoreResult<Message> {
        messages::edit_message(&self.pool, id, content, at).await
    }

    async fn delete_message(&self, id: MessageId, at: Timestamp) -> StoreResult<Message> {
        messages::delete_message(&self.pool, id, at).await
    }

    async fn mark_read(
        &self,
        conversation: ConversationId,
        user: UserId,
        seq: i64,
        at: Timestamp,
    ) -> StoreResult<bool> {
        messages::mark_read(&self.pool, conversation, user, seq, at).await
    }

    async fn add_reaction(&self, message: MessageId, user: UserId, emoji: &str, at: Timestamp) -> StoreResult<bool> {
        messages::add_reaction(&self.pool, message, user, emoji, at).await
    }

    async fn remove_reaction(&self, message: MessageId, user: UserId, emoji: &str) -> StoreResult<bool> {
        messages::remove_reaction(&self.pool, message, user, emoji).await
    }

    async fn enqueue_pushes(&self, jobs: Vec<PushJob>) -> StoreResult<()> {
        pushes::enqueue_pushes(&self.pool, jobs).await
    }

    async fn claim_pushes(&self, now: Timestamp, lease_until: Timestamp, limit: u32) -> StoreResult<Vec<PushJob>> {
        pushes::claim_pushes(&self.pool, now, lease_until, limit).await
    }

    async fn push_delivered(&self, id: PushJobId, at: Timestamp) -> StoreResult<()> {
        pushes::push_delivered(&self.pool, id, at).await
    }

    async fn push_failed(
        &self,
        id: PushJobId,
        error: &str,
        next_attempt_at: Timestamp,
        give_up: bool,
        at: Timestamp,
    ) -> StoreResult<()> {
        pushes::push_failed(&self.pool, id, error, next_attempt_at, give_up, at).await
    }

    async fn pushes_for(&self, user: UserId) -> StoreResult<Vec<PushJob>> {
        pushes::pushes_for(&self.pool, user).await
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(db)?;
        Ok(())
    }
}

#[async_trait]
impl CallStore for SqliteStore {
    async fn create_call(&self, call: &Call) -> StoreResult<()> {
        calls::create_call(&self.pool, call).await
    }

    async fn call(&self, id: CallId) -> StoreResult<Option<Call>> {
        calls::call(&self.pool, id).await
    }

    async fn save_call(&self, call: &Call, expected_version: i64) -> StoreResult<bool> {
        calls::save_call(&self.pool, call, expected_version).await
    }

    async fn calls_of_conversation(
        &self,
        conversation: ConversationId,
        before: Option<Timestamp>,
        limit: u32,
    ) -> StoreResult<Vec<Call>> {
        calls::calls_of_conversation(&self.pool, conversation, before, limit).await
    }

    async fn live_calls_of(&self, user: UserId) -> StoreResult<Vec<Call>> {
        calls::live_calls_of(&self.pool, user).await
    }

    async fn live_calls(&self) -> StoreResult<Vec<Call>> {
        calls::live_calls(&self.pool).await
    }
}

#[cfg(test)]
mod tests {
    use super::is_in_memory;

    #[test]
    fn recognises_in_memory_urls() {
        assert!(is_in_memory("sqlite::memory:"));
        assert!(is_in_memory("sqlite://:memory:"));
        assert!(is_in_memory("sqlite://chat?mode=memory&cache=shared"));
        assert!(!is_in_memory("sqlite://data/quckchat.db"));
        assert!(!is_in_memory("sqlite:///var/lib/quckchat/memory.db"));
    }
}
