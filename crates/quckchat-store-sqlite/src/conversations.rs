//! Conversations and their participants.

use std::collections::HashMap;

use async_trait::async_trait;
use quckchat_domain::model::{Conversation, ConversationKind, NewConversation, Participant, Removal, Role, Timestamp};
use quckchat_domain::store::{ConversationStore, StoreResult};
use quckchat_domain::{ConversationId, StoreError, UserId};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use crate::SqliteStore;
use crate::codec::{corrupt, db, id, id_list, ms, opt_time, time};

/// The columns of a conversation as viewer `?1` sees it (`unread` being theirs), from
/// `conversations c`.
macro_rules! conversation_columns {
    () => {
        "c.id, c.kind, c.name, c.avatar, c.created_by, c.created_at, c.last_message_at, c.last_seq,
         (SELECT COUNT(*)
            FROM participants v
            JOIN messages m ON m.conversation_id = v.conversation_id AND m.seq > v.last_read_seq
           WHERE v.conversation_id = c.id AND v.user_id = ?1
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
fn conversation_from_row(row: &SqliteRow) -> StoreResult<Conversation> {
    let kind: String = row.try_get("kind").map_err(db)?;
    Ok(Conversation {
        id: id(row.try_get("id").map_err(db)?)?,
        kind: ConversationKind::parse(&kind).ok_or_else(|| corrupt(format!("conversation kind {kind:?}")))?,
        name: row.try_get("name").map_err(db)?,
        avatar: row.try_get("avatar").map_err(db)?,
        participants: Vec::new(),
        created_by: id(row.try_get("created_by").map_err(db)?)?,
        created_at: time(row.try_get("created_at").map_err(db)?)?,
        last_message_at: opt_time(row.try_get("last_message_at").map_err(db)?)?,
        last_seq: row.try_get("last_seq").map_err(db)?,
        unread_count: row.try_get("unread").map_err(db)?,
    })
}

/// Decodes conversation rows and fills in every participant list with one query.
async fn with_participants(conn: &mut SqliteConnection, rows: Vec<SqliteRow>) -> StoreResult<Vec<Conversation>> {
    let mut conversations = rows.iter().map(conversation_from_row).collect::<StoreResult<Vec<_>>>()?;
    if conversations.is_empty() {
        return Ok(conversations);
    }
    let participant_rows = sqlx::query(
        "SELECT p.conversation_id, p.user_id, p.role, p.joined_at, p.last_read_seq
           FROM participants p
           JOIN conversations c ON c.id = p.conversation_id
          WHERE p.conversation_id IN (SELECT value FROM json_each(?1))
          ORDER BY p.conversation_id, p.user_id = c.created_by DESC, p.joined_at, p.rowid",
    )
    .bind(id_list(conversations.iter().map(|c| c.id)))
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    let mut by_conversation: HashMap<ConversationId, Vec<Participant>> = HashMap::new();
    for row in &participant_rows {
        let conversation: ConversationId = id(row.try_get("conversation_id").map_err(db)?)?;
        let role_name: String = row.try_get("role").map_err(db)?;
        by_conversation.entry(conversation).or_default().push(Participant {
            user_id: id(row.try_get("user_id").map_err(db)?)?,
            role: role(&role_name)?,
            joined_at: time(row.try_get("joined_at").map_err(db)?)?,
            last_read_seq: row.try_get("last_read_seq").map_err(db)?,
        });
    }
    for conversation in &mut conversations {
        conversation.participants = by_conversation.remove(&conversation.id).unwrap_or_default();
    }
    Ok(conversations)
}

/// `user`'s role in `conversation`, inside a transaction.
async fn role_in(conn: &mut SqliteConnection, conversation: ConversationId, user: UserId) -> StoreResult<Option<Role>> {
    let name: Option<String> =
        sqlx::query_scalar("SELECT role FROM participants WHERE conversation_id = ?1 AND user_id = ?2")
            .bind(conversation.to_string())
            .bind(user.to_string())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?;
    name.as_deref().map(role).transpose()
}

#[async_trait]
impl ConversationStore for SqliteStore {
    async fn create_conversation(&self, new: NewConversation) -> StoreResult<()> {
        let pool = &self.pool;
        let key = match (new.kind, new.participants.as_slice()) {
            (ConversationKind::Single, [(a, _), (b, _)]) => Some(single_key(*a, *b)),
            (ConversationKind::Single, _) => {
                return Err(StoreError::Conflict("a single conversation has exactly two participants".into()));
            }
            (ConversationKind::Group, _) => None,
        };
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let inserted = sqlx::query(
            "INSERT INTO conversations (id, kind, name, avatar, created_by, created_at, last_activity_at, single_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)",
        )
        .bind(new.id.to_string())
        .bind(new.kind.as_str())
        .bind(&new.name)
        .bind(&new.avatar)
        .bind(new.created_by.to_string())
        .bind(ms(new.created_at))
        .bind(key)
        .execute(&mut *tx)
        .await
        .map_err(db);
        match inserted {
            Ok(_) => {}
            Err(StoreError::Conflict(why)) if why.contains("single_key") => {
                return Err(StoreError::Conflict("these two users already have a single conversation".into()));
            }
            Err(e) => return Err(e),
        }
        for (user, role) in &new.participants {
            sqlx::query("INSERT INTO participants (conversation_id, user_id, role, joined_at) VALUES (?1, ?2, ?3, ?4)")
                .bind(new.id.to_string())
                .bind(user.to_string())
                .bind(role.as_str())
                .bind(ms(new.created_at))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn single_between(&self, a: UserId, b: UserId, viewer: UserId) -> StoreResult<Option<Conversation>> {
        let pool = &self.pool;
        let mut tx = pool.begin().await.map_err(db)?;
        let rows =
            sqlx::query(concat!("SELECT ", conversation_columns!(), " FROM conversations c WHERE c.single_key = ?2"))
                .bind(viewer.to_string())
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
        let mut tx = pool.begin().await.map_err(db)?;
        let rows = sqlx::query(concat!("SELECT ", conversation_columns!(), " FROM conversations c WHERE c.id = ?2"))
            .bind(viewer.to_string())
            .bind(conversation.to_string())
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
        let mut tx = pool.begin().await.map_err(db)?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            conversation_columns!(),
            " FROM participants me
          JOIN conversations c ON c.id = me.conversation_id
         WHERE me.user_id = ?1 AND (?2 IS NULL OR c.last_activity_at < ?2)
         ORDER BY c.last_activity_at DESC, c.id DESC
         LIMIT ?3"
        ))
        .bind(user.to_string())
        .bind(before.map(ms))
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
            sqlx::query_scalar("SELECT role FROM participants WHERE conversation_id = ?1 AND user_id = ?2")
                .bind(conversation.to_string())
                .bind(user.to_string())
                .fetch_optional(pool)
                .await
                .map_err(db)?;
        name.as_deref().map(role).transpose()
    }

    async fn conversation_ids_of(&self, user: UserId) -> StoreResult<Vec<ConversationId>> {
        let pool = &self.pool;
        let ids: Vec<String> = sqlx::query_scalar("SELECT conversation_id FROM participants WHERE user_id = ?1")
            .bind(user.to_string())
            .fetch_all(pool)
            .await
            .map_err(db)?;
        ids.iter().map(|s| id(s)).collect()
    }

    async fn co_members_of(&self, user: UserId) -> StoreResult<Vec<UserId>> {
        let pool = &self.pool;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT other.user_id
           FROM participants me
           JOIN participants other ON other.conversation_id = me.conversation_id
          WHERE me.user_id = ?1 AND other.user_id <> ?1",
        )
        .bind(user.to_string())
        .fetch_all(pool)
        .await
        .map_err(db)?;
        ids.iter().map(|s| id(s)).collect()
    }

    async fn update_conversation(
        &self,
        conversation: ConversationId,
        name: Option<String>,
        avatar: Option<String>,
    ) -> StoreResult<()> {
        let pool = &self.pool;
        let done = sqlx::query(
            "UPDATE conversations SET name = COALESCE(?2, name), avatar = COALESCE(?3, avatar) WHERE id = ?1",
        )
        .bind(conversation.to_string())
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
        // BEGIN IMMEDIATE takes the write lock first: the admin check below and the inserts
        // see the same membership, serialised with every concurrent removal.
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM conversations WHERE id = ?1")
            .bind(conversation.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        if role_in(&mut tx, conversation, by).await? != Some(Role::Admin) {
            return Ok(None);
        }
        let mut added = Vec::new();
        for user in users {
            let done = sqlx::query(
                "INSERT INTO participants (conversation_id, user_id, role, joined_at) VALUES (?1, ?2, 'member', ?3)
             ON CONFLICT (conversation_id, user_id) DO NOTHING",
            )
            .bind(conversation.to_string())
            .bind(user.to_string())
            .bind(ms(at))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            if done.rows_affected() == 1 {
                added.push(*user);
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(Some(added))
    }

    async fn remove_member(&self, conversation: ConversationId, by: UserId, target: UserId) -> StoreResult<Removal> {
        let pool = &self.pool;
        // One write transaction for the check, the removal and the promotion: two leaves that
        // race are serialised here, and the second sees the first's promotion.
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        if by != target && role_in(&mut tx, conversation, by).await? != Some(Role::Admin) {
            return Ok(Removal::NotAllowed);
        }
        let done = sqlx::query("DELETE FROM participants WHERE conversation_id = ?1 AND user_id = ?2")
            .bind(conversation.to_string())
            .bind(target.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Ok(Removal::NotMember);
        }
        // The heir, in the order participants are listed: the creator, then the earliest joined.
        let promoted: Option<String> = sqlx::query_scalar(
            "UPDATE participants SET role = 'admin'
          WHERE conversation_id = ?1
            AND NOT EXISTS (SELECT 1 FROM participants WHERE conversation_id = ?1 AND role = 'admin')
            AND user_id = (SELECT p.user_id FROM participants p JOIN conversations c ON c.id = p.conversation_id
                            WHERE p.conversation_id = ?1
                            ORDER BY p.user_id = c.created_by DESC, p.joined_at, p.rowid LIMIT 1)
          RETURNING user_id",
        )
        .bind(conversation.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(Removal::Removed { promoted: promoted.as_deref().map(id).transpose()? })
    }
}
