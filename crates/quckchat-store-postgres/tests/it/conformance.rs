//! The shared store conformance suite, each case in a fresh schema.

use std::sync::Arc;

use quckchat_store_postgres::PostgresStore;

use crate::scratch;

/// A fresh store in a new schema of the test database.
async fn pg_store() -> Arc<PostgresStore> {
    Arc::new(scratch::fresh_store().await)
}

quckchat_store_tests::conformance_suite!(
    #[ignore = "needs PostgreSQL: set DATABASE_URL_PG_TEST"]
    pg_store()
);
