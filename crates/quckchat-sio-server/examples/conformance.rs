//! The Socket.IO project's reference server profile on this engine, for the protocol
//! suites in `conformance/` (`QUCKCHAT_BIN=target/debug/examples/conformance`; run as
//! `conformance conformance`, like `quckchat conformance`).
//!
//! Socket.IO at `/socket.io/`: namespace `/` emits `auth` with the CONNECT's auth payload
//! (or `{}`) once connected, answers `message` with `message-back` (same arguments, binary
//! attachments included) and acks `message-with-ack` with its arguments; `/custom` only
//! emits `auth`. Ping interval 300 ms, ping timeout 200 ms, max payload 1,000,000, connect
//! timeout 1 s; Engine.IO v3 only with `ALLOW_EIO3=true`. `HOST`, `PORT` choose the address.
//! Engine.IO alone at `/engine.io/`: every message, text or binary, is echoed back.

// A tool, not a server anyone depends on: a failed bind or connect ends it with the reason (`expect`).
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quckchat_sio_server::engine::{
    AckSender, BoxFuture, Config, DisconnectReason, Engine, Namespace, RawConn, RawHandler, Refusal, Socket,
};
use serde_json::value::RawValue;

/// The auth payload a socket connected with, kept for its `auth` greeting.
struct Auth(String);

/// `/` (with `reply`) and `/custom` (without).
struct Profile {
    reply: bool,
}

impl Namespace for Profile {
    fn connect(&self, socket: Socket, auth: Option<String>) -> BoxFuture<Result<(), Refusal>> {
        // A CONNECT whose payload is not an object is invalid (the suites expect a close).
        let auth = auth.unwrap_or_else(|| "{}".to_string());
        let valid = serde_json::from_str::<serde_json::Value>(&auth).is_ok_and(|v| v.is_object());
        socket.set_data(Auth(auth));
        Box::pin(async move {
            if valid { Ok(()) } else { Err(Refusal { message: "invalid auth payload".into(), data: None }) }
        })
    }

    fn connected(&self, socket: &Socket) {
        if let Some(Auth(auth)) = socket.data::<Auth>() {
            let _ = socket.emit("auth", auth);
        }
    }

    fn event(&self, socket: &Socket, event: &str, args: &[&RawValue], ack: Option<AckSender>) {
        self.binary_event(socket, event, args, Vec::new(), ack);
    }

    fn binary_event(
        &self,
        socket: &Socket,
        event: &str,
        args: &[&RawValue],
        attachments: Vec<Bytes>,
        ack: Option<AckSender>,
    ) {
        if !self.reply {
            return;
        }
        let args = args.iter().map(|a| a.get()).collect::<Vec<_>>().join(",");
        match (event, ack) {
            ("message", _) if attachments.is_empty() => {
                let _ = socket.emit("message-back", &args);
            }
            ("message", _) => {
                let _ = socket.emit_binary("message-back", &args, &attachments);
            }
            ("message-with-ack", Some(ack)) if attachments.is_empty() => {
                let _ = ack.send(&args);
            }
            ("message-with-ack", Some(ack)) => {
                let _ = ack.send_binary(&args, &attachments);
            }
            _ => {}
        }
    }

    fn disconnect(&self, _: &Socket, _: DisconnectReason) {}
}

/// `/engine.io/`: echoes every message.
struct Echo;

impl RawHandler for Echo {
    fn message(&self, conn: &RawConn, text: &str) {
        let _ = conn.send(text);
    }
    fn binary(&self, conn: &RawConn, data: &[u8]) {
        let _ = conn.send_binary(data);
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let config = Config {
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        max_payload: 1_000_000,
        connect_timeout: Duration::from_millis(1000),
        allow_eio3: env("ALLOW_EIO3").is_some_and(|v| v == "true"),
        ..Config::default()
    };
    let echo = Arc::new(Engine::raw(config.clone(), Echo));
    let engine = Engine::new(config);
    engine.namespace("/", Profile { reply: true });
    engine.namespace("/custom", Profile { reply: false });
    let host = env("HOST").unwrap_or_else(|| "127.0.0.1".into());
    let port = env("PORT").unwrap_or_else(|| "3000".into());
    let listener = tokio::net::TcpListener::bind(format!("{host}:{port}")).await.expect("bind");
    println!("engine conformance listening on http://{}", listener.local_addr().expect("address"));
    let engine = Arc::new(engine);
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let (engine, echo) = (engine.clone(), echo.clone());
        tokio::spawn(async move {
            let Some((stream, _)) = engine.serve_direct(stream, "/socket.io/", Box::new(())).await else { return };
            let Some((stream, _)) = echo.serve_direct(stream, "/engine.io/", Box::new(())).await else { return };
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (engine, echo) = (engine.clone(), echo.clone());
                async move {
                    let response = if req.method() == hyper::Method::OPTIONS {
                        // A CORS preflight: anything goes.
                        let mut response = hyper::Response::new(Bytes::new());
                        *response.status_mut() = hyper::StatusCode::NO_CONTENT;
                        let headers = response.headers_mut();
                        let any = hyper::header::HeaderValue::from_static("*");
                        headers.insert(
                            "access-control-allow-methods",
                            hyper::header::HeaderValue::from_static("GET, POST, OPTIONS"),
                        );
                        headers.insert("access-control-allow-headers", any);
                        response
                    } else if req.uri().path() == "/socket.io/" {
                        engine.handle::<tokio::net::TcpStream, _>(req).await
                    } else if req.uri().path() == "/engine.io/" {
                        echo.handle::<tokio::net::TcpStream, _>(req).await
                    } else {
                        let mut response = hyper::Response::new(Bytes::from_static(b"Not Found"));
                        *response.status_mut() = hyper::StatusCode::NOT_FOUND;
                        response
                    };
                    let mut response = response.map(http_body_util::Full::new);
                    response
                        .headers_mut()
                        .insert("access-control-allow-origin", hyper::header::HeaderValue::from_static("*"));
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}
