//! `quckchat-bench-bare`: bare socketioxide 0.18 on axum 0.8 doing exactly what the Node
//! baseline (`bench/baseline-node/server.js`, in-memory store) does for the bench
//! scenarios, and nothing more: HS256 handshake with a session check, conversation rooms,
//! `message:send` → in-memory append (next `seq`) → `message:new` to the room → ack,
//! typing, and `GET /api/v1/messages/conversation/{id}?afterSeq=` for catch-up. It shows
//! what the framework costs by itself, apart from QuckChat's own work (store, lanes,
//! presence, metrics, rate limits).
//!
//! Environment: `HOST`, `PORT` (0: any), `FIXTURE` (the load generator's fixture JSON),
//! `JWT_SECRET`, `PING_INTERVAL_MS`, `PING_TIMEOUT_MS`, `SOCKET_BUFFER_PACKETS`, `BARE_NODELAY`
//! (`0`: leave Nagle on, as plain `axum::serve` does).
//! Prints `bare listening on http://ADDR` on stdout.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::{SocketIo, TransportType};

#[derive(Deserialize)]
struct Fixture {
    users: Vec<FixtureUser>,
    conversations: Vec<FixtureConversation>,
}
#[derive(Deserialize)]
struct FixtureUser {
    id: String,
    sid: String,
}
#[derive(Deserialize)]
struct FixtureConversation {
    id: String,
    members: Vec<String>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    sid: String,
}

struct Conversation {
    members: HashSet<String>,
    last_seq: u64,
    recent: VecDeque<Value>,
}

struct Store {
    sessions: HashMap<String, String>,
    conversations_of: HashMap<String, Vec<String>>,
    conversations: Mutex<HashMap<String, Conversation>>,
    key: jsonwebtoken::DecodingKey,
    validation: jsonwebtoken::Validation,
}

impl Store {
    fn verify(&self, raw: &str) -> Option<Claims> {
        let raw = raw.trim();
        let token = match raw.get(..7) {
            Some(p) if p.eq_ignore_ascii_case("bearer ") => raw[7..].trim(),
            _ => raw,
        };
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).ok()?.claims;
        (self.sessions.get(&claims.sid) == Some(&claims.sub)).then_some(claims)
    }
}

#[derive(Clone)]
struct User(String);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendPayload {
    conversation_id: String,
    content: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    client_message_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConversationRef {
    conversation_id: String,
}

fn fail(code: &str, message: &str) -> Value {
    json!({"success": false, "error": {"code": code, "message": message}})
}

fn env_ms(name: &str, default: u64) -> Duration {
    Duration::from_millis(std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fixture: Fixture = serde_json::from_slice(&std::fs::read(std::env::var("FIXTURE")?)?)?;
    let secret = std::env::var("JWT_SECRET").unwrap_or_else(|_| "bench".into());
    let mut conversations_of: HashMap<String, Vec<String>> = HashMap::new();
    let mut conversations = HashMap::new();
    for c in fixture.conversations {
        for m in &c.members {
            conversations_of.entry(m.clone()).or_default().push(c.id.clone());
        }
        conversations.insert(
            c.id,
            Conversation { members: c.members.into_iter().collect(), last_seq: 0, recent: VecDeque::new() },
        );
    }
    let store = Arc::new(Store {
        sessions: fixture.users.into_iter().map(|u| (u.sid, u.id)).collect(),
        conversations_of,
        conversations: Mutex::new(conversations),
        key: jsonwebtoken::DecodingKey::from_secret(secret.as_bytes())?,
        validation: jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256),
    });

    let buffer = std::env::var("SOCKET_BUFFER_PACKETS").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    let (layer, io) = SocketIo::builder()
        .ping_interval(env_ms("PING_INTERVAL_MS", 10_000))
        .ping_timeout(env_ms("PING_TIMEOUT_MS", 30_000))
        .max_buffer_size(buffer)
        .transports([TransportType::Websocket])
        .build_layer();

    // /chat
    let handshake = {
        let store = store.clone();
        move |s: SocketRef, TryData(auth): TryData<Value>| {
            let store = store.clone();
            async move {
                let token = auth.ok().and_then(|a| a.get("token").and_then(Value::as_str).map(str::to_owned));
                let claims = token.and_then(|t| store.verify(&t)).ok_or("unauthorized")?;
                let mut rooms = vec![format!("user:{}", claims.sub), format!("session:{}", claims.sid)];
                if let Some(ids) = store.conversations_of.get(&claims.sub) {
                    rooms.extend(ids.iter().map(|c| format!("conv:{c}")));
                }
                s.join(rooms);
                s.extensions.insert(User(claims.sub));
                Ok::<(), &'static str>(())
            }
        }
    };
    let on_connect = {
        let store = store.clone();
        move |s: SocketRef| {
            let store = store.clone();
            async move {
                let Some(User(user)) = s.extensions.get::<User>() else { return };
                let (st, me) = (store.clone(), user.clone());
                s.on("message:send", async move |s: SocketRef, TryData(p): TryData<SendPayload>, ack: AckSender| {
                    let Ok(p) = p else { return drop(ack.send(&fail("invalid_payload", "bad payload"))) };
                    if p.content.chars().count() > 10_000 {
                        return drop(ack.send(&fail("invalid_payload", "content too long")));
                    }
                    let message = {
                        let mut convs = st.conversations.lock().unwrap();
                        let Some(c) = convs.get_mut(&p.conversation_id).filter(|c| c.members.contains(&me)) else {
                            drop(convs);
                            return drop(ack.send(&fail("forbidden", "not a member of this conversation")));
                        };
                        c.last_seq += 1;
                        let m = json!({
                            "id": uuid::Uuid::now_v7(), "conversationId": p.conversation_id, "senderId": me,
                            "seq": c.last_seq, "type": p.kind.unwrap_or_else(|| "text".into()), "content": p.content,
                            "attachments": [], "replyTo": null, "clientMessageId": p.client_message_id,
                            "reactions": [], "readBy": [], "createdAt": chrono::Utc::now(),
                            "editedAt": null, "deletedAt": null,
                        });
                        c.recent.push_back(m.clone());
                        if c.recent.len() > 10_000 {
                            c.recent.pop_front();
                        }
                        m
                    };
                    let room = format!("conv:{}", p.conversation_id);
                    let _ = s.within(room).emit("message:new", &message).await;
                    let _ = ack.send(&json!({"success": true, "message": message}));
                });
                for event in ["user:typing", "user:stop-typing"] {
                    let (st, me) = (store.clone(), user.clone());
                    s.on(event, async move |s: SocketRef, TryData(p): TryData<ConversationRef>, ack: AckSender| {
                        let Ok(p) = p else { return drop(ack.send(&fail("invalid_payload", "bad payload"))) };
                        let member = st
                            .conversations
                            .lock()
                            .unwrap()
                            .get(&p.conversation_id)
                            .is_some_and(|c| c.members.contains(&me));
                        if !member {
                            return drop(ack.send(&fail("forbidden", "not a member of this conversation")));
                        }
                        let body = json!({"userId": me, "conversationId": p.conversation_id});
                        let _ = s
                            .within(format!("conv:{}", p.conversation_id))
                            .except(format!("user:{me}"))
                            .emit(event, &body)
                            .await;
                        let _ = ack.send(&json!({"success": true, "conversationId": p.conversation_id}));
                    });
                }
            }
        }
    };
    io.ns("/chat", on_connect.with(handshake));

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct After {
        after_seq: Option<u64>,
        limit: Option<usize>,
    }
    let rest = {
        let store = store.clone();
        move |Path(id): Path<String>, Query(q): Query<After>, headers: HeaderMap| {
            let store = store.clone();
            async move {
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
                let Some(claims) = store.verify(auth) else { return (StatusCode::UNAUTHORIZED, Json(json!({}))) };
                let convs = store.conversations.lock().unwrap();
                let Some(c) = convs.get(&id).filter(|c| c.members.contains(&claims.sub)) else {
                    return (StatusCode::NOT_FOUND, Json(json!({})));
                };
                let after = q.after_seq.unwrap_or(0);
                let data: Vec<Value> = c
                    .recent
                    .iter()
                    .filter(|m| m["seq"].as_u64().is_some_and(|s| s > after))
                    .take(q.limit.unwrap_or(50).min(100))
                    .cloned()
                    .collect();
                (StatusCode::OK, Json(json!({ "data": data })))
            }
        }
    };
    let app = Router::new()
        .route("/api/v1/messages/conversation/{id}", get(rest))
        .route("/api/v1/health", get(async || Json(json!({"status": "ok"}))))
        .layer(layer);

    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "0".into());
    let listener = tokio::net::TcpListener::bind(format!("{host}:{port}")).await?;
    let mut out = std::io::stdout();
    writeln!(out, "bare listening on http://{}", listener.local_addr()?)?;
    out.flush()?;
    // TCP_NODELAY, as Node's http server does by default (BARE_NODELAY=0: Nagle stays on,
    // which is what `axum::serve` does unless told otherwise).
    if std::env::var("BARE_NODELAY").as_deref() == Ok("0") {
        axum::serve(listener, app).await?;
    } else {
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await?;
    }
    Ok(())
}
