//! The push outbox.

use std::sync::LazyLock;

use async_trait::async_trait;
use quckchat_domain::model::{PushJob, PushKind, Timestamp};
use quckchat_domain::store::{PushOutbox, StoreResult};
use quckchat_domain::{PushJobId, StoreError, UserId};
use sqlx::PgConnection;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::PostgresStore;
use crate::codec::{corrupt, db, get, id, opt_id, ts, wire};

macro_rules! job_columns {
    () => {
        "id, user_id, kind, conversation_id, message_id, call_id, sender_id, sender_name, preview,
         created_at, attempts, next_attempt_at, delivered_at, failed_at, last_error"
    };
}

fn job_from_row(row: &PgRow) -> StoreResult<PushJob> {
    let attempts: i64 = get(row, "attempts")?;
    Ok(PushJob {
        id: id(row, "id")?,
        user_id: id(row, "user_id")?,
        kind: wire(row, "kind", PushKind::parse)?,
        conversation_id: id(row, "conversation_id")?,
        message_id: opt_id(row, "message_id")?,
        call_id: get(row, "call_id")?,
        sender_id: id(row, "sender_id")?,
        sender_name: get(row, "sender_name")?,
        preview: get(row, "preview")?,
        created_at: get(row, "created_at")?,
        attempts: u32::try_from(attempts).map_err(|_| corrupt(format!("attempts {attempts}")))?,
        next_attempt_at: get(row, "next_attempt_at")?,
        delivered_at: get(row, "delivered_at")?,
        failed_at: get(row, "failed_at")?,
        last_error: get(row, "last_error")?,
    })
}

/// Writes jobs, in the order given, with one statement (an append holds its
/// conversation's lock meanwhile, so round trips there are everyone's wait).
/// The columns of a push job, as [`jobs_select`] names them.
pub(crate) const JOB_COLUMNS: &str = job_columns!();

/// The `SELECT` that yields `jobs` as rows (the job columns, then `n`, its 1-based
/// position), from 15 array parameters starting at `$first` (bound by [`bind_jobs`]).
pub(crate) fn jobs_select(first: usize) -> String {
    let types = [
        "uuid",
        "uuid",
        "text",
        "uuid",
        "uuid",
        "text",
        "uuid",
        "text",
        "text",
        "timestamptz",
        "bigint",
        "timestamptz",
        "timestamptz",
        "timestamptz",
        "text",
    ];
    let params: Vec<String> = types.iter().enumerate().map(|(i, t)| format!("${}::{t}[]", first + i)).collect();
    format!(
        "SELECT * FROM UNNEST({}) WITH ORDINALITY
                AS j(id, user_id, kind, conversation_id, message_id, call_id, sender_id,
                     sender_name, preview, created_at, attempts, next_attempt_at, delivered_at,
                     failed_at, last_error, n)",
        params.join(", ")
    )
}

/// Binds `jobs` column by column, as [`jobs_select`] expects them.
pub(crate) fn bind_jobs<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    jobs: &'q [PushJob],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let column = |f: fn(&PushJob) -> Uuid| jobs.iter().map(f).collect::<Vec<_>>();
    let ids = column(|j| j.id.as_uuid());
    let users = column(|j| j.user_id.as_uuid());
    let conversations = column(|j| j.conversation_id.as_uuid());
    let senders = column(|j| j.sender_id.as_uuid());
    let kinds: Vec<&str> = jobs.iter().map(|j| j.kind.as_str()).collect();
    let messages: Vec<Option<Uuid>> = jobs.iter().map(|j| j.message_id.map(|m| m.as_uuid())).collect();
    let call_ids: Vec<Option<&str>> = jobs.iter().map(|j| j.call_id.as_deref()).collect();
    let sender_names: Vec<&str> = jobs.iter().map(|j| j.sender_name.as_str()).collect();
    let previews: Vec<&str> = jobs.iter().map(|j| j.preview.as_str()).collect();
    let created: Vec<Timestamp> = jobs.iter().map(|j| ts(j.created_at)).collect();
    let attempts: Vec<i64> = jobs.iter().map(|j| i64::from(j.attempts)).collect();
    let next: Vec<Timestamp> = jobs.iter().map(|j| ts(j.next_attempt_at)).collect();
    let delivered: Vec<Option<Timestamp>> = jobs.iter().map(|j| j.delivered_at.map(ts)).collect();
    let failed: Vec<Option<Timestamp>> = jobs.iter().map(|j| j.failed_at.map(ts)).collect();
    let errors: Vec<Option<&str>> = jobs.iter().map(|j| j.last_error.as_deref()).collect();
    query
        .bind(ids)
        .bind(users)
        .bind(kinds)
        .bind(conversations)
        .bind(messages)
        .bind(call_ids)
        .bind(senders)
        .bind(sender_names)
        .bind(previews)
        .bind(created)
        .bind(attempts)
        .bind(next)
        .bind(delivered)
        .bind(failed)
        .bind(errors)
}

/// Writes jobs on a connection (in the caller's transaction, if any), in the order given.
pub(crate) async fn insert_jobs(conn: &mut PgConnection, jobs: &[PushJob]) -> StoreResult<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    static INSERT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO push_jobs ({cols}) SELECT {cols} FROM ({jobs}) j ORDER BY j.n",
            cols = job_columns!(),
            jobs = jobs_select(1)
        )
    });
    bind_jobs(sqlx::query(INSERT.as_str()), jobs).execute(&mut *conn).await.map_err(db)?;
    Ok(())
}

#[async_trait]
impl PushOutbox for PostgresStore {
    async fn enqueue_pushes(&self, jobs: Vec<PushJob>) -> StoreResult<()> {
        let pool = &self.pool;
        let mut conn = pool.acquire().await.map_err(db)?;
        insert_jobs(&mut conn, &jobs).await
    }

    async fn claim_pushes(&self, now: Timestamp, lease_until: Timestamp, limit: u32) -> StoreResult<Vec<PushJob>> {
        let pool = &self.pool;
        // One statement: the due jobs are locked as they are picked, jobs another worker has
        // locked are skipped rather than waited for, and the picked ones are leased before
        // the locks go. Concurrent workers, in any process, take disjoint jobs.
        let rows = sqlx::query(concat!(
            "WITH due AS (
             SELECT id AS due_id FROM push_jobs
              WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $1
              ORDER BY created_at, ord
              LIMIT $2
                FOR UPDATE SKIP LOCKED
         )
         UPDATE push_jobs j SET next_attempt_at = $3
           FROM due
          WHERE j.id = due.due_id
         RETURNING ord, ",
            job_columns!()
        ))
        .bind(ts(now))
        .bind(i64::from(limit))
        .bind(ts(lease_until))
        .fetch_all(pool)
        .await
        .map_err(db)?;
        // RETURNING follows no order: oldest first, as picked.
        let mut jobs = rows
            .iter()
            .map(|row| {
                let ord: i64 = get(row, "ord")?;
                let job = job_from_row(row)?;
                Ok(((job.created_at, ord), job))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        jobs.sort_by_key(|(order, _)| *order);
        Ok(jobs.into_iter().map(|(_, job)| job).collect())
    }

    async fn push_delivered(&self, job: PushJobId, at: Timestamp) -> StoreResult<()> {
        let pool = &self.pool;
        let done = sqlx::query("UPDATE push_jobs SET delivered_at = $2 WHERE id = $1")
            .bind(job.as_uuid())
            .bind(ts(at))
            .execute(pool)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn push_failed(
        &self,
        job: PushJobId,
        error: &str,
        next_attempt_at: Timestamp,
        give_up: bool,
        at: Timestamp,
    ) -> StoreResult<()> {
        let pool = &self.pool;
        let done = sqlx::query(
            "UPDATE push_jobs
            SET attempts = attempts + 1,
                last_error = $2,
                next_attempt_at = $3,
                failed_at = CASE WHEN $4 THEN $5 ELSE failed_at END
          WHERE id = $1",
        )
        .bind(job.as_uuid())
        .bind(error)
        .bind(ts(next_attempt_at))
        .bind(give_up)
        .bind(ts(at))
        .execute(pool)
        .await
        .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn pushes_for(&self, user: UserId) -> StoreResult<Vec<PushJob>> {
        let pool = &self.pool;
        sqlx::query(concat!("SELECT ", job_columns!(), " FROM push_jobs WHERE user_id = $1 ORDER BY created_at, ord"))
            .bind(user.as_uuid())
            .fetch_all(pool)
            .await
            .map_err(db)?
            .iter()
            .map(job_from_row)
            .collect()
    }
}
