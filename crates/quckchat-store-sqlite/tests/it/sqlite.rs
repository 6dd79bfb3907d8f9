//! What only the SQLite backend has: files, WAL, reopening, migrations, in-memory
//! databases, and several stores sharing one file.

use std::collections::BTreeSet;

use chrono::{TimeZone, Utc};
use quckchat_domain::call_model::{Call, CallKind, CallParticipant, CallStatus, ParticipantStatus};
use quckchat_domain::model::{
    Appended, ConversationKind, MessageKind, NewConversation, NewMessage, NewUser, PushJob, PushKind, Role, Timestamp,
};
use quckchat_domain::store::HistoryCursor;
use quckchat_domain::store::prelude::*;
use quckchat_domain::{CallId, ConversationId, MessageId, StoreError, UserId};
use quckchat_store_sqlite::SqliteStore;
use sqlx::{Connection, SqliteConnection};

use crate::scratch;

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

fn call(conversation: ConversationId, initiator: UserId, callee: UserId, at: Timestamp) -> Call {
    Call {
        id: CallId::new(),
        conversation_id: conversation,
        initiator_id: initiator,
        kind: CallKind::Video,
        status: CallStatus::Ringing,
        participants: vec![
            CallParticipant {
                user_id: initiator,
                status: ParticipantStatus::Joined,
                joined_at: Some(at),
                left_at: None,
                device: Some("socket-1".into()),
            },
            CallParticipant {
                user_id: callee,
                status: ParticipantStatus::Ringing,
                joined_at: None,
                left_at: None,
                device: None,
            },
        ],
        created_at: at,
        started_at: None,
        ended_at: None,
        duration_sec: None,
        version: 0,
    }
}

/// Opening an existing database again applies no migration twice and keeps the data.
#[tokio::test]
async fn migrations_apply_to_an_existing_file_again() {
    let url = scratch::db_url();
    let alice = new_user("alice");
    {
        let store = SqliteStore::connect(&url).await.expect("first open");
        store.create_user(alice.clone()).await.expect("create_user");
        store.close().await;
    }
    for _ in 0..2 {
        let store = SqliteStore::connect(&url).await.expect("reopen");
        assert_eq!(store.user(alice.id).await.expect("user").map(|u| u.username), Some("alice".into()));
        store.close().await;
    }
}

/// Users, conversations, messages, receipts and the push outbox survive closing and
/// reopening the file, and claiming works on the reopened store.
#[tokio::test]
async fn data_survives_reopening() {
    let url = scratch::db_url();
    let alice = new_user("alice");
    let bob = new_user("bob");
    let conv = group(alice.id, &[bob.id]);
    let message = text(conv.id, alice.id, "persisted", t(10));
    let push = PushJob::new(
        bob.id,
        PushKind::Message,
        conv.id,
        Some(message.id),
        None,
        alice.id,
        "alice".into(),
        "persisted".into(),
        t(10),
    );
    let sent = {
        let store = SqliteStore::connect(&url).await.expect("open");
        store.create_user(alice.clone()).await.expect("alice");
        store.create_user(bob.clone()).await.expect("bob");
        store.create_conversation(conv.clone()).await.expect("conversation");
        let sent = match store.append_message(message, vec![push.clone()]).await.expect("append") {
            Appended::Created(m) => m,
            other => panic!("unexpected {other:?}"),
        };
        assert!(store.mark_read(conv.id, bob.id, 1, t(20)).await.expect("mark_read"));
        store.close().await;
        sent
    };

    let store = SqliteStore::connect(&url).await.expect("reopen");
    let read_back = store.message(sent.id).await.expect("message").expect("kept");
    assert_eq!(read_back.content, "persisted");
    assert_eq!(read_back.read_by.iter().map(|r| (r.user_id, r.read_at)).collect::<Vec<_>>(), vec![(bob.id, t(20))]);
    assert_eq!(store.pushes_for(bob.id).await.expect("pushes_for"), vec![push.clone()]);
    let claimed = store.claim_pushes(t(10), t(70), 10).await.expect("claim");
    assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), vec![push.id]);
    let again = match store
        .append_message(text(conv.id, bob.id, "after reopening", t(30)), Vec::new())
        .await
        .expect("append")
    {
        Appended::Created(m) => m,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(again.seq, 2, "the sequence continues");
    let conversation = store.conversation(conv.id, alice.id).await.expect("conversation").expect("kept");
    assert_eq!(conversation.last_seq, 2);
    assert_eq!(conversation.unread_count, 1);
    store.close().await;
}

/// A file database is in WAL mode.
#[tokio::test]
async fn file_database_uses_wal() {
    let path = scratch::db_path();
    let store = SqliteStore::connect(&format!("sqlite://{}", path.display())).await.expect("open");
    store.ping().await.expect("ping");
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.expect("inspect");
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut conn).await.expect("journal_mode");
    assert_eq!(mode.to_lowercase(), "wal");
    conn.close().await.expect("close");
    store.close().await;
}

/// Missing parent directories are created, and so is the file.
#[tokio::test]
async fn connect_creates_parent_directories() {
    let path = scratch::db_path().with_extension("").join("nested/deeper/chat.db");
    assert!(!path.exists());
    let store = SqliteStore::connect(&format!("sqlite://{}", path.display())).await.expect("open");
    store.ping().await.expect("ping");
    assert!(path.exists());
    store.close().await;
}

/// Each `sqlite::memory:` store is its own database, and keeps its data while open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_stores_are_separate() {
    let one = SqliteStore::connect("sqlite::memory:").await.expect("open one");
    let two = SqliteStore::connect("sqlite::memory:").await.expect("open two");
    let alice = new_user("alice");
    one.create_user(alice.clone()).await.expect("create_user");
    assert!(one.user(alice.id).await.expect("user").is_some());
    assert!(two.user(alice.id).await.expect("user").is_none());
    two.create_user(new_user("alice")).await.expect("the name is free in the other database");
}

/// A malformed URL is refused with an error, not a panic.
#[tokio::test]
async fn bad_url_is_an_error() {
    assert!(SqliteStore::connect("sqlite://x.db?mode=sideways").await.is_err());
}

/// Two stores on one file (as two processes would be) append to one conversation
/// concurrently: SQLite's write lock keeps the sequence gap-free.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_stay_gap_free() {
    let url = scratch::db_url();
    let first = SqliteStore::connect(&url).await.expect("open first");
    let second = SqliteStore::connect(&url).await.expect("open second");
    let alice = new_user("alice");
    first.create_user(alice.clone()).await.expect("create_user");
    let conv = group(alice.id, &[]);
    first.create_conversation(conv.clone()).await.expect("conversation");

    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = if i % 2 == 0 { first.clone() } else { second.clone() };
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for n in 0..25 {
                let new =
                    NewMessage { client_message_id: Some(format!("{i}-{n}")), ..text(conv.id, alice.id, "x", t(n)) };
                match store.append_message(new, Vec::new()).await.expect("append") {
                    Appended::Created(m) => seqs.push(m.seq),
                    other => panic!("unexpected {other:?}"),
                }
            }
            seqs
        }));
    }
    let mut seqs = BTreeSet::new();
    for task in tasks {
        for seq in task.await.expect("task") {
            assert!(seqs.insert(seq), "seq {seq} given twice");
        }
    }
    assert_eq!(seqs, (1..=200).collect::<BTreeSet<i64>>());
    let page = second.history(conv.id, HistoryCursor::Latest, 1).await.expect("history");
    assert_eq!(page[0].seq, 200);
    first.close().await;
    second.close().await;
}

/// A database made before calls existed (only the first migration applied, with data in
/// it) gets the call tables on open, keeps its data, and stores calls.
#[tokio::test]
async fn calls_migration_upgrades_an_older_database() {
    let path = scratch::db_path();
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let alice = new_user("alice");
    let bob = new_user("bob");
    let conv = group(alice.id, &[bob.id]);
    {
        // The schema as it was: a migrator over the first migration alone.
        let old = path.with_extension("migrations");
        std::fs::create_dir_all(&old).expect("create the migrations directory");
        std::fs::copy(
            concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/20260101000000_initial.sql"),
            old.join("20260101000000_initial.sql"),
        )
        .expect("copy the first migration");
        let migrator = sqlx::migrate::Migrator::new(old.as_path()).await.expect("read the first migration");
        let mut conn = SqliteConnection::connect(&url).await.expect("create");
        migrator.run(&mut conn).await.expect("apply the first migration");
        for user in [&alice, &bob] {
            sqlx::query(
                "INSERT INTO users (id, username, username_key, display_name, display_name_key,
                                    password_hash, created_at)
                 VALUES (?1, ?2, ?2, ?2, ?2, 'hash', 0)",
            )
            .bind(user.id.to_string())
            .bind(&user.username)
            .execute(&mut conn)
            .await
            .expect("insert a user");
        }
        let calls_table: Option<String> = sqlx::query_scalar("SELECT name FROM sqlite_master WHERE name = 'calls'")
            .fetch_optional(&mut conn)
            .await
            .expect("inspect");
        assert_eq!(calls_table, None, "no call tables before the upgrade");
        conn.close().await.expect("close");
    }

    let store = SqliteStore::connect(&format!("sqlite://{}", path.display())).await.expect("open and upgrade");
    assert_eq!(store.user(bob.id).await.expect("user").map(|u| u.username), Some("bob".into()), "the data is kept");
    store.create_conversation(conv.clone()).await.expect("conversation");
    let placed = call(conv.id, alice.id, bob.id, t(5));
    store.create_call(&placed).await.expect("create_call");
    assert_eq!(store.call(placed.id).await.expect("call"), Some(placed.clone()));
    assert_eq!(store.live_calls_of(bob.id).await.expect("live"), vec![placed]);
    store.close().await;
}

/// Calls, their participants (devices included) and their versions survive reopening,
/// and optimistic saving goes on from the stored version.
#[tokio::test]
async fn calls_survive_reopening() {
    let url = scratch::db_url();
    let alice = new_user("alice");
    let bob = new_user("bob");
    let conv = group(alice.id, &[bob.id]);
    let mut answered = call(conv.id, alice.id, bob.id, t(10));
    {
        let store = SqliteStore::connect(&url).await.expect("open");
        store.create_user(alice.clone()).await.expect("alice");
        store.create_user(bob.clone()).await.expect("bob");
        store.create_conversation(conv.clone()).await.expect("conversation");
        store.create_call(&answered).await.expect("create_call");
        answered.status = CallStatus::Active;
        answered.started_at = Some(t(12));
        answered.participants[1].status = ParticipantStatus::Joined;
        answered.participants[1].joined_at = Some(t(12));
        answered.participants[1].device = Some("socket-2".into());
        answered.version = 1;
        assert!(store.save_call(&answered, 0).await.expect("save_call"));
        store.close().await;
    }

    let store = SqliteStore::connect(&url).await.expect("reopen");
    assert_eq!(store.call(answered.id).await.expect("call"), Some(answered.clone()));
    assert_eq!(store.live_calls().await.expect("live_calls"), vec![answered.clone()]);
    let mut ended = answered.clone();
    ended.status = CallStatus::Ended;
    ended.ended_at = Some(t(20));
    ended.duration_sec = Some(0);
    ended.version = 2;
    assert!(!store.save_call(&ended, 0).await.expect("stale save_call"));
    assert!(store.save_call(&ended, 1).await.expect("save_call"));
    assert!(store.live_calls().await.expect("live_calls").is_empty());
    assert_eq!(store.calls_of_conversation(conv.id, None, 10).await.expect("calls_of_conversation"), vec![ended]);
    store.close().await;
}

/// The schema's references: a call needs its conversation and users (`NotFound`
/// otherwise), a call id is stored once (`Conflict`), and a user appears once per call.
#[tokio::test]
async fn call_references_and_duplicates() {
    let store = SqliteStore::connect("sqlite::memory:").await.expect("open");
    let alice = new_user("alice");
    let bob = new_user("bob");
    store.create_user(alice.clone()).await.expect("alice");
    store.create_user(bob.clone()).await.expect("bob");
    let conv = group(alice.id, &[bob.id]);
    store.create_conversation(conv.clone()).await.expect("conversation");

    let nowhere = call(ConversationId::new(), alice.id, bob.id, t(1));
    let result = store.create_call(&nowhere).await;
    assert!(matches!(result, Err(StoreError::NotFound)), "got {result:?}");
    let stranger = call(conv.id, alice.id, UserId::new(), t(1));
    let result = store.create_call(&stranger).await;
    assert!(matches!(result, Err(StoreError::NotFound)), "got {result:?}");
    assert!(store.call(stranger.id).await.expect("call").is_none(), "a refused call leaves no row behind");

    let placed = call(conv.id, alice.id, bob.id, t(2));
    store.create_call(&placed).await.expect("create_call");
    let result = store.create_call(&placed).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "got {result:?}");

    let mut twice = call(conv.id, alice.id, bob.id, t(3));
    twice.participants.push(twice.participants[1].clone());
    let result = store.create_call(&twice).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "got {result:?}");
    assert!(store.call(twice.id).await.expect("call").is_none());

    // A save that breaks a rule fails whole: the version and the state stay as they were.
    let mut broken = placed.clone();
    broken.status = CallStatus::Active;
    broken.participants.push(broken.participants[1].clone());
    broken.version = 1;
    let result = store.save_call(&broken, 0).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "got {result:?}");
    assert_eq!(store.call(placed.id).await.expect("call"), Some(placed));
    store.close().await;
}
