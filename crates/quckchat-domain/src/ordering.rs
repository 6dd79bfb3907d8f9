//! The order in which a conversation's messages are stored and broadcast. Holding a
//! conversation's turn from `seq` assignment until the broadcast is handed over makes
//! every member receive the messages in `seq` order. One instance needs only its own
//! lanes ([`LocalOrder`]); a fleet also takes a short lock shared by all instances, so
//! that broadcasts from different instances reach the pub/sub bus in `seq` order too.

use std::sync::Arc;

use async_trait::async_trait;

use crate::ids::ConversationId;
use crate::lanes::{Lanes, OwnedLaneGuard};

/// A held turn; dropping it lets the next sender of the conversation go.
pub type Turn = Box<dyn Send + Sync>;

/// Hands out conversations' turns.
#[async_trait]
pub trait ConversationOrder: Send + Sync + 'static {
    /// Waits for, and holds, the conversation's turn.
    async fn turn(&self, conversation: ConversationId) -> Turn;
}

/// Turns of a single instance: FIFO lanes in memory.
#[derive(Default)]
pub struct LocalOrder {
    lanes: Arc<Lanes<ConversationId>>,
}

impl LocalOrder {
    /// No lanes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// This instance's lane of a conversation, owned.
    pub async fn local_turn(&self, conversation: ConversationId) -> OwnedLaneGuard<ConversationId> {
        Lanes::enter_owned(self.lanes.clone(), conversation).await
    }
}

#[async_trait]
impl ConversationOrder for LocalOrder {
    async fn turn(&self, conversation: ConversationId) -> Turn {
        Box::new(self.local_turn(conversation).await)
    }
}
