//! The push outbox worker: takes due jobs from the store, POSTs each to
//! `PUSH_WEBHOOK_URL`, marks it delivered, or schedules a retry with exponential
//! backoff. Jobs live in the store, so they survive restarts; a lease keeps two workers
//! (or two instances) from sending the same job at once. Delivery is at least once: the
//! job id is sent as `Idempotency-Key` so a receiver can drop a repeat after a crash.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use quckchat_domain::model::{PushJob, now};
use quckchat_domain::store::Store;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How the worker retries.
#[derive(Debug, Clone)]
pub struct PushPolicy {
    /// The first retry waits this long; each next one twice as long.
    pub base_delay: Duration,
    /// No retry waits longer.
    pub max_delay: Duration,
    /// After this many failed attempts the job is marked failed.
    pub max_attempts: u32,
    /// How long a claimed job is reserved for this worker.
    pub lease: Duration,
    /// How long one POST may take.
    pub request_timeout: Duration,
    /// Jobs taken at once.
    pub batch: u32,
}

impl Default for PushPolicy {
    fn default() -> Self {
        Self {
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            max_attempts: 10,
            lease: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            batch: 32,
        }
    }
}

impl PushPolicy {
    /// The wait before attempt `attempts + 1`.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// Sends queued pushes to a webhook.
pub struct PushWorker {
    store: Arc<dyn Store>,
    client: reqwest::Client,
    url: String,
    queued: Arc<Notify>,
    metrics: Metrics,
    policy: PushPolicy,
}

impl PushWorker {
    /// A worker for `url`, woken by `queued`.
    pub fn new(store: Arc<dyn Store>, url: String, queued: Arc<Notify>, metrics: Metrics, policy: PushPolicy) -> Self {
        let client = reqwest::Client::builder().timeout(policy.request_timeout).build().unwrap_or_default();
        Self { store, client, url, queued, metrics, policy }
    }

    /// Runs until `stop` is cancelled; the job being sent is finished first.
    pub async fn run(self, stop: CancellationToken) {
        tracing::info!(url = %self.url, "push worker started");
        let idle_poll = self.policy.base_delay.min(Duration::from_secs(1));
        loop {
            let wake = self.queued.notified();
            let taken = self.tick().await;
            if stop.is_cancelled() {
                break;
            }
            if taken >= self.policy.batch as usize {
                continue;
            }
            tokio::select! {
                _ = wake => {}
                _ = tokio::time::sleep(idle_poll) => {}
                _ = stop.cancelled() => break,
            }
        }
        tracing::info!("push worker stopped");
    }

    /// Takes one batch of due jobs and attempts each; returns how many it took.
    pub async fn tick(&self) -> usize {
        let at = now();
        let lease_until = at + chrono::Duration::from_std(self.policy.lease).unwrap_or(chrono::Duration::seconds(60));
        let jobs = match self.store.claim_pushes(at, lease_until, self.policy.batch).await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(error = %e, "push worker: could not claim jobs");
                return 0;
            }
        };
        let taken = jobs.len();
        for job in jobs {
            self.attempt(job).await;
        }
        taken
    }

    async fn attempt(&self, job: PushJob) {
        let body = json!({
            "id": job.id,
            "userId": job.user_id,
            "kind": job.kind,
            "conversationId": job.conversation_id,
            "messageId": job.message_id,
            "callId": job.call_id,
            "senderId": job.sender_id,
            "senderName": job.sender_name,
            "preview": job.preview,
            "createdAt": job.created_at,
            "attempt": job.attempts + 1,
        });
        let result = self
            .client
            .post(&self.url)
            .header("Idempotency-Key", job.id.to_string())
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())
            .and_then(
                |r| if r.status().is_success() { Ok(()) } else { Err(format!("webhook answered {}", r.status())) },
            );
        let at = now();
        match result {
            Ok(()) => {
                self.metrics.push("delivered");
                if let Err(e) = self.store.push_delivered(job.id, at).await {
                    tracing::warn!(job = %job.id, error = %e, "push sent but not marked delivered; it may be sent again");
                }
            }
            Err(error) => {
                let attempts = job.attempts + 1;
                let give_up = attempts >= self.policy.max_attempts;
                let next = Utc::now()
                    + chrono::Duration::from_std(self.policy.backoff(attempts))
                        .unwrap_or(chrono::Duration::seconds(60));
                self.metrics.push(if give_up { "failed" } else { "retry" });
                tracing::warn!(job = %job.id, attempts, give_up, %error, "push attempt failed");
                if let Err(e) = self.store.push_failed(job.id, &error, next, give_up, at).await {
                    tracing::warn!(job = %job.id, error = %e, "could not record a failed push");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p =
            PushPolicy { base_delay: Duration::from_secs(1), max_delay: Duration::from_secs(10), ..Default::default() };
        assert_eq!(p.backoff(1), Duration::from_secs(1));
        assert_eq!(p.backoff(2), Duration::from_secs(2));
        assert_eq!(p.backoff(4), Duration::from_secs(8));
        assert_eq!(p.backoff(5), Duration::from_secs(10));
        assert_eq!(p.backoff(60), Duration::from_secs(10));
    }
}
