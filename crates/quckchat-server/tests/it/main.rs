//! The server's integration tests: each test starts the real server on port 0 with a
//! fresh SQLite database (`helpers::spawn_app`) and talks to it over HTTP and Socket.IO,
//! as a client would (CONTRACT.md). No test sleeps: every wait is an awaited event (or,
//! for state no event announces, a condition) under a timeout.

mod helpers;

mod auth;
mod bad_input;
mod calls;
mod calls_support;
mod chat;
mod durability;
mod fleet;
mod lifecycle;
mod membership;
mod ordering;
mod presence;
mod push;
mod rest;
