//! Keyed lanes: work on one key (a conversation) runs one at a time, in the order it
//! arrived, while different keys run in parallel. Used so that storing a message and
//! broadcasting it happen in `seq` order for every member.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// A set of FIFO lanes, one per key, created on demand and dropped when idle.
#[derive(Debug)]
pub struct Lanes<K> {
    lanes: Mutex<HashMap<K, Arc<AsyncMutex<()>>>>,
}

impl<K> Default for Lanes<K> {
    fn default() -> Self {
        Self { lanes: Mutex::new(HashMap::new()) }
    }
}

/// Holding this is holding the lane; dropping it lets the next in line go.
pub struct LaneGuard<'a, K: Eq + Hash + Clone> {
    lanes: &'a Lanes<K>,
    key: K,
    guard: Option<OwnedMutexGuard<()>>,
}

impl<K: Eq + Hash + Clone> Lanes<K> {
    /// No lanes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits for the lane of `key` (tokio's mutex is fair: first come, first served).
    pub async fn enter(&self, key: K) -> LaneGuard<'_, K> {
        let lane = {
            let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
            lanes.entry(key.clone()).or_default().clone()
        };
        let guard = lane.lock_owned().await;
        LaneGuard { lanes: self, key, guard: Some(guard) }
    }

    /// How many lanes exist (busy or with waiters).
    pub fn len(&self) -> usize {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no lane exists.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Like [`LaneGuard`], but holding the lanes by `Arc`, so it can be kept anywhere.
pub struct OwnedLaneGuard<K: Eq + Hash + Clone> {
    lanes: Arc<Lanes<K>>,
    key: K,
    guard: Option<OwnedMutexGuard<()>>,
}

impl<K: Eq + Hash + Clone> Lanes<K> {
    /// Waits for the lane of `key`, holding the lanes by `Arc`.
    pub async fn enter_owned(lanes: Arc<Self>, key: K) -> OwnedLaneGuard<K> {
        let lane = {
            let mut map = lanes.lanes.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(key.clone()).or_default().clone()
        };
        let guard = lane.lock_owned().await;
        OwnedLaneGuard { lanes, key, guard: Some(guard) }
    }

    fn release(&self, key: &K) {
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map holds the lane now: nobody is inside or waiting, so forget it.
        if lanes.get(key).is_some_and(|l| Arc::strong_count(l) == 1) {
            lanes.remove(key);
        }
    }
}

impl<K: Eq + Hash + Clone> Drop for OwnedLaneGuard<K> {
    fn drop(&mut self) {
        drop(self.guard.take());
        self.lanes.release(&self.key);
    }
}

impl<K: Eq + Hash + Clone> Drop for LaneGuard<'_, K> {
    fn drop(&mut self) {
        drop(self.guard.take());
        self.lanes.release(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_lanes_are_dropped() {
        let lanes = Lanes::new();
        {
            let _a = lanes.enter(1).await;
            assert_eq!(lanes.len(), 1);
        }
        assert!(lanes.is_empty());
    }

    #[tokio::test]
    async fn one_at_a_time_per_key() {
        let lanes = Arc::new(Lanes::new());
        let g = lanes.enter(7).await;
        let l2 = lanes.clone();
        let waiter = tokio::spawn(async move {
            let _g = l2.enter(7).await;
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let _other = lanes.enter(8).await; // another key is not blocked
        drop(g);
        waiter.await.unwrap();
    }
}
