//! The push outbox.

use async_trait::async_trait;
use quckchat_domain::model::{PushJob, PushKind, Timestamp};
use quckchat_domain::store::{PushOutbox, StoreResult};
use quckchat_domain::{PushJobId, StoreError, UserId};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use crate::SqliteStore;
use crate::codec::{corrupt, db, id, id_list, ms, opt_id, opt_time, time};

macro_rules! job_columns {
    () => {
        "id, user_id, kind, conversation_id, message_id, call_id, sender_id, sender_name, preview,
         created_at, attempts, next_attempt_at, delivered_at, failed_at, last_error"
    };
}

fn job_from_row(row: &SqliteRow) -> StoreResult<PushJob> {
    let kind: String = row.try_get("kind").map_err(db)?;
    let attempts: i64 = row.try_get("attempts").map_err(db)?;
    Ok(PushJob {
        id: id(row.try_get("id").map_err(db)?)?,
        user_id: id(row.try_get("user_id").map_err(db)?)?,
        kind: PushKind::parse(&kind).ok_or_else(|| corrupt(format!("push kind {kind:?}")))?,
        conversation_id: id(row.try_get("conversation_id").map_err(db)?)?,
        message_id: opt_id(row.try_get::<Option<&str>, _>("message_id").map_err(db)?)?,
        call_id: row.try_get("call_id").map_err(db)?,
        sender_id: id(row.try_get("sender_id").map_err(db)?)?,
        sender_name: row.try_get("sender_name").map_err(db)?,
        preview: row.try_get("preview").map_err(db)?,
        created_at: time(row.try_get("created_at").map_err(db)?)?,
        attempts: u32::try_from(attempts).map_err(|_| corrupt(format!("attempts {attempts}")))?,
        next_attempt_at: time(row.try_get("next_attempt_at").map_err(db)?)?,
        delivered_at: opt_time(row.try_get("delivered_at").map_err(db)?)?,
        failed_at: opt_time(row.try_get("failed_at").map_err(db)?)?,
        last_error: row.try_get("last_error").map_err(db)?,
    })
}

/// Writes jobs on a connection that is already in a transaction.
pub(crate) async fn insert_jobs(conn: &mut SqliteConnection, jobs: &[PushJob]) -> StoreResult<()> {
    for job in jobs {
        sqlx::query(concat!(
            "INSERT INTO push_jobs (",
            job_columns!(),
            ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
        ))
        .bind(job.id.to_string())
        .bind(job.user_id.to_string())
        .bind(job.kind.as_str())
        .bind(job.conversation_id.to_string())
        .bind(job.message_id.map(|m| m.to_string()))
        .bind(&job.call_id)
        .bind(job.sender_id.to_string())
        .bind(&job.sender_name)
        .bind(&job.preview)
        .bind(ms(job.created_at))
        .bind(i64::from(job.attempts))
        .bind(ms(job.next_attempt_at))
        .bind(job.delivered_at.map(ms))
        .bind(job.failed_at.map(ms))
        .bind(&job.last_error)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    }
    Ok(())
}

#[async_trait]
impl PushOutbox for SqliteStore {
    async fn enqueue_pushes(&self, jobs: Vec<PushJob>) -> StoreResult<()> {
        let pool = &self.pool;
        if jobs.is_empty() {
            return Ok(());
        }
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        insert_jobs(&mut tx, &jobs).await?;
        tx.commit().await.map_err(db)
    }

    async fn claim_pushes(&self, now: Timestamp, lease_until: Timestamp, limit: u32) -> StoreResult<Vec<PushJob>> {
        let pool = &self.pool;
        // Select and lease under one write lock, so two workers never take the same job.
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM push_jobs
         WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= ?1
         ORDER BY created_at, rowid
         LIMIT ?2"
        ))
        .bind(ms(now))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let mut jobs = rows.iter().map(job_from_row).collect::<StoreResult<Vec<_>>>()?;
        if jobs.is_empty() {
            return Ok(jobs);
        }
        sqlx::query("UPDATE push_jobs SET next_attempt_at = ?1 WHERE id IN (SELECT value FROM json_each(?2))")
            .bind(ms(lease_until))
            .bind(id_list(jobs.iter().map(|j| j.id)))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        for job in &mut jobs {
            job.next_attempt_at = lease_until;
        }
        Ok(jobs)
    }

    async fn push_delivered(&self, job: PushJobId, at: Timestamp) -> StoreResult<()> {
        let pool = &self.pool;
        let done = sqlx::query("UPDATE push_jobs SET delivered_at = ?2 WHERE id = ?1")
            .bind(job.to_string())
            .bind(ms(at))
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
                last_error = ?2,
                next_attempt_at = ?3,
                failed_at = CASE WHEN ?4 THEN ?5 ELSE failed_at END
          WHERE id = ?1",
        )
        .bind(job.to_string())
        .bind(error)
        .bind(ms(next_attempt_at))
        .bind(give_up)
        .bind(ms(at))
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
        sqlx::query(concat!("SELECT ", job_columns!(), " FROM push_jobs WHERE user_id = ?1 ORDER BY created_at, rowid"))
            .bind(user.to_string())
            .fetch_all(pool)
            .await
            .map_err(db)?
            .iter()
            .map(job_from_row)
            .collect()
    }
}
