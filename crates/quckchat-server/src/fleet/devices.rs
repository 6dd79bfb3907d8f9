//! Call devices shared by a fleet: `{prefix}:device:{sid}` names the instance holding a
//! `/webrtc` socket; a device counts as alive while that key and the instance's
//! heartbeat both exist.

use async_trait::async_trait;
use quckchat_domain::StoreError;
use quckchat_domain::calls::devices::DeviceDirectory;
use quckchat_domain::realtime::{Device, DeviceId};
use redis::{AsyncCommands, Script};

use super::Fleet;

const IS_LIVE: &str = r#"
local instance = redis.call('GET', KEYS[1])
if not instance then return 0 end
return redis.call('EXISTS', ARGV[1] .. instance)
"#;

/// Live devices in Redis.
pub struct RedisDevices {
    fleet: Fleet,
    is_live: Script,
}

impl RedisDevices {
    /// A directory on the fleet's Redis.
    pub fn new(fleet: Fleet) -> Self {
        Self { fleet, is_live: Script::new(IS_LIVE) }
    }

    fn key(&self, device: &DeviceId) -> String {
        self.fleet.key(&format!("device:{device}"))
    }
}

fn backend(e: redis::RedisError) -> StoreError {
    StoreError::backend(e)
}

#[async_trait]
impl DeviceDirectory for RedisDevices {
    async fn register(&self, device: &Device) -> Result<(), StoreError> {
        let mut redis = self.fleet.redis.clone();
        self.fleet.run(redis.set::<_, _, ()>(self.key(&device.id), &self.fleet.instance)).await.map_err(backend)
    }

    async fn unregister(&self, device: &Device) -> Result<(), StoreError> {
        let mut redis = self.fleet.redis.clone();
        self.fleet.run(redis.del::<_, ()>(self.key(&device.id))).await.map_err(backend)
    }

    async fn is_live(&self, device: &DeviceId) -> Result<bool, StoreError> {
        let mut redis = self.fleet.redis.clone();
        let mut invocation = self.is_live.key(self.key(device));
        invocation.arg(self.fleet.instance_key(""));
        let live: i64 = self.fleet.run(invocation.invoke_async(&mut redis)).await.map_err(backend)?;
        Ok(live == 1)
    }
}
