//! Membership changes reach connected sockets at once (CONTRACT §2 Conversations):
//! no reconnect is needed to join or leave a conversation's events.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn an_added_member_gets_conversation_new_and_the_next_message() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let group = app.group(&alice, &[&bob]).await;

    let mut c = app.chat(&carol).await;
    app.wait_chat_sockets(1).await;
    let a = app.chat(&alice).await;
    app.wait_chat_sockets(2).await;

    let before = send(&a, &group, "before carol").await;

    let (status, body) =
        app.post(&format!("/conversations/{group}/members"), &alice.token, json!({ "userIds": [carol.id] })).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let new = c.expect("conversation:new", T).await.expect("carol's socket gets conversation:new");
    assert_eq!(new["id"], json!(group));
    assert_eq!(new["type"], json!("group"));
    assert!(
        new["participants"].as_array().unwrap().iter().any(|p| p["userId"] == json!(carol.id)),
        "carol is a participant: {new}"
    );

    let after = send(&a, &group, "welcome carol").await;
    let got = expect_message(&mut c, &after["id"]).await;
    assert_eq!(got["content"], json!("welcome carol"));
    assert!(
        c.take_buffered().iter().all(|(name, m)| !(name == "message:new" && m["id"] == before["id"])),
        "carol does not get messages from before she joined"
    );

    // And she can take part at once.
    let reply = ok(emit(&c, "message:send", json!({ "conversationId": group, "content": "hi all" })).await);
    assert_eq!(reply["message"]["seq"], json!(3));
}

#[tokio::test]
async fn a_removed_member_stops_receiving_and_is_forbidden() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let dave = app.register("dave").await;
    let group = app.group(&alice, &[&bob, &carol]).await;
    let carol_dave = app.single(&carol, &dave).await;

    let mut c = app.chat(&carol).await;
    app.wait_chat_sockets(1).await;
    let mut a = app.chat(&alice).await;
    app.wait_chat_sockets(2).await;
    c.expect("user:online", T).await.expect("carol is told alice is online");

    let first = send(&a, &group, "still with us").await;
    expect_message(&mut c, &first["id"]).await;

    let (status, body) = app.delete(&format!("/conversations/{group}/members/{}", carol.id), &alice.token).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    let removed = c.expect("conversation:removed", T).await.expect("carol's socket gets conversation:removed");
    assert_eq!(removed["conversationId"], json!(group));
    assert_eq!(removed["userId"], json!(carol.id));

    let after = send(&a, &group, "carol is gone").await;
    expect_message(&mut a, &after["id"]).await;

    let ack = emit(&c, "message:send", json!({ "conversationId": group, "content": "let me back" })).await;
    assert_eq!(refused(&ack), "forbidden");
    let ack = emit(&c, "user:typing", json!({ "conversationId": group })).await;
    assert_eq!(refused(&ack), "forbidden");

    // Carol received nothing from the group after leaving.
    assert_quiet_self(&mut c, &carol_dave).await;
    let history = app.history(&alice, &group, "afterSeq=0").await;
    assert_eq!(history.len(), 2, "the refused send stored nothing: {history:?}");
}

#[tokio::test]
async fn a_conversation_created_through_rest_reaches_both_sockets_at_once() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let dave = app.register("dave").await;
    let erin = app.register("erin").await;

    let mut a = app.chat(&alice).await;
    let mut d = app.chat(&dave).await;
    let mut e = app.chat(&erin).await;
    app.wait_chat_sockets(3).await;

    let (status, created) =
        app.post("/conversations", &alice.token, json!({ "type": "single", "participants": [dave.id] })).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let conv = created["id"].clone();
    for (who, socket) in [("alice", &mut a), ("dave", &mut d)] {
        let new = socket
            .expect_where("conversation:new", T, |c| c["id"] == conv)
            .await
            .unwrap_or_else(|err| panic!("{who} gets conversation:new: {err}"));
        assert_eq!(new["type"], json!("single"));
    }

    let hello = send(&a, conv.as_str().unwrap(), "hello dave").await;
    expect_message(&mut d, &hello["id"]).await;
    let reply = send(&d, conv.as_str().unwrap(), "hi alice").await;
    expect_message(&mut a, &reply["id"]).await;

    // A group made through REST too.
    let (status, group) = app
        .post(
            "/conversations",
            &dave.token,
            json!({ "type": "group", "participants": [alice.id, erin.id], "name": "trio" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let gid = group["id"].clone();
    for (who, socket) in [("alice", &mut a), ("dave", &mut d), ("erin", &mut e)] {
        socket
            .expect_where("conversation:new", T, |c| c["id"] == gid)
            .await
            .unwrap_or_else(|err| panic!("{who} gets conversation:new for the group: {err}"));
    }
    let hey = send(&e, gid.as_str().unwrap(), "hey").await;
    expect_message(&mut a, &hey["id"]).await;
    expect_message(&mut d, &hey["id"]).await;
}
