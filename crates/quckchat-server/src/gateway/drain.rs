//! Graceful shutdown for socket events: once draining, new events are refused (the
//! client retries after reconnecting, idempotently by `clientMessageId`), and shutdown
//! waits for the events already running to finish and be acked.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Counts the events being handled.
#[derive(Default)]
pub struct Drain {
    draining: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
}

/// One event being handled; dropping it marks it done.
pub struct InFlight {
    drain: Arc<Drain>,
}

impl Drain {
    /// A new counter, not draining.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Starts handling an event, unless the server is draining.
    pub fn enter(self: &Arc<Self>) -> Option<InFlight> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if self.draining.load(Ordering::SeqCst) {
            self.leave();
            return None;
        }
        Some(InFlight { drain: self.clone() })
    }

    fn leave(&self) {
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Refuses new events from now on and waits (at most `grace`) for the running ones.
    /// Returns how many were still running when the wait ended.
    pub async fn drain(&self, grace: Duration) -> usize {
        self.draining.store(true, Ordering::SeqCst);
        let wait = async {
            loop {
                let idle = self.idle.notified();
                if self.in_flight.load(Ordering::SeqCst) == 0 {
                    return;
                }
                idle.await;
            }
        };
        let _ = tokio::time::timeout(grace, wait).await;
        self.in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.drain.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_running_events_and_refuses_new_ones() {
        let d = Drain::new();
        let running = d.enter().unwrap();
        let d2 = d.clone();
        let waiter = tokio::spawn(async move { d2.drain(Duration::from_secs(5)).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(running);
        assert_eq!(waiter.await.unwrap(), 0);
        assert!(d.enter().is_none());
    }
}
