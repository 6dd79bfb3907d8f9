//! Presence (CONTRACT §3 `/chat`): `user:online` / `user:offline` go to co-members only,
//! counted over every device of a user; REST shows the status to co-members only.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn online_is_told_to_co_members_only() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let mallory = app.register("mallory").await;
    let carol = app.register("carol").await;
    let ab = app.single(&alice, &bob).await;
    let mc = app.single(&mallory, &carol).await;

    let mut a = app.chat(&alice).await;
    app.wait_chat_sockets(1).await;
    let mut m = app.chat(&mallory).await;
    app.wait_chat_sockets(2).await;
    let _b = app.chat(&bob).await;
    app.wait_chat_sockets(3).await;

    let online = a.expect("user:online", T).await.expect("alice is told bob is online");
    assert_eq!(online["userId"], json!(bob.id));
    // Nothing else for alice (not mallory's arrival), nothing at all for the stranger.
    assert_quiet_self(&mut a, &ab).await;
    assert_quiet_self(&mut m, &mc).await;
}

#[tokio::test]
async fn presence_counts_every_device() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let conv = app.single(&alice, &bob).await;

    let mut a = app.chat(&alice).await;
    app.wait_chat_sockets(1).await;
    let bob_phone = app.chat(&bob).await;
    app.wait_chat_sockets(2).await;
    let online = a.expect("user:online", T).await.expect("alice is told bob is online");
    assert_eq!(online["userId"], json!(bob.id));

    // A second device: no second `user:online`.
    let bob_laptop = app.chat(&bob).await;
    app.wait_chat_sockets(3).await;
    assert_quiet(&mut a, &bob_laptop, &conv).await;

    // One of two devices goes: bob is still online.
    bob_phone.close().await;
    app.wait_chat_sockets(2).await;
    assert_quiet(&mut a, &bob_laptop, &conv).await;
    let (status, seen) = app.get(&format!("/users/{}", bob.id), &alice.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen["status"], json!("online"), "bob still has a device: {seen}");

    // The last one goes: `user:offline` with `lastSeen`.
    bob_laptop.close().await;
    let offline = a.expect("user:offline", T).await.expect("alice is told bob is offline");
    assert_eq!(offline["userId"], json!(bob.id));
    let last_seen = offline["lastSeen"].as_str().expect("lastSeen is a string");
    assert!(chrono::DateTime::parse_from_rfc3339(last_seen).is_ok(), "{offline}");
    assert_quiet_self(&mut a, &conv).await;

    let (_, seen) = app.get(&format!("/users/{}", bob.id), &alice.token).await;
    assert_eq!(seen["status"], json!("offline"), "{seen}");
    assert!(seen["lastSeen"].is_string(), "lastSeen is kept: {seen}");
}

#[tokio::test]
async fn rest_shows_the_status_to_co_members_only() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let mallory = app.register("mallory").await;
    app.single(&alice, &bob).await;

    let mut b = app.chat(&bob).await;
    app.wait_chat_sockets(1).await;
    let a = app.chat(&alice).await;
    app.wait_chat_sockets(2).await;
    b.expect("user:online", T).await.expect("bob is told alice is online");

    let (status, seen) = app.get(&format!("/users/{}", alice.id), &bob.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen["status"], json!("online"), "a co-member sees alice online: {seen}");
    let (_, me) = app.get("/users/me", &alice.token).await;
    assert_eq!(me["status"], json!("online"), "alice sees herself online: {me}");

    let (status, seen) = app.get(&format!("/users/{}", alice.id), &mallory.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen["status"], json!("offline"), "a stranger is not told: {seen}");
    let (_, found) = app.get("/users/search?q=alice", &mallory.token).await;
    assert_eq!(found["data"][0]["status"], json!("offline"), "nor through search: {found}");
    let (_, found) = app.get("/users/search?q=alice", &bob.token).await;
    assert_eq!(found["data"][0]["status"], json!("online"), "a co-member is, through search too: {found}");

    a.close().await;
    let offline = b.expect("user:offline", T).await.expect("bob is told alice is offline");
    assert_eq!(offline["userId"], json!(alice.id));

    let (_, seen) = app.get(&format!("/users/{}", alice.id), &bob.token).await;
    assert_eq!(seen["status"], json!("offline"));
    assert_eq!(seen["lastSeen"], offline["lastSeen"], "the co-member sees the same lastSeen");
    let (_, seen) = app.get(&format!("/users/{}", alice.id), &mallory.token).await;
    assert!(seen.get("lastSeen").is_none_or(|v| v.is_null()), "a stranger gets no lastSeen: {seen}");
}

#[tokio::test]
async fn offline_follows_however_the_last_socket_ends() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let group = app.group(&alice, &[&bob, &carol]).await;

    let mut a = app.chat(&alice).await;
    app.wait_chat_sockets(1).await;
    let b = app.chat(&bob).await;
    app.wait_chat_sockets(2).await;
    let c = app.chat(&carol).await;
    app.wait_chat_sockets(3).await;
    for who in [&bob, &carol] {
        a.expect_where("user:online", T, |e| e["userId"] == json!(who.id))
            .await
            .unwrap_or_else(|e| panic!("alice is told {} is online: {e}", who.username));
    }

    // The transport just goes away (no Socket.IO DISCONNECT).
    drop(b);
    let offline = a
        .expect_where("user:offline", T, |e| e["userId"] == json!(bob.id))
        .await
        .expect("bob's dropped socket counts as gone");
    assert!(offline["lastSeen"].is_string());

    // The session is logged out: the server disconnects the socket itself.
    let (status, _) = app.api(reqwest::Method::POST, "/auth/logout", Some(&carol.token), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    a.expect_where("user:offline", T, |e| e["userId"] == json!(carol.id))
        .await
        .expect("carol's logged-out socket counts as gone");
    drop(c);

    app.wait_chat_sockets(1).await;
    assert_quiet_self(&mut a, &group).await;
}
