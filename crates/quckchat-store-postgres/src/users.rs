//! Users and sessions.

use quckchat_domain::model::{NewUser, OnlineStatus, ProfilePatch, Session, Timestamp, User};
use quckchat_domain::store::{Credentials, StoreResult};
use quckchat_domain::{SessionId, StoreError, UserId};
use sqlx::PgPool;
use sqlx::postgres::PgRow;
use uuid::Uuid;

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

pub(crate) async fn create_user(pool: &PgPool, new: NewUser) -> StoreResult<User> {
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

pub(crate) async fn user(pool: &PgPool, user: UserId) -> StoreResult<Option<User>> {
    sqlx::query(concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1"))
        .bind(user.as_uuid())
        .fetch_optional(pool)
        .await
        .map_err(db)?
        .as_ref()
        .map(user_from_row)
        .transpose()
}

pub(crate) async fn users(pool: &PgPool, ids: &[UserId]) -> StoreResult<Vec<User>> {
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

pub(crate) async fn credentials(pool: &PgPool, username: &str) -> StoreResult<Option<Credentials>> {
    let row = sqlx::query(concat!("SELECT ", user_columns!(), ", password_hash FROM users WHERE username_key = $1"))
        .bind(fold(username))
        .fetch_optional(pool)
        .await
        .map_err(db)?;
    row.map(|row| Ok(Credentials { user: user_from_row(&row)?, password_hash: get(&row, "password_hash")? }))
        .transpose()
}

pub(crate) async fn update_profile(pool: &PgPool, user: UserId, patch: ProfilePatch) -> StoreResult<User> {
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

pub(crate) async fn search_users(pool: &PgPool, query: &str, limit: u32) -> StoreResult<Vec<User>> {
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

pub(crate) async fn set_last_seen(pool: &PgPool, user: UserId, at: Timestamp) -> StoreResult<()> {
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

pub(crate) async fn create_session(pool: &PgPool, session: Session) -> StoreResult<()> {
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

pub(crate) async fn session(pool: &PgPool, session: SessionId) -> StoreResult<Option<Session>> {
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

pub(crate) async fn rotate_refresh_token(
    pool: &PgPool,
    session: SessionId,
    current_hash: &str,
    new_hash: &str,
    new_expires_at: Timestamp,
    at: Timestamp,
) -> StoreResult<bool> {
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

pub(crate) async fn revoke_session(pool: &PgPool, session: SessionId, at: Timestamp) -> StoreResult<bool> {
    let done = sqlx::query("UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
        .bind(session.as_uuid())
        .bind(ts(at))
        .execute(pool)
        .await
        .map_err(db)?;
    Ok(done.rows_affected() == 1)
}
