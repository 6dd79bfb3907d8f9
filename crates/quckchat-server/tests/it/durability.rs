//! Durability of acknowledged messages (README, "Durability"): the real `quckchat` binary,
//! a stream of sends at ~5,000 messages/s, `kill -9` in the middle of it, a restart on the
//! same data, and every acked message found exactly once with its acked `seq`, each
//! conversation's `seq` gap-free. Runs on whatever store the suite runs on (SQLite by
//! default; PostgreSQL or MongoDB with `QUCKCHAT_TEST_DATABASE`).

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use quckchat_sio_client::{Client, ConnectOptions};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::helpers::{JWT_SECRET, PASSWORD, T, TestDir, str_of, test_database_url};

/// Conversations written to at once (one sender socket each).
const SENDERS: usize = 25;
/// Each sender's rate: SENDERS × this = the offered load.
const PER_SENDER_PER_SEC: u64 = 200;
/// The longest the stream runs before the kill.
const KILL_AFTER: Duration = Duration::from_secs(15);
/// Sends outstanding per socket at most.
const IN_FLIGHT: usize = 64;
/// Acked messages to see before the kill (so the kill lands mid-stream, under load).
const ACKED_BEFORE_KILL: usize = 2_000;

struct Process {
    child: Child,
    base: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

async fn start(dir: &TestDir) -> Process {
    let port = free_port();
    // `QUCKCHAT_BIN` runs another build (the release one, to send at the full rate); by
    // default the debug binary of this test build, which acks about 1,000 messages/s here.
    let bin = std::env::var("QUCKCHAT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_quckchat").to_string());
    let child = Command::new(bin)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("DATABASE_URL", test_database_url(dir.path()))
        .env("DATA_DIR", dir.path())
        .env("JWT_SECRET", JWT_SECRET)
        .env("RUST_LOG", "warn")
        .env("AUTH_RATE_PER_MIN", "0")
        .env("AUTH_USER_RATE_PER_MIN", "0")
        .env("RATE_LIMIT_MESSAGES_PER_SEC", "100000")
        .env("RATE_LIMIT_MESSAGE_BURST", "100000")
        .env("RATE_LIMIT_USER_MESSAGES_PER_SEC", "100000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the quckchat binary");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tick.tick().await;
        let up = http.get(format!("{base}/api/v1/health")).send().await.is_ok_and(|r| r.status() == StatusCode::OK);
        if up {
            break;
        }
        assert!(Instant::now() < deadline, "the server did not answer /health within 30 s");
    }
    Process { child, base }
}

async fn post(http: &reqwest::Client, url: String, token: Option<&str>, body: Value) -> Value {
    let mut request = http.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.expect("json")
}

/// One acked message: its conversation, id and seq.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Acked {
    conversation: String,
    id: String,
    seq: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acked_messages_survive_kill_9_under_load() {
    let dir = TestDir::new();
    let mut server = start(&dir).await;
    let http = reqwest::Client::new();
    let api = |path: &str| format!("{}/api/v1{path}", server.base);

    // SENDERS pairs, one single conversation each; the senders' sockets.
    let mut conversations = Vec::new();
    let mut clients = Vec::new();
    let mut reader_token = HashMap::new();
    for i in 0..SENDERS {
        let run = uuid::Uuid::now_v7().simple().to_string();
        let a = post(
            &http,
            api("/auth/register"),
            None,
            json!({ "username": format!("ka{i}{}", &run[20..]), "password": PASSWORD }),
        )
        .await;
        let b = post(
            &http,
            api("/auth/register"),
            None,
            json!({ "username": format!("kb{i}{}", &run[20..]), "password": PASSWORD }),
        )
        .await;
        let token = str_of(&a["accessToken"]);
        let conversation = post(
            &http,
            api("/conversations"),
            Some(&token),
            json!({ "type": "single", "participants": [str_of(&b["user"]["id"])] }),
        )
        .await;
        let conversation = str_of(&conversation["id"]);
        let client = Client::connect(
            ConnectOptions::new(server.base.clone(), "/chat")
                .timeout(T)
                .auth(json!({ "token": format!("Bearer {token}") })),
        )
        .await
        .expect("connect");
        reader_token.insert(conversation.clone(), token);
        conversations.push(conversation);
        clients.push(Arc::new(client));
    }

    // Every sender paces its sends and records each successful ack; sends stop mattering
    // once the process is gone (their acks never come).
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let reached = Arc::new(tokio::sync::Notify::new());
    let mut senders = Vec::new();
    for (client, conversation) in clients.iter().zip(&conversations) {
        let (client, conversation) = (client.clone(), conversation.clone());
        let (acked, count, reached) = (acked.clone(), count.clone(), reached.clone());
        senders.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / PER_SENDER_PER_SEC));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut in_flight = tokio::task::JoinSet::new();
            // At most IN_FLIGHT sends outstanding per socket: the server runs a socket's
            // events one at a time, and a deeper queue is refused as too fast.
            let window = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
            for n in 0..100_000u64 {
                tick.tick().await;
                let Ok(permit) = window.clone().acquire_owned().await else { break };
                if !client.is_connected() {
                    break;
                }
                let (client, conversation) = (client.clone(), conversation.clone());
                let (acked, count, reached) = (acked.clone(), count.clone(), reached.clone());
                in_flight.spawn(async move {
                    let payload =
                        json!({ "conversationId": conversation, "content": format!("m{n}"), "clientMessageId": format!("k-{n}") });
                    let ack = client.emit_with_ack("message:send", payload, Duration::from_secs(10)).await;
                    drop(permit);
                    if let Ok(ack) = ack
                        && ack["success"] == json!(true)
                    {
                        let m = &ack["message"];
                        acked.lock().await.push(Acked { conversation, id: str_of(&m["id"]), seq: m["seq"].as_i64().expect("seq") });
                        if count.fetch_add(1, Ordering::SeqCst) + 1 == ACKED_BEFORE_KILL {
                            reached.notify_one();
                        }
                    }
                });
            }
            while in_flight.join_next().await.is_some() {}
        }));
    }

    // Kill once ACKED_BEFORE_KILL are acked, or after KILL_AFTER on a slow store (the
    // Python MongoDB stand-in stores a few dozen a second), as long as the stream runs.
    let started = Instant::now();
    let _ = tokio::time::timeout(KILL_AFTER, reached.notified()).await;
    let acked_so_far = count.load(Ordering::SeqCst);
    assert!(acked_so_far >= 20, "only {acked_so_far} messages were acked in {KILL_AFTER:?}");
    let rate = acked_so_far as f64 / started.elapsed().as_secs_f64();
    server.child.start_kill().expect("kill -9");
    server.child.wait().await.expect("the process ends");
    for sender in senders {
        sender.await.expect("sender task");
    }
    let acked = acked.lock().await.clone();
    eprintln!(
        "MEASURED: {} messages acked before kill -9 (~{rate:.0} acked/s offered {} msgs/s)",
        acked.len(),
        SENDERS as u64 * PER_SENDER_PER_SEC
    );

    // Back on the same data: every acked message is there once, with its seq, and each
    // conversation is 1..=n without gaps.
    let server = start(&dir).await;
    let mut found_ids = HashSet::new();
    for conversation in &conversations {
        let token = &reader_token[conversation];
        let mut after = 0;
        let mut seqs = Vec::new();
        loop {
            let page: Value = http
                .get(format!("{}/api/v1/messages/conversation/{conversation}?afterSeq={after}&limit=200", server.base))
                .bearer_auth(token)
                .send()
                .await
                .expect("history")
                .json()
                .await
                .expect("json");
            let page = page["data"].as_array().cloned().expect("a page of messages in data");
            if page.is_empty() {
                break;
            }
            for m in &page {
                let seq = m["seq"].as_i64().expect("seq");
                seqs.push(seq);
                assert!(found_ids.insert((conversation.clone(), str_of(&m["id"]), seq)), "message {m} listed twice");
                after = seq;
            }
        }
        let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
        assert_eq!(seqs, expected, "conversation {conversation}: seq is gap-free from 1");
    }
    for a in &acked {
        assert!(
            found_ids.contains(&(a.conversation.clone(), a.id.clone(), a.seq)),
            "acked message {a:?} is missing after kill -9 and restart"
        );
    }
    drop(server);
}
