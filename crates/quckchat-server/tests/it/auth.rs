//! Accounts and sessions (CONTRACT §2 Auth) and the socket handshake (CONTRACT §3).

use std::time::Duration;

use base64::Engine;
use quckchat_sio_client::{Client, DisconnectKind, Error};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

/// Checks the error body `{statusCode, message, error, timestamp}` against `status`.
pub fn assert_error_body(status: StatusCode, body: &Value) {
    assert_eq!(body["statusCode"], json!(status.as_u16()), "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "message: {body}");
    assert_eq!(body["error"], json!(status.canonical_reason().unwrap()), "{body}");
    assert!(
        body["timestamp"].as_str().is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()),
        "timestamp: {body}"
    );
}

fn assert_auth_response(body: &Value, username: &str) {
    assert!(body["accessToken"].as_str().is_some_and(|t| t.split('.').count() == 3), "a JWT: {body}");
    assert!(body["refreshToken"].as_str().is_some_and(|t| !t.is_empty()), "{body}");
    assert!(body["expiresIn"].as_u64().is_some_and(|s| s > 0), "{body}");
    let user = &body["user"];
    assert!(user["id"].is_string(), "{body}");
    assert_eq!(user["username"], json!(username));
    assert!(user["displayName"].is_string(), "{body}");
    assert!(user["status"] == json!("online") || user["status"] == json!("offline"), "{body}");
    assert!(user["createdAt"].is_string(), "{body}");
    assert!(user.get("passwordHash").is_none() && user.get("password_hash").is_none(), "no hash leaks: {body}");
}

/// The claims of a JWT, read without checking the signature.
fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// A token signed with the test secret carrying `claims`.
fn forge(claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()).expect("a key"),
    )
    .expect("sign")
}

async fn refused_handshake(app: &TestApp, options: quckchat_sio_client::ConnectOptions, what: &str) {
    match Client::connect(options).await {
        Err(Error::ConnectRefused(payload)) => {
            assert_eq!(payload["message"], json!("unauthorized"), "{what}: {payload}");
        }
        Err(other) => panic!("{what}: expected a CONNECT_ERROR, got {other}"),
        Ok(_) => panic!("{what}: the handshake was accepted"),
    }
    // The server is fine afterwards.
    let (status, _) = app.get_raw("/api/v1/health").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn register_and_login_answer_an_auth_response() {
    let app = spawn_app().await;
    let (status, body) =
        app.api(Method::POST, "/auth/register", None, Some(json!({ "username": "alice", "password": PASSWORD }))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_auth_response(&body, "alice");
    assert_eq!(body["user"]["displayName"], json!("alice"), "the display name defaults to the username");
    assert_eq!(claims(body["accessToken"].as_str().unwrap())["sub"], body["user"]["id"], "sub is the user id");

    let (status, login) =
        app.api(Method::POST, "/auth/login", None, Some(json!({ "username": "alice", "password": PASSWORD }))).await;
    assert_eq!(status, StatusCode::OK, "{login}");
    assert_auth_response(&login, "alice");
    assert_eq!(login["user"]["id"], body["user"]["id"]);

    let (status, me) = app.get("/users/me", login["accessToken"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["id"], body["user"]["id"]);
}

#[tokio::test]
async fn login_with_a_wrong_password_or_unknown_user_is_401() {
    let app = spawn_app().await;
    app.register("alice").await;
    for (username, password) in [("alice", "wrong password!"), ("nobody", PASSWORD)] {
        let (status, body) = app
            .api(Method::POST, "/auth/login", None, Some(json!({ "username": username, "password": password })))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{username}: {body}");
        assert_error_body(status, &body);
    }
}

#[tokio::test]
async fn a_taken_username_is_409() {
    let app = spawn_app().await;
    app.register("alice").await;
    for name in ["alice", "ALICE"] {
        let (status, body) = app
            .api(Method::POST, "/auth/register", None, Some(json!({ "username": name, "password": PASSWORD })))
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{name}: {body}");
        assert_error_body(status, &body);
    }
}

#[tokio::test]
async fn invalid_registration_is_400() {
    let app = spawn_app().await;
    for body in [
        json!({ "username": "al", "password": PASSWORD }),
        json!({ "username": "alice", "password": "short" }),
        json!({ "username": "alice" }),
        json!("alice"),
    ] {
        let (status, answer) = app.api(Method::POST, "/auth/register", None, Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_error_body(status, &answer);
    }
}

#[tokio::test]
async fn refresh_rotates_and_the_old_refresh_token_stops_working() {
    // No reuse grace: the old token is refused at once (the grace has its own tests).
    let app = spawn_app_with(|c| c.refresh_reuse_grace = Duration::ZERO).await;
    let alice = app.register("alice").await;

    let (status, fresh) =
        app.api(Method::POST, "/auth/refresh", None, Some(json!({ "refreshToken": alice.refresh }))).await;
    assert_eq!(status, StatusCode::OK, "{fresh}");
    assert_auth_response(&fresh, "alice");
    assert_ne!(fresh["refreshToken"], json!(alice.refresh), "a new refresh token");
    let (status, _) = app.get("/users/me", fresh["accessToken"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "the new access token works");

    let (status, body) =
        app.api(Method::POST, "/auth/refresh", None, Some(json!({ "refreshToken": alice.refresh }))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old refresh token is refused: {body}");
    assert_error_body(status, &body);

    let (status, _) = app.api(Method::POST, "/auth/refresh", None, Some(json!({ "refreshToken": "garbage" }))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_reused_refresh_token_ends_the_whole_session() {
    // A grace of zero: every replay is past it, as one after the (default 10 s) grace is.
    let app = spawn_app_with(|c| c.refresh_reuse_grace = Duration::ZERO).await;
    let alice = app.register("alice").await;
    let other_session = app.login(&alice).await;

    let (status, fresh) =
        app.api(Method::POST, "/auth/refresh", None, Some(json!({ "refreshToken": alice.refresh }))).await;
    assert_eq!(status, StatusCode::OK);
    let fresh_access = fresh["accessToken"].as_str().unwrap().to_string();
    let fresh_refresh = fresh["refreshToken"].as_str().unwrap().to_string();
    let mut socket = app.chat(&TestUser { token: fresh_access.clone(), ..alice.clone() }).await;

    // Someone replays the rotated token: the session it belongs to ends.
    let (status, _) =
        app.api(Method::POST, "/auth/refresh", None, Some(json!({ "refreshToken": alice.refresh }))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, _) =
        app.api(Method::POST, "/auth/refresh", None, Some(json!({ "refreshToken": fresh_refresh }))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the latest refresh token of that session is dead too");
    let (status, _) = app.get("/users/me", &fresh_access).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "and its access token");
    socket.wait_disconnect(T).await.expect("the session's socket is disconnected");

    let (status, _) = app.get("/users/me", &other_session.token).await;
    assert_eq!(status, StatusCode::OK, "another session of the same user is untouched");
}

#[tokio::test]
async fn the_same_refresh_fired_twice_answers_the_same_pair_within_the_grace() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let refresh = |token: String| {
        let app = &app;
        async move { app.api(Method::POST, "/auth/refresh", None, Some(json!({ "refreshToken": token }))).await }
    };

    // Fired at once (a double tap): both succeed with the same refresh token.
    let ((s1, b1), (s2, b2)) = tokio::join!(refresh(alice.refresh.clone()), refresh(alice.refresh.clone()));
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK), "{b1} {b2}");
    assert_eq!(b1["refreshToken"], b2["refreshToken"], "one successor");
    assert_ne!(b1["refreshToken"], json!(alice.refresh));
    // Once more, later (a retry after a lost answer): still the same successor.
    let (s3, b3) = refresh(alice.refresh.clone()).await;
    assert_eq!(s3, StatusCode::OK, "{b3}");
    assert_eq!(b3["refreshToken"], b1["refreshToken"]);
    for body in [&b1, &b2, &b3] {
        let (status, _) = app.get("/users/me", body["accessToken"].as_str().unwrap()).await;
        assert_eq!(status, StatusCode::OK, "every access token handed out works");
    }
    // The successor rotates on as usual, and the session is alive.
    let (s4, b4) = refresh(str_of(&b1["refreshToken"])).await;
    assert_eq!(s4, StatusCode::OK, "{b4}");
    assert_ne!(b4["refreshToken"], b1["refreshToken"]);
}

#[tokio::test]
async fn logout_ends_the_session_and_disconnects_only_its_sockets() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let conv = app.single(&alice, &bob).await;
    let phone = app.login(&alice).await;

    let mut laptop_socket = app.chat(&alice).await;
    let mut phone_socket = app.chat(&phone).await;

    let (status, body) = app.api(Method::POST, "/auth/logout", Some(&alice.token), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    let kind = laptop_socket.wait_disconnect(T).await.expect("the logged-out session's socket is disconnected");
    assert!(matches!(kind, DisconnectKind::ServerDisconnect | DisconnectKind::TransportClosed));

    assert!(phone_socket.is_connected(), "the other session's socket stays");
    let sent = send(&phone_socket, &conv, "still here").await;
    expect_message(&mut phone_socket, &sent["id"]).await;

    let (status, body) = app.get("/users/me", &alice.token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the access token of an ended session is refused");
    assert_error_body(status, &body);
    let (status, _) =
        app.api(Method::POST, "/auth/refresh", None, Some(json!({ "refreshToken": alice.refresh }))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "so is its refresh token");
    let (status, _) = app.get("/users/me", &phone.token).await;
    assert_eq!(status, StatusCode::OK);

    refused_handshake(
        &app,
        app.chat_options().auth(json!({ "token": format!("Bearer {}", alice.token) })),
        "a token of an ended session",
    )
    .await;
}

/// Connects with `options` and proves the socket acts as `user`.
async fn connects_as(options: quckchat_sio_client::ConnectOptions, user: &TestUser, conv: &str, what: &str) {
    let client = Client::connect(options).await.unwrap_or_else(|e| panic!("{what}: {e}"));
    let sent = send(&client, conv, what).await;
    assert_eq!(sent["senderId"], json!(user.id), "{what}");
    client.close().await;
}

#[tokio::test]
async fn the_handshake_takes_the_token_in_every_contract_form() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let conv = app.single(&alice, &bob).await;
    let token = &alice.token;

    connects_as(
        app.chat_options().auth(json!({ "token": format!("Bearer {token}") })),
        &alice,
        &conv,
        "auth.token with Bearer",
    )
    .await;
    connects_as(app.chat_options().auth(json!({ "token": token })), &alice, &conv, "auth.token without Bearer").await;
    connects_as(app.chat_options().query("token", token.clone()), &alice, &conv, "?token= query").await;
    connects_as(
        app.chat_options().header("Authorization", format!("Bearer {token}")),
        &alice,
        &conv,
        "Authorization header",
    )
    .await;
}

#[tokio::test]
async fn the_handshake_refuses_missing_malformed_expired_and_forged_tokens() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let now = chrono::Utc::now().timestamp();
    let real = claims(&alice.token);

    // The forging is right: the same claims with a future expiry are accepted.
    let mut valid = real.clone();
    valid["exp"] = json!(now + 600);
    let probe = Client::connect(app.chat_options().auth(json!({ "token": forge(&valid) }))).await;
    assert!(probe.is_ok(), "a well-forged live token is accepted: {:?}", probe.err());

    let mut expired = real.clone();
    expired["iat"] = json!(now - 7200);
    expired["exp"] = json!(now - 3600);
    let wrong_key = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &valid,
        &jsonwebtoken::EncodingKey::from_secret(b"some other secret").expect("a key"),
    )
    .unwrap();

    refused_handshake(&app, app.chat_options(), "no token at all").await;
    refused_handshake(&app, app.chat_options().auth(json!({})), "an auth object without a token").await;
    refused_handshake(&app, app.chat_options().auth(json!({ "token": "" })), "an empty token").await;
    refused_handshake(&app, app.chat_options().auth(json!({ "token": "Bearer " })), "a bare Bearer").await;
    refused_handshake(&app, app.chat_options().auth(json!({ "token": "garbage" })), "garbage").await;
    refused_handshake(&app, app.chat_options().auth(json!({ "token": 12345 })), "a number").await;
    refused_handshake(&app, app.chat_options().auth(json!({ "token": forge(&expired) })), "an expired token").await;
    refused_handshake(&app, app.chat_options().auth(json!({ "token": wrong_key })), "a token signed with another key")
        .await;
    refused_handshake(&app, app.chat_options().query("token", "garbage"), "a garbage query token").await;
    refused_handshake(&app, app.chat_options().header("Authorization", "Bearer garbage"), "a garbage header").await;
}

#[tokio::test]
async fn protected_routes_without_a_valid_token_are_401() {
    let app = spawn_app().await;
    for (method, path) in [(Method::GET, "/users/me"), (Method::GET, "/conversations"), (Method::POST, "/auth/logout")]
    {
        let (status, body) = app.api(method.clone(), path, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
        assert_error_body(status, &body);
        let (status, _) = app.api(method.clone(), path, Some("not-a-jwt"), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} with garbage");
    }
}
