//! The pub/sub driver under the Socket.IO Redis adapter. socketioxide-redis's own driver
//! holds one multiplexed connection that is dead for good once Redis restarts; this one
//! uses redis' `ConnectionManager`, which reconnects and re-subscribes every channel on
//! its own, so cross-instance delivery resumes after a Redis restart without a server
//! restart.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, FromRedisValue, PushInfo, PushKind};
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use tokio::sync::mpsc;

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
    /// Connects. Commands time out quickly while Redis is away, so callers fall back to
    /// local delivery instead of hanging.
    pub async fn connect(client: &redis::Client) -> redis::RedisResult<Self> {
        let handlers: Handlers = Arc::new(RwLock::new(HashMap::new()));
        let routed = handlers.clone();
        let config = ConnectionManagerConfig::new()
            .set_push_sender(move |msg: PushInfo| {
                route(msg, &routed);
                Ok::<(), std::convert::Infallible>(())
            })
            .set_automatic_resubscription()
            .set_response_timeout(Some(Duration::from_millis(1_000)))
            .set_connection_timeout(Some(Duration::from_millis(1_000)))
            .set_max_delay(Duration::from_millis(1_000));
        let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        Ok(Self { handlers, conn })
    }
}

impl Driver for ResilientDriver {
    type Error = DriverError;

    async fn publish(&self, chan: String, val: Vec<u8>) -> Result<(), Self::Error> {
        self.conn.clone().publish::<_, _, redis::Value>(chan, val).await?;
        Ok(())
    }

    async fn subscribe(&self, chan: String, size: usize) -> Result<MessageStream<ChanItem>, Self::Error> {
        let (tx, rx) = mpsc::channel(size);
        self.handlers.write().unwrap_or_else(|e| e.into_inner()).insert(chan.clone(), tx);
        self.conn.clone().subscribe(chan.as_str()).await?;
        Ok(MessageStream::new(rx))
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), Self::Error> {
        self.handlers.write().unwrap_or_else(|e| e.into_inner()).remove(&chan);
        self.conn.clone().unsubscribe(chan).await?;
        Ok(())
    }

    async fn num_serv(&self, chan: &str) -> Result<u16, Self::Error> {
        let mut conn = self.conn.clone();
        let (_, count): (String, u16) = redis::cmd("PUBSUB").arg("NUMSUB").arg(chan).query_async(&mut conn).await?;
        Ok(count)
    }
}
