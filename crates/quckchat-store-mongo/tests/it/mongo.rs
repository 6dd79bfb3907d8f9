//! What only the MongoDB backend has: several clients (as several server instances would
//! have) sharing one database, the indexes it creates, the database named by the URL,
//! and appends that a crashed instance left unfinished.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use mongodb::bson::{Bson, Document, doc};
use quckchat_domain::model::{
    Appended, ConversationKind, MessageKind, NewConversation, NewMessage, NewUser, PushJob, PushKind, Role, Timestamp,
};
use quckchat_domain::store::HistoryCursor;
use quckchat_domain::store::prelude::*;
use quckchat_domain::{ConversationId, MessageId, UserId};
use quckchat_store_mongo::{MongoStore, names};

use crate::scratch::{self, Scratch};

fn t(ms: i64) -> Timestamp {
    Utc.timestamp_millis_opt(1_704_067_200_000 + ms).single().expect("valid instant")
}

fn new_user(name: &str) -> NewUser {
    NewUser {
        id: UserId::new(),
        username: name.into(),
        display_name: name.into(),
        password_hash: "hash".into(),
        created_at: t(0),
    }
}

fn group(creator: UserId, members: &[UserId]) -> NewConversation {
    let mut participants = vec![(creator, Role::Admin)];
    participants.extend(members.iter().map(|m| (*m, Role::Member)));
    NewConversation {
        id: ConversationId::new(),
        kind: ConversationKind::Group,
        name: Some("g".into()),
        avatar: None,
        created_by: creator,
        participants,
        created_at: t(1),
    }
}

fn text(conversation: ConversationId, sender: UserId, content: &str, at: Timestamp) -> NewMessage {
    NewMessage {
        id: MessageId::new(),
        conversation_id: conversation,
        sender_id: sender,
        kind: MessageKind::Text,
        content: content.into(),
        attachments: Vec::new(),
        reply_to: None,
        client_message_id: None,
        created_at: at,
    }
}

fn push(user: UserId, conversation: ConversationId, sender: UserId, at: Timestamp) -> PushJob {
    PushJob::new(user, PushKind::Message, conversation, None, None, sender, "Sender".into(), "hello".into(), at)
}

/// Two instances: two stores, each with a client (and connection pool) of its own, on
/// one database.
async fn two_instances(scratch: &Scratch) -> [Arc<MongoStore>; 2] {
    [Arc::new(scratch.store().await), Arc::new(scratch.store().await)]
}

/// Every seq stored in a conversation, ascending.
async fn stored_seqs(store: &MongoStore, conversation: ConversationId) -> Vec<i64> {
    store
        .history(conversation, HistoryCursor::AfterSeq(0), 10_000)
        .await
        .expect("history")
        .iter()
        .map(|m| m.seq)
        .collect()
}

/// Two clients (as two server instances) append 200 messages into one conversation at
/// once, 4 tasks each: the seqs are exactly 1..=200, and so is what is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs MongoDB: set MONGODB_URL_TEST"]
async fn two_clients_append_gap_free() {
    let scratch = Scratch::new();
    let stores = two_instances(&scratch).await;
    let a = stores[0].create_user(new_user("alice")).await.expect("alice");
    let b = stores[1].create_user(new_user("bob")).await.expect("bob");
    let conv = group(a.id, &[b.id]);
    let id = conv.id;
    stores[0].create_conversation(conv).await.expect("group");

    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let store = stores[task % 2].clone();
            let sender = if task % 4 < 2 { a.id } else { b.id };
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..25 {
                    let new = text(id, sender, &format!("{task}-{i}"), t(10 + i));
                    match store.append_message(new, Vec::new()).await.expect("append") {
                        Appended::Created(m) => seqs.push(m.seq),
                        other => panic!("no client id, yet {other:?}"),
                    }
                }
                seqs
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.extend(task.await.expect("task"));
    }
    seqs.sort_unstable();
    let expected: Vec<i64> = (1..=200).collect();
    assert_eq!(seqs, expected, "no gaps, no repeats");
    assert_eq!(stored_seqs(&stores[1], id).await, expected);
    let conv = stores[1].conversation(id, b.id).await.expect("conversation").expect("exists");
    assert_eq!(conv.last_seq, 200);
    scratch.drop().await;
}

/// Rounds of eight concurrent sends of one clientMessageId, from two clients, mixed
/// with plain appends: each client id is stored once, with one push job, everyone gets
/// that message, and the conversation's seqs stay exactly 1..=n.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs MongoDB: set MONGODB_URL_TEST"]
async fn two_clients_duplicate_client_id_once_without_gaps() {
    let scratch = Scratch::new();
    let stores = two_instances(&scratch).await;
    let a = stores[0].create_user(new_user("alice")).await.expect("alice");
    let b = stores[1].create_user(new_user("bob")).await.expect("bob");
    let conv = group(a.id, &[b.id]);
    let id = conv.id;
    stores[0].create_conversation(conv).await.expect("group");

    const ROUNDS: usize = 5;
    for round in 0..ROUNDS {
        let client_id = format!("dup-{round}");
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = stores[i % 2].clone();
            let new = NewMessage {
                client_message_id: Some(client_id.clone()),
                ..text(id, a.id, &format!("try {round}-{i}"), t(100 + i as i64))
            };
            let job = PushJob { message_id: Some(new.id), ..push(b.id, id, a.id, t(100)) };
            tasks
                .push(tokio::spawn(async move { (true, store.append_message(new, vec![job]).await.expect("append")) }));
            // Plain appends from the other sender race with the duplicates.
            let store = stores[(i + 1) % 2].clone();
            let plain = text(id, b.id, &format!("plain {round}-{i}"), t(100));
            tasks.push(tokio::spawn(
                async move { (false, store.append_message(plain, Vec::new()).await.expect("append")) },
            ));
        }
        let mut created = 0;
        let mut ids = HashSet::new();
        for task in tasks {
            let (duplicate, appended) = task.await.expect("task");
            match appended {
                Appended::Created(m) if duplicate => {
                    created += 1;
                    ids.insert(m.id);
                }
                Appended::Existing(m) if duplicate => {
                    ids.insert(m.id);
                }
                Appended::Created(_) => {}
                other => panic!("a plain append answered {other:?}"),
            }
        }
        assert_eq!(created, 1, "round {round}: exactly one created");
        assert_eq!(ids.len(), 1, "round {round}: everyone got the same message");
    }

    let history = stores[0].history(id, HistoryCursor::AfterSeq(0), 1_000).await.expect("history");
    let n = ROUNDS * 9;
    assert_eq!(
        history.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=n as i64).collect::<Vec<_>>(),
        "one message per client id plus the plain ones, no gaps"
    );
    let mut per_client_id: HashMap<&str, usize> = HashMap::new();
    for m in &history {
        if let Some(client_id) = m.client_message_id.as_deref() {
            *per_client_id.entry(client_id).or_default() += 1;
        }
    }
    assert_eq!(per_client_id.len(), ROUNDS);
    assert!(per_client_id.values().all(|n| *n == 1));
    assert_eq!(stores[1].pushes_for(b.id).await.expect("pushes_for").len(), ROUNDS, "one push job per stored message");
    let conv = stores[1].conversation(id, a.id).await.expect("conversation").expect("exists");
    assert_eq!(conv.last_seq, n as i64);

    // The next message still takes the very next seq.
    let next = stores[0].append_message(text(id, a.id, "after", t(999)), Vec::new()).await.expect("append");
    match next {
        Appended::Created(m) => assert_eq!(m.seq, n as i64 + 1),
        other => panic!("expected a new message, got {other:?}"),
    }
    scratch.drop().await;
}

/// The index of `name` among `indexes`, which must exist.
fn index<'i>(indexes: &'i [Document], name: &str) -> &'i Document {
    indexes
        .iter()
        .find(|i| i.get_str("name").ok() == Some(name))
        .unwrap_or_else(|| panic!("index {name} exists; have {indexes:?}"))
}

fn is_unique(index: &Document) -> bool {
    matches!(index.get("unique"), Some(Bson::Boolean(true)))
}

fn key(index: &Document) -> Vec<(String, i64)> {
    index
        .get_document("key")
        .expect("key")
        .iter()
        .map(|(field, order)| {
            let order = match order {
                Bson::Int32(n) => i64::from(*n),
                Bson::Int64(n) => *n,
                Bson::Double(f) => *f as i64,
                other => panic!("index order {other}"),
            };
            (field.clone(), order)
        })
        .collect()
}

fn fields(spec: &[(&str, i64)]) -> Vec<(String, i64)> {
    spec.iter().map(|(f, o)| (f.to_string(), *o)).collect()
}

/// `connect` creates every index the store relies on, with their keys, uniqueness and
/// partial filters; connecting again (a second instance) changes nothing.
#[tokio::test]
#[ignore = "needs MongoDB: set MONGODB_URL_TEST"]
async fn indexes_exist_after_connect() {
    let scratch = Scratch::new();
    let store = scratch.store().await;
    let again = scratch.store().await;
    let database = store.database();
    let list = |collection: &str| {
        let command = doc! { "listIndexes": collection };
        async move {
            let reply = database.run_command(command).await.expect("listIndexes");
            reply
                .get_document("cursor")
                .expect("cursor")
                .get_array("firstBatch")
                .expect("firstBatch")
                .iter()
                .map(|i| i.as_document().expect("an index").clone())
                .collect::<Vec<Document>>()
        }
    };
    let users = list(names::USERS).await;
    let i = index(&users, names::USERS_USERNAME_KEY);
    assert!(is_unique(i));
    assert_eq!(key(i), fields(&[("usernameKey", 1)]));

    let sessions = list(names::SESSIONS).await;
    assert_eq!(key(index(&sessions, names::SESSIONS_BY_USER)), fields(&[("userId", 1)]));

    let conversations = list(names::CONVERSATIONS).await;
    let i = index(&conversations, names::CONVERSATIONS_SINGLE_KEY);
    assert!(is_unique(i));
    assert_eq!(i.get_document("partialFilterExpression").expect("partial"), &doc! { "singleKey": { "$exists": true } });
    assert_eq!(
        key(index(&conversations, names::CONVERSATIONS_BY_PARTICIPANT)),
        fields(&[("participants.userId", 1), ("lastActivityAt", -1), ("_id", -1)])
    );

    let messages = list(names::MESSAGES).await;
    let i = index(&messages, names::MESSAGES_CONVERSATION_SEQ);
    assert!(is_unique(i));
    assert_eq!(key(i), fields(&[("conversationId", 1), ("seq", 1)]));
    let i = index(&messages, names::MESSAGES_BY_CLIENT_ID);
    assert!(is_unique(i));
    assert_eq!(key(i), fields(&[("senderId", 1), ("clientMessageId", 1)]));
    assert_eq!(
        i.get_document("partialFilterExpression").expect("partial"),
        &doc! { "clientMessageId": { "$exists": true } }
    );
    let i = index(&messages, names::MESSAGES_UNFINISHED);
    assert!(i.get_document("partialFilterExpression").is_ok());

    let receipts = list(names::RECEIPTS).await;
    assert_eq!(key(index(&receipts, names::RECEIPTS_BY_SEQ)), fields(&[("conversationId", 1), ("seq", 1)]));

    let pushes = list(names::PUSHES).await;
    let i = index(&pushes, names::PUSHES_DUE);
    assert_eq!(key(i), fields(&[("nextAttemptAt", 1)]));
    assert_eq!(i.get_document("partialFilterExpression").expect("partial"), &doc! { "pending": true });
    index(&pushes, names::PUSHES_BY_USER);

    let calls = list(names::CALLS).await;
    assert_eq!(
        key(index(&calls, names::CALLS_BY_CONVERSATION)),
        fields(&[("conversationId", 1), ("createdAt", -1), ("_id", -1)])
    );
    index(&calls, names::CALLS_BY_STATUS);
    assert_eq!(
        key(index(&calls, names::CALLS_BY_PARTICIPANT)),
        fields(&[("participants.userId", 1), ("participants.status", 1)])
    );

    // The indexes do their job: a second single for the pair and a second user with the
    // same folded name are refused by the server, from either instance.
    let a = store.create_user(new_user("Émile")).await.expect("Émile");
    assert!(again.create_user(new_user("éMILE")).await.is_err());
    let b = again.create_user(new_user("bob")).await.expect("bob");
    let single = |x: UserId, y: UserId| NewConversation {
        id: ConversationId::new(),
        kind: ConversationKind::Single,
        name: None,
        avatar: None,
        created_by: x,
        participants: vec![(x, Role::Member), (y, Role::Member)],
        created_at: t(5),
    };
    store.create_conversation(single(a.id, b.id)).await.expect("single");
    assert!(again.create_conversation(single(b.id, a.id)).await.is_err());
    // Groups carry no single key, so any number of them coexist.
    store.create_conversation(group(a.id, &[b.id])).await.expect("group 1");
    again.create_conversation(group(b.id, &[a.id])).await.expect("group 2");
    scratch.drop().await;
}

/// The database is the one the URL names (the default, `quckchat`, is checked by the
/// unit tests, so as not to write outside scratch databases here).
#[tokio::test]
#[ignore = "needs MongoDB: set MONGODB_URL_TEST"]
async fn database_comes_from_the_url() {
    let name = scratch::database_name();
    let with_database = with_path(&scratch::url(), &name);
    let store = MongoStore::connect(&with_database).await.expect("connect");
    assert_eq!(store.database().name(), name);
    store.ping().await.expect("ping");
    store.database().drop().await.expect("drop");
}

/// `url` with its path (the database) replaced by `database`.
fn with_path(url: &str, database: &str) -> String {
    let hosts_start = url.find("://").expect("a scheme") + 3;
    let rest = &url[hosts_start..];
    let hosts_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (hosts, tail) = rest.split_at(hosts_end);
    let query = tail.find('?').map(|q| &tail[q..]).unwrap_or("");
    format!("{}{hosts}/{database}{query}", &url[..hosts_start])
}

/// The raw `unfinished` field of a stored message.
async fn unfinished(store: &MongoStore, message: MessageId) -> Option<Bson> {
    let raw = store
        .database()
        .collection::<Document>(names::MESSAGES)
        .find_one(doc! { "_id": mongodb::bson::Binary {
            subtype: mongodb::bson::spec::BinarySubtype::Uuid,
            bytes: message.as_uuid().as_bytes().to_vec(),
        } })
        .await
        .expect("find")
        .expect("stored");
    raw.get("unfinished").cloned()
}

/// The state of a conversation after an instance "died" right after storing message 2
/// of it: the message is stored (and shown), its effects are not applied yet.
struct Abandoned {
    a: UserId,
    b: UserId,
    id: ConversationId,
    message: MessageId,
    job: PushJob,
}

async fn abandon_second_message(store: &MongoStore, client_id: Option<&str>, age: Duration) -> Abandoned {
    let a = store.create_user(new_user("alice")).await.expect("alice");
    let b = store.create_user(new_user("bob")).await.expect("bob");
    let conv = group(a.id, &[b.id]);
    let id = conv.id;
    store.create_conversation(conv).await.expect("group");
    store.append_message(text(id, a.id, "first", t(10)), Vec::new()).await.expect("first");
    let new = NewMessage { client_message_id: client_id.map(str::to_string), ..text(id, b.id, "second", t(20)) };
    let job = PushJob { message_id: Some(new.id), ..push(a.id, id, b.id, t(20)) };
    let message = new.id;
    match store.append_abandoned(new, vec![job.clone()], age).await.expect("abandoned append") {
        Appended::Created(m) => assert_eq!(m.seq, 2),
        other => panic!("expected a new message, got {other:?}"),
    }
    let conv = store.conversation(id, a.id).await.expect("conversation").expect("exists");
    assert_eq!(conv.last_seq, 1, "the effects were not applied");
    assert_eq!(conv.participant(b.id).expect("bob").last_read_seq, 0);
    assert!(store.pushes_for(a.id).await.expect("pushes").is_empty());
    assert!(unfinished(store, message).await.is_some());
    assert_eq!(stored_seqs(store, id).await, vec![1, 2], "the message itself is stored");
    Abandoned { a: a.id, b: b.id, id, message, job }
}

/// After finishing: the conversation, the sender's pointer and the push job are as if
/// the append had completed.
async fn assert_finished(store: &MongoStore, abandoned: &Abandoned, last_seq: i64) {
    let conv = store.conversation(abandoned.id, abandoned.a).await.expect("conversation").expect("exists");
    assert_eq!(conv.last_seq, last_seq);
    assert!(conv.participant(abandoned.b).expect("bob").last_read_seq >= 2);
    assert_eq!(store.pushes_for(abandoned.a).await.expect("pushes"), vec![abandoned.job.clone()]);
    assert_eq!(unfinished(store, abandoned.message).await, None);
    let second = store.message(abandoned.message).await.expect("message").expect("exists");
    assert!(second.read_by.is_empty(), "alice has not read bob's message");
    let first = store.history(abandoned.id, HistoryCursor::AfterSeq(0), 1).await.expect("history").remove(0);
    assert_eq!(
        first.read_by.iter().map(|r| (r.user_id, r.read_at)).collect::<Vec<_>>(),
        vec![(abandoned.b, t(20))],
        "bob's pointer passed alice's message when he sent his"
    );
}

/// An append left unfinished by a crashed instance is finished by the next append to
/// its conversation, before that one takes the next seq (bob's pointer reaches 2 at
/// his second message's time, then 3).
#[tokio::test]
#[ignore = "needs MongoDB: set MONGODB_URL_TEST"]
async fn next_append_finishes_an_abandoned_one() {
    let scratch = Scratch::new();
    let store = scratch.store().await;
    let abandoned = abandon_second_message(&store, None, Duration::from_secs(60)).await;
    let third = store.append_message(text(abandoned.id, abandoned.b, "third", t(30)), Vec::new()).await.expect("third");
    match third {
        Appended::Created(m) => assert_eq!(m.seq, 3),
        other => panic!("expected a new message, got {other:?}"),
    }
    assert_finished(&store, &abandoned, 3).await;
    scratch.drop().await;
}

/// A new instance finishes, at connect, appends left unfinished for a while.
#[tokio::test]
#[ignore = "needs MongoDB: set MONGODB_URL_TEST"]
async fn connect_finishes_abandoned_appends() {
    let scratch = Scratch::new();
    let store = scratch.store().await;
    let abandoned = abandon_second_message(&store, None, Duration::from_secs(60)).await;
    let restarted = scratch.store().await;
    assert_finished(&restarted, &abandoned, 2).await;
    scratch.drop().await;
}

/// A retry of an abandoned append (same clientMessageId), however recent, answers the
/// stored message and finishes it.
#[tokio::test]
#[ignore = "needs MongoDB: set MONGODB_URL_TEST"]
async fn retry_finishes_an_abandoned_append() {
    let scratch = Scratch::new();
    let store = scratch.store().await;
    let abandoned = abandon_second_message(&store, Some("c-2"), Duration::ZERO).await;
    // A fresh connect leaves a recent one to its (presumed live) append.
    let other = scratch.store().await;
    assert!(unfinished(&other, abandoned.message).await.is_some());
    let retry =
        NewMessage { client_message_id: Some("c-2".into()), ..text(abandoned.id, abandoned.b, "second, again", t(25)) };
    match other.append_message(retry, Vec::new()).await.expect("retry") {
        Appended::Existing(m) => {
            assert_eq!((m.id, m.seq, m.content.as_str()), (abandoned.message, 2, "second"));
        }
        other => panic!("a retry gave {other:?}"),
    }
    assert_finished(&other, &abandoned, 2).await;
    scratch.drop().await;
}
