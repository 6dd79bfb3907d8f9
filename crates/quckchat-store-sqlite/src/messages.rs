//! Messages, read pointers and receipts, reactions.

use std::collections::HashMap;

use async_trait::async_trait;
use quckchat_domain::model::{
    Appended, Attachment, Message, MessageKind, NewMessage, PushJob, Reaction, ReadReceipt, Timestamp,
};
use quckchat_domain::receipts::ReceiptIndex;
use quckchat_domain::store::{HistoryCursor, MessageStore, StoreResult};
use quckchat_domain::{ConversationId, MessageId, StoreError, UserId};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection, SqlitePool};

use crate::SqliteStore;
use crate::codec::{corrupt, db, id, id_list, ms, opt_id, opt_time, time};
use crate::pushes::insert_jobs;

macro_rules! message_columns {
    () => {
        "id, conversation_id, seq, sender_id, kind, content, attachments, reply_to, client_message_id,
         created_at, edited_at, deleted_at"
    };
}

fn attachments_json(attachments: &[Attachment]) -> StoreResult<String> {
    serde_json::to_string(attachments).map_err(StoreError::backend)
}

/// A message row, its reactions and receipts still to be filled in.
fn message_from_row(row: &SqliteRow) -> StoreResult<Message> {
    let kind: String = row.try_get("kind").map_err(db)?;
    let attachments: String = row.try_get("attachments").map_err(db)?;
    Ok(Message {
        id: id(row.try_get("id").map_err(db)?)?,
        conversation_id: id(row.try_get("conversation_id").map_err(db)?)?,
        sender_id: id(row.try_get("sender_id").map_err(db)?)?,
        seq: row.try_get("seq").map_err(db)?,
        kind: MessageKind::parse(&kind).ok_or_else(|| corrupt(format!("message kind {kind:?}")))?,
        content: row.try_get("content").map_err(db)?,
        attachments: serde_json::from_str(&attachments).map_err(|e| corrupt(format!("attachments: {e}")))?,
        reply_to: opt_id(row.try_get::<Option<&str>, _>("reply_to").map_err(db)?)?,
        client_message_id: row.try_get("client_message_id").map_err(db)?,
        reactions: Vec::new(),
        read_by: Vec::new(),
        created_at: time(row.try_get("created_at").map_err(db)?)?,
        edited_at: opt_time(row.try_get("edited_at").map_err(db)?)?,
        deleted_at: opt_time(row.try_get("deleted_at").map_err(db)?)?,
    })
}

/// Decodes message rows and fills in their reactions and readers: one query for the
/// reactions of all of them and one for the receipts of each conversation involved.
async fn complete(conn: &mut SqliteConnection, rows: Vec<SqliteRow>) -> StoreResult<Vec<Message>> {
    let mut messages = rows.iter().map(message_from_row).collect::<StoreResult<Vec<_>>>()?;
    if messages.is_empty() {
        return Ok(messages);
    }

    let reaction_rows = sqlx::query(
        "SELECT message_id, emoji, user_id FROM reactions
          WHERE message_id IN (SELECT value FROM json_each(?1))
          ORDER BY created_at, rowid",
    )
    .bind(id_list(messages.iter().map(|m| m.id)))
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    let mut reactions: HashMap<MessageId, Vec<Reaction>> = HashMap::new();
    for row in &reaction_rows {
        let message: MessageId = id(row.try_get("message_id").map_err(db)?)?;
        reactions.entry(message).or_default().push(Reaction {
            emoji: row.try_get("emoji").map_err(db)?,
            user_id: id(row.try_get("user_id").map_err(db)?)?,
        });
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
    async fn load(conn: &mut SqliteConnection, conversation: ConversationId, low: i64, high: i64) -> StoreResult<Self> {
        let rows = sqlx::query(
            "SELECT user_id, seq, read_at FROM receipts
              WHERE conversation_id = ?1 AND seq BETWEEN ?2 AND ?3
             UNION ALL
             SELECT user_id, ?3 + 1, MIN(read_at) FROM receipts
              WHERE conversation_id = ?1 AND seq > ?3
              GROUP BY user_id",
        )
        .bind(conversation.to_string())
        .bind(low)
        .bind(high)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
        let mut receipts = Vec::with_capacity(rows.len());
        for row in &rows {
            let user: UserId = id(row.try_get("user_id").map_err(db)?)?;
            let seq: i64 = row.try_get(1).map_err(db)?;
            let read_at = time(row.try_get(2).map_err(db)?)?;
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
async fn load(conn: &mut SqliteConnection, message: MessageId) -> StoreResult<Option<Message>> {
    let rows = sqlx::query(concat!("SELECT ", message_columns!(), " FROM messages WHERE id = ?1"))
        .bind(message.to_string())
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
    Ok(complete(conn, rows).await?.into_iter().next())
}

/// Moves `user`'s pointer in `conversation` up to `seq` and records the receipt, when
/// that is a move up; returns whether it moved.
async fn advance_pointer(
    conn: &mut SqliteConnection,
    conversation: ConversationId,
    user: UserId,
    seq: i64,
    at: Timestamp,
) -> StoreResult<bool> {
    let moved: Option<i64> = sqlx::query_scalar(
        "UPDATE participants SET last_read_seq = ?3
          WHERE conversation_id = ?1 AND user_id = ?2 AND last_read_seq < ?3
         RETURNING last_read_seq",
    )
    .bind(conversation.to_string())
    .bind(user.to_string())
    .bind(seq)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?;
    if moved.is_none() {
        return Ok(false);
    }
    sqlx::query("INSERT INTO receipts (conversation_id, user_id, seq, read_at) VALUES (?1, ?2, ?3, ?4)")
        .bind(conversation.to_string())
        .bind(user.to_string())
        .bind(seq)
        .bind(ms(at))
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(true)
}

pub(crate) async fn append_in_pool(pool: &SqlitePool, new: NewMessage, pushes: Vec<PushJob>) -> StoreResult<Appended> {
    // IMMEDIATE takes the write lock up front (waiting up to the busy timeout), so the
    // duplicate check, the seq increment and the inserts see no other writer: seqs are
    // gap-free and a clientMessageId is stored once, however many appends race.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;

    if let Some(client_id) = &new.client_message_id {
        let existing: Option<String> =
            sqlx::query_scalar("SELECT id FROM messages WHERE sender_id = ?1 AND client_message_id = ?2")
                .bind(new.sender_id.to_string())
                .bind(client_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        if let Some(existing) = existing {
            let message = load(&mut tx, id(&existing)?).await?.ok_or(StoreError::NotFound)?;
            tx.rollback().await.map_err(db)?;
            return Ok(Appended::Existing(message));
        }
    }

    let (known, member): (bool, bool) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM conversations WHERE id = ?1),
                EXISTS (SELECT 1 FROM participants WHERE conversation_id = ?1 AND user_id = ?2)",
    )
    .bind(new.conversation_id.to_string())
    .bind(new.sender_id.to_string())
    .fetch_one(&mut *tx)
    .await
    .map_err(db)?;
    if !known {
        return Err(StoreError::NotFound);
    }
    if !member {
        tx.rollback().await.map_err(db)?;
        return Ok(Appended::NotMember);
    }

    let seq: i64 = sqlx::query_scalar(
        "UPDATE conversations
            SET last_seq = last_seq + 1, last_message_at = ?2, last_activity_at = ?2
          WHERE id = ?1
         RETURNING last_seq",
    )
    .bind(new.conversation_id.to_string())
    .bind(ms(new.created_at))
    .fetch_optional(&mut *tx)
    .await
    .map_err(db)?
    .ok_or(StoreError::NotFound)?;

    sqlx::query(concat!(
        "INSERT INTO messages (",
        message_columns!(),
        ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL, NULL)"
    ))
    .bind(new.id.to_string())
    .bind(new.conversation_id.to_string())
    .bind(seq)
    .bind(new.sender_id.to_string())
    .bind(new.kind.as_str())
    .bind(&new.content)
    .bind(attachments_json(&new.attachments)?)
    .bind(new.reply_to.map(|r| r.to_string()))
    .bind(&new.client_message_id)
    .bind(ms(new.created_at))
    .execute(&mut *tx)
    .await
    .map_err(db)?;

    // Sending is reading: the sender has seen everything up to their own message.
    advance_pointer(&mut tx, new.conversation_id, new.sender_id, seq, new.created_at).await?;
    insert_jobs(&mut tx, &pushes).await?;
    tx.commit().await.map_err(db)?;

    Ok(Appended::Created(new.stored(seq)))
}

#[async_trait]
impl MessageStore for SqliteStore {
    async fn append_message(&self, new: NewMessage, pushes: Vec<PushJob>) -> StoreResult<Appended> {
        let Some(writer) = &self.writer else {
            return append_in_pool(&self.pool, new, pushes).await;
        };
        Ok(match writer.append(new, pushes).await? {
            crate::writer::Outcome::Created(message) => Appended::Created(message),
            // Committed before the writer looked: the pool reads it whole (reactions, receipts).
            crate::writer::Outcome::Existing(id) => {
                Appended::Existing(self.message(id).await?.ok_or(StoreError::NotFound)?)
            }
            crate::writer::Outcome::NotMember => Appended::NotMember,
        })
    }

    async fn message(&self, message: MessageId) -> StoreResult<Option<Message>> {
        let pool = &self.pool;
        // A read transaction: the message, its reactions and receipts from one snapshot.
        let mut tx = pool.begin().await.map_err(db)?;
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
        let mut tx = pool.begin().await.map_err(db)?;
        let limit = i64::from(limit);
        let query = match cursor {
            HistoryCursor::Latest => sqlx::query(concat!(
                "SELECT ",
                message_columns!(),
                " FROM messages WHERE conversation_id = ?1 ORDER BY seq DESC LIMIT ?2"
            ))
            .bind(conversation.to_string())
            .bind(limit),
            HistoryCursor::Before(anchor) => sqlx::query(concat!(
                "SELECT ",
                message_columns!(),
                " FROM messages
                 WHERE conversation_id = ?1
                   AND seq < (SELECT seq FROM messages WHERE id = ?2 AND conversation_id = ?1)
                 ORDER BY seq DESC LIMIT ?3"
            ))
            .bind(conversation.to_string())
            .bind(anchor.to_string())
            .bind(limit),
            HistoryCursor::AfterSeq(after) => sqlx::query(concat!(
                "SELECT ",
                message_columns!(),
                " FROM messages WHERE conversation_id = ?1 AND seq > ?2 ORDER BY seq ASC LIMIT ?3"
            ))
            .bind(conversation.to_string())
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
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let done = sqlx::query("UPDATE messages SET content = ?2, edited_at = ?3 WHERE id = ?1")
            .bind(message.to_string())
            .bind(content)
            .bind(ms(at))
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
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let done = sqlx::query(
            "UPDATE messages SET content = '', attachments = '[]', deleted_at = COALESCE(deleted_at, ?2) WHERE id = ?1",
        )
        .bind(message.to_string())
        .bind(ms(at))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query("DELETE FROM reactions WHERE message_id = ?1")
            .bind(message.to_string())
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
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        // Never past the newest message: a pointer ahead of it would mark future messages read.
        let last_seq: Option<i64> = sqlx::query_scalar("SELECT last_seq FROM conversations WHERE id = ?1")
            .bind(conversation.to_string())
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
            "INSERT INTO reactions (message_id, user_id, emoji, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (message_id, user_id, emoji) DO NOTHING",
        )
        .bind(message.to_string())
        .bind(user.to_string())
        .bind(emoji)
        .bind(ms(at))
        .execute(pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn remove_reaction(&self, message: MessageId, user: UserId, emoji: &str) -> StoreResult<bool> {
        let pool = &self.pool;
        let done = sqlx::query("DELETE FROM reactions WHERE message_id = ?1 AND user_id = ?2 AND emoji = ?3")
            .bind(message.to_string())
            .bind(user.to_string())
            .bind(emoji)
            .execute(pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }
}
