//! Malformed and out-of-range input on `/chat` (CONTRACT §3): valid JSON of the wrong
//! shape is acked `invalid_payload`, changes nothing, tells no one, and leaves the socket
//! usable. Also the limits, unknown ids, other people's messages, and a read receipt that
//! names the wrong conversation.

use quckchat_sio_client::Client;
use serde_json::{Value, json};

use crate::helpers::*;

/// Emits every payload of `event` from `actor`, expecting `invalid_payload` each time,
/// plus the event with no argument at all; the socket stays connected throughout.
async fn assert_all_invalid(actor: &Client, event: &str, payloads: &[Value]) {
    for payload in payloads {
        let ack = emit(actor, event, payload.clone()).await;
        assert_eq!(refused(&ack), "invalid_payload", "{event} {payload}: {ack}");
        assert!(actor.is_connected(), "{event} {payload} kept the socket");
    }
    let ack = actor
        .emit_args_with_ack(event, vec![], T)
        .await
        .unwrap_or_else(|e| panic!("{event} without an argument is acked: {e}"));
    let ack = ack.into_iter().next().unwrap_or(Value::Null);
    assert_eq!(refused(&ack), "invalid_payload", "{event} without an argument: {ack}");
}

/// Alice and Bob with a conversation and one message from alice that both have seen.
async fn with_message(content: &str) -> (Trio, Value) {
    let mut t = trio(spawn_app_with(relaxed).await).await;
    let m = send(&t.a, &t.conv, content).await;
    expect_message(&mut t.a, &m["id"]).await;
    expect_message(&mut t.b, &m["id"]).await;
    (t, m)
}

#[tokio::test]
async fn malformed_message_send() {
    let mut t = trio(spawn_app_with(relaxed).await).await;
    let conv = t.conv.clone();
    let payloads = [
        json!("hello"),
        json!(42),
        json!(null),
        json!(true),
        json!([conv, "hi"]),
        json!({}),
        json!({ "content": "no conversation" }),
        json!({ "conversationId": 123, "content": "hi" }),
        json!({ "conversationId": "not-a-uuid", "content": "hi" }),
        json!({ "conversationId": conv, "content": 5 }),
        json!({ "conversationId": conv }),
        json!({ "conversationId": conv, "content": "   " }),
        json!({ "conversationId": conv, "content": "x".repeat(10_001) }),
        json!({ "conversationId": conv, "content": "hi", "type": "system" }),
        json!({ "conversationId": conv, "content": "hi", "type": "sticker" }),
        json!({ "conversationId": conv, "content": "hi", "replyTo": "nope" }),
        json!({ "conversationId": conv, "content": "hi", "clientMessageId": "" }),
        json!({ "conversationId": conv, "content": "hi", "clientMessageId": 7 }),
        json!({ "conversationId": conv, "content": "hi", "attachments": "x" }),
    ];
    assert_all_invalid(&t.a, "message:send", &payloads).await;

    let history = t.app.history(&t.alice, &conv, "afterSeq=0").await;
    assert!(history.is_empty(), "nothing was stored: {history:?}");
    assert_quiet(&mut t.b, &t.a, &conv).await;
    let barrier = t.app.history(&t.alice, &conv, "afterSeq=0").await;
    assert_eq!(barrier[0]["seq"], json!(1), "the refused sends took no seq");
}

#[tokio::test]
async fn malformed_message_edit() {
    let (mut t, m) = with_message("original").await;
    let id = m["id"].clone();
    let payloads = [
        json!("edit"),
        json!(1),
        json!({}),
        json!({ "messageId": id }),
        json!({ "content": "x" }),
        json!({ "messageId": 123, "content": "x" }),
        json!({ "messageId": "nope", "content": "x" }),
        json!({ "messageId": id, "content": 5 }),
        json!({ "messageId": id, "content": "" }),
        json!({ "messageId": id, "content": "x".repeat(10_001) }),
    ];
    let conv = t.conv.clone();
    assert_all_invalid(&t.a, "message:edit", &payloads).await;

    let stored = t.app.message(&t.alice, &conv, id.as_str().unwrap()).await;
    assert_eq!(stored["content"], json!("original"));
    assert!(stored.get("editedAt").is_none_or(Value::is_null), "{stored}");
    assert_quiet(&mut t.b, &t.a, &conv).await;
}

#[tokio::test]
async fn malformed_message_delete() {
    let (mut t, m) = with_message("keep").await;
    let payloads = [
        json!("delete"),
        json!(7),
        json!({}),
        json!({ "messageId": 7 }),
        json!({ "messageId": "nope" }),
        json!({ "messageId": null }),
        json!({ "messageId": [m["id"]] }),
    ];
    let conv = t.conv.clone();
    assert_all_invalid(&t.a, "message:delete", &payloads).await;

    let stored = t.app.message(&t.alice, &conv, m["id"].as_str().unwrap()).await;
    assert_eq!(stored["content"], json!("keep"));
    assert!(stored.get("deletedAt").is_none_or(Value::is_null), "{stored}");
    assert_quiet(&mut t.b, &t.a, &conv).await;
}

#[tokio::test]
async fn malformed_message_read() {
    let (mut t, m) = with_message("unread").await;
    let conv = t.conv.clone();
    let payloads = [
        json!("read"),
        json!({}),
        json!({ "conversationId": conv }),
        json!({ "messageId": 1, "conversationId": conv }),
        json!({ "messageId": "nope", "conversationId": conv }),
        json!({ "messageId": { "id": m["id"] }, "conversationId": conv }),
    ];
    // Bob is the reader here; alice watches.
    assert_all_invalid(&t.b, "message:read", &payloads).await;

    let stored = t.app.message(&t.alice, &conv, m["id"].as_str().unwrap()).await;
    assert_eq!(stored["readBy"], json!([]), "{stored}");
    assert_quiet(&mut t.a, &t.b, &conv).await;
}

#[tokio::test]
async fn malformed_typing() {
    let mut t = trio(spawn_app_with(relaxed).await).await;
    let conv = t.conv.clone();
    let payloads = [
        json!("typing"),
        json!({}),
        json!({ "conversationId": 5 }),
        json!({ "conversationId": "nope" }),
        json!({ "conversationId": null }),
    ];
    assert_all_invalid(&t.a, "user:typing", &payloads).await;

    assert_quiet(&mut t.b, &t.a, &conv).await;
}

#[tokio::test]
async fn malformed_stop_typing() {
    let mut t = trio(spawn_app_with(relaxed).await).await;
    let conv = t.conv.clone();
    let payloads = [json!(0), json!({}), json!({ "conversationId": false }), json!({ "conversationId": "nope" })];
    assert_all_invalid(&t.a, "user:stop-typing", &payloads).await;

    assert_quiet(&mut t.b, &t.a, &conv).await;
}

#[tokio::test]
async fn malformed_reaction_add() {
    let (mut t, m) = with_message("react to me").await;
    let id = m["id"].clone();
    let payloads = [
        json!("👍"),
        json!({}),
        json!({ "messageId": id }),
        json!({ "emoji": "👍" }),
        json!({ "messageId": "nope", "emoji": "👍" }),
        json!({ "messageId": id, "emoji": "" }),
        json!({ "messageId": id, "emoji": 5 }),
        json!({ "messageId": id, "emoji": "😀".repeat(17) }),
        json!({ "messageId": id, "emoji": "a b" }),
    ];
    let conv = t.conv.clone();
    assert_all_invalid(&t.b, "reaction:add", &payloads).await;

    let stored = t.app.message(&t.alice, &conv, id.as_str().unwrap()).await;
    assert_eq!(stored["reactions"], json!([]), "{stored}");
    assert_quiet(&mut t.a, &t.b, &conv).await;
}

#[tokio::test]
async fn malformed_reaction_remove() {
    let (mut t, m) = with_message("react to me").await;
    let id = m["id"].clone();
    ok(emit(&t.b, "reaction:add", json!({ "messageId": id, "emoji": "👍" })).await);
    t.a.expect("reaction:added", T).await.expect("alice sees the reaction");
    let payloads = [
        json!(["👍"]),
        json!({}),
        json!({ "messageId": id }),
        json!({ "emoji": "👍" }),
        json!({ "messageId": 99, "emoji": "👍" }),
        json!({ "messageId": id, "emoji": "" }),
        json!({ "messageId": id, "emoji": "😀".repeat(17) }),
    ];
    let conv = t.conv.clone();
    assert_all_invalid(&t.b, "reaction:remove", &payloads).await;

    let stored = t.app.message(&t.alice, &conv, id.as_str().unwrap()).await;
    assert_eq!(stored["reactions"], json!([{ "emoji": "👍", "userId": t.bob.id }]), "{stored}");
    assert_quiet(&mut t.a, &t.b, &conv).await;
}

#[tokio::test]
async fn content_is_limited_to_ten_thousand_characters() {
    let mut t = trio(spawn_app_with(relaxed).await).await;
    let conv = t.conv.clone();

    // Characters, not bytes: 10,000 two-byte characters are fine.
    let longest = "é".repeat(10_000);
    let sent = send(&t.a, &conv, &longest).await;
    assert_eq!(sent["content"].as_str().unwrap().chars().count(), 10_000);
    let got = expect_message(&mut t.b, &sent["id"]).await;
    assert_eq!(got["content"], json!(longest));

    let ack = emit(&t.a, "message:send", json!({ "conversationId": conv, "content": "a".repeat(10_001) })).await;
    assert_eq!(refused(&ack), "invalid_payload");
    assert_quiet(&mut t.b, &t.a, &conv).await;
    assert_eq!(t.app.history(&t.alice, &conv, "afterSeq=0").await.len(), 2);
}

#[tokio::test]
async fn an_emoji_is_limited_to_64_bytes() {
    let (mut t, m) = with_message("react").await;
    let conv = t.conv.clone();
    let sixty_four = "😀".repeat(16);
    assert_eq!(sixty_four.len(), 64);
    ok(emit(&t.b, "reaction:add", json!({ "messageId": m["id"], "emoji": sixty_four })).await);
    let added = t.a.expect("reaction:added", T).await.expect("64 bytes is a valid emoji");
    assert_eq!(added["emoji"], json!(sixty_four));

    let sixty_five = format!("{sixty_four}a");
    let ack = emit(&t.b, "reaction:add", json!({ "messageId": m["id"], "emoji": sixty_five })).await;
    assert_eq!(refused(&ack), "invalid_payload");
    assert_quiet(&mut t.a, &t.b, &conv).await;
    let stored = t.app.message(&t.alice, &conv, m["id"].as_str().unwrap()).await;
    assert_eq!(stored["reactions"].as_array().unwrap().len(), 1, "{stored}");
}

#[tokio::test]
async fn an_unknown_event_is_answered_and_harmless() {
    let mut t = trio(spawn_app_with(relaxed).await).await;
    let conv = t.conv.clone();
    for event in ["message:explode", "MESSAGE:SEND", "call:initiate", "x"] {
        let ack = emit(&t.a, event, json!({ "conversationId": conv, "content": "hi" })).await;
        assert_eq!(refused(&ack), "invalid_payload", "{event}: {ack}");
    }
    // Without an ack asked for: nothing comes back, the socket stays.
    t.a.emit("message:explode", json!({ "boom": true })).await.expect("emit");
    t.a.emit("message:send", json!("not an object")).await.expect("emit");
    assert!(t.a.is_connected());
    assert_quiet(&mut t.b, &t.a, &conv).await;
}

#[tokio::test]
async fn unknown_ids_are_not_found() {
    let (mut t, _) = with_message("known").await;
    let conv = t.conv.clone();
    let ghost = uuid::Uuid::now_v7().to_string();
    for (event, payload) in [
        ("message:send", json!({ "conversationId": ghost, "content": "hi" })),
        ("user:typing", json!({ "conversationId": ghost })),
        ("message:edit", json!({ "messageId": ghost, "content": "x" })),
        ("message:delete", json!({ "messageId": ghost })),
        ("message:read", json!({ "messageId": ghost, "conversationId": conv })),
        ("reaction:add", json!({ "messageId": ghost, "emoji": "👍" })),
        ("reaction:remove", json!({ "messageId": ghost, "emoji": "👍" })),
    ] {
        let ack = emit(&t.a, event, payload.clone()).await;
        assert_eq!(refused(&ack), "not_found", "{event} {payload}: {ack}");
    }
    assert_quiet(&mut t.b, &t.a, &conv).await;
}

#[tokio::test]
async fn editing_or_deleting_someone_elses_message_is_forbidden() {
    let (mut t, m) = with_message("alice's words").await;
    let conv = t.conv.clone();

    let ack = emit(&t.b, "message:edit", json!({ "messageId": m["id"], "content": "bob's words" })).await;
    assert_eq!(refused(&ack), "forbidden");
    let ack = emit(&t.b, "message:delete", json!({ "messageId": m["id"] })).await;
    assert_eq!(refused(&ack), "forbidden", "in a single conversation only the sender deletes");

    assert_quiet(&mut t.a, &t.b, &conv).await;
    let stored = t.app.message(&t.alice, &conv, m["id"].as_str().unwrap()).await;
    assert_eq!(stored["content"], json!("alice's words"));
    assert!(stored.get("editedAt").is_none_or(Value::is_null));
    assert!(stored.get("deletedAt").is_none_or(Value::is_null));
}

#[tokio::test]
async fn a_read_receipt_counts_in_the_messages_own_conversation() {
    let app = spawn_app_with(relaxed).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let ab = app.single(&alice, &bob).await;
    let ac = app.single(&alice, &carol).await;

    let mut c = app.chat(&carol).await;
    app.wait_chat_sockets(1).await;
    let mut b = app.chat(&bob).await;
    app.wait_chat_sockets(2).await;
    let mut a = app.chat(&alice).await;
    app.wait_chat_sockets(3).await;
    c.expect("user:online", T).await.expect("carol is told alice is online");
    b.expect("user:online", T).await.expect("bob is told alice is online");

    let m = send(&a, &ab, "for bob").await;
    expect_message(&mut a, &m["id"]).await;
    expect_message(&mut b, &m["id"]).await;

    // Bob claims the message is in alice's conversation with carol.
    let ack = ok(emit(&b, "message:read", json!({ "messageId": m["id"], "conversationId": ac })).await);
    assert_eq!(ack["conversationId"], json!(ab), "the ack names the real conversation: {ack}");

    let read = a.expect("message:read", T).await.expect("alice gets the receipt");
    assert_eq!(read["conversationId"], json!(ab));
    assert_eq!(read["messageId"], m["id"]);
    assert_eq!(read["userId"], json!(bob.id));

    // Carol, in the claimed conversation, sees nothing.
    assert_quiet(&mut c, &a, &ac).await;

    let (_, real) = app.get(&format!("/conversations/{ab}"), &bob.token).await;
    let bob_in_ab =
        real["participants"].as_array().unwrap().iter().find(|p| p["userId"] == json!(bob.id)).cloned().unwrap();
    assert_eq!(bob_in_ab["lastReadSeq"], m["seq"], "recorded in the real conversation: {real}");
    let (status, claimed) = app.get(&format!("/conversations/{ac}"), &bob.token).await;
    assert_eq!(status.as_u16(), 404, "bob is still no member of the claimed conversation: {claimed}");
    let stored = app.message(&alice, &ab, m["id"].as_str().unwrap()).await;
    assert_eq!(stored["readBy"].as_array().unwrap().len(), 1, "{stored}");
}
