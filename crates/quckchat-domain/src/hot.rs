//! Hot state: what the decisions on the message path need (a conversation's kind,
//! members and roles; a sender's display name), kept in memory so that a send, a typing
//! indicator or a receipt asks the store nothing it already answered.
//!
//! Bounded: conversations are weighed by their member count and users by one, and each
//! cache evicts (S3-FIFO, `quick_cache`) past its capacity, so a server with millions of
//! conversations keeps only the active ones. Hits, misses and evictions are counted for
//! `/metrics`.
//!
//! Kept true by invalidation, never by expiry: every change of what is cached goes through
//! [`crate::chat::Chat`], which evicts the entry after the store write and announces the
//! change on the [`ChangeFeed`] so that the other instances of a fleet evict it too. A fill
//! that raced with an eviction is not kept (the epoch check in [`HotState::fill_conversation`]).
//! What a stale entry could still get wrong in the window before another instance hears of
//! a change, the store checks itself: an append by a sender who is no longer a member is
//! refused by the store ([`crate::model::Appended::NotMember`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, UnitWeighter, Weighter};

use crate::call_model::Call;
use crate::ids::{CallId, ConversationId, SessionId, UserId};
use crate::model::{Conversation, ConversationKind, Role};

/// How long an entry is trusted at most: the bound on how stale an instance can be if an
/// announcement was lost (Redis flapping between a change and its announcement).
pub const MAX_AGE: Duration = Duration::from_secs(60);

/// A cached value and when it was loaded.
#[derive(Debug, Clone)]
struct Entry<V> {
    value: V,
    loaded: Instant,
}

impl<V: Clone> Entry<V> {
    fn new(value: V) -> Self {
        Self { value, loaded: Instant::now() }
    }

    fn fresh(self) -> Option<V> {
        (self.loaded.elapsed() < MAX_AGE).then_some(self.value)
    }
}

/// What the hot path needs of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationMeta {
    /// The conversation.
    pub id: ConversationId,
    /// Single or group.
    pub kind: ConversationKind,
    /// Every member with their role, in the store's order (the creator first).
    pub members: Vec<(UserId, Role)>,
}

impl ConversationMeta {
    /// The meta of a loaded conversation.
    pub fn of(conversation: &Conversation) -> Self {
        Self {
            id: conversation.id,
            kind: conversation.kind,
            members: conversation.participants.iter().map(|p| (p.user_id, p.role)).collect(),
        }
    }

    /// `user`'s role, `None` when not a member.
    pub fn role_of(&self, user: UserId) -> Option<Role> {
        self.members.iter().find(|(u, _)| *u == user).map(|(_, r)| *r)
    }

    /// Every member but `user`.
    pub fn others(&self, user: UserId) -> impl Iterator<Item = UserId> + '_ {
        self.members.iter().map(|(u, _)| *u).filter(move |u| *u != user)
    }
}

/// A change another instance must hear of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Changed {
    /// A conversation's members or roles changed.
    Conversation(ConversationId),
    /// A user's profile (display name) changed.
    User(UserId),
    /// A call's state changed (saved by some instance).
    Call(CallId),
    /// A session was revoked.
    Session(SessionId),
}

/// Where changes to cached state are announced: nowhere for one instance, Redis pub/sub
/// in a fleet (whose subscriber calls [`HotState::forget`], and [`HotState::clear`] when
/// it may have missed announcements).
#[async_trait]
pub trait ChangeFeed: Send + Sync + 'static {
    /// Tells every other instance. Best effort: a lost announcement is covered by the
    /// store's own check on appends and by the clear after a reconnect.
    async fn announce(&self, change: Changed);
}

/// The feed of a single instance: there is no one else to tell.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoFeed;

#[async_trait]
impl ChangeFeed for NoFeed {
    async fn announce(&self, _change: Changed) {}
}

/// Capacities of the hot state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HotLimits {
    /// Conversations are weighed by `1 + members`; this is the total weight kept.
    pub conversation_weight: u64,
    /// Display names kept.
    pub users: u64,
    /// Calls kept (the live ones matter: every relayed signal checks one).
    pub calls: u64,
}

impl Default for HotLimits {
    /// About 100 MB at most: a million member slots, 200,000 names, 20,000 calls.
    fn default() -> Self {
        Self { conversation_weight: 1_000_000, users: 200_000, calls: 20_000 }
    }
}

/// Counters of the hot state, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HotStats {
    /// Lookups answered from memory.
    pub hits: u64,
    /// Lookups that went to the store.
    pub misses: u64,
    /// Entries dropped to stay within capacity.
    pub evictions: u64,
    /// Conversations held now.
    pub conversations: u64,
    /// Users held now.
    pub users: u64,
    /// Calls held now.
    pub calls: u64,
}

#[derive(Debug, Clone, Default)]
struct CountEvictions(Arc<AtomicU64>);

impl<K, V> Lifecycle<K, V> for CountEvictions {
    type RequestState = ();

    fn on_evict(&self, _state: &mut (), _key: K, _val: V) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct ByMembers;

impl Weighter<ConversationId, Entry<Arc<ConversationMeta>>> for ByMembers {
    fn weight(&self, _key: &ConversationId, meta: &Entry<Arc<ConversationMeta>>) -> u64 {
        1 + meta.value.members.len() as u64
    }
}

type ConversationCache =
    Cache<ConversationId, Entry<Arc<ConversationMeta>>, ByMembers, DefaultHashBuilder, CountEvictions>;
type NameCache = Cache<UserId, Entry<Arc<str>>, UnitWeighter, DefaultHashBuilder, CountEvictions>;
type CallCache = Cache<CallId, Entry<Arc<Call>>, UnitWeighter, DefaultHashBuilder, CountEvictions>;
type SessionCache = Cache<SessionId, Entry<UserId>, UnitWeighter, DefaultHashBuilder, CountEvictions>;

/// The in-memory answers of the message path. Shared by the services behind an `Arc`.
pub struct HotState {
    conversations: ConversationCache,
    names: NameCache,
    calls: CallCache,
    /// Sessions known to be valid (not revoked), with their user.
    sessions: SessionCache,
    /// Bumped by every eviction by change, so that a fill that read the store before the
    /// change is dropped instead of caching what the change made stale.
    epoch: AtomicU64,
    /// While set, nothing is answered from memory nor kept: the feed that would tell us of
    /// changes made elsewhere is down, so memory could be stale.
    suspended: AtomicBool,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: Arc<AtomicU64>,
}

impl std::fmt::Debug for HotState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotState").field("stats", &self.stats()).finish()
    }
}

impl Default for HotState {
    fn default() -> Self {
        Self::new(HotLimits::default())
    }
}

impl HotState {
    /// An empty hot state with these capacities.
    pub fn new(limits: HotLimits) -> Self {
        let evictions = Arc::new(AtomicU64::new(0));
        let weight = limits.conversation_weight.max(16);
        let users = limits.users.max(16);
        let calls = limits.calls.max(16);
        Self {
            conversations: Cache::with(
                (weight / 4) as usize,
                weight,
                ByMembers,
                DefaultHashBuilder::default(),
                CountEvictions(evictions.clone()),
            ),
            names: Cache::with(
                users as usize,
                users,
                UnitWeighter,
                DefaultHashBuilder::default(),
                CountEvictions(evictions.clone()),
            ),
            calls: Cache::with(
                calls as usize,
                calls,
                UnitWeighter,
                DefaultHashBuilder::default(),
                CountEvictions(evictions.clone()),
            ),
            sessions: Cache::with(
                users as usize,
                users,
                UnitWeighter,
                DefaultHashBuilder::default(),
                CountEvictions(evictions.clone()),
            ),
            epoch: AtomicU64::new(0),
            suspended: AtomicBool::new(false),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions,
        }
    }

    /// The epoch to pass to a later fill.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// A conversation's meta, if held (counted as a hit or a miss).
    pub fn conversation(&self, id: ConversationId) -> Option<Arc<ConversationMeta>> {
        let found = if self.is_suspended() { None } else { self.conversations.get(&id).and_then(Entry::fresh) };
        self.count(found.is_some());
        found
    }

    /// Keeps what was loaded from the store, unless something was forgotten since `epoch`
    /// (the load may predate that change). Returns the meta either way.
    pub fn fill_conversation(&self, epoch: u64, conversation: &Conversation) -> Arc<ConversationMeta> {
        let meta = Arc::new(ConversationMeta::of(conversation));
        if self.may_keep(epoch) {
            self.conversations.insert(conversation.id, Entry::new(meta.clone()));
            // A change may have been forgotten between the check and the insert.
            if !self.may_keep(epoch) {
                self.conversations.remove(&conversation.id);
            }
        }
        meta
    }

    /// A user's display name, if held (counted as a hit or a miss).
    pub fn display_name(&self, id: UserId) -> Option<Arc<str>> {
        let found = if self.is_suspended() { None } else { self.names.get(&id).and_then(Entry::fresh) };
        self.count(found.is_some());
        found
    }

    /// Keeps a display name loaded at `epoch` (see [`HotState::fill_conversation`]).
    pub fn fill_display_name(&self, epoch: u64, id: UserId, name: &str) -> Arc<str> {
        let name: Arc<str> = Arc::from(name);
        if self.may_keep(epoch) {
            self.names.insert(id, Entry::new(name.clone()));
            if !self.may_keep(epoch) {
                self.names.remove(&id);
            }
        }
        name
    }

    /// A call, if held (counted as a hit or a miss).
    pub fn call(&self, id: CallId) -> Option<Arc<Call>> {
        let found = if self.is_suspended() { None } else { self.calls.get(&id).and_then(Entry::fresh) };
        self.count(found.is_some());
        found
    }

    /// Keeps a call loaded or saved at `epoch` (see [`HotState::fill_conversation`]),
    /// unless a newer version of it is held (a load that read the store before a save).
    pub fn fill_call(&self, epoch: u64, call: &Call) -> Arc<Call> {
        let call = Arc::new(call.clone());
        let newer_held = self.calls.get(&call.id).is_some_and(|held| held.value.version > call.version);
        if self.may_keep(epoch) && !newer_held {
            self.calls.insert(call.id, Entry::new(call.clone()));
            if !self.may_keep(epoch) {
                self.calls.remove(&call.id);
            }
        }
        call
    }

    /// The user of a session known to be valid, if held (counted as a hit or a miss).
    pub fn session(&self, id: SessionId) -> Option<UserId> {
        let found = if self.is_suspended() { None } else { self.sessions.get(&id).and_then(Entry::fresh) };
        self.count(found.is_some());
        found
    }

    /// Remembers a session read as valid at `epoch` (see [`HotState::fill_conversation`]).
    pub fn fill_session(&self, epoch: u64, id: SessionId, user: UserId) {
        if self.may_keep(epoch) {
            self.sessions.insert(id, Entry::new(user));
            if !self.may_keep(epoch) {
                self.sessions.remove(&id);
            }
        }
    }

    /// Whether a load made at `epoch` may be kept: nothing was forgotten since, and the
    /// hot state is not suspended.
    fn may_keep(&self, epoch: u64) -> bool {
        self.epoch() == epoch && !self.is_suspended()
    }

    /// Drops what a change made stale.
    pub fn forget(&self, change: Changed) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        match change {
            Changed::Conversation(id) => {
                self.conversations.remove(&id);
            }
            Changed::User(id) => {
                self.names.remove(&id);
            }
            Changed::Call(id) => {
                self.calls.remove(&id);
            }
            Changed::Session(id) => {
                self.sessions.remove(&id);
            }
        }
    }

    /// Drops everything (after announcements may have been missed).
    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.conversations.clear();
        self.names.clear();
        self.calls.clear();
        self.sessions.clear();
    }

    /// Stops answering from memory and drops everything, until [`HotState::resume`]: the
    /// change feed is down, so changes made elsewhere would go unheard.
    pub fn suspend(&self) {
        self.suspended.store(true, Ordering::SeqCst);
        self.clear();
    }

    /// Answers from memory again, starting empty (the feed is back).
    pub fn resume(&self) {
        self.clear();
        self.suspended.store(false, Ordering::SeqCst);
    }

    /// Whether [`HotState::suspend`] is in force.
    pub fn is_suspended(&self) -> bool {
        self.suspended.load(Ordering::SeqCst)
    }

    /// The counters.
    pub fn stats(&self) -> HotStats {
        HotStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            conversations: self.conversations.len() as u64,
            users: self.names.len() as u64,
            calls: self.calls.len() as u64,
        }
    }

    fn count(&self, hit: bool) {
        if hit { &self.hits } else { &self.misses }.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Participant, now};

    fn conversation(members: usize) -> Conversation {
        let creator = UserId::new();
        Conversation {
            id: ConversationId::new(),
            kind: ConversationKind::Group,
            name: None,
            avatar: None,
            participants: (0..members)
                .map(|i| Participant {
                    user_id: if i == 0 { creator } else { UserId::new() },
                    role: if i == 0 { Role::Admin } else { Role::Member },
                    joined_at: now(),
                    last_read_seq: 0,
                })
                .collect(),
            created_by: creator,
            created_at: now(),
            last_message_at: None,
            last_seq: 0,
            unread_count: 0,
        }
    }

    #[test]
    fn a_fill_older_than_a_change_is_not_kept() {
        let hot = HotState::default();
        let c = conversation(3);
        let before = hot.epoch();
        hot.forget(Changed::Conversation(c.id));
        hot.fill_conversation(before, &c);
        assert!(hot.conversation(c.id).is_none(), "a load from before the change must not be cached");
        hot.fill_conversation(hot.epoch(), &c);
        let meta = hot.conversation(c.id).expect("a fresh load is cached");
        assert_eq!(meta.role_of(c.participants[0].user_id), Some(Role::Admin));
        assert_eq!(meta.others(c.participants[0].user_id).count(), 2);
        assert_eq!(hot.stats().hits, 1);
        assert_eq!(hot.stats().misses, 1);
    }

    #[test]
    fn stays_within_its_weight_and_counts_evictions() {
        let hot = HotState::new(HotLimits { conversation_weight: 1_000, users: 16, calls: 16 });
        for _ in 0..500 {
            hot.fill_conversation(hot.epoch(), &conversation(9));
        }
        let stats = hot.stats();
        assert!(stats.conversations <= 100, "kept {} conversations of weight 10 in 1000", stats.conversations);
        assert!(stats.evictions >= 400, "evictions counted: {}", stats.evictions);
        for _ in 0..100 {
            hot.fill_display_name(hot.epoch(), UserId::new(), "x");
        }
        assert!(hot.stats().users <= 16);
    }

    #[test]
    fn forgetting_a_user_drops_the_name() {
        let hot = HotState::default();
        let u = UserId::new();
        hot.fill_display_name(hot.epoch(), u, "Ann");
        assert_eq!(hot.display_name(u).as_deref(), Some("Ann"));
        hot.forget(Changed::User(u));
        assert!(hot.display_name(u).is_none());
        hot.fill_display_name(hot.epoch(), u, "Bo");
        hot.clear();
        assert!(hot.display_name(u).is_none());
    }

    #[test]
    fn an_older_call_never_replaces_a_newer_one() {
        use crate::call_model::{CallKind, CallStatus};
        let hot = HotState::default();
        let mut call = Call {
            id: CallId::new(),
            conversation_id: ConversationId::new(),
            initiator_id: UserId::new(),
            kind: CallKind::Audio,
            status: CallStatus::Ringing,
            participants: Vec::new(),
            created_at: now(),
            started_at: None,
            ended_at: None,
            duration_sec: None,
            version: 6,
        };
        hot.fill_call(hot.epoch(), &call);
        call.version = 5;
        call.status = CallStatus::Active;
        hot.fill_call(hot.epoch(), &call);
        let held = hot.call(call.id).expect("held");
        assert_eq!((held.version, held.status), (6, CallStatus::Ringing), "a load of v5 must not replace v6");
    }

    #[test]
    fn suspended_it_keeps_nothing() {
        let hot = HotState::default();
        let u = UserId::new();
        hot.suspend();
        hot.fill_display_name(hot.epoch(), u, "Ann");
        assert!(hot.display_name(u).is_none());
        hot.resume();
        hot.fill_display_name(hot.epoch(), u, "Ann");
        assert_eq!(hot.display_name(u).as_deref(), Some("Ann"));
    }
}
