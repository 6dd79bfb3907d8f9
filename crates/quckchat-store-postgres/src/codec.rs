//! How records become PostgreSQL values and back: ids as native `uuid`, timestamps as
//! `timestamptz` written at millisecond precision, kinds and statuses as their wire names,
//! and how sqlx errors become the port's.

use std::fmt;

use chrono::SubsecRound;
use quckchat_domain::model::Timestamp;
use quckchat_domain::store::StoreResult;
use quckchat_domain::{CallId, ConversationId, MessageId, PushJobId, SessionId, StoreError, UserId};
use sqlx::postgres::PgRow;
use sqlx::{Decode, Postgres, Row, Type};
use uuid::Uuid;

/// A stored value that does not decode: the row was edited by hand or by a newer
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

/// Maps an sqlx error onto the port's: unique violations (SQLSTATE 23505) are
/// `Conflict`, missing rows and broken references (23503: an unknown user, message or
/// conversation) are `NotFound`, anything else is a backend failure.
pub(crate) fn db(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(d.message().to_string()),
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => StoreError::NotFound,
        _ => StoreError::backend(e),
    }
}

/// Whether `e` is a unique violation of the constraint (or unique index) `name`.
pub(crate) fn violates(e: &sqlx::Error, name: &str) -> bool {
    match e {
        sqlx::Error::Database(d) => d.is_unique_violation() && d.constraint() == Some(name),
        _ => false,
    }
}

/// A column of a row, as `T`.
pub(crate) fn get<'r, T>(row: &'r PgRow, column: &str) -> StoreResult<T>
where
    T: Decode<'r, Postgres> + Type<Postgres>,
{
    row.try_get(column).map_err(db)
}

/// A timestamp as written: rounded down to the millisecond, like every other store, so
/// that what is read back is what any backend would give.
pub(crate) fn ts(at: Timestamp) -> Timestamp {
    at.trunc_subsecs(3)
}

/// An optional timestamp as written.
pub(crate) fn opt_ts(at: Option<Timestamp>) -> Option<Timestamp> {
    at.map(ts)
}

/// An id type kept in a `uuid` column.
pub(crate) trait DbId: Sized {
    /// Wraps a stored UUID.
    fn from_db(uuid: Uuid) -> Self;
}

macro_rules! db_id {
    ($($name:ident),*) => {
        $(impl DbId for $name {
            fn from_db(uuid: Uuid) -> Self {
                $name::from_uuid(uuid)
            }
        })*
    };
}

db_id!(UserId, ConversationId, MessageId, SessionId, PushJobId, CallId);

/// An id column.
pub(crate) fn id<T: DbId>(row: &PgRow, column: &str) -> StoreResult<T> {
    Ok(T::from_db(get(row, column)?))
}

/// An optional id column.
pub(crate) fn opt_id<T: DbId>(row: &PgRow, column: &str) -> StoreResult<Option<T>> {
    Ok(get::<Option<Uuid>>(row, column)?.map(T::from_db))
}

/// A text column holding a wire name, parsed with `parse`.
pub(crate) fn wire<T>(row: &PgRow, column: &str, parse: impl FnOnce(&str) -> Option<T>) -> StoreResult<T> {
    let name: &str = get(row, column)?;
    parse(name).ok_or_else(|| corrupt(format!("{column} {name:?}")))
}

/// The key that usernames are unique and searched by: compared case-insensitively,
/// for every script, not only ASCII (done here rather than by `lower()`, whose result
/// depends on the database's locale).
pub(crate) fn fold(s: &str) -> String {
    s.to_lowercase()
}
