//! The one writer of message appends, with group commit.
//!
//! Why it is shaped so: through sqlx, an append was ~10 round trips to a pool
//! connection's worker thread (each a channel hop and a context switch) and every append
//! raced the others for SQLite's one write lock under `BEGIN IMMEDIATE` (waiting in the
//! busy handler's sleeps). Here a dedicated thread owns one rusqlite connection (the same
//! libsqlite3-sys that sqlx links) and its prepared statements; callers hand it jobs over
//! a channel and wait for their reply. Whatever queued while the last batch committed is
//! written as the next batch, in one transaction: no timer, so under light load a batch is
//! one append and its latency is one commit, and under heavy load one commit (one WAL
//! write, one fsync with `synchronous=FULL`) serves hundreds of appends. Each append runs
//! inside its own savepoint, so one that fails (an unknown conversation, a broken
//! reference) is rolled back alone and its neighbours commit. `seq` is assigned inside
//! the batch by the `UPDATE … RETURNING` of the conversation row, which this connection
//! alone writes to during the batch. A reply is sent only after COMMIT returned: an acked
//! message is in the WAL, which survives `kill -9` of the process (`synchronous=NORMAL`)
//! or a power loss too (`FULL`).
//!
//! Reads (history, `afterSeq`, a duplicate's stored copy) stay on sqlx's pool; WAL lets
//! them run beside the writer.

use std::path::PathBuf;
use std::time::Duration;

use quckchat_domain::model::{Message, NewMessage, PushJob};
use quckchat_domain::store::StoreResult;
use quckchat_domain::{MessageId, StoreError};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

/// The most appends written in one transaction. Bounds a batch's latency (its commit
/// waits for all of it) while keeping the per-commit cost spread thin.
const MAX_BATCH: usize = 512;

/// Appends waiting for the writer before senders wait for room (backpressure).
const QUEUE: usize = 8192;

/// The WAL size (in frames, ~4 KiB each) past which the checkpointer waits for readers to
/// truncate it: 64 MiB.
const WAL_LIMIT_FRAMES: i64 = 16_384;

/// How often the checkpointer copies the WAL back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// What an append came to, before the async side completes it. Moved once, through a
/// oneshot: boxing the large variant would only add an allocation per append.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Outcome {
    /// Stored with this `seq` (the message is the caller's, with the seq filled in).
    Created(Message),
    /// The sender's earlier message with the same `clientMessageId` (read by the caller).
    Existing(MessageId),
    /// The sender is not a member: nothing written.
    NotMember,
}

struct Job {
    new: NewMessage,
    pushes: Vec<PushJob>,
    reply: oneshot::Sender<StoreResult<Outcome>>,
}

/// The handle appends are sent through. Cloning it shares the one writer thread, which
/// ends when the last handle is dropped.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
}

/// How durable a commit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=NORMAL` in WAL: an acked write survives the process being killed; an
    /// OS crash or power loss may lose the last commits.
    #[default]
    Normal,
    /// `synchronous=FULL`: every commit is fsynced before it is acked.
    Full,
}

impl Durability {
    pub(crate) fn pragma(self) -> &'static str {
        match self {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        }
    }
}

impl Writer {
    /// Opens the writer's own connection to the (already migrated, WAL) database file and
    /// starts its thread and the checkpointer's.
    pub(crate) fn start(path: PathBuf, durability: Durability) -> anyhow::Result<Self> {
        let conn = open(&path, durability)?;
        // Checkpoints run off the commit path: the writer and the pool never checkpoint
        // (wal_autocheckpoint=0); this thread copies the WAL back on its own connection.
        let checkpointer = open(&path, durability)?;
        let (jobs, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new().name("sqlite-writer".into()).spawn(move || run(conn, rx))?;
        let alive = jobs.downgrade();
        std::thread::Builder::new().name("sqlite-checkpoint".into()).spawn(move || {
            while alive.upgrade().is_some() {
                std::thread::sleep(CHECKPOINT_EVERY);
                // PASSIVE never waits for anyone. The WAL starts over only when a checkpoint
                // caught up with no reader inside it; if steady readers keep that from
                // happening and it grows past WAL_LIMIT_FRAMES, TRUNCATE waits for them
                // (delaying the writer's next batch once) and gives the space back.
                let frames = checkpointer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1));
                match frames {
                    Ok(frames) if frames > WAL_LIMIT_FRAMES => {
                        if let Err(e) = checkpointer.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                            tracing::warn!(error = %e, frames, "WAL truncation failed");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
                }
            }
        })?;
        Ok(Self { jobs })
    }

    /// Queues an append and waits for its batch to commit.
    pub(crate) async fn append(&self, new: NewMessage, pushes: Vec<PushJob>) -> StoreResult<Outcome> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { new, pushes, reply }).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

fn gone() -> StoreError {
    StoreError::backend(std::io::Error::other("the SQLite writer has stopped"))
}

fn open(path: &PathBuf, durability: Durability) -> anyhow::Result<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(crate::BUSY_TIMEOUT)?;
    conn.execute_batch(&format!(
        "PRAGMA foreign_keys = ON; PRAGMA synchronous = {}; PRAGMA wal_autocheckpoint = 0;",
        durability.pragma()
    ))?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

fn run(conn: Connection, mut rx: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(job) = rx.blocking_recv() {
        batch.push(job);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(&conn, &mut batch);
    }
    tracing::debug!("SQLite writer stopped");
}

fn commit_batch(conn: &Connection, batch: &mut Vec<Job>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let e = db(e);
        for job in batch.drain(..) {
            let _ = job.reply.send(Err(copy(&e)));
        }
        return;
    }
    let mut done = Vec::with_capacity(batch.len());
    for job in batch.drain(..) {
        let result = in_savepoint(conn, |conn| append_one(conn, &job.new, &job.pushes));
        done.push((job, result));
    }
    match conn.execute_batch("COMMIT") {
        Ok(()) => {
            for (job, result) in done {
                let _ = job.reply.send(result);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "COMMIT of a batch of appends failed");
            let _ = conn.execute_batch("ROLLBACK");
            let e = db(e);
            for (job, _) in done {
                let _ = job.reply.send(Err(copy(&e)));
            }
        }
    }
}

/// Runs `f` in a savepoint, undoing its writes unless it stored a message.
fn in_savepoint(conn: &Connection, f: impl FnOnce(&Connection) -> StoreResult<Outcome>) -> StoreResult<Outcome> {
    conn.execute_batch("SAVEPOINT append").map_err(db)?;
    let result = f(conn);
    if !matches!(result, Ok(Outcome::Created(_))) {
        conn.execute_batch("ROLLBACK TO append").map_err(db)?;
    }
    conn.execute_batch("RELEASE append").map_err(db)?;
    result
}

fn append_one(conn: &Connection, new: &NewMessage, pushes: &[PushJob]) -> StoreResult<Outcome> {
    let conversation = new.conversation_id.to_string();
    let sender = new.sender_id.to_string();
    if let Some(client_id) = &new.client_message_id {
        let existing: Option<String> = conn
            .prepare_cached("SELECT id FROM messages WHERE sender_id = ?1 AND client_message_id = ?2")
            .map_err(db)?
            .query_row(params![sender, client_id], |r| r.get(0))
            .optional()
            .map_err(db)?;
        if let Some(existing) = existing {
            return Ok(Outcome::Existing(crate::codec::id(&existing)?));
        }
    }
    let (known, member): (bool, bool) = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM conversations WHERE id = ?1),
                    EXISTS (SELECT 1 FROM participants WHERE conversation_id = ?1 AND user_id = ?2)",
        )
        .map_err(db)?
        .query_row(params![conversation, sender], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(db)?;
    if !known {
        return Err(StoreError::NotFound);
    }
    if !member {
        return Ok(Outcome::NotMember);
    }
    let at = new.created_at.timestamp_millis();
    let seq: i64 = conn
        .prepare_cached(
            "UPDATE conversations SET last_seq = last_seq + 1, last_message_at = ?2, last_activity_at = ?2
              WHERE id = ?1 RETURNING last_seq",
        )
        .map_err(db)?
        .query_row(params![conversation, at], |r| r.get(0))
        .map_err(db)?;
    let attachments = serde_json::to_string(&new.attachments).map_err(StoreError::backend)?;
    conn.prepare_cached(
        "INSERT INTO messages (id, conversation_id, seq, sender_id, kind, content, attachments, reply_to,
                               client_message_id, created_at, edited_at, deleted_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL, NULL)",
    )
    .map_err(db)?
    .execute(params![
        new.id.to_string(),
        conversation,
        seq,
        sender,
        new.kind.as_str(),
        new.content,
        attachments,
        new.reply_to.map(|r| r.to_string()),
        new.client_message_id,
        at,
    ])
    .map_err(db)?;
    // Sending is reading: the sender has seen everything up to their own message.
    let moved = conn
        .prepare_cached(
            "UPDATE participants SET last_read_seq = ?3
              WHERE conversation_id = ?1 AND user_id = ?2 AND last_read_seq < ?3",
        )
        .map_err(db)?
        .execute(params![conversation, sender, seq])
        .map_err(db)?;
    if moved > 0 {
        conn.prepare_cached("INSERT INTO receipts (conversation_id, user_id, seq, read_at) VALUES (?1, ?2, ?3, ?4)")
            .map_err(db)?
            .execute(params![conversation, sender, seq, at])
            .map_err(db)?;
    }
    for job in pushes {
        conn.prepare_cached(
            "INSERT INTO push_jobs (id, user_id, kind, conversation_id, message_id, call_id, sender_id, sender_name,
                                    preview, created_at, attempts, next_attempt_at, delivered_at, failed_at, last_error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        )
        .map_err(db)?
        .execute(params![
            job.id.to_string(),
            job.user_id.to_string(),
            job.kind.as_str(),
            job.conversation_id.to_string(),
            job.message_id.map(|m| m.to_string()),
            job.call_id,
            job.sender_id.to_string(),
            job.sender_name,
            job.preview,
            job.created_at.timestamp_millis(),
            i64::from(job.attempts),
            job.next_attempt_at.timestamp_millis(),
            job.delivered_at.map(|t| t.timestamp_millis()),
            job.failed_at.map(|t| t.timestamp_millis()),
            job.last_error,
        ])
        .map_err(db)?;
    }
    Ok(Outcome::Created(new.clone().stored(seq)))
}

/// Maps a rusqlite error as [`crate::codec::db`] maps sqlx's.
fn db(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
        rusqlite::Error::SqliteFailure(f, msg) if f.code == ErrorCode::ConstraintViolation => match f.extended_code {
            rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                StoreError::Conflict(msg.clone().unwrap_or_else(|| "unique constraint".into()))
            }
            rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY => StoreError::NotFound,
            _ => StoreError::backend(e),
        },
        _ => StoreError::backend(e),
    }
}

/// The same failure for every append of a failed batch.
fn copy(e: &StoreError) -> StoreError {
    match e {
        StoreError::NotFound => StoreError::NotFound,
        StoreError::Conflict(m) => StoreError::Conflict(m.clone()),
        StoreError::Backend(b) => StoreError::backend(std::io::Error::other(b.to_string())),
    }
}
