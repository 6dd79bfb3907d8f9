//! quckchat-sio-client: a small Socket.IO v5 / Engine.IO v4 client over WebSocket only.
//!
//! It is meant for integration tests and load generation against the QuckChat server,
//! not as a general-purpose Socket.IO client: there is no HTTP long-polling, no
//! reconnection, no binary packets, and a [`Client`] is bound to exactly one namespace.
//! Engine.IO v3 (`EIO=3`, Socket.IO protocol v4) is supported on a best-effort basis
//! via [`ConnectOptions::eio`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), quckchat_sio_client::Error> {
//! use std::time::Duration;
//! use quckchat_sio_client::{Client, ConnectOptions};
//! use serde_json::json;
//!
//! let opts = ConnectOptions::new("http://127.0.0.1:3000", "/chat")
//!     .auth(json!({ "token": "..." }));
//! let mut client = Client::connect(opts).await?;
//! let ack = client
//!     .emit_with_ack("message:send", json!({ "text": "hi" }), Duration::from_secs(2))
//!     .await?;
//! let msg = client.expect("message:new", Duration::from_secs(2)).await?;
//! # let _ = (ack, msg);
//! client.close().await;
//! # Ok(()) }
//! ```
//!
//! ## Behaviour notes
//!
//! * One background tokio task per client owns the WebSocket. It answers Engine.IO pings
//!   (v4) or sends them (v3), resolves acks, forwards events and detects disconnection
//!   (including a missing heartbeat for `pingInterval + pingTimeout`).
//! * Events the server emits *with* an ack id are delivered like any other event; this
//!   client never sends acks back to the server.
//! * Malformed or unsupported (binary) packets received from the server are reported
//!   as [`Error::Protocol`] by the next [`Client::expect`] / [`Client::expect_where`] /
//!   [`Client::next_event`] call that encounters them.
//! * Dropping a [`Client`] closes the WebSocket (without a Socket.IO DISCONNECT) and
//!   ends its task; [`Client::close`] sends the DISCONNECT first.

#![warn(missing_docs)]

pub mod codec;
mod driver;
mod endpoint;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::driver::{Command, Driver, Incoming};

/// Options for [`Client::connect`].
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Base URL of the server, e.g. `http://127.0.0.1:3000` (`http`, `https`, `ws` and
    /// `wss` schemes are accepted; `https`/`wss` need a TLS-enabled `tokio-tungstenite`,
    /// which this crate does not enable). A path in the URL is used as a prefix in front
    /// of `/socket.io/`.
    pub base_url: String,
    /// The Socket.IO namespace to connect to, e.g. `/` or `/chat` (a missing leading `/`
    /// is added).
    pub namespace: String,
    /// Optional auth payload sent in the CONNECT packet. With `eio = 3` it cannot be sent
    /// for the root namespace `/` (which the server connects implicitly).
    pub auth: Option<Value>,
    /// Extra query pairs appended to the connection URL (percent-encoded).
    pub query: Vec<(String, String)>,
    /// Extra HTTP headers sent with the WebSocket upgrade request.
    pub headers: Vec<(String, String)>,
    /// Engine.IO protocol version: 4 (default) or 3.
    pub eio: u8,
    /// Timeout for the whole connect sequence (TCP + WebSocket + Engine.IO + Socket.IO
    /// handshakes). Defaults to 5 seconds.
    pub timeout: Duration,
}

impl ConnectOptions {
    /// Creates options for `base_url` and `namespace` with no auth, no extra query or
    /// headers, Engine.IO v4 and a 5 second connect timeout.
    pub fn new(base_url: impl Into<String>, namespace: impl Into<String>) -> Self {
        ConnectOptions {
            base_url: base_url.into(),
            namespace: namespace.into(),
            auth: None,
            query: Vec::new(),
            headers: Vec::new(),
            eio: 4,
            timeout: Duration::from_secs(5),
        }
    }

    /// Sets the auth payload sent with the Socket.IO CONNECT packet.
    pub fn auth(mut self, auth: Value) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Appends a query pair to the connection URL.
    pub fn query(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((key.into(), value.into()));
        self
    }

    /// Appends an HTTP header to the WebSocket upgrade request.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the Engine.IO protocol version (3 or 4).
    pub fn eio(mut self, eio: u8) -> Self {
        self.eio = eio;
        self
    }

    /// Sets the connect timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Why a connection ended (see [`Client::wait_disconnect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectKind {
    /// The server sent a Socket.IO DISCONNECT packet (`1`) for this namespace.
    ServerDisconnect,
    /// The transport went away: Engine.IO close packet, WebSocket close or error, or a
    /// missed heartbeat.
    TransportClosed,
}

/// Errors returned by this crate.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    /// The operation did not complete in time.
    #[error("timed out")]
    Timeout,
    /// The server refused the namespace connection with a CONNECT_ERROR packet; the
    /// payload is carried as-is (e.g. `{"message":"unauthorized"}`).
    #[error("connection refused by server: {0}")]
    ConnectRefused(Value),
    /// The connection is closed.
    #[error("connection closed")]
    Closed,
    /// The peer violated the protocol or sent something unsupported (e.g. binary packets).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A WebSocket error.
    #[error("websocket error: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    /// A JSON error.
    #[error("json error: {0}")]
    Json(#[from] serde_json::Error),
    /// An invalid URL or header, or the server answered the upgrade request with a
    /// non-101 HTTP response (the message contains the status and body).
    #[error("http error: {0}")]
    Http(String),
}

/// The `Value::Null` returned when an event or ack has no arguments.
const NULL: Value = Value::Null;

fn first_arg(args: &[Value]) -> &Value {
    args.first().unwrap_or(&NULL)
}

fn into_first_arg(args: Vec<Value>) -> Value {
    args.into_iter().next().unwrap_or(Value::Null)
}

/// A Socket.IO client connected to one namespace.
///
/// Events received from the server are queued; [`expect`](Client::expect),
/// [`expect_where`](Client::expect_where) and [`next_event`](Client::next_event) consume
/// them, and events skipped by `expect*` are kept in an internal buffer (in arrival
/// order) for later calls.
#[derive(Debug)]
pub struct Client {
    sid: String,
    engine_sid: String,
    namespace: String,
    cmd_tx: mpsc::UnboundedSender<Command>,
    events_rx: mpsc::UnboundedReceiver<Incoming>,
    buffer: VecDeque<(String, Vec<Value>)>,
    disconnected: Option<DisconnectKind>,
    connected: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Client {
    /// Connects to the server: opens the WebSocket at
    /// `ws://HOST:PORT/socket.io/?EIO=4&transport=websocket[&query...]`, waits for the
    /// Engine.IO open packet, sends the Socket.IO CONNECT for the namespace (with the
    /// auth payload) and waits for the server's reply.
    ///
    /// Errors: [`Error::ConnectRefused`] with the CONNECT_ERROR payload,
    /// [`Error::Timeout`] if the whole sequence exceeds [`ConnectOptions::timeout`],
    /// [`Error::Http`] for a bad URL/header or a non-101 upgrade response, and
    /// [`Error::Ws`] / [`Error::Protocol`] / [`Error::Closed`] otherwise.
    pub async fn connect(opts: ConnectOptions) -> Result<Client, Error> {
        let nsp = codec::normalize_nsp(&opts.namespace);
        let est =
            tokio::time::timeout(opts.timeout, driver::handshake(&opts, &nsp)).await.map_err(|_| Error::Timeout)??;

        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let connected = Arc::new(AtomicBool::new(true));
        let driver = Driver {
            ws: est.ws,
            nsp: nsp.clone(),
            eio: opts.eio,
            ping_interval: Duration::from_millis(est.open.ping_interval_ms),
            ping_timeout: Duration::from_millis(est.open.ping_timeout_ms),
            cmd_rx,
            events_tx,
            connected: connected.clone(),
            pending: HashMap::new(),
            next_ack_id: 0,
        };
        let task = tokio::spawn(driver.run());
        Ok(Client {
            sid: est.sid,
            engine_sid: est.open.sid,
            namespace: nsp,
            cmd_tx,
            events_rx,
            buffer: est.early_events.into(),
            disconnected: None,
            connected,
            task,
        })
    }

    /// The Socket.IO socket id from the server's CONNECT reply (with Engine.IO v3, where
    /// the reply carries no sid, this is the Engine.IO session id).
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// The Engine.IO session id from the open packet.
    pub fn engine_sid(&self) -> &str {
        &self.engine_sid
    }

    /// The namespace this client is connected to (normalized, e.g. `/chat`).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    async fn command<T>(&self, cmd: Command, rx: oneshot::Receiver<T>) -> Result<T, Error> {
        self.cmd_tx.send(cmd).map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// Emits `event` with a single argument `data` (no ack). Resolves once the frame has
    /// been written to the WebSocket.
    pub async fn emit(&self, event: &str, data: Value) -> Result<(), Error> {
        self.emit_args(event, vec![data]).await
    }

    /// Emits `event` with any number of arguments (no ack). Resolves once the frame has
    /// been written to the WebSocket.
    pub async fn emit_args(&self, event: &str, args: Vec<Value>) -> Result<(), Error> {
        let (done, rx) = oneshot::channel();
        let cmd = Command::Emit { event: event.to_owned(), args, ack: None, done };
        self.command(cmd, rx).await?
    }

    /// Emits `event` with one argument and an ack id, and waits up to `timeout` for the
    /// server's ACK. Returns the first ack argument (or `Value::Null` if the ack has no
    /// arguments). Fails with [`Error::Timeout`] on timeout and [`Error::Closed`] if the
    /// connection ends first.
    pub async fn emit_with_ack(&self, event: &str, data: Value, timeout: Duration) -> Result<Value, Error> {
        self.emit_args_with_ack(event, vec![data], timeout).await.map(into_first_arg)
    }

    /// Like [`emit_with_ack`](Client::emit_with_ack) but with any number of arguments,
    /// returning all ack arguments.
    pub async fn emit_args_with_ack(
        &self,
        event: &str,
        args: Vec<Value>,
        timeout: Duration,
    ) -> Result<Vec<Value>, Error> {
        let (ack_tx, ack_rx) = oneshot::channel();
        let (done, done_rx) = oneshot::channel();
        let cmd = Command::Emit { event: event.to_owned(), args, ack: Some(ack_tx), done };
        tokio::time::timeout(timeout, async {
            self.command(cmd, done_rx).await??;
            ack_rx.await.map_err(|_| Error::Closed)
        })
        .await
        .map_err(|_| Error::Timeout)?
    }

    /// Sends a raw Engine.IO text frame as-is (e.g. `42/chat,["message:send", {bad` to
    /// test the server's handling of malformed input). Resolves once written.
    pub async fn send_raw(&self, engine_io_text: &str) -> Result<(), Error> {
        let (done, rx) = oneshot::channel();
        let cmd = Command::Send { text: engine_io_text.to_owned(), done };
        self.command(cmd, rx).await?
    }

    /// Receives the next live item before `deadline`, recording a disconnect.
    async fn recv_live(&mut self, deadline: Instant) -> Result<Incoming, Error> {
        match tokio::time::timeout_at(deadline, self.events_rx.recv()).await {
            Err(_) => Err(Error::Timeout),
            Ok(Some(Incoming::Disconnected(kind))) => {
                self.disconnected = Some(kind);
                Ok(Incoming::Disconnected(kind))
            }
            Ok(Some(item)) => Ok(item),
            Ok(None) => {
                let kind = *self.disconnected.get_or_insert(DisconnectKind::TransportClosed);
                Ok(Incoming::Disconnected(kind))
            }
        }
    }

    /// Waits up to `timeout` for the next event named `event` and returns its first
    /// argument (`Value::Null` if it has none). Buffered events are searched first;
    /// events with other names that arrive meanwhile are buffered, in order, for later
    /// calls.
    ///
    /// Fails with [`Error::Timeout`], [`Error::Closed`] if the connection ended, or
    /// [`Error::Protocol`] if a malformed/unsupported packet arrived while waiting.
    pub async fn expect(&mut self, event: &str, timeout: Duration) -> Result<Value, Error> {
        self.expect_where(event, timeout, |_| true).await
    }

    /// Like [`expect`](Client::expect), but only accepts an event whose first argument
    /// satisfies `pred`; same-name events that do not match are buffered too.
    pub async fn expect_where(
        &mut self,
        event: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value, Error> {
        let deadline = Instant::now() + timeout;
        if let Some(pos) = self.buffer.iter().position(|(name, args)| name == event && pred(first_arg(args)))
            && let Some((_, args)) = self.buffer.remove(pos)
        {
            return Ok(into_first_arg(args));
        }
        if self.disconnected.is_some() {
            return Err(Error::Closed);
        }
        loop {
            match self.recv_live(deadline).await? {
                Incoming::Event { name, args } => {
                    if name == event && pred(first_arg(&args)) {
                        return Ok(into_first_arg(args));
                    }
                    self.buffer.push_back((name, args));
                }
                Incoming::Error(msg) => return Err(Error::Protocol(msg)),
                Incoming::Disconnected(_) => return Err(Error::Closed),
            }
        }
    }

    /// Returns the next event (name, first argument): the oldest buffered one if any,
    /// otherwise the next live one, waiting up to `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Result<(String, Value), Error> {
        if let Some((name, args)) = self.buffer.pop_front() {
            return Ok((name, into_first_arg(args)));
        }
        if self.disconnected.is_some() {
            return Err(Error::Closed);
        }
        let deadline = Instant::now() + timeout;
        match self.recv_live(deadline).await? {
            Incoming::Event { name, args } => Ok((name, into_first_arg(args))),
            Incoming::Error(msg) => Err(Error::Protocol(msg)),
            Incoming::Disconnected(_) => Err(Error::Closed),
        }
    }

    /// Returns, without waiting, every event received so far and not yet consumed
    /// (buffered ones first, then those already queued by the background task), as
    /// (name, first argument) pairs. Protocol errors queued meanwhile are logged and
    /// discarded.
    pub fn take_buffered(&mut self) -> Vec<(String, Value)> {
        while let Ok(item) = self.events_rx.try_recv() {
            match item {
                Incoming::Event { name, args } => self.buffer.push_back((name, args)),
                Incoming::Error(msg) => {
                    tracing::warn!(%msg, "discarding protocol error in take_buffered")
                }
                Incoming::Disconnected(kind) => self.disconnected = Some(kind),
            }
        }
        self.buffer.drain(..).map(|(name, args)| (name, into_first_arg(args))).collect()
    }

    /// Waits up to `timeout` for the connection to end and tells why: the server sent a
    /// Socket.IO DISCONNECT for this namespace ([`DisconnectKind::ServerDisconnect`]), or
    /// the transport closed ([`DisconnectKind::TransportClosed`]). Returns immediately if
    /// that already happened. Events arriving meanwhile are buffered; protocol errors
    /// are logged and ignored.
    pub async fn wait_disconnect(&mut self, timeout: Duration) -> Result<DisconnectKind, Error> {
        if let Some(kind) = self.disconnected {
            return Ok(kind);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.recv_live(deadline).await? {
                Incoming::Event { name, args } => self.buffer.push_back((name, args)),
                Incoming::Error(msg) => {
                    tracing::warn!(%msg, "ignoring protocol error while waiting for disconnect")
                }
                Incoming::Disconnected(kind) => return Ok(kind),
            }
        }
    }

    /// Whether the connection is still up, as far as this client knows.
    pub fn is_connected(&self) -> bool {
        self.disconnected.is_none() && self.connected.load(Ordering::SeqCst)
    }

    /// Sends a Socket.IO DISCONNECT (`41/nsp,`) and closes the WebSocket, waiting
    /// (bounded) for the close handshake to finish.
    pub async fn close(self) {
        let (done, rx) = oneshot::channel();
        if self.cmd_tx.send(Command::Close { done }).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(3), rx).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.task).await;
    }
}
