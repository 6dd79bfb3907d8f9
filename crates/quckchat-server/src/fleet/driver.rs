//! The pub/sub driver under the Socket.IO Redis adapter. socketioxide-redis's own driver
//! holds one multiplexed connection that is dead for good once Redis restarts; this one
//! uses redis' `ConnectionManager`, which reconnects and re-subscribes every channel on
//! its own, so cross-instance delivery resumes after a Redis restart without a server
//! restart.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, FromRedisValue, PushInfo, PushKind};
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

type Handlers = Arc<RwLock<HashMap<String, mpsc::Sender<ChanItem>>>>;

/// A driver error (a Redis error).
#[derive(Debug)]
pub struct DriverError(redis::RedisError);

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DriverError {}

impl From<redis::RedisError> for DriverError {
    fn from(e: redis::RedisError) -> Self {
        Self(e)
    }
}

/// A self-healing pub/sub driver.
#[derive(Clone)]
pub struct ResilientDriver {
    handlers: Handlers,
    conn: ConnectionManager,
    /// Whether Redis answered the last ping. While it does not, publishing fails at once,
    /// so the caller delivers locally without waiting for a timeout on every event.
    reachable: Arc<AtomicBool>,
}

fn route(msg: PushInfo, handlers: &Handlers) {
    if !matches!(msg.kind, PushKind::Message | PushKind::SMessage) || msg.data.len() < 2 {
        return;
    }
    let mut data = msg.data.into_iter();
    let (Some(chan), Some(body)) = (data.next(), data.next()) else { return };
    let (Ok(chan), Ok(body)) = (String::from_redis_value(chan), Vec::<u8>::from_redis_value(body)) else {
        tracing::warn!("unreadable pub/sub message");
        return;
    };
    let handlers = handlers.read().unwrap_or_else(|e| e.into_inner());
    if let Some(tx) = handlers.get(&chan)
        && let Err(e) = tx.try_send((chan, body))
    {
        tracing::warn!(error = %e, "adapter channel full: a cross-instance message was dropped");
    }
}

impl ResilientDriver {
    /// Connects, and pings every half second until `stop`: the pings tell whether Redis
    /// is reachable, and after an outage they make the connection come back (and
    /// re-subscribe) as soon as Redis does, even on an instance that publishes nothing.
    pub async fn connect(client: &redis::Client, stop: CancellationToken) -> redis::RedisResult<Self> {
        let handlers: Handlers = Arc::new(RwLock::new(HashMap::new()));
        let routed = handlers.clone();
        let config = super::connection_config()
            .set_push_sender(move |msg: PushInfo| {
                route(msg, &routed);
                Ok::<(), std::convert::Infallible>(())
            })
            .set_automatic_resubscription();
        let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        let driver = Self { handlers, conn, reachable: Arc::new(AtomicBool::new(true)) };
        tokio::spawn(driver.clone().keep_alive(stop));
        Ok(driver)
    }

    async fn keep_alive(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.cancelled() => return,
            }
            let mut conn = self.conn.clone();
            let up = super::bounded(redis::cmd("PING").query_async::<()>(&mut conn)).await.is_ok();
            if self.reachable.swap(up, Ordering::SeqCst) != up {
                if up {
                    tracing::info!("pub/sub: Redis is back; cross-instance delivery resumes");
                } else {
                    tracing::warn!("pub/sub: Redis is unreachable; delivering to local sockets only");
                }
            }
        }
    }

    fn unreachable() -> DriverError {
        DriverError(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::NotConnected,
            "Redis is unreachable",
        )))
    }
}

impl Driver for ResilientDriver {
    type Error = DriverError;

    async fn publish(&self, chan: String, val: Vec<u8>) -> Result<(), Self::Error> {
        if !self.reachable.load(Ordering::SeqCst) {
            return Err(Self::unreachable());
        }
        let mut conn = self.conn.clone();
        if let Err(e) = super::bounded(conn.publish::<_, _, redis::Value>(chan, val)).await {
            self.reachable.store(false, Ordering::SeqCst);
            return Err(e.into());
        }
        Ok(())
    }

    async fn subscribe(&self, chan: String, size: usize) -> Result<MessageStream<ChanItem>, Self::Error> {
        let (tx, rx) = mpsc::channel(size);
        self.handlers.write().unwrap_or_else(|e| e.into_inner()).insert(chan.clone(), tx);
        let mut conn = self.conn.clone();
        super::bounded(conn.subscribe(chan.as_str())).await?;
        Ok(MessageStream::new(rx))
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), Self::Error> {
        self.handlers.write().unwrap_or_else(|e| e.into_inner()).remove(&chan);
        let mut conn = self.conn.clone();
        super::bounded(conn.unsubscribe(chan)).await?;
        Ok(())
    }

    async fn num_serv(&self, chan: &str) -> Result<u16, Self::Error> {
        let mut conn = self.conn.clone();
        if !self.reachable.load(Ordering::SeqCst) {
            return Err(Self::unreachable());
        }
        let (_, count): (String, u16) =
            super::bounded(redis::cmd("PUBSUB").arg("NUMSUB").arg(chan).query_async(&mut conn)).await?;
        Ok(count)
    }
}
