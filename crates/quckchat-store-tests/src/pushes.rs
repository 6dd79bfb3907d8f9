//! The push outbox: jobs written with messages or on their own, claims with leases,
//! delivery, retries and giving up.

use quckchat_domain::model::{PushJob, PushKind};
use quckchat_domain::{ConversationId, PushJobId};

use crate::support::{DynStore, created, message_push, single, t, text, user};

async fn pair(store: &DynStore) -> (quckchat_domain::UserId, quckchat_domain::UserId, ConversationId) {
    let a = user(store, "alice").await;
    let b = user(store, "bob").await;
    let id = single(store, a.id, b.id, t(0)).await;
    (a.id, b.id, id)
}

fn job_ids(jobs: &[PushJob]) -> Vec<PushJobId> {
    jobs.iter().map(|j| j.id).collect()
}

/// Jobs given with `append_message` are stored exactly as given.
pub async fn append_message_stores_push_jobs(store: DynStore) {
    let (a, b, id) = pair(&store).await;
    let c = user(&store, "carol").await.id;
    let new = text(id, a, "hi", t(10));
    let for_b = message_push(b, id, Some(new.id), a, t(10));
    let for_c = message_push(c, id, Some(new.id), a, t(10));
    created(store.append_message(new, vec![for_b.clone(), for_c.clone()]).await.expect("append"));
    assert_eq!(store.pushes_for(b).await.expect("pushes_for"), vec![for_b]);
    assert_eq!(store.pushes_for(c).await.expect("pushes_for"), vec![for_c]);
    assert!(store.pushes_for(a).await.expect("pushes_for").is_empty());
}

/// Claims take due jobs oldest first and lease them until `lease_until`.
pub async fn claim_leases_due_jobs_oldest_first(store: DynStore) {
    let (a, b, id) = pair(&store).await;
    let j1 = message_push(b, id, None, a, t(1_000));
    let j2 = message_push(b, id, None, a, t(2_000));
    let j3 = message_push(a, id, None, b, t(3_000));
    let j4 = PushJob { next_attempt_at: t(10_000), ..message_push(b, id, None, a, t(4_000)) };
    // Enqueued out of order: age, not arrival, decides.
    store.enqueue_pushes(vec![j3.clone(), j4.clone()]).await.expect("enqueue");
    store.enqueue_pushes(vec![j2.clone(), j1.clone()]).await.expect("enqueue");

    let first = store.claim_pushes(t(5_000), t(65_000), 2).await.expect("claim");
    assert_eq!(job_ids(&first), vec![j1.id, j2.id]);
    assert!(first.iter().all(|j| j.next_attempt_at == t(65_000)), "leased");
    assert_eq!(first[0], PushJob { next_attempt_at: t(65_000), ..j1.clone() });
    assert_eq!(job_ids(&store.claim_pushes(t(5_001), t(65_001), 10).await.expect("claim")), vec![j3.id]);
    assert!(store.claim_pushes(t(6_000), t(66_000), 10).await.expect("claim").is_empty(), "all leased or not due");
    assert_eq!(job_ids(&store.claim_pushes(t(10_000), t(70_000), 10).await.expect("claim")), vec![j4.id]);

    let again = store.claim_pushes(t(65_001), t(125_001), 10).await.expect("claim after lease");
    assert_eq!(job_ids(&again), vec![j1.id, j2.id, j3.id], "expired leases are claimable again, oldest first");
}

/// A delivered job is never claimed again and shows its delivery time.
pub async fn delivered_jobs_are_not_claimed(store: DynStore) {
    let (a, b, id) = pair(&store).await;
    let job = message_push(b, id, None, a, t(1_000));
    store.enqueue_pushes(vec![job.clone()]).await.expect("enqueue");
    assert_eq!(job_ids(&store.claim_pushes(t(1_000), t(2_000), 10).await.expect("claim")), vec![job.id]);
    store.push_delivered(job.id, t(1_500)).await.expect("delivered");
    assert!(store.claim_pushes(t(100_000), t(200_000), 10).await.expect("claim").is_empty());
    let stored = store.pushes_for(b).await.expect("pushes_for");
    assert_eq!(stored[0].delivered_at, Some(t(1_500)));
    assert_eq!(stored[0].failed_at, None);
}

/// A failure schedules the next attempt; giving up ends the job for good.
pub async fn failed_jobs_retry_then_give_up(store: DynStore) {
    let (a, b, id) = pair(&store).await;
    let job = message_push(b, id, None, a, t(1_000));
    store.enqueue_pushes(vec![job.clone()]).await.expect("enqueue");
    store.claim_pushes(t(1_000), t(61_000), 10).await.expect("claim");
    store.push_failed(job.id, "503 from gateway", t(20_000), false, t(2_000)).await.expect("failed");
    let stored = store.pushes_for(b).await.expect("pushes_for").remove(0);
    assert_eq!(stored.attempts, 1);
    assert_eq!(stored.last_error.as_deref(), Some("503 from gateway"));
    assert_eq!(stored.next_attempt_at, t(20_000));
    assert_eq!((stored.failed_at, stored.delivered_at), (None, None));

    assert!(store.claim_pushes(t(19_999), t(80_000), 10).await.expect("claim").is_empty(), "not yet");
    assert_eq!(job_ids(&store.claim_pushes(t(20_000), t(80_000), 10).await.expect("claim")), vec![job.id]);

    store.push_failed(job.id, "410 gone", t(90_000), true, t(21_000)).await.expect("give up");
    let stored = store.pushes_for(b).await.expect("pushes_for").remove(0);
    assert_eq!(stored.attempts, 2);
    assert_eq!(stored.failed_at, Some(t(21_000)));
    assert_eq!(stored.last_error.as_deref(), Some("410 gone"));
    assert!(store.claim_pushes(t(10_000_000), t(20_000_000), 10).await.expect("claim").is_empty(), "given up");
}

/// `pushes_for` lists one user's jobs, oldest first.
pub async fn pushes_for_lists_user_jobs_oldest_first(store: DynStore) {
    let (a, b, id) = pair(&store).await;
    let late = message_push(b, id, None, a, t(3_000));
    let early = message_push(b, id, None, a, t(1_000));
    let others = message_push(a, id, None, b, t(2_000));
    store.enqueue_pushes(vec![late.clone(), others.clone(), early.clone()]).await.expect("enqueue");
    assert_eq!(store.pushes_for(b).await.expect("pushes_for"), vec![early, late]);
    assert_eq!(store.pushes_for(a).await.expect("pushes_for"), vec![others]);
}

/// Standalone jobs (calls) are stored exactly as given and claimable.
pub async fn enqueue_standalone_call_jobs(store: DynStore) {
    let (a, b, id) = pair(&store).await;
    let call = PushJob::new(
        b,
        PushKind::Call,
        id,
        None,
        Some("call-7".into()),
        a,
        "Alice".into(),
        "Incoming call".into(),
        t(1_000),
    );
    store.enqueue_pushes(vec![call.clone()]).await.expect("enqueue");
    store.enqueue_pushes(Vec::new()).await.expect("enqueue nothing");
    assert_eq!(store.pushes_for(b).await.expect("pushes_for"), vec![call.clone()]);
    let claimed = store.claim_pushes(t(1_000), t(2_000), 10).await.expect("claim");
    assert_eq!(claimed, vec![PushJob { next_attempt_at: t(2_000), ..call }]);
}
