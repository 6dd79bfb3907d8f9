//! Building the server apart from serving it: [`Server::build`] opens the store, wires
//! the services and binds the listener (port 0 in tests) and reports the address;
//! [`Server::run_until_stopped`] serves until the shutdown future resolves, then drains.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use quckchat_domain::calls::Calls;
use quckchat_domain::calls::devices::{DeviceDirectory, LocalDevices};
use quckchat_domain::calls::signals::{LocalSignalBuffer, SignalBuffer};
use quckchat_domain::chat::Chat;
use quckchat_domain::hot::{ChangeFeed, HotState, NoFeed};
use quckchat_domain::ordering::{ConversationOrder, LocalOrder};
use quckchat_domain::presence::{LocalPresence, PresenceRegistry};
use quckchat_domain::store::CallStore;
use quckchat_domain::store::{Observed, Store};
use socketioxide::adapter::Adapter;
use socketioxide::layer::SocketIoLayer;
use socketioxide::{SocketIo, TransportType};
use socketioxide_core::adapter::DefinedAdapter;
use socketioxide_redis::{CustomRedisAdapter, RedisAdapterConfig, RedisAdapterCtr};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::auth::throttle::AuthThrottle;
use crate::auth::{Auth, JwtKeys, Lifetimes, PasswordHasher};
use crate::config::{Config, Transports};
use crate::fleet::Fleet;
use crate::fleet::devices::RedisDevices;
use crate::fleet::driver::ResilientDriver;
use crate::fleet::feed::RedisChangeFeed;
use crate::fleet::order::RedisOrder;
use crate::fleet::presence::RedisPresence;
use crate::fleet::signals::RedisSignalBuffer;
use crate::gateway::drain::Drain;
use crate::gateway::realtime::SocketIoRealtime;
use crate::ice::IceProvider;
use crate::metrics::Metrics;
use crate::push::{PushPolicy, PushWorker};
use crate::serve::ServeLimits;
use crate::state::AppState;

/// A built, bound server, not yet serving.
pub struct Server {
    listener: TcpListener,
    router: Router,
    close: CloseSockets,
    state: AppState,
    /// The state the Socket.IO handlers reach (weakly) while the server runs.
    shared: Arc<AppState>,
    /// Cancelled at shutdown: stops the background tasks.
    background: CancellationToken,
    push: Option<PushWorker>,
    fleet: Option<Fleet>,
}

/// Closes every socket (whatever the adapter type).
type CloseSockets = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// What one instance keeps alone and a fleet shares: presence of chat sockets and of
/// call devices, and early call signals.
struct Presences {
    chat: Arc<dyn PresenceRegistry>,
    calls: Arc<dyn PresenceRegistry>,
    devices: Arc<dyn DeviceDirectory>,
    signals: Arc<dyn SignalBuffer>,
    order: Arc<dyn ConversationOrder>,
}

/// Waiting for a namespace's adapter to be ready: nothing to wait for locally; a remote
/// adapter subscribes first.
pub trait AdapterInit {
    /// Resolves once the namespace can broadcast.
    fn ready(self) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;
}

impl AdapterInit for () {
    fn ready(self) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> {
        Box::pin(async { Ok(()) })
    }
}

impl<D> AdapterInit for socketioxide_redis::InitRes<D>
where
    D: socketioxide_redis::drivers::Driver,
{
    fn ready(self) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> {
        Box::pin(async move { self.await.map_err(|e| anyhow::anyhow!("Redis adapter: {e}")) })
    }
}

/// The redis crate speaks RESP2 unless told; the adapter wants RESP3 (Redis ≥ 7).
fn with_resp3(url: &str) -> String {
    if url.contains("protocol=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&protocol=resp3")
    } else {
        format!("{url}?protocol=resp3")
    }
}

/// Opens the store a `DATABASE_URL` names: `sqlite://PATH`, `postgres://…` (add
/// `schema=NAME` to the query to keep QuckChat's tables in their own schema, `pool_max=N`
/// to bound its connections, 16 by default), or
/// `mongodb://HOST/DATABASE`.
pub async fn open_store(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    open_store_with(url, false).await
}

/// [`open_store`]; `sqlite_full` makes every SQLite commit fsynced (`SQLITE_SYNCHRONOUS=full`).
pub async fn open_store_with(url: &str, sqlite_full: bool) -> anyhow::Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        let durability = if sqlite_full {
            quckchat_store_sqlite::Durability::Full
        } else {
            quckchat_store_sqlite::Durability::Normal
        };
        let store = Arc::new(
            quckchat_store_sqlite::SqliteStore::connect_with(url, durability)
                .await
                .with_context(|| format!("opening the SQLite store at {url}"))?,
        );
        Ok(store)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let (url, schema) = take_param(url, "schema");
        let (url, pool) = take_param(&url, "pool_max");
        let pool = match pool {
            Some(n) => n.parse().with_context(|| format!("pool_max={n} is not a whole number"))?,
            None => 16,
        };
        let store = quckchat_store_postgres::PostgresStore::connect_with(&url, schema.as_deref(), pool).await;
        let store = Arc::new(store.with_context(|| format!("opening the PostgreSQL store at {}", redact(&url)))?);
        Ok(store)
    } else if url.starts_with("mongodb://") || url.starts_with("mongodb+srv://") {
        let store = Arc::new(
            quckchat_store_mongo::MongoStore::connect(url)
                .await
                .with_context(|| format!("opening the MongoDB store at {}", redact(url)))?,
        );
        Ok(store)
    } else {
        anyhow::bail!("DATABASE_URL `{}`: expected sqlite://, postgres:// or mongodb://", redact(url))
    }
}

/// Takes one of our own parameters (`schema=`, `pool_max=`) out of a PostgreSQL URL.
fn take_param(url: &str, name: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else { return (url.to_string(), None) };
    let prefix = format!("{name}=");
    let mut value = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.strip_prefix(prefix.as_str()) {
            Some(v) if !v.is_empty() => {
                value = Some(v.to_string());
                false
            }
            _ => true,
        })
        .collect();
    let url = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
    (url, value)
}

/// A URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl Server {
    /// Builds the server with the default push policy.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with(config, PushPolicy::default()).await
    }

    /// Builds the server; `push_policy` tunes the outbox worker (tests shorten it).
    pub async fn build_with(config: Config, push_policy: PushPolicy) -> anyhow::Result<Self> {
        let metrics = Metrics::new();
        let backend = open_store_with(&config.database_url, config.sqlite_synchronous_full).await?;
        let store: Arc<dyn Store> = Arc::new(Observed::new(backend, Arc::new(metrics.store_timings())));
        let call_store: Arc<dyn CallStore> = store.clone();
        let keys = JwtKeys::load_or_generate(config.jwt_secret.as_deref(), &config.data_dir)?;
        // Stops the background tasks (heartbeat, pub/sub keep-alive, call sweeper) at shutdown.
        let background = CancellationToken::new();

        let transports: &[TransportType] = match config.transports {
            Transports::Websocket => &[TransportType::Websocket],
            Transports::WebsocketAndPolling => &[TransportType::Polling, TransportType::Websocket],
        };
        let builder = SocketIo::builder()
            .ping_interval(config.ping_interval)
            .ping_timeout(config.ping_timeout)
            .max_payload(config.max_http_buffer_size)
            .ws_max_message_size(config.max_http_buffer_size as usize)
            .ws_max_frame_size(config.max_http_buffer_size as usize)
            .max_buffer_size(config.socket_buffer)
            .connect_timeout(Duration::from_secs(45));
        let builder = if transports.len() == 1 {
            builder.transports([TransportType::Websocket])
        } else {
            builder.transports([TransportType::Polling, TransportType::Websocket])
        };
        match config.redis_url.clone() {
            None => {
                let (layer, io) = builder.build_layer();
                let presence = Presences {
                    chat: Arc::new(LocalPresence::new()),
                    calls: Arc::new(LocalPresence::new()),
                    devices: Arc::new(LocalDevices::new()),
                    signals: Arc::new(LocalSignalBuffer::new()),
                    order: Arc::new(LocalOrder::new()),
                };
                Self::assemble(
                    config,
                    push_policy,
                    metrics,
                    store,
                    call_store,
                    keys,
                    layer,
                    io,
                    presence,
                    None,
                    background,
                )
                .await
            }
            Some(url) => {
                let client = redis::Client::open(with_resp3(&url)).with_context(|| format!("REDIS_URL `{url}`"))?;
                let fleet = Fleet::join(&client, &config.redis_prefix)
                    .await
                    .with_context(|| format!("connecting to Redis at {url}"))?;
                let adapter_config = RedisAdapterConfig::new().with_prefix(format!("{}:sio", config.redis_prefix));
                let driver = ResilientDriver::connect(&client, background.clone())
                    .await
                    .with_context(|| format!("starting the Redis adapter at {url}"))?;
                let adapter = RedisAdapterCtr::new_with_driver(driver, adapter_config);
                let (layer, io) = builder.with_adapter::<CustomRedisAdapter<_, ResilientDriver>>(adapter).build_layer();
                let presence = Presences {
                    chat: Arc::new(RedisPresence::new(fleet.clone(), "presence")),
                    calls: Arc::new(RedisPresence::new(fleet.clone(), "devices")),
                    devices: Arc::new(RedisDevices::new(fleet.clone())),
                    signals: Arc::new(RedisSignalBuffer::new(fleet.clone())),
                    order: Arc::new(RedisOrder::new(fleet.clone())),
                };
                Self::assemble(
                    config,
                    push_policy,
                    metrics,
                    store,
                    call_store,
                    keys,
                    layer,
                    io,
                    presence,
                    Some(fleet),
                    background,
                )
                .await
            }
        }
    }

    /// Wires the services to a Socket.IO server with adapter `A` (local, or Redis for a
    /// fleet), registers the namespaces, and binds.
    #[allow(clippy::too_many_arguments)]
    async fn assemble<A>(
        config: Config,
        push_policy: PushPolicy,
        metrics: Metrics,
        store: Arc<dyn Store>,
        call_store: Arc<dyn CallStore>,
        keys: JwtKeys,
        io_layer: SocketIoLayer<A>,
        io: SocketIo<A>,
        presence: Presences,
        fleet: Option<Fleet>,
        background: CancellationToken,
    ) -> anyhow::Result<Self>
    where
        A: Adapter + DefinedAdapter,
        A::InitRes: AdapterInit,
    {
        let push_queued = Arc::new(Notify::new());
        let realtime = Arc::new(SocketIoRealtime::new(io.clone(), metrics.clone()));
        let hot = Arc::new(HotState::new(config.hot_limits));
        let feed: Arc<dyn ChangeFeed> = match &fleet {
            Some(fleet) => Arc::new(RedisChangeFeed::start(fleet.clone(), hot.clone(), background.clone())),
            None => Arc::new(NoFeed),
        };
        let chat = Arc::new(Chat::new(
            store.clone(),
            realtime.clone(),
            presence.chat,
            presence.order,
            push_queued.clone(),
            hot.clone(),
            feed.clone(),
        ));
        let calls = Calls::new(
            store.clone(),
            call_store,
            chat.clone(),
            realtime.clone(),
            presence.calls,
            presence.devices,
            presence.signals,
            config.ring_timeout,
            push_queued.clone(),
        );
        if fleet.is_none() {
            // Alone, nobody can be connected to a server that is only starting: whatever
            // the previous run left ringing or active is over. (In a fleet, the other
            // instances still carry their calls; the sweeper settles abandoned ones.)
            let settled = calls.settle_after_restart().await.context("settling calls left by the previous run")?;
            if settled > 0 {
                tracing::info!(settled, "calls left ringing or active by the previous run were ended");
            }
        }
        let hasher = PasswordHasher::start(config.hash_workers, config.hash_queue);
        let throttle = AuthThrottle::new(config.auth_rate_per_address, config.auth_rate_per_username);
        let auth = Arc::new(Auth::new(
            store.clone(),
            realtime,
            keys,
            hasher,
            throttle,
            Lifetimes {
                access_ttl: config.access_ttl,
                refresh_ttl: config.refresh_ttl,
                refresh_grace: config.refresh_reuse_grace,
            },
            hot,
            feed,
        ));
        let ice = IceProvider::new(&config);
        let config = Arc::new(config);
        let state = AppState {
            chat,
            calls,
            ice,
            auth,
            store: store.clone(),
            metrics: metrics.clone(),
            drain: Drain::new(),
            sockets: crate::gateway::session::UserSockets::new(&config),
            fleet: fleet.clone(),
            config: config.clone(),
        };
        let shared = Arc::new(state.clone());
        for init in crate::gateway::register(&io, &shared) {
            init.ready().await.context("initialising a namespace's adapter")?;
        }

        let push = config
            .push_webhook_url
            .clone()
            .map(|url| PushWorker::new(store.clone(), url, push_queued, metrics.clone(), push_policy));

        let allow_eio3 = config.allow_eio3;
        let router = crate::http::router(state.clone(), config.max_http_buffer_size as usize)
            .layer(io_layer)
            .layer(middleware::from_fn(move |req: Request, next: Next| refuse_eio3(allow_eio3, req, next)))
            .layer(cors(&config.cors_origins));

        let addr = SocketAddr::new(config.host, config.port);
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        let close: CloseSockets = Box::new(move || Box::pin(async move { io.close().await }));
        Ok(Self { listener, router, close, state, shared, push, fleet, background })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The HTTP router, for in-process tests.
    #[cfg(test)]
    pub(crate) fn router_for_tests(&self) -> Router {
        self.router.clone()
    }

    /// The services (tests reach the store through it).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then: stops accepting, lets socket events in
    /// flight finish and ack (new ones are refused), closes every socket, stops the push
    /// worker after its current job, and returns.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Self { listener, router, close, state, shared, push, fleet, background } = self;
        let stop_push = CancellationToken::new();
        let push_task = push.map(|worker| tokio::spawn(worker.run(stop_push.clone())));
        let heartbeat = fleet.map(|fleet| tokio::spawn(fleet.heartbeat(background.clone())));
        let sweeper =
            tokio::spawn(state.calls.clone().sweep_every(Duration::from_secs(5), background.clone().cancelled_owned()));
        let grace = state.config.shutdown_grace;
        let drain = state.drain.clone();

        let graceful = async move {
            shutdown.await;
            tracing::info!("shutting down: draining socket events");
            let left = drain.drain(grace).await;
            if left > 0 {
                tracing::warn!(left, "shutdown grace ran out with events still running");
            }
            close().await;
            tracing::info!("sockets closed");
        };
        let limits = ServeLimits {
            header_read_timeout: state.config.header_read_timeout,
            body_read_timeout: state.config.body_read_timeout,
            max_connections: state.config.max_connections,
            close_grace: grace,
        };
        crate::serve::serve(listener, router, limits, state.metrics.clone(), graceful).await.context("serving")?;
        stop_push.cancel();
        if let Some(task) = push_task {
            let _ = tokio::time::timeout(grace, task).await;
        }
        background.cancel();
        let _ = sweeper.await;
        if let Some(task) = heartbeat {
            let _ = tokio::time::timeout(grace, task).await;
        }
        drop(shared);
        tracing::info!("stopped");
        Ok(())
    }
}

/// Engine.IO v3 (socket.io-client 2.x) is refused with 400 unless `ALLOW_EIO3` is set.
async fn refuse_eio3(allow: bool, request: Request, next: Next) -> Response {
    if !allow
        && request.uri().path().starts_with("/socket.io")
        && request.uri().query().is_some_and(|q| q.split('&').any(|p| p == "EIO=3"))
    {
        return (StatusCode::BAD_REQUEST, "Engine.IO v3 is not accepted here (ALLOW_EIO3=false)").into_response();
    }
    next.run(request).await
}

fn cors(origins: &[String]) -> CorsLayer {
    let base = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS])
        .allow_headers([axum::http::header::AUTHORIZATION, axum::http::header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600));
    if origins.is_empty() {
        base.allow_origin(Any)
    } else {
        let list: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
        base.allow_origin(AllowOrigin::list(list)).allow_credentials(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_parameter_is_ours() {
        assert_eq!(take_param("postgres://u@h/db?schema=a", "schema"), ("postgres://u@h/db".into(), Some("a".into())));
        assert_eq!(
            take_param("postgres://u@h/db?sslmode=disable&schema=b", "schema"),
            ("postgres://u@h/db?sslmode=disable".into(), Some("b".into()))
        );
        assert_eq!(take_param("postgres://u@h/db", "schema"), ("postgres://u@h/db".into(), None));
        assert_eq!(
            take_param("postgres://u@h/db?pool_max=4&schema=c", "pool_max"),
            ("postgres://u@h/db?schema=c".into(), Some("4".into()))
        );
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
