//! The engine end to end: a real HTTP server on port 0, real WebSockets, QuckChat's Rust
//! Socket.IO client (and tungstenite for what a well-behaved client never does).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use quckchat_sio_client::{Client, ConnectOptions, DisconnectKind, Error};
use quckchat_sio_server::engine::{
    AckSender, BoxFuture, Broadcast, Config, DisconnectReason, Engine, Namespace, Refusal, Socket,
};
use serde_json::json;
use serde_json::value::RawValue;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(5);

/// A namespace for the tests: `auth.token` must be `good`; `echo` acks its arguments;
/// `join` joins a room; `shout` broadcasts to a room except the sender's room `me:<id>`;
/// `kick` disconnects the sender. Disconnect reasons are recorded.
#[derive(Clone, Default)]
struct Chat {
    gone: Arc<Mutex<Vec<DisconnectReason>>>,
    left: Arc<tokio::sync::Notify>,
    /// A connect with `auth.slow` tells `entered`, then waits for `gate`.
    entered: Arc<tokio::sync::Notify>,
    gate: Arc<tokio::sync::Notify>,
    connects: Arc<std::sync::atomic::AtomicUsize>,
    engine: Arc<Mutex<Option<Engine>>>,
}

impl Namespace for Chat {
    fn connect(&self, socket: Socket, auth: Option<String>) -> BoxFuture<Result<(), Refusal>> {
        let (entered, gate) = (self.entered.clone(), self.gate.clone());
        self.connects.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            let auth: serde_json::Value =
                auth.as_deref().map(serde_json::from_str).transpose().ok().flatten().unwrap_or_default();
            // socket.io-client 2.x sends no auth: its token comes in the query.
            let query_token = socket.query().split('&').any(|kv| kv == "token=good")
                || socket.header("authorization") == Some("Bearer good");
            if auth["token"] != "good" && !query_token {
                return Err(Refusal { message: "unauthorized".into(), data: None });
            }
            socket.set_data(auth["name"].as_str().unwrap_or("?").to_string());
            if auth["slow"] == true {
                entered.notify_one();
                gate.notified().await;
            }
            Ok(())
        })
    }

    fn event(&self, socket: &Socket, event: &str, args: &[&RawValue], ack: Option<AckSender>) {
        let joined = args.iter().map(|a| a.get()).collect::<Vec<_>>().join(",");
        match event {
            "echo" => {
                if let Some(ack) = ack {
                    ack.send(&joined).unwrap();
                }
            }
            "join" => {
                let room: String = serde_json::from_str(args[0].get()).unwrap();
                socket.join(&room);
                socket.join(&format!("me:{}", socket.id()));
                if let Some(ack) = ack {
                    ack.send("true").unwrap();
                }
            }
            "shout" => {
                let room: String = serde_json::from_str(args[0].get()).unwrap();
                let name = socket.data::<String>().cloned().unwrap_or_default();
                let to = Broadcast { rooms: vec![room], except: vec![format!("me:{}", socket.id())] };
                let engine = self.engine.lock().unwrap().clone().unwrap();
                let delivered = engine.broadcast("/chat", &to, "heard", &serde_json::to_string(&name).unwrap());
                if let Some(ack) = ack {
                    ack.send(&delivered.sent.to_string()).unwrap();
                }
            }
            "kick" => socket.disconnect(),
            "ask" => {
                // Asks the client a question and reports its answer (or why there was none).
                let socket = socket.clone();
                tokio::spawn(async move {
                    match socket.emit_with_ack("question", "41", Duration::from_millis(300)).await {
                        Ok(ack) => socket.emit("answered", &ack.args),
                        Err(e) => socket.emit("unanswered", &serde_json::to_string(&e.to_string()).unwrap()),
                    }
                });
            }
            _ => {}
        }
    }

    fn binary_event(
        &self,
        socket: &Socket,
        event: &str,
        args: &[&RawValue],
        attachments: Vec<bytes::Bytes>,
        ack: Option<AckSender>,
    ) {
        // `bin` sends its arguments and attachments back, as an event and in its ack.
        if event != "bin" {
            return;
        }
        let args = args.iter().map(|a| a.get()).collect::<Vec<_>>().join(",");
        let _ = socket.emit_binary("bin-back", &args, &attachments);
        if let Some(ack) = ack {
            let _ = ack.send_binary(&args, &attachments);
        }
    }

    fn disconnect(&self, _socket: &Socket, reason: DisconnectReason) {
        self.gone.lock().unwrap().push(reason);
        self.left.notify_one();
    }
}

struct Server {
    url: String,
    chat: Chat,
    engine: Engine,
}

async fn server(config: Config) -> Server {
    let engine = Engine::new(config);
    let chat = Chat::default();
    *chat.engine.lock().unwrap() = Some(engine.clone());
    engine.namespace("/chat", chat.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = engine.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let engine = served.clone();
            // Upgrades straight from the socket; anything else through hyper.
            tokio::spawn(async move { engine.serve_connection(stream, "/socket.io/").await });
        }
    });
    Server { url, chat, engine }
}

fn opts(url: &str, token: &str, name: &str) -> ConnectOptions {
    ConnectOptions::new(url, "/chat").auth(json!({ "token": token, "name": name })).timeout(WAIT)
}

#[tokio::test]
async fn a_client_connects_and_gets_its_acks() {
    let s = server(Config::default()).await;
    let client = Client::connect(opts(&s.url, "good", "ann")).await.expect("connected");
    assert_ne!(client.sid(), client.engine_sid(), "the Socket.IO id is not the Engine.IO sid");
    let answer = client.emit_args_with_ack("echo", vec![json!({"a": [1, "é"]}), json!(2)], WAIT).await.unwrap();
    assert_eq!(answer, vec![json!({"a": [1, "é"]}), json!(2)]);
    assert_eq!(s.engine.connections(), 1);
}

#[tokio::test]
async fn a_refused_client_gets_the_reason() {
    let s = server(Config::default()).await;
    match Client::connect(opts(&s.url, "bad", "eve")).await {
        Err(Error::ConnectRefused(payload)) => assert_eq!(payload, json!({"message": "unauthorized"})),
        other => panic!("expected a refusal, got {other:?}"),
    }
    match Client::connect(ConnectOptions::new(&s.url, "/nope").timeout(WAIT)).await {
        Err(Error::ConnectRefused(payload)) => assert_eq!(payload, json!({"message": "Invalid namespace"})),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_broadcast_reaches_the_room_except_the_excluded() {
    let s = server(Config::default()).await;
    let mut ann = Client::connect(opts(&s.url, "good", "ann")).await.unwrap();
    let mut bob = Client::connect(opts(&s.url, "good", "bob")).await.unwrap();
    let mut cat = Client::connect(opts(&s.url, "good", "cat")).await.unwrap();
    for c in [&ann, &bob] {
        assert_eq!(c.emit_with_ack("join", json!("r1"), WAIT).await.unwrap(), json!(true));
    }
    assert_eq!(cat.emit_with_ack("join", json!("r2"), WAIT).await.unwrap(), json!(true));
    // ann shouts to r1: bob hears it, ann (excluded) and cat (elsewhere) do not.
    assert_eq!(ann.emit_with_ack("shout", json!("r1"), WAIT).await.unwrap(), json!(1));
    assert_eq!(bob.expect("heard", WAIT).await.unwrap(), json!("ann"));
    // cat shouts to r1 from outside: both members hear it, in order after ann's.
    assert_eq!(cat.emit_with_ack("shout", json!("r1"), WAIT).await.unwrap(), json!(2));
    assert_eq!(bob.expect("heard", WAIT).await.unwrap(), json!("cat"));
    assert_eq!(ann.expect("heard", WAIT).await.unwrap(), json!("cat"));
    assert!(ann.take_buffered().is_empty());
    assert!(matches!(cat.next_event(Duration::from_millis(200)).await, Err(Error::Timeout)));
}

#[tokio::test]
async fn the_server_can_disconnect_a_socket() {
    let s = server(Config::default()).await;
    let mut ann = Client::connect(opts(&s.url, "good", "ann")).await.unwrap();
    ann.emit("kick", json!(null)).await.unwrap();
    assert_eq!(ann.wait_disconnect(WAIT).await.unwrap(), DisconnectKind::ServerDisconnect);
    assert_eq!(*s.chat.gone.lock().unwrap(), vec![DisconnectReason::ServerNamespaceDisconnect]);
}

/// A raw client: the open packet, then a namespace connect, then silence (no pongs).
#[tokio::test]
async fn a_client_that_does_not_answer_pings_is_dropped() {
    let config = Config {
        ping_interval: Duration::from_millis(100),
        ping_timeout: Duration::from_millis(100),
        ..Config::default()
    };
    let s = server(config).await;
    let ws_url = format!("{}/socket.io/?EIO=4&transport=websocket", s.url.replace("http", "ws"));
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    let open = ws.next().await.unwrap().unwrap().into_text().unwrap();
    assert!(open.starts_with(r#"0{"sid":""#), "{open}");
    assert!(open.contains(r#""pingInterval":100"#), "{open}");
    ws.send(Message::text(r#"40/chat,{"token":"good"}"#)).await.unwrap();
    let connected = ws.next().await.unwrap().unwrap().into_text().unwrap();
    assert!(connected.starts_with(r#"40/chat,{"sid":""#), "{connected}");
    let mut pings = 0;
    let closed = tokio::time::timeout(WAIT, async {
        while let Some(Ok(message)) = ws.next().await {
            match message {
                Message::Text(t) if t.as_str() == "2" => pings += 1,
                Message::Close(_) => return true,
                _ => {}
            }
        }
        true
    })
    .await
    .expect("closed in time");
    assert!(closed);
    assert_eq!(pings, 1, "one ping, unanswered");
    // The namespace saw why.
    tokio::time::timeout(WAIT, s.chat.left.notified()).await.expect("the namespace is told");
    assert_eq!(*s.chat.gone.lock().unwrap(), vec![DisconnectReason::PingTimeout]);
}

#[tokio::test]
async fn a_client_that_answers_pings_stays() {
    let config = Config {
        ping_interval: Duration::from_millis(50),
        ping_timeout: Duration::from_millis(200),
        ..Config::default()
    };
    let s = server(config).await;
    let ws_url = format!("{}/socket.io/?EIO=4&transport=websocket", s.url.replace("http", "ws"));
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    ws.next().await.unwrap().unwrap();
    ws.send(Message::text(r#"40/chat,{"token":"good"}"#)).await.unwrap();
    ws.next().await.unwrap().unwrap();
    // Five pings, each answered: five intervals pass and the connection is still served.
    let mut pings = 0;
    while pings < 5 {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("a ping in time").unwrap().unwrap() {
            Message::Text(t) if t.as_str() == "2" => {
                pings += 1;
                ws.send(Message::text("3")).await.unwrap();
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    ws.send(Message::text(r#"42/chat,7["echo","still here"]"#)).await.unwrap();
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("the ack in time").unwrap().unwrap() {
            Message::Text(t) if t.as_str() == "2" => ws.send(Message::text("3")).await.unwrap(),
            Message::Text(t) => {
                assert_eq!(t.as_str(), r#"43/chat,7["still here"]"#);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(s.chat.gone.lock().unwrap().is_empty());
}

#[tokio::test]
async fn requests_the_engine_does_not_serve_are_refused() {
    let s = server(Config::default()).await;
    let http = reqwest::Client::new();
    for (query, body) in [
        ("EIO=2&transport=websocket", r#"{"code":5,"message":"Unsupported protocol version"}"#),
        ("EIO=4&transport=carrier-pigeon", r#"{"code":0,"message":"Transport unknown"}"#),
        ("EIO=4&transport=websocket&sid=nope", r#"{"code":1,"message":"Session ID unknown"}"#),
        ("EIO=4&transport=websocket", r#"{"code":3,"message":"Bad request"}"#),
    ] {
        let response = http.get(format!("{}/socket.io/?{query}", s.url)).send().await.unwrap();
        assert_eq!(response.status(), 400, "{query}");
        assert_eq!(response.text().await.unwrap(), body, "{query}");
    }
}

/// An upgrade request that arrives in two pieces is not whole when the engine peeks: it is
/// left unread for the HTTP server, which upgrades it all the same.
#[tokio::test]
async fn an_upgrade_split_across_segments_goes_through_the_http_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = server(Config::default()).await;
    let addr = s.url.trim_start_matches("http://");
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let request = "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let (first, rest) = request.split_at(40);
    tcp.write_all(first.as_bytes()).await.unwrap();
    tcp.flush().await.unwrap();
    // The server has had a chance to peek at the first piece alone: wait until it
    // answers nothing to it, then send the rest.
    let mut probe = [0u8; 1];
    assert!(tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut probe)).await.is_err());
    tcp.write_all(rest.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tokio::time::timeout(WAIT, tcp.read_exact(&mut byte)).await.unwrap().unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "{head}");
    // The engine's open packet follows: a text frame starting `0{"sid":`.
    let mut frame = [0u8; 10];
    tokio::time::timeout(WAIT, tcp.read_exact(&mut frame)).await.unwrap().unwrap();
    assert_eq!(frame[0], 0x81);
    assert_eq!(&frame[2..10], br#"0{"sid":"#);
}

/// A whole upgrade request is taken by the engine itself (no HTTP server involved).
#[tokio::test]
async fn a_whole_upgrade_is_answered_straight_from_the_socket() {
    let engine = Engine::new(Config::default());
    engine.namespace("/chat", Chat::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::spawn(async move {
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("upgraded");
        ws.next().await.unwrap().unwrap().into_text().unwrap().to_string()
    });
    let (stream, _) = listener.accept().await.unwrap();
    let left = engine.serve_direct(stream, "/socket.io/", Box::new(())).await;
    assert!(left.is_none(), "taken by the engine, not handed to HTTP");
    let open = tokio::time::timeout(WAIT, client).await.unwrap().unwrap();
    assert!(open.starts_with(r#"0{"sid":""#), "{open}");
}

/// Opens a raw WebSocket and reads the open packet.
async fn raw(s: &Server) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>> {
    let ws_url = format!("{}/socket.io/?EIO=4&transport=websocket", s.url.replace("http", "ws"));
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    ws.next().await.unwrap().unwrap();
    ws
}

/// The application accepted a socket whose client had already gone: it is told the
/// socket went, as for any socket it accepted.
#[tokio::test]
async fn a_socket_accepted_after_its_client_left_is_reported_gone() {
    let s = server(Config::default()).await;
    let mut ws = raw(&s).await;
    ws.send(Message::text(r#"40/chat,{"token":"good","slow":true}"#)).await.unwrap();
    tokio::time::timeout(WAIT, s.chat.entered.notified()).await.expect("the handler runs");
    ws.close(None).await.unwrap();
    drop(ws);
    // The connection is gone before the handler answers.
    tokio::time::timeout(WAIT, async {
        while s.engine.connections() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the connection ends");
    s.chat.gate.notify_one();
    tokio::time::timeout(WAIT, s.chat.left.notified()).await.expect("the namespace is told");
    assert_eq!(*s.chat.gone.lock().unwrap(), vec![DisconnectReason::TransportClose]);
}

/// The next text message, within [`WAIT`].
async fn next_text(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
) -> String {
    tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap().into_text().unwrap().to_string()
}

/// A second CONNECT to the same namespace on one connection runs nothing and adds nothing.
#[tokio::test]
async fn a_repeated_connect_is_ignored() {
    let s = server(Config::default()).await;
    let mut ws = raw(&s).await;
    for _ in 0..3 {
        ws.send(Message::text(r#"40/chat,{"token":"good"}"#)).await.unwrap();
    }
    assert!(next_text(&mut ws).await.starts_with("40/chat,"));
    let mut connected = 1;
    ws.send(Message::text(r#"42/chat,1["echo","after"]"#)).await.unwrap();
    loop {
        let text = next_text(&mut ws).await;
        if text.starts_with("40/chat,") {
            connected += 1;
        } else if text.starts_with("43/chat,1") {
            break;
        }
    }
    // The three CONNECTs were read before the event: whatever they did is done by now,
    // except a handler still running; one ran.
    assert_eq!(connected, 1);
    assert_eq!(s.chat.connects.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// socket.io-client 2.x's protocol: Engine.IO v3, Socket.IO v4 (the client pings, the
/// socket id is `nsp#sid`, the token in the query).
#[tokio::test]
async fn a_v3_client_connects_with_its_query_and_gets_acks() {
    let s = server(Config::default()).await;
    let client = Client::connect(ConnectOptions::new(&s.url, "/chat").eio(3).query("token", "good").timeout(WAIT))
        .await
        .expect("connected");
    assert_eq!(client.sid(), client.engine_sid(), "the v2 client takes the engine sid for its own");
    let answer = client.emit_with_ack("echo", json!({"v": 3}), WAIT).await.unwrap();
    assert_eq!(answer, json!({"v": 3}));
    match Client::connect(ConnectOptions::new(&s.url, "/chat").eio(3).query("token", "bad").timeout(WAIT)).await {
        Err(Error::ConnectRefused(payload)) => assert_eq!(payload, json!({"message": "unauthorized"})),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// In v3 the client pings: the server answers each, and drops a client that stops.
#[tokio::test]
async fn a_v3_client_that_stops_pinging_is_dropped() {
    let config = Config {
        ping_interval: Duration::from_millis(100),
        ping_timeout: Duration::from_millis(100),
        ..Config::default()
    };
    let s = server(config).await;
    let ws_url = format!("{}/socket.io/?EIO=3&transport=websocket&token=good", s.url.replace("http", "ws"));
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    let open = next_text(&mut ws).await;
    assert!(open.starts_with(r#"0{"sid":""#), "{open}");
    ws.send(Message::text("40/chat,")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "40/chat,");
    ws.send(Message::text("2probe-less")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "3probe-less");
    // Then silence: closed once interval + timeout pass without a ping.
    match tokio::time::timeout(WAIT, ws.next()).await.expect("closed in time") {
        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {}
        Some(Ok(other)) => panic!("unexpected {other:?}"),
    }
    tokio::time::timeout(WAIT, s.chat.left.notified()).await.expect("the namespace is told");
    assert_eq!(*s.chat.gone.lock().unwrap(), vec![DisconnectReason::PingTimeout]);
}

/// Long-polling by hand: the handshake, a POST of packets, GETs that bring the answers.
#[tokio::test]
async fn a_polling_client_connects_and_gets_its_acks() {
    let s = server(Config::default()).await;
    let http = reqwest::Client::new();
    let base = format!("{}/socket.io/?EIO=4&transport=polling", s.url);
    let handshake = http.get(&base).send().await.unwrap().text().await.unwrap();
    assert!(handshake.starts_with(r#"0{"sid":""#) && handshake.contains(r#""upgrades":["websocket"]"#), "{handshake}");
    let sid = handshake[9..].split('"').next().unwrap().to_string();
    let url = format!("{base}&sid={sid}");
    let post = |body: &'static str| http.post(&url).body(body).send();
    assert_eq!(post(r#"40/chat,{"token":"good"}"#).await.unwrap().text().await.unwrap(), "ok");
    let connected = http.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(connected.starts_with(r#"40/chat,{"sid":""#), "{connected}");
    // Two packets in one POST; their answers come in one GET or two.
    assert_eq!(
        post("42/chat,1[\"echo\",\"a\"]\x1e42/chat,2[\"echo\",\"b\"]").await.unwrap().text().await.unwrap(),
        "ok"
    );
    let mut answers = Vec::new();
    while answers.len() < 2 {
        let body = http.get(&url).send().await.unwrap().text().await.unwrap();
        answers.extend(body.split('\x1e').filter(|p| p.starts_with("43")).map(str::to_string));
    }
    assert_eq!(answers, vec![r#"43/chat,1["a"]"#, r#"43/chat,2["b"]"#]);
    // The client closes: the namespace is told, the session is gone.
    assert_eq!(post("1").await.unwrap().text().await.unwrap(), "ok");
    tokio::time::timeout(WAIT, s.chat.left.notified()).await.expect("the namespace is told");
    assert_eq!(*s.chat.gone.lock().unwrap(), vec![DisconnectReason::TransportClose]);
    let gone = http.get(&url).send().await.unwrap();
    assert_eq!(gone.status(), 400);
    assert_eq!(gone.text().await.unwrap(), r#"{"code":1,"message":"Session ID unknown"}"#);
}

/// A v3 polling payload: `<length>:<packet>`, lengths in UTF-16 units.
#[tokio::test]
async fn a_v3_polling_client_gets_length_prefixed_payloads() {
    let s = server(Config::default()).await;
    let http = reqwest::Client::new();
    let base = format!("{}/socket.io/?EIO=3&transport=polling&token=good", s.url);
    let handshake = http.get(&base).send().await.unwrap().text().await.unwrap();
    let (len, packet) = handshake.split_once(':').unwrap();
    assert!(packet.starts_with(r#"0{"sid":""#), "{handshake}");
    assert_eq!(len.parse::<usize>().unwrap(), packet.encode_utf16().count());
    let sid = packet[9..].split('"').next().unwrap().to_string();
    let url = format!("{base}&sid={sid}");
    assert_eq!(http.post(&url).body("8:40/chat,").send().await.unwrap().text().await.unwrap(), "ok");
    assert_eq!(http.get(&url).send().await.unwrap().text().await.unwrap(), "8:40/chat,");
    assert_eq!(http.post(&url).body("2:2é").send().await.unwrap().text().await.unwrap(), "ok");
    assert_eq!(http.get(&url).send().await.unwrap().text().await.unwrap(), "2:3é");
}

/// Two GETs at once on one session: refused, and the session closed.
#[tokio::test]
async fn overlapping_polls_close_the_session() {
    let s = server(Config::default()).await;
    let http = reqwest::Client::new();
    let base = format!("{}/socket.io/?EIO=4&transport=polling", s.url);
    let handshake = http.get(&base).send().await.unwrap().text().await.unwrap();
    let sid = handshake[9..].split('"').next().unwrap().to_string();
    let url = format!("{base}&sid={sid}");
    // Two GETs at once: whichever comes second is refused, and the one waiting is
    // answered with the close packet (the session is closed).
    let get = |http: reqwest::Client, url: String| async move {
        let response = http.get(&url).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    let (a, b) = tokio::time::timeout(WAIT, async {
        tokio::join!(get(http.clone(), url.clone()), get(http.clone(), url.clone()))
    })
    .await
    .expect("both answered");
    let mut answers = [a, b];
    answers.sort();
    assert_eq!(answers[0], (200, "1".to_string()));
    assert_eq!(answers[1], (400, r#"{"code":3,"message":"Bad request"}"#.to_string()));
}

/// The upgrade from polling: the probe over the WebSocket, the waiting GET released, the
/// switch at `5`, then everything over the WebSocket, the polling session's state kept.
#[tokio::test]
async fn a_polling_client_upgrades_to_websocket() {
    let s = server(Config::default()).await;
    let http = reqwest::Client::new();
    let base = format!("{}/socket.io/?EIO=4&transport=polling", s.url);
    let handshake = http.get(&base).send().await.unwrap().text().await.unwrap();
    let sid = handshake[9..].split('"').next().unwrap().to_string();
    let url = format!("{base}&sid={sid}");
    http.post(&url).body(r#"40/chat,{"token":"good","name":"ann"}"#).send().await.unwrap();
    assert!(http.get(&url).send().await.unwrap().text().await.unwrap().starts_with("40/chat,"));
    // A GET waits, as a polling client's always does.
    let waiting = tokio::spawn({
        let (http, url) = (http.clone(), url.clone());
        async move { http.get(&url).send().await.unwrap().text().await.unwrap() }
    });
    let ws_url = format!("{}/socket.io/?EIO=4&transport=websocket&sid={sid}", s.url.replace("http", "ws"));
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    ws.send(Message::text("2probe")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "3probe");
    assert_eq!(tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap(), "6", "the waiting GET is released");
    ws.send(Message::text("5")).await.unwrap();
    // Over the WebSocket now: the same socket (its data from the polling CONNECT).
    ws.send(Message::text(r#"42/chat,1["join","r"]"#)).await.unwrap();
    assert_eq!(next_text(&mut ws).await, r#"43/chat,1[true]"#);
    ws.send(Message::text(r#"42/chat,2["echo","over ws"]"#)).await.unwrap();
    assert_eq!(next_text(&mut ws).await, r#"43/chat,2["over ws"]"#);
    // Polling is over for this session.
    assert_eq!(http.get(&url).send().await.unwrap().status(), 400);
    ws.close(None).await.unwrap();
    tokio::time::timeout(WAIT, s.chat.left.notified()).await.expect("the namespace is told");
    assert_eq!(*s.chat.gone.lock().unwrap(), vec![DisconnectReason::TransportClose]);
}

/// Binary attachments both ways, over WebSocket: an event whose placeholders are filled by
/// the binary messages after it, sent back as an event and in an ack.
#[tokio::test]
async fn binary_attachments_travel_both_ways_over_websocket() {
    let s = server(Config::default()).await;
    let mut ws = raw(&s).await;
    ws.send(Message::text(r#"40/chat,{"token":"good"}"#)).await.unwrap();
    assert!(next_text(&mut ws).await.starts_with("40/chat,"));
    ws.send(Message::text(r#"452-/chat,9["bin",{"_placeholder":true,"num":0},"x",{"_placeholder":true,"num":1}]"#))
        .await
        .unwrap();
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    ws.send(Message::binary(vec![4u8])).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 6 {
        got.push(tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap());
    }
    let args = r#"{"_placeholder":true,"num":0},"x",{"_placeholder":true,"num":1}"#;
    assert_eq!(got[0], Message::text(format!(r#"452-/chat,["bin-back",{args}]"#)));
    assert_eq!(got[1], Message::binary(vec![1u8, 2, 3]));
    assert_eq!(got[2], Message::binary(vec![4u8]));
    assert_eq!(got[3], Message::text(format!(r#"462-/chat,9[{args}]"#)));
    assert_eq!(got[4], Message::binary(vec![1u8, 2, 3]));
    assert_eq!(got[5], Message::binary(vec![4u8]));
}

/// Binary over polling: attachments as base64 packets (`b…` in v4, `b4…` in v3).
#[tokio::test]
async fn binary_attachments_travel_over_polling() {
    let s = server(Config::default()).await;
    let http = reqwest::Client::new();
    // (A v3 client that does not ask for base64 gets XHR2 binary payloads instead:
    // conformance/'s Engine.IO v3 suite checks those.)
    for (eio, attachment) in [("4", "bAQID"), ("3&b64=1", "b4AQID")] {
        let base = format!("{}/socket.io/?EIO={eio}&transport=polling&token=good", s.url);
        let handshake = http.get(&base).send().await.unwrap().text().await.unwrap();
        let at = handshake.find(r#""sid":""#).unwrap() + 7;
        let sid = handshake[at..].split('"').next().unwrap().to_string();
        let url = format!("{base}&sid={sid}");
        let payload = |packets: &[&str]| match eio {
            "4" => packets.join("\x1e"),
            _ => packets.iter().map(|p| format!("{}:{p}", p.encode_utf16().count())).collect(),
        };
        http.post(&url).body(payload(&["40/chat,"])).send().await.unwrap();
        let connected = http.get(&url).send().await.unwrap().text().await.unwrap();
        assert!(connected.contains("40/chat,"), "{connected}");
        let event = r#"451-/chat,["bin",{"_placeholder":true,"num":0}]"#;
        assert_eq!(
            http.post(&url).body(payload(&[event, attachment])).send().await.unwrap().text().await.unwrap(),
            "ok"
        );
        let back = http.get(&url).send().await.unwrap().text().await.unwrap();
        assert_eq!(
            back,
            payload(&[r#"451-/chat,["bin-back",{"_placeholder":true,"num":0}]"#, attachment]),
            "EIO={eio}"
        );
    }
}

/// The server asks, the client acks: the answer reaches the server; no answer times out.
#[tokio::test]
async fn the_server_waits_for_a_clients_ack() {
    let s = server(Config::default()).await;
    let mut ws = raw(&s).await;
    ws.send(Message::text(r#"40/chat,{"token":"good"}"#)).await.unwrap();
    assert!(next_text(&mut ws).await.starts_with("40/chat,"));
    ws.send(Message::text(r#"42/chat,["ask"]"#)).await.unwrap();
    let question = next_text(&mut ws).await;
    let id = question.strip_prefix("42/chat,").and_then(|r| r.strip_suffix(r#"["question",41]"#)).expect(&question);
    ws.send(Message::text(format!("43/chat,{id}[42]"))).await.unwrap();
    assert_eq!(next_text(&mut ws).await, r#"42/chat,["answered",[42]]"#);
    // Asked again, left unanswered: the server hears why.
    ws.send(Message::text(r#"42/chat,["ask"]"#)).await.unwrap();
    assert!(next_text(&mut ws).await.contains(r#"["question",41]"#));
    assert_eq!(next_text(&mut ws).await, r#"42/chat,["unanswered","no ack in time"]"#);
}

/// Room operations by room, as a fleet's bus and a chat server use them: join, leave,
/// disconnect, and a frame encoded elsewhere broadcast as it is.
#[tokio::test]
async fn room_operations_reach_the_sockets_in_a_room() {
    let s = server(Config::default()).await;
    let mut ann = Client::connect(opts(&s.url, "good", "ann")).await.unwrap();
    let mut bob = Client::connect(opts(&s.url, "good", "bob")).await.unwrap();
    for c in [&ann, &bob] {
        assert_eq!(c.emit_with_ack("join", json!("team"), WAIT).await.unwrap(), json!(true));
    }
    // Everyone in `team` joins `conv:1`; a frame from elsewhere reaches them.
    let team = Broadcast { rooms: vec!["team".into()], except: Vec::new() };
    assert_eq!(s.engine.join("/chat", &team, &["conv:1"]), 2);
    let conv = Broadcast { rooms: vec!["conv:1".into()], except: Vec::new() };
    let frame = quckchat_sio_server::engine::packet_frame(r#"2/chat,["from-afar",7]"#);
    assert_eq!(s.engine.broadcast_frame("/chat", &conv, frame).sent, 2);
    assert_eq!(ann.expect("from-afar", WAIT).await.unwrap(), json!(7));
    assert_eq!(bob.expect("from-afar", WAIT).await.unwrap(), json!(7));
    // bob's sockets leave it; then ann's are disconnected.
    let bobs = Broadcast { rooms: vec![format!("me:{}", bob.sid())], except: Vec::new() };
    assert_eq!(s.engine.leave("/chat", &bobs, &["conv:1"]), 1);
    assert_eq!(s.engine.broadcast("/chat", &conv, "only-ann", "1").sent, 1);
    assert_eq!(ann.expect("only-ann", WAIT).await.unwrap(), json!(1));
    let anns = Broadcast { rooms: vec![format!("me:{}", ann.sid())], except: Vec::new() };
    assert_eq!(s.engine.disconnect("/chat", &anns), 1);
    assert_eq!(ann.wait_disconnect(WAIT).await.unwrap(), DisconnectKind::ServerDisconnect);
    assert_eq!(s.engine.namespaces(), vec!["/chat".to_string()]);
}

/// A kick that lands while the socket's connect handler runs: the socket connects, then
/// is disconnected at once.
#[tokio::test]
async fn a_socket_kicked_while_connecting_is_disconnected_after_its_connect() {
    let s = server(Config::default()).await;
    let mut ws = raw(&s).await;
    ws.send(Message::text(r#"40/chat,{"token":"good","slow":true}"#)).await.unwrap();
    tokio::time::timeout(WAIT, s.chat.entered.notified()).await.expect("the handler runs");
    assert_eq!(s.engine.disconnect("/chat", &Broadcast::default()), 1);
    s.chat.gate.notify_one();
    assert!(next_text(&mut ws).await.starts_with("40/chat,"));
    assert_eq!(next_text(&mut ws).await, "41/chat,");
}

/// Shutdown closes every connection and waits for them to end.
#[tokio::test]
async fn shutdown_closes_every_connection_and_waits() {
    let s = server(Config::default()).await;
    let mut ann = Client::connect(opts(&s.url, "good", "ann")).await.unwrap();
    assert_eq!(s.engine.connections(), 1);
    tokio::time::timeout(WAIT, s.engine.shutdown(WAIT)).await.expect("shut down in time");
    assert_eq!(s.engine.connections(), 0);
    assert_eq!(*s.chat.gone.lock().unwrap(), vec![DisconnectReason::ServerShuttingDown]);
    assert_eq!(ann.wait_disconnect(WAIT).await.unwrap(), DisconnectKind::TransportClosed);
}

/// With polling off, WebSocket is the only transport.
#[tokio::test]
async fn polling_can_be_turned_off() {
    let s = server(Config { polling: false, ..Config::default() }).await;
    let response = reqwest::get(format!("{}/socket.io/?EIO=4&transport=polling", s.url)).await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.text().await.unwrap(), r#"{"code":0,"message":"Transport unknown"}"#);
    let ws = raw(&s).await;
    drop(ws);
}

/// Kept request headers reach the connect handler (here the token in `Authorization`),
/// over WebSocket and polling; others are not kept.
#[tokio::test]
async fn kept_headers_reach_the_connect_handler() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let s = server(Config { keep_headers: vec!["authorization".into()], ..Config::default() }).await;
    let ws_url = format!("{}/socket.io/?EIO=4&transport=websocket", s.url.replace("http", "ws"));
    let mut request = ws_url.into_client_request().unwrap();
    request.headers_mut().insert("Authorization", "Bearer good".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    next_text(&mut ws).await;
    ws.send(Message::text("40/chat,")).await.unwrap();
    assert!(next_text(&mut ws).await.starts_with(r#"40/chat,{"sid""#));
    // Over polling too; and without the header, refused.
    let http = reqwest::Client::new();
    let base = format!("{}/socket.io/?EIO=4&transport=polling", s.url);
    for (authorization, expected) in [("Bearer good", r#"40/chat,{"sid""#), ("Bearer bad", "44/chat,")] {
        let handshake =
            http.get(&base).header("authorization", authorization).send().await.unwrap().text().await.unwrap();
        let sid = handshake[9..].split('"').next().unwrap().to_string();
        let url = format!("{base}&sid={sid}");
        http.post(&url).body("40/chat,").send().await.unwrap();
        let answer = http.get(&url).send().await.unwrap().text().await.unwrap();
        assert!(answer.starts_with(expected), "{authorization}: {answer}");
    }
}
