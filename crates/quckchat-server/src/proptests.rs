//! Property tests for every parser of client input: arbitrary input gives an error value,
//! never a panic (and, over HTTP, never a 5xx).
//!
//! - Engine.IO packets (`engineioxide::Packet::parse`, v3 and v4) and Socket.IO packets
//!   (the vendored common parser: text packets, then binary attachments).
//! - Event payloads: `ChatCommand::parse` and `CallCommand::parse` on arbitrary JSON,
//!   with field names biased towards the real ones so that the deep branches are reached.
//! - REST bodies and paths: arbitrary bytes sent to every body-taking route of the real
//!   router (with a valid token), in process.
//! - The small parsers around them: refresh tokens, bearer headers, X-Forwarded-For.

use std::rc::Rc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use bytes::Bytes;
use engineioxide_core::{Packet, ProtocolVersion, Str};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::Value;
use socketioxide_core::parser::{Parse, ParseConfig, ParserState};
use tower::ServiceExt;

use crate::gateway::chat::ChatCommand;
use crate::gateway::webrtc::CallCommand;

const FIELDS: &[&str] = &[
    "conversationId",
    "content",
    "type",
    "attachments",
    "replyTo",
    "clientMessageId",
    "messageId",
    "emoji",
    "callId",
    "calleeId",
    "sdp",
    "candidate",
    "to",
    "muted",
    "url",
    "thumbnailUrl",
    "size",
    "username",
    "password",
    "displayName",
    "refreshToken",
    "participants",
    "userIds",
    "name",
    "avatar",
    "bio",
];

/// Strings that are ids, near-ids, URLs, huge or odd.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".*",
        Just(uuid::Uuid::now_v7().to_string()),
        "[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
        "(https?|javascript|data):[ -~]{0,40}",
        Just("x".repeat(10_001)),
        Just("\u{0}\u{202e}\u{fffd}".to_string()),
    ]
}

/// Any JSON value, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        let key = prop_oneof![3 => proptest::sample::select(FIELDS).prop_map(str::to_string), 1 => ".{0,12}"];
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(key, inner, 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn event_name(known: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![4 => proptest::sample::select(known).prop_map(str::to_string), 1 => ".{0,20}"]
}

const CHAT_EVENTS: &[&str] = &[
    "message:send",
    "message:edit",
    "message:delete",
    "message:read",
    "user:typing",
    "user:stop-typing",
    "reaction:add",
    "reaction:remove",
];
const CALL_EVENTS: &[&str] = &[
    "call:initiate",
    "call:answer",
    "call:reject",
    "call:end",
    "offer",
    "answer",
    "ice-candidate",
    "mute:audio",
    "mute:video",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn engine_io_packets_never_panic(raw in ".*", bytes in vec(any::<u8>(), 0..64)) {
        for protocol in [ProtocolVersion::V3, ProtocolVersion::V4] {
            let _ = Packet::parse(protocol, raw.clone());
            let lossy = String::from_utf8_lossy(&bytes).into_owned();
            let _ = Packet::parse(protocol, lossy);
            for prefix in ["4", "b", "b4", "2probe", "0"] {
                let _ = Packet::parse(protocol, format!("{prefix}{raw}"));
            }
        }
    }

    #[test]
    fn socket_io_packets_never_panic(
        prefix in prop_oneof![Just(""), Just("2"), Just("3"), Just("5"), Just("6"), Just("51-"), Just("0/chat,"), Just("2/webrtc,12"), Just("4")],
        raw in ".*",
        payload in json(),
        attachments in vec(vec(any::<u8>(), 0..32), 0..4),
    ) {
        let parser = socketioxide_parser_common::CommonParser;
        let config = ParseConfig::default();
        let state = ParserState::default();
        let _ = parser.decode_str(&config, &state, Str::from(format!("{prefix}{raw}")));
        let _ = parser.decode_str(&config, &state, Str::from(format!("{prefix}{payload}")));
        // A binary event header, then whatever binary frames arrive.
        let state = ParserState::default();
        let _ = parser.decode_str(&config, &state, Str::from(format!("5{}-[\"e\",{{\"_placeholder\":true,\"num\":0}},{payload}]", attachments.len().max(1))));
        for frame in attachments {
            let _ = parser.decode_bin(&config, &state, Bytes::from(frame));
        }
    }

    #[test]
    fn chat_events_never_panic(event in event_name(CHAT_EVENTS), data in json()) {
        let _ = ChatCommand::parse(&event, data);
    }

    #[test]
    fn call_events_never_panic(event in event_name(CALL_EVENTS), data in json()) {
        let _ = CallCommand::parse(&event, data);
    }

    #[test]
    fn small_parsers_never_panic(raw in ".*", hops in vec(".{0,40}", 0..4)) {
        let _ = crate::auth::strip_bearer(&raw);
        let _ = crate::auth::parse_refresh_token_for_tests(&raw);
        let peer: std::net::IpAddr = [127, 0, 0, 1].into();
        let trusted = vec!["127.0.0.0/8".parse().unwrap()];
        let _ = crate::http::client_address_for_tests(peer, hops.iter().map(String::as_str), &trusted);
    }
}

/// The real router over a fresh SQLite store, with one registered user.
struct Rest {
    router: axum::Router,
    token: String,
    conversation: String,
    message: String,
    // Kept for the test's lifetime (its store and services back the router).
    _server: crate::startup::Server,
    _dir: tempdir::Dir,
}

mod tempdir {
    /// A directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            let path = std::env::temp_dir().join(format!("quckchat-proptest-{}", uuid::Uuid::now_v7()));
            std::fs::create_dir_all(&path).expect("temp dir");
            Self(path)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

async fn call(
    router: &axum::Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path).header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req.body(Body::from(body)).expect("request");
    let res = router.clone().oneshot(req).await.expect("infallible");
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap_or_default();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn rest() -> Rest {
    let dir = tempdir::Dir::new();
    let config = crate::config::Config {
        host: [127, 0, 0, 1].into(),
        port: 0,
        database_url: format!("sqlite://{}/q.db", dir.0.display()),
        data_dir: dir.0.clone(),
        jwt_secret: Some("proptest".into()),
        auth_rate_per_address: crate::config::Rule { per_minute: 0, burst: 0 },
        auth_rate_per_username: crate::config::Rule { per_minute: 0, burst: 0 },
        ..crate::config::Config::default()
    };
    let server = crate::startup::Server::build(config).await.expect("server");
    let router = server.router_for_tests();
    let json = |v: Value| serde_json::to_vec(&v).unwrap();
    let body = json(serde_json::json!({ "username": "prop_alice", "password": "correct horse" }));
    let (status, alice) = call(&router, Method::POST, "/api/v1/auth/register", None, body).await;
    assert_eq!(status, StatusCode::CREATED, "{alice}");
    let body = json(serde_json::json!({ "username": "prop_bob", "password": "correct horse" }));
    let (_, bob) = call(&router, Method::POST, "/api/v1/auth/register", None, body).await;
    let token = alice["accessToken"].as_str().unwrap().to_string();
    let body = json(serde_json::json!({ "type": "group", "name": "g", "participants": [bob["user"]["id"]] }));
    let (status, conv) = call(&router, Method::POST, "/api/v1/conversations", Some(&token), body).await;
    assert_eq!(status, StatusCode::CREATED, "{conv}");
    let conversation = conv["id"].as_str().unwrap().to_string();
    Rest { router, token, conversation, message: uuid::Uuid::now_v7().to_string(), _server: server, _dir: dir }
}

#[test]
fn rest_bodies_and_paths_never_fail_the_server() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let rest = runtime.block_on(rest());
    let rest = Rc::new(rest);
    let routes: Vec<(Method, String)> = vec![
        (Method::POST, "/api/v1/auth/register".into()),
        (Method::POST, "/api/v1/auth/login".into()),
        (Method::POST, "/api/v1/auth/refresh".into()),
        (Method::PUT, "/api/v1/users/me".into()),
        (Method::POST, "/api/v1/conversations".into()),
        (Method::PUT, format!("/api/v1/conversations/{}", rest.conversation)),
        (Method::POST, format!("/api/v1/conversations/{}/members", rest.conversation)),
        (Method::PUT, format!("/api/v1/messages/{}", rest.message)),
    ];
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases: 256, ..ProptestConfig::default() });
    let strategy = (
        proptest::sample::select(routes),
        prop_oneof![json().prop_map(|v| serde_json::to_vec(&v).unwrap()), vec(any::<u8>(), 0..256)],
        prop_oneof![Just(String::new()), "[ -~]{0,24}"],
        ".{0,16}",
    );
    runner
        .run(&strategy, |((method, path), body, query, segment)| {
            let rest = rest.clone();
            let (m, p) = (method.clone(), path.clone());
            let (status, status2) = runtime.block_on(async move {
                let (method, path) = (m, p);
                let path_q = if query.is_empty() { path.clone() } else { format!("{path}?{}", urlencode(&query)) };
                let (status, _) = call(&rest.router, method.clone(), &path_q, Some(&rest.token), body.clone()).await;
                // And an arbitrary id segment where the route has one.
                let odd =
                    format!("/api/v1/messages/conversation/{}?afterSeq={}", urlencode(&segment), urlencode(&query));
                let (status2, _) = call(&rest.router, Method::GET, &odd, Some(&rest.token), Vec::new()).await;
                (status, status2)
            });
            prop_assert!(!status.is_server_error(), "{method} {path}: {status}");
            prop_assert!(!status2.is_server_error(), "GET with segment: {status2}");
            Ok(())
        })
        .unwrap();
    // The server still answers.
    let (status, _) = runtime.block_on(call(&rest.router, Method::GET, "/api/v1/health", None, Vec::new()));
    assert_eq!(status, StatusCode::OK);
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
