//! Users and sessions.

use async_trait::async_trait;
use quckchat_domain::model::{NewUser, OnlineStatus, ProfilePatch, Session, Timestamp, User};
use quckchat_domain::store::{Credentials, StoreResult, UserStore};
use quckchat_domain::{SessionId, StoreError, UserId};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::SqliteStore;
use crate::codec::{db, fold, id, id_list, ms, opt_time, time};

macro_rules! user_columns {
    () => {
        "id, username, display_name, bio, avatar, last_seen, created_at"
    };
}

fn user_from_row(row: &SqliteRow) -> StoreResult<User> {
    Ok(User {
        id: id(row.try_get("id").map_err(db)?)?,
        username: row.try_get("username").map_err(db)?,
        display_name: row.try_get("display_name").map_err(db)?,
        bio: row.try_get("bio").map_err(db)?,
        avatar: row.try_get("avatar").map_err(db)?,
        // Presence is not stored: the service fills it in for each viewer.
        status: OnlineStatus::Offline,
        last_seen: opt_time(row.try_get("last_seen").map_err(db)?)?,
        created_at: time(row.try_get("created_at").map_err(db)?)?,
    })
}

// ---- sessions -------------------------------------------------------------------------

fn session_from_row(row: &SqliteRow) -> StoreResult<Session> {
    Ok(Session {
        id: id(row.try_get("id").map_err(db)?)?,
        user_id: id(row.try_get("user_id").map_err(db)?)?,
        refresh_token_hash: row.try_get("refresh_token_hash").map_err(db)?,
        created_at: time(row.try_get("created_at").map_err(db)?)?,
        expires_at: time(row.try_get("expires_at").map_err(db)?)?,
        revoked_at: opt_time(row.try_get("revoked_at").map_err(db)?)?,
        rotated_at: opt_time(row.try_get("rotated_at").map_err(db)?)?,
    })
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, new: NewUser) -> StoreResult<User> {
        let pool = &self.pool;
        let result = sqlx::query(
            "INSERT INTO users (id, username, username_key, display_name, display_name_key, password_hash, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(new.id.to_string())
        .bind(&new.username)
        .bind(fold(&new.username))
        .bind(&new.display_name)
        .bind(fold(&new.display_name))
        .bind(&new.password_hash)
        .bind(ms(new.created_at))
        .execute(pool)
        .await;
        match result.map_err(db) {
            Ok(_) => Ok(User {
                id: new.id,
                username: new.username,
                display_name: new.display_name,
                bio: None,
                avatar: None,
                status: OnlineStatus::Offline,
                last_seen: None,
                created_at: new.created_at,
            }),
            Err(StoreError::Conflict(why)) if why.contains("username_key") => {
                Err(StoreError::Conflict("username is taken".into()))
            }
            Err(e) => Err(e),
        }
    }

    async fn user(&self, user: UserId) -> StoreResult<Option<User>> {
        let pool = &self.pool;
        sqlx::query(concat!("SELECT ", user_columns!(), " FROM users WHERE id = ?1"))
            .bind(user.to_string())
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
        sqlx::query(concat!("SELECT ", user_columns!(), " FROM users WHERE id IN (SELECT value FROM json_each(?1))"))
            .bind(id_list(ids))
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
            sqlx::query(concat!("SELECT ", user_columns!(), ", password_hash FROM users WHERE username_key = ?1"))
                .bind(fold(username))
                .fetch_optional(pool)
                .await
                .map_err(db)?;
        row.map(|row| {
            Ok(Credentials { user: user_from_row(&row)?, password_hash: row.try_get("password_hash").map_err(db)? })
        })
        .transpose()
    }

    async fn update_profile(&self, user: UserId, patch: ProfilePatch) -> StoreResult<User> {
        let pool = &self.pool;
        let folded = patch.display_name.as_deref().map(fold);
        let row = sqlx::query(concat!(
            "UPDATE users SET
             display_name = COALESCE(?2, display_name),
             display_name_key = COALESCE(?3, display_name_key),
             bio = COALESCE(?4, bio),
             avatar = COALESCE(?5, avatar)
         WHERE id = ?1
         RETURNING ",
            user_columns!()
        ))
        .bind(user.to_string())
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
        // `instr` rather than LIKE: `%` and `_` in the query are plain characters.
        sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users
         WHERE instr(username_key, ?1) > 0 OR instr(display_name_key, ?1) > 0
         ORDER BY username_key, id
         LIMIT ?2"
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
        let done = sqlx::query("UPDATE users SET last_seen = ?2 WHERE id = ?1")
            .bind(user.to_string())
            .bind(ms(at))
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
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(session.id.to_string())
        .bind(session.user_id.to_string())
        .bind(session.refresh_token_hash)
        .bind(ms(session.created_at))
        .bind(ms(session.expires_at))
        .bind(session.revoked_at.map(ms))
        .bind(session.rotated_at.map(ms))
        .execute(pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn session(&self, session: SessionId) -> StoreResult<Option<Session>> {
        let pool = &self.pool;
        sqlx::query(
            "SELECT id, user_id, refresh_token_hash, created_at, expires_at, revoked_at, rotated_at
           FROM sessions WHERE id = ?1",
        )
        .bind(session.to_string())
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
        // One conditional UPDATE: of two concurrent rotations with the same token, one wins.
        let done = sqlx::query(
            "UPDATE sessions SET refresh_token_hash = ?3, expires_at = ?4, rotated_at = ?5
         WHERE id = ?1 AND refresh_token_hash = ?2 AND revoked_at IS NULL",
        )
        .bind(session.to_string())
        .bind(current_hash)
        .bind(new_hash)
        .bind(ms(new_expires_at))
        .bind(ms(at))
        .execute(pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn revoke_session(&self, session: SessionId, at: Timestamp) -> StoreResult<bool> {
        let pool = &self.pool;
        let done = sqlx::query("UPDATE sessions SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL")
            .bind(session.to_string())
            .bind(ms(at))
            .execute(pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }
}
