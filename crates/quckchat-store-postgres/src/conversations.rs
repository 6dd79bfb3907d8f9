//! Conversations and their participants.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use quckchat_domain::model::{Conversation, ConversationKind, NewConversation, Participant, Removal, Role, Timestamp};
use quckchat_domain::store::{ConversationStore, StoreResult};
use quckchat_domain::{ConversationId, StoreError, UserId};
use sqlx::PgConnection;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::PostgresStore;
use crate::codec::{corrupt, db, get, id, ts, violates, wire};
use crate::read_tx;

/// The columns of a conversation as viewer `$1` sees it (`unread` being theirs), from
/// `conversations c`.
macro_rules! conversation_columns {
    () => {
        "c.id, c.kind, c.name, c.avatar, c.created_by, c.created_at, c.last_message_at, c.last_seq,
         (SELECT COUNT(*)
            FROM participants v
            JOIN messages m ON m.conversation_id = v.conversation_id AND m.seq > v.last_read_seq
           WHERE v.conversation_id = c.id AND v.user_id = $1
             AND m.sender_id <> v.user_id AND m.deleted_at IS NULL) AS unread"
    };
}

/// The key that makes a single conversation unique per pair, whichever way round.
pub(crate) fn single_key(a: UserId, b: UserId) -> String {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    format!("{low}:{high}")
}

fn role(s: &str) -> StoreResult<Role> {
    Role::parse(s).ok_or_else(|| corrupt(format!("role {s:?}")))
}

/// A conversation row, its participants still to be filled in.
fn conversation_from_row(row: &PgRow) -> StoreResult<Conversation> {
    Ok(Conversation {
        id: id(row, "id")?,
        kind: wire(row, "kind", ConversationKind::parse)?,
        name: get(row, "name")?,
        avatar: get(row, "avatar")?,
        participants: Vec::new(),
        created_by: id(row, "created_by")?,
        created_at: get(row, "created_at")?,
        last_message_at: get(row, "last_message_at")?,
        last_seq: get(row, "last_seq")?,
        unread_count: get(row, "unread")?,
    })
}

/// Decodes conversation rows and fills in every participant list with one query:
/// the creator first, then by join time, then in the order they were added.
async fn with_participants(conn: &mut PgConnection, rows: Vec<PgRow>) -> StoreResult<Vec<Conversation>> {
    let mut conversations = rows.iter().map(conversation_from_row).collect::<StoreResult<Vec<_>>>()?;
    if conversations.is_empty() {
        return Ok(conversations);
    }
    let ids: Vec<Uuid> = conversations.iter().map(|c| c.id.as_uuid()).collect();
    let participant_rows = sqlx::query(
        "SELECT p.conversation_id, p.user_id, p.role, p.joined_at, p.last_read_seq
           FROM participants p
           JOIN conversations c ON c.id = p.conversation_id
          WHERE p.conversation_id = ANY($1)
          ORDER BY p.conversation_id, p.user_id = c.created_by DESC, p.joined_at, p.ord",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    let mut by_conversation: HashMap<ConversationId, Vec<Participant>> = HashMap::new();
    for row in &participant_rows {
        let conversation: ConversationId = id(row, "conversation_id")?;
        by_conversation.entry(conversation).or_default().push(Participant {
            user_id: id(row, "user_id")?,
            role: role(get(row, "role")?)?,
            joined_at: get(row, "joined_at")?,
            last_read_seq: get(row, "last_read_seq")?,
        });
    }
    for conversation in &mut conversations {
        conversation.participants = by_conversation.remove(&conversation.id).unwrap_or_default();
    }
    Ok(conversations)
}

/// Locks the conversation row for the rest of the transaction: every membership change of
/// one conversation runs one at a time, each seeing the last one's result. `FOR NO KEY
/// UPDATE` conflicts with itself (and with an append's `UPDATE conversations`) but not
/// with the `FOR KEY SHARE` that foreign keys take: a receipt inserted by a transaction
/// that already locked its participant row must not wait on us while we wait on it
/// (that ordering deadlocked with `FOR UPDATE`). `false` when there is no such conversation.
///
/// It is an `UPDATE` (of nothing), not a `SELECT … FOR NO KEY UPDATE`, so that the row gets
/// a new version: an append statement that read the members before this change committed
/// and then waited for the row compares the row's `xmin` with the one it read, sees it
/// moved, and stores nothing (its caller then takes the transaction path, which reads the
/// members after the lock).
async fn lock_conversation(tx: &mut PgConnection, conversation: ConversationId) -> StoreResult<bool> {
    let row: Option<i32> = sqlx::query_scalar("UPDATE conversations SET last_seq = last_seq WHERE id = $1 RETURNING 1")
        .bind(conversation.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
    Ok(row.is_some())
}

/// `user`'s role in `conversation`, inside the transaction.
async fn role_in(tx: &mut PgConnection, conversation: ConversationId, user: UserId) -> StoreResult<Option<Role>> {
    let name: Option<String> =
        sqlx::query_scalar("SELECT role FROM participants WHERE conversation_id = $1 AND user_id = $2")
            .bind(conversation.as_uuid())
            .bind(user.as_uuid())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
    name.as_deref().map(role).transpose()
}

#[async_trait]
impl ConversationStore for PostgresStore {
    async fn create_conversation(&self, new: NewConversation) -> StoreResult<()> {
        let pool = &self.pool;
        let key = match (new.kind, new.participants.as_slice()) {
            (ConversationKind::Single, [(a, _), (b, _)]) => Some(single_key(*a, *b)),
            (ConversationKind::Single, _) => {
                return Err(StoreError::Conflict("a single conversation has exactly two participants".into()));
            }
            (ConversationKind::Group, _) => None,
        };
        let mut tx = pool.begin().await.map_err(db)?;
        // Of concurrent creations of one pair's single, the later ones wait on the unique
        // key until the first commits, then fail on it.
        let inserted = sqlx::query(
            "INSERT INTO conversations (id, kind, name, avatar, created_by, created_at, last_activity_at, single_key)
         VALUES ($1, $2, $3, $4, $5, $6, $6, $7)",
        )
        .bind(new.id.as_uuid())
        .bind(new.kind.as_str())
        .bind(&new.name)
        .bind(&new.avatar)
        .bind(new.created_by.as_uuid())
        .bind(ts(new.created_at))
        .bind(key)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if violates(&e, "conversations_single_key") => {
                return Err(StoreError::Conflict("these two users already have a single conversation".into()));
            }
            Err(e) => return Err(db(e)),
        }
        let users: Vec<Uuid> = new.participants.iter().map(|(u, _)| u.as_uuid()).collect();
        let roles: Vec<&str> = new.participants.iter().map(|(_, r)| r.as_str()).collect();
        // One statement for every participant, inserted in the order given (which `ord`
        // keeps for listing).
        sqlx::query(
            "INSERT INTO participants (conversation_id, user_id, role, joined_at)
         SELECT $1, p.user_id, p.role, $4
           FROM UNNEST($2::uuid[], $3::text[]) WITH ORDINALITY AS p(user_id, role, n)
          ORDER BY p.n",
        )
        .bind(new.id.as_uuid())
        .bind(users)
        .bind(roles)
        .bind(ts(new.created_at))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn single_between(&self, a: UserId, b: UserId, viewer: UserId) -> StoreResult<Option<Conversation>> {
        let pool = &self.pool;
        let mut tx = read_tx(pool).await?;
        let rows =
            sqlx::query(concat!("SELECT ", conversation_columns!(), " FROM conversations c WHERE c.single_key = $2"))
                .bind(viewer.as_uuid())
                .bind(single_key(a, b))
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
        let found = with_participants(&mut tx, rows).await?;
        tx.commit().await.map_err(db)?;
        Ok(found.into_iter().next())
    }

    async fn conversation(&self, conversation: ConversationId, viewer: UserId) -> StoreResult<Option<Conversation>> {
        let pool = &self.pool;
        let mut tx = read_tx(pool).await?;
        let rows = sqlx::query(concat!("SELECT ", conversation_columns!(), " FROM conversations c WHERE c.id = $2"))
            .bind(viewer.as_uuid())
            .bind(conversation.as_uuid())
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        let found = with_participants(&mut tx, rows).await?;
        tx.commit().await.map_err(db)?;
        Ok(found.into_iter().next())
    }

    async fn conversations_of(
        &self,
        user: UserId,
        before: Option<Timestamp>,
        limit: u32,
    ) -> StoreResult<Vec<Conversation>> {
        let pool = &self.pool;
        let mut tx = read_tx(pool).await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            conversation_columns!(),
            " FROM participants me
          JOIN conversations c ON c.id = me.conversation_id
         WHERE me.user_id = $1 AND ($2::timestamptz IS NULL OR c.last_activity_at < $2)
         ORDER BY c.last_activity_at DESC, c.id DESC
         LIMIT $3"
        ))
        .bind(user.as_uuid())
        .bind(before.map(ts))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let found = with_participants(&mut tx, rows).await?;
        tx.commit().await.map_err(db)?;
        Ok(found)
    }

    async fn member_role(&self, conversation: ConversationId, user: UserId) -> StoreResult<Option<Role>> {
        let pool = &self.pool;
        let name: Option<String> =
            sqlx::query_scalar("SELECT role FROM participants WHERE conversation_id = $1 AND user_id = $2")
                .bind(conversation.as_uuid())
                .bind(user.as_uuid())
                .fetch_optional(pool)
                .await
                .map_err(db)?;
        name.as_deref().map(role).transpose()
    }

    async fn conversation_ids_of(&self, user: UserId) -> StoreResult<Vec<ConversationId>> {
        let pool = &self.pool;
        let ids: Vec<Uuid> = sqlx::query_scalar("SELECT conversation_id FROM participants WHERE user_id = $1")
            .bind(user.as_uuid())
            .fetch_all(pool)
            .await
            .map_err(db)?;
        Ok(ids.into_iter().map(ConversationId::from_uuid).collect())
    }

    async fn co_members_of(&self, user: UserId) -> StoreResult<Vec<UserId>> {
        let pool = &self.pool;
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT DISTINCT other.user_id
           FROM participants me
           JOIN participants other ON other.conversation_id = me.conversation_id
          WHERE me.user_id = $1 AND other.user_id <> $1",
        )
        .bind(user.as_uuid())
        .fetch_all(pool)
        .await
        .map_err(db)?;
        Ok(ids.into_iter().map(UserId::from_uuid).collect())
    }

    async fn update_conversation(
        &self,
        conversation: ConversationId,
        name: Option<String>,
        avatar: Option<String>,
    ) -> StoreResult<()> {
        let pool = &self.pool;
        let done = sqlx::query(
            "UPDATE conversations SET name = COALESCE($2, name), avatar = COALESCE($3, avatar) WHERE id = $1",
        )
        .bind(conversation.as_uuid())
        .bind(name)
        .bind(avatar)
        .execute(pool)
        .await
        .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn add_members(
        &self,
        conversation: ConversationId,
        by: UserId,
        users: &[UserId],
        at: Timestamp,
    ) -> StoreResult<Option<Vec<UserId>>> {
        let pool = &self.pool;
        let mut tx = pool.begin().await.map_err(db)?;
        if !lock_conversation(&mut tx, conversation).await? {
            return Err(StoreError::NotFound);
        }
        if role_in(&mut tx, conversation, by).await? != Some(Role::Admin) {
            return Ok(None);
        }
        // Each user once, in the order given.
        let mut seen = HashSet::new();
        let candidates: Vec<UserId> = users.iter().copied().filter(|u| seen.insert(*u)).collect();
        let ids: Vec<Uuid> = candidates.iter().map(UserId::as_uuid).collect();
        // Members already in it conflict and are skipped.
        let inserted: Vec<Uuid> = sqlx::query_scalar(
            "INSERT INTO participants (conversation_id, user_id, role, joined_at)
         SELECT $1, p.user_id, 'member', $3
           FROM UNNEST($2::uuid[]) WITH ORDINALITY AS p(user_id, n)
          ORDER BY p.n
         ON CONFLICT (conversation_id, user_id) DO NOTHING
         RETURNING user_id",
        )
        .bind(conversation.as_uuid())
        .bind(ids)
        .bind(ts(at))
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        let inserted: HashSet<Uuid> = inserted.into_iter().collect();
        Ok(Some(candidates.into_iter().filter(|u| inserted.contains(&u.as_uuid())).collect()))
    }

    async fn remove_member(&self, conversation: ConversationId, by: UserId, target: UserId) -> StoreResult<Removal> {
        let pool = &self.pool;
        let mut tx = pool.begin().await.map_err(db)?;
        if !lock_conversation(&mut tx, conversation).await? {
            return Ok(Removal::NotMember);
        }
        if by != target && role_in(&mut tx, conversation, by).await? != Some(Role::Admin) {
            return Ok(Removal::NotAllowed);
        }
        let done = sqlx::query("DELETE FROM participants WHERE conversation_id = $1 AND user_id = $2")
            .bind(conversation.as_uuid())
            .bind(target.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Ok(Removal::NotMember);
        }
        // The heir, in the order participants are listed: the creator, then the earliest joined.
        let promoted: Option<Uuid> = sqlx::query_scalar(
            "UPDATE participants SET role = 'admin'
          WHERE conversation_id = $1
            AND NOT EXISTS (SELECT 1 FROM participants WHERE conversation_id = $1 AND role = 'admin')
            AND user_id = (SELECT p.user_id FROM participants p JOIN conversations c ON c.id = p.conversation_id
                            WHERE p.conversation_id = $1
                            ORDER BY p.user_id = c.created_by DESC, p.joined_at, p.ord LIMIT 1)
          RETURNING user_id",
        )
        .bind(conversation.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(Removal::Removed { promoted: promoted.map(UserId::from_uuid) })
    }
}
