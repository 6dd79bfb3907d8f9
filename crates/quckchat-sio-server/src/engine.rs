//! The engine: Engine.IO sessions (v4, and v3 for socket.io-client 2.x) over WebSocket or
//! HTTP long-polling, carrying Socket.IO namespaces, rooms and
//! broadcasts, heartbeats from one shared sweep.
//!
//! Per connection the engine keeps one task (blocked on readiness, owning nothing but its
//! decoder), a [`Transport`], and a small [`Conn`]: the Engine.IO sid, the heartbeat
//! state, and the namespace sockets it carries. Handlers are per namespace, not per
//! socket, so a socket costs its id, its rooms and what its namespace stores in it.
//!
//! Not yet here (issue 12, later steps): connection state recovery, the fleet adapter.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::value::RawValue;
use tokio::net::TcpStream;

use crate::eio::{self, Packet as EioPacket};
use crate::polling::Polling;
use crate::sio::{self, Kind};
use crate::transport::{Ended, Inbound, SendError, Transport};
use crate::ws;

/// A boxed future, as namespace handlers return them.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The engine's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Time between the server's pings.
    pub ping_interval: Duration,
    /// How long a pong may take before the connection is closed.
    pub ping_timeout: Duration,
    /// The largest message accepted, in bytes.
    pub max_payload: usize,
    /// The most bytes queued for a client that does not read before it is cut off.
    pub send_budget: usize,
    /// How long a client may stay connected without joining a namespace.
    pub connect_timeout: Duration,
    /// Give freed heap pages back to the OS after a storm of connects or disconnects
    /// (glibc's `malloc_trim`, at most every 10 s, off the async threads). Upgrades that go
    /// through an HTTP server free its per-connection buffers between the long-lived state
    /// of the connections opened meanwhile; the holes stay in the process otherwise
    /// (measured through hyper at 5,000 idle sockets: 5.4 KiB of RSS per connection
    /// without, 3.4 KiB with). Upgrades taken by [`Engine::serve_direct`] leave no such
    /// holes (2.4 KiB either way). No effect on other platforms.
    pub trim_heap: bool,
    /// How long [`Engine::serve_direct`] waits for a connection's first request.
    pub first_request_timeout: Duration,
    /// Serve Engine.IO v3 / Socket.IO v4 clients (socket.io-client 2.x).
    pub allow_eio3: bool,
    /// Serve HTTP long-polling (and the upgrade from it). Off, polling requests are
    /// refused and WebSocket is the only transport.
    pub polling: bool,
    /// Request headers kept for the namespaces' connect handlers ([`Socket::header`]),
    /// lowercase (`authorization`). Only these are kept: a connection holds nothing else
    /// of its request.
    pub keep_headers: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            max_payload: 1_000_000,
            send_budget: 4 << 20,
            connect_timeout: Duration::from_secs(45),
            trim_heap: true,
            first_request_timeout: Duration::from_secs(10),
            allow_eio3: true,
            polling: true,
            keep_headers: Vec::new(),
        }
    }
}

/// Why a namespace refused a connection: sent to the client as CONNECT_ERROR `{message,
/// data}`.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The message the client's `connect_error` shows.
    pub message: String,
    /// Extra JSON (`data`), written as is.
    pub data: Option<Box<RawValue>>,
}

/// Why a socket left its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client left the namespace (`socket.disconnect()`).
    ClientNamespaceDisconnect,
    /// The server made it leave ([`Socket::disconnect`]).
    ServerNamespaceDisconnect,
    /// The client closed the connection.
    TransportClose,
    /// The connection failed or broke the protocol.
    TransportError,
    /// No pong within the ping timeout.
    PingTimeout,
    /// The client did not read fast enough (its send queue went over the budget).
    SlowConsumer,
    /// The server is shutting down.
    ServerShuttingDown,
}

/// A namespace's behaviour. One object serves every socket of the namespace.
pub trait Namespace: Send + Sync + 'static {
    /// Decides whether a socket may join: `auth` is the CONNECT packet's JSON (v5) or
    /// `None`. Store per-socket data with [`Socket::set_data`] before answering.
    fn connect(&self, socket: Socket, auth: Option<String>) -> BoxFuture<Result<(), Refusal>>;
    /// An event. `args` are the raw JSON arguments after the name; `ack` is set when the
    /// client waits for an answer. Parse the arguments here, straight into their types,
    /// and spawn whatever must wait.
    fn event(&self, socket: &Socket, event: &str, args: &[&RawValue], ack: Option<AckSender>);
    /// An event with binary attachments: `args` hold their placeholders
    /// (`{"_placeholder":true,"num":N}`), `attachments` the bytes in order. By default the
    /// attachments are left aside and [`Namespace::event`] sees the placeholders.
    fn binary_event(
        &self,
        socket: &Socket,
        event: &str,
        args: &[&RawValue],
        attachments: Vec<Bytes>,
        ack: Option<AckSender>,
    ) {
        let _ = attachments;
        self.event(socket, event, args, ack);
    }
    /// The socket left (it has already left its rooms).
    fn disconnect(&self, socket: &Socket, reason: DisconnectReason);
    /// The socket is in its namespace: its CONNECT has been sent, so what is emitted now
    /// reaches the client after it (greetings, state to catch up on).
    fn connected(&self, socket: &Socket) {
        let _ = socket;
    }
}

/// What an Engine.IO-only engine ([`Engine::raw`]) does with messages.
pub trait RawHandler: Send + Sync + 'static {
    /// A text message.
    fn message(&self, conn: &RawConn, text: &str);
    /// A binary message.
    fn binary(&self, conn: &RawConn, data: &[u8]);
}

/// A connection of an Engine.IO-only engine.
pub struct RawConn(Arc<Conn>);

impl RawConn {
    /// The Engine.IO session id.
    pub fn sid(&self) -> &str {
        &self.0.sid
    }

    /// Sends a text message.
    pub fn send(&self, text: &str) -> Result<(), SendError> {
        self.0.link.send(ws::text_frame_with(1 + text.len(), |out| {
            out.push(b'4');
            out.extend_from_slice(text.as_bytes());
        }))
    }

    /// Sends a binary message.
    pub fn send_binary(&self, data: &[u8]) -> Result<(), SendError> {
        let frame = match self.0.version {
            eio::Version::V4 => ws::binary_frame(data),
            eio::Version::V3 => {
                let mut typed = Vec::with_capacity(1 + data.len());
                typed.push(4);
                typed.extend_from_slice(data);
                ws::binary_frame(&typed)
            }
        };
        self.0.link.send(frame)
    }
}

/// What a connection opened with: its protocol version, its URL's query, the request
/// headers kept ([`Config::keep_headers`]).
#[derive(Debug, Clone)]
pub struct Opening {
    /// The Engine.IO version.
    pub version: eio::Version,
    /// The URL's query, without the `?`.
    pub query: String,
    /// The kept headers, lowercase names.
    pub headers: Vec<(String, String)>,
}

impl Opening {
    /// The opening of a request: the headers in `keep` (lowercase names) taken from
    /// `headers` (name, value), the rest left.
    pub fn new<'a>(
        version: eio::Version,
        query: &str,
        keep: &[String],
        headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    ) -> Self {
        let headers = if keep.is_empty() {
            Vec::new()
        } else {
            headers
                .filter(|(n, _)| keep.iter().any(|k| n.eq_ignore_ascii_case(k)))
                .filter_map(|(n, v)| Some((n.to_ascii_lowercase(), std::str::from_utf8(v).ok()?.to_string())))
                .collect()
        };
        Self { version, query: query.to_string(), headers }
    }
}

/// A namespace shared with other owners (for example one that holds the engine).
impl<T: Namespace> Namespace for Arc<T> {
    fn connect(&self, socket: Socket, auth: Option<String>) -> BoxFuture<Result<(), Refusal>> {
        (**self).connect(socket, auth)
    }
    fn event(&self, socket: &Socket, event: &str, args: &[&RawValue], ack: Option<AckSender>) {
        (**self).event(socket, event, args, ack);
    }
    fn binary_event(
        &self,
        socket: &Socket,
        event: &str,
        args: &[&RawValue],
        attachments: Vec<Bytes>,
        ack: Option<AckSender>,
    ) {
        (**self).binary_event(socket, event, args, attachments, ack);
    }
    fn disconnect(&self, socket: &Socket, reason: DisconnectReason) {
        (**self).disconnect(socket, reason);
    }
    fn connected(&self, socket: &Socket) {
        (**self).connected(socket);
    }
}

/// One Engine.IO connection.
struct Conn {
    /// Engine.IO session id.
    sid: Box<str>,
    /// The protocol version the client speaks.
    version: eio::Version,
    /// The query of the connection's URL (`EIO=4&transport=websocket&…`).
    query: Box<str>,
    /// The kept request headers ([`Config::keep_headers`]), name and value.
    headers: Box<[(Box<str>, Box<str>)]>,
    link: Link,
    created: Instant,
    /// Milliseconds since `created` when the outstanding ping went; 0: none outstanding.
    ping_sent_ms: AtomicU64,
    /// Milliseconds since `created` when the last ping went (or the connection opened);
    /// in v3, where the client pings, when its last ping came.
    last_ping_ms: AtomicU64,
    /// The namespace sockets this connection carries, by namespace.
    sockets: Mutex<Vec<Socket>>,
    /// Why the engine closed it (heartbeat, slow consumer), for the disconnect reason.
    closed_by: OnceLock<DisconnectReason>,
    /// A namespace connected at least once (the connect timeout no longer applies).
    joined: AtomicBool,
    /// The connection has ended: a socket whose connect handler answers later is not added.
    ended: AtomicBool,
    /// Namespaces whose connect handler is running for this connection.
    pending: Mutex<Vec<Arc<NsEntry>>>,
    /// A binary packet waiting for its attachments.
    binary: Mutex<Option<PendingBinary>>,
}

/// A BINARY_EVENT or BINARY_ACK whose attachments are still arriving.
struct PendingBinary {
    /// The packet's text (kept until its attachments are in).
    text: String,
    expected: usize,
    attachments: Vec<Bytes>,
}

/// How a connection reaches its client.
enum Link {
    WebSocket(Transport),
    Polling(Polling),
}

impl Link {
    fn send(&self, frame: Bytes) -> Result<(), SendError> {
        match self {
            Link::WebSocket(transport) => transport.send(frame),
            Link::Polling(polling) => polling.send(frame),
        }
    }

    fn close(&self, code: u16, reason: &str) {
        match self {
            Link::WebSocket(transport) => transport.close(code, reason),
            Link::Polling(polling) => polling.close(code, reason),
        }
    }
}

impl Conn {
    fn pending(&self) -> MutexGuard<'_, Vec<Arc<NsEntry>>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sockets(&self) -> MutexGuard<'_, Vec<Socket>> {
        self.sockets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn since_created_ms(&self) -> u64 {
        self.created.elapsed().as_millis() as u64
    }
}

/// A socket in a namespace. Cheap to clone.
#[derive(Clone)]
pub struct Socket(Arc<SocketInner>);

struct SocketInner {
    /// The Socket.IO id (distinct from the Engine.IO sid; `nsp#sid` in protocol v4).
    id: Box<str>,
    /// The query socket.io-client 2.x sends with its CONNECT (`0/chat?token=…`).
    query: Option<Box<str>>,
    ns: Arc<NsEntry>,
    conn: Arc<Conn>,
    data: OnceLock<Box<dyn Any + Send + Sync>>,
    rooms: Mutex<Vec<Arc<str>>>,
    /// [`CONNECTING`], [`CONNECTED`] or [`GONE`].
    state: AtomicU8,
    /// Emits waiting for the client's ack, by id; allocated on the first such emit.
    acks: Mutex<Option<Box<PendingAcks>>>,
    /// Kicked while connecting: disconnected as soon as its CONNECT is out.
    kicked: AtomicBool,
}

/// A socket's emits waiting for their acks.
#[derive(Default)]
struct PendingAcks {
    next_id: u64,
    waiting: HashMap<u64, tokio::sync::oneshot::Sender<Ack>>,
}

/// The client's answer to an emit that asked for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The answer's arguments: a JSON array (with placeholders for binary attachments).
    pub args: String,
    /// The binary attachments, in order.
    pub attachments: Vec<Bytes>,
}

/// Why an emit got no ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// The event could not be sent.
    #[error("the event could not be sent: {0}")]
    Send(#[from] SendError),
    /// No answer in time.
    #[error("no ack in time")]
    Timeout,
    /// The socket left before answering.
    #[error("the socket left before answering")]
    Gone,
}

/// The connect handler has not answered yet: the socket may join rooms, but receives no
/// broadcast (it is not in its namespace's index) until its CONNECT has been sent.
const CONNECTING: u8 = 0;
/// In its namespace.
const CONNECTED: u8 = 1;
/// Left, refused, or its connection ended.
const GONE: u8 = 2;

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket").field("id", &self.0.id).field("nsp", &self.0.ns.path).finish()
    }
}

impl Socket {
    /// The Socket.IO id.
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// The Engine.IO session id of the connection carrying it.
    pub fn engine_sid(&self) -> &str {
        &self.0.conn.sid
    }

    /// The query the client connected with: the one socket.io-client 2.x sends with its
    /// CONNECT, else the connection URL's (without the leading `?`).
    pub fn query(&self) -> &str {
        self.0.query.as_deref().unwrap_or(&self.0.conn.query)
    }

    /// A header of the request that opened the connection, when it is one of
    /// [`Config::keep_headers`] (`name` lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.0.conn.headers.iter().find(|(n, _)| &**n == name).map(|(_, v)| &**v)
    }

    /// The namespace's path.
    pub fn namespace(&self) -> &str {
        &self.0.ns.path
    }

    /// Stores this socket's data (once; `false` when already set).
    pub fn set_data<T: Any + Send + Sync>(&self, data: T) -> bool {
        self.0.data.set(Box::new(data)).is_ok()
    }

    /// This socket's data, when set and of type `T`.
    pub fn data<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.0.data.get().and_then(|d| d.downcast_ref())
    }

    /// Whether the socket is still in its namespace.
    pub fn connected(&self) -> bool {
        self.0.state.load(Ordering::Acquire) == CONNECTED
    }

    /// Sends an event to this socket; `args` is the JSON of the arguments without
    /// brackets (`{"a":1},2`), or empty.
    pub fn emit(&self, event: &str, args: &str) -> Result<(), SendError> {
        if !self.connected() {
            return Err(SendError::Closed);
        }
        self.0.conn.link.send(event_frame(&self.0.ns.path, None, event, args))
    }

    /// Sends an event with binary attachments: `args` hold their placeholders
    /// (`{"_placeholder":true,"num":N}`).
    pub fn emit_binary(&self, event: &str, args: &str, attachments: &[Bytes]) -> Result<(), SendError> {
        if !self.connected() {
            return Err(SendError::Closed);
        }
        let mut packet = Vec::with_capacity(24 + event.len() + args.len());
        packet.push(b'4');
        sio::write_header(&mut packet, Kind::BinaryEvent, &self.0.ns.path, attachments.len(), None);
        packet.push(b'[');
        let _ = serde_json::to_writer(&mut packet, event);
        if !args.is_empty() {
            packet.push(b',');
            packet.extend_from_slice(args.as_bytes());
        }
        packet.push(b']');
        self.send_with_attachments(ws_text(packet), attachments)
    }

    /// A binary packet's frame, then its attachments as binary frames (in v3 each starts
    /// with the message type byte).
    fn send_with_attachments(&self, packet: Bytes, attachments: &[Bytes]) -> Result<(), SendError> {
        let link = &self.0.conn.link;
        link.send(packet)?;
        for data in attachments {
            let frame = match self.0.conn.version {
                eio::Version::V4 => ws::binary_frame(data),
                eio::Version::V3 => {
                    let mut typed = Vec::with_capacity(1 + data.len());
                    typed.push(4);
                    typed.extend_from_slice(data);
                    ws::binary_frame(&typed)
                }
            };
            link.send(frame)?;
        }
        Ok(())
    }

    /// Sends an event and waits up to `timeout` for the client's ack.
    pub async fn emit_with_ack(&self, event: &str, args: &str, timeout: Duration) -> Result<Ack, AckError> {
        if !self.connected() {
            return Err(AckError::Send(SendError::Closed));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let id = {
            let mut acks = self.0.acks.lock().unwrap_or_else(PoisonError::into_inner);
            let pending = acks.get_or_insert_with(Box::default);
            pending.next_id += 1;
            pending.waiting.insert(pending.next_id, tx);
            pending.next_id
        };
        if let Err(e) = self.0.conn.link.send(event_frame(&self.0.ns.path, Some(id), event, args)) {
            self.forget_ack(id);
            return Err(AckError::Send(e));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(ack)) => Ok(ack),
            Ok(Err(_)) => Err(AckError::Gone),
            Err(_) => {
                self.forget_ack(id);
                Err(AckError::Timeout)
            }
        }
    }

    fn forget_ack(&self, id: u64) {
        let mut acks = self.0.acks.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pending) = acks.as_mut() {
            pending.waiting.remove(&id);
            if pending.waiting.is_empty() {
                // Give the memory back: most sockets never wait for an ack again.
                let next_id = pending.next_id;
                **pending = PendingAcks { next_id, waiting: HashMap::new() };
            }
        }
    }

    /// Sends an already encoded frame (from [`Broadcast`] or [`event_frame`]).
    pub fn send_frame(&self, frame: Bytes) -> Result<(), SendError> {
        self.0.conn.link.send(frame)
    }

    /// Joins a room of its namespace.
    pub fn join(&self, room: &str) {
        // Under the socket's rooms lock, which leaving takes to mark the socket gone: a
        // join cannot slip in after the rooms were emptied.
        let mut rooms = self.rooms();
        if self.0.state.load(Ordering::Acquire) == GONE || rooms.iter().any(|r| &**r == room) {
            return;
        }
        rooms.push(self.0.ns.join(room, &self.0.id));
    }

    /// Leaves a room.
    pub fn leave(&self, room: &str) {
        self.0.ns.leave(room, &self.0.id);
        self.rooms().retain(|r| &**r != room);
    }

    /// The rooms it is in.
    pub fn rooms_joined(&self) -> Vec<String> {
        self.rooms().iter().map(|r| r.to_string()).collect()
    }

    fn rooms(&self) -> MutexGuard<'_, Vec<Arc<str>>> {
        self.0.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the socket leave its namespace (the client gets a DISCONNECT packet).
    pub fn disconnect(&self) {
        if self.leave_namespace(DisconnectReason::ServerNamespaceDisconnect) {
            let mut packet = Vec::with_capacity(16);
            packet.push(b'4');
            sio::write_header(&mut packet, Kind::Disconnect, &self.0.ns.path, 0, None);
            let _ = self.0.conn.link.send(ws_text(packet));
        }
    }

    /// Leaves the namespace once: rooms, the namespace's index, the connection's list; the
    /// handler is told when the socket had connected. `true` when it had.
    fn leave_namespace(&self, reason: DisconnectReason) -> bool {
        let (was, rooms) = {
            let mut rooms = self.rooms();
            (self.0.state.swap(GONE, Ordering::AcqRel), std::mem::take(&mut *rooms))
        };
        if was == GONE {
            return false;
        }
        // Emits still waiting for an ack learn the socket is gone.
        self.0.acks.lock().unwrap_or_else(PoisonError::into_inner).take();
        for room in rooms {
            self.0.ns.leave(&room, &self.0.id);
        }
        self.0.ns.sockets_write().remove(&*self.0.id);
        self.0.conn.sockets().retain(|s| !Arc::ptr_eq(&s.0, &self.0));
        if was == CONNECTED {
            self.0.ns.handler.disconnect(self, reason);
        }
        was == CONNECTED
    }
}

/// Answers an event that asked for an ack. Dropping it without answering sends nothing
/// (the client's ack times out).
pub struct AckSender {
    socket: Socket,
    id: u64,
}

impl AckSender {
    /// Answers with `args` (JSON of the arguments without brackets).
    pub fn send(self, args: &str) -> Result<(), SendError> {
        // Every acked event ends here: the packet is written straight into its frame.
        let nsp = &self.socket.0.ns.path;
        self.socket.0.conn.link.send(ws::text_frame_with(24 + nsp.len() + args.len(), |out| {
            out.push(b'4');
            sio::write_header(out, Kind::Ack, nsp, 0, Some(self.id));
            out.push(b'[');
            out.extend_from_slice(args.as_bytes());
            out.push(b']');
        }))
    }

    /// Answers with `args` holding placeholders for `attachments`.
    pub fn send_binary(self, args: &str, attachments: &[Bytes]) -> Result<(), SendError> {
        let mut packet = Vec::with_capacity(16 + args.len());
        packet.push(b'4');
        sio::write_header(&mut packet, Kind::BinaryAck, &self.socket.0.ns.path, attachments.len(), Some(self.id));
        packet.push(b'[');
        packet.extend_from_slice(args.as_bytes());
        packet.push(b']');
        self.socket.send_with_attachments(ws_text(packet), attachments)
    }
}

/// A text frame of an already written Engine.IO packet.
fn ws_text(packet: Vec<u8>) -> Bytes {
    ws::text_frame_with(packet.len(), |out| out.extend_from_slice(&packet))
}

/// The frame of a Socket.IO packet given as text (`2/chat,["event",…]`), for packets
/// encoded elsewhere (another instance of a fleet).
pub fn packet_frame(packet: &str) -> Bytes {
    ws::text_frame_with(1 + packet.len(), |out| {
        out.push(b'4');
        out.extend_from_slice(packet.as_bytes());
    })
}

/// The frame of one event (`42/nsp,["event",args]`), written once.
pub fn event_frame(nsp: &str, id: Option<u64>, event: &str, args: &str) -> Bytes {
    ws::text_frame_with(24 + nsp.len() + event.len() + args.len(), |out| {
        out.push(b'4');
        sio::write_event(out, nsp, id, event, args);
    })
}

/// A registered namespace: its handler, its sockets, its rooms.
struct NsEntry {
    path: Box<str>,
    handler: Arc<dyn Namespace>,
    sockets: RwLock<HashMap<Box<str>, Socket>>,
    /// Sockets whose connect handler is running: reached by room operations (a join or a
    /// kick that races a connect), not by broadcasts.
    connecting: Mutex<HashMap<Box<str>, Socket>>,
    /// Room → the ids of its sockets.
    rooms: RwLock<HashMap<Arc<str>, HashSet<Box<str>>>>,
}

impl NsEntry {
    fn sockets_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Box<str>, Socket>> {
        self.sockets.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn sockets_write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Box<str>, Socket>> {
        self.sockets.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn rooms_write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Arc<str>, HashSet<Box<str>>>> {
        self.rooms.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a socket to a room; returns the room's shared name.
    fn join(&self, room: &str, id: &str) -> Arc<str> {
        let mut rooms = self.rooms_write();
        match rooms.get_mut(room) {
            Some(members) => {
                members.insert(id.into());
            }
            None => {
                rooms.insert(Arc::from(room), HashSet::from([id.into()]));
            }
        }
        // Present: inserted above. The room's name is shared by the index and the socket.
        rooms.get_key_value(room).map_or_else(|| Arc::from(room), |(name, _)| name.clone())
    }

    fn leave(&self, room: &str, id: &str) {
        let mut rooms = self.rooms_write();
        if let Some(members) = rooms.get_mut(room) {
            members.remove(id);
            if members.is_empty() {
                rooms.remove(room);
            }
        }
    }
}

/// Where a broadcast goes: the sockets in any of `rooms` (every socket of the namespace
/// when empty), minus those in any of `except`.
#[derive(Debug, Default, Clone)]
pub struct Broadcast {
    /// Rooms to reach.
    pub rooms: Vec<String>,
    /// Rooms whose sockets are left out.
    pub except: Vec<String>,
}

struct Shared {
    config: Config,
    /// An Engine.IO-only engine: messages go to this handler, no Socket.IO.
    raw: Option<Arc<dyn RawHandler>>,
    /// Connections opened or closed since the heap was last trimmed.
    churn: AtomicU64,
    namespaces: RwLock<HashMap<Box<str>, Arc<NsEntry>>>,
    conns: Mutex<HashMap<Box<str>, Arc<Conn>>>,
    /// Told when the last connection ends (shutdown waits for it).
    emptied: tokio::sync::Notify,
}

/// The engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

/// The outcome of a broadcast.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Sockets the frame was queued or written for.
    pub sent: usize,
    /// Sockets that could not take it (closed, or cut off as slow consumers).
    pub failed: usize,
}

impl Engine {
    /// An engine with `config`; starts the heartbeat sweep (on the current runtime).
    pub fn new(config: Config) -> Engine {
        Self::build(config, None)
    }

    /// An engine of Engine.IO alone: every message of every connection goes to `handler`
    /// (no Socket.IO, no namespaces).
    pub fn raw(config: Config, handler: impl RawHandler) -> Engine {
        Self::build(config, Some(Arc::new(handler)))
    }

    fn build(config: Config, raw: Option<Arc<dyn RawHandler>>) -> Engine {
        let shared = Arc::new(Shared {
            config,
            raw,
            churn: AtomicU64::new(0),
            namespaces: RwLock::default(),
            conns: Mutex::default(),
            emptied: tokio::sync::Notify::new(),
        });
        tokio::spawn(sweep(Arc::downgrade(&shared)));
        Engine { shared }
    }

    /// Registers a namespace (`/chat`).
    pub fn namespace(&self, path: &str, handler: impl Namespace) {
        let entry = Arc::new(NsEntry {
            path: path.into(),
            handler: Arc::new(handler),
            sockets: RwLock::default(),
            connecting: Mutex::default(),
            rooms: RwLock::default(),
        });
        self.shared.namespaces.write().unwrap_or_else(PoisonError::into_inner).insert(path.into(), entry);
    }

    /// The engine's settings.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    fn ns(&self, path: &str) -> Option<Arc<NsEntry>> {
        self.shared.namespaces.read().unwrap_or_else(PoisonError::into_inner).get(path).cloned()
    }

    /// Connections open.
    pub fn connections(&self) -> usize {
        self.shared.conns.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// A socket of a namespace by id.
    pub fn socket(&self, nsp: &str, id: &str) -> Option<Socket> {
        self.ns(nsp)?.sockets_read().get(id).cloned()
    }

    /// The sockets a broadcast reaches.
    pub fn sockets(&self, nsp: &str, to: &Broadcast) -> Vec<Socket> {
        let Some(ns) = self.ns(nsp) else { return Vec::new() };
        let sockets = ns.sockets_read();
        let rooms = ns.rooms.read().unwrap_or_else(PoisonError::into_inner);
        let excluded = |id: &str| to.except.iter().any(|r| rooms.get(r.as_str()).is_some_and(|m| m.contains(id)));
        if to.rooms.is_empty() {
            return sockets.iter().filter(|(id, _)| !excluded(id)).map(|(_, s)| s.clone()).collect();
        }
        let mut seen: HashSet<&str> = HashSet::new();
        let mut out = Vec::new();
        for room in &to.rooms {
            for id in rooms.get(room.as_str()).into_iter().flatten() {
                if seen.insert(id) && !excluded(id) {
                    out.extend(sockets.get(id).cloned());
                }
            }
        }
        out
    }

    /// Sends one event to every socket `to` reaches: encoded once, the same bytes queued
    /// (or written inline) for each.
    pub fn broadcast(&self, nsp: &str, to: &Broadcast, event: &str, args: &str) -> Delivered {
        self.broadcast_frame(nsp, to, event_frame(nsp, None, event, args))
    }

    /// Sends an already encoded frame ([`event_frame`], [`packet_frame`]: what another
    /// instance of a fleet sent over its bus) to every socket `to` reaches.
    pub fn broadcast_frame(&self, nsp: &str, to: &Broadcast, frame: Bytes) -> Delivered {
        let mut delivered = Delivered::default();
        for socket in self.sockets(nsp, to) {
            match socket.send_frame(frame.clone()) {
                Ok(()) => delivered.sent += 1,
                Err(_) => delivered.failed += 1,
            }
        }
        delivered
    }

    /// A new connection: its open packet queued, the root namespace connected for a v3
    /// client, registered for the heartbeat. `None` when the open packet could not go.
    fn open(&self, link: Link, opening: Opening) -> Option<Arc<Conn>> {
        let Opening { version, query, headers } = opening;
        let upgrades = matches!(link, Link::Polling(_));
        let sid = random_id();
        let conn = Arc::new(Conn {
            sid: sid.clone().into(),
            version,
            query: query.into(),
            headers: headers.into_iter().map(|(n, v)| (n.into(), v.into())).collect(),
            link,
            created: Instant::now(),
            ping_sent_ms: AtomicU64::new(0),
            last_ping_ms: AtomicU64::new(0),
            sockets: Mutex::new(Vec::new()),
            closed_by: OnceLock::new(),
            joined: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            pending: Mutex::new(Vec::new()),
            binary: Mutex::new(None),
        });
        let config = &self.shared.config;
        let open = eio::Handshake {
            sid: &sid,
            upgrades,
            ping_interval_ms: config.ping_interval.as_millis() as u64,
            ping_timeout_ms: config.ping_timeout.as_millis() as u64,
            max_payload: config.max_payload as u64,
        }
        .json(version);
        if conn.link.send(ws_text(format!("0{open}").into_bytes())).is_err() {
            return None;
        }
        if self.shared.raw.is_some() {
            // No namespaces to join: the connect timeout does not apply.
            conn.joined.store(true, Ordering::Release);
        }
        // Protocol v4 connects the root namespace without being asked, when there is one.
        if version == eio::Version::V3
            && let Some(root) = self.ns("/")
        {
            conn.pending().push(root.clone());
            self.connect(conn.clone(), root, None, None);
        }
        self.shared.conns.lock().unwrap_or_else(PoisonError::into_inner).insert(sid.into(), conn.clone());
        self.shared.churn.fetch_add(1, Ordering::Relaxed);
        Some(conn)
    }

    /// A connection ended: out of the registry, its sockets out of their namespaces.
    fn end(&self, conn: &Arc<Conn>, reason: DisconnectReason) {
        let (removed, empty) = {
            let mut conns = self.shared.conns.lock().unwrap_or_else(PoisonError::into_inner);
            (conns.remove(&*conn.sid), conns.is_empty())
        };
        if removed.is_none() {
            return;
        }
        if empty {
            self.shared.emptied.notify_waiters();
        }
        self.shared.churn.fetch_add(1, Ordering::Relaxed);
        let sockets = {
            let mut sockets = conn.sockets();
            conn.ended.store(true, Ordering::Release);
            std::mem::take(&mut *sockets)
        };
        for socket in sockets {
            socket.leave_namespace(reason);
        }
    }

    /// Closes a connection for `reason`. A WebSocket's task ends it once the close frame
    /// is out; a polling connection has no task, so it ends here (its pending GET gets
    /// the close packet).
    fn close_conn(&self, conn: &Arc<Conn>, reason: DisconnectReason, code: u16, why: &str) {
        let _ = conn.closed_by.set(reason);
        conn.link.close(code, why);
        if matches!(conn.link, Link::Polling(_)) {
            self.end(conn, conn.closed_by.get().copied().unwrap_or(reason));
        }
    }

    /// Serves an upgraded WebSocket until it closes. `leftover`: bytes read before the
    /// upgrade.
    pub async fn serve_websocket(&self, stream: TcpStream, leftover: Bytes, opening: Opening) {
        let link = Link::WebSocket(Transport::new(stream, self.shared.config.send_budget));
        let Some(conn) = self.open(link, opening) else { return };
        let Link::WebSocket(transport) = &conn.link else { return };
        let mut inbound = ConnInbound { engine: self.clone(), conn: conn.clone() };
        let ended = transport.run(&mut inbound, self.shared.config.max_payload, leftover).await;
        let reason = conn.closed_by.get().copied().unwrap_or(match ended {
            Ended::ClientClosed => DisconnectReason::TransportClose,
            // Every close of the server's own sets its reason first; this is the fallback.
            Ended::ServerClosed => DisconnectReason::TransportClose,
            Ended::SlowConsumer => DisconnectReason::SlowConsumer,
            Ended::Protocol(_) | Ended::Io(_) => DisconnectReason::TransportError,
        });
        self.end(&conn, reason);
    }

    /// A POST too large for the session: refused and the session closed.
    pub(crate) fn post_too_large(&self, sid: &str) {
        let conn = self.shared.conns.lock().unwrap_or_else(PoisonError::into_inner).get(sid).cloned();
        if let Some(conn) = conn {
            self.close_conn(&conn, DisconnectReason::TransportError, 1009, "payload too large");
        }
    }

    /// Serves the WebSocket a polling connection upgrades to: the probe answered on it,
    /// the connection moved over at the client's `5`, served until it closes.
    pub async fn serve_upgrade(&self, stream: TcpStream, leftover: Bytes, sid: &str) {
        let conn = self.shared.conns.lock().unwrap_or_else(PoisonError::into_inner).get(sid).cloned();
        let Some(conn) = conn else { return };
        let Link::Polling(polling) = &conn.link else { return };
        let transport = Arc::new(Transport::new(stream, self.shared.config.send_budget));
        if polling.is_upgraded() {
            // A second WebSocket for a session that has one: closed, the first goes on.
            transport.close(1008, "session already upgraded");
            let _ = transport.run(&mut Discard, 0, leftover).await;
            return;
        }
        let mut inbound = UpgradeInbound {
            inner: ConnInbound { engine: self.clone(), conn: conn.clone() },
            transport: transport.clone(),
            upgraded: false,
        };
        let ended = transport.run(&mut inbound, self.shared.config.max_payload, leftover).await;
        if inbound.upgraded {
            let reason = conn.closed_by.get().copied().unwrap_or(match ended {
                Ended::SlowConsumer => DisconnectReason::SlowConsumer,
                Ended::Protocol(_) | Ended::Io(_) => DisconnectReason::TransportError,
                Ended::ClientClosed | Ended::ServerClosed => DisconnectReason::TransportClose,
            });
            self.end(&conn, reason);
        }
        // A probe that never completed leaves the polling connection as it was.
    }

    /// Whether `sid` names a polling connection (upgraded or not).
    pub(crate) fn is_polling_session(&self, sid: &str) -> bool {
        let conns = self.shared.conns.lock().unwrap_or_else(PoisonError::into_inner);
        conns.get(sid).is_some_and(|c| matches!(&c.link, Link::Polling(_)))
    }

    /// Opens a polling connection; its handshake payload.
    pub(crate) fn open_polling(&self, opening: Opening) -> Option<crate::polling::Body> {
        let version = opening.version;
        let b64 = opening.query.split('&').any(|kv| kv == "b64=1" || kv == "b64=true");
        let polling = Polling::new(self.shared.config.send_budget, !b64);
        let conn = self.open(Link::Polling(polling), opening)?;
        let Link::Polling(polling) = &conn.link else { return None };
        // Everything queued so far (the open packet, a v3 root CONNECT if it was quick).
        polling.take_now(version)
    }

    /// A GET of a polling connection: what was queued, after waiting up to the ping
    /// interval for something. `None` for an unknown session or a second GET at once.
    pub(crate) async fn poll(&self, sid: &str) -> Result<crate::polling::Body, PollRefusal> {
        let conn = self.shared.conns.lock().unwrap_or_else(PoisonError::into_inner).get(sid).cloned();
        let Some(conn) = conn else { return Err(PollRefusal::UnknownSid) };
        let Link::Polling(polling) = &conn.link else { return Err(PollRefusal::BadRequest) };
        if polling.is_upgraded() {
            return Err(PollRefusal::BadRequest);
        }
        // Bounded by a heartbeat: the server's ping (v4) comes within the interval; a v3
        // client's session must hear from it within interval + timeout.
        let wait = self.shared.config.ping_interval + self.shared.config.ping_timeout;
        match polling.take(conn.version, wait).await {
            Ok(body) => {
                if polling.is_closed() {
                    let reason = if polling.was_slow() {
                        DisconnectReason::SlowConsumer
                    } else {
                        DisconnectReason::TransportClose
                    };
                    self.end(&conn, conn.closed_by.get().copied().unwrap_or(reason));
                }
                Ok(body)
            }
            Err(crate::polling::PollError::Overlap) => {
                self.close_conn(&conn, DisconnectReason::TransportError, 1000, "overlapping GET");
                Err(PollRefusal::BadRequest)
            }
        }
    }

    /// A POST of a polling connection: its packets handled in order (a v3 client may send
    /// a binary payload, `binary`).
    pub(crate) fn post(&self, sid: &str, body: &[u8], binary: bool) -> Result<(), PollRefusal> {
        let conn = self.shared.conns.lock().unwrap_or_else(PoisonError::into_inner).get(sid).cloned();
        let Some(conn) = conn else { return Err(PollRefusal::UnknownSid) };
        if !matches!(&conn.link, Link::Polling(polling) if !polling.is_upgraded()) {
            return Err(PollRefusal::BadRequest);
        }
        let packets = match (binary, conn.version) {
            (true, eio::Version::V3) => eio::decode_v3_binary_payload(body),
            (true, eio::Version::V4) => Err(eio::EioError::BadLength),
            (false, _) => std::str::from_utf8(body)
                .map_err(|_| eio::EioError::BadLength)
                .and_then(|body| eio::decode_payload(conn.version, body)),
        };
        let Ok(packets) = packets else {
            self.close_conn(&conn, DisconnectReason::TransportError, 1000, "malformed payload");
            return Err(PollRefusal::BadRequest);
        };
        for packet in packets {
            self.on_eio_packet(&conn, packet);
        }
        Ok(())
    }

    /// The sockets `to` reaches, those still connecting included.
    fn members(&self, nsp: &str, to: &Broadcast) -> Vec<Socket> {
        let Some(ns) = self.ns(nsp) else { return Vec::new() };
        let mut members = self.sockets(nsp, to);
        let connecting: Vec<Socket> =
            ns.connecting.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect();
        if !connecting.is_empty() {
            let rooms = ns.rooms.read().unwrap_or_else(PoisonError::into_inner);
            let in_any =
                |rs: &[String], id: &str| rs.iter().any(|r| rooms.get(r.as_str()).is_some_and(|m| m.contains(id)));
            members.extend(
                connecting
                    .into_iter()
                    .filter(|s| (to.rooms.is_empty() || in_any(&to.rooms, &s.0.id)) && !in_any(&to.except, &s.0.id)),
            );
        }
        members
    }

    /// Makes the sockets `to` reaches (connecting ones too) join `rooms`.
    pub fn join(&self, nsp: &str, to: &Broadcast, rooms: &[&str]) -> usize {
        let members = self.members(nsp, to);
        for socket in &members {
            for room in rooms {
                socket.join(room);
            }
        }
        members.len()
    }

    /// Makes the sockets `to` reaches (connecting ones too) leave `rooms`.
    pub fn leave(&self, nsp: &str, to: &Broadcast, rooms: &[&str]) -> usize {
        let members = self.members(nsp, to);
        for socket in &members {
            for room in rooms {
                socket.leave(room);
            }
        }
        members.len()
    }

    /// Disconnects the sockets `to` reaches from their namespace; one still connecting is
    /// disconnected as soon as its CONNECT is out.
    pub fn disconnect(&self, nsp: &str, to: &Broadcast) -> usize {
        let members = self.members(nsp, to);
        for socket in &members {
            if socket.0.state.load(Ordering::Acquire) == CONNECTING {
                // Its CONNECT has not gone yet: it is disconnected right after it.
                socket.0.kicked.store(true, Ordering::Release);
            } else {
                socket.disconnect();
            }
        }
        members.len()
    }

    /// The registered namespaces' paths.
    pub fn namespaces(&self) -> Vec<String> {
        self.shared.namespaces.read().unwrap_or_else(PoisonError::into_inner).keys().map(|k| k.to_string()).collect()
    }

    /// Closes every connection and waits up to `grace` for them to end (their close
    /// frames written, their sockets' disconnect handlers run).
    pub async fn shutdown(&self, grace: Duration) {
        self.close_all();
        let ended = async {
            loop {
                let emptied = self.shared.emptied.notified();
                tokio::pin!(emptied);
                emptied.as_mut().enable();
                if self.connections() == 0 {
                    return;
                }
                emptied.await;
            }
        };
        let _ = tokio::time::timeout(grace, ended).await;
    }

    /// Closes every connection (shutdown).
    pub fn close_all(&self) {
        let conns: Vec<Arc<Conn>> =
            self.shared.conns.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect();
        for conn in conns {
            let _ = conn.link.send(ws_text(b"1".to_vec()));
            self.close_conn(&conn, DisconnectReason::ServerShuttingDown, 1001, "server shutting down");
        }
    }

    /// Handles one Socket.IO packet of a connection.
    fn on_packet(&self, conn: &Arc<Conn>, text: &str) -> Result<(), &'static str> {
        let packet = sio::decode(text).map_err(|_| "malformed Socket.IO packet")?;
        match packet.kind {
            Kind::Connect => {
                let Some(ns) = self.ns(packet.nsp) else {
                    let mut out = vec![b'4'];
                    sio::write_header(&mut out, Kind::ConnectError, packet.nsp, 0, None);
                    out.extend_from_slice(br#"{"message":"Invalid namespace"}"#);
                    let _ = conn.link.send(ws_text(out));
                    return Ok(());
                };
                // One socket per namespace and connection: a CONNECT for a namespace joined
                // or being joined is ignored (each would run the connect handler again).
                {
                    let mut pending = conn.pending();
                    if pending.iter().any(|p| Arc::ptr_eq(p, &ns))
                        || conn.sockets().iter().any(|s| Arc::ptr_eq(&s.0.ns, &ns))
                    {
                        return Ok(());
                    }
                    pending.push(ns.clone());
                }
                let auth = (!packet.data.is_empty()).then(|| packet.data.to_string());
                self.connect(conn.clone(), ns, auth, packet.query.map(Box::from));
                Ok(())
            }
            Kind::Disconnect => {
                let socket = conn.sockets().iter().find(|s| &*s.0.ns.path == packet.nsp).cloned();
                if let Some(socket) = socket {
                    socket.leave_namespace(DisconnectReason::ClientNamespaceDisconnect);
                }
                Ok(())
            }
            Kind::Event => self.dispatch(conn, &packet, Vec::new()),
            Kind::BinaryEvent | Kind::BinaryAck if packet.attachments > 0 => {
                let mut binary = conn.binary.lock().unwrap_or_else(PoisonError::into_inner);
                if binary.is_some() {
                    return Err("a binary packet before the last one's attachments");
                }
                *binary = Some(PendingBinary {
                    text: text.to_string(),
                    expected: packet.attachments,
                    attachments: Vec::with_capacity(packet.attachments),
                });
                Ok(())
            }
            Kind::BinaryEvent => self.dispatch(conn, &packet, Vec::new()),
            Kind::Ack | Kind::BinaryAck => {
                self.answer(conn, &packet, Vec::new());
                Ok(())
            }
            Kind::ConnectError => Err("CONNECT_ERROR is the server's"),
        }
    }

    /// An attachment of the binary packet in progress; the packet is handled once its
    /// attachments are all in.
    fn on_attachment(&self, conn: &Arc<Conn>, data: &[u8]) -> Result<(), &'static str> {
        let complete = {
            let mut binary = conn.binary.lock().unwrap_or_else(PoisonError::into_inner);
            let pending = binary.as_mut().ok_or("binary data with no packet waiting for it")?;
            pending.attachments.push(Bytes::copy_from_slice(data));
            if pending.attachments.len() < pending.expected {
                return Ok(());
            }
            binary.take()
        };
        let Some(PendingBinary { text, attachments, .. }) = complete else { return Ok(()) };
        let packet = sio::decode(&text).map_err(|_| "malformed Socket.IO packet")?;
        match packet.kind {
            Kind::BinaryEvent => self.dispatch(conn, &packet, attachments),
            _ => {
                self.answer(conn, &packet, attachments);
                Ok(())
            }
        }
    }

    /// The client's ack of an emit that waits for it (unknown ids are ignored: the emit
    /// timed out, or the client is confused).
    fn answer(&self, conn: &Arc<Conn>, packet: &sio::Packet<'_>, attachments: Vec<Bytes>) {
        let Some(id) = packet.id else { return };
        let socket = conn.sockets().iter().find(|s| &*s.0.ns.path == packet.nsp).cloned();
        let Some(socket) = socket else { return };
        let waiter =
            socket.0.acks.lock().unwrap_or_else(PoisonError::into_inner).as_mut().and_then(|p| p.waiting.remove(&id));
        if let Some(waiter) = waiter {
            let _ = waiter.send(Ack { args: packet.data.to_string(), attachments });
        }
    }

    /// An event (with its attachments, if any) to its namespace's handler.
    fn dispatch(
        &self,
        conn: &Arc<Conn>,
        packet: &sio::Packet<'_>,
        attachments: Vec<Bytes>,
    ) -> Result<(), &'static str> {
        let socket = conn.sockets().iter().find(|s| &*s.0.ns.path == packet.nsp).cloned();
        // An event for a namespace the connection has not joined is ignored, as the
        // reference server does.
        let Some(socket) = socket else { return Ok(()) };
        let event = sio::event_args(packet.data).map_err(|_| "malformed event")?;
        let ack = packet.id.map(|id| AckSender { socket: socket.clone(), id });
        if packet.kind == Kind::BinaryEvent {
            socket.0.ns.handler.binary_event(&socket, &event.name, &event.args, attachments, ack);
        } else {
            socket.0.ns.handler.event(&socket, &event.name, &event.args, ack);
        }
        Ok(())
    }

    /// Runs a namespace's connect handler and, when it accepts, adds the socket.
    fn connect(&self, conn: Arc<Conn>, ns: Arc<NsEntry>, auth: Option<String>, query: Option<Box<str>>) {
        // Protocol v4 has no socket id of its own: clients compute `nsp#sid`.
        let id = match conn.version {
            eio::Version::V4 => random_id(),
            eio::Version::V3 if &*ns.path == "/" => conn.sid.to_string(),
            eio::Version::V3 => format!("{}#{}", ns.path, conn.sid),
        };
        let socket = Socket(Arc::new(SocketInner {
            id: id.into(),
            query,
            ns: ns.clone(),
            conn: conn.clone(),
            data: OnceLock::new(),
            rooms: Mutex::new(Vec::new()),
            state: AtomicU8::new(CONNECTING),
            acks: Mutex::new(None),
            kicked: AtomicBool::new(false),
        }));
        ns.connecting.lock().unwrap_or_else(PoisonError::into_inner).insert(socket.0.id.clone(), socket.clone());
        let decided = ns.handler.connect(socket.clone(), auth);
        tokio::spawn(async move {
            let mut out = vec![b'4'];
            let decided = decided.await;
            conn.pending().retain(|p| !Arc::ptr_eq(p, &ns));
            ns.connecting.lock().unwrap_or_else(PoisonError::into_inner).remove(&*socket.0.id);
            match decided {
                Ok(()) => {
                    // All at once under the namespace's index and the connection's list
                    // (the order every other path takes them in): CONNECT is queued before
                    // anything else can be sent to the socket (an event is routed to it,
                    // a broadcast finds it, only once it is in both).
                    let mut index = ns.sockets_write();
                    let mut sockets = conn.sockets();
                    let ended = conn.ended.load(Ordering::Acquire);
                    if socket.0.state.load(Ordering::Acquire) == GONE {
                        // The application disconnected it from its own connect handler.
                        return;
                    }
                    sio::write_header(&mut out, Kind::Connect, &ns.path, 0, None);
                    if conn.version == eio::Version::V4 {
                        out.extend_from_slice(format!(r#"{{"sid":"{}"}}"#, socket.0.id).as_bytes());
                    }
                    if !ended {
                        let _ = conn.link.send(ws_text(out));
                        sockets.push(socket.clone());
                        index.insert(socket.0.id.clone(), socket.clone());
                        conn.joined.store(true, Ordering::Release);
                    }
                    socket.0.state.store(CONNECTED, Ordering::Release);
                    drop((sockets, index));
                    if ended {
                        // The connection ended while the handler ran: the application,
                        // which accepted the socket, is told it went.
                        socket.leave_namespace(DisconnectReason::TransportClose);
                    } else if socket.0.kicked.load(Ordering::Acquire) {
                        // Kicked while its handler ran (a logout racing the connect).
                        socket.disconnect();
                    } else {
                        ns.handler.connected(&socket);
                    }
                    return;
                }
                Err(refusal) => {
                    socket.leave_namespace(DisconnectReason::ServerNamespaceDisconnect);
                    sio::write_header(&mut out, Kind::ConnectError, &ns.path, 0, None);
                    let message = serde_json::to_string(&refusal.message).unwrap_or_else(|_| "\"refused\"".into());
                    match refusal.data {
                        Some(data) => out
                            .extend_from_slice(format!(r#"{{"message":{message},"data":{}}}"#, data.get()).as_bytes()),
                        None => out.extend_from_slice(format!(r#"{{"message":{message}}}"#).as_bytes()),
                    }
                }
            }
            let _ = conn.link.send(ws_text(out));
        });
    }
}

/// The connection's inbound side: Engine.IO packets.
struct ConnInbound {
    engine: Engine,
    conn: Arc<Conn>,
}

impl Inbound for ConnInbound {
    fn text(&mut self, _transport: &Transport, text: &str) {
        match eio::decode_text(text) {
            Ok(packet) => self.engine.on_eio_packet(&self.conn, packet),
            Err(_) => {
                self.engine.close_conn(&self.conn, DisconnectReason::TransportError, 1008, "malformed Engine.IO packet")
            }
        }
    }

    fn binary(&mut self, _transport: &Transport, data: &[u8]) {
        match eio::decode_binary(self.conn.version, data) {
            Ok(packet) => self.engine.on_eio_packet(&self.conn, packet),
            Err(_) => {
                self.engine.close_conn(&self.conn, DisconnectReason::TransportError, 1003, "malformed binary message")
            }
        }
    }
}

/// Reads nothing of interest: a WebSocket being closed at once.
struct Discard;

impl Inbound for Discard {
    fn text(&mut self, _: &Transport, _: &str) {}
    fn binary(&mut self, _: &Transport, _: &[u8]) {}
}

/// The WebSocket a polling connection is upgrading to: the probe, then the switch; then
/// the connection's own inbound side.
struct UpgradeInbound {
    /// The connection's own inbound side, which takes over at the switch.
    inner: ConnInbound,
    transport: Arc<Transport>,
    upgraded: bool,
}

impl Inbound for UpgradeInbound {
    fn text(&mut self, transport: &Transport, text: &str) {
        if self.upgraded {
            return self.inner.text(transport, text);
        }
        let Link::Polling(polling) = &self.inner.conn.link else { return };
        match eio::decode_text(text) {
            Ok(EioPacket::Ping("probe")) => {
                let _ = transport.send(ws_text(b"3probe".to_vec()));
                polling.release_poll();
            }
            Ok(EioPacket::Upgrade) => {
                polling.upgrade(self.transport.clone());
                self.upgraded = true;
            }
            // Nothing else belongs to a probe: this WebSocket is dropped, the polling
            // connection goes on.
            _ => transport.close(1002, "unexpected packet during the upgrade"),
        }
    }

    fn binary(&mut self, transport: &Transport, data: &[u8]) {
        if self.upgraded {
            return self.inner.binary(transport, data);
        }
        transport.close(1002, "unexpected packet during the upgrade");
    }
}

impl Engine {
    /// One Engine.IO packet from a client, whichever transport brought it.
    fn on_eio_packet(&self, conn: &Arc<Conn>, packet: EioPacket<'_>) {
        match packet {
            EioPacket::Pong(_) => conn.ping_sent_ms.store(0, Ordering::Release),
            // In v3 the client pings and the server answers.
            EioPacket::Ping(data) if conn.version == eio::Version::V3 => {
                conn.last_ping_ms.store(conn.since_created_ms().max(1), Ordering::Release);
                let _ = conn.link.send(ws::text_frame_with(1 + data.len(), |out| {
                    out.push(b'3');
                    out.extend_from_slice(data.as_bytes());
                }));
            }
            EioPacket::Message(text) if self.shared.raw.is_some() => {
                if let Some(raw) = &self.shared.raw {
                    raw.message(&RawConn(conn.clone()), text);
                }
            }
            EioPacket::Binary(data) if self.shared.raw.is_some() => {
                if let Some(raw) = &self.shared.raw {
                    raw.binary(&RawConn(conn.clone()), &data);
                }
            }
            EioPacket::Message(packet) => {
                if let Err(why) = self.on_packet(conn, packet) {
                    self.close_conn(conn, DisconnectReason::TransportError, 1008, why);
                }
            }
            EioPacket::Close => {
                // A polling client's pending GET ends with a noop, as the protocol has it.
                if let Link::Polling(polling) = &conn.link {
                    polling.closed_by_client();
                }
                self.close_conn(conn, DisconnectReason::TransportClose, 1000, "");
            }
            // A v4 client does not ping; a probe belongs to the upgrade (not served yet).
            EioPacket::Ping(_) | EioPacket::Noop | EioPacket::Upgrade | EioPacket::Open => {}
            EioPacket::Binary(data) => {
                if let Err(why) = self.on_attachment(conn, &data) {
                    self.close_conn(conn, DisconnectReason::TransportError, 1003, why);
                }
            }
        }
    }
}

/// Why a polling request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PollRefusal {
    /// No such session (`{"code":1,"message":"Session ID unknown"}`).
    UnknownSid,
    /// Not a polling session, an overlapping GET, a malformed body (`code 3`).
    BadRequest,
}

/// The heartbeat: one task for every connection. Each tick it pings the connections
/// whose interval has passed and closes those whose pong is overdue, and those that never
/// joined a namespace within the connect timeout.
async fn sweep(shared: Weak<Shared>) {
    let tick = {
        let Some(shared) = shared.upgrade() else { return };
        // Fine enough that a ping is never late by more than a quarter of the shorter of
        // the two delays the client's own timer adds up.
        (shared.config.ping_interval.min(shared.config.ping_timeout) / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1))
    };
    let ping = ws_text(b"2".to_vec());
    let mut timer = tokio::time::interval(tick);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_trim = Instant::now();
    loop {
        timer.tick().await;
        let Some(shared) = shared.upgrade() else { return };
        if shared.config.trim_heap
            && last_trim.elapsed() >= TRIM_EVERY
            && shared.churn.load(Ordering::Relaxed) >= TRIM_AFTER_CHURN
        {
            shared.churn.store(0, Ordering::Relaxed);
            last_trim = Instant::now();
            tokio::task::spawn_blocking(trim_heap);
        }
        let interval = shared.config.ping_interval.as_millis() as u64;
        let timeout = shared.config.ping_timeout.as_millis() as u64;
        let connect = shared.config.connect_timeout.as_millis() as u64;
        let conns: Vec<Arc<Conn>> =
            shared.conns.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect();
        let engine = Engine { shared };
        for conn in conns {
            let now = conn.since_created_ms().max(1);
            let sent = conn.ping_sent_ms.load(Ordering::Acquire);
            if conn.version == eio::Version::V3 {
                // The client pings every interval: silence past interval + timeout ends it.
                if now.saturating_sub(conn.last_ping_ms.load(Ordering::Acquire)) > interval + timeout {
                    engine.close_conn(&conn, DisconnectReason::PingTimeout, 1000, "ping timeout");
                } else if !conn.joined.load(Ordering::Acquire) && now > connect {
                    engine.close_conn(&conn, DisconnectReason::TransportClose, 1000, "no namespace joined");
                }
            } else if sent != 0 && now.saturating_sub(sent) > timeout {
                engine.close_conn(&conn, DisconnectReason::PingTimeout, 1000, "ping timeout");
            } else if !conn.joined.load(Ordering::Acquire) && now > connect {
                engine.close_conn(&conn, DisconnectReason::TransportClose, 1000, "no namespace joined");
            } else if sent == 0 && now.saturating_sub(conn.last_ping_ms.load(Ordering::Acquire)) >= interval {
                conn.last_ping_ms.store(now, Ordering::Release);
                conn.ping_sent_ms.store(now, Ordering::Release);
                if let Err(SendError::SlowConsumer) = conn.link.send(ping.clone()) {
                    engine.close_conn(&conn, DisconnectReason::SlowConsumer, 1008, "slow consumer");
                }
            }
        }
        drop(engine);
    }
}

/// The heap is trimmed at most this often…
const TRIM_EVERY: Duration = Duration::from_secs(10);
/// …and only after this many connections opened or closed.
const TRIM_AFTER_CHURN: u64 = 256;

/// Gives free heap pages back to the OS.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it takes the allocator's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A random id of 20 base64url characters (120 bits).
fn random_id() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 15];
    rand::fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
