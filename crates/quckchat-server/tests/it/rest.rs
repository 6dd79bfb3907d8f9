//! The REST API (CONTRACT §2): users, conversations, members, history, edits and
//! deletes through REST, and the operations routes.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::auth::assert_error_body;
use crate::helpers::*;

fn ids(list: &Value) -> Vec<String> {
    list["data"].as_array().expect("data is an array").iter().map(|c| str_of(&c["id"])).collect()
}

fn role_of(conversation: &Value, user: &TestUser) -> Option<String> {
    conversation["participants"]
        .as_array()
        .expect("participants")
        .iter()
        .find(|p| p["userId"] == json!(user.id))
        .map(|p| str_of(&p["role"]))
}

#[tokio::test]
async fn users_me_can_be_read_and_changed() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;

    let (status, me) = app.get("/users/me", &alice.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["id"], json!(alice.id));
    assert_eq!(me["username"], json!("alice"));
    assert_eq!(me["displayName"], json!("alice display"));
    assert!(me["createdAt"].is_string());

    let (status, changed) = app
        .put(
            "/users/me",
            &alice.token,
            json!({ "displayName": "Alice A.", "bio": "hi there", "avatar": "https://x.example/a.png" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["displayName"], json!("Alice A."));
    assert_eq!(changed["bio"], json!("hi there"));
    assert_eq!(changed["avatar"], json!("https://x.example/a.png"));

    // A partial change leaves the rest as it was.
    let (status, changed) = app.put("/users/me", &alice.token, json!({ "bio": "bye" })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(changed["displayName"], json!("Alice A."));
    assert_eq!(changed["bio"], json!("bye"));

    let (_, again) = app.get("/users/me", &alice.token).await;
    assert_eq!(again["displayName"], json!("Alice A."));
    assert_eq!(again["bio"], json!("bye"));

    let (status, body) = app.put("/users/me", &alice.token, json!({ "displayName": "" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_error_body(status, &body);
}

#[tokio::test]
async fn users_can_be_read_by_id_and_searched() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    app.register("bobby").await;

    let (status, user) = app.get(&format!("/users/{}", bob.id), &alice.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(user["id"], json!(bob.id));
    assert_eq!(user["username"], json!("bob"));
    assert!(user.get("passwordHash").is_none());

    let (status, body) = app.get(&format!("/users/{}", uuid::Uuid::now_v7()), &alice.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_error_body(status, &body);

    let (status, found) = app.get("/users/search?q=bob", &alice.token).await;
    assert_eq!(status, StatusCode::OK);
    let mut names: Vec<String> = found["data"].as_array().unwrap().iter().map(|u| str_of(&u["username"])).collect();
    names.sort();
    assert_eq!(names, vec!["bob", "bobby"]);

    let (_, found) = app.get("/users/search?q=BOB&limit=1", &alice.token).await;
    assert_eq!(found["data"].as_array().unwrap().len(), 1, "limit is honoured and the match ignores case");

    let (_, found) = app.get("/users/search?q=zzz", &alice.token).await;
    assert_eq!(found["data"], json!([]));
}

#[tokio::test]
async fn a_single_conversation_exists_once_per_pair() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;

    let (status, created) =
        app.post("/conversations", &alice.token, json!({ "type": "single", "participants": [bob.id] })).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["type"], json!("single"));
    assert_eq!(created["createdBy"], json!(alice.id));
    assert_eq!(created["lastSeq"], json!(0));
    assert_eq!(created["unreadCount"], json!(0));
    assert!(created["createdAt"].is_string());
    let mut members: Vec<String> =
        created["participants"].as_array().unwrap().iter().map(|p| str_of(&p["userId"])).collect();
    members.sort();
    let mut want = vec![alice.id.clone(), bob.id.clone()];
    want.sort();
    assert_eq!(members, want);
    for p in created["participants"].as_array().unwrap() {
        assert!(p["joinedAt"].is_string() && p["lastReadSeq"] == json!(0), "{p}");
    }

    let (status, again) =
        app.post("/conversations", &alice.token, json!({ "type": "single", "participants": [bob.id] })).await;
    assert_eq!(status, StatusCode::OK, "the same pair again: {again}");
    assert_eq!(again["id"], created["id"]);

    let (status, reverse) =
        app.post("/conversations", &bob.token, json!({ "type": "single", "participants": [alice.id] })).await;
    assert_eq!(status, StatusCode::OK, "from the other side: {reverse}");
    assert_eq!(reverse["id"], created["id"]);

    let (status, body) = app
        .post(
            "/conversations",
            &alice.token,
            json!({ "type": "single", "participants": [uuid::Uuid::now_v7().to_string()] }),
        )
        .await;
    assert!(status == StatusCode::NOT_FOUND || status == StatusCode::BAD_REQUEST, "an unknown peer: {status} {body}");
    assert_error_body(status, &body);
}

#[tokio::test]
async fn a_group_makes_its_creator_admin() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;

    let (status, group) = app
        .post(
            "/conversations",
            &alice.token,
            json!({ "type": "group", "participants": [bob.id, carol.id], "name": "Friends" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    assert_eq!(group["type"], json!("group"));
    assert_eq!(group["name"], json!("Friends"));
    assert_eq!(group["participants"].as_array().unwrap().len(), 3);
    assert_eq!(role_of(&group, &alice).as_deref(), Some("admin"));
    assert_eq!(role_of(&group, &bob).as_deref(), Some("member"));
    assert_eq!(role_of(&group, &carol).as_deref(), Some("member"));
}

#[tokio::test]
async fn conversations_are_listed_most_recent_activity_first() {
    let app = spawn_app_with(relaxed).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let with_bob = app.single(&alice, &bob).await;
    let with_carol = app.single(&alice, &carol).await;
    let group = app.group(&alice, &[&bob, &carol]).await;

    // Activity: carol's, then the group, then bob's; each strictly later than the last.
    let a = app.chat(&alice).await;
    let mut last = String::new();
    for conv in [&with_carol, &group, &with_bob] {
        loop {
            let m = send(&a, conv, "activity").await;
            let at = str_of(&m["createdAt"]);
            if at > last {
                last = at;
                break;
            }
        }
    }
    let (status, listed) = app.get("/conversations", &alice.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&listed), vec![with_bob.clone(), group.clone(), with_carol.clone()], "{listed}");
    assert!(listed["data"][0]["lastMessageAt"].is_string());
    assert!(listed["data"][0]["lastSeq"].as_i64().is_some_and(|s| s >= 1));

    let (_, page) = app.get("/conversations?limit=2", &alice.token).await;
    assert_eq!(ids(&page), vec![with_bob.clone(), group.clone()]);
    let (status, rest) = app.get(&format!("/conversations?limit=2&before={group}"), &alice.token).await;
    assert_eq!(status, StatusCode::OK, "{rest}");
    assert_eq!(ids(&rest), vec![with_carol.clone()], "the next page starts after the last one seen");

    let (_, bobs) = app.get("/conversations", &bob.token).await;
    assert_eq!(ids(&bobs), vec![with_bob, group], "bob sees only his");
}

#[tokio::test]
async fn a_conversation_is_404_for_a_non_member() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let mallory = app.register("mallory").await;
    let conv = app.single(&alice, &bob).await;

    let (status, c) = app.get(&format!("/conversations/{conv}"), &bob.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(c["id"], json!(conv));

    let (status, body) = app.get(&format!("/conversations/{conv}"), &mallory.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_error_body(status, &body);

    let (status, _) = app.get(&format!("/conversations/{}", uuid::Uuid::now_v7()), &alice.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = app.get(&format!("/messages/conversation/{conv}"), &mallory.token).await;
    assert!(
        status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
        "history for a non-member: {status} {body}"
    );
    assert_error_body(status, &body);
}

#[tokio::test]
async fn only_group_admins_update_a_group() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let group = app.group(&alice, &[&bob]).await;

    let (status, body) = app.put(&format!("/conversations/{group}"), &bob.token, json!({ "name": "bob's now" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_error_body(status, &body);

    let (status, renamed) =
        app.put(&format!("/conversations/{group}"), &alice.token, json!({ "name": "Renamed" })).await;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    assert_eq!(renamed["name"], json!("Renamed"));
    let (_, seen) = app.get(&format!("/conversations/{group}"), &bob.token).await;
    assert_eq!(seen["name"], json!("Renamed"));
}

#[tokio::test]
async fn group_members_are_added_and_removed_by_admins_and_may_leave() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let dave = app.register("dave").await;
    let group = app.group(&alice, &[&bob]).await;
    let members = format!("/conversations/{group}/members");

    let (status, body) = app.post(&members, &bob.token, json!({ "userIds": [carol.id] })).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a member cannot add: {body}");
    assert_error_body(status, &body);

    let (status, c) = app.post(&members, &alice.token, json!({ "userIds": [carol.id, dave.id] })).await;
    assert_eq!(status, StatusCode::OK, "{c}");
    assert_eq!(role_of(&c, &carol).as_deref(), Some("member"));
    assert_eq!(role_of(&c, &dave).as_deref(), Some("member"));
    let (status, _) = app.get(&format!("/conversations/{group}"), &carol.token).await;
    assert_eq!(status, StatusCode::OK, "carol is in");

    let (status, body) = app.delete(&format!("{members}/{}", carol.id), &bob.token).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a member cannot remove others: {body}");
    assert_error_body(status, &body);

    let (status, body) = app.delete(&format!("{members}/{}", bob.id), &bob.token).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "a member may leave: {body}");
    let (status, _) = app.get(&format!("/conversations/{group}"), &bob.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "bob is out");

    let (status, _) = app.delete(&format!("{members}/{}", carol.id), &alice.token).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "the admin removes carol");
    let (_, c) = app.get(&format!("/conversations/{group}"), &alice.token).await;
    let mut left: Vec<String> = c["participants"].as_array().unwrap().iter().map(|p| str_of(&p["userId"])).collect();
    left.sort();
    let mut want = vec![alice.id.clone(), dave.id.clone()];
    want.sort();
    assert_eq!(left, want);

    let single = app.single(&alice, &bob).await;
    let (status, _) =
        app.post(&format!("/conversations/{single}/members"), &alice.token, json!({ "userIds": [carol.id] })).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a single conversation takes no members");
}

#[tokio::test]
async fn history_pages_before_a_message_and_after_a_seq() {
    let app = spawn_app_with(relaxed).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let conv = app.single(&alice, &bob).await;
    let a = app.chat(&alice).await;
    let mut sent = Vec::new();
    for i in 1..=6 {
        sent.push(send(&a, &conv, &format!("m{i}")).await);
    }
    let seqs: Vec<i64> = sent.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);

    let latest = app.history(&bob, &conv, "limit=4").await;
    let got: Vec<i64> = latest.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(got, vec![6, 5, 4, 3], "the latest, newest first");

    let before = app.history(&bob, &conv, &format!("before={}", str_of(&sent[3]["id"]))).await;
    let got: Vec<i64> = before.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(got, vec![3, 2, 1], "older than m4, newest first");

    let before = app.history(&bob, &conv, &format!("before={}&limit=2", str_of(&sent[3]["id"]))).await;
    let got: Vec<i64> = before.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(got, vec![3, 2]);

    let after = app.history(&bob, &conv, "afterSeq=2").await;
    let got: Vec<i64> = after.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(got, vec![3, 4, 5, 6], "exactly seq > 2, ascending");
    assert_eq!(after[0]["content"], json!("m3"));

    let after = app.history(&bob, &conv, "afterSeq=2&limit=2").await;
    let got: Vec<i64> = after.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(got, vec![3, 4]);

    assert!(app.history(&bob, &conv, "afterSeq=6").await.is_empty());
    let all = app.history(&bob, &conv, "afterSeq=0").await;
    assert_eq!(all.len(), 6);
}

#[tokio::test]
async fn rest_edits_and_deletes_reach_connected_sockets() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let conv = app.single(&alice, &bob).await;
    let a = app.chat(&alice).await;
    let mut b = app.chat(&bob).await;
    let first = send(&a, &conv, "tpyo").await;
    let second = send(&a, &conv, "regret").await;
    expect_message(&mut b, &second["id"]).await;

    let (status, edited) =
        app.put(&format!("/messages/{}", str_of(&first["id"])), &alice.token, json!({ "content": "typo" })).await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert_eq!(edited["content"], json!("typo"));
    assert!(edited["editedAt"].is_string());
    let updated = b.expect("message:updated", T).await.expect("bob gets message:updated");
    assert_eq!(updated["id"], first["id"]);
    assert_eq!(updated["content"], json!("typo"));

    let (status, body) =
        app.put(&format!("/messages/{}", str_of(&first["id"])), &bob.token, json!({ "content": "mine now" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "only the sender edits: {body}");
    let (status, _) = app.delete(&format!("/messages/{}", str_of(&second["id"])), &bob.token).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "in a single conversation only the sender deletes");

    let (status, body) = app.delete(&format!("/messages/{}", str_of(&second["id"])), &alice.token).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let deleted = b.expect("message:deleted", T).await.expect("bob gets message:deleted");
    assert_eq!(deleted["messageId"], second["id"]);
    assert_eq!(deleted["conversationId"], json!(conv));
}

#[tokio::test]
async fn a_deleted_message_keeps_its_seq_with_empty_content() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let conv = app.single(&alice, &bob).await;
    let a = app.chat(&alice).await;
    let m1 = send(&a, &conv, "one").await;
    let m2 = send(&a, &conv, "two").await;
    let m3 = send(&a, &conv, "three").await;

    let (status, _) = app.delete(&format!("/messages/{}", str_of(&m2["id"])), &alice.token).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let all = app.history(&bob, &conv, "afterSeq=0").await;
    let seqs: Vec<i64> = all.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, vec![1, 2, 3], "no gap");
    assert_eq!(all[0]["id"], m1["id"]);
    assert_eq!(all[1]["id"], m2["id"]);
    assert_eq!(all[1]["content"], json!(""));
    assert!(all[1]["deletedAt"].is_string(), "{}", all[1]);
    assert_eq!(all[2]["id"], m3["id"]);
    assert_eq!(all[2]["content"], json!("three"));

    let m4 = send(&a, &conv, "four").await;
    assert_eq!(m4["seq"], json!(4), "the next message does not reuse the deleted seq");
}

#[tokio::test]
async fn health_reports_the_database_up() {
    let app = spawn_app().await;
    assert!(app.addr.ip().is_loopback() && app.addr.port() != 0, "bound to a real loopback port: {}", app.addr);
    let (status, body) = app.api(reqwest::Method::GET, "/health", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], json!("ok"), "{body}");
    assert_eq!(body["info"]["database"]["status"], json!("up"), "{body}");
}

#[tokio::test]
async fn metrics_expose_sockets_events_and_store_timings() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let conv = app.single(&alice, &bob).await;
    let mut a = app.chat(&alice).await;
    let sent = send(&a, &conv, "counted").await;
    expect_message(&mut a, &sent["id"]).await;
    app.wait_chat_sockets(1).await;

    let (status, text) = app.get_raw("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let line = |needles: &[&str]| text.lines().any(|l| !l.starts_with('#') && needles.iter().all(|n| l.contains(n)));
    assert!(line(&["quckchat_sockets_connected", "namespace=\"/chat\""]), "sockets gauge:\n{text}");
    assert_eq!(gauge(&text, "quckchat_sockets_connected", "namespace=\"/chat\""), 1);
    assert!(
        line(&["quckchat_socket_events_total", "event=\"message:send\"", "outcome=\"ok\""]),
        "events counter:\n{text}"
    );
    assert!(line(&["quckchat_store_seconds"]), "store timings:\n{text}");
}

#[tokio::test]
async fn the_openapi_document_lists_the_paths() {
    let app = spawn_app().await;
    let (status, text) = app.get_raw("/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_str(&text).expect("the OpenAPI document is JSON");
    assert!(doc["openapi"].is_string(), "{doc}");
    let paths = doc["paths"].as_object().expect("paths");
    for p in ["/api/v1/auth/register", "/api/v1/conversations", "/api/v1/messages/{id}", "/api/v1/health"] {
        assert!(paths.contains_key(p), "{p} is documented");
    }
}

#[tokio::test]
async fn an_unknown_route_is_404_with_the_error_shape() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    for path in ["/no/such/route", "/users/me/extra"] {
        let (status, body) = app.get(path, &alice.token).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_error_body(status, &body);
    }
    let (status, text) = app.get_raw("/definitely-not-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let body: Value = serde_json::from_str(&text).expect("JSON error body");
    assert_error_body(status, &body);
}

#[tokio::test]
async fn rest_input_is_validated_with_the_error_shape() {
    let app = spawn_app_with(|c| c.max_http_buffer_size = 16 * 1024).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let conv = app.single(&alice, &bob).await;
    let a = app.chat(&alice).await;
    let m = send(&a, &conv, "short").await;
    let path = format!("/messages/{}", str_of(&m["id"]));

    let (status, body) = app.put(&path, &alice.token, json!({ "content": "x".repeat(10_001) })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "content over 10,000 characters: {body}");
    assert_error_body(status, &body);
    let (status, body) = app.put(&path, &alice.token, json!({ "content": 5 })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_error_body(status, &body);
    let (status, body) = app.put("/messages/not-an-id", &alice.token, json!({ "content": "x" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_error_body(status, &body);
    let (status, body) =
        app.put(&format!("/messages/{}", uuid::Uuid::now_v7()), &alice.token, json!({ "content": "x" })).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_error_body(status, &body);

    let (status, body) = app.put("/users/me", &alice.token, json!({ "bio": "b".repeat(20_000) })).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "a body over MAX_HTTP_BUFFER_SIZE: {body}");
    assert_error_body(status, &body);

    let (status, body) =
        app.post("/conversations", &alice.token, json!({ "type": "triple", "participants": [bob.id] })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_error_body(status, &body);

    let stored = app.message(&alice, &conv, m["id"].as_str().unwrap()).await;
    assert_eq!(stored["content"], json!("short"), "nothing changed");
}
