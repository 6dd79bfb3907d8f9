//! QuckChat's server: configuration, the REST API, the Socket.IO gateway, the push
//! worker, and start-up. The binary `quckchat` is a thin `main` over [`Server`].

pub mod auth;
pub mod config;
pub mod conformance;
pub mod fleet;
pub mod gateway;
pub mod http;
pub mod ice;
pub mod metrics;
#[cfg(test)]
mod proptests;
pub mod push;
pub mod serve;
pub mod startup;
pub mod state;

pub use config::Config;
pub use startup::Server;
