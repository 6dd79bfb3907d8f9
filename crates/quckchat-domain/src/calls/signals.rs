//! Signals waiting for a participant who has not joined yet. One instance keeps them in
//! memory ([`LocalSignalBuffer`]); a fleet keeps them where every instance can take them,
//! since the callee may answer on another instance than the one the caller talks to.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::error::StoreError;
use crate::events::{SignalKind, SignalPayload};
use crate::ids::{CallId, UserId};

/// One queued offer, answer or ICE candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSignal {
    /// What it is.
    pub kind: SignalKind,
    /// Who sent it.
    pub from: UserId,
    /// The payload, untouched.
    pub payload: SignalPayload,
}

/// Where early signals wait.
#[async_trait]
pub trait SignalBuffer: Send + Sync + 'static {
    /// Queues a signal for `user` in `call`; `false` when `max` are already waiting.
    async fn push(&self, call: CallId, user: UserId, signal: PendingSignal, max: usize) -> Result<bool, StoreError>;
    /// Takes (and forgets) everything waiting for `user` in `call`, oldest first.
    async fn take(&self, call: CallId, user: UserId) -> Result<Vec<PendingSignal>, StoreError>;
    /// Forgets everything waiting in `call` for any of `users`.
    async fn clear(&self, call: CallId, users: &[UserId]) -> Result<(), StoreError>;
    /// How many signals wait in all (metrics, tests).
    async fn waiting(&self) -> Result<usize, StoreError>;
}

/// Early signals of a single instance, in memory.
#[derive(Default)]
pub struct LocalSignalBuffer {
    queues: Mutex<HashMap<(CallId, UserId), VecDeque<PendingSignal>>>,
}

impl LocalSignalBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<(CallId, UserId), VecDeque<PendingSignal>>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl SignalBuffer for LocalSignalBuffer {
    async fn push(&self, call: CallId, user: UserId, signal: PendingSignal, max: usize) -> Result<bool, StoreError> {
        let mut queues = self.queues();
        let queue = queues.entry((call, user)).or_default();
        if queue.len() >= max {
            return Ok(false);
        }
        queue.push_back(signal);
        Ok(true)
    }

    async fn take(&self, call: CallId, user: UserId) -> Result<Vec<PendingSignal>, StoreError> {
        Ok(self.queues().remove(&(call, user)).map(Vec::from).unwrap_or_default())
    }

    async fn clear(&self, call: CallId, _users: &[UserId]) -> Result<(), StoreError> {
        self.queues().retain(|(c, _), _| *c != call);
        Ok(())
    }

    async fn waiting(&self) -> Result<usize, StoreError> {
        Ok(self.queues().values().map(VecDeque::len).sum())
    }
}
