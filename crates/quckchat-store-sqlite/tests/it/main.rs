//! The SQLite store's integration tests: the shared conformance suite, on a file and in
//! memory, and what only SQLite has (files, WAL, reopening, migrations).

mod conformance;
mod scratch;
mod sqlite;
