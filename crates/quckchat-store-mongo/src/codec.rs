//! How records become BSON and back: ids as UUID binaries (subtype 4), timestamps as BSON
//! datetimes (milliseconds since the epoch, which is exactly the port's precision),
//! kinds and statuses as their wire names, and how driver errors become the port's.

use std::fmt;

use chrono::{TimeZone, Utc};
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{self, Binary, Bson, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use quckchat_domain::model::Timestamp;
use quckchat_domain::store::StoreResult;
use quckchat_domain::{CallId, ConversationId, MessageId, PushJobId, SessionId, StoreError, UserId};
use uuid::Uuid;

/// The server's error code for a unique index violation.
const DUPLICATE_KEY: i32 = 11000;

/// A stored value that does not decode: the document was edited by hand or by a newer
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

/// Maps a driver error onto the port's: a unique index violation is `Conflict`,
/// anything else a backend failure.
pub(crate) fn db(e: mongodb::error::Error) -> StoreError {
    match duplicate_message(&e) {
        Some(message) => StoreError::Conflict(message),
        None => StoreError::backend(e),
    }
}

/// The server's message when `e` is a unique index violation (of a single write, a
/// findAndModify, or any write of an `insert_many`).
fn duplicate_message(e: &mongodb::error::Error) -> Option<String> {
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) if w.code == DUPLICATE_KEY => Some(w.message.clone()),
        ErrorKind::Command(c) if c.code == DUPLICATE_KEY => Some(c.message.clone()),
        ErrorKind::InsertMany(many) => {
            many.write_errors.as_ref()?.iter().find(|w| w.code == DUPLICATE_KEY).map(|w| w.message.clone())
        }
        _ => None,
    }
}

/// Whether `e` is a unique index violation.
pub(crate) fn is_duplicate(e: &mongodb::error::Error) -> bool {
    duplicate_message(e).is_some()
}

/// Whether `e` is a unique index violation of the index `name`. The server names the
/// index in its message (`E11000 duplicate key error collection: db.c index: NAME dup
/// key: …`); callers that act on the answer double-check by querying when it matters.
pub(crate) fn violates(e: &mongodb::error::Error, name: &str) -> bool {
    duplicate_message(e).is_some_and(|m| m.contains(&format!("index: {name} ")))
}

/// Whether an `insert_many` failed only on unique index violations (each such document
/// was already stored, which is what an idempotent re-insert expects).
pub(crate) fn only_duplicates(e: &mongodb::error::Error) -> bool {
    match &*e.kind {
        ErrorKind::InsertMany(many) => {
            many.write_concern_error.is_none()
                && many.write_errors.as_ref().is_some_and(|errors| errors.iter().all(|w| w.code == DUPLICATE_KEY))
        }
        _ => is_duplicate(e),
    }
}

// ---- ids ------------------------------------------------------------------------------

/// An id type kept as a UUID binary.
pub(crate) trait DbId: Sized + Copy {
    /// Wraps a stored UUID.
    fn from_db(uuid: Uuid) -> Self;
    /// The UUID to store.
    fn to_db(self) -> Uuid;

    /// The id as a BSON value.
    fn bson(self) -> Bson {
        uuid_bson(self.to_db())
    }
}

macro_rules! db_id {
    ($($name:ident),*) => {
        $(impl DbId for $name {
            fn from_db(uuid: Uuid) -> Self {
                $name::from_uuid(uuid)
            }
            fn to_db(self) -> Uuid {
                self.as_uuid()
            }
        })*
    };
}

db_id!(UserId, ConversationId, MessageId, SessionId, PushJobId, CallId);

/// A UUID as a BSON binary of subtype 4 (the standard representation).
pub(crate) fn uuid_bson(uuid: Uuid) -> Bson {
    Bson::Binary(Binary { subtype: BinarySubtype::Uuid, bytes: uuid.as_bytes().to_vec() })
}

/// An optional id as BSON (`null` when absent).
pub(crate) fn opt_id_bson<T: DbId>(id: Option<T>) -> Bson {
    id.map_or(Bson::Null, DbId::bson)
}

/// A list of ids as a BSON array (for `$in`).
pub(crate) fn id_array<T: DbId>(ids: impl IntoIterator<Item = T>) -> Bson {
    Bson::Array(ids.into_iter().map(DbId::bson).collect())
}

fn uuid_of(value: &Bson, key: &str) -> StoreResult<Uuid> {
    match value {
        Bson::Binary(b) if matches!(b.subtype, BinarySubtype::Uuid | BinarySubtype::UuidOld) => {
            Uuid::from_slice(&b.bytes).map_err(|_| corrupt(format!("{key}: not a UUID")))
        }
        other => Err(corrupt(format!("{key}: expected a UUID, got {other}"))),
    }
}

/// An id field.
pub(crate) fn id<T: DbId>(doc: &Document, key: &str) -> StoreResult<T> {
    let value = doc.get(key).ok_or_else(|| corrupt(format!("{key} missing")))?;
    Ok(T::from_db(uuid_of(value, key)?))
}

/// An optional id field (missing or `null` is `None`).
pub(crate) fn opt_id<T: DbId>(doc: &Document, key: &str) -> StoreResult<Option<T>> {
    match doc.get(key) {
        None | Some(Bson::Null) => Ok(None),
        Some(value) => Ok(Some(T::from_db(uuid_of(value, key)?))),
    }
}

// ---- timestamps -----------------------------------------------------------------------

/// A timestamp as a BSON datetime: whole milliseconds (rounded down, like every other
/// store), so that what is read back is exactly what any backend would give.
pub(crate) fn date(at: Timestamp) -> Bson {
    Bson::DateTime(bson::DateTime::from_millis(at.timestamp_millis()))
}

/// An optional timestamp (`null` when absent).
pub(crate) fn opt_date(at: Option<Timestamp>) -> Bson {
    at.map_or(Bson::Null, date)
}

/// A timestamp as it reads back after being written.
pub(crate) fn ts(at: Timestamp) -> Timestamp {
    from_millis(at.timestamp_millis()).unwrap_or(at)
}

fn from_millis(ms: i64) -> Option<Timestamp> {
    Utc.timestamp_millis_opt(ms).single()
}

fn ts_of(value: &Bson, key: &str) -> StoreResult<Timestamp> {
    match value {
        Bson::DateTime(d) => {
            from_millis(d.timestamp_millis()).ok_or_else(|| corrupt(format!("{key}: datetime out of range")))
        }
        other => Err(corrupt(format!("{key}: expected a datetime, got {other}"))),
    }
}

/// A timestamp field.
pub(crate) fn time(doc: &Document, key: &str) -> StoreResult<Timestamp> {
    let value = doc.get(key).ok_or_else(|| corrupt(format!("{key} missing")))?;
    ts_of(value, key)
}

/// An optional timestamp field (missing or `null` is `None`).
pub(crate) fn opt_time(doc: &Document, key: &str) -> StoreResult<Option<Timestamp>> {
    match doc.get(key) {
        None | Some(Bson::Null) => Ok(None),
        Some(value) => ts_of(value, key).map(Some),
    }
}

// ---- plain values ---------------------------------------------------------------------

/// A string field.
pub(crate) fn string(doc: &Document, key: &str) -> StoreResult<String> {
    match doc.get(key) {
        Some(Bson::String(s)) => Ok(s.clone()),
        Some(other) => Err(corrupt(format!("{key}: expected a string, got {other}"))),
        None => Err(corrupt(format!("{key} missing"))),
    }
}

/// An optional string field (missing or `null` is `None`).
pub(crate) fn opt_string(doc: &Document, key: &str) -> StoreResult<Option<String>> {
    match doc.get(key) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(corrupt(format!("{key}: expected a string, got {other}"))),
    }
}

/// An optional string as BSON (`null` when absent).
pub(crate) fn opt_str_bson(s: Option<&str>) -> Bson {
    s.map_or(Bson::Null, |s| Bson::String(s.to_string()))
}

fn int_of(value: &Bson, key: &str) -> StoreResult<i64> {
    match value {
        Bson::Int64(n) => Ok(*n),
        Bson::Int32(n) => Ok(i64::from(*n)),
        // Written by hand in a shell, numbers are doubles.
        Bson::Double(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(*f as i64),
        other => Err(corrupt(format!("{key}: expected an integer, got {other}"))),
    }
}

/// An integer field (stored as a 64-bit integer; 32-bit ones are read too).
pub(crate) fn int(doc: &Document, key: &str) -> StoreResult<i64> {
    let value = doc.get(key).ok_or_else(|| corrupt(format!("{key} missing")))?;
    int_of(value, key)
}

/// An optional integer field.
pub(crate) fn opt_int(doc: &Document, key: &str) -> StoreResult<Option<i64>> {
    match doc.get(key) {
        None | Some(Bson::Null) => Ok(None),
        Some(value) => int_of(value, key).map(Some),
    }
}

/// A string field holding a wire name, parsed with `parse`.
pub(crate) fn wire<T>(doc: &Document, key: &str, parse: impl FnOnce(&str) -> Option<T>) -> StoreResult<T> {
    let name = string(doc, key)?;
    parse(&name).ok_or_else(|| corrupt(format!("{key} {name:?}")))
}

/// A sub-document field.
pub(crate) fn subdoc<'d>(doc: &'d Document, key: &str) -> StoreResult<&'d Document> {
    match doc.get(key) {
        Some(Bson::Document(d)) => Ok(d),
        Some(other) => Err(corrupt(format!("{key}: expected a document, got {other}"))),
        None => Err(corrupt(format!("{key} missing"))),
    }
}

/// The documents of an array field (missing or `null` is empty).
pub(crate) fn docs<'d>(doc: &'d Document, key: &str) -> StoreResult<Vec<&'d Document>> {
    match doc.get(key) {
        None | Some(Bson::Null) => Ok(Vec::new()),
        Some(Bson::Array(items)) => items
            .iter()
            .map(|item| match item {
                Bson::Document(d) => Ok(d),
                other => Err(corrupt(format!("{key}: expected documents, got {other}"))),
            })
            .collect(),
        Some(other) => Err(corrupt(format!("{key}: expected an array, got {other}"))),
    }
}

/// The key that usernames are unique and searched by: compared case-insensitively,
/// for every script, not only ASCII (done here, so every backend folds alike).
pub(crate) fn fold(s: &str) -> String {
    s.to_lowercase()
}

/// `text` as a regular expression matching itself literally, for both PCRE (MongoDB)
/// and other engines: every ASCII character that is not a letter, digit or `_` is
/// escaped (a backslash before such a character is a literal in every dialect), and
/// everything else (letters of any script) stands for itself.
pub(crate) fn literal_regex(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if c.is_ascii() && !c.is_ascii_alphanumeric() && c != '_' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A limit as the server takes it; callers answer `limit == 0` themselves (for the
/// server, 0 means "no limit").
pub(crate) fn limit(n: u32) -> i64 {
    i64::from(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_regex_metacharacters() {
        assert_eq!(literal_regex("a.b*c"), "a\\.b\\*c");
        assert_eq!(literal_regex("%_"), "\\%_");
        assert_eq!(literal_regex("émile ✓"), "émile\\ ✓");
        assert_eq!(literal_regex("\\"), "\\\\");
    }

    #[test]
    fn timestamps_keep_milliseconds() {
        let at = Utc.timestamp_millis_opt(-86_400_001).single().unwrap();
        let stored = date(at);
        let doc = mongodb::bson::doc! { "at": stored };
        assert_eq!(time(&doc, "at").unwrap(), at);
        let precise = at + chrono::Duration::microseconds(999);
        assert_eq!(ts(precise), at);
    }

    #[test]
    fn ids_round_trip() {
        let user = UserId::new();
        let doc = mongodb::bson::doc! { "u": user.bson(), "none": Bson::Null };
        assert_eq!(id::<UserId>(&doc, "u").unwrap(), user);
        assert_eq!(opt_id::<UserId>(&doc, "none").unwrap(), None);
        assert_eq!(opt_id::<UserId>(&doc, "missing").unwrap(), None);
    }
}
