//! What the gateway keeps per socket: who it is, its ordered lane, its rate limits,
//! and the guard that releases its presence however the socket ends.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use governor::clock::QuantaClock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use quckchat_domain::{SessionId, UserId};
use socketioxide::adapter::Adapter;
use socketioxide::handler::FromMessageParts;
use socketioxide::handler::Value;
use socketioxide::socket::Socket;
use tokio::sync::Notify;

use crate::config::Config;
use crate::metrics::Metrics;

/// The most events one socket may have waiting for their turn; more are refused with
/// `rate_limited` instead of queueing without bound.
const MAX_QUEUED_EVENTS: u64 = 256;

/// Per-socket context, stored in the socket's extensions at the handshake.
pub struct SocketCtx {
    /// The authenticated user.
    pub user: UserId,
    /// The session of the token used.
    pub session: SessionId,
    /// Runs the socket's events one at a time, in the order received.
    pub lane: Lane,
    /// The socket's rate limits.
    pub limits: Limits,
    /// Set once presence counted this socket. Taken by the disconnect handler; if that
    /// never runs, dropping the context (with the socket) releases it all the same.
    pub presence: Mutex<Option<PresenceGuard>>,
    /// This socket's place among its user's sockets; its limits are shared by all of them.
    pub slot: UserSlot,
}

impl SocketCtx {
    /// A context for a freshly authenticated socket holding `slot`.
    pub fn new(user: UserId, session: SessionId, config: &Config, slot: UserSlot) -> Self {
        let limits = Limits::new(config, &slot.owner.clock);
        Self { user, session, lane: Lane::default(), limits, presence: Mutex::new(None), slot }
    }

    /// Takes one event of `class` from this socket's bucket and from its user's.
    pub fn allow(&self, class: super::dispatch::RateClass) -> bool {
        use super::dispatch::RateClass;
        let (mine, users) = match class {
            RateClass::Message => (&self.limits.messages, &self.slot.entry.limits.messages),
            RateClass::Typing => (&self.limits.typing, &self.slot.entry.limits.typing),
            RateClass::Other => (&self.limits.other, &self.slot.entry.limits.other),
        };
        // The socket's own bucket first: a socket over its own limit does not use up
        // its user's (the other devices keep their share).
        mine.check().is_ok() && users.check().is_ok()
    }
}

/// Every user's sockets on this instance: how many, and the rate limits they share, so
/// that opening more sockets buys neither more events per second nor unbounded sockets
/// (`MAX_SOCKETS_PER_USER`). Entries go with the user's last socket.
pub struct UserSockets {
    max_per_user: usize,
    rates: (u32, u32, u32),
    users: Mutex<HashMap<UserId, Arc<UserEntry>>>,
    /// The one clock every limiter reads. A clock of its own per limiter (governor's
    /// default) calibrates with CPUID at construction, which a VM traps: it was 3% of the
    /// server's CPU under a connect storm.
    clock: QuantaClock,
}

/// One user's shared part.
pub struct UserEntry {
    sockets: AtomicU64,
    limits: Limits,
}

/// A socket's hold on its user's entry; dropping it (with the socket) gives it back.
pub struct UserSlot {
    owner: Arc<UserSockets>,
    user: UserId,
    entry: Arc<UserEntry>,
}

impl UserSockets {
    /// Limits from the configuration.
    pub fn new(config: &Config) -> Arc<Self> {
        Arc::new(Self {
            max_per_user: config.max_sockets_per_user,
            rates: (config.user_message_rate_per_sec, config.user_typing_rate_per_sec, config.user_event_rate_per_sec),
            users: Mutex::new(HashMap::new()),
            clock: QuantaClock::default(),
        })
    }

    /// A slot for one more socket of `user`, or `None` when it has `MAX_SOCKETS_PER_USER`.
    pub fn admit(self: &Arc<Self>, user: UserId) -> Option<UserSlot> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let entry = users
            .entry(user)
            .or_insert_with(|| {
                let (messages, typing, other) = self.rates;
                Arc::new(UserEntry {
                    sockets: AtomicU64::new(0),
                    limits: Limits::with_rates(messages, messages, typing, other, &self.clock),
                })
            })
            .clone();
        if entry.sockets.load(Ordering::SeqCst) >= self.max_per_user as u64 {
            return None;
        }
        entry.sockets.fetch_add(1, Ordering::SeqCst);
        Some(UserSlot { owner: self.clone(), user, entry })
    }

    /// Sockets `user` holds here.
    pub fn count(&self, user: UserId) -> u64 {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.get(&user).map_or(0, |e| e.sockets.load(Ordering::SeqCst))
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut users = self.owner.users.lock().unwrap_or_else(|e| e.into_inner());
        if self.entry.sockets.fetch_sub(1, Ordering::SeqCst) == 1 {
            users.remove(&self.user);
        }
    }
}

/// A ticket lane. socketioxide runs each incoming event in its own task, so the order in
/// which tasks run is not the order in which the client sent the events. Each event
/// takes a ticket synchronously while its packet is decoded (in arrival order: one
/// connection's packets are decoded one after another), and its task waits for that
/// ticket's turn before doing anything.
#[derive(Default)]
pub struct Lane {
    issued: AtomicU64,
    served: AtomicU64,
    turn_changed: Notify,
}

impl Lane {
    /// The next ticket, or `None` when too many events are already waiting.
    fn take(&self) -> Option<u64> {
        let issued = self.issued.load(Ordering::SeqCst);
        if issued - self.served.load(Ordering::SeqCst) >= MAX_QUEUED_EVENTS {
            return None;
        }
        self.issued.store(issued + 1, Ordering::SeqCst);
        Some(issued)
    }

    /// Waits until `ticket` is the one being served.
    pub async fn turn(&self, ticket: u64) -> LaneTurn<'_> {
        loop {
            // Created before the check, so a hand-over between the check and the await
            // still wakes us.
            let changed = self.turn_changed.notified();
            if self.served.load(Ordering::SeqCst) == ticket {
                return LaneTurn { lane: self };
            }
            changed.await;
        }
    }
}

/// Holding this is having the socket's turn; dropping it (also on panic) passes it on.
pub struct LaneTurn<'a> {
    lane: &'a Lane,
}

impl Drop for LaneTurn<'_> {
    fn drop(&mut self) {
        self.lane.served.fetch_add(1, Ordering::SeqCst);
        self.lane.turn_changed.notify_waiters();
    }
}

/// An incoming event's place in its socket's lane, taken while the packet is decoded.
/// It must be the last extractor of a handler, so that no extractor after it can fail
/// and leave a ticket that nobody serves.
pub struct Queued {
    /// The socket's context (`None` only if the handshake did not store one).
    pub ctx: Option<Arc<SocketCtx>>,
    /// The ticket, or `None` when the lane is full.
    pub ticket: Option<u64>,
}

impl<A: Adapter> FromMessageParts<A> for Queued {
    type Error = Infallible;

    fn from_message_parts(s: &Arc<Socket<A>>, _: &mut Value, _: &Option<i64>) -> Result<Self, Infallible> {
        let ctx = s.extensions.get::<Arc<SocketCtx>>();
        let ticket = ctx.as_ref().and_then(|c| c.lane.take());
        Ok(Self { ctx, ticket })
    }
}

impl SocketCtx {
    /// Arms the presence release for this socket.
    pub fn hold_presence(&self, guard: PresenceGuard) {
        *self.presence.lock().unwrap_or_else(|e| e.into_inner()) = Some(guard);
    }

    /// Releases this socket's presence now (the socket is going).
    pub fn release_presence(&self) {
        let guard = self.presence.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(guard);
    }
}

/// Per-socket token buckets.
pub struct Limits {
    /// `message:send`, `message:edit`, `message:delete`.
    pub messages: DefaultDirectRateLimiter,
    /// `user:typing`, `user:stop-typing`.
    pub typing: DefaultDirectRateLimiter,
    /// Everything else.
    pub other: DefaultDirectRateLimiter,
}

impl Limits {
    fn new(config: &Config, clock: &QuantaClock) -> Self {
        Self::with_rates(
            config.message_rate_per_sec,
            config.message_rate_per_sec.saturating_add(config.message_burst),
            config.typing_rate_per_sec,
            config.event_rate_per_sec,
            clock,
        )
    }

    fn with_rates(messages: u32, message_burst: u32, typing: u32, other: u32, clock: &QuantaClock) -> Self {
        let per_sec = |n: u32| NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
        let limiter = |quota: Quota| RateLimiter::direct_with_clock(quota, clock.clone());
        Self {
            messages: limiter(Quota::per_second(per_sec(messages)).allow_burst(per_sec(message_burst))),
            typing: limiter(Quota::per_second(per_sec(typing))),
            other: limiter(Quota::per_second(per_sec(other))),
        }
    }
}

/// Releases what a socket holds (its presence count, its place in calls) when dropped:
/// the socket's context goes when socketioxide drops the socket, however it ended
/// (client close, heartbeat timeout, kick, server shutdown), so nothing can leak.
pub struct PresenceGuard {
    metrics: Metrics,
    namespace: &'static str,
    release: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl PresenceGuard {
    /// Counts the socket (the caller has already told presence) and arms `release`,
    /// which runs (spawned) when the guard is dropped.
    pub fn new(metrics: Metrics, namespace: &'static str, release: impl Future<Output = ()> + Send + 'static) -> Self {
        metrics.socket_gauge(namespace, 1.0);
        Self { metrics, namespace, release: Some(Box::pin(release)) }
    }
}

impl Drop for PresenceGuard {
    fn drop(&mut self) {
        self.metrics.socket_gauge(self.namespace, -1.0);
        if let (Some(release), Ok(runtime)) = (self.release.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(release);
        }
    }
}
