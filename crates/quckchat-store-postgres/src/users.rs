//! Users and sessions.

use async_trait::async_trait;
use quckchat_domain::model::{NewUser, OnlineStatus, ProfilePatch, Session, Timestamp, User};
use quckchat_domain::store::{Credentials, StoreResult, UserStore};
use quckchat_domain::{SessionId, StoreError, UserId};
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::PostgresStore;
use crate::codec::{db, fold, get, id, ts, violates};

macro_rules! user_columns {
    () => {
        "id, username, display_name, bio, avatar, last_seen, created_at"
    };
}

fn user_from_row(row: &PgRow) -> StoreResult<User> {
    Ok(User {
        id: id(row, "id")?,
        username: get(row, "username")?,
        display_name: get(row, "display_name")?,
        bio: get(row, "bio")?,
        avatar: get(row, "avatar")?,
        // Presence is not stored: the service fills it in for each viewer.
        status: OnlineStatus::Offline,
        last_seen: get(row, "last_seen")?,
        created_at: get(row, "created_at")?,
    })
}

// ---- sessions -------------------------------------------------------------------------

fn session_from_row(row: &PgRow) -> StoreResult<Session> {
    Ok(Session {
        id: id(row, "id")?,
        user_id: id(row, "user_id")?,
        refresh_token_hash: get(row, "refresh_token_hash")?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
        revoked_at: get(row, "revoked_at")?,
        rotated_at: get(row, "rotated_at")?,
    })
}

#[async_trait]
impl UserStore for PostgresStore {
    async fn create_user(&self, new: NewUser) -> StoreResult<User> {
        let pool = &self.pool;
        let result = sqlx::query(
            "INSERT INTO users (id, username, username_key, display_name, display_name_key, password_hash, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(new.id.as_uuid())
        .bind(&new.username)
        .bind(fold(&new.username))
        .bind(&new.display_name)
        .bind(fold(&new.display_name))
        .bind(&new.password_hash)
        .bind(ts(new.created_at))
        .execute(pool)
        .await;
        match result {
            Ok(_) => Ok(User {
                id: new.id,
                username: new.username,
                display_name: new.display_name,
                bio: None,
                avatar: None,
                status: OnlineStatus::Offline,
                last_seen: None,
                created_at: ts(new.created_at),
            }),
            Err(e) if violates(&e, "users_username_key") => Err(StoreError::Conflict("username is taken".into())),
            Err(e) => Err(db(e)),
        }
    }

    async fn user(&self, user: UserId) -> StoreResult<Option<User>> {
        let pool = &self.pool;
        sqlx::query(concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1"))
            .bind(user.as_uuid())
            .fetch_optional(pool)
            .await
            .map_err(db)?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn users(&self, ids: &[UserId]) -> StoreResult<Vec<User>> {
        let pool = &self.pool;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = ids.iter().map(UserId::as_uuid).collect();
        sqlx::query(concat!("SELECT ", user_columns!(), " FROM users WHERE id = ANY($1)"))
            .bind(ids)
            .fetch_all(pool)
            .await
            .map_err(db)?
            .iter()
            .map(user_from_row)
            .collect()
    }

    async fn credentials(&self, username: &str) -> StoreResult<Option<Credentials>> {
        let pool = &self.pool;
        let row =
            sqlx::query(concat!("SELECT ", user_columns!(), ", password_hash FROM users WHERE username_key = $1"))
                .bind(fold(username))
                .fetch_optional(pool)
                .await
                .map_err(db)?;
        row.map(|row| Ok(Credentials { user: user_from_row(&row)?, password_hash: get(&row, "password_hash")? }))
            .transpose()
    }

    async fn update_profile(&self, user: UserId, patch: ProfilePatch) -> StoreResult<User> {
        let pool = &self.pool;
        let folded = patch.display_name.as_deref().map(fold);
        let row = sqlx::query(concat!(
            "UPDATE users SET
             display_name = COALESCE($2, display_name),
             display_name_key = COALESCE($3, display_name_key),
             bio = COALESCE($4, bio),
             avatar = COALESCE($5, avatar)
         WHERE id = $1
         RETURNING ",
            user_columns!()
        ))
        .bind(user.as_uuid())
        .bind(patch.display_name)
        .bind(folded)
        .bind(patch.bio)
        .bind(patch.avatar)
        .fetch_optional(pool)
        .await
        .map_err(db)?
        .ok_or(StoreError::NotFound)?;
        user_from_row(&row)
    }

    async fn search_users(&self, query: &str, limit: u32) -> StoreResult<Vec<User>> {
        let pool = &self.pool;
        // `strpos` rather than LIKE: `%` and `_` in the query are plain characters. Ordered
        // byte-wise (`COLLATE "C"`), as every backend does, whatever the database's locale.
        sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users
         WHERE strpos(username_key, $1) > 0 OR strpos(display_name_key, $1) > 0
         ORDER BY username_key COLLATE \"C\", id
         LIMIT $2"
        ))
        .bind(fold(query))
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(db)?
        .iter()
        .map(user_from_row)
        .collect()
    }

    async fn set_last_seen(&self, user: UserId, at: Timestamp) -> StoreResult<()> {
        let pool = &self.pool;
        let done = sqlx::query("UPDATE users SET last_seen = $2 WHERE id = $1")
            .bind(user.as_uuid())
            .bind(ts(at))
            .execute(pool)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn create_session(&self, session: Session) -> StoreResult<()> {
        let pool = &self.pool;
        sqlx::query(
            "INSERT INTO sessions (id, user_id, refresh_token_hash, created_at, expires_at, revoked_at, rotated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(session.id.as_uuid())
        .bind(session.user_id.as_uuid())
        .bind(session.refresh_token_hash)
        .bind(ts(session.created_at))
        .bind(ts(session.expires_at))
        .bind(session.revoked_at.map(ts))
        .bind(session.rotated_at.map(ts))
        .execute(pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn session(&self, session: SessionId) -> StoreResult<Option<Session>> {
        let pool = &self.pool;
        sqlx::query(
            "SELECT id, user_id, refresh_token_hash, created_at, expires_at, revoked_at, rotated_at
           FROM sessions WHERE id = $1",
        )
        .bind(session.as_uuid())
        .fetch_optional(pool)
        .await
        .map_err(db)?
        .as_ref()
        .map(session_from_row)
        .transpose()
    }

    async fn rotate_refresh_token(
        &self,
        session: SessionId,
        current_hash: &str,
        new_hash: &str,
        new_expires_at: Timestamp,
        at: Timestamp,
    ) -> StoreResult<bool> {
        let pool = &self.pool;
        // One conditional UPDATE: of two concurrent rotations with the same token, the second
        // waits for the first's row lock, re-checks the hash on the new row and misses.
        let done = sqlx::query(
            "UPDATE sessions SET refresh_token_hash = $3, expires_at = $4, rotated_at = $5
         WHERE id = $1 AND refresh_token_hash = $2 AND revoked_at IS NULL",
        )
        .bind(session.as_uuid())
        .bind(current_hash)
        .bind(new_hash)
        .bind(ts(new_expires_at))
        .bind(ts(at))
        .execute(pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn revoke_session(&self, session: SessionId, at: Timestamp) -> StoreResult<bool> {
        let pool = &self.pool;
        let done = sqlx::query("UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(session.as_uuid())
            .bind(ts(at))
            .execute(pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }
}
