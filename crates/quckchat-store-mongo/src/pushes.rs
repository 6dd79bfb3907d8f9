//! The push outbox.
//!
//! A job is one document under its own id. Jobs that may still be delivered (neither
//! delivered nor given up) carry `pending: true`, which is what the partial index of due
//! jobs covers; delivering or giving up removes it. Claims lease one job at a time with
//! a conditional `findOneAndUpdate`, so concurrent workers in any process take disjoint
//! jobs.

use async_trait::async_trait;
use chrono::Utc;
use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::ReturnDocument;
use quckchat_domain::model::{PushJob, PushKind, Timestamp};
use quckchat_domain::store::{PushOutbox, StoreResult};
use quckchat_domain::{PushJobId, StoreError, UserId};

use crate::Collections;
use crate::MongoStore;
use crate::codec::{
    DbId, corrupt, date, db, id, int, limit, only_duplicates, opt_date, opt_id, opt_id_bson, opt_str_bson, opt_string,
    opt_time, string, time, wire,
};

/// How many times a claim looks again for due jobs when others took some of those it
/// picked first.
const CLAIM_ROUNDS: usize = 4;

/// The order of "oldest first": creation time, then when the job was written, then its
/// place in the batch it was written with, then its id.
fn oldest_first() -> Document {
    doc! { "createdAt": 1, "enqueuedAt": 1, "ord": 1, "_id": 1 }
}

/// The document of a job. `enqueuedAt` (now) and `ord` (its place in the batch it is
/// written with, set by [`insert_jobs`]) order jobs created at the same time.
pub(crate) fn job_doc(job: &PushJob) -> Document {
    let mut document = doc! {
        "_id": job.id.bson(),
        "userId": job.user_id.bson(),
        "kind": job.kind.as_str(),
        "conversationId": job.conversation_id.bson(),
        "messageId": opt_id_bson(job.message_id),
        "callId": opt_str_bson(job.call_id.as_deref()),
        "senderId": job.sender_id.bson(),
        "senderName": &job.sender_name,
        "preview": &job.preview,
        "createdAt": date(job.created_at),
        "attempts": i64::from(job.attempts),
        "nextAttemptAt": date(job.next_attempt_at),
        "deliveredAt": opt_date(job.delivered_at),
        "failedAt": opt_date(job.failed_at),
        "lastError": opt_str_bson(job.last_error.as_deref()),
        "enqueuedAt": date(Utc::now()),
        "ord": 0_i64,
    };
    if job.delivered_at.is_none() && job.failed_at.is_none() {
        document.insert("pending", true);
    }
    document
}

fn job_from_doc(doc: &Document) -> StoreResult<PushJob> {
    let attempts = int(doc, "attempts")?;
    Ok(PushJob {
        id: id(doc, "_id")?,
        user_id: id(doc, "userId")?,
        kind: wire(doc, "kind", PushKind::parse)?,
        conversation_id: id(doc, "conversationId")?,
        message_id: opt_id(doc, "messageId")?,
        call_id: opt_string(doc, "callId")?,
        sender_id: id(doc, "senderId")?,
        sender_name: string(doc, "senderName")?,
        preview: string(doc, "preview")?,
        created_at: time(doc, "createdAt")?,
        attempts: u32::try_from(attempts).map_err(|_| corrupt(format!("attempts {attempts}")))?,
        next_attempt_at: time(doc, "nextAttemptAt")?,
        delivered_at: opt_time(doc, "deliveredAt")?,
        failed_at: opt_time(doc, "failedAt")?,
        last_error: opt_string(doc, "lastError")?,
    })
}

/// Writes job documents in one round trip, in the order given. With
/// `ignore_duplicates`, jobs already stored under their id are skipped (an append's
/// effects being applied a second time).
pub(crate) async fn insert_jobs(c: &Collections, mut jobs: Vec<Document>, ignore_duplicates: bool) -> StoreResult<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    for (n, job) in jobs.iter_mut().enumerate() {
        job.insert("ord", i64::try_from(n).unwrap_or(i64::MAX));
    }
    match c.pushes.insert_many(jobs).ordered(!ignore_duplicates).await {
        Ok(_) => Ok(()),
        Err(e) if ignore_duplicates && only_duplicates(&e) => Ok(()),
        Err(e) => Err(db(e)),
    }
}

#[async_trait]
impl PushOutbox for MongoStore {
    async fn enqueue_pushes(&self, jobs: Vec<PushJob>) -> StoreResult<()> {
        let c = &self.c;
        let docs = jobs.iter().map(job_doc).collect();
        insert_jobs(c, docs, false).await
    }

    async fn claim_pushes(&self, now: Timestamp, lease_until: Timestamp, max: u32) -> StoreResult<Vec<PushJob>> {
        let c = &self.c;
        let mut claimed: Vec<(Document, PushJob)> = Vec::new();
        let due = || doc! { "pending": true, "nextAttemptAt": { "$lte": date(now) } };
        for _ in 0..CLAIM_ROUNDS {
            let wanted = max.saturating_sub(u32::try_from(claimed.len()).unwrap_or(u32::MAX));
            if wanted == 0 {
                break;
            }
            let candidates: Vec<Document> = c
                .pushes
                .find(due())
                .sort(oldest_first())
                .limit(limit(wanted))
                .projection(doc! { "_id": 1 })
                .await
                .map_err(db)?
                .try_collect()
                .await
                .map_err(db)?;
            let found = candidates.len();
            for candidate in candidates {
                let mut filter = due();
                filter.insert("_id", candidate.get("_id").cloned().unwrap_or(Bson::Null));
                // Still due? Then it is ours until `lease_until`: the check and the lease
                // are one atomic update, so a job another worker leased meanwhile is skipped.
                let leased = c
                    .pushes
                    .find_one_and_update(filter, doc! { "$set": { "nextAttemptAt": date(lease_until) } })
                    .return_document(ReturnDocument::After)
                    .await
                    .map_err(db)?;
                if let Some(leased) = leased {
                    let job = job_from_doc(&leased)?;
                    claimed.push((leased, job));
                }
            }
            if found < usize::try_from(wanted).unwrap_or(usize::MAX) {
                // Nothing more is due.
                break;
            }
        }
        // Oldest first, as picked.
        let key = |d: &Document| -> StoreResult<(Timestamp, Option<Timestamp>, i64, PushJobId)> {
            Ok((
                time(d, "createdAt")?,
                opt_time(d, "enqueuedAt")?,
                crate::codec::opt_int(d, "ord")?.unwrap_or(0),
                id(d, "_id")?,
            ))
        };
        let mut keyed = claimed.into_iter().map(|(d, job)| Ok((key(&d)?, job))).collect::<StoreResult<Vec<_>>>()?;
        keyed.sort_by_key(|(k, _)| *k);
        Ok(keyed.into_iter().map(|(_, job)| job).collect())
    }

    async fn push_delivered(&self, job: PushJobId, at: Timestamp) -> StoreResult<()> {
        let c = &self.c;
        let done = c
            .pushes
            .update_one(
                doc! { "_id": job.bson() },
                doc! { "$set": { "deliveredAt": date(at) }, "$unset": { "pending": "" } },
            )
            .await
            .map_err(db)?;
        if done.matched_count == 0 {
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
        let c = &self.c;
        let mut update = doc! {
            "$inc": { "attempts": 1_i64 },
            "$set": { "lastError": error, "nextAttemptAt": date(next_attempt_at) },
        };
        if give_up {
            update = doc! {
                "$inc": { "attempts": 1_i64 },
                "$set": { "lastError": error, "nextAttemptAt": date(next_attempt_at), "failedAt": date(at) },
                "$unset": { "pending": "" },
            };
        }
        let done = c.pushes.update_one(doc! { "_id": job.bson() }, update).await.map_err(db)?;
        if done.matched_count == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn pushes_for(&self, user: UserId) -> StoreResult<Vec<PushJob>> {
        let c = &self.c;
        let found: Vec<Document> = c
            .pushes
            .find(doc! { "userId": user.bson() })
            .sort(oldest_first())
            .await
            .map_err(db)?
            .try_collect()
            .await
            .map_err(db)?;
        found.iter().map(job_from_doc).collect()
    }
}
