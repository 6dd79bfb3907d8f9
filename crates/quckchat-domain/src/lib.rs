//! QuckChat's domain: users, conversations, messages, receipts, reactions and presence,
//! and the *ports* through which the outside world (a store, a realtime transport, a
//! presence registry) is reached.
//!
//! This crate knows nothing of sockets, HTTP, SQL or JSON. The server crate adapts the
//! transport to the [`realtime::Realtime`] port and every store crate implements
//! [`store::Store`]; the services here ([`chat::Chat`]) hold only those trait objects.

pub mod call_model;
pub mod calls;
pub mod chat;
pub mod error;
pub mod events;
pub mod hot;
pub mod ids;
pub mod lanes;
pub mod model;
pub mod ordering;
pub mod presence;
pub mod realtime;
pub mod receipts;
pub mod store;
pub mod values;

pub use error::{DomainError, StoreError};
pub use ids::{CallId, ConversationId, MessageId, PushJobId, SessionId, UserId};
