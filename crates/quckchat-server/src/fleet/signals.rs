//! Early call signals shared by a fleet: `{prefix}:signals:{call}:{user}` is a list of
//! encoded signals, capped, and expiring with the ring timeout's order of magnitude so
//! that an abandoned call leaves nothing behind.

use async_trait::async_trait;
use quckchat_domain::calls::signals::{PendingSignal, SignalBuffer};
use quckchat_domain::events::{SignalKind, SignalPayload};
use quckchat_domain::{CallId, StoreError, UserId};
use redis::{AsyncCommands, Script};

use super::Fleet;

/// How long waiting signals are kept at most, seconds.
const KEEP_SECS: i64 = 300;

/// Appends `ARGV[1]` unless `ARGV[2]` are already waiting; returns 1 when appended.
const PUSH: &str = r#"
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"#;

/// Returns the whole list and deletes it, atomically.
const TAKE: &str = r#"
local items = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
return items
"#;

/// Early signals in Redis.
pub struct RedisSignalBuffer {
    fleet: Fleet,
    push: Script,
    take: Script,
}

impl RedisSignalBuffer {
    /// A buffer on the fleet's Redis.
    pub fn new(fleet: Fleet) -> Self {
        Self { fleet, push: Script::new(PUSH), take: Script::new(TAKE) }
    }

    fn key(&self, call: CallId, user: UserId) -> String {
        self.fleet.key(&format!("signals:{call}:{user}"))
    }
}

fn backend(e: redis::RedisError) -> StoreError {
    StoreError::backend(e)
}

/// `kind \n from \n payload`: the payload is JSON text and may hold anything, so it goes last.
fn encode(s: &PendingSignal) -> String {
    let kind = match s.kind {
        SignalKind::Offer => "offer",
        SignalKind::Answer => "answer",
        SignalKind::IceCandidate => "ice",
    };
    format!("{kind}\n{}\n{}", s.from, s.payload.0)
}

fn decode(text: &str) -> Option<PendingSignal> {
    let mut parts = text.splitn(3, '\n');
    let kind = match parts.next()? {
        "offer" => SignalKind::Offer,
        "answer" => SignalKind::Answer,
        "ice" => SignalKind::IceCandidate,
        _ => return None,
    };
    let from = UserId::parse(parts.next()?)?;
    Some(PendingSignal { kind, from, payload: SignalPayload(parts.next()?.to_string()) })
}

#[async_trait]
impl SignalBuffer for RedisSignalBuffer {
    async fn push(&self, call: CallId, user: UserId, signal: PendingSignal, max: usize) -> Result<bool, StoreError> {
        let mut redis = self.fleet.redis.clone();
        let mut invocation = self.push.key(self.key(call, user));
        invocation.arg(encode(&signal)).arg(max).arg(KEEP_SECS);
        let added: i64 = self.fleet.run(invocation.invoke_async(&mut redis)).await.map_err(backend)?;
        Ok(added == 1)
    }

    async fn take(&self, call: CallId, user: UserId) -> Result<Vec<PendingSignal>, StoreError> {
        let mut redis = self.fleet.redis.clone();
        let invocation = self.take.key(self.key(call, user));
        let items: Vec<String> = self.fleet.run(invocation.invoke_async(&mut redis)).await.map_err(backend)?;
        Ok(items.iter().filter_map(|i| decode(i)).collect())
    }

    async fn clear(&self, call: CallId, users: &[UserId]) -> Result<(), StoreError> {
        if users.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = users.iter().map(|u| self.key(call, *u)).collect();
        let mut redis = self.fleet.redis.clone();
        self.fleet.run(redis.del::<_, ()>(keys)).await.map_err(backend)
    }

    async fn waiting(&self) -> Result<usize, StoreError> {
        // Only tests and metrics ask; a fleet-wide count would need a scan. Report what is
        // unknown as zero rather than scanning Redis.
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_payloads_with_newlines() {
        let s = PendingSignal {
            kind: SignalKind::IceCandidate,
            from: UserId::new(),
            payload: SignalPayload("{\"candidate\":\"a\\nb\"}\n".into()),
        };
        assert_eq!(decode(&encode(&s)), Some(s));
        assert_eq!(decode("bogus"), None);
    }
}
