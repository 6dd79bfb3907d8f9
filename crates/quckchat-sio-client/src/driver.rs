//! The connection handshake and the background task that owns the WebSocket.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::{debug, trace, warn};

use crate::codec::{self, EnginePacket, OpenPacket, SioPacket};
use crate::{ConnectOptions, DisconnectKind, Error};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a graceful WebSocket close may take before the socket is just dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A request from the [`Client`](crate::Client) to the background task.
pub(crate) enum Command {
    /// Send a raw Engine.IO text frame.
    Send { text: String, done: oneshot::Sender<Result<(), Error>> },
    /// Emit an event on the client's namespace, optionally registering an ack.
    Emit {
        event: String,
        args: Vec<Value>,
        ack: Option<oneshot::Sender<Vec<Value>>>,
        done: oneshot::Sender<Result<(), Error>>,
    },
    /// Send a Socket.IO DISCONNECT, close the WebSocket and stop.
    Close { done: oneshot::Sender<()> },
}

/// Something the background task reports to the [`Client`](crate::Client).
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A Socket.IO EVENT on the client's namespace.
    Event { name: String, args: Vec<Value> },
    /// A packet the client could not handle (malformed, binary, ...).
    Error(String),
    /// The connection ended; this is always the last item sent.
    Disconnected(DisconnectKind),
}

/// Everything [`handshake`] produces.
pub(crate) struct Established {
    pub ws: Ws,
    pub open: OpenPacket,
    pub sid: String,
    /// Events for our namespace received before the CONNECT reply (protocol violation,
    /// but kept rather than dropped).
    pub early_events: Vec<(String, Vec<Value>)>,
}

/// Returns the next text frame, skipping WebSocket control frames.
async fn next_text(ws: &mut Ws) -> Result<String, Error> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Binary(_))) => {
                return Err(Error::Protocol("binary WebSocket frames are not supported".into()));
            }
            Some(Ok(Message::Close(_))) | None => return Err(Error::Closed),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(Error::Ws(e)),
        }
    }
}

fn map_connect_error(e: tungstenite::Error) -> Error {
    match e {
        tungstenite::Error::Http(resp) => {
            let body = resp.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            Error::Http(format!("HTTP {}: {}", resp.status(), body))
        }
        other => Error::Ws(other),
    }
}

/// Opens the WebSocket and performs the Engine.IO open + Socket.IO CONNECT exchange.
/// The caller applies the overall connect timeout.
pub(crate) async fn handshake(opts: &ConnectOptions, nsp: &str) -> Result<Established, Error> {
    if opts.eio != 3 && opts.eio != 4 {
        return Err(Error::Protocol(format!("unsupported Engine.IO version {} (expected 3 or 4)", opts.eio)));
    }
    let url = crate::endpoint::build_ws_url(&opts.base_url, opts.eio, &opts.query)?;
    let mut request = url.as_str().into_client_request()?;
    for (k, v) in &opts.headers {
        let name =
            HeaderName::from_bytes(k.as_bytes()).map_err(|e| Error::Http(format!("invalid header name {k:?}: {e}")))?;
        let value =
            HeaderValue::from_str(v).map_err(|e| Error::Http(format!("invalid value for header {k:?}: {e}")))?;
        request.headers_mut().append(name, value);
    }
    debug!(%url, "socket.io client connecting");
    let (mut ws, _resp) =
        tokio_tungstenite::connect_async_with_config(request, None, true).await.map_err(map_connect_error)?;

    // 1. Engine.IO open packet.
    let open = loop {
        let text = next_text(&mut ws).await?;
        match codec::decode_engine(&text).map_err(|e| Error::Protocol(e.to_string()))? {
            EnginePacket::Open(json) => {
                break OpenPacket::parse(json).map_err(|e| Error::Protocol(e.to_string()))?;
            }
            EnginePacket::Close => return Err(Error::Closed),
            EnginePacket::Ping(p) => ws.send(Message::text(codec::encode_engine_pong(p))).await?,
            EnginePacket::Pong(_) | EnginePacket::Noop => {}
            other => {
                return Err(Error::Protocol(format!("expected Engine.IO open packet, got {other:?}")));
            }
        }
    };
    trace!(engine_sid = %open.sid, "engine.io open");

    // 2. Socket.IO CONNECT. With Engine.IO v3 (Socket.IO protocol v4) the server
    // connects the root namespace implicitly, so no CONNECT (and no auth) is sent for
    // `/`; for other namespaces the auth payload is sent anyway (protocol v4 has no auth
    // field, but servers such as socketioxide read it and legacy servers ignore it).
    if opts.eio >= 4 || nsp != "/" {
        let pkt = codec::encode_connect(nsp, opts.auth.as_ref());
        ws.send(Message::text(codec::encode_engine_message(&pkt))).await?;
    } else if opts.auth.is_some() {
        warn!("auth payload cannot be sent for the root namespace with EIO=3");
    }

    // 3. Wait for the CONNECT reply (or CONNECT_ERROR) of our namespace.
    let mut early_events = Vec::new();
    let sid = loop {
        let text = next_text(&mut ws).await?;
        let msg = match codec::decode_engine(&text).map_err(|e| Error::Protocol(e.to_string()))? {
            EnginePacket::Message(m) => m,
            EnginePacket::Ping(p) => {
                ws.send(Message::text(codec::encode_engine_pong(p))).await?;
                continue;
            }
            EnginePacket::Close => return Err(Error::Closed),
            EnginePacket::Open(_) => {
                return Err(Error::Protocol("duplicate Engine.IO open packet".into()));
            }
            EnginePacket::Pong(_) | EnginePacket::Noop | EnginePacket::Upgrade => continue,
        };
        let pkt = codec::decode_sio(msg).map_err(|e| Error::Protocol(e.to_string()))?;
        if pkt.nsp() != nsp {
            trace!(nsp = pkt.nsp(), "ignoring packet for another namespace during handshake");
            continue;
        }
        match pkt {
            SioPacket::Connect { data, .. } => {
                let sid = data.as_ref().and_then(|d| d.get("sid")).and_then(Value::as_str).map(str::to_owned);
                match sid {
                    Some(sid) => break sid,
                    None if opts.eio < 4 => break open.sid.clone(),
                    None => {
                        return Err(Error::Protocol(format!("CONNECT reply without sid: {text}")));
                    }
                }
            }
            SioPacket::ConnectError { data, .. } => return Err(Error::ConnectRefused(data)),
            SioPacket::Disconnect { .. } => return Err(Error::Closed),
            SioPacket::Event { event, args, .. } => {
                warn!(%event, "event received before CONNECT reply; buffering it");
                early_events.push((event, args));
            }
            SioPacket::Ack { id, .. } => {
                debug!(id, "ignoring ACK received before CONNECT reply");
            }
        }
    };
    debug!(%sid, engine_sid = %open.sid, nsp, "socket.io client connected");
    Ok(Established { ws, open, sid, early_events })
}

/// Closes the WebSocket politely (close frame, then wait for the peer's close), bounded
/// by [`CLOSE_GRACE`].
async fn shutdown(ws: &mut Ws) {
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if ws.close(None).await.is_err() {
            return;
        }
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// What to do after handling one frame.
enum Flow {
    Continue,
    Stop(DisconnectKind),
}

/// State of the background task.
pub(crate) struct Driver {
    pub ws: Ws,
    pub nsp: String,
    pub eio: u8,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub cmd_rx: mpsc::UnboundedReceiver<Command>,
    pub events_tx: mpsc::UnboundedSender<Incoming>,
    pub connected: Arc<AtomicBool>,
    pub pending: HashMap<u64, oneshot::Sender<Vec<Value>>>,
    pub next_ack_id: u64,
}

impl Driver {
    /// Runs until the connection ends or the client goes away.
    pub(crate) async fn run(mut self) {
        // If nothing arrives within pingInterval + pingTimeout the server is gone.
        let liveness = self.ping_interval + self.ping_timeout;
        let mut deadline = Instant::now() + liveness;
        // Engine.IO v3: the client pings every pingInterval.
        let v3 = self.eio < 4;
        let period = self.ping_interval.max(Duration::from_millis(1));
        let mut ping_timer = tokio::time::interval_at(Instant::now() + period, period);
        ping_timer.set_missed_tick_behavior(MissedTickBehavior::Delay);

        let kind = loop {
            tokio::select! {
                msg = self.ws.next() => {
                    let flow = match msg {
                        Some(Ok(Message::Text(t))) => {
                            deadline = Instant::now() + liveness;
                            self.on_text(t.as_str()).await
                        }
                        Some(Ok(Message::Binary(_))) => {
                            deadline = Instant::now() + liveness;
                            self.report_error("binary WebSocket frames are not supported".into());
                            Flow::Continue
                        }
                        Some(Ok(Message::Close(frame))) => {
                            debug!(?frame, "websocket closed by server");
                            Flow::Stop(DisconnectKind::TransportClosed)
                        }
                        Some(Ok(_)) => Flow::Continue,
                        Some(Err(e)) => {
                            debug!(error = %e, "websocket error");
                            Flow::Stop(DisconnectKind::TransportClosed)
                        }
                        None => Flow::Stop(DisconnectKind::TransportClosed),
                    };
                    if let Flow::Stop(kind) = flow {
                        break kind;
                    }
                }
                cmd = self.cmd_rx.recv() => {
                    match cmd {
                        None => {
                            // The Client was dropped.
                            trace!("client dropped; closing websocket");
                            self.connected.store(false, Ordering::SeqCst);
                            shutdown(&mut self.ws).await;
                            return;
                        }
                        Some(Command::Close { done }) => {
                            self.connected.store(false, Ordering::SeqCst);
                            let pkt = codec::encode_engine_message(&codec::encode_disconnect(&self.nsp));
                            if let Err(e) = self.ws.send(Message::text(pkt)).await {
                                debug!(error = %e, "failed to send DISCONNECT");
                            }
                            shutdown(&mut self.ws).await;
                            let _ = done.send(());
                            return;
                        }
                        Some(cmd) => {
                            if let Flow::Stop(kind) = self.on_command(cmd).await {
                                break kind;
                            }
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    warn!(?liveness, "no data from server within pingInterval + pingTimeout");
                    break DisconnectKind::TransportClosed;
                }
                _ = ping_timer.tick(), if v3 => {
                    if let Err(e) = self.ws.send(Message::text(codec::encode_engine_ping(""))).await {
                        debug!(error = %e, "failed to send ping");
                        break DisconnectKind::TransportClosed;
                    }
                }
            }
        };

        self.connected.store(false, Ordering::SeqCst);
        // Dropping the senders makes waiting `emit_with_ack` calls fail with Closed.
        self.pending.clear();
        let _ = self.events_tx.send(Incoming::Disconnected(kind));
        shutdown(&mut self.ws).await;
    }

    fn report_error(&self, msg: String) {
        warn!(%msg, "socket.io client received an unsupported or malformed packet");
        let _ = self.events_tx.send(Incoming::Error(msg));
    }

    async fn send_text(&mut self, text: String) -> Result<(), tungstenite::Error> {
        self.ws.send(Message::text(text)).await
    }

    async fn on_command(&mut self, cmd: Command) -> Flow {
        match cmd {
            Command::Send { text, done } => {
                let res = self.send_text(text).await;
                let failed = res.is_err();
                let _ = done.send(res.map_err(Error::from));
                if failed { Flow::Stop(DisconnectKind::TransportClosed) } else { Flow::Continue }
            }
            Command::Emit { event, args, ack, done } => {
                let id = match ack {
                    Some(tx) => {
                        // Forget acks whose caller has given up (timed out).
                        self.pending.retain(|_, tx| !tx.is_closed());
                        let id = self.next_ack_id;
                        self.next_ack_id = self.next_ack_id.wrapping_add(1);
                        self.pending.insert(id, tx);
                        Some(id)
                    }
                    None => None,
                };
                let pkt = codec::encode_event(&self.nsp, &event, &args, id);
                let res = self.send_text(codec::encode_engine_message(&pkt)).await;
                let failed = res.is_err();
                if failed && let Some(id) = id {
                    self.pending.remove(&id);
                }
                let _ = done.send(res.map_err(Error::from));
                if failed { Flow::Stop(DisconnectKind::TransportClosed) } else { Flow::Continue }
            }
            // Handled in `run`.
            Command::Close { done } => {
                let _ = done.send(());
                Flow::Continue
            }
        }
    }

    async fn on_text(&mut self, text: &str) -> Flow {
        let packet = match codec::decode_engine(text) {
            Ok(p) => p,
            Err(e) => {
                self.report_error(format!("bad Engine.IO packet {text:?}: {e}"));
                return Flow::Continue;
            }
        };
        match packet {
            EnginePacket::Ping(p) => {
                let pong = codec::encode_engine_pong(p);
                if let Err(e) = self.send_text(pong).await {
                    debug!(error = %e, "failed to send pong");
                    return Flow::Stop(DisconnectKind::TransportClosed);
                }
                Flow::Continue
            }
            EnginePacket::Pong(_) | EnginePacket::Noop | EnginePacket::Upgrade => Flow::Continue,
            EnginePacket::Close => {
                debug!("engine.io close packet from server");
                Flow::Stop(DisconnectKind::TransportClosed)
            }
            EnginePacket::Open(_) => {
                self.report_error("unexpected Engine.IO open packet".into());
                Flow::Continue
            }
            EnginePacket::Message(m) => self.on_sio(m),
        }
    }

    fn on_sio(&mut self, text: &str) -> Flow {
        let packet = match codec::decode_sio(text) {
            Ok(p) => p,
            Err(e) => {
                self.report_error(format!("bad Socket.IO packet {text:?}: {e}"));
                return Flow::Continue;
            }
        };
        if packet.nsp() != self.nsp {
            trace!(nsp = packet.nsp(), "ignoring packet for another namespace");
            return Flow::Continue;
        }
        match packet {
            SioPacket::Event { event, args, id, .. } => {
                if let Some(id) = id {
                    debug!(%event, id, "server requested an ack; this client does not send acks");
                }
                let _ = self.events_tx.send(Incoming::Event { name: event, args });
                Flow::Continue
            }
            SioPacket::Ack { id, args, .. } => {
                match self.pending.remove(&id) {
                    Some(tx) => {
                        let _ = tx.send(args);
                    }
                    None => debug!(id, "ACK for unknown or expired id"),
                }
                Flow::Continue
            }
            SioPacket::Disconnect { .. } => {
                debug!(nsp = %self.nsp, "server disconnected the socket");
                Flow::Stop(DisconnectKind::ServerDisconnect)
            }
            SioPacket::Connect { .. } => {
                debug!("ignoring duplicate CONNECT reply");
                Flow::Continue
            }
            SioPacket::ConnectError { data, .. } => {
                self.report_error(format!("CONNECT_ERROR after connect: {data}"));
                Flow::Continue
            }
        }
    }
}
