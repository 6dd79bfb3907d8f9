//! Calls and their participants: the [`CallStore`](quckchat_domain::call_store::CallStore)
//! half of the store.
//!
//! A call is one `calls` row and one `call_participants` row per participant, kept in
//! order by `position`. Reads that span both tables run in one read transaction (one
//! snapshot); `save_call` replaces both in one `BEGIN IMMEDIATE` transaction guarded by
//! the row's `version`.

use std::collections::HashMap;

use async_trait::async_trait;
use quckchat_domain::call_model::{Call, CallKind, CallParticipant, CallStatus, ParticipantStatus};
use quckchat_domain::model::Timestamp;
use quckchat_domain::store::{CallStore, StoreResult};
use quckchat_domain::{CallId, ConversationId, UserId};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use crate::SqliteStore;
use crate::codec::{corrupt, db, id, id_list, ms, opt_time, time};

macro_rules! call_columns {
    () => {
        "c.id, c.conversation_id, c.initiator_id, c.kind, c.status, c.created_at, c.started_at,
         c.ended_at, c.duration_sec, c.version"
    };
}

/// The statuses in which a call is live, as an SQL list (see [`CallStatus::is_live`]).
macro_rules! live_statuses {
    () => {
        "('ringing', 'active')"
    };
}

/// A call row, its participants still to be filled in.
fn call_from_row(row: &SqliteRow) -> StoreResult<Call> {
    let kind: String = row.try_get("kind").map_err(db)?;
    let status: String = row.try_get("status").map_err(db)?;
    Ok(Call {
        id: id(row.try_get("id").map_err(db)?)?,
        conversation_id: id(row.try_get("conversation_id").map_err(db)?)?,
        initiator_id: id(row.try_get("initiator_id").map_err(db)?)?,
        kind: CallKind::parse(&kind).ok_or_else(|| corrupt(format!("call kind {kind:?}")))?,
        status: CallStatus::parse(&status).ok_or_else(|| corrupt(format!("call status {status:?}")))?,
        participants: Vec::new(),
        created_at: time(row.try_get("created_at").map_err(db)?)?,
        started_at: opt_time(row.try_get("started_at").map_err(db)?)?,
        ended_at: opt_time(row.try_get("ended_at").map_err(db)?)?,
        duration_sec: row.try_get("duration_sec").map_err(db)?,
        version: row.try_get("version").map_err(db)?,
    })
}

/// Decodes call rows and fills in their participants, in order, with one query.
async fn complete(conn: &mut SqliteConnection, rows: Vec<SqliteRow>) -> StoreResult<Vec<Call>> {
    let mut calls = rows.iter().map(call_from_row).collect::<StoreResult<Vec<_>>>()?;
    if calls.is_empty() {
        return Ok(calls);
    }
    let participant_rows = sqlx::query(
        "SELECT call_id, user_id, status, joined_at, left_at, device FROM call_participants
          WHERE call_id IN (SELECT value FROM json_each(?1))
          ORDER BY call_id, position",
    )
    .bind(id_list(calls.iter().map(|c| c.id)))
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    let mut participants: HashMap<CallId, Vec<CallParticipant>> = HashMap::new();
    for row in &participant_rows {
        let call: CallId = id(row.try_get("call_id").map_err(db)?)?;
        let status: String = row.try_get("status").map_err(db)?;
        participants.entry(call).or_default().push(CallParticipant {
            user_id: id(row.try_get("user_id").map_err(db)?)?,
            status: ParticipantStatus::parse(&status)
                .ok_or_else(|| corrupt(format!("participant status {status:?}")))?,
            joined_at: opt_time(row.try_get("joined_at").map_err(db)?)?,
            left_at: opt_time(row.try_get("left_at").map_err(db)?)?,
            device: row.try_get("device").map_err(db)?,
        });
    }
    for call in &mut calls {
        call.participants = participants.remove(&call.id).unwrap_or_default();
    }
    Ok(calls)
}

/// Writes a call's participants, in order, on a connection already in a transaction.
async fn insert_participants(conn: &mut SqliteConnection, call: &Call) -> StoreResult<()> {
    for (position, p) in call.participants.iter().enumerate() {
        sqlx::query(
            "INSERT INTO call_participants
                 (call_id, user_id, position, status, joined_at, left_at, device)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(call.id.to_string())
        .bind(p.user_id.to_string())
        // A call has a handful of participants; the position always fits.
        .bind(i64::try_from(position).unwrap_or(i64::MAX))
        .bind(p.status.as_str())
        .bind(p.joined_at.map(ms))
        .bind(p.left_at.map(ms))
        .bind(&p.device)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    }
    Ok(())
}

#[async_trait]
impl CallStore for SqliteStore {
    async fn create_call(&self, call: &Call) -> StoreResult<()> {
        let pool = &self.pool;
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        sqlx::query(
            "INSERT INTO calls (id, conversation_id, initiator_id, kind, status, created_at,
                            started_at, ended_at, duration_sec, version)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .bind(call.id.to_string())
        .bind(call.conversation_id.to_string())
        .bind(call.initiator_id.to_string())
        .bind(call.kind.as_str())
        .bind(call.status.as_str())
        .bind(ms(call.created_at))
        .bind(call.started_at.map(ms))
        .bind(call.ended_at.map(ms))
        .bind(call.duration_sec)
        .bind(call.version)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        insert_participants(&mut tx, call).await?;
        tx.commit().await.map_err(db)
    }

    async fn call(&self, call: CallId) -> StoreResult<Option<Call>> {
        let pool = &self.pool;
        // A read transaction: the call and its participants from one snapshot.
        let mut tx = pool.begin().await.map_err(db)?;
        let rows = sqlx::query(concat!("SELECT ", call_columns!(), " FROM calls c WHERE c.id = ?1"))
            .bind(call.to_string())
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        let found = complete(&mut tx, rows).await?;
        tx.commit().await.map_err(db)?;
        Ok(found.into_iter().next())
    }

    async fn save_call(&self, call: &Call, expected_version: i64) -> StoreResult<bool> {
        let pool = &self.pool;
        // The version check and the rewrite under one write lock: of several saves from the
        // same version, exactly one matches. What a call is (its conversation, initiator,
        // kind and creation time) never changes, so only its state is written. An unknown
        // id matches no version either: `false`.
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let updated = sqlx::query(
            "UPDATE calls
            SET status = ?3, started_at = ?4, ended_at = ?5, duration_sec = ?6, version = ?7
          WHERE id = ?1 AND version = ?2",
        )
        .bind(call.id.to_string())
        .bind(expected_version)
        .bind(call.status.as_str())
        .bind(call.started_at.map(ms))
        .bind(call.ended_at.map(ms))
        .bind(call.duration_sec)
        .bind(call.version)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if updated.rows_affected() == 0 {
            // Stale (or unknown): nothing was written.
            tx.rollback().await.map_err(db)?;
            return Ok(false);
        }
        sqlx::query("DELETE FROM call_participants WHERE call_id = ?1")
            .bind(call.id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        insert_participants(&mut tx, call).await?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn calls_of_conversation(
        &self,
        conversation: ConversationId,
        before: Option<Timestamp>,
        limit: u32,
    ) -> StoreResult<Vec<Call>> {
        let pool = &self.pool;
        let mut tx = pool.begin().await.map_err(db)?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            call_columns!(),
            " FROM calls c
          WHERE c.conversation_id = ?1 AND c.created_at < ?2
          ORDER BY c.created_at DESC, c.id DESC
          LIMIT ?3"
        ))
        .bind(conversation.to_string())
        // No cursor: everything (no call is placed at the end of time).
        .bind(before.map_or(i64::MAX, ms))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let page = complete(&mut tx, rows).await?;
        tx.commit().await.map_err(db)?;
        Ok(page)
    }

    async fn live_calls_of(&self, user: UserId) -> StoreResult<Vec<Call>> {
        let pool = &self.pool;
        let mut tx = pool.begin().await.map_err(db)?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            call_columns!(),
            " FROM call_participants p JOIN calls c ON c.id = p.call_id
          WHERE p.user_id = ?1
            AND p.status IN ('ringing', 'joined')
            AND c.status IN ",
            live_statuses!(),
            " ORDER BY c.created_at, c.id"
        ))
        .bind(user.to_string())
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let calls = complete(&mut tx, rows).await?;
        tx.commit().await.map_err(db)?;
        Ok(calls)
    }

    async fn live_calls(&self) -> StoreResult<Vec<Call>> {
        let pool = &self.pool;
        let mut tx = pool.begin().await.map_err(db)?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            call_columns!(),
            " FROM calls c WHERE c.status IN ",
            live_statuses!(),
            " ORDER BY c.created_at, c.id"
        ))
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let calls = complete(&mut tx, rows).await?;
        tx.commit().await.map_err(db)?;
        Ok(calls)
    }
}
