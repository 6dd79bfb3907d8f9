//! Presence shared by a fleet: `{prefix}:presence:{user}` is a hash of instance id →
//! sockets of that user on that instance. A count only counts while its instance's
//! heartbeat key exists, and the scripts drop the fields of dead instances as they meet
//! them, so an instance that dies does not leave its users online.

use std::collections::HashSet;

use async_trait::async_trait;
use quckchat_domain::presence::PresenceRegistry;
use quckchat_domain::{StoreError, UserId};
use redis::Script;

use super::Fleet;

/// Adds `ARGV[2]` to this instance's count and returns the user's live total (-1 when a
/// decrement found nothing counted on this instance).
const CHANGE: &str = r#"
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if n < 0 then
  -- Nothing was counted here: undo, and say so.
  redis.call('HDEL', KEYS[1], ARGV[1])
  return -1
end
if n == 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
local total = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if redis.call('EXISTS', ARGV[3] .. fields[i]) == 1 then
    total = total + tonumber(fields[i + 1])
  else
    redis.call('HDEL', KEYS[1], fields[i])
  end
end
return total
"#;

/// Returns, for each key, the live total.
const TOTALS: &str = r#"
local out = {}
for k = 1, #KEYS do
  local total = 0
  local fields = redis.call('HGETALL', KEYS[k])
  for i = 1, #fields, 2 do
    if redis.call('EXISTS', ARGV[1] .. fields[i]) == 1 then
      total = total + tonumber(fields[i + 1])
    end
  end
  out[k] = total
end
return out
"#;

/// Presence counted across the fleet.
pub struct RedisPresence {
    fleet: Fleet,
    /// Which registry: chat sockets and call devices are counted apart.
    prefix: &'static str,
    change: Script,
    totals: Script,
}

fn backend(e: redis::RedisError) -> StoreError {
    StoreError::backend(e)
}

impl RedisPresence {
    /// A registry under `{fleet prefix}:{prefix}:{user}`.
    pub fn new(fleet: Fleet, prefix: &'static str) -> Self {
        Self { fleet, prefix, change: Script::new(CHANGE), totals: Script::new(TOTALS) }
    }

    fn key(&self, user: UserId) -> String {
        self.fleet.key(&format!("{}:{user}", self.prefix))
    }

    async fn change(&self, user: UserId, delta: i64) -> Result<i64, StoreError> {
        let mut redis = self.fleet.redis.clone();
        let mut invocation = self.change.key(self.key(user));
        invocation.arg(&self.fleet.instance).arg(delta).arg(self.fleet.instance_key(""));
        self.fleet.run(invocation.invoke_async(&mut redis)).await.map_err(backend)
    }
}

#[async_trait]
impl PresenceRegistry for RedisPresence {
    async fn socket_connected(&self, user: UserId) -> Result<bool, StoreError> {
        Ok(self.change(user, 1).await? == 1)
    }

    async fn socket_disconnected(&self, user: UserId) -> Result<bool, StoreError> {
        Ok(self.change(user, -1).await? == 0)
    }

    async fn online_among(&self, users: &[UserId]) -> Result<HashSet<UserId>, StoreError> {
        if users.is_empty() {
            return Ok(HashSet::new());
        }
        let mut invocation = self.totals.prepare_invoke();
        for user in users {
            invocation.key(self.key(*user));
        }
        invocation.arg(self.fleet.instance_key(""));
        let mut redis = self.fleet.redis.clone();
        let totals: Vec<i64> = self.fleet.run(invocation.invoke_async(&mut redis)).await.map_err(backend)?;
        Ok(users.iter().zip(totals).filter(|(_, n)| *n > 0).map(|(u, _)| *u).collect())
    }
}
