//! The MongoDB store's integration tests: the shared conformance suite, and what only a
//! shared server has (two clients appending to one conversation as two server instances
//! would, duplicate client ids across clients, the indexes, finishing appends that a
//! crashed instance left unfinished). They need a MongoDB-compatible server, so they
//! are ignored by default:
//!
//! ```text
//! MONGODB_URL_TEST='mongodb://127.0.0.1:27017/?directConnection=true' \
//!     cargo test -p quckchat-store-mongo -- --include-ignored
//! ```
//!
//! Each test works in a fresh database of that server (`qct_<unix seconds>_<random>`);
//! databases of runs more than an hour old are dropped at the start of a run.

mod mongo;
mod scratch;

use std::sync::Arc;

use quckchat_store_mongo::MongoStore;

/// A fresh store in a new database.
async fn mongo_store() -> Arc<MongoStore> {
    Arc::new(scratch::fresh_store().await)
}

quckchat_store_tests::conformance_suite!(
    #[ignore = "needs MongoDB: set MONGODB_URL_TEST"]
    mongo_store()
);
