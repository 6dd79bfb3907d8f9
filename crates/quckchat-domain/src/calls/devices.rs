//! Which `/webrtc` sockets are alive. A joined participant's media goes through one
//! device; when that device is gone without saying so (its instance died), the sweep
//! asks here and takes the participant out of the call.

use std::collections::HashSet;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::error::StoreError;
use crate::realtime::{Device, DeviceId};

/// Live call devices.
#[async_trait]
pub trait DeviceDirectory: Send + Sync + 'static {
    /// A device connected.
    async fn register(&self, device: &Device) -> Result<(), StoreError>;
    /// A device went away.
    async fn unregister(&self, device: &Device) -> Result<(), StoreError>;
    /// Whether a device is connected (on a live instance).
    async fn is_live(&self, device: &DeviceId) -> Result<bool, StoreError>;
}

/// The devices of a single instance.
#[derive(Default)]
pub struct LocalDevices {
    live: Mutex<HashSet<DeviceId>>,
}

impl LocalDevices {
    /// No devices yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashSet<DeviceId>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl DeviceDirectory for LocalDevices {
    async fn register(&self, device: &Device) -> Result<(), StoreError> {
        self.live().insert(device.id.clone());
        Ok(())
    }

    async fn unregister(&self, device: &Device) -> Result<(), StoreError> {
        self.live().remove(&device.id);
        Ok(())
    }

    async fn is_live(&self, device: &DeviceId) -> Result<bool, StoreError> {
        Ok(self.live().contains(device))
    }
}
