//! Calls and their participants: the [`CallStore`](quckchat_domain::call_store::CallStore)
//! half of the store.
//!
//! A call is one `calls` row and one `call_participants` row per participant, kept in
//! order by `position`. Reads that span both tables run in one read-only snapshot;
//! `save_call` replaces both in one transaction guarded by the row's `version`.

use std::collections::HashMap;

use async_trait::async_trait;
use quckchat_domain::call_model::{Call, CallKind, CallParticipant, CallStatus, ParticipantStatus};
use quckchat_domain::model::Timestamp;
use quckchat_domain::store::{CallStore, StoreResult};
use quckchat_domain::{CallId, ConversationId, UserId};
use sqlx::PgConnection;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::PostgresStore;
use crate::codec::{db, get, id, opt_ts, ts, wire};
use crate::read_tx;

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
fn call_from_row(row: &PgRow) -> StoreResult<Call> {
    Ok(Call {
        id: id(row, "id")?,
        conversation_id: id(row, "conversation_id")?,
        initiator_id: id(row, "initiator_id")?,
        kind: wire(row, "kind", CallKind::parse)?,
        status: wire(row, "status", CallStatus::parse)?,
        participants: Vec::new(),
        created_at: get(row, "created_at")?,
        started_at: get(row, "started_at")?,
        ended_at: get(row, "ended_at")?,
        duration_sec: get(row, "duration_sec")?,
        version: get(row, "version")?,
    })
}

/// Decodes call rows and fills in their participants, in order, with one query.
async fn complete(conn: &mut PgConnection, rows: Vec<PgRow>) -> StoreResult<Vec<Call>> {
    let mut calls = rows.iter().map(call_from_row).collect::<StoreResult<Vec<_>>>()?;
    if calls.is_empty() {
        return Ok(calls);
    }
    let ids: Vec<Uuid> = calls.iter().map(|c| c.id.as_uuid()).collect();
    let participant_rows = sqlx::query(
        "SELECT call_id, user_id, status, joined_at, left_at, device FROM call_participants
          WHERE call_id = ANY($1)
          ORDER BY call_id, position",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    let mut participants: HashMap<CallId, Vec<CallParticipant>> = HashMap::new();
    for row in &participant_rows {
        let call: CallId = id(row, "call_id")?;
        participants.entry(call).or_default().push(CallParticipant {
            user_id: id(row, "user_id")?,
            status: wire(row, "status", ParticipantStatus::parse)?,
            joined_at: get(row, "joined_at")?,
            left_at: get(row, "left_at")?,
            device: get(row, "device")?,
        });
    }
    for call in &mut calls {
        call.participants = participants.remove(&call.id).unwrap_or_default();
    }
    Ok(calls)
}

/// Writes a call's participants, in order, on a connection already in a transaction.
async fn insert_participants(conn: &mut PgConnection, call: &Call) -> StoreResult<()> {
    let users: Vec<Uuid> = call.participants.iter().map(|p| p.user_id.as_uuid()).collect();
    let statuses: Vec<&str> = call.participants.iter().map(|p| p.status.as_str()).collect();
    let joined: Vec<Option<Timestamp>> = call.participants.iter().map(|p| opt_ts(p.joined_at)).collect();
    let left: Vec<Option<Timestamp>> = call.participants.iter().map(|p| opt_ts(p.left_at)).collect();
    let devices: Vec<Option<&str>> = call.participants.iter().map(|p| p.device.as_deref()).collect();
    // `position` counts from 0, as the list does.
    sqlx::query(
        "INSERT INTO call_participants (call_id, user_id, position, status, joined_at, left_at, device)
         SELECT $1, p.user_id, p.n - 1, p.status, p.joined_at, p.left_at, p.device
           FROM UNNEST($2::uuid[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::text[])
                WITH ORDINALITY AS p(user_id, status, joined_at, left_at, device, n)",
    )
    .bind(call.id.as_uuid())
    .bind(users)
    .bind(statuses)
    .bind(joined)
    .bind(left)
    .bind(devices)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

#[async_trait]
impl CallStore for PostgresStore {
    async fn create_call(&self, call: &Call) -> StoreResult<()> {
        let pool = &self.pool;
        let mut tx = pool.begin().await.map_err(db)?;
        sqlx::query(
            "INSERT INTO calls (id, conversation_id, initiator_id, kind, status, created_at,
                            started_at, ended_at, duration_sec, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(call.id.as_uuid())
        .bind(call.conversation_id.as_uuid())
        .bind(call.initiator_id.as_uuid())
        .bind(call.kind.as_str())
        .bind(call.status.as_str())
        .bind(ts(call.created_at))
        .bind(opt_ts(call.started_at))
        .bind(opt_ts(call.ended_at))
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
        let mut tx = read_tx(pool).await?;
        let rows = sqlx::query(concat!("SELECT ", call_columns!(), " FROM calls c WHERE c.id = $1"))
            .bind(call.as_uuid())
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        let found = complete(&mut tx, rows).await?;
        tx.commit().await.map_err(db)?;
        Ok(found.into_iter().next())
    }

    async fn save_call(&self, call: &Call, expected_version: i64) -> StoreResult<bool> {
        let pool = &self.pool;
        // The version check is the UPDATE's condition: of several saves from the same
        // version, the later ones wait for the first's row lock, then re-check the condition
        // on the row it wrote and match nothing. What a call is (its conversation, initiator,
        // kind and creation time) never changes, so only its state is written. An unknown id
        // matches no version either: `false`.
        let mut tx = pool.begin().await.map_err(db)?;
        let updated = sqlx::query(
            "UPDATE calls
            SET status = $3, started_at = $4, ended_at = $5, duration_sec = $6, version = $7
          WHERE id = $1 AND version = $2",
        )
        .bind(call.id.as_uuid())
        .bind(expected_version)
        .bind(call.status.as_str())
        .bind(opt_ts(call.started_at))
        .bind(opt_ts(call.ended_at))
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
        sqlx::query("DELETE FROM call_participants WHERE call_id = $1")
            .bind(call.id.as_uuid())
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
        let mut tx = read_tx(pool).await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            call_columns!(),
            " FROM calls c
          WHERE c.conversation_id = $1 AND ($2::timestamptz IS NULL OR c.created_at < $2)
          ORDER BY c.created_at DESC, c.id DESC
          LIMIT $3"
        ))
        .bind(conversation.as_uuid())
        .bind(opt_ts(before))
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
        let mut tx = read_tx(pool).await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            call_columns!(),
            " FROM call_participants p JOIN calls c ON c.id = p.call_id
          WHERE p.user_id = $1
            AND p.status IN ('ringing', 'joined')
            AND c.status IN ",
            live_statuses!(),
            " ORDER BY c.created_at, c.id"
        ))
        .bind(user.as_uuid())
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let calls = complete(&mut tx, rows).await?;
        tx.commit().await.map_err(db)?;
        Ok(calls)
    }

    async fn live_calls(&self) -> StoreResult<Vec<Call>> {
        let pool = &self.pool;
        let mut tx = read_tx(pool).await?;
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
