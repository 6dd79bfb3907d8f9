//! Every `/chat` event (CONTRACT §3): the happy path (the ack, and what the other
//! member's socket receives), and a non-member's attempt (`forbidden`, and nobody sees
//! anything). Malformed payloads are in `bad_input`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// Checks the `Message` fields CONTRACT §2 names.
fn assert_message_shape(m: &Value, conversation: &str, sender: &TestUser, content: &str) {
    assert!(m["id"].is_string(), "id: {m}");
    assert_eq!(m["conversationId"], json!(conversation), "{m}");
    assert_eq!(m["senderId"], json!(sender.id), "{m}");
    assert!(m["seq"].as_i64().is_some_and(|s| s >= 1), "seq: {m}");
    assert_eq!(m["type"], json!("text"), "{m}");
    assert_eq!(m["content"], json!(content), "{m}");
    assert_eq!(m["attachments"], json!([]), "{m}");
    assert_eq!(m["reactions"], json!([]), "{m}");
    assert_eq!(m["readBy"], json!([]), "{m}");
    assert!(m["createdAt"].as_str().is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()), "createdAt: {m}");
    assert!(m.get("deletedAt").is_none_or(Value::is_null), "not deleted: {m}");
}

#[tokio::test]
async fn message_send_reaches_every_member_and_the_sender() {
    let Trio { app: _app, alice, conv, a, mut b, .. } = trio(spawn_app().await).await;
    let mut a = a;

    let ack =
        ok(emit(&a, "message:send", json!({ "conversationId": conv, "content": "hello", "clientMessageId": "c-1" }))
            .await);
    let sent = &ack["message"];
    assert_message_shape(sent, &conv, &alice, "hello");
    assert_eq!(sent["seq"], json!(1));
    assert_eq!(sent["clientMessageId"], json!("c-1"));

    let at_bob = b.expect("message:new", T).await.expect("bob gets message:new");
    assert_message_shape(&at_bob, &conv, &alice, "hello");
    assert_eq!(at_bob["id"], sent["id"]);
    assert_eq!(at_bob["seq"], json!(1));

    let at_alice = a.expect("message:new", T).await.expect("the sender's socket gets message:new too");
    assert_eq!(at_alice["id"], sent["id"]);
}

#[tokio::test]
async fn message_send_by_a_non_member_is_forbidden_and_unseen() {
    let Trio { app, alice, mallory, conv, a, mut b, m, .. } = trio(spawn_app().await).await;

    let ack = emit(&m, "message:send", json!({ "conversationId": conv, "content": "let me in" })).await;
    assert_eq!(refused(&ack), "forbidden");
    let (status, _) = app.get(&format!("/messages/conversation/{conv}"), &mallory.token).await;
    assert!(
        status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
        "mallory cannot read it either: {status}"
    );

    assert_quiet(&mut b, &a, &conv).await;
    let history = app.history(&alice, &conv, "afterSeq=0").await;
    assert_eq!(history.len(), 1, "only the barrier is stored: {history:?}");
    assert_eq!(history[0]["seq"], json!(1), "the refused send took no seq");
}

#[tokio::test]
async fn message_edit_reaches_members() {
    let Trio { app, alice, conv, a, mut b, .. } = trio(spawn_app().await).await;
    let sent = send(&a, &conv, "frist").await;
    expect_message(&mut b, &sent["id"]).await;

    let ack = ok(emit(&a, "message:edit", json!({ "messageId": sent["id"], "content": "first" })).await);
    assert_eq!(ack["message"]["id"], sent["id"]);
    assert_eq!(ack["message"]["content"], json!("first"));
    assert!(ack["message"]["editedAt"].is_string(), "editedAt is set: {ack}");

    let updated = b.expect("message:updated", T).await.expect("bob gets message:updated");
    assert_eq!(updated["id"], sent["id"]);
    assert_eq!(updated["conversationId"], json!(conv));
    assert_eq!(updated["seq"], sent["seq"], "an edit keeps the seq");
    assert_eq!(updated["content"], json!("first"));
    assert!(updated["editedAt"].is_string(), "{updated}");

    let stored = app.message(&alice, &conv, sent["id"].as_str().unwrap()).await;
    assert_eq!(stored["content"], json!("first"));
}

#[tokio::test]
async fn message_edit_by_a_non_member_is_forbidden_and_unseen() {
    let Trio { app, alice, conv, a, mut b, m, .. } = trio(spawn_app().await).await;
    let sent = send(&a, &conv, "original").await;
    expect_message(&mut b, &sent["id"]).await;

    let ack = emit(&m, "message:edit", json!({ "messageId": sent["id"], "content": "defaced" })).await;
    assert_eq!(refused(&ack), "forbidden");

    assert_quiet(&mut b, &a, &conv).await;
    let stored = app.message(&alice, &conv, sent["id"].as_str().unwrap()).await;
    assert_eq!(stored["content"], json!("original"));
    assert!(stored.get("editedAt").is_none_or(Value::is_null), "{stored}");
}

#[tokio::test]
async fn message_delete_reaches_members() {
    let Trio { app, alice, conv, a, mut b, .. } = trio(spawn_app().await).await;
    let sent = send(&a, &conv, "oops").await;
    expect_message(&mut b, &sent["id"]).await;

    let ack = ok(emit(&a, "message:delete", json!({ "messageId": sent["id"] })).await);
    assert_eq!(ack["messageId"], sent["id"]);
    assert_eq!(ack["conversationId"], json!(conv));

    let deleted = b.expect("message:deleted", T).await.expect("bob gets message:deleted");
    assert_eq!(deleted["messageId"], sent["id"]);
    assert_eq!(deleted["conversationId"], json!(conv));

    let stored = app.message(&alice, &conv, sent["id"].as_str().unwrap()).await;
    assert_eq!(stored["content"], json!(""));
    assert!(stored["deletedAt"].is_string(), "{stored}");
}

#[tokio::test]
async fn message_delete_by_a_non_member_is_forbidden_and_unseen() {
    let Trio { app, alice, conv, a, mut b, m, .. } = trio(spawn_app().await).await;
    let sent = send(&a, &conv, "keep me").await;
    expect_message(&mut b, &sent["id"]).await;

    let ack = emit(&m, "message:delete", json!({ "messageId": sent["id"] })).await;
    assert_eq!(refused(&ack), "forbidden");

    assert_quiet(&mut b, &a, &conv).await;
    let stored = app.message(&alice, &conv, sent["id"].as_str().unwrap()).await;
    assert_eq!(stored["content"], json!("keep me"));
    assert!(stored.get("deletedAt").is_none_or(Value::is_null), "{stored}");
}

#[tokio::test]
async fn message_read_reaches_members() {
    let Trio { app, alice, bob, conv, a, b, .. } = trio(spawn_app().await).await;
    let (mut a, mut b) = (a, b);
    let sent = send(&a, &conv, "read me").await;
    expect_message(&mut b, &sent["id"]).await;
    expect_message(&mut a, &sent["id"]).await;

    let ack = ok(emit(&b, "message:read", json!({ "messageId": sent["id"], "conversationId": conv })).await);
    assert_eq!(ack["messageId"], sent["id"]);
    assert_eq!(ack["conversationId"], json!(conv));

    let read = a.expect("message:read", T).await.expect("alice gets message:read");
    assert_eq!(read["messageId"], sent["id"]);
    assert_eq!(read["userId"], json!(bob.id));
    assert_eq!(read["conversationId"], json!(conv));
    assert!(read["readAt"].as_str().is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()), "{read}");

    let stored = app.message(&alice, &conv, sent["id"].as_str().unwrap()).await;
    let readers: Vec<&Value> = stored["readBy"].as_array().unwrap().iter().map(|r| &r["userId"]).collect();
    assert_eq!(readers, vec![&json!(bob.id)], "{stored}");
    let (status, c) = app.get(&format!("/conversations/{conv}"), &bob.token).await;
    assert_eq!(status, StatusCode::OK);
    let me = c["participants"].as_array().unwrap().iter().find(|p| p["userId"] == json!(bob.id)).cloned().unwrap();
    assert_eq!(me["lastReadSeq"], sent["seq"], "{c}");
    assert_eq!(c["unreadCount"], json!(0), "{c}");
}

#[tokio::test]
async fn message_read_by_a_non_member_is_forbidden_and_unseen() {
    let Trio { app, alice, conv, a, mut b, m, .. } = trio(spawn_app().await).await;
    let sent = send(&a, &conv, "private").await;
    expect_message(&mut b, &sent["id"]).await;

    let ack = emit(&m, "message:read", json!({ "messageId": sent["id"], "conversationId": conv })).await;
    assert_eq!(refused(&ack), "forbidden");

    assert_quiet(&mut b, &a, &conv).await;
    let stored = app.message(&alice, &conv, sent["id"].as_str().unwrap()).await;
    assert_eq!(stored["readBy"], json!([]), "{stored}");
}

#[tokio::test]
async fn typing_reaches_the_other_members_only() {
    let Trio { app: _app, alice, conv, a, mut b, .. } = trio(spawn_app().await).await;
    let mut a = a;

    let ack = ok(emit(&a, "user:typing", json!({ "conversationId": conv })).await);
    assert_eq!(ack["success"], json!(true));
    let typing = b.expect("user:typing", T).await.expect("bob gets user:typing");
    assert_eq!(typing["userId"], json!(alice.id));
    assert_eq!(typing["conversationId"], json!(conv));

    // The typist is not told about itself.
    assert_quiet_self(&mut a, &conv).await;
}

#[tokio::test]
async fn typing_by_a_non_member_is_forbidden_and_unseen() {
    let Trio { app: _app, conv, a, mut b, m, .. } = trio(spawn_app().await).await;
    let ack = emit(&m, "user:typing", json!({ "conversationId": conv })).await;
    assert_eq!(refused(&ack), "forbidden");
    assert_quiet(&mut b, &a, &conv).await;
}

#[tokio::test]
async fn stop_typing_reaches_the_other_members_only() {
    let Trio { app: _app, alice, conv, a, mut b, .. } = trio(spawn_app().await).await;
    let mut a = a;

    ok(emit(&a, "user:stop-typing", json!({ "conversationId": conv })).await);
    let stopped = b.expect("user:stop-typing", T).await.expect("bob gets user:stop-typing");
    assert_eq!(stopped["userId"], json!(alice.id));
    assert_eq!(stopped["conversationId"], json!(conv));

    assert_quiet_self(&mut a, &conv).await;
}

#[tokio::test]
async fn stop_typing_by_a_non_member_is_forbidden_and_unseen() {
    let Trio { app: _app, conv, a, mut b, m, .. } = trio(spawn_app().await).await;
    let ack = emit(&m, "user:stop-typing", json!({ "conversationId": conv })).await;
    assert_eq!(refused(&ack), "forbidden");
    assert_quiet(&mut b, &a, &conv).await;
}

#[tokio::test]
async fn reaction_add_reaches_members() {
    let Trio { app, alice, bob, conv, a, mut b, .. } = trio(spawn_app().await).await;
    let sent = send(&a, &conv, "nice").await;
    expect_message(&mut b, &sent["id"]).await;

    let ack = ok(emit(&b, "reaction:add", json!({ "messageId": sent["id"], "emoji": "👍" })).await);
    assert_eq!(ack["messageId"], sent["id"]);
    assert_eq!(ack["emoji"], json!("👍"));

    let mut a = a;
    let added = a.expect("reaction:added", T).await.expect("alice gets reaction:added");
    assert_eq!(added["messageId"], sent["id"]);
    assert_eq!(added["conversationId"], json!(conv));
    assert_eq!(added["emoji"], json!("👍"));
    assert_eq!(added["userId"], json!(bob.id));

    let stored = app.message(&alice, &conv, sent["id"].as_str().unwrap()).await;
    assert_eq!(stored["reactions"], json!([{ "emoji": "👍", "userId": bob.id }]));
}

#[tokio::test]
async fn reaction_add_by_a_non_member_is_forbidden_and_unseen() {
    let Trio { app, alice, conv, a, mut b, m, .. } = trio(spawn_app().await).await;
    let sent = send(&a, &conv, "mine").await;
    expect_message(&mut b, &sent["id"]).await;

    let ack = emit(&m, "reaction:add", json!({ "messageId": sent["id"], "emoji": "💩" })).await;
    assert_eq!(refused(&ack), "forbidden");

    assert_quiet(&mut b, &a, &conv).await;
    let stored = app.message(&alice, &conv, sent["id"].as_str().unwrap()).await;
    assert_eq!(stored["reactions"], json!([]));
}

#[tokio::test]
async fn reaction_remove_reaches_members() {
    let Trio { app, alice, bob, conv, a, mut b, .. } = trio(spawn_app().await).await;
    let mut a = a;
    let sent = send(&a, &conv, "nice").await;
    expect_message(&mut b, &sent["id"]).await;
    ok(emit(&b, "reaction:add", json!({ "messageId": sent["id"], "emoji": "🎉" })).await);
    a.expect("reaction:added", T).await.expect("alice gets reaction:added");

    let ack = ok(emit(&b, "reaction:remove", json!({ "messageId": sent["id"], "emoji": "🎉" })).await);
    assert_eq!(ack["messageId"], sent["id"]);

    let removed = a.expect("reaction:removed", T).await.expect("alice gets reaction:removed");
    assert_eq!(removed["messageId"], sent["id"]);
    assert_eq!(removed["conversationId"], json!(conv));
    assert_eq!(removed["emoji"], json!("🎉"));
    assert_eq!(removed["userId"], json!(bob.id));

    let stored = app.message(&alice, &conv, sent["id"].as_str().unwrap()).await;
    assert_eq!(stored["reactions"], json!([]));
}

#[tokio::test]
async fn reaction_remove_by_a_non_member_is_forbidden_and_unseen() {
    let Trio { app, alice, bob, conv, a, mut b, m, .. } = trio(spawn_app().await).await;
    let sent = send(&a, &conv, "nice").await;
    expect_message(&mut b, &sent["id"]).await;
    ok(emit(&b, "reaction:add", json!({ "messageId": sent["id"], "emoji": "🎉" })).await);
    b.expect("reaction:added", T).await.expect("bob sees his own reaction");

    let ack = emit(&m, "reaction:remove", json!({ "messageId": sent["id"], "emoji": "🎉" })).await;
    assert_eq!(refused(&ack), "forbidden");

    assert_quiet(&mut b, &a, &conv).await;
    let stored = app.message(&alice, &conv, sent["id"].as_str().unwrap()).await;
    assert_eq!(stored["reactions"], json!([{ "emoji": "🎉", "userId": bob.id }]));
}

#[tokio::test]
async fn a_repeated_client_message_id_stores_and_announces_once() {
    let Trio { app, alice, conv, a, mut b, .. } = trio(spawn_app().await).await;
    let payload = json!({ "conversationId": conv, "content": "only once", "clientMessageId": "retry-42" });

    let first = ok(emit(&a, "message:send", payload.clone()).await)["message"].clone();
    let second = ok(emit(&a, "message:send", payload).await)["message"].clone();
    assert_eq!(second["id"], first["id"], "the retry answers the first message");
    assert_eq!(second["seq"], first["seq"]);

    expect_message(&mut b, &first["id"]).await;
    // The retry announced nothing: the next thing bob sees is the barrier.
    assert_quiet(&mut b, &a, &conv).await;

    let history = app.history(&alice, &conv, "afterSeq=0").await;
    let copies = history.iter().filter(|m| m["clientMessageId"] == json!("retry-42")).count();
    assert_eq!(copies, 1, "stored once: {history:?}");
    assert_eq!(history.len(), 2, "the message and the barrier: {history:?}");
}

#[tokio::test]
async fn every_device_of_a_user_gets_the_events() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let conv = app.single(&alice, &bob).await;
    let mut b = app.chat(&bob).await;
    app.wait_chat_sockets(1).await;
    let mut phone = app.chat(&alice).await;
    let mut laptop = app.chat(&alice).await;
    app.wait_chat_sockets(3).await;

    let m = send(&phone, &conv, "from the phone").await;
    expect_message(&mut laptop, &m["id"]).await;
    expect_message(&mut phone, &m["id"]).await;
    expect_message(&mut b, &m["id"]).await;

    ok(emit(&b, "reaction:add", json!({ "messageId": m["id"], "emoji": "❤️" })).await);
    ok(emit(&b, "user:typing", json!({ "conversationId": conv })).await);
    for (device, socket) in [("phone", &mut phone), ("laptop", &mut laptop)] {
        let added = socket.expect("reaction:added", T).await.unwrap_or_else(|e| panic!("{device}: {e}"));
        assert_eq!(added["userId"], json!(bob.id));
        let typing = socket.expect("user:typing", T).await.unwrap_or_else(|e| panic!("{device}: {e}"));
        assert_eq!(typing["userId"], json!(bob.id));
    }

    // Alice typing on one device is not echoed to her other device.
    ok(emit(&phone, "user:typing", json!({ "conversationId": conv })).await);
    let typing = b.expect("user:typing", T).await.expect("bob sees alice typing");
    assert_eq!(typing["userId"], json!(alice.id));
    assert_quiet(&mut laptop, &b, &conv).await;
}

#[tokio::test]
async fn a_group_admin_may_delete_anyones_message_and_a_member_may_not() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let group = app.group(&alice, &[&bob, &carol]).await;
    let a = app.chat(&alice).await;
    let mut b = app.chat(&bob).await;
    let mut c = app.chat(&carol).await;

    let m = send(&b, &group, "bob's message").await;
    expect_message(&mut c, &m["id"]).await;

    let ack = emit(&c, "message:delete", json!({ "messageId": m["id"] })).await;
    assert_eq!(refused(&ack), "forbidden", "a member may not delete another's message");
    let stored = app.message(&alice, &group, m["id"].as_str().unwrap()).await;
    assert_eq!(stored["content"], json!("bob's message"));

    ok(emit(&a, "message:delete", json!({ "messageId": m["id"] })).await);
    for (who, socket) in [("bob", &mut b), ("carol", &mut c)] {
        let deleted = socket.expect("message:deleted", T).await.unwrap_or_else(|e| panic!("{who}: {e}"));
        assert_eq!(deleted["messageId"], m["id"]);
        assert_eq!(deleted["conversationId"], json!(group));
    }
    let stored = app.message(&alice, &group, m["id"].as_str().unwrap()).await;
    assert_eq!(stored["content"], json!(""));
    assert!(stored["deletedAt"].is_string());
}

#[tokio::test]
async fn unread_counts_follow_messages_and_receipts() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let conv = app.single(&alice, &bob).await;
    let a = app.chat(&alice).await;
    let b = app.chat(&bob).await;
    let mut sent = Vec::new();
    for i in 1..=3 {
        sent.push(send(&a, &conv, &format!("unread {i}")).await);
    }
    let view = |c: &Value, u: &TestUser| {
        let p = c["participants"].as_array().unwrap().iter().find(|p| p["userId"] == json!(u.id)).cloned().unwrap();
        (c["unreadCount"].as_i64().unwrap(), p["lastReadSeq"].as_i64().unwrap())
    };

    let (_, c) = app.get(&format!("/conversations/{conv}"), &bob.token).await;
    assert_eq!(view(&c, &bob), (3, 0), "bob has three unread: {c}");
    assert_eq!(c["lastSeq"], json!(3));
    let (_, c) = app.get(&format!("/conversations/{conv}"), &alice.token).await;
    assert_eq!(c["unreadCount"], json!(0), "one's own messages are not unread: {c}");

    ok(emit(&b, "message:read", json!({ "messageId": sent[1]["id"], "conversationId": conv })).await);
    let (_, c) = app.get(&format!("/conversations/{conv}"), &bob.token).await;
    assert_eq!(view(&c, &bob), (1, 2), "read up to the second: {c}");

    // Reading an older message never moves the pointer back.
    ok(emit(&b, "message:read", json!({ "messageId": sent[0]["id"], "conversationId": conv })).await);
    let (_, list) = app.get("/conversations", &bob.token).await;
    assert_eq!(view(&list["data"][0], &bob), (1, 2), "{list}");

    // A deleted message is not unread.
    ok(emit(&a, "message:delete", json!({ "messageId": sent[2]["id"] })).await);
    let (_, c) = app.get(&format!("/conversations/{conv}"), &bob.token).await;
    assert_eq!(view(&c, &bob), (0, 2), "the only unread message was deleted: {c}");
}

#[tokio::test]
async fn replies_and_attachments_are_kept() {
    let Trio { app, alice, bob, conv, a, mut b, .. } = trio(spawn_app().await).await;
    let first = send(&a, &conv, "look at this").await;
    expect_message(&mut b, &first["id"]).await;

    let ack = ok(emit(
        &b,
        "message:send",
        json!({
            "conversationId": conv,
            "content": "",
            "type": "image",
            "attachments": [{ "url": "https://files.example/cat.png", "type": "image", "mimeType": "image/png", "size": 1234 }],
            "replyTo": first["id"],
        }),
    )
    .await);
    let reply = &ack["message"];
    assert_eq!(reply["type"], json!("image"));
    assert_eq!(reply["replyTo"], first["id"]);
    assert_eq!(reply["attachments"][0]["url"], json!("https://files.example/cat.png"));
    assert_eq!(reply["senderId"], json!(bob.id));

    let mut a = a;
    let got = expect_message(&mut a, &reply["id"]).await;
    assert_eq!(got["replyTo"], first["id"]);
    assert_eq!(got["attachments"], reply["attachments"]);
    let stored = app.message(&alice, &conv, reply["id"].as_str().unwrap()).await;
    assert_eq!(stored["attachments"], reply["attachments"]);

    // A reply must answer a message of the same conversation.
    let elsewhere = app.register("carol").await;
    let other = app.single(&alice, &elsewhere).await;
    let m = send(&a, &other, "for carol").await;
    let ack = emit(&b, "message:send", json!({ "conversationId": conv, "content": "re", "replyTo": m["id"] })).await;
    assert_eq!(refused(&ack), "invalid_payload");
}

#[tokio::test]
async fn the_same_client_message_id_from_two_devices_at_once_is_stored_once() {
    let app = spawn_app_with(relaxed).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let conv = app.single(&alice, &bob).await;
    let phone = app.chat(&alice).await;
    let laptop = app.chat(&alice).await;

    for round in 0..10 {
        let payload = json!({ "conversationId": conv, "content": format!("race {round}"), "clientMessageId": format!("race-{round}") });
        let (x, y) = tokio::join!(
            phone.emit_with_ack("message:send", payload.clone(), T),
            laptop.emit_with_ack("message:send", payload, T),
        );
        let (x, y) = (ok(x.expect("phone ack")), ok(y.expect("laptop ack")));
        assert_eq!(x["message"]["id"], y["message"]["id"], "round {round}: both devices get the same message");
        assert_eq!(x["message"]["seq"], json!(round + 1), "round {round}: one seq per clientMessageId");
    }
    let history = app.history(&bob, &conv, "afterSeq=0&limit=200").await;
    assert_eq!(history.len(), 10, "each clientMessageId stored once: {history:?}");
}
