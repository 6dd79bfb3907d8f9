//! End-to-end tests against a tiny scripted Socket.IO server running in-process on
//! 127.0.0.1:0. No test sleeps: every wait is bounded by a timeout and driven by events.

// The `accept_hdr_async` callback signature is fixed by tungstenite (its error type is an
// HTTP response), so this lint cannot be addressed here.
#![allow(clippy::result_large_err)]

use std::future::Future;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use quckchat_sio_client::{Client, ConnectOptions, DisconnectKind, Error};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

type ServerWs = WebSocketStream<TcpStream>;

const T: Duration = Duration::from_secs(5);

const OPEN_V4: &str = r#"0{"sid":"eng-1","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;

/// What the server saw of the HTTP upgrade request.
#[derive(Debug, Clone)]
struct SeenRequest {
    uri: String,
    headers: Vec<(String, String)>,
}

/// Starts a one-connection server running `script`; returns the base URL.
async fn serve<F, Fut>(script: F) -> String
where
    F: FnOnce(ServerWs, SeenRequest) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut seen = None;
        let ws = tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, resp: Response| {
            seen = Some(SeenRequest {
                uri: req.uri().to_string(),
                headers: req
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect(),
            });
            Ok(resp)
        })
        .await
        .unwrap();
        script(ws, seen.unwrap()).await;
    });
    format!("http://{addr}")
}

/// Next text frame, or None when the connection is closed.
async fn recv(ws: &mut ServerWs) -> Option<String> {
    loop {
        match tokio::time::timeout(T, ws.next()).await.expect("server recv timed out") {
            Some(Ok(Message::Text(t))) => return Some(t.as_str().to_owned()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

async fn send(ws: &mut ServerWs, text: &str) {
    ws.send(Message::text(text.to_owned())).await.unwrap();
}

/// Engine.IO open + Socket.IO CONNECT reply for `/chat`; returns the CONNECT packet.
async fn accept_chat(ws: &mut ServerWs) -> String {
    send(ws, OPEN_V4).await;
    let connect = recv(ws).await.unwrap();
    send(ws, r#"40/chat,{"sid":"sio-1"}"#).await;
    connect
}

#[tokio::test]
async fn full_session_v4() {
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<String>();
    let (req_tx, mut req_rx) = mpsc::unbounded_channel::<SeenRequest>();
    let base = serve(move |mut ws, req| async move {
        req_tx.send(req).unwrap();
        send(&mut ws, OPEN_V4).await;
        let connect = recv(&mut ws).await.unwrap();
        seen_tx.send(connect).unwrap();
        // A ping before the CONNECT reply must be answered.
        send(&mut ws, "2").await;
        assert_eq!(recv(&mut ws).await.unwrap(), "3");
        // A packet for another namespace before the reply must be ignored.
        send(&mut ws, r#"40/other,{"sid":"nope"}"#).await;
        send(&mut ws, r#"40/chat,{"sid":"sio-1"}"#).await;
        // Another namespace's event after connect: ignored.
        send(&mut ws, r#"42/other,["echo","wrong namespace"]"#).await;

        while let Some(frame) = recv(&mut ws).await {
            seen_tx.send(frame.clone()).unwrap();
            if frame == "3" {
                continue;
            }
            let Some(sio) = frame.strip_prefix("42/chat,") else {
                continue;
            };
            // Optional ack id, then the JSON array.
            let digits = sio.bytes().take_while(u8::is_ascii_digit).count();
            let (id, json) = sio.split_at(digits);
            let arr: Vec<Value> = match serde_json::from_str(json) {
                Ok(a) => a,
                Err(_) => continue, // malformed input from send_raw
            };
            match arr[0].as_str().unwrap() {
                "echo" => {
                    let out = json!(["echo", arr[1]]);
                    send(&mut ws, &format!("42/chat,{out}")).await;
                }
                "ack" => {
                    let out = json!([{ "got": arr[1], "id": id }]);
                    send(&mut ws, &format!("43/chat,{id}{out}")).await;
                }
                "ack-empty" => send(&mut ws, &format!("43/chat,{id}[]")).await,
                "burst" => {
                    for (name, v) in [("a", 1), ("n", 1), ("b", 2), ("n", 2), ("c", 3), ("n", 3), ("end", 0)] {
                        let out = json!([name, v]);
                        send(&mut ws, &format!("42/chat,{out}")).await;
                    }
                }
                "ping-me" => {
                    // Mid-session heartbeat, then confirm via an event.
                    send(&mut ws, "2").await;
                    assert_eq!(recv(&mut ws).await.unwrap(), "3");
                    send(&mut ws, r#"42/chat,["pinged"]"#).await;
                }
                "multi" => send(&mut ws, r#"42/chat,["multi","x",{"y":1}]"#).await,
                "noargs" => send(&mut ws, r#"42/chat,["noargs"]"#).await,
                _ => {}
            }
        }
        seen_tx.send("<closed>".into()).unwrap();
    })
    .await;

    let opts =
        ConnectOptions::new(base, "chat").auth(json!({"token": "t,[0]"})).query("room", "a b").header("x-test", "yes");
    let mut c = Client::connect(opts).await.unwrap();
    assert_eq!(c.sid(), "sio-1");
    assert_eq!(c.engine_sid(), "eng-1");
    assert_eq!(c.namespace(), "/chat");
    assert!(c.is_connected());

    let req = req_rx.recv().await.unwrap();
    assert_eq!(req.uri, "/socket.io/?EIO=4&transport=websocket&room=a%20b", "{req:?}");
    assert!(req.headers.contains(&("x-test".into(), "yes".into())), "{req:?}");
    assert_eq!(seen_rx.recv().await.unwrap(), r#"40/chat,{"token":"t,[0]"}"#);

    // Echo of a payload containing commas and brackets.
    let payload = json!({"text": "a, b [c] {d}", "n": [1, [2]]});
    c.emit("echo", payload.clone()).await.unwrap();
    assert_eq!(c.expect("echo", T).await.unwrap(), payload);

    // Acks: ids count from 0.
    let ack = c.emit_with_ack("ack", json!(1), T).await.unwrap();
    assert_eq!(ack, json!({"got": 1, "id": "0"}));
    let ack = c.emit_args_with_ack("ack", vec![json!("two"), json!(2)], T).await.unwrap();
    assert_eq!(ack, vec![json!({"got": "two", "id": "1"})]);
    assert_eq!(c.emit_with_ack("ack-empty", json!(null), T).await.unwrap(), Value::Null);

    // Buffering: other events received while waiting are kept in order.
    c.emit("burst", json!(null)).await.unwrap();
    assert_eq!(c.expect("c", T).await.unwrap(), json!(3));
    assert_eq!(c.expect_where("n", T, |v| v == &json!(2)).await.unwrap(), json!(2));
    assert_eq!(c.next_event(T).await.unwrap(), ("a".into(), json!(1)));
    assert_eq!(c.expect("b", T).await.unwrap(), json!(2));
    // Waiting for "end" buffers the last "n".
    assert_eq!(c.expect("end", T).await.unwrap(), json!(0));
    assert_eq!(c.take_buffered(), vec![("n".to_string(), json!(1)), ("n".to_string(), json!(3))]);
    assert!(c.take_buffered().is_empty());

    // Mid-session ping answered by the background task.
    c.emit("ping-me", json!(null)).await.unwrap();
    assert_eq!(c.expect("pinged", T).await.unwrap(), Value::Null);

    // Multiple / zero event args: first arg or Null.
    c.emit("multi", json!(null)).await.unwrap();
    assert_eq!(c.expect("multi", T).await.unwrap(), json!("x"));
    c.emit_args("noargs", vec![]).await.unwrap();
    assert_eq!(c.next_event(T).await.unwrap(), ("noargs".into(), Value::Null));

    // Raw frames are sent verbatim.
    c.send_raw(r#"42/chat,["message:send", {bad"#).await.unwrap();

    // No stray events (e.g. from the /other namespace) were delivered.
    assert!(c.take_buffered().is_empty());
    assert!(c.is_connected());
    c.close().await;

    let mut frames = Vec::new();
    while let Some(f) = seen_rx.recv().await {
        let end = f == "<closed>";
        frames.push(f);
        if end {
            break;
        }
    }
    let expected_tail =
        [r#"42/chat,["message:send", {bad"#.to_string(), "41/chat,".to_string(), "<closed>".to_string()];
    assert!(frames.ends_with(&expected_tail), "{frames:#?}");
    assert!(frames.contains(&r#"42/chat,0["ack",1]"#.to_string()), "{frames:#?}");
    assert!(frames.contains(&r#"42/chat,1["ack","two",2]"#.to_string()), "{frames:#?}");
    // (The pongs were checked by the server script itself: had it panicked, the
    // "pinged" expectation above would have timed out.)
}

#[tokio::test]
async fn root_namespace_v4() {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let base = serve(move |mut ws, _| async move {
        send(&mut ws, OPEN_V4).await;
        tx.send(recv(&mut ws).await.unwrap()).unwrap();
        send(&mut ws, r#"40{"sid":"root-sid"}"#).await;
        let frame = recv(&mut ws).await.unwrap();
        tx.send(frame).unwrap();
        send(&mut ws, r#"42["hi",{"a":[1,2]}]"#).await;
        send(&mut ws, r#"42/chat,["hi","wrong ns"]"#).await;
        let frame = recv(&mut ws).await.unwrap();
        tx.send(frame).unwrap();
        send(&mut ws, r#"430["ok"]"#).await;
        let _ = recv(&mut ws).await;
    })
    .await;
    let mut c = Client::connect(ConnectOptions::new(base, "/")).await.unwrap();
    assert_eq!(c.sid(), "root-sid");
    assert_eq!(rx.recv().await.unwrap(), "40");
    c.emit_args("x", vec![json!(1), json!("2")]).await.unwrap();
    assert_eq!(rx.recv().await.unwrap(), r#"42["x",1,"2"]"#);
    assert_eq!(c.expect("hi", T).await.unwrap(), json!({"a":[1,2]}));
    assert_eq!(c.emit_with_ack("y", json!(null), T).await.unwrap(), json!("ok"));
    assert_eq!(rx.recv().await.unwrap(), r#"420["y",null]"#);
    assert!(c.take_buffered().is_empty());
}

#[tokio::test]
async fn connect_refused() {
    let base = serve(|mut ws, _| async move {
        send(&mut ws, OPEN_V4).await;
        let _ = recv(&mut ws).await;
        send(&mut ws, r#"44/chat,{"message":"unauthorized"}"#).await;
        let _ = recv(&mut ws).await;
    })
    .await;
    match Client::connect(ConnectOptions::new(base, "/chat")).await {
        Err(Error::ConnectRefused(v)) => assert_eq!(v, json!({"message":"unauthorized"})),
        other => panic!("unexpected: {other:?}"),
    }
}

#[tokio::test]
async fn connect_timeout_when_server_is_silent() {
    let base = serve(|mut ws, _| async move {
        // Never send the open packet; just wait for the client to go away.
        let _ = recv(&mut ws).await;
    })
    .await;
    let opts = ConnectOptions::new(base, "/chat").timeout(Duration::from_millis(200));
    assert!(matches!(Client::connect(opts).await, Err(Error::Timeout)));
}

#[tokio::test]
async fn http_rejection_is_reported() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let _ = tokio_tungstenite::accept_hdr_async(tcp, |_: &Request, _: Response| {
            let mut resp = ErrorResponse::new(Some("forbidden".into()));
            *resp.status_mut() = StatusCode::FORBIDDEN;
            Err(resp)
        })
        .await;
    });
    match Client::connect(ConnectOptions::new(format!("http://{addr}"), "/")).await {
        Err(Error::Http(msg)) => assert!(msg.contains("403"), "{msg}"),
        other => panic!("unexpected: {other:?}"),
    }
}

#[tokio::test]
async fn server_disconnect() {
    let base = serve(|mut ws, _| async move {
        accept_chat(&mut ws).await;
        send(&mut ws, r#"42/chat,["bye",1]"#).await;
        // A DISCONNECT for another namespace is ignored.
        send(&mut ws, "41/other,").await;
        send(&mut ws, "41/chat,").await;
        let _ = recv(&mut ws).await;
    })
    .await;
    let mut c = Client::connect(ConnectOptions::new(base, "/chat")).await.unwrap();
    assert_eq!(c.wait_disconnect(T).await.unwrap(), DisconnectKind::ServerDisconnect);
    assert!(!c.is_connected());
    // Idempotent.
    assert_eq!(c.wait_disconnect(T).await.unwrap(), DisconnectKind::ServerDisconnect);
    // The event received before the disconnect is still available.
    assert_eq!(c.expect("bye", T).await.unwrap(), json!(1));
    assert!(matches!(c.expect("bye", T).await, Err(Error::Closed)));
    assert!(matches!(c.next_event(T).await, Err(Error::Closed)));
    assert!(matches!(c.emit("x", json!(1)).await, Err(Error::Closed)));
}

#[tokio::test]
async fn transport_close_fails_pending_ack() {
    let base = serve(|mut ws, _| async move {
        accept_chat(&mut ws).await;
        // Wait for the ack request, then close without answering.
        let _ = recv(&mut ws).await;
        ws.close(None).await.unwrap();
        let _ = recv(&mut ws).await;
    })
    .await;
    let mut c = Client::connect(ConnectOptions::new(base, "/chat")).await.unwrap();
    assert!(matches!(c.emit_with_ack("ack", json!(1), T).await, Err(Error::Closed)));
    assert_eq!(c.wait_disconnect(T).await.unwrap(), DisconnectKind::TransportClosed);
    assert!(!c.is_connected());
}

#[tokio::test]
async fn engine_io_close_packet() {
    let base = serve(|mut ws, _| async move {
        accept_chat(&mut ws).await;
        send(&mut ws, "1").await;
        let _ = recv(&mut ws).await;
    })
    .await;
    let mut c = Client::connect(ConnectOptions::new(base, "/chat")).await.unwrap();
    assert_eq!(c.wait_disconnect(T).await.unwrap(), DisconnectKind::TransportClosed);
}

#[tokio::test]
async fn ack_timeout() {
    let base = serve(|mut ws, _| async move {
        accept_chat(&mut ws).await;
        // Swallow everything, never ack.
        while recv(&mut ws).await.is_some() {}
    })
    .await;
    let c = Client::connect(ConnectOptions::new(base, "/chat")).await.unwrap();
    assert!(matches!(c.emit_with_ack("ack", json!(1), Duration::from_millis(100)).await, Err(Error::Timeout)));
    assert!(c.is_connected());
}

#[tokio::test]
async fn expect_timeout_keeps_other_events() {
    let base = serve(|mut ws, _| async move {
        accept_chat(&mut ws).await;
        send(&mut ws, r#"42/chat,["other",1]"#).await;
        while recv(&mut ws).await.is_some() {}
    })
    .await;
    let mut c = Client::connect(ConnectOptions::new(base, "/chat")).await.unwrap();
    assert!(matches!(c.expect("never", Duration::from_millis(200)).await, Err(Error::Timeout)));
    assert_eq!(c.take_buffered(), vec![("other".to_string(), json!(1))]);
}

#[tokio::test]
async fn dropping_client_closes_socket() {
    let (tx, mut rx) = mpsc::unbounded_channel::<&'static str>();
    let base = serve(move |mut ws, _| async move {
        accept_chat(&mut ws).await;
        // recv returns None once the client closes the websocket.
        while recv(&mut ws).await.is_some() {}
        tx.send("closed").unwrap();
    })
    .await;
    let c = Client::connect(ConnectOptions::new(base, "/chat")).await.unwrap();
    drop(c);
    let got = tokio::time::timeout(T, rx.recv()).await.unwrap();
    assert_eq!(got, Some("closed"));
}

#[tokio::test]
async fn malformed_and_binary_packets_are_protocol_errors() {
    let base = serve(|mut ws, _| async move {
        accept_chat(&mut ws).await;
        send(&mut ws, r#"42/chat,["x", {bad"#).await;
        send(&mut ws, r#"451-/chat,["bin",{"_placeholder":true,"num":0}]"#).await;
        send(&mut ws, r#"42/chat,["good",1]"#).await;
        while recv(&mut ws).await.is_some() {}
    })
    .await;
    let mut c = Client::connect(ConnectOptions::new(base, "/chat")).await.unwrap();
    assert!(matches!(c.expect("good", T).await, Err(Error::Protocol(_))));
    assert!(matches!(c.expect("good", T).await, Err(Error::Protocol(_))));
    assert_eq!(c.expect("good", T).await.unwrap(), json!(1));
    assert!(c.is_connected());
}

#[tokio::test]
async fn heartbeat_timeout_is_detected() {
    let base = serve(|mut ws, _| async move {
        send(&mut ws, r#"0{"sid":"e","upgrades":[],"pingInterval":100,"pingTimeout":100,"maxPayload":1000}"#).await;
        let _ = recv(&mut ws).await;
        send(&mut ws, r#"40/chat,{"sid":"s"}"#).await;
        // Never ping: the client must give up after ~200ms.
        while recv(&mut ws).await.is_some() {}
    })
    .await;
    let mut c = Client::connect(ConnectOptions::new(base, "/chat")).await.unwrap();
    assert_eq!(c.wait_disconnect(T).await.unwrap(), DisconnectKind::TransportClosed);
}

#[tokio::test]
async fn engine_io_v3_client_pings() {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let (req_tx, mut req_rx) = mpsc::unbounded_channel::<String>();
    let base = serve(move |mut ws, req| async move {
        req_tx.send(req.uri).unwrap();
        send(&mut ws, r#"0{"sid":"eng-3","upgrades":[],"pingInterval":50,"pingTimeout":5000}"#).await;
        // Socket.IO v4 protocol: the root namespace is connected implicitly.
        send(&mut ws, "40").await;
        // In v3 the client pings.
        let ping = recv(&mut ws).await.unwrap();
        tx.send(ping).unwrap();
        send(&mut ws, "3").await;
        send(&mut ws, r#"42["hello","v3"]"#).await;
        while recv(&mut ws).await.is_some() {}
    })
    .await;
    let mut c = Client::connect(ConnectOptions::new(base, "/").eio(3)).await.unwrap();
    assert_eq!(req_rx.recv().await.unwrap(), "/socket.io/?EIO=3&transport=websocket");
    assert_eq!(c.sid(), "eng-3");
    assert_eq!(c.expect("hello", T).await.unwrap(), json!("v3"));
    assert_eq!(rx.recv().await.unwrap(), "2");
    assert!(c.is_connected());
}

#[tokio::test]
async fn invalid_eio_and_url_are_rejected() {
    assert!(matches!(
        Client::connect(ConnectOptions::new("http://127.0.0.1:1", "/").eio(5)).await,
        Err(Error::Protocol(_))
    ));
    assert!(matches!(Client::connect(ConnectOptions::new("127.0.0.1:1", "/")).await, Err(Error::Http(_))));
    assert!(matches!(
        Client::connect(ConnectOptions::new("http://127.0.0.1:1", "/").header("bad header", "x")).await,
        Err(Error::Http(_))
    ));
}
