//! Presence: whether a user has a socket anywhere, counted over all devices.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::error::StoreError;
use crate::ids::UserId;

/// Counts each user's live sockets. One instance keeps the counts in memory
/// ([`LocalPresence`]); a fleet keeps them in a shared registry.
#[async_trait]
pub trait PresenceRegistry: Send + Sync + 'static {
    /// Counts one more socket of `user`; `true` when it is the user's first anywhere.
    async fn socket_connected(&self, user: UserId) -> Result<bool, StoreError>;
    /// Counts one socket fewer; `true` when it was the user's last anywhere.
    async fn socket_disconnected(&self, user: UserId) -> Result<bool, StoreError>;
    /// Which of `users` have at least one socket.
    async fn online_among(&self, users: &[UserId]) -> Result<HashSet<UserId>, StoreError>;
}

/// Presence of a single instance: a count of sockets per user, in memory.
#[derive(Debug, Default)]
pub struct LocalPresence {
    sockets: Mutex<HashMap<UserId, usize>>,
}

impl LocalPresence {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, usize>> {
        // A poisoned lock only means a panic elsewhere held it; the counts are still whole.
        self.sockets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl PresenceRegistry for LocalPresence {
    async fn socket_connected(&self, user: UserId) -> Result<bool, StoreError> {
        let mut counts = self.counts();
        let n = counts.entry(user).or_insert(0);
        *n += 1;
        Ok(*n == 1)
    }

    async fn socket_disconnected(&self, user: UserId) -> Result<bool, StoreError> {
        let mut counts = self.counts();
        match counts.get_mut(&user) {
            Some(n) if *n > 1 => {
                *n -= 1;
                Ok(false)
            }
            Some(_) => {
                counts.remove(&user);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn online_among(&self, users: &[UserId]) -> Result<HashSet<UserId>, StoreError> {
        let counts = self.counts();
        Ok(users.iter().filter(|u| counts.contains_key(u)).copied().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_over_devices() {
        let p = LocalPresence::new();
        let u = UserId::new();
        assert!(p.socket_connected(u).await.unwrap());
        assert!(!p.socket_connected(u).await.unwrap());
        assert!(!p.socket_disconnected(u).await.unwrap());
        assert_eq!(p.online_among(&[u]).await.unwrap().len(), 1);
        assert!(p.socket_disconnected(u).await.unwrap());
        assert!(p.online_among(&[u]).await.unwrap().is_empty());
        assert!(!p.socket_disconnected(u).await.unwrap());
    }
}
