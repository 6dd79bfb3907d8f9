//! How records become SQLite values and back: ids as hyphenated text, timestamps as unix
//! milliseconds, lists of ids as a JSON array (bound once, read with `json_each`).

use std::fmt;
use std::str::FromStr;

use chrono::DateTime;
use quckchat_domain::StoreError;
use quckchat_domain::model::Timestamp;
use quckchat_domain::store::StoreResult;

/// A stored value that does not decode: the file was edited by hand or by a newer
/// version. Reported as a backend failure.
#[derive(Debug)]
pub(crate) struct Corrupt(pub(crate) String);

impl fmt::Display for Corrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "corrupt stored value: {}", self.0)
    }
}

impl std::error::Error for Corrupt {}

/// A backend failure for a stored value that does not decode.
pub(crate) fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::backend(Corrupt(what.into()))
}

/// Maps an sqlx error onto the port's: unique violations are `Conflict`, missing rows
/// and broken references (an unknown user, message or conversation) are `NotFound`,
/// anything else is a backend failure.
pub(crate) fn db(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(d.message().to_string()),
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => StoreError::NotFound,
        _ => StoreError::backend(e),
    }
}

/// A timestamp as stored.
pub(crate) fn ms(at: Timestamp) -> i64 {
    at.timestamp_millis()
}

/// A stored timestamp.
pub(crate) fn time(ms: i64) -> StoreResult<Timestamp> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt(format!("timestamp {ms} out of range")))
}

/// An optional stored timestamp.
pub(crate) fn opt_time(ms: Option<i64>) -> StoreResult<Option<Timestamp>> {
    ms.map(time).transpose()
}

/// A stored id of any kind.
pub(crate) fn id<T: FromStr>(s: &str) -> StoreResult<T> {
    s.parse().map_err(|_| corrupt(format!("id {s:?}")))
}

/// An optional stored id.
pub(crate) fn opt_id<T: FromStr>(s: Option<&str>) -> StoreResult<Option<T>> {
    s.map(id).transpose()
}

/// Ids as a JSON array of strings, for `IN (SELECT value FROM json_each(?))`.
pub(crate) fn id_list<T: fmt::Display>(ids: impl IntoIterator<Item = T>) -> String {
    let strings: Vec<String> = ids.into_iter().map(|i| i.to_string()).collect();
    // Serializing a list of strings cannot fail.
    serde_json::to_string(&strings).unwrap_or_else(|_| "[]".to_string())
}

/// The key that usernames are unique and searched by: compared case-insensitively,
/// for every script, not only ASCII.
pub(crate) fn fold(s: &str) -> String {
    s.to_lowercase()
}
