//! `quckchat conformance`: the reference server that the Socket.IO project's protocol test
//! suites expect (the "Test suite" sections of the Engine.IO v4 and Socket.IO v5 protocol
//! documents), and nothing else. No store, no authentication, no QuckChat events.
//!
//! - Engine.IO at `/engine.io/`: every message, text or binary, is echoed back.
//! - Socket.IO at `/socket.io/`: namespace `/` emits `auth` with the handshake's auth
//!   payload on connect, answers `message` with `message-back` (same arguments, binary
//!   attachments included) and acks `message-with-ack` with its arguments; `/custom` only
//!   emits `auth`; any other namespace is refused by socketioxide as "Invalid namespace".
//! - Both: ping interval 300 ms, ping timeout 200 ms, max payload 1,000,000 bytes (an HTTP
//!   body or a WebSocket message), polling and WebSocket, CORS `*`; Socket.IO's connect
//!   timeout is 1,000 ms.
//! - Engine.IO v3 is refused with 400 unless `ALLOW_EIO3=true` (the v4 suites expect
//!   `EIO=3` to fail).
//!
//! `HOST` (default `0.0.0.0`) and `PORT` (default 3000) choose the listen address.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use engineioxide::config::EngineIoConfig;
use engineioxide::handler::EngineIoHandler;
use engineioxide::layer::EngineIoLayer;
use engineioxide::{DisconnectReason, Socket, Str};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, SerializeTuple, Serializer};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide::handler::ConnectHandler;
use tokio::net::TcpListener;
use tower_http::cors::{Any, CorsLayer};

/// The heartbeat interval both suites expect.
pub const PING_INTERVAL: Duration = Duration::from_millis(300);
/// How long a pong may take, as both suites expect.
pub const PING_TIMEOUT: Duration = Duration::from_millis(200);
/// How long a Socket.IO client may take to connect to a namespace.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// The largest accepted payload, bytes.
pub const MAX_PAYLOAD: u64 = 1_000_000;

/// What the profile can be told: where to listen, and whether Engine.IO v3 is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConformanceConfig {
    /// Listen address (`HOST`).
    pub host: IpAddr,
    /// Listen port (`PORT`; 0: any free port).
    pub port: u16,
    /// Accept Engine.IO v3 (`ALLOW_EIO3`); off by default, as the v4 suites expect.
    pub allow_eio3: bool,
}

impl Default for ConformanceConfig {
    fn default() -> Self {
        Self { host: IpAddr::from([0, 0, 0, 0]), port: 3000, allow_eio3: false }
    }
}

impl ConformanceConfig {
    /// Reads `HOST`, `PORT` and `ALLOW_EIO3` from the environment.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
    }

    /// Reads the configuration through `get` (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let mut c = Self::default();
        if let Some(v) = get("HOST") {
            c.host = v.parse().with_context(|| format!("HOST={v} is not an IP address"))?;
        }
        if let Some(v) = get("PORT") {
            c.port = v.parse().with_context(|| format!("PORT={v} is not a port"))?;
        }
        if let Some(v) = get("ALLOW_EIO3") {
            c.allow_eio3 = match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => bail!("ALLOW_EIO3={v}: expected true or false"),
            };
        }
        Ok(c)
    }
}

/// Reads the configuration, binds, prints `quckchat conformance listening on http://ADDR`
/// on stdout (the one line scripts wait for), and serves until `shutdown` resolves.
pub async fn run(shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    use std::io::Write;

    let config = ConformanceConfig::from_env().context("reading the conformance profile's configuration")?;
    let server = ConformanceServer::build(&config).await?;
    let addr = server.local_addr();
    tracing::info!(%addr, allow_eio3 = config.allow_eio3, "conformance profile listening");
    let mut out = std::io::stdout();
    writeln!(out, "quckchat conformance listening on http://{addr}")?;
    out.flush()?;
    server.run_until_stopped(shutdown).await
}

/// The profile, bound and not yet serving.
pub struct ConformanceServer {
    listener: TcpListener,
    router: Router,
    io: SocketIo,
}

impl ConformanceServer {
    /// Builds the router and binds the listener.
    pub async fn build(config: &ConformanceConfig) -> anyhow::Result<Self> {
        let (router, io) = router(config.allow_eio3);
        let addr = SocketAddr::new(config.host, config.port);
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        Ok(Self { listener, router, io })
    }

    /// The address the profile listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown` resolves, then closes every Socket.IO socket.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Self { listener, router, io } = self;
        let graceful = async move {
            shutdown.await;
            io.close().await;
        };
        axum::serve(listener, router).with_graceful_shutdown(graceful).await.context("serving")
    }
}

/// The profile's HTTP surface: Socket.IO at `/socket.io/`, the Engine.IO echo at
/// `/engine.io/`, CORS `*`, and Engine.IO v3 refused unless `allow_eio3`.
pub fn router(allow_eio3: bool) -> (Router, SocketIo) {
    let (socket_io, io) = SocketIo::builder()
        .ping_interval(PING_INTERVAL)
        .ping_timeout(PING_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .max_payload(MAX_PAYLOAD)
        .ws_max_message_size(MAX_PAYLOAD as usize)
        .ws_max_frame_size(MAX_PAYLOAD as usize)
        .build_layer();
    io.ns("/", on_main_connect.with(install_main_handlers));
    io.ns("/custom", on_custom_connect);

    let engine_config = EngineIoConfig::builder()
        .ping_interval(PING_INTERVAL)
        .ping_timeout(PING_TIMEOUT)
        .max_payload(MAX_PAYLOAD)
        .ws_max_message_size(MAX_PAYLOAD as usize)
        .ws_max_frame_size(MAX_PAYLOAD as usize)
        .build();
    let engine_io = EngineIoLayer::from_config(Arc::new(Echo), engine_config);

    let cors = CorsLayer::new().allow_origin(Any).allow_methods(Any).allow_headers(Any);
    let router = Router::new()
        .layer(engine_io)
        .layer(socket_io)
        .layer(middleware::from_fn(move |req: Request, next: Next| refuse_eio3(allow_eio3, req, next)))
        .layer(cors);
    (router, io)
}

/// Engine.IO v3 gets 400 on both endpoints unless it is allowed.
async fn refuse_eio3(allow: bool, request: Request, next: Next) -> Response {
    if !allow && request.uri().query().is_some_and(|q| q.split('&').any(|p| p == "EIO=3")) {
        return (StatusCode::BAD_REQUEST, "Engine.IO v3 is not accepted here (ALLOW_EIO3=false)").into_response();
    }
    next.run(request).await
}

/// The raw Engine.IO endpoint: sends every message back as it came.
#[derive(Debug, Clone, Copy)]
struct Echo;

impl EngineIoHandler for Echo {
    type Data = ();

    fn on_connect(self: Arc<Self>, socket: Arc<Socket<()>>) {
        tracing::debug!(sid = %socket.id, "engine.io echo: connected");
    }

    fn on_disconnect(&self, socket: Arc<Socket<()>>, reason: DisconnectReason) {
        tracing::debug!(sid = %socket.id, ?reason, "engine.io echo: disconnected");
    }

    fn on_message(self: &Arc<Self>, msg: Str, socket: Arc<Socket<()>>) {
        if let Err(e) = socket.emit(msg) {
            tracing::debug!(sid = %socket.id, error = %e, "engine.io echo: cannot echo a message");
        }
    }

    fn on_binary(self: &Arc<Self>, data: Bytes, socket: Arc<Socket<()>>) {
        if let Err(e) = socket.emit_binary(data) {
            tracing::debug!(sid = %socket.id, error = %e, "engine.io echo: cannot echo binary data");
        }
    }
}

/// Namespace `/`: `auth` on connect, `message` → `message-back`, `message-with-ack` acked.
///
/// The handlers are installed by a connect *middleware* (`install_main_handlers`), which
/// socketioxide runs before it sends the CONNECT reply. The connect handler itself runs in
/// a task spawned after that reply, so a handler installed there can miss an event the
/// client emits the moment it sees CONNECT: socketioxide drops an event that finds no
/// handler. That race lost about one first ack in twenty (`connect_then_emit.test.mjs`).
async fn on_main_connect(socket: SocketRef, Data(auth): Data<Dynamic>) {
    emit_auth(&socket, &auth);
}

/// Runs before the CONNECT reply: every event the client can send after it finds its
/// handler.
async fn install_main_handlers(socket: SocketRef) -> Result<(), std::convert::Infallible> {
    socket.on("message", async |socket: SocketRef, Data(args): Data<Args>| {
        if let Err(e) = socket.emit("message-back", &args) {
            tracing::debug!(sid = %socket.id, error = %e, "socket.io: cannot emit message-back");
        }
    });
    socket.on("message-with-ack", async |Data(args): Data<Args>, ack: AckSender| {
        if let Err(e) = ack.send(&args) {
            tracing::debug!(error = %e, "socket.io: cannot ack message-with-ack");
        }
    });
    Ok(())
}

/// Namespace `/custom`: `auth` on connect, nothing else.
async fn on_custom_connect(socket: SocketRef, Data(auth): Data<Dynamic>) {
    emit_auth(&socket, &auth);
}

/// Emits the handshake's auth payload (`{}` when the client sent none) as `auth`.
fn emit_auth(socket: &SocketRef, auth: &Dynamic) {
    if let Err(e) = socket.emit("auth", auth) {
        tracing::debug!(sid = %socket.id, error = %e, "socket.io: cannot emit auth");
    }
}

/// Any JSON value, plus binary data: what a Socket.IO event argument can be.
///
/// `serde_json::Value` has no binary variant (socketioxide would turn an attachment into
/// an array of numbers), and object keys keep the order they came in, so an echo is the
/// same text as what was sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Dynamic {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A negative integer.
    Int(i64),
    /// A non-negative integer.
    Uint(u64),
    /// Any other number.
    Float(f64),
    /// A string.
    String(String),
    /// A binary attachment.
    Binary(Bytes),
    /// An array.
    Array(Vec<Dynamic>),
    /// An object, keys in their original order.
    Object(Vec<(String, Dynamic)>),
}

impl Serialize for Dynamic {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Null => serializer.serialize_unit(),
            Self::Bool(b) => serializer.serialize_bool(*b),
            Self::Int(n) => serializer.serialize_i64(*n),
            Self::Uint(n) => serializer.serialize_u64(*n),
            Self::Float(n) => serializer.serialize_f64(*n),
            Self::String(s) => serializer.serialize_str(s),
            Self::Binary(b) => serializer.serialize_bytes(b),
            Self::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Self::Object(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Dynamic {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DynamicVisitor)
    }
}

struct DynamicVisitor;

impl<'de> Visitor<'de> for DynamicVisitor {
    type Value = Dynamic;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value or binary data")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Dynamic, E> {
        Ok(Dynamic::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Dynamic, E> {
        Ok(Dynamic::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Dynamic, D::Error> {
        Dynamic::deserialize(deserializer)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Dynamic, E> {
        Ok(Dynamic::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dynamic, E> {
        Ok(if v >= 0 { Dynamic::Uint(v as u64) } else { Dynamic::Int(v) })
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dynamic, E> {
        Ok(Dynamic::Uint(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Dynamic, E> {
        Ok(Dynamic::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Dynamic, E> {
        Ok(Dynamic::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Dynamic, E> {
        Ok(Dynamic::String(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Dynamic, E> {
        Ok(Dynamic::Binary(Bytes::copy_from_slice(v)))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Dynamic, E> {
        Ok(Dynamic::Binary(Bytes::from(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Dynamic, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Dynamic::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Dynamic, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some((k, v)) = map.next_entry::<String, Dynamic>()? {
            entries.push((k, v));
        }
        Ok(Dynamic::Object(entries))
    }
}

/// All the arguments of an event, in order.
///
/// It (de)serializes as a *tuple*: socketioxide's parser then reads every argument after
/// the event name (rather than only the first), and emits each as its own argument (or
/// the elements of an ack's array), so `["message", 1, "2"]` comes back as
/// `["message-back", 1, "2"]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Args(pub Vec<Dynamic>);

impl Serialize for Args {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(self.0.len())?;
        for arg in &self.0 {
            tuple.serialize_element(arg)?;
        }
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ArgsVisitor;
        impl<'de> Visitor<'de> for ArgsVisitor {
            type Value = Args;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the arguments of an event")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Args, A::Error> {
                match DynamicVisitor.visit_seq(seq)? {
                    Dynamic::Array(items) => Ok(Args(items)),
                    _ => unreachable!("visit_seq always builds an array"),
                }
            }
        }
        deserializer.deserialize_tuple(usize::MAX, ArgsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn configuration_defaults_and_overrides() {
        let none = ConformanceConfig::from_lookup(|_| None).unwrap();
        assert_eq!(none, ConformanceConfig::default());
        assert_eq!(none.port, 3000);
        assert!(!none.allow_eio3);

        let env: HashMap<&str, &str> = [("HOST", "127.0.0.1"), ("PORT", "4100"), ("ALLOW_EIO3", "true")].into();
        let c = ConformanceConfig::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(c.host, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(c.port, 4100);
        assert!(c.allow_eio3);

        assert!(ConformanceConfig::from_lookup(|k| (k == "ALLOW_EIO3").then(|| "maybe".into())).is_err());
        assert!(ConformanceConfig::from_lookup(|k| (k == "PORT").then(|| "x".into())).is_err());
    }

    #[test]
    fn dynamic_round_trips_json_in_order() {
        let text = r#"{"b":1,"a":[true,null,-2,1.5,"x"],"3":{"z":[false]}}"#;
        let value: Dynamic = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&value).unwrap(), text);
    }

    #[test]
    fn args_are_a_tuple() {
        let args: Args = serde_json::from_str(r#"[1,"2",{"3":[true]}]"#).unwrap();
        assert_eq!(args.0.len(), 3);
        assert_eq!(serde_json::to_string(&args).unwrap(), r#"[1,"2",{"3":[true]}]"#);
        assert!(socketioxide_core::parser::is_ser_tuple(&args));
        assert!(socketioxide_core::parser::is_de_tuple::<Args>());
    }
}
