//! A small server on the engine, for the interop suite (`interop/test/engine.test.mjs`)
//! to check it against npm's real socket.io-client.
//!
//! `/chat` takes a socket whose `auth.token` is `good` (else CONNECT_ERROR `unauthorized`);
//! `echo` acks its arguments; `join` joins a room and acks `true`; `shout` broadcasts
//! `heard` with the sender's `auth.name` to a room except the sender, acking how many got
//! it; `kick` disconnects the sender. `PING_INTERVAL_MS` / `PING_TIMEOUT_MS` set the
//! heartbeat. Prints `engine listening on http://ADDR` on stdout.

// A tool, not a server anyone depends on: a failed bind or connect ends it with the reason (`expect`).
use std::time::Duration;

use quckchat_sio_server::engine::{
    AckSender, BoxFuture, Broadcast, Config, DisconnectReason, Engine, Namespace, Refusal, Socket,
};
use serde_json::value::RawValue;

struct Chat {
    engine: std::sync::OnceLock<Engine>,
}

impl Namespace for Chat {
    fn connect(&self, socket: Socket, auth: Option<String>) -> BoxFuture<Result<(), Refusal>> {
        Box::pin(async move {
            let auth: serde_json::Value =
                auth.as_deref().and_then(|a| serde_json::from_str(a).ok()).unwrap_or_default();
            // socket.io-client 2.x sends no auth: its token comes in the query.
            let query_token = socket.query().split('&').any(|kv| kv == "token=good");
            if auth["token"] != "good" && !query_token {
                return Err(Refusal { message: "unauthorized".into(), data: None });
            }
            socket.set_data(auth["name"].as_str().unwrap_or("?").to_string());
            Ok(())
        })
    }

    fn event(&self, socket: &Socket, event: &str, args: &[&RawValue], ack: Option<AckSender>) {
        let first = |args: &[&RawValue]| args.first().and_then(|a| serde_json::from_str::<String>(a.get()).ok());
        let answer = match event {
            "echo" => args.iter().map(|a| a.get()).collect::<Vec<_>>().join(","),
            "join" => {
                let Some(room) = first(args) else { return };
                socket.join(&room);
                socket.join(&format!("me:{}", socket.id()));
                "true".into()
            }
            "shout" => {
                let (Some(room), Some(engine)) = (first(args), self.engine.get()) else { return };
                let name = socket.data::<String>().cloned().unwrap_or_default();
                let to = Broadcast { rooms: vec![room], except: vec![format!("me:{}", socket.id())] };
                let name = serde_json::to_string(&name).unwrap_or_default();
                engine.broadcast(socket.namespace(), &to, "heard", &name).sent.to_string()
            }
            "kick" => {
                socket.disconnect();
                return;
            }
            "ask" => {
                // Asks the client a question and reports its answer (or why there was none).
                let socket = socket.clone();
                tokio::spawn(async move {
                    match socket.emit_with_ack("question", "41", std::time::Duration::from_millis(500)).await {
                        Ok(ack) => socket.emit("answered", &ack.args),
                        Err(e) => socket.emit("unanswered", &serde_json::to_string(&e.to_string()).unwrap_or_default()),
                    }
                });
                return;
            }
            _ => return,
        };
        if let Some(ack) = ack {
            let _ = ack.send(&answer);
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

    fn disconnect(&self, _: &Socket, _: DisconnectReason) {}
}

fn millis(name: &str, default: u64) -> Duration {
    Duration::from_millis(std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let config = Config {
        ping_interval: millis("PING_INTERVAL_MS", 25_000),
        ping_timeout: millis("PING_TIMEOUT_MS", 20_000),
        ..Config::default()
    };
    let engine = Engine::new(config);
    let chat = std::sync::Arc::new(Chat { engine: std::sync::OnceLock::new() });
    let _ = chat.engine.set(engine.clone());
    engine.namespace("/chat", chat);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("engine listening on http://{}", listener.local_addr().expect("address"));
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let engine = engine.clone();
        tokio::spawn(async move { engine.serve_connection(stream, "/socket.io/").await });
    }
}
