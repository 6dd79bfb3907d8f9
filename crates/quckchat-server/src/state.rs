//! The handles every handler may use. Each service keeps its own state private; this
//! struct only holds `Arc`s to them.

use std::sync::Arc;

use quckchat_domain::calls::Calls;
use quckchat_domain::chat::Chat;
use quckchat_domain::store::Store;

use crate::auth::Auth;
use crate::config::Config;
use crate::fleet::Fleet;
use crate::gateway::drain::Drain;
use crate::ice::IceProvider;
use crate::metrics::Metrics;

/// Shared, cheaply cloned handles.
#[derive(Clone)]
pub struct AppState {
    /// Conversations, messages, presence.
    pub chat: Arc<Chat>,
    /// Calls and their signaling.
    pub calls: Arc<Calls>,
    /// ICE servers and TURN credentials.
    pub ice: IceProvider,
    /// Accounts and sessions.
    pub auth: Arc<Auth>,
    /// The store (health checks).
    pub store: Arc<dyn Store>,
    /// This server's metrics.
    pub metrics: Metrics,
    /// Tracks socket events in flight, for graceful shutdown.
    pub drain: Arc<Drain>,
    /// The fleet's Redis, when running as a fleet (health checks).
    pub fleet: Option<Fleet>,
    /// Every user's sockets here: counts and shared rate limits.
    pub sockets: Arc<crate::gateway::session::UserSockets>,
    /// The configuration it started with.
    pub config: Arc<Config>,
}
