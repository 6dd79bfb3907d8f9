//! Running as a fleet: state that several instances must share lives in Redis. Each
//! instance announces itself with a heartbeat key that expires, so what a dead instance
//! held stops counting on its own.

pub mod devices;
pub mod driver;
pub mod feed;
pub mod order;
pub mod presence;
pub mod signals;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio_util::sync::CancellationToken;

/// How long an instance's heartbeat key lives without being refreshed.
pub const INSTANCE_TTL: Duration = Duration::from_secs(30);
/// How often an instance refreshes it.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

/// How the fleet's Redis connections behave while Redis is away: every command fails
/// fast (callers fall back or degrade), and reconnecting never gives up.
pub fn connection_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Some(REDIS_TIMEOUT))
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_millis(500))
}

/// Runs a Redis command, giving up after [`REDIS_TIMEOUT`]. The connection manager makes
/// a command wait while it reconnects; nothing in a request path may wait for Redis that
/// long.
pub async fn bounded<T>(command: impl std::future::Future<Output = redis::RedisResult<T>>) -> redis::RedisResult<T> {
    match tokio::time::timeout(REDIS_TIMEOUT, command).await {
        Ok(result) => result,
        Err(_) => Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "Redis did not answer in time",
        ))),
    }
}

/// The longest one Redis command may take before its caller goes on without it.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// Keys.
impl Fleet {
    /// A key under the fleet's prefix.
    pub fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }

    /// The Redis key of an instance's heartbeat.
    pub fn instance_key(&self, id: &str) -> String {
        self.key(&format!("instance:{id}"))
    }
}

/// One instance's membership in the fleet.
#[derive(Clone)]
pub struct Fleet {
    /// This instance's id (fresh at every start).
    pub instance: String,
    /// Prefix of every key.
    pub prefix: String,
    /// A shared, self-reconnecting connection.
    pub redis: ConnectionManager,
    /// For connections of their own (pub/sub subscriptions).
    pub client: redis::Client,
    /// Whether Redis answered lately. While it does not, [`Fleet::run`] fails at once, so
    /// a request never waits for Redis more than once per outage; the heartbeat's pings
    /// set it back.
    reachable: Arc<AtomicBool>,
}

impl Fleet {
    /// Connects and announces this instance.
    pub async fn join(client: &redis::Client, prefix: &str) -> anyhow::Result<Self> {
        let redis = ConnectionManager::new_with_config(client.clone(), connection_config()).await?;
        let fleet = Self {
            instance: uuid::Uuid::now_v7().to_string(),
            prefix: prefix.to_string(),
            redis,
            client: client.clone(),
            reachable: Arc::new(AtomicBool::new(true)),
        };
        fleet.beat().await?;
        Ok(fleet)
    }

    /// Runs a command on the fleet's Redis, bounded in time; fails at once while Redis is
    /// known to be unreachable.
    pub async fn run<T>(
        &self,
        command: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> redis::RedisResult<T> {
        if !self.reachable.load(Ordering::SeqCst) {
            return Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "Redis is unreachable",
            )));
        }
        let result = bounded(command).await;
        if result.as_ref().is_err_and(|e| e.is_timeout() || e.is_io_error() || e.is_connection_dropped()) {
            self.reachable.store(false, Ordering::SeqCst);
        }
        result
    }

    async fn beat(&self) -> redis::RedisResult<()> {
        let mut redis = self.redis.clone();
        bounded(redis.set_ex::<_, _, ()>(self.instance_key(&self.instance), 1, INSTANCE_TTL.as_secs())).await
    }

    /// Refreshes the heartbeat until `stop`; on stop, removes it so the instance's
    /// sockets stop counting at once. Between beats it pings every second, so that after
    /// a Redis outage the connection comes back as soon as Redis does.
    pub async fn heartbeat(self, stop: CancellationToken) {
        let mut last_beat = tokio::time::Instant::now();
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    let due = failing || last_beat.elapsed() >= HEARTBEAT_EVERY;
                    let result = if due {
                        self.beat().await
                    } else {
                        let mut redis = self.redis.clone();
                        bounded(redis::cmd("PING").query_async::<()>(&mut redis)).await
                    };
                    self.reachable.store(result.is_ok(), Ordering::SeqCst);
                    match result {
                        Ok(()) => {
                            if failing {
                                tracing::info!("Redis is back");
                            }
                            if due {
                                last_beat = tokio::time::Instant::now();
                            }
                            failing = false;
                        }
                        Err(e) => {
                            if !failing {
                                tracing::warn!(error = %e, "Redis is unreachable");
                            }
                            failing = true;
                        }
                    }
                }
                _ = stop.cancelled() => break,
            }
        }
        let mut redis = self.redis.clone();
        let _ = bounded(redis.del::<_, ()>(self.instance_key(&self.instance))).await;
    }
}
