//! Running as a fleet: state that several instances must share lives in Redis. Each
//! instance announces itself with a heartbeat key that expires, so what a dead instance
//! held stops counting on its own.

pub mod devices;
pub mod driver;
pub mod order;
pub mod presence;
pub mod signals;

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

/// How long an instance's heartbeat key lives without being refreshed.
pub const INSTANCE_TTL: Duration = Duration::from_secs(30);
/// How often an instance refreshes it.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

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
}

impl Fleet {
    /// Connects and announces this instance.
    pub async fn join(client: &redis::Client, prefix: &str) -> anyhow::Result<Self> {
        let redis = ConnectionManager::new(client.clone()).await?;
        let fleet = Self { instance: uuid::Uuid::now_v7().to_string(), prefix: prefix.to_string(), redis };
        fleet.beat().await?;
        Ok(fleet)
    }

    async fn beat(&self) -> redis::RedisResult<()> {
        let mut redis = self.redis.clone();
        redis.set_ex::<_, _, ()>(self.instance_key(&self.instance), 1, INSTANCE_TTL.as_secs()).await
    }

    /// Refreshes the heartbeat until `stop`; on stop, removes it so the instance's
    /// sockets stop counting at once.
    pub async fn heartbeat(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(HEARTBEAT_EVERY) => {
                    if let Err(e) = self.beat().await {
                        tracing::warn!(error = %e, "fleet heartbeat failed");
                    }
                }
                _ = stop.cancelled() => break,
            }
        }
        let mut redis = self.redis.clone();
        let _ = redis.del::<_, ()>(self.instance_key(&self.instance)).await;
    }
}
