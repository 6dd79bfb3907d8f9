//! This engine beside bare socketioxide, one server process each (pinned to core 0 when
//! `taskset` is there), driven from this process the same way:
//!
//! - `compare idle N`: opens N WebSockets, joins `/chat` on each (every socket joins room
//!   `r`), lets them sit idle for 12 s (through pings, past the engine's first heap trim)
//!   and prints the server's RSS growth per connection (`/proc/PID/status`).
//! - `compare connects N CONCURRENCY`: N clients, CONCURRENCY at a time, each opening a
//!   WebSocket, joining `/chat` and closing: joined connects per second and server CPU.
//! - `compare fanout ROOM RATE SECONDS`: ROOM sockets in room `r`; one more socket sends
//!   `shout` RATE times a second for SECONDS; each is broadcast to the room. Prints the
//!   server's CPU time (`/proc/PID/stat`) per delivery and checks every delivery arrived,
//!   beside the floor: a bare writer doing one `write` of a prebuilt frame per delivery.
//!
//! `NO_TRIM=1` turns off the engine's heap trim after connection storms
//! (`Config::trim_heap`): the difference is heap fragmentation, not live memory.

// A tool, not a server anyone depends on: a failed bind or connect ends it with the reason (`expect`).
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const SERVERS: [&str; 2] = ["serve-engine", "serve-socketioxide"];

fn proc_field(pid: u32, file: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default()
}

fn rss_kib(pid: u32) -> u64 {
    proc_field(pid, "status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// User + system CPU time of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = proc_field(pid, "stat");
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: state is field 3, utime 14 and stime 15 (1-based, name is 2).
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    ticks as f64 / 100.0
}

fn spawn(mode: &str) -> (Child, String) {
    let exe = std::env::current_exe().expect("own path");
    let pinned = Command::new("taskset").arg("-V").output().is_ok();
    let mut command = if pinned {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    let mut child = command.arg(mode).stdout(Stdio::piped()).spawn().expect("server process");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("address");
    (child, line.trim().to_string())
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A socket on `/chat`, past its CONNECT.
async fn join(addr: &str) -> Ws {
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("connect");
    ws.next().await.expect("open").expect("open");
    ws.send(Message::text(r#"40/chat,{"token":"t"}"#)).await.expect("send");
    ws.next().await.expect("connected").expect("connected");
    ws
}

/// Reads until closed, answering pings and counting `heard` events.
async fn receive(mut ws: Ws, heard: Arc<AtomicU64>) {
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Text(t) = m {
            if t.as_str() == "2" {
                let _ = ws.send(Message::text("3")).await;
            } else if t.as_str().starts_with(r#"42/chat,["heard""#) {
                heard.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn idle(mode: &str, n: usize) {
    let (mut child, addr) = spawn(mode);
    let pid = child.id();
    let before = rss_kib(pid);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(n);
    let heard = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (addr, ready, heard) = (addr.clone(), ready_tx.clone(), heard.clone());
        tasks.push(tokio::spawn(async move {
            let ws = join(&addr).await;
            let _ = ready.send(()).await;
            receive(ws, heard).await;
        }));
    }
    for _ in 0..n {
        ready_rx.recv().await;
    }
    tokio::time::sleep(Duration::from_secs(12)).await;
    let after = rss_kib(pid);
    println!(
        "{mode:>20}: {n} idle /chat sockets, RSS {before} KiB -> {after} KiB: {:.2} KiB per connection",
        after.saturating_sub(before) as f64 / n as f64
    );
    tasks.iter().for_each(|t| t.abort());
    let _ = child.kill();
    let _ = child.wait();
}

/// Joined connects per second: `n` clients, `concurrency` at a time, each opening a
/// WebSocket and joining `/chat` (until its CONNECT reply), then closing.
async fn connects(mode: &str, n: usize, concurrency: usize) {
    let (mut child, addr) = spawn(mode);
    let pid = child.id();
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (addr, next) = (addr.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut done = 0u64;
            while next.fetch_add(1, Ordering::Relaxed) < n as u64 {
                let mut ws = join(&addr).await;
                let _ = ws.close(None).await;
                done += 1;
            }
            done
        }));
    }
    let mut joined = 0;
    for w in workers {
        joined += w.await.unwrap_or(0);
    }
    let took = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_before;
    println!(
        "{mode:>20}: {joined} joined connects ({concurrency} at a time) in {took:.2} s = {:.0}/s, server CPU {:.1} µs each",
        joined as f64 / took,
        cpu * 1e6 / joined.max(1) as f64
    );
    let _ = child.kill();
    let _ = child.wait();
}

async fn fanout(mode: &str, room: usize, rate: u64, seconds: u64) {
    let (mut child, addr) = spawn(mode);
    let pid = child.id();
    let heard = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..room {
        let ws = join(&addr).await;
        tasks.push(tokio::spawn(receive(ws, heard.clone())));
    }
    let mut sender = join(&addr).await;
    let total = rate * seconds;
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let mut timer = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    for i in 0..total {
        timer.tick().await;
        let text = format!(r#"42/chat,["shout",{{"n":{i},"text":"hello, room"}}]"#);
        sender.send(Message::text(text)).await.expect("shout");
    }
    let expected = total * room as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while heard.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = cpu_seconds(pid) - cpu_before;
    let got = heard.load(Ordering::Relaxed);
    println!(
        "{mode:>20}: room {room}, {rate}/s for {seconds} s: {got}/{expected} delivered in {:.1} s, server CPU {cpu:.2} s = {:.2} µs per delivery",
        started.elapsed().as_secs_f64(),
        cpu * 1e6 / got.max(1) as f64
    );
    tasks.iter().for_each(|t| t.abort());
    let _ = child.kill();
    let _ = child.wait();
}

async fn serve_engine() {
    use quckchat_sio_server::engine::{
        AckSender, BoxFuture, Broadcast, Config, DisconnectReason, Engine, Namespace, Refusal, Socket,
    };
    use serde_json::value::RawValue;
    struct Chat(std::sync::OnceLock<Engine>);
    impl Namespace for Chat {
        fn connect(&self, socket: Socket, _auth: Option<String>) -> BoxFuture<Result<(), Refusal>> {
            Box::pin(async move {
                socket.set_data(0u64);
                socket.join("r");
                Ok(())
            })
        }
        fn event(&self, socket: &Socket, event: &str, args: &[&RawValue], _: Option<AckSender>) {
            if let (Some(engine), "shout", Some(payload)) = (self.0.get(), event, args.first()) {
                let to = Broadcast { rooms: vec!["r".into()], except: Vec::new() };
                engine.broadcast(socket.namespace(), &to, "heard", payload.get());
            }
        }
        fn disconnect(&self, _: &Socket, _: DisconnectReason) {}
    }
    let trim_heap = std::env::var_os("NO_TRIM").is_none();
    let engine = Engine::new(Config { ping_interval: Duration::from_secs(1), trim_heap, ..Config::default() });
    let chat = Arc::new(Chat(std::sync::OnceLock::new()));
    let _ = chat.0.set(engine.clone());
    engine.namespace("/chat", chat);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("{}", listener.local_addr().expect("address"));
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let engine = engine.clone();
        // The task that waits for the first request ends with the handshake.
        tokio::spawn(async move {
            if let Some((stream, _)) = engine.serve_direct(stream, "/socket.io/", Box::new(())).await {
                eprintln!("not an upgrade the engine takes directly");
                drop(stream);
            }
        });
    }
}

/// The floor: the least a server can do per delivery. Handshakes by hand, answers the
/// namespace CONNECT, and for each `shout` writes one prebuilt frame to every socket with
/// a plain `write` (no queue, no rooms, no encoding). Only for `fanout`.
async fn serve_floor() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("{}", listener.local_addr().expect("address"));
    let sockets: Arc<std::sync::Mutex<Vec<Arc<tokio::net::TcpStream>>>> = Arc::default();
    let frame = quckchat_sio_server::ws::text_frame(r#"42/chat,["heard",{"n":0,"text":"hello, room"}]"#);
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let (sockets, frame) = (sockets.clone(), frame.clone());
        tokio::spawn(async move {
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") {
                if stream.read_exact(&mut byte).await.is_err() {
                    return;
                }
                request.push(byte[0]);
            }
            let text = String::from_utf8_lossy(&request);
            let Some(key) = text.lines().find_map(|l| l.strip_prefix("Sec-WebSocket-Key: ")) else { return };
            let accept = quckchat_sio_server::upgrade::accept_key(key.trim().as_bytes());
            let response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let open =
                r#"0{"sid":"floor","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
            let _ = stream.write_all(&quckchat_sio_server::ws::text_frame(open)).await;
            let stream = Arc::new(stream);
            let mut decoder = quckchat_sio_server::ws::Decoder::new(1 << 20);
            let mut pending = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                if stream.readable().await.is_err() {
                    return;
                }
                let n = match stream.try_read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(_) => return,
                };
                pending.extend_from_slice(&buf[..n]);
                while let Ok(Some((used, message))) = decoder.decode(&mut pending) {
                    if let Some(quckchat_sio_server::ws::Message::Text(t)) = message {
                        if t.starts_with("40/chat,") {
                            let _ = stream.try_write(&quckchat_sio_server::ws::text_frame(r#"40/chat,{"sid":"s"}"#));
                            sockets.lock().expect("sockets").push(stream.clone());
                        } else if t.starts_with(r#"42/chat,["shout""#) {
                            let all = sockets.lock().expect("sockets").clone();
                            for s in all.iter().filter(|s| !Arc::ptr_eq(s, &stream)) {
                                let _ = s.try_write(&frame);
                            }
                        }
                    }
                    pending.drain(..used);
                }
            }
        });
    }
}

async fn serve_socketioxide() {
    use socketioxide::extract::{Data, SocketRef};
    let (layer, io) = socketioxide::SocketIo::builder().ping_interval(Duration::from_secs(1)).build_layer();
    io.ns("/chat", async |socket: SocketRef| {
        socket.extensions.insert(0u64);
        socket.join("r");
        socket.on("shout", async |socket: SocketRef, Data::<serde_json::Value>(payload)| {
            let _ = socket.within("r").emit("heard", &payload).await;
        });
    });
    let app = axum::Router::new().layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("{}", listener.local_addr().expect("address"));
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await.expect("serve");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, default: u64| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(default);
    let current = || tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let clients = || tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    match args.first().map(String::as_str) {
        // Servers run on one thread, as a pinned production server would.
        Some("serve-engine") => current().block_on(serve_engine()),
        Some("serve-socketioxide") => current().block_on(serve_socketioxide()),
        Some("serve-floor") => current().block_on(serve_floor()),
        Some("idle") => clients().block_on(async {
            for mode in SERVERS {
                idle(mode, num(1, 5000) as usize).await;
            }
        }),
        Some("connects") => clients().block_on(async {
            for mode in SERVERS {
                connects(mode, num(1, 20_000) as usize, num(2, 64) as usize).await;
            }
        }),
        Some("fanout") => clients().block_on(async {
            for mode in ["serve-floor", SERVERS[0], SERVERS[1]] {
                fanout(mode, num(1, 100) as usize, num(2, 200), num(3, 5)).await;
            }
        }),
        _ => eprintln!("usage: compare idle N | compare fanout ROOM RATE SECONDS"),
    }
}
