//! Order and rate (CONTRACT §2 `seq`, §3): one socket's unawaited sends keep their
//! order, concurrent senders produce one gapless order every member sees the same way,
//! and the default rate limit refuses a flood without dropping the socket.

use futures_util::future::join_all;
use quckchat_sio_client::Client;
use serde_json::{Value, json};

use crate::helpers::*;

/// Fires `n` sends from `client` without waiting between them (each emit is written in
/// order), then collects the acks in send order. `queued` is how many sends (from every
/// socket) are in flight in the conversation at once: its appends run one at a time, so
/// the last ack waits for all of them, and its budget grows with them (`burst_budget`).
async fn fire(client: &Client, conversation: &str, prefix: &str, n: usize, queued: usize) -> Vec<Value> {
    let budget = burst_budget(queued);
    let sends = (0..n).map(|i| {
        client.emit_with_ack(
            "message:send",
            json!({ "conversationId": conversation, "content": format!("{prefix}{i}"), "clientMessageId": format!("{prefix}{i}") }),
            budget,
        )
    });
    join_all(sends).await.into_iter().map(|ack| ack.expect("every send is acked")).collect()
}

/// Collects the next `n` `message:new` of `conversation` at `client`.
async fn collect(client: &mut Client, conversation: &str, n: usize) -> Vec<Value> {
    let mut got = Vec::with_capacity(n);
    for i in 0..n {
        let m = client
            .expect_where("message:new", T, |m| m["conversationId"] == json!(conversation))
            .await
            .unwrap_or_else(|e| panic!("message {i} of {n}: {e}"));
        got.push(m);
    }
    got
}

fn seqs(messages: &[Value]) -> Vec<i64> {
    messages.iter().map(|m| m["seq"].as_i64().expect("seq")).collect()
}

#[tokio::test]
async fn unawaited_sends_from_one_socket_arrive_in_send_order() {
    let app = spawn_app_with(relaxed).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let conv = app.single(&alice, &bob).await;
    let a = app.chat(&alice).await;
    let mut b = app.chat(&bob).await;

    let acks = fire(&a, &conv, "n", 20, 20).await;
    for (i, ack) in acks.iter().enumerate() {
        assert_eq!(ack["success"], json!(true), "send {i}: {ack}");
        assert_eq!(ack["message"]["content"], json!(format!("n{i}")), "ack {i} answers send {i}");
        assert_eq!(ack["message"]["seq"], json!(i + 1), "send {i} got seq {}", i + 1);
    }

    let received = collect(&mut b, &conv, 20).await;
    let contents: Vec<String> = received.iter().map(|m| str_of(&m["content"])).collect();
    let want: Vec<String> = (0..20).map(|i| format!("n{i}")).collect();
    assert_eq!(contents, want, "bob gets them in send order");
    assert_eq!(seqs(&received), (1..=20).collect::<Vec<i64>>(), "with consecutive seqs");
}

#[tokio::test]
async fn concurrent_senders_produce_one_gapless_order_for_everyone() {
    let app = spawn_app_with(relaxed).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let group = app.group(&alice, &[&bob, &carol]).await;
    let mut a = app.chat(&alice).await;
    let mut b = app.chat(&bob).await;
    let mut c = app.chat(&carol).await;

    const EACH: usize = 25;
    let (from_alice, from_bob) =
        tokio::join!(fire(&a, &group, "a", EACH, 2 * EACH), fire(&b, &group, "b", EACH, 2 * EACH));
    for ack in from_alice.iter().chain(&from_bob) {
        assert_eq!(ack["success"], json!(true), "{ack}");
    }

    let views = [
        ("alice", collect(&mut a, &group, 2 * EACH).await),
        ("bob", collect(&mut b, &group, 2 * EACH).await),
        ("carol", collect(&mut c, &group, 2 * EACH).await),
    ];
    let want: Vec<i64> = (1..=(2 * EACH) as i64).collect();
    for (who, view) in &views {
        assert_eq!(seqs(view), want, "{who} sees seqs strictly increasing without gaps");
        // Each sender's own messages keep their send order.
        for prefix in ["a", "b"] {
            let mine: Vec<String> =
                view.iter().map(|m| str_of(&m["content"])).filter(|t| t.starts_with(prefix)).collect();
            let sent: Vec<String> = (0..EACH).map(|i| format!("{prefix}{i}")).collect();
            assert_eq!(mine, sent, "{who} sees {prefix}'s messages in send order");
        }
    }
    let order = |view: &[Value]| view.iter().map(|m| str_of(&m["id"])).collect::<Vec<_>>();
    assert_eq!(order(&views[0].1), order(&views[1].1), "alice and bob see the same order");
    assert_eq!(order(&views[0].1), order(&views[2].1), "alice and carol see the same order");

    // The acks agree with what was delivered.
    for ack in from_alice.iter().chain(&from_bob) {
        let delivered = views[0].1.iter().find(|m| m["id"] == ack["message"]["id"]).expect("acked means delivered");
        assert_eq!(delivered["seq"], ack["message"]["seq"]);
    }
    let history = app.history(&carol, &group, "afterSeq=0&limit=200").await;
    assert_eq!(order(&history), order(&views[0].1), "the history has the same order");
}

#[tokio::test]
async fn the_default_rate_limit_refuses_a_flood_and_keeps_the_socket() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let conv = app.single(&alice, &bob).await;
    let a = app.chat(&alice).await;

    let acks = fire(&a, &conv, "f", 40, 40).await;
    let mut accepted = 0;
    let mut limited = 0;
    for ack in &acks {
        if ack["success"] == json!(true) {
            accepted += 1;
        } else {
            assert_eq!(refused(ack), "rate_limited", "{ack}");
            limited += 1;
        }
    }
    assert!(
        limited >= 10,
        "a burst of 40 is mostly refused past the burst of 20: {accepted} accepted, {limited} limited"
    );
    assert!(accepted >= 20, "the burst of 20 is accepted: {accepted} accepted");

    assert!(a.is_connected(), "the socket stays connected");
    ok(emit(&a, "user:typing", json!({ "conversationId": conv })).await);

    let history = app.history(&bob, &conv, "afterSeq=0&limit=200").await;
    assert_eq!(history.len(), accepted, "exactly the accepted messages are stored");
    assert_eq!(seqs(&history), (1..=accepted as i64).collect::<Vec<i64>>());
}
