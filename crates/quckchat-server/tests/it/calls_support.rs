//! Small steps the `/webrtc` tests repeat: opening a `/webrtc` socket (and waiting until
//! the server counts it as a call device), placing a call, reading the stored `Call`, and
//! proving that a socket received nothing (an ack round trip on that very socket).

use quckchat_domain::CallId;
use quckchat_sio_client::{Client, ConnectOptions};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// The number of `/webrtc` sockets the server counts as call devices (its metrics gauge).
/// The gauge moves after the calls service has counted the device, so once it shows a
/// socket, a call placed to its user rings it and sends no push.
pub fn webrtc_sockets(app: &TestApp) -> i64 {
    gauge(&app.state.metrics.render(), "quckchat_sockets_connected", "namespace=\"/webrtc\"")
}

/// A `/webrtc` socket of `user` (`auth: {token: "Bearer …"}`), counted by the server.
pub async fn webrtc(app: &TestApp, user: &TestUser) -> Client {
    let before = webrtc_sockets(app);
    let options = ConnectOptions::new(app.base_url.clone(), "/webrtc")
        .timeout(T)
        .auth(json!({ "token": format!("Bearer {}", user.token) }));
    let client =
        Client::connect(options).await.unwrap_or_else(|e| panic!("{} connects to /webrtc: {e}", user.username));
    eventually("the /webrtc socket is counted", || async move { webrtc_sockets(app) > before }).await;
    client
}

/// Closes a `/webrtc` socket (with a Socket.IO DISCONNECT) and waits until the server no
/// longer counts it. The server starts its call clean-up for the device at that moment.
pub async fn close_webrtc(app: &TestApp, client: Client) {
    let before = webrtc_sockets(app);
    client.close().await;
    eventually("the closed /webrtc socket is no longer counted", || async move { webrtc_sockets(app) < before }).await;
}

/// A well-formed call id that names no call.
pub fn unknown_call_id() -> String {
    CallId::new().to_string()
}

/// An ack round trip on `client`'s own socket: everything the server queued for that
/// socket before the round trip arrives before its ack.
pub async fn round_trip(client: &Client) {
    let ack = emit(client, "mute:audio", json!({ "callId": unknown_call_id(), "muted": false })).await;
    assert_eq!(refused(&ack), "not_found", "the round-trip probe is refused as unknown: {ack}");
}

/// Drops everything `client` got so far, including what the server queued for it before
/// this call (a round trip first).
pub async fn drain(client: &mut Client) {
    round_trip(client).await;
    let _ = client.take_buffered();
}

/// Proves `client` got nothing not yet consumed: a round trip, then an empty buffer.
pub async fn assert_silent(client: &mut Client, who: &str) {
    round_trip(client).await;
    let got = client.take_buffered();
    assert!(got.is_empty(), "{who} should have received nothing, got {got:?}");
}

/// Proves `client` got none of the events named `names` (others are allowed and dropped).
pub async fn assert_none_of(client: &mut Client, who: &str, names: &[&str]) {
    round_trip(client).await;
    let got = client.take_buffered();
    let forbidden: Vec<&(String, Value)> = got.iter().filter(|(n, _)| names.contains(&n.as_str())).collect();
    assert!(forbidden.is_empty(), "{who} should have received none of {names:?}, got {forbidden:?} (all: {got:?})");
}

/// The signaling events a relay produces.
pub const SIGNALS: &[&str] = &["offer", "answer", "ice-candidate"];

/// Waits for `event` about `call_id` on `client`.
pub async fn expect_call_event(client: &mut Client, who: &str, event: &str, call_id: &str) -> Value {
    client
        .expect_where(event, T, |p| p["callId"] == json!(call_id))
        .await
        .unwrap_or_else(|e| panic!("{who} gets {event} of call {call_id}: {e}"))
}

/// Waits for `call:ended` of `call_id` on `client` and checks its reason.
pub async fn expect_ended(client: &mut Client, who: &str, call_id: &str, reason: &str) -> Value {
    let ended = expect_call_event(client, who, "call:ended", call_id).await;
    assert_eq!(ended["reason"], json!(reason), "{who}'s call:ended: {ended}");
    ended
}

/// Places a call (`body` is the `call:initiate` payload) and returns the successful ack.
pub async fn initiate(client: &Client, body: Value) -> Value {
    ok(emit(client, "call:initiate", body).await)
}

/// Places a 1:1 call to `callee` and returns its id.
pub async fn call_user(client: &Client, callee: &TestUser, kind: &str) -> String {
    let ack = initiate(client, json!({ "calleeId": callee.id, "type": kind })).await;
    assert_eq!(ack["status"], json!("ringing"), "{ack}");
    str_of(&ack["callId"])
}

/// Answers `call_id` from `client` and returns the successful ack.
pub async fn answer(client: &Client, call_id: &str) -> Value {
    ok(emit(client, "call:answer", json!({ "callId": call_id })).await)
}

/// `GET /calls/{id}` as `user` (200 expected).
pub async fn get_call(app: &TestApp, user: &TestUser, call_id: &str) -> Value {
    let (status, body) = app.get(&format!("/calls/{call_id}"), &user.token).await;
    assert_eq!(status, StatusCode::OK, "GET /calls/{call_id} as {}: {body}", user.username);
    body
}

/// The participant entry of `user` in a `Call`.
pub fn participant<'a>(call: &'a Value, user: &TestUser) -> &'a Value {
    call["participants"]
        .as_array()
        .unwrap_or_else(|| panic!("participants is an array: {call}"))
        .iter()
        .find(|p| p["userId"] == json!(user.id))
        .unwrap_or_else(|| panic!("{} is a participant: {call}", user.username))
}

/// Asserts `v` is an RFC 3339 time.
pub fn assert_time(v: &Value, what: &str) {
    assert!(
        v.as_str().is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()),
        "{what} is an RFC 3339 time, got {v}"
    );
}

/// Asserts `v` is absent or null.
pub fn assert_absent(v: &Value, what: &str) {
    assert!(v.is_null(), "{what} is absent, got {v}");
}

/// Checks a `call:incoming` payload field by field.
pub fn assert_incoming(p: &Value, call_id: &str, caller: &TestUser, kind: &str, conversation: &str) {
    assert_eq!(p["callId"], json!(call_id), "{p}");
    assert_eq!(p["callerId"], json!(caller.id), "{p}");
    assert_eq!(p["callerName"], json!(format!("{} display", caller.username)), "{p}");
    assert_eq!(p["type"], json!(kind), "{p}");
    assert_eq!(p["conversationId"], json!(conversation), "{p}");
}
