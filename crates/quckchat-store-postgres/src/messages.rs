//! Messages, read pointers and receipts, reactions.

use std::collections::HashMap;
use std::sync::LazyLock;

use async_trait::async_trait;
use quckchat_domain::model::{
    Appended, Attachment, Message, MessageKind, NewMessage, PushJob, Reaction, ReadReceipt, Timestamp,
};
use quckchat_domain::receipts::ReceiptIndex;
use quckchat_domain::store::{HistoryCursor, MessageStore, StoreResult};
use quckchat_domain::{ConversationId, MessageId, StoreError, UserId};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::PostgresStore;
use crate::codec::{corrupt, db, get, id, opt_id, ts, violates, wire};
use crate::pushes::insert_jobs;
use crate::read_tx;

/// The columns of a message; attachments are read as JSON text.
macro_rules! message_columns {
    () => {
        "id, conversation_id, seq, sender_id, kind, content, attachments::text AS attachments,
         reply_to, client_message_id, created_at, edited_at, deleted_at"
    };
}

/// How many times an append starts over after losing a race that only the unique index
/// on `(sender_id, client_message_id)` saw (the same id sent to two conversations at
/// once). One retry always suffices: the winner has committed by the time the loser
/// fails, so the retry finds its message.
const APPEND_ATTEMPTS: usize = 3;

fn attachments_json(attachments: &[Attachment]) -> StoreResult<String> {
    serde_json::to_string(attachments).map_err(StoreError::backend)
}

/// A message row, its reactions and receipts still to be filled in.
fn message_from_row(row: &PgRow) -> StoreResult<Message> {
    let attachments: &str = get(row, "attachments")?;
    Ok(Message {
        id: id(row, "id")?,
        conversation_id: id(row, "conversation_id")?,
        sender_id: id(row, "sender_id")?,
        seq: get(row, "seq")?,
        kind: wire(row, "kind", MessageKind::parse)?,
        content: get(row, "content")?,
        attachments: serde_json::from_str(attachments).map_err(|e| corrupt(format!("attachments: {e}")))?,
        reply_to: opt_id(row, "reply_to")?,
        client_message_id: get(row, "client_message_id")?,
        reactions: Vec::new(),
        read_by: Vec::new(),
        created_at: get(row, "created_at")?,
        edited_at: get(row, "edited_at")?,
        deleted_at: get(row, "deleted_at")?,
    })
}

/// Decodes message rows and fills in their reactions and readers: one query for the
/// reactions of all of them and one for the receipts of each conversation involved.
async fn complete(conn: &mut PgConnection, rows: Vec<PgRow>) -> StoreResult<Vec<Message>> {
    let mut messages = rows.iter().map(message_from_row).collect::<StoreResult<Vec<_>>>()?;
    if messages.is_empty() {
        return Ok(messages);
    }

    let ids: Vec<Uuid> = messages.iter().map(|m| m.id.as_uuid()).collect();
    let reaction_rows = sqlx::query(
        "SELECT message_id, emoji, user_id FROM reactions
          WHERE message_id = ANY($1)
          ORDER BY created_at, ord",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    let mut reactions: HashMap<MessageId, Vec<Reaction>> = HashMap::new();
    for row in &reaction_rows {
        let message: MessageId = id(row, "message_id")?;
        reactions
            .entry(message)
            .or_default()
            .push(Reaction { emoji: get(row, "emoji")?, user_id: id(row, "user_id")? });
    }

    let mut seq_range: HashMap<ConversationId, (i64, i64)> = HashMap::new();
    for m in &messages {
        let range = seq_range.entry(m.conversation_id).or_insert((m.seq, m.seq));
        *range = (range.0.min(m.seq), range.1.max(m.seq));
    }
    let mut readers: HashMap<ConversationId, Readers> = HashMap::new();
    for (conversation, (low, high)) in seq_range {
        readers.insert(conversation, Readers::load(conn, conversation, low, high).await?);
    }

    for m in &mut messages {
        m.reactions = reactions.remove(&m.id).unwrap_or_default();
        if let Some(r) = readers.get(&m.conversation_id) {
            m.read_by = r.of(m);
        }
    }
    Ok(messages)
}

/// Each reader's receipts in a conversation, enough to answer "when did this user's
/// pointer first reach seq N" for every N in a range.
struct Readers {
    /// Per user: receipts by ascending seq, each with the earliest read time of it and
    /// every later receipt (the suffix minimum).
    index: ReceiptIndex,
}

impl Readers {
    /// Receipts with seq in `low..=high`, plus, per user, one summary of everything
    /// above `high` (the earliest time the pointer went past it), so that the rows read
    /// stay bounded by the page, not by the conversation's length.
    async fn load(conn: &mut PgConnection, conversation: ConversationId, low: i64, high: i64) -> StoreResult<Self> {
        let rows = sqlx::query(
            "SELECT user_id, seq, read_at FROM receipts
              WHERE conversation_id = $1 AND seq BETWEEN $2 AND $3
             UNION ALL
             SELECT user_id, $3::bigint + 1, MIN(read_at) FROM receipts
              WHERE conversation_id = $1 AND seq > $3
              GROUP BY user_id",
        )
        .bind(conversation.as_uuid())
        .bind(low)
        .bind(high)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
        let mut receipts = Vec::with_capacity(rows.len());
        for row in &rows {
            let user: UserId = id(row, "user_id")?;
            let seq: i64 = get(row, "seq")?;
            let read_at: Timestamp = get(row, "read_at")?;
            receipts.push((user, seq, read_at));
        }
        Ok(Self { index: ReceiptIndex::new(receipts) })
    }

    /// Who read `message` (never its sender) and when first, earliest first.
    fn of(&self, message: &Message) -> Vec<ReadReceipt> {
        self.index.read_by(message)
    }
}

/// One message by id, whole, on the given connection.
async fn load(conn: &mut PgConnection, message: MessageId) -> StoreResult<Option<Message>> {
    let rows = sqlx::query(concat!("SELECT ", message_columns!(), " FROM messages WHERE id = $1"))
        .bind(message.as_uuid())
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
    Ok(complete(conn, rows).await?.into_iter().next())
}

/// Moves `user`'s pointer in `conversation` up to `seq` and records the receipt, when
/// that is a move up; returns whether it moved. The conditional UPDATE takes the
/// participant row's lock, so of concurrent moves each sees the one before it.
async fn advance_pointer(
    conn: &mut PgConnection,
    conversation: ConversationId,
    user: UserId,
    seq: i64,
    at: Timestamp,
) -> StoreResult<bool> {
    let moved: Option<i64> = sqlx::query_scalar(
        "UPDATE participants SET last_read_seq = $3
          WHERE conversation_id = $1 AND user_id = $2 AND last_read_seq < $3
         RETURNING last_read_seq",
    )
    .bind(conversation.as_uuid())
    .bind(user.as_uuid())
    .bind(seq)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?;
    if moved.is_none() {
        return Ok(false);
    }
    sqlx::query("INSERT INTO receipts (conversation_id, user_id, seq, read_at) VALUES ($1, $2, $3, $4)")
        .bind(conversation.as_uuid())
        .bind(user.as_uuid())
        .bind(seq)
        .bind(ts(at))
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(true)
}

pub(crate) async fn append_one(pool: &PgPool, new: NewMessage, pushes: Vec<PushJob>) -> StoreResult<Appended> {
    if let Some(appended) = append_in_one_statement(pool, &new, &pushes).await? {
        return Ok(appended);
    }
    for _ in 0..APPEND_ATTEMPTS {
        if let Some(appended) = try_append(pool, &new, &pushes).await? {
            return Ok(appended);
        }
    }
    Err(StoreError::Conflict("the clientMessageId kept colliding with concurrent appends".into()))
}

/// The whole append of the common case as one statement, so one round trip (the
/// transaction path below takes eight): data-modifying CTEs that take the conversation's
/// next `seq` (its row lock queues other appends to it, from any process, as in
/// [`try_append`]) only when the sender is a member and has not sent this
/// `clientMessageId`, then insert the message, move the sender's read pointer, record the
/// receipt and queue the pushes, each only if the one before it happened. `None` when it
/// stored nothing (an unknown conversation, a non-member, a retry, a duplicate committed
/// while we waited for the lock, which the unique index refuses, or a conversation row
/// written meanwhile, which makes the membership read stale): the transaction path then
/// works out which, and answers exactly as before.
async fn append_in_one_statement(pool: &PgPool, new: &NewMessage, pushes: &[PushJob]) -> StoreResult<Option<Appended>> {
    static APPEND: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH conv AS (
                 UPDATE conversations SET last_seq = last_seq + 1, last_message_at = $9, last_activity_at = $9
                  WHERE id = $2
                    -- The row as this statement's snapshot saw it: if a membership change
                    -- (or anything else) wrote it while we waited for its lock, the check
                    -- below is stale, so store nothing and let the caller take the slow path.
                    AND xmin::text = (SELECT xmin::text FROM conversations WHERE id = $2)
                    AND EXISTS (SELECT 1 FROM participants WHERE conversation_id = $2 AND user_id = $3)
                    AND ($8::text IS NULL
                         OR NOT EXISTS (SELECT 1 FROM messages WHERE sender_id = $3 AND client_message_id = $8))
                 RETURNING last_seq
             ), msg AS (
                 INSERT INTO messages (id, conversation_id, seq, sender_id, kind, content, attachments,
                                       reply_to, client_message_id, created_at)
                 SELECT $1, $2, last_seq, $3, $4, $5, $6::jsonb, $7, $8, $9 FROM conv
                 RETURNING seq
             ), pointer AS (
                 UPDATE participants p SET last_read_seq = msg.seq FROM msg
                  WHERE p.conversation_id = $2 AND p.user_id = $3 AND p.last_read_seq < msg.seq
                 RETURNING msg.seq
             ), receipt AS (
                 INSERT INTO receipts (conversation_id, user_id, seq, read_at) SELECT $2, $3, seq, $9 FROM pointer
             ), jobs AS (
                 INSERT INTO push_jobs ({columns})
                 SELECT {columns} FROM ({jobs}) j CROSS JOIN msg ORDER BY j.n
             )
             SELECT seq FROM msg",
            columns = crate::pushes::JOB_COLUMNS,
            jobs = crate::pushes::jobs_select(10),
        )
    });
    let created_at = ts(new.created_at);
    let query = sqlx::query(APPEND.as_str())
        .bind(new.id.as_uuid())
        .bind(new.conversation_id.as_uuid())
        .bind(new.sender_id.as_uuid())
        .bind(new.kind.as_str())
        .bind(&new.content)
        .bind(attachments_json(&new.attachments)?)
        .bind(new.reply_to.map(|r| r.as_uuid()))
        .bind(&new.client_message_id)
        .bind(created_at);
    let seq: Option<i64> = match crate::pushes::bind_jobs(query, pushes).fetch_optional(pool).await {
        Ok(row) => row.map(|row| get(&row, "seq")).transpose()?,
        Err(e) if violates(&e, "messages_by_client_id") => return Ok(None),
        Err(e) => return Err(db(e)),
    };
    Ok(seq.map(|seq| Appended::Created(Message { created_at, ..new.clone().stored(seq) })))
}

/// One attempt at an append: the new message, or the sender's earlier one with the same
/// `clientMessageId`; `None` when the unique index on `(sender_id, client_message_id)`
/// refused the insert because another append of that id committed meanwhile (start over).
async fn try_append(pool: &PgPool, new: &NewMessage, pushes: &[PushJob]) -> StoreResult<Option<Appended>> {
    let mut tx = pool.begin().await.map_err(db)?;

    // The increment comes first: its row lock queues every other append to this
    // conversation, from any process, until this transaction ends, so the seq it
    // returns is the next one, without gaps or repeats.
    let created_at = ts(new.created_at);
    let seq: i64 = sqlx::query_scalar(
        "UPDATE conversations
            SET last_seq = last_seq + 1, last_message_at = $2, last_activity_at = $2
          WHERE id = $1
         RETURNING last_seq",
    )
    .bind(new.conversation_id.as_uuid())
    .bind(created_at)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db)?
    .ok_or(StoreError::NotFound)?;

    // Then the duplicate check. Under READ COMMITTED this statement sees everything
    // committed before it started, including a duplicate appended by whoever held the
    // conversation's lock before us. Rolling back undoes the increment.
    if let Some(client_id) = &new.client_message_id {
        let existing: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM messages WHERE sender_id = $1 AND client_message_id = $2")
                .bind(new.sender_id.as_uuid())
                .bind(client_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        if let Some(existing) = existing {
            let message = load(&mut tx, MessageId::from_uuid(existing)).await?.ok_or(StoreError::NotFound)?;
            tx.rollback().await.map_err(db)?;
            return Ok(Some(Appended::Existing(message)));
        }
    }

    // Membership, read after the conversation's row lock is ours: a removal (which locks
    // that row too) either committed before this statement's snapshot or waits for us, so
    // an instance whose cached membership is stale cannot store a removed member's message.
    let member: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM participants WHERE conversation_id = $1 AND user_id = $2)")
            .bind(new.conversation_id.as_uuid())
            .bind(new.sender_id.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
    if !member {
        tx.rollback().await.map_err(db)?;
        return Ok(Some(Appended::NotMember));
    }

    let inserted = sqlx::query(
        "INSERT INTO messages (id, conversation_id, seq, sender_id, kind, content, attachments,
                               reply_to, client_message_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10)",
    )
    .bind(new.id.as_uuid())
    .bind(new.conversation_id.as_uuid())
    .bind(seq)
    .bind(new.sender_id.as_uuid())
    .bind(new.kind.as_str())
    .bind(&new.content)
    .bind(attachments_json(&new.attachments)?)
    .bind(new.reply_to.map(|r| r.as_uuid()))
    .bind(&new.client_message_id)
    .bind(created_at)
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {}
        // The same (sender, clientMessageId) committed meanwhile in another conversation,
        // whose lock we do not hold. Dropping the transaction rolls it back.
        Err(e) if violates(&e, "messages_by_client_id") => return Ok(None),
        Err(e) => return Err(db(e)),
    }

    // Sending is reading: the sender has seen everything up to their own message.
    advance_pointer(&mut tx, new.conversation_id, new.sender_id, seq, new.created_at).await?;
    insert_jobs(&mut tx, pushes).await?;
    tx.commit().await.map_err(db)?;

    Ok(Some(Appended::Created(Message { created_at, ..new.clone().stored(seq) })))
}

#[async_trait]
impl MessageStore for PostgresStore {
    async fn append_message(&self, new: NewMessage, pushes: Vec<PushJob>) -> StoreResult<Appended> {
        self.batcher.append(new, pushes).await
    }

    async fn message(&self, message: MessageId) -> StoreResult<Option<Message>> {
        let pool = &self.pool;
        // One snapshot: the message, its reactions and receipts as of one moment.
        let mut tx = read_tx(pool).await?;
        let found = load(&mut tx, message).await?;
        tx.commit().await.map_err(db)?;
        Ok(found)
    }

    async fn history(
        &self,
        conversation: ConversationId,
        cursor: HistoryCursor,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        let pool = &self.pool;
        let mut tx = read_tx(pool).await?;
        let limit = i64::from(limit);
        let query = match cursor {
            HistoryCursor::Latest => sqlx::query(concat!(
                "SELECT ",
                message_columns!(),
                " FROM messages WHERE conversation_id = $1 ORDER BY seq DESC LIMIT $2"
            ))
            .bind(conversation.as_uuid())
            .bind(limit),
            HistoryCursor::Before(anchor) => sqlx::query(concat!(
                "SELECT ",
                message_columns!(),
                " FROM messages
                 WHERE conversation_id = $1
                   AND seq < (SELECT seq FROM messages WHERE id = $2 AND conversation_id = $1)
                 ORDER BY seq DESC LIMIT $3"
            ))
            .bind(conversation.as_uuid())
            .bind(anchor.as_uuid())
            .bind(limit),
            HistoryCursor::AfterSeq(after) => sqlx::query(concat!(
                "SELECT ",
                message_columns!(),
                " FROM messages WHERE conversation_id = $1 AND seq > $2 ORDER BY seq ASC LIMIT $3"
            ))
            .bind(conversation.as_uuid())
            .bind(after)
            .bind(limit),
        };
        let rows = query.fetch_all(&mut *tx).await.map_err(db)?;
        let page = complete(&mut tx, rows).await?;
        tx.commit().await.map_err(db)?;
        Ok(page)
    }

    async fn edit_message(&self, message: MessageId, content: &str, at: Timestamp) -> StoreResult<Message> {
        let pool = &self.pool;
        let mut tx = pool.begin().await.map_err(db)?;
        let done = sqlx::query("UPDATE messages SET content = $2, edited_at = $3 WHERE id = $1")
            .bind(message.as_uuid())
            .bind(content)
            .bind(ts(at))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        let edited = load(&mut tx, message).await?.ok_or(StoreError::NotFound)?;
        tx.commit().await.map_err(db)?;
        Ok(edited)
    }

    async fn delete_message(&self, message: MessageId, at: Timestamp) -> StoreResult<Message> {
        let pool = &self.pool;
        let mut tx = pool.begin().await.map_err(db)?;
        let done = sqlx::query(
            "UPDATE messages
            SET content = '', attachments = '[]'::jsonb, deleted_at = COALESCE(deleted_at, $2)
          WHERE id = $1",
        )
        .bind(message.as_uuid())
        .bind(ts(at))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query("DELETE FROM reactions WHERE message_id = $1")
            .bind(message.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let deleted = load(&mut tx, message).await?.ok_or(StoreError::NotFound)?;
        tx.commit().await.map_err(db)?;
        Ok(deleted)
    }

    async fn mark_read(
        &self,
        conversation: ConversationId,
        user: UserId,
        seq: i64,
        at: Timestamp,
    ) -> StoreResult<bool> {
        let pool = &self.pool;
        let mut tx = pool.begin().await.map_err(db)?;
        // Never past the newest message: a pointer ahead of it would mark future messages
        // read. No lock is needed: a concurrent append only makes the clamp conservative.
        let last_seq: Option<i64> = sqlx::query_scalar("SELECT last_seq FROM conversations WHERE id = $1")
            .bind(conversation.as_uuid())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let Some(last_seq) = last_seq else {
            return Ok(false);
        };
        let moved = advance_pointer(&mut tx, conversation, user, seq.min(last_seq), at).await?;
        tx.commit().await.map_err(db)?;
        Ok(moved)
    }

    async fn add_reaction(&self, message: MessageId, user: UserId, emoji: &str, at: Timestamp) -> StoreResult<bool> {
        let pool = &self.pool;
        let done = sqlx::query(
            "INSERT INTO reactions (message_id, user_id, emoji, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (message_id, user_id, emoji) DO NOTHING",
        )
        .bind(message.as_uuid())
        .bind(user.as_uuid())
        .bind(emoji)
        .bind(ts(at))
        .execute(pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn remove_reaction(&self, message: MessageId, user: UserId, emoji: &str) -> StoreResult<bool> {
        let pool = &self.pool;
        let done = sqlx::query("DELETE FROM reactions WHERE message_id = $1 AND user_id = $2 AND emoji = $3")
            .bind(message.as_uuid())
            .bind(user.as_uuid())
            .bind(emoji)
            .execute(pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }
}
