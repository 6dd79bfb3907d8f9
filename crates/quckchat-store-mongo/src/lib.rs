//! The MongoDB store behind QuckChat's [`Store`] and [`CallStore`] ports, for several
//! server instances sharing one database.
//!
//! Nothing here uses multi-document transactions (they need a replica set, and not
//! every server offers them): every rule that must hold across processes rests on
//! what MongoDB guarantees for a single document (a write to one document is atomic,
//! and its filter is evaluated against the version it writes) and on unique indexes.
//! It targets MongoDB 6.0 and later (6.0, 7.0, 8.0), standalone or replica set; it
//! uses nothing newer than partial indexes (3.2), aggregation-pipeline updates (4.2)
//! and `$elemMatch`.
//!
//! # Documents
//!
//! | collection      | one document per | notes |
//! | --------------- | ---------------- | ----- |
//! | `users`         | user             | `usernameKey` (the Unicode-lowercased username) is unique |
//! | `sessions`      | session          | |
//! | `conversations` | conversation     | its participants embedded, in join order; `lastSeq`; `singleKey` for singles |
//! | `messages`      | message          | its reactions embedded; `unfinished` while an append is in progress |
//! | `receipts`      | read-pointer move| `readBy` is computed from these |
//! | `pushes`        | push job         | `pending: true` until delivered or given up |
//! | `calls`         | call             | its participants embedded, in order; `version` |
//!
//! Ids are UUID binaries (subtype 4), timestamps BSON datetimes (milliseconds, the
//! port's precision, so they read back exactly), kinds and statuses their wire names.
//!
//! # Gap-free `seq` without transactions
//!
//! An append takes its seq optimistically, with the messages themselves as the only
//! record of which seqs are taken:
//!
//! 1. if the message has a `clientMessageId` and the sender already stored it, that
//!    message is the answer and nothing is written;
//! 2. read the conversation's newest message (the unique `(conversationId, seq)` index,
//!    descending, limit 1) with read concern `majority`: seq `n`, or none (`n = 0`, after
//!    checking the conversation exists);
//! 3. insert the message with seq `n + 1`. If the unique `(conversationId, seq)` index
//!    refuses it, another append took `n + 1` first: go back to 2. If the unique
//!    `(senderId, clientMessageId)` index refuses it, a concurrent append of the same
//!    client id won: its message is the answer.
//!
//! *Why there is never a gap.* Messages are never removed (a delete only empties one).
//! A message with seq `k > 1` is only ever inserted by an append that has just seen,
//! majority-committed, a message with seq `k − 1`; a majority-committed write is never
//! rolled back. So by induction, whenever seq `k` is stored, `1 … k − 1` are stored too:
//! the stored seqs of a conversation are always exactly `1 … n`. An insert that fails
//! (a lost race, a duplicate client id, a crash, a timeout) stores nothing, so it
//! cannot leave a hole behind — there is no reservation to give back, unlike
//! `findOneAndUpdate({$inc: {lastSeq: 1}})` followed by an insert that may fail.
//! *Why there is never a repeat.* The unique index on `(conversationId, seq)`. *Why it
//! terminates.* An append only loses a round to an append that won it, and waits a
//! little (randomly, longer each time) before the next, so contenders spread out.
//!
//! The cost: under contention a loser pays another read and insert per lost round,
//! where the PostgreSQL store queues on a row lock. Appends to different conversations
//! never contend.
//!
//! # The rest of an append
//!
//! The message is inserted together with a record of what its append still has to do
//! (`unfinished`: the push jobs to write). After the insert, the append applies the
//! effects, each idempotent: the conversation's `lastSeq` / `lastMessageAt` /
//! `lastActivityAt` are set only while `lastSeq` is below the new seq; the sender's
//! read pointer moves up only (recording a receipt when it moves); the push jobs are
//! inserted under their own ids (a duplicate is ignored). Then `unfinished` is removed.
//! If the process dies in between, the effects are not lost: they are applied by the
//! next append to that conversation (which meets the message as the newest one), by a
//! retry with the same `clientMessageId`, or by [`MongoStore::connect`], which finishes
//! every append left unfinished for longer than a few seconds. Until then the
//! conversation's `lastSeq` may lag its newest message.
//!
//! # Other cross-process rules
//!
//! - usernames: a unique index on `usernameKey`;
//! - one single conversation per pair: a unique index on `singleKey` (the sorted pair),
//!   partial on its existence (groups have none); a conversation and its participants
//!   are one document, so they are created together or not at all;
//! - membership: `$push` guarded by "not a member yet", `$pull`, positional `$set`, each
//!   one atomic update; a read pointer moves with `$elemMatch` on "below the new seq";
//! - reactions: `$push` guarded by "no such reaction yet"; a delete empties the content
//!   and attachments and drops the reactions in one update;
//! - push claims: each due job is leased with `findOneAndUpdate` whose filter re-checks
//!   that it is still due, so concurrent workers take disjoint jobs;
//! - calls: `updateOne({_id, version: expected}, …)` replaces state and participants.
//!
//! Reads that span documents (a message and its receipts, a listing and its unread
//! counts) are not taken from one snapshot, unlike the SQL stores: each document is
//! consistent in itself, and the combination may mix moments a few milliseconds apart.

mod calls;
mod codec;
mod conversations;
mod messages;
mod pushes;
mod users;

use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use mongodb::bson::{Document, doc};
use mongodb::options::{ClientOptions, CollectionOptions, IndexOptions, ReadConcern};
use mongodb::{Client, Collection, Database, IndexModel};

use quckchat_domain::model::{Appended, NewMessage, PushJob};
use quckchat_domain::store::{StoreHealth, StoreResult};

use crate::codec::db;

/// The database used when the URL names none.
pub const DEFAULT_DATABASE: &str = "quckchat";

/// The names of the collections and of the indexes [`MongoStore::connect`] creates.
pub mod names {
    /// Users.
    pub const USERS: &str = "users";
    /// Login sessions.
    pub const SESSIONS: &str = "sessions";
    /// Conversations with their participants.
    pub const CONVERSATIONS: &str = "conversations";
    /// Messages with their reactions.
    pub const MESSAGES: &str = "messages";
    /// Read-pointer moves.
    pub const RECEIPTS: &str = "receipts";
    /// The push outbox.
    pub const PUSHES: &str = "pushes";
    /// Calls with their participants.
    pub const CALLS: &str = "calls";

    /// Unique: one user per Unicode-lowercased username.
    pub const USERS_USERNAME_KEY: &str = "users_username_key";
    /// A user's sessions.
    pub const SESSIONS_BY_USER: &str = "sessions_by_user";
    /// Unique, partial (singles only): one single conversation per pair.
    pub const CONVERSATIONS_SINGLE_KEY: &str = "conversations_single_key";
    /// A user's conversations (multikey on the participants), most recent first.
    pub const CONVERSATIONS_BY_PARTICIPANT: &str = "conversations_by_participant";
    /// Unique: one message per seq of a conversation; also the history index.
    pub const MESSAGES_CONVERSATION_SEQ: &str = "messages_conversation_seq";
    /// Unique, partial (messages with a client id): one message per
    /// `(sender, clientMessageId)`.
    pub const MESSAGES_BY_CLIENT_ID: &str = "messages_by_client_id";
    /// Partial: appends still applying their effects.
    pub const MESSAGES_UNFINISHED: &str = "messages_unfinished";
    /// A conversation's receipts by seq.
    pub const RECEIPTS_BY_SEQ: &str = "receipts_by_seq";
    /// Partial (pending jobs): jobs by due time, what claims scan.
    pub const PUSHES_DUE: &str = "pushes_due";
    /// A user's jobs, oldest first.
    pub const PUSHES_BY_USER: &str = "pushes_by_user";
    /// A conversation's calls, newest first.
    pub const CALLS_BY_CONVERSATION: &str = "calls_by_conversation";
    /// Calls by status (the live ones).
    pub const CALLS_BY_STATUS: &str = "calls_by_status";
    /// The calls a user takes part in (multikey on the participants).
    pub const CALLS_BY_PARTICIPANT: &str = "calls_by_participant";
}

/// The collections of one store.
#[derive(Debug, Clone)]
pub(crate) struct Collections {
    users: Collection<Document>,
    sessions: Collection<Document>,
    conversations: Collection<Document>,
    messages: Collection<Document>,
    /// `messages` read at majority: what appends take their seq from.
    messages_majority: Collection<Document>,
    receipts: Collection<Document>,
    pushes: Collection<Document>,
    calls: Collection<Document>,
}

impl Collections {
    fn of(db: &Database) -> Self {
        Self {
            users: db.collection(names::USERS),
            sessions: db.collection(names::SESSIONS),
            conversations: db.collection(names::CONVERSATIONS),
            messages: db.collection(names::MESSAGES),
            messages_majority: db.collection_with_options(
                names::MESSAGES,
                CollectionOptions::builder().read_concern(ReadConcern::majority()).build(),
            ),
            receipts: db.collection(names::RECEIPTS),
            pushes: db.collection(names::PUSHES),
            calls: db.collection(names::CALLS),
        }
    }
}

/// QuckChat's data in one MongoDB database. Cheap to clone (a client handle).
#[derive(Debug, Clone)]
pub struct MongoStore {
    client: Client,
    database: Database,
    c: Collections,
}

impl MongoStore {
    /// Connects to the server at `url` (`mongodb://host:port/database?options`; the
    /// database defaults to `quckchat`), creates the indexes that make the store correct
    /// and fast (see [`names`]) and finishes appends that a crashed instance left
    /// unfinished.
    pub async fn connect(url: &str) -> anyhow::Result<MongoStore> {
        let options =
            ClientOptions::parse(url).await.with_context(|| format!("invalid MongoDB URL {:?}", redact(url)))?;
        let database = database_of(&options);
        Self::open(options, &database).await
    }

    /// Like [`connect`](Self::connect), but in `database` whatever the URL names. Several
    /// databases on one server are fully separate stores (tests use one each).
    pub async fn connect_to_database(url: &str, database: &str) -> anyhow::Result<MongoStore> {
        let options =
            ClientOptions::parse(url).await.with_context(|| format!("invalid MongoDB URL {:?}", redact(url)))?;
        Self::open(options, database).await
    }

    async fn open(mut options: ClientOptions, database: &str) -> anyhow::Result<MongoStore> {
        if options.app_name.is_none() {
            options.app_name = Some("quckchat".into());
        }
        if options.server_selection_timeout.is_none() {
            options.server_selection_timeout = Some(Duration::from_secs(10));
        }
        let client = Client::with_options(options).context("configuring the MongoDB client")?;
        let db = client.database(database);
        db.run_command(doc! { "ping": 1 }).await.context("connecting to MongoDB")?;
        let store = MongoStore { client, c: Collections::of(&db), database: db };
        store
            .create_indexes()
            .await
            .with_context(|| format!("creating the indexes of the MongoDB database {database}"))?;
        match messages::finish_abandoned(&store.c, messages::UNFINISHED_GRACE).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(n, "finished appends left unfinished by a crashed instance"),
            Err(e) => tracing::warn!(error = %e, "could not finish abandoned appends"),
        }
        tracing::debug!(database, "MongoDB store ready");
        Ok(store)
    }

    /// The database the store keeps its collections in (operators and tests).
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Test hook: appends like [`Store::append_message`] but "dies" right after storing
    /// the message, as a crashed instance would, leaving its effects (the conversation's
    /// `lastSeq`, the sender's read pointer, the push jobs) recorded as unfinished since
    /// `age` ago and not applied. Not for production use.
    #[doc(hidden)]
    pub async fn append_abandoned(
        &self,
        new: NewMessage,
        pushes: Vec<PushJob>,
        age: Duration,
    ) -> StoreResult<Appended> {
        messages::append(&self.c, new, pushes, Some(age)).await
    }

    /// Closes the client's connections. Later calls fail.
    pub async fn close(&self) {
        self.client.clone().shutdown().await;
    }

    /// Creates the indexes (a no-op for those that exist with the same definition).
    async fn create_indexes(&self) -> anyhow::Result<()> {
        fn index(keys: Document, name: &str) -> IndexModel {
            IndexModel::builder().keys(keys).options(IndexOptions::builder().name(name.to_string()).build()).build()
        }
        fn unique(keys: Document, name: &str, partial: Option<Document>) -> IndexModel {
            IndexModel::builder()
                .keys(keys)
                .options(
                    IndexOptions::builder()
                        .name(name.to_string())
                        .unique(true)
                        .partial_filter_expression(partial)
                        .build(),
                )
                .build()
        }
        fn partial(keys: Document, name: &str, filter: Document) -> IndexModel {
            IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().name(name.to_string()).partial_filter_expression(filter).build())
                .build()
        }

        let c = &self.c;
        c.users.create_indexes([unique(doc! { "usernameKey": 1 }, names::USERS_USERNAME_KEY, None)]).await?;
        c.sessions.create_indexes([index(doc! { "userId": 1 }, names::SESSIONS_BY_USER)]).await?;
        c.conversations
            .create_indexes([
                unique(
                    doc! { "singleKey": 1 },
                    names::CONVERSATIONS_SINGLE_KEY,
                    Some(doc! { "singleKey": { "$exists": true } }),
                ),
                index(
                    doc! { "participants.userId": 1, "lastActivityAt": -1, "_id": -1 },
                    names::CONVERSATIONS_BY_PARTICIPANT,
                ),
            ])
            .await?;
        c.messages
            .create_indexes([
                // Also the history index: pages are ranges of it, either way round.
                unique(doc! { "conversationId": 1, "seq": 1 }, names::MESSAGES_CONVERSATION_SEQ, None),
                unique(
                    doc! { "senderId": 1, "clientMessageId": 1 },
                    names::MESSAGES_BY_CLIENT_ID,
                    Some(doc! { "clientMessageId": { "$exists": true } }),
                ),
                partial(
                    doc! { "unfinished.since": 1 },
                    names::MESSAGES_UNFINISHED,
                    doc! { "unfinished": { "$exists": true } },
                ),
            ])
            .await?;
        // Not `userId` as a third key: it would not cover the query (`readAt` is fetched
        // anyway), and SecantusDB (the server the tests run on) mis-bounds `$lte` on a
        // compound key's middle field.
        c.receipts.create_indexes([index(doc! { "conversationId": 1, "seq": 1 }, names::RECEIPTS_BY_SEQ)]).await?;
        c.pushes
            .create_indexes([
                partial(doc! { "nextAttemptAt": 1 }, names::PUSHES_DUE, doc! { "pending": true }),
                index(doc! { "userId": 1, "createdAt": 1, "enqueuedAt": 1, "ord": 1 }, names::PUSHES_BY_USER),
            ])
            .await?;
        c.calls
            .create_indexes([
                index(doc! { "conversationId": 1, "createdAt": -1, "_id": -1 }, names::CALLS_BY_CONVERSATION),
                index(doc! { "status": 1, "createdAt": 1 }, names::CALLS_BY_STATUS),
                index(doc! { "participants.userId": 1, "participants.status": 1 }, names::CALLS_BY_PARTICIPANT),
            ])
            .await?;
        Ok(())
    }
}

/// The database a URL names, or [`DEFAULT_DATABASE`].
fn database_of(options: &ClientOptions) -> String {
    options.default_database.clone().filter(|name| !name.is_empty()).unwrap_or_else(|| DEFAULT_DATABASE.to_string())
}

/// `url` without its password, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme + 3], &credentials[..colon], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[async_trait]
impl StoreHealth for MongoStore {
    async fn ping(&self) -> StoreResult<()> {
        self.database.run_command(doc! { "ping": 1 }).await.map_err(db)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use mongodb::options::ClientOptions;

    use super::{database_of, redact};

    #[tokio::test]
    async fn database_from_the_url_or_default() {
        for (url, expected) in [
            ("mongodb://127.0.0.1:27017/chat?directConnection=true", "chat"),
            ("mongodb://u:p@h1:1,h2:2/chat_prod", "chat_prod"),
            ("mongodb://127.0.0.1:27017/?directConnection=true", "quckchat"),
            ("mongodb://127.0.0.1:27017", "quckchat"),
        ] {
            let options = ClientOptions::parse(url).await.expect("a valid URL");
            assert_eq!(database_of(&options), expected, "{url}");
        }
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("mongodb://u:secret@h:27017/db"), "mongodb://u:***@h:27017/db");
        assert_eq!(redact("mongodb://h:27017/db"), "mongodb://h:27017/db");
        assert_eq!(redact("mongodb://u@h/db"), "mongodb://u@h/db");
    }
}
