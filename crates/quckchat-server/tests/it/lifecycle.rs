//! Restarts and graceful shutdown (STYLE §7, CONTRACT §1): what was stored survives a
//! restart on the same data directory, and every message acked before shutdown is kept.

use std::collections::HashMap;

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

async fn snapshot(app: &TestApp, alice: &TestUser, bob: &TestUser, conv: &str) -> Vec<Value> {
    let (status, conversation) = app.get(&format!("/conversations/{conv}"), &alice.token).await;
    assert_eq!(status, StatusCode::OK);
    vec![
        Value::Array(app.history(alice, conv, "limit=50").await),
        Value::Array(app.history(bob, conv, "afterSeq=0&limit=200").await),
        Value::Array(app.history(bob, conv, "afterSeq=2").await),
        conversation,
    ]
}

#[tokio::test]
async fn a_restart_keeps_history_receipts_and_reactions() {
    let app = spawn_app_with(relaxed).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let conv = app.single(&alice, &bob).await;
    let a = app.chat(&alice).await;
    let b = app.chat(&bob).await;
    let mut sent = Vec::new();
    for i in 1..=5 {
        sent.push(send(&a, &conv, &format!("before restart {i}")).await);
    }
    ok(emit(&a, "message:edit", json!({ "messageId": sent[1]["id"], "content": "edited" })).await);
    ok(emit(&a, "message:delete", json!({ "messageId": sent[2]["id"] })).await);
    ok(emit(&b, "reaction:add", json!({ "messageId": sent[0]["id"], "emoji": "🔥" })).await);
    ok(emit(&b, "message:read", json!({ "messageId": sent[4]["id"], "conversationId": conv })).await);

    let before = snapshot(&app, &alice, &bob, &conv).await;
    assert_eq!(before[1].as_array().unwrap().len(), 5);
    drop((a, b));
    let dir = app.stop().await;

    let app = spawn_in(dir, relaxed).await;
    let after = snapshot(&app, &alice, &bob, &conv).await;
    assert_eq!(after, before, "history, receipts, reactions and the conversation are unchanged");

    // Tokens and seq numbering carry on.
    let a = app.chat(&alice).await;
    let next = send(&a, &conv, "after restart").await;
    assert_eq!(next["seq"], json!(6));
}

#[tokio::test]
async fn every_message_acked_before_shutdown_survives_it() {
    let app = spawn_app_with(relaxed).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let conv = app.single(&alice, &bob).await;
    let a = app.chat(&alice).await;
    let mut b = app.chat(&bob).await;

    const N: usize = 40;
    let conversation = conv.clone();
    let sender = tokio::spawn(async move {
        let sends = (0..N).map(|i| {
            a.emit_with_ack(
                "message:send",
                json!({ "conversationId": conversation, "content": format!("s{i}"), "clientMessageId": format!("s{i}") }),
                burst_budget(N),
            )
        });
        join_all(sends).await
    });

    // Shut down while the sends are in flight (at least one has gone through).
    b.expect("message:new", T).await.expect("the first message is delivered");
    let dir = app.stop().await;
    let acks = sender.await.expect("the sender task did not panic");
    b.wait_disconnect(T).await.expect("shutdown closes every socket");

    let mut acked: HashMap<String, i64> = HashMap::new();
    for ack in acks.into_iter().flatten() {
        if ack["success"] == json!(true) {
            acked.insert(str_of(&ack["message"]["id"]), ack["message"]["seq"].as_i64().unwrap());
        } else {
            // Refused while draining: the client retries after reconnecting.
            let code = refused(&ack);
            assert!(code == "internal" || code == "rate_limited", "refused with {code}: {ack}");
        }
    }
    assert!(!acked.is_empty(), "at least one send was acked before shutdown");

    let app = spawn_in(dir, relaxed).await;
    let history = app.history(&alice, &conv, "afterSeq=0&limit=200").await;
    let stored: HashMap<String, i64> = history.iter().map(|m| (str_of(&m["id"]), m["seq"].as_i64().unwrap())).collect();
    for (id, seq) in &acked {
        assert_eq!(stored.get(id), Some(seq), "acked message {id} (seq {seq}) is stored after the restart");
    }
    let seqs: Vec<i64> = history.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=history.len() as i64).collect::<Vec<_>>(), "no gaps");
}
