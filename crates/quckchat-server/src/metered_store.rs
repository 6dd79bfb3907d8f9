//! A decorator of both store ports ([`Store`], [`CallStore`]) that times every call into
//! the `quckchat_store_seconds` histogram, whatever the backend.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use quckchat_domain::call_model::Call;
use quckchat_domain::call_store::CallStore;
use quckchat_domain::ids::{CallId, ConversationId, MessageId, PushJobId, SessionId, UserId};
use quckchat_domain::model::Removal;
use quckchat_domain::model::{
    Appended, Conversation, Message, NewConversation, NewMessage, NewUser, ProfilePatch, PushJob, Role, Session,
    Timestamp, User,
};
use quckchat_domain::store::{Credentials, HistoryCursor, Store, StoreResult};

use crate::metrics::Metrics;

/// Times every call of the store inside.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    calls: Arc<dyn CallStore>,
    metrics: Metrics,
}

impl MeteredStore {
    /// Wraps a backend (its chat and call halves).
    pub fn new(inner: Arc<dyn Store>, calls: Arc<dyn CallStore>, metrics: Metrics) -> Self {
        Self { inner, calls, metrics }
    }
}

macro_rules! metered {
    ($trait:ident { $( fn $name:ident(&self $(, $arg:ident : $ty:ty)* ) -> $ret:ty; )* }) => {
        #[async_trait]
        impl $trait for MeteredStore {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> StoreResult<$ret> {
                    let started = Instant::now();
                    let result = metered!(@inner self, $trait).$name($($arg),*).await;
                    self.metrics.store_call(stringify!($name), started);
                    result
                }
            )*
        }
    };
    (@inner $self:ident, Store) => { $self.inner };
    (@inner $self:ident, CallStore) => { $self.calls };
}

metered! { Store {
    fn create_user(&self, user: NewUser) -> User;
    fn user(&self, id: UserId) -> Option<User>;
    fn users(&self, ids: &[UserId]) -> Vec<User>;
    fn credentials(&self, username: &str) -> Option<Credentials>;
    fn update_profile(&self, id: UserId, patch: ProfilePatch) -> User;
    fn search_users(&self, query: &str, limit: u32) -> Vec<User>;
    fn set_last_seen(&self, id: UserId, at: Timestamp) -> ();
    fn create_session(&self, session: Session) -> ();
    fn session(&self, id: SessionId) -> Option<Session>;
    fn rotate_refresh_token(&self, id: SessionId, current_hash: &str, new_hash: &str, new_expires_at: Timestamp, at: Timestamp) -> bool;
    fn revoke_session(&self, id: SessionId, at: Timestamp) -> bool;
    fn create_conversation(&self, new: NewConversation) -> ();
    fn single_between(&self, a: UserId, b: UserId, viewer: UserId) -> Option<Conversation>;
    fn conversation(&self, id: ConversationId, viewer: UserId) -> Option<Conversation>;
    fn conversations_of(&self, user: UserId, before: Option<Timestamp>, limit: u32) -> Vec<Conversation>;
    fn member_role(&self, id: ConversationId, user: UserId) -> Option<Role>;
    fn conversation_ids_of(&self, user: UserId) -> Vec<ConversationId>;
    fn co_members_of(&self, user: UserId) -> Vec<UserId>;
    fn update_conversation(&self, id: ConversationId, name: Option<String>, avatar: Option<String>) -> ();
    fn add_members(&self, id: ConversationId, by: UserId, users: &[UserId], at: Timestamp) -> Option<Vec<UserId>>;
    fn remove_member(&self, id: ConversationId, by: UserId, target: UserId) -> Removal;
    fn append_message(&self, new: NewMessage, pushes: Vec<PushJob>) -> Appended;
    fn message(&self, id: MessageId) -> Option<Message>;
    fn history(&self, conversation: ConversationId, cursor: HistoryCursor, limit: u32) -> Vec<Message>;
    fn edit_message(&self, id: MessageId, content: &str, at: Timestamp) -> Message;
    fn delete_message(&self, id: MessageId, at: Timestamp) -> Message;
    fn mark_read(&self, conversation: ConversationId, user: UserId, seq: i64, at: Timestamp) -> bool;
    fn add_reaction(&self, message: MessageId, user: UserId, emoji: &str, at: Timestamp) -> bool;
    fn remove_reaction(&self, message: MessageId, user: UserId, emoji: &str) -> bool;
    fn enqueue_pushes(&self, jobs: Vec<PushJob>) -> ();
    fn claim_pushes(&self, now: Timestamp, lease_until: Timestamp, limit: u32) -> Vec<PushJob>;
    fn push_delivered(&self, id: PushJobId, at: Timestamp) -> ();
    fn push_failed(&self, id: PushJobId, error: &str, next_attempt_at: Timestamp, give_up: bool, at: Timestamp) -> ();
    fn pushes_for(&self, user: UserId) -> Vec<PushJob>;
    fn ping(&self) -> ();
}}

metered! { CallStore {
    fn create_call(&self, call: &Call) -> ();
    fn call(&self, id: CallId) -> Option<Call>;
    fn save_call(&self, call: &Call, expected_version: i64) -> bool;
    fn calls_of_conversation(&self, conversation: ConversationId, before: Option<Timestamp>, limit: u32) -> Vec<Call>;
    fn live_calls_of(&self, user: UserId) -> Vec<Call>;
    fn live_calls(&self) -> Vec<Call>;
}}
