//! The call half of the store port, apart from [`crate::store::Store`] so that calls can
//! grow without touching chat storage. Every backend implements both and passes the
//! conformance suite for each.

use async_trait::async_trait;

use crate::call_model::Call;
use crate::ids::{CallId, ConversationId, UserId};
use crate::model::Timestamp;
use crate::store::StoreResult;

/// Where calls are kept.
#[async_trait]
pub trait CallStore: Send + Sync + 'static {
    /// Stores a new call with its participants (its `version` as given, usually 0).
    async fn create_call(&self, call: &Call) -> StoreResult<()>;
    /// A call by id, with its participants in the order they were stored.
    async fn call(&self, id: CallId) -> StoreResult<Option<Call>>;
    /// Replaces a call's state and participants if the stored `version` is still
    /// `expected_version`; the stored version becomes `call.version`. `false` when
    /// someone else saved first (the caller reloads and retries).
    async fn save_call(&self, call: &Call, expected_version: i64) -> StoreResult<bool>;
    /// A conversation's calls, newest first, older than `before` (by `createdAt`) when
    /// given, at most `limit`.
    async fn calls_of_conversation(
        &self,
        conversation: ConversationId,
        before: Option<Timestamp>,
        limit: u32,
    ) -> StoreResult<Vec<Call>>;
    /// Live calls (ringing or active) in which `user` is ringing or joined.
    async fn live_calls_of(&self, user: UserId) -> StoreResult<Vec<Call>>;
    /// Every live call (ringing or active): what a restart must settle.
    async fn live_calls(&self) -> StoreResult<Vec<Call>>;
}
