//! Conversation turns across a fleet: this instance's lane first, then a short Redis lock
//! `{prefix}:turn:{conversation}` (SET NX PX, released by a compare-and-delete), held
//! while a message takes its `seq` and is handed to the pub/sub bus. Broadcasts of one
//! conversation therefore reach the bus, and every instance, in `seq` order.
//!
//! Availability comes before strict order: if Redis does not answer, or the lock is not
//! had within [`WAIT`], the send goes on with the local lane only (clients order by `seq`
//! and fill gaps from history).

use std::time::Duration;

use async_trait::async_trait;
use quckchat_domain::ConversationId;
use quckchat_domain::lanes::OwnedLaneGuard;
use quckchat_domain::ordering::{ConversationOrder, LocalOrder, Turn};
use redis::Script;

use super::Fleet;

/// How long the lock lives if its holder dies.
const HOLD: Duration = Duration::from_secs(3);
/// How long a sender waits for the lock before going on without it.
const WAIT: Duration = Duration::from_secs(2);

const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// Fleet-wide conversation turns.
pub struct RedisOrder {
    local: LocalOrder,
    fleet: Fleet,
}

impl RedisOrder {
    /// Turns on the fleet's Redis.
    pub fn new(fleet: Fleet) -> Self {
        Self { local: LocalOrder::new(), fleet }
    }
}

struct RedisTurn {
    _local: OwnedLaneGuard<ConversationId>,
    lock: Option<(Fleet, String, String)>,
}

impl Drop for RedisTurn {
    fn drop(&mut self) {
        let Some((fleet, key, token)) = self.lock.take() else { return };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let mut redis = fleet.redis.clone();
                let script = Script::new(RELEASE);
                let mut invocation = script.key(&key);
                invocation.arg(&token);
                let released: redis::RedisResult<i64> = fleet.run(invocation.invoke_async(&mut redis)).await;
                if let Err(e) = released {
                    tracing::debug!(error = %e, "conversation turn not released; it expires by itself");
                }
            });
        }
    }
}

#[async_trait]
impl ConversationOrder for RedisOrder {
    async fn turn(&self, conversation: ConversationId) -> Turn {
        let local = self.local.local_turn(conversation).await;
        let key = self.fleet.key(&format!("turn:{conversation}"));
        let token = uuid::Uuid::now_v7().to_string();
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut pause = Duration::from_millis(1);
        loop {
            let mut redis = self.fleet.redis.clone();
            let taken: redis::RedisResult<Option<String>> = self
                .fleet
                .run(
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(&token)
                        .arg("NX")
                        .arg("PX")
                        .arg(HOLD.as_millis() as u64)
                        .query_async(&mut redis),
                )
                .await;
            match taken {
                Ok(Some(_)) => {
                    return Box::new(RedisTurn { _local: local, lock: Some((self.fleet.clone(), key, token)) });
                }
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    // Another instance holds the turn: its broadcast is a round trip away.
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(8));
                }
                Ok(None) => {
                    tracing::warn!(%conversation, "conversation turn not had in time; sending in local order");
                    return Box::new(RedisTurn { _local: local, lock: None });
                }
                Err(e) => {
                    tracing::warn!(%conversation, error = %e, "conversation turn unavailable; sending in local order");
                    return Box::new(RedisTurn { _local: local, lock: None });
                }
            }
        }
    }
}
