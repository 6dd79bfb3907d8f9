//! Group commit of appends on PostgreSQL.
//!
//! Why it is shaped so: an append on its own is one statement but still one transaction,
//! so one WAL flush, and under load those flushes (and the per-statement overhead) were
//! what PostgreSQL spent its CPU on. Here one task writes appends: whatever queued while
//! its last batch ran goes out as the next batch, in **one statement** (so one round
//! trip and one commit for all of them). No timer: under light load a batch is one
//! append. The statement stores every append that is plainly fine (the sender is a
//! member, the `clientMessageId` unseen); `seq`s are numbered per conversation inside it
//! from the conversation rows it locks (`last_seq + k`), so they stay gap-free across
//! processes. A conversation row written while the batch waited for its lock (a
//! membership change, which writes it) is skipped, since the membership read before the
//! wait is stale. An append the batch did not store (a non-member, a retry, an unknown
//! conversation, such a skipped row), and every append of a batch that failed as a whole (a duplicate
//! committed meanwhile, a deadlock with another instance's batch), goes the one-by-one
//! path, which tells exactly which case it is and answers as before.

use std::collections::HashMap;
use std::sync::LazyLock;

use quckchat_domain::StoreError;
use quckchat_domain::model::{Appended, Message, NewMessage, PushJob, Timestamp};
use quckchat_domain::store::StoreResult;
use sqlx::{PgPool, Row};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::codec::{db, ts};
use crate::messages;
use crate::pushes::{JOB_COLUMNS, bind_jobs, jobs_select};

/// The most appends in one statement.
const MAX_BATCH: usize = 256;

/// Appends waiting for the writer before senders wait for room.
const QUEUE: usize = 8192;

struct Job {
    new: NewMessage,
    pushes: Vec<PushJob>,
    /// The append back, with its `seq` when the batch stored it.
    reply: oneshot::Sender<(NewMessage, Vec<PushJob>, Option<i64>)>,
}

/// The handle appends go through; the writer task ends with the last handle.
#[derive(Debug, Clone)]
pub(crate) struct Batcher {
    jobs: mpsc::Sender<Job>,
    pool: PgPool,
}

impl Batcher {
    /// Starts the writer task on `pool`.
    pub(crate) fn start(pool: PgPool) -> Self {
        let (jobs, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool.clone(), rx));
        Self { jobs, pool }
    }

    /// Appends through the next batch; what the batch did not store goes one by one.
    pub(crate) async fn append(&self, new: NewMessage, pushes: Vec<PushJob>) -> StoreResult<Appended> {
        let (reply, answer) = oneshot::channel();
        let job = Job { new, pushes, reply };
        let (new, pushes, seq) = match self.jobs.send(job).await {
            Ok(()) => answer.await.map_err(|_| gone())?,
            // The writer is gone (the runtime is shutting down): write it ourselves.
            Err(mpsc::error::SendError(job)) => (job.new, job.pushes, None),
        };
        match seq {
            Some(seq) => Ok(Appended::Created(created(new, seq))),
            None => messages::append_one(&self.pool, new, pushes).await,
        }
    }
}

fn gone() -> StoreError {
    StoreError::backend(std::io::Error::other("the PostgreSQL append writer stopped"))
}

fn created(new: NewMessage, seq: i64) -> Message {
    Message { created_at: ts(new.created_at), ..new.stored(seq) }
}

async fn run(pool: PgPool, mut rx: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(job) = rx.recv().await {
        batch.push(job);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let stored = match append_batch(&pool, &batch).await {
            Ok(stored) => stored,
            Err(e) => {
                // Each append then goes one by one, which answers for it exactly. An error
                // can also come after the commit (the connection lost while the answer was
                // on its way): what is stored then is read back, so that no stored message
                // is answered as a failure or as an old retry.
                tracing::debug!(error = %e, appends = batch.len(), "a batch of appends failed as a whole");
                stored_already(&pool, &batch).await.unwrap_or_default()
            }
        };
        for job in batch.drain(..) {
            let seq = stored.get(&job.new.id.as_uuid()).copied();
            let _ = job.reply.send((job.new, job.pushes, seq));
        }
    }
}

/// The appends of `batch` that are stored, with their `seq`s.
async fn stored_already(pool: &PgPool, batch: &[Job]) -> StoreResult<HashMap<Uuid, i64>> {
    let ids: Vec<Uuid> = batch.iter().map(|j| j.new.id.as_uuid()).collect();
    let rows =
        sqlx::query("SELECT id, seq FROM messages WHERE id = ANY($1)").bind(ids).fetch_all(pool).await.map_err(db)?;
    let mut stored = HashMap::with_capacity(rows.len());
    for row in rows {
        stored.insert(row.try_get::<Uuid, _>("id").map_err(db)?, row.try_get::<i64, _>("seq").map_err(db)?);
    }
    Ok(stored)
}

/// Stores the plainly fine appends of `batch` in one statement; their ids and `seq`s.
async fn append_batch(pool: &PgPool, batch: &[Job]) -> StoreResult<HashMap<Uuid, i64>> {
    static APPEND: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH input AS (
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[],
                                      $7::uuid[], $8::text[], $9::timestamptz[])
                     WITH ORDINALITY AS i(id, conversation_id, sender_id, kind, content, attachments, reply_to,
                                          client_message_id, created_at, n)
             ), ok AS (
                 SELECT i.* FROM input i
                  WHERE EXISTS (SELECT 1 FROM participants p
                                 WHERE p.conversation_id = i.conversation_id AND p.user_id = i.sender_id)
                    AND (i.client_message_id IS NULL
                         OR NOT EXISTS (SELECT 1 FROM messages m
                                         WHERE m.sender_id = i.sender_id AND m.client_message_id = i.client_message_id))
             ), counts AS (
                 SELECT ok.conversation_id, count(*) AS k, max(ok.created_at) AS at, c.xmin::text AS seen
                   FROM ok JOIN conversations c ON c.id = ok.conversation_id
                  GROUP BY ok.conversation_id, c.xmin::text
             ), conv AS (
                 -- `seen`: a conversation row written while we waited for its lock (a
                 -- membership change) makes the checks above stale: not stored here.
                 UPDATE conversations c
                    SET last_seq = c.last_seq + counts.k, last_message_at = counts.at, last_activity_at = counts.at
                   FROM counts WHERE c.id = counts.conversation_id AND c.xmin::text = counts.seen
                 RETURNING c.id, c.last_seq AS top, counts.k
             ), numbered AS (
                 SELECT ok.*, conv.top - conv.k + row_number() OVER (PARTITION BY ok.conversation_id ORDER BY ok.n) AS seq
                   FROM ok JOIN conv ON conv.id = ok.conversation_id
             ), msg AS (
                 INSERT INTO messages (id, conversation_id, seq, sender_id, kind, content, attachments, reply_to,
                                       client_message_id, created_at)
                 SELECT id, conversation_id, seq, sender_id, kind, content, attachments::jsonb, reply_to,
                        client_message_id, created_at
                   FROM numbered
                 RETURNING id, conversation_id, sender_id, seq, created_at
             ), pointer AS (
                 UPDATE participants p SET last_read_seq = x.seq
                   FROM (SELECT conversation_id, sender_id, max(seq) AS seq FROM msg GROUP BY conversation_id, sender_id) x
                  WHERE p.conversation_id = x.conversation_id AND p.user_id = x.sender_id AND p.last_read_seq < x.seq
             ), receipt AS (
                 INSERT INTO receipts (conversation_id, user_id, seq, read_at)
                 SELECT m.conversation_id, m.sender_id, m.seq, m.created_at
                   FROM msg m JOIN participants p ON p.conversation_id = m.conversation_id AND p.user_id = m.sender_id
                  WHERE p.last_read_seq < m.seq
             ), jobs AS (
                 INSERT INTO push_jobs ({JOB_COLUMNS})
                 SELECT {JOB_COLUMNS} FROM ({jobs}) j
                   JOIN UNNEST($25::uuid[]) WITH ORDINALITY AS owner(message, n) ON owner.n = j.n
                  WHERE owner.message IN (SELECT id FROM msg)
                  ORDER BY j.n
             )
             SELECT id, seq FROM msg",
            jobs = jobs_select(10),
        )
    });
    let news: Vec<&NewMessage> = batch.iter().map(|j| &j.new).collect();
    let mut attachments = Vec::with_capacity(news.len());
    for n in &news {
        attachments.push(serde_json::to_string(&n.attachments).map_err(StoreError::backend)?);
    }
    // Each push job goes with its append (`$25`, by position): stored only if it is.
    let pushes: Vec<PushJob> = batch.iter().flat_map(|j| j.pushes.iter().cloned()).collect();
    let owners: Vec<Uuid> =
        batch.iter().flat_map(|j| std::iter::repeat_n(j.new.id.as_uuid(), j.pushes.len())).collect();
    let query = sqlx::query(APPEND.as_str())
        .bind(news.iter().map(|n| n.id.as_uuid()).collect::<Vec<_>>())
        .bind(news.iter().map(|n| n.conversation_id.as_uuid()).collect::<Vec<_>>())
        .bind(news.iter().map(|n| n.sender_id.as_uuid()).collect::<Vec<_>>())
        .bind(news.iter().map(|n| n.kind.as_str()).collect::<Vec<_>>())
        .bind(news.iter().map(|n| n.content.as_str()).collect::<Vec<_>>())
        .bind(attachments)
        .bind(news.iter().map(|n| n.reply_to.map(|r| r.as_uuid())).collect::<Vec<_>>())
        .bind(news.iter().map(|n| n.client_message_id.as_deref()).collect::<Vec<_>>())
        .bind(news.iter().map(|n| ts(n.created_at)).collect::<Vec<Timestamp>>());
    let rows = bind_jobs(query, &pushes).bind(owners).fetch_all(pool).await.map_err(db)?;
    let mut stored = HashMap::with_capacity(rows.len());
    for row in rows {
        stored.insert(row.try_get::<Uuid, _>("id").map_err(db)?, row.try_get::<i64, _>("seq").map_err(db)?);
    }
    Ok(stored)
}
