//! The PostgreSQL store's integration tests: the shared conformance suite, and what only
//! a shared server has (several pools appending to one conversation as several server
//! instances would, claims across pools, migrations, schemas). They need a PostgreSQL
//! server, so they are ignored by default:
//!
//! ```text
//! DATABASE_URL_PG_TEST=postgres://postgres@127.0.0.1:5432/test \
//!     cargo test -p quckchat-store-postgres -- --include-ignored
//! ```
//!
//! Each test works in a fresh schema of that database.

mod conformance;
mod postgres;
mod scratch;
