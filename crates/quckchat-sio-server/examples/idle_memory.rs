//! Idle memory per connection: this engine beside bare socketioxide, one process each,
//! measured the same way.
//!
//! `cargo run --release --example idle_memory -- [CONNECTIONS]` starts each server in a
//! child process (`serve-engine` / `serve-socketioxide`), opens CONNECTIONS WebSockets
//! from this process, joins `/chat` on each, lets them sit idle for 12 s (through pings), and prints the
//! server's RSS growth per connection (from `/proc/PID/status`). `NO_TRIM=1` turns off the
//! engine's heap trim after connection storms (`Config::trim_heap`): the difference is heap
//! fragmentation (freed handshake memory between live connection state), not live memory. The engine server
//! answers upgrades straight from the socket (`Engine::serve_direct`); `VIA_HYPER=1` sends
//! them through hyper instead.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn spawn(mode: &str) -> (Child, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg(mode)
        .stdout(Stdio::piped())
        .spawn()
        .expect("server process");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    (child, line.trim().to_string())
}

async fn measure(mode: &str, n: usize) {
    let (mut child, addr) = spawn(mode);
    let pid = child.id();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(pid);
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let mut tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(n);
    for _ in 0..n {
        let url = url.clone();
        let ready = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("connect");
            ws.next().await.unwrap().unwrap();
            ws.send(Message::text(r#"40/chat,{"token":"t"}"#)).await.unwrap();
            ws.next().await.unwrap().unwrap();
            let _ = ready.send(()).await;
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Text(t) = m
                    && t.as_str() == "2"
                {
                    let _ = ws.send(Message::text("3")).await;
                }
            }
        }));
    }
    for _ in 0..n {
        ready_rx.recv().await;
    }
    // Idle through several pings (interval 1 s in both servers) and past the engine's
    // first heap trim (at most every 10 s).
    tokio::time::sleep(Duration::from_secs(12)).await;
    let after = rss_kib(pid);
    println!(
        "{mode:>20}: {n} idle /chat sockets, RSS {before} KiB -> {after} KiB: {:.2} KiB per connection",
        (after.saturating_sub(before)) as f64 / n as f64
    );
    for t in tasks {
        t.abort();
    }
    let _ = child.kill();
    let _ = child.wait();
}

async fn serve_engine() {
    use quckchat_sio_server::engine::{
        AckSender, BoxFuture, Config, DisconnectReason, Engine, Namespace, Refusal, Socket,
    };
    use serde_json::value::RawValue;
    struct Chat;
    impl Namespace for Chat {
        fn connect(&self, socket: Socket, _auth: Option<String>) -> BoxFuture<Result<(), Refusal>> {
            socket.set_data(0u64);
            Box::pin(async { Ok(()) })
        }
        fn event(&self, _: &Socket, _: &str, _: &[&RawValue], _: Option<AckSender>) {}
        fn disconnect(&self, _: &Socket, _: DisconnectReason) {}
    }
    let trim_heap = std::env::var_os("NO_TRIM").is_none();
    let engine = Engine::new(Config { ping_interval: Duration::from_secs(1), trim_heap, ..Config::default() });
    engine.namespace("/chat", Chat);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("{}", listener.local_addr().unwrap());
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let _ = stream.set_nodelay(true);
        let engine = engine.clone();
        let direct = std::env::var_os("VIA_HYPER").is_none();
        // The task that waits for the first request is kept small (it ends with the
        // handshake); HTTP, when needed, gets a task of its own.
        tokio::spawn(async move {
            let stream = if direct {
                match engine.serve_direct(stream, "/socket.io/", Box::new(())).await {
                    Some((stream, _)) => stream,
                    None => return,
                }
            } else {
                stream
            };
            tokio::spawn(serve_http(engine, stream));
        });
    }
}

async fn serve_http(engine: quckchat_sio_server::engine::Engine, stream: tokio::net::TcpStream) {
    let service = hyper::service::service_fn(move |req| {
        let response = engine.handle::<tokio::net::TcpStream, _>(req);
        async move { Ok::<_, std::convert::Infallible>(response.map(|b| http_body_util::Full::new(bytes::Bytes::from(b)))) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .with_upgrades()
        .await;
}

async fn serve_socketioxide() {
    use socketioxide::extract::SocketRef;
    let (layer, io) = socketioxide::SocketIo::builder().ping_interval(Duration::from_secs(1)).build_layer();
    io.ns("/chat", async |socket: SocketRef| {
        socket.extensions.insert(0u64);
    });
    let app = axum::Router::new().layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("{}", listener.local_addr().unwrap());
    axum::serve(listener, app).await.unwrap();
}

fn main() {
    let arg = std::env::args().nth(1).unwrap_or_else(|| "5000".into());
    // Servers run on one thread each, as a pinned production server would.
    match arg.as_str() {
        "serve-engine" => {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(serve_engine())
        }
        "serve-socketioxide" => {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(serve_socketioxide())
        }
        n => {
            let n: usize = n.parse().expect("a number of connections");
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
            rt.block_on(async {
                measure("serve-engine", n).await;
                measure("serve-socketioxide", n).await;
            });
        }
    }
}
