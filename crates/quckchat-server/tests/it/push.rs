//! Push notifications for offline members (CONTRACT §1 `PUSH_WEBHOOK_URL`, §3): POSTed
//! to the webhook through the outbox, retried until delivered, kept across restarts.
//! The webhook is a tiny axum server in the test that records every request.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use quckchat_domain::UserId;
use quckchat_domain::model::PushJob;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::helpers::*;

/// One request the webhook got.
#[derive(Debug)]
struct Hit {
    body: Value,
    idempotency_key: Option<String>,
    answered: u16,
}

struct HookState {
    seen: AtomicUsize,
    fail_first: usize,
    hits: mpsc::UnboundedSender<Hit>,
}

/// The webhook receiver.
struct Webhook {
    url: String,
    hits: mpsc::UnboundedReceiver<Hit>,
}

impl Webhook {
    /// Starts a receiver on 127.0.0.1:0 that answers 500 to its first `fail_first`
    /// requests and 200 after.
    async fn start(fail_first: usize) -> Self {
        let (tx, hits) = mpsc::unbounded_channel();
        let state = Arc::new(HookState { seen: AtomicUsize::new(0), fail_first, hits: tx });
        let app = Router::new().route("/push", post(receive)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the webhook");
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url: format!("http://{addr}/push"), hits }
    }

    /// The next request (a panic if none comes within [`T`]).
    async fn next(&mut self) -> Hit {
        tokio::time::timeout(T, self.hits.recv())
            .await
            .expect("the webhook is called in time")
            .expect("the webhook is running")
    }
}

async fn receive(State(state): State<Arc<HookState>>, headers: HeaderMap, Json(body): Json<Value>) -> StatusCode {
    let n = state.seen.fetch_add(1, Ordering::SeqCst) + 1;
    let status = if n <= state.fail_first { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
    let idempotency_key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(String::from);
    let _ = state.hits.send(Hit { body, idempotency_key, answered: status.as_u16() });
    status
}

async fn pushes_for(app: &TestApp, user: &TestUser) -> Vec<PushJob> {
    let id = UserId::parse(&user.id).expect("a user id");
    app.state.store.pushes_for(id).await.expect("the store answers")
}

fn assert_push_for(hit: &Hit, to: &TestUser, from: &TestUser, conversation: &str, message: &Value) {
    let b = &hit.body;
    assert_eq!(b["userId"], json!(to.id), "{b}");
    assert_eq!(b["kind"], json!("message"), "{b}");
    assert_eq!(b["conversationId"], json!(conversation), "{b}");
    assert_eq!(b["messageId"], message["id"], "{b}");
    assert_eq!(b["senderId"], json!(from.id), "{b}");
    assert_eq!(b["preview"], message["content"], "{b}");
}

#[tokio::test]
async fn an_offline_member_gets_one_push_per_message_and_the_sender_none() {
    let mut hook = Webhook::start(0).await;
    let url = hook.url.clone();
    let app = spawn_app_with(move |c| c.push_webhook_url = Some(url)).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let conv = app.single(&alice, &bob).await;
    let a = app.chat(&alice).await;

    let first = send(&a, &conv, "are you there?").await;
    let hit = hook.next().await;
    assert_push_for(&hit, &bob, &alice, &conv, &first);
    assert_eq!(hit.answered, 200);
    assert!(hit.idempotency_key.is_some(), "the job id is sent as Idempotency-Key");
    assert!(pushes_for(&app, &alice).await.is_empty(), "no push is queued for the sender");

    // The next request is the next message's: nothing in between (no push for alice,
    // no second copy of the first).
    let second = send(&a, &conv, "hello?").await;
    let hit = hook.next().await;
    assert_push_for(&hit, &bob, &alice, &conv, &second);

    let jobs = pushes_for(&app, &bob).await;
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    eventually("both pushes marked delivered", || async {
        pushes_for(&app, &bob).await.iter().all(|j| j.delivered_at.is_some())
    })
    .await;
}

#[tokio::test]
async fn an_online_member_gets_no_push() {
    let mut hook = Webhook::start(0).await;
    let url = hook.url.clone();
    let app = spawn_app_with(move |c| c.push_webhook_url = Some(url)).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let conv = app.single(&alice, &bob).await;
    let mut a = app.chat(&alice).await;
    app.wait_chat_sockets(1).await;

    let b = app.chat(&bob).await;
    a.expect("user:online", T).await.expect("alice is told bob is online");
    let while_online = send(&a, &conv, "you are online").await;
    assert!(pushes_for(&app, &bob).await.is_empty(), "nothing queued for an online member");

    b.close().await;
    a.expect("user:offline", T).await.expect("alice is told bob is offline");
    let while_offline = send(&a, &conv, "now you are not").await;
    let hit = hook.next().await;
    assert_push_for(&hit, &bob, &alice, &conv, &while_offline);
    assert_ne!(hit.body["messageId"], while_online["id"]);
    assert_eq!(pushes_for(&app, &bob).await.len(), 1);
}

#[tokio::test]
async fn a_failing_webhook_is_retried_until_the_push_is_delivered_once() {
    let mut hook = Webhook::start(2).await;
    let url = hook.url.clone();
    let app = spawn_app_with(move |c| c.push_webhook_url = Some(url)).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let conv = app.single(&alice, &bob).await;
    let a = app.chat(&alice).await;

    let m = send(&a, &conv, "retry me").await;
    let attempts = [hook.next().await, hook.next().await, hook.next().await];
    assert_eq!(attempts.iter().map(|h| h.answered).collect::<Vec<_>>(), vec![500, 500, 200]);
    for (i, hit) in attempts.iter().enumerate() {
        assert_push_for(hit, &bob, &alice, &conv, &m);
        assert_eq!(hit.idempotency_key, attempts[0].idempotency_key, "the same job each time");
        assert_eq!(hit.body["attempt"], json!(i + 1), "attempt {} is numbered: {}", i + 1, hit.body);
    }

    eventually("the push is marked delivered", || async {
        pushes_for(&app, &bob).await.first().is_some_and(|j| j.delivered_at.is_some())
    })
    .await;
    let jobs = pushes_for(&app, &bob).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert!(jobs[0].attempts >= 2, "the failed attempts are recorded: {:?}", jobs[0]);
    assert!(jobs[0].last_error.is_some(), "{:?}", jobs[0]);
    assert!(jobs[0].failed_at.is_none(), "{:?}", jobs[0]);
    assert_eq!(Some(jobs[0].id.to_string()), attempts[0].idempotency_key);

    // Delivered once: the next request is the next message's, not a repeat.
    let next = send(&a, &conv, "and this one").await;
    let hit = hook.next().await;
    assert_push_for(&hit, &bob, &alice, &conv, &next);
}

#[tokio::test]
async fn a_queued_push_is_delivered_after_a_restart() {
    // No webhook at first: the job waits in the outbox.
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let conv = app.single(&alice, &bob).await;
    let a = app.chat(&alice).await;
    let m = send(&a, &conv, "deliver me later").await;
    let queued = pushes_for(&app, &bob).await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert!(queued[0].delivered_at.is_none());
    drop(a);
    let dir = app.stop().await;

    let mut hook = Webhook::start(0).await;
    let url = hook.url.clone();
    let app = spawn_in(dir, move |c| c.push_webhook_url = Some(url)).await;
    let hit = hook.next().await;
    assert_push_for(&hit, &bob, &alice, &conv, &m);
    assert_eq!(hit.idempotency_key, Some(queued[0].id.to_string()));

    // Once: the next request is for a new message sent after the restart.
    let a = app.chat(&alice).await;
    let next = send(&a, &conv, "after the restart").await;
    let hit = hook.next().await;
    assert_push_for(&hit, &bob, &alice, &conv, &next);
    eventually("both pushes marked delivered", || async {
        pushes_for(&app, &bob).await.iter().all(|j| j.delivered_at.is_some())
    })
    .await;
}
