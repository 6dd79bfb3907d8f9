//! Configuration, read once from the environment (CONTRACT §1).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use ipnet::IpNet;

pub use crate::auth::throttle::Rule;

/// Which transports Engine.IO accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transports {
    /// WebSocket only (the seed's default).
    Websocket,
    /// Long polling first, then upgrade; and WebSocket directly.
    WebsocketAndPolling,
}

/// Everything the server can be told.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address.
    pub host: IpAddr,
    /// Listen port (0: any free port).
    pub port: u16,
    /// `sqlite://PATH` (more backends later).
    pub database_url: String,
    /// Redis for a fleet (adapter, shared presence); `None`: a single instance.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel, so fleets can share one Redis.
    pub redis_prefix: String,
    /// HS256 secret; `None`: generated once and kept in the data directory.
    pub jwt_secret: Option<String>,
    /// Where a generated secret is kept.
    pub data_dir: PathBuf,
    /// Access token lifetime.
    pub access_ttl: Duration,
    /// Refresh token (session) lifetime.
    pub refresh_ttl: Duration,
    /// Allowed CORS origins; empty means any (`*`, without credentials).
    pub cors_origins: Vec<String>,
    /// Engine.IO ping interval.
    pub ping_interval: Duration,
    /// Engine.IO ping timeout.
    pub ping_timeout: Duration,
    /// Largest accepted packet, bytes.
    pub max_http_buffer_size: u64,
    /// Accepted transports.
    pub transports: Transports,
    /// Accept Engine.IO v3 (socket.io-client 2.x).
    pub allow_eio3: bool,
    /// Where pushes for offline users are POSTed; `None`: kept in the outbox.
    pub push_webhook_url: Option<String>,
    /// Messages a socket may send per second, sustained.
    pub message_rate_per_sec: u32,
    /// Extra messages a socket may send in a burst.
    pub message_burst: u32,
    /// Typing events a socket may send per second.
    pub typing_rate_per_sec: u32,
    /// Other events a socket may send per second.
    pub event_rate_per_sec: u32,
    /// Packets buffered per socket before emits to it fail.
    pub socket_buffer: usize,
    /// How long shutdown waits for in-flight work.
    pub shutdown_grace: Duration,
    /// How long a call rings before it is `missed`.
    pub ring_timeout: Duration,
    /// STUN server URLs handed to clients.
    pub stun_urls: Vec<String>,
    /// TURN server URLs; with `turn_secret`, clients get per-user TURN credentials.
    pub turn_urls: Vec<String>,
    /// The shared secret of the TURN server (coturn `static-auth-secret`).
    pub turn_secret: Option<String>,
    /// How long minted TURN credentials stay valid.
    pub turn_ttl: Duration,
    /// Password hashing threads (each holds 19 MiB of argon2 memory).
    pub hash_workers: usize,
    /// Logins and registrations waiting for a hashing thread; beyond it, 503 at once.
    pub hash_queue: usize,
    /// Register/login/refresh attempts per client address: sustained per minute, burst.
    pub auth_rate_per_address: Rule,
    /// Login attempts per username (any address): sustained per minute, burst.
    pub auth_rate_per_username: Rule,
    /// Proxies whose `X-Forwarded-For` is believed (`TRUSTED_PROXIES`, IPs or CIDRs).
    pub trusted_proxies: Vec<IpNet>,
    /// How long a connection may take to send a request's headers, the first request's
    /// included (so also how long an idle connection is kept).
    pub header_read_timeout: Duration,
    /// How long a request body may take to arrive.
    pub body_read_timeout: Duration,
    /// Open connections accepted at most; beyond it new ones are closed at once.
    pub max_connections: usize,
    /// Messages one user may send per second over all its sockets.
    pub user_message_rate_per_sec: u32,
    /// Typing events one user may send per second over all its sockets.
    pub user_typing_rate_per_sec: u32,
    /// Other events one user may send per second over all its sockets.
    pub user_event_rate_per_sec: u32,
    /// Sockets (all namespaces) one user may hold on this instance.
    pub max_sockets_per_user: usize,
    /// How long after a rotation the rotated-away refresh token still answers the pair it
    /// was rotated into (instead of ending the session as a reuse).
    pub refresh_reuse_grace: Duration,
    /// `SQLITE_SYNCHRONOUS=full`: every SQLite commit fsynced before its ack (power-loss
    /// durable); otherwise `normal` (an acked write survives the process, not the OS).
    pub sqlite_synchronous_full: bool,
    /// Hot state capacities (`HOT_CACHE_MEMBERS`, `HOT_CACHE_USERS`).
    pub hot_limits: quckchat_domain::hot::HotLimits,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host: IpAddr::from([0, 0, 0, 0]),
            port: 3000,
            database_url: "sqlite://./data/quckchat.db".into(),
            redis_url: None,
            redis_prefix: "quckchat".into(),
            jwt_secret: None,
            data_dir: PathBuf::from("./data"),
            access_ttl: Duration::from_secs(3600),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            cors_origins: Vec::new(),
            ping_interval: Duration::from_millis(10_000),
            ping_timeout: Duration::from_millis(30_000),
            max_http_buffer_size: 1_000_000,
            transports: Transports::Websocket,
            allow_eio3: true,
            push_webhook_url: None,
            message_rate_per_sec: 10,
            message_burst: 10,
            typing_rate_per_sec: 5,
            event_rate_per_sec: 50,
            socket_buffer: 1024,
            shutdown_grace: Duration::from_secs(10),
            ring_timeout: Duration::from_millis(45_000),
            stun_urls: Vec::new(),
            turn_urls: Vec::new(),
            turn_secret: None,
            turn_ttl: Duration::from_secs(86_400),
            hash_workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            hash_queue: 16,
            auth_rate_per_address: Rule { per_minute: 20, burst: 30 },
            auth_rate_per_username: Rule { per_minute: 5, burst: 10 },
            trusted_proxies: Vec::new(),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_connections: default_max_connections(),
            user_message_rate_per_sec: 20,
            user_typing_rate_per_sec: 10,
            user_event_rate_per_sec: 100,
            max_sockets_per_user: 32,
            refresh_reuse_grace: Duration::from_secs(10),
            sqlite_synchronous_full: false,
            hot_limits: quckchat_domain::hot::HotLimits::default(),
        }
    }
}

impl Config {
    /// Reads the environment; unset variables keep their defaults, malformed ones are an
    /// error that names the variable.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
    }

    /// Reads configuration through `get` (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let mut c = Self::default();
        if let Some(v) = get("HOST") {
            c.host = v.parse().with_context(|| format!("HOST={v} is not an IP address"))?;
        }
        if let Some(v) = get("PORT") {
            c.port = v.parse().with_context(|| format!("PORT={v} is not a port"))?;
        }
        if let Some(v) = get("DATABASE_URL") {
            c.database_url = v;
        }
        if let Some(path) = c.database_url.strip_prefix("sqlite://") {
            let path = PathBuf::from(path.split('?').next().unwrap_or(path));
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                c.data_dir = parent.to_path_buf();
            }
        }
        if let Some(v) = get("DATA_DIR") {
            c.data_dir = PathBuf::from(v);
        }
        c.jwt_secret = get("JWT_SECRET");
        c.redis_url = get("REDIS_URL");
        if let Some(v) = get("REDIS_PREFIX") {
            c.redis_prefix = v;
        }
        if let Some(v) = get("JWT_EXPIRES_IN") {
            c.access_ttl = parse_duration(&v).with_context(|| format!("JWT_EXPIRES_IN={v}"))?;
        }
        if let Some(v) = get("JWT_REFRESH_EXPIRES_IN") {
            c.refresh_ttl = parse_duration(&v).with_context(|| format!("JWT_REFRESH_EXPIRES_IN={v}"))?;
        }
        if let Some(v) = get("CORS_ORIGIN") {
            c.cors_origins =
                v.split(',').map(str::trim).filter(|o| !o.is_empty() && *o != "*").map(String::from).collect();
        }
        let ms = |name: &str, default: Duration| -> anyhow::Result<Duration> {
            match get(name) {
                Some(v) => {
                    Ok(Duration::from_millis(v.parse().with_context(|| format!("{name}={v} is not milliseconds"))?))
                }
                None => Ok(default),
            }
        };
        c.ping_interval = ms("PING_INTERVAL_MS", c.ping_interval)?;
        c.ping_timeout = ms("PING_TIMEOUT_MS", c.ping_timeout)?;
        if let Some(v) = get("MAX_HTTP_BUFFER_SIZE") {
            c.max_http_buffer_size = v.parse().with_context(|| format!("MAX_HTTP_BUFFER_SIZE={v}"))?;
        }
        if let Some(v) = get("TRANSPORTS") {
            let set: Vec<String> = v.split(',').map(|t| t.trim().to_ascii_lowercase()).collect();
            c.transports = match (set.iter().any(|t| t == "websocket"), set.iter().any(|t| t == "polling")) {
                (true, false) => Transports::Websocket,
                (_, true) => Transports::WebsocketAndPolling,
                _ => bail!("TRANSPORTS={v}: expected `websocket` or `websocket,polling`"),
            };
        }
        if let Some(v) = get("ALLOW_EIO3") {
            c.allow_eio3 = parse_bool(&v).with_context(|| format!("ALLOW_EIO3={v}"))?;
        }
        c.push_webhook_url = get("PUSH_WEBHOOK_URL");
        let num = |name: &str, default: u32| -> anyhow::Result<u32> {
            match get(name) {
                Some(v) => v.parse().with_context(|| format!("{name}={v} is not a whole number")),
                None => Ok(default),
            }
        };
        c.message_rate_per_sec = num("RATE_LIMIT_MESSAGES_PER_SEC", c.message_rate_per_sec)?.max(1);
        c.message_burst = num("RATE_LIMIT_MESSAGE_BURST", c.message_burst)?;
        c.typing_rate_per_sec = num("RATE_LIMIT_TYPING_PER_SEC", c.typing_rate_per_sec)?.max(1);
        c.event_rate_per_sec = num("RATE_LIMIT_EVENTS_PER_SEC", c.event_rate_per_sec)?.max(1);
        c.socket_buffer = num("SOCKET_BUFFER_PACKETS", c.socket_buffer as u32)?.max(16) as usize;
        c.shutdown_grace = ms("SHUTDOWN_GRACE_MS", c.shutdown_grace)?;
        c.ring_timeout = ms("RING_TIMEOUT_MS", c.ring_timeout)?;
        let list = |name: &str| -> Vec<String> {
            get(name)
                .map(|v| v.split(',').map(str::trim).filter(|u| !u.is_empty()).map(String::from).collect())
                .unwrap_or_default()
        };
        c.stun_urls = list("STUN_URLS");
        c.turn_urls = list("TURN_URLS");
        c.turn_secret = get("TURN_SECRET");
        if let Some(v) = get("TURN_TTL") {
            c.turn_ttl = parse_duration(&v).with_context(|| format!("TURN_TTL={v}"))?;
        }
        let count = |name: &str, default: usize| -> anyhow::Result<usize> {
            match get(name) {
                Some(v) => v.parse().with_context(|| format!("{name}={v} is not a whole number")),
                None => Ok(default),
            }
        };
        c.hash_workers = count("HASH_WORKERS", c.hash_workers)?.max(1);
        c.hash_queue = count("HASH_QUEUE", c.hash_queue)?;
        c.auth_rate_per_address = Rule {
            per_minute: num("AUTH_RATE_PER_MIN", c.auth_rate_per_address.per_minute)?,
            burst: num("AUTH_BURST", c.auth_rate_per_address.burst)?,
        };
        c.auth_rate_per_username = Rule {
            per_minute: num("AUTH_USER_RATE_PER_MIN", c.auth_rate_per_username.per_minute)?,
            burst: num("AUTH_USER_BURST", c.auth_rate_per_username.burst)?,
        };
        c.trusted_proxies = list("TRUSTED_PROXIES")
            .iter()
            .map(|p| {
                p.parse::<IpNet>()
                    .or_else(|_| p.parse::<IpAddr>().map(IpNet::from))
                    .with_context(|| format!("TRUSTED_PROXIES: `{p}` is not an IP address or CIDR"))
            })
            .collect::<anyhow::Result<_>>()?;
        c.header_read_timeout = ms("HEADER_READ_TIMEOUT_MS", c.header_read_timeout)?.max(Duration::from_millis(100));
        c.body_read_timeout = ms("BODY_READ_TIMEOUT_MS", c.body_read_timeout)?.max(Duration::from_millis(100));
        c.max_connections = count("MAX_CONNECTIONS", c.max_connections)?.max(1);
        c.user_message_rate_per_sec = num("RATE_LIMIT_USER_MESSAGES_PER_SEC", c.user_message_rate_per_sec)?.max(1);
        c.user_typing_rate_per_sec = num("RATE_LIMIT_USER_TYPING_PER_SEC", c.user_typing_rate_per_sec)?.max(1);
        c.user_event_rate_per_sec = num("RATE_LIMIT_USER_EVENTS_PER_SEC", c.user_event_rate_per_sec)?.max(1);
        c.max_sockets_per_user = count("MAX_SOCKETS_PER_USER", c.max_sockets_per_user)?.max(1);
        c.refresh_reuse_grace = ms("REFRESH_REUSE_GRACE_MS", c.refresh_reuse_grace)?;
        if let Some(v) = get("SQLITE_SYNCHRONOUS") {
            c.sqlite_synchronous_full = match v.trim().to_ascii_lowercase().as_str() {
                "full" | "extra" => true,
                "normal" => false,
                _ => bail!("SQLITE_SYNCHRONOUS={v}: expected `normal` or `full`"),
            };
        }
        c.hot_limits.conversation_weight =
            count("HOT_CACHE_MEMBERS", c.hot_limits.conversation_weight as usize)?.max(16) as u64;
        c.hot_limits.users = count("HOT_CACHE_USERS", c.hot_limits.users as usize)?.max(16) as u64;
        if !c.turn_urls.is_empty() && c.turn_secret.is_none() {
            bail!("TURN_URLS is set but TURN_SECRET is not: TURN credentials cannot be minted");
        }
        Ok(c)
    }
}

/// The open-file limit of this process, less headroom for the store, Redis, logs and the
/// accept that must fail gracefully: 90 % of the soft limit, and at least 64 fewer.
pub fn default_max_connections() -> usize {
    let limit = open_file_limit().unwrap_or(1024);
    let headroom = (limit / 10).max(64);
    limit.saturating_sub(headroom).max(16)
}

/// `RLIMIT_NOFILE`'s soft limit.
fn open_file_limit() -> Option<usize> {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes into the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    (rc == 0 && rl.rlim_cur != libc::RLIM_INFINITY).then(|| usize::try_from(rl.rlim_cur).unwrap_or(usize::MAX))
}

/// Parses `15m`, `1h`, `30d`, `45s`, `500ms` or plain seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().with_context(|| format!("`{s}` does not start with a number"))?;
    let secs = match unit.trim() {
        "ms" => return Ok(Duration::from_millis(n)),
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        "w" => n * 7 * 86_400,
        other => bail!("unknown duration unit `{other}` (use ms, s, m, h, d or w)"),
    };
    Ok(Duration::from_secs(secs))
}

fn parse_bool(s: &str) -> anyhow::Result<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => bail!("expected true or false"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> anyhow::Result<Config> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.port, 3000);
        assert_eq!(c.host.to_string(), "0.0.0.0");
        assert_eq!(c.database_url, "sqlite://./data/quckchat.db");
        assert_eq!(c.ping_interval, Duration::from_secs(10));
        assert_eq!(c.ping_timeout, Duration::from_secs(30));
        assert_eq!(c.max_http_buffer_size, 1_000_000);
        assert_eq!(c.transports, Transports::Websocket);
        assert!(c.allow_eio3);
        assert_eq!(c.access_ttl, Duration::from_secs(3600));
        assert_eq!(c.refresh_ttl, Duration::from_secs(30 * 86_400));
        assert!(c.cors_origins.is_empty());
        assert_eq!(c.ring_timeout, Duration::from_secs(45));
        assert!(c.turn_urls.is_empty() && c.stun_urls.is_empty());
        assert!(c.max_connections >= 16 && c.max_connections < 1_000_000);
        assert_eq!(c.max_sockets_per_user, 32);
        assert!(c.trusted_proxies.is_empty());
    }

    #[test]
    fn hardening_variables() {
        let c = cfg(&[
            ("TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8,::1"),
            ("AUTH_RATE_PER_MIN", "0"),
            ("MAX_CONNECTIONS", "900"),
            ("HEADER_READ_TIMEOUT_MS", "2000"),
            ("MAX_SOCKETS_PER_USER", "4"),
        ])
        .unwrap();
        assert_eq!(c.trusted_proxies.len(), 3);
        assert_eq!(c.auth_rate_per_address.per_minute, 0);
        assert_eq!(c.max_connections, 900);
        assert_eq!(c.header_read_timeout, Duration::from_secs(2));
        assert_eq!(c.max_sockets_per_user, 4);
        assert!(cfg(&[("TRUSTED_PROXIES", "nginx")]).is_err());
    }

    #[test]
    fn reads_variables() {
        let c = cfg(&[
            ("PORT", "0"),
            ("JWT_EXPIRES_IN", "15m"),
            ("TRANSPORTS", "websocket,polling"),
            ("ALLOW_EIO3", "false"),
            ("CORS_ORIGIN", "https://a.example, https://b.example"),
            ("DATABASE_URL", "sqlite:///tmp/x/q.db"),
        ])
        .unwrap();
        assert_eq!(c.port, 0);
        assert_eq!(c.access_ttl, Duration::from_secs(900));
        assert_eq!(c.transports, Transports::WebsocketAndPolling);
        assert!(!c.allow_eio3);
        assert_eq!(c.cors_origins.len(), 2);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn rejects_malformed_values() {
        assert!(cfg(&[("PORT", "http")]).is_err());
        assert!(cfg(&[("JWT_EXPIRES_IN", "soon")]).is_err());
        assert!(cfg(&[("TRANSPORTS", "carrier-pigeon")]).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d").unwrap(), Duration::from_secs(2_592_000));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    }
}
