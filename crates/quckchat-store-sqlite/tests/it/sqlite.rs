//! What only the SQLite backend has: files, WAL, reopening, migrations, in-memory
//! databases, and several stores sharing one file.

use std::collections::BTreeSet;

use chrono::{TimeZone, Utc};
use quckchat_domain::model::{
    Appended, ConversationKind, MessageKind, NewConversation, NewMessage, NewUser, PushJob,
    PushKind, Role, Timestamp,
};
use quckchat_domain::store::{HistoryCursor, Store};
use quckchat_domain::{ConversationId, MessageId, UserId};
use quckchat_store_sqlite::SqliteStore;
use sqlx::{Connection, SqliteConnection};

use crate::scratch;

fn t(ms: i64) -> Timestamp {
    Utc.timestamp_millis_opt(1_704_067_200_000 + ms)
        .single()
        .expect("valid instant")
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
        assert_eq!(
            store
                .user(alice.id)
                .await
                .expect("user")
                .map(|u| u.username),
            Some("alice".into())
        );
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
        store
            .create_conversation(conv.clone())
            .await
            .expect("conversation");
        let sent = match store
            .append_message(message, vec![push.clone()])
            .await
            .expect("append")
        {
            Appended::Created(m) => m,
            Appended::Existing(m) => panic!("unexpected existing {m:?}"),
        };
        assert!(
            store
                .mark_read(conv.id, bob.id, 1, t(20))
                .await
                .expect("mark_read")
        );
        store.close().await;
        sent
    };

    let store = SqliteStore::connect(&url).await.expect("reopen");
    let read_back = store
        .message(sent.id)
        .await
        .expect("message")
        .expect("kept");
    assert_eq!(read_back.content, "persisted");
    assert_eq!(
        read_back
            .read_by
            .iter()
            .map(|r| (r.user_id, r.read_at))
            .collect::<Vec<_>>(),
        vec![(bob.id, t(20))]
    );
    assert_eq!(
        store.pushes_for(bob.id).await.expect("pushes_for"),
        vec![push.clone()]
    );
    let claimed = store.claim_pushes(t(10), t(70), 10).await.expect("claim");
    assert_eq!(
        claimed.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![push.id]
    );
    let again = match store
        .append_message(text(conv.id, bob.id, "after reopening", t(30)), Vec::new())
        .await
        .expect("append")
    {
        Appended::Created(m) => m,
        Appended::Existing(m) => panic!("unexpected existing {m:?}"),
    };
    assert_eq!(again.seq, 2, "the sequence continues");
    let conversation = store
        .conversation(conv.id, alice.id)
        .await
        .expect("conversation")
        .expect("kept");
    assert_eq!(conversation.last_seq, 2);
    assert_eq!(conversation.unread_count, 1);
    store.close().await;
}

/// A file database is in WAL mode.
#[tokio::test]
async fn file_database_uses_wal() {
    let path = scratch::db_path();
    let store = SqliteStore::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("open");
    store.ping().await.expect("ping");
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("inspect");
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .expect("journal_mode");
    assert_eq!(mode.to_lowercase(), "wal");
    conn.close().await.expect("close");
    store.close().await;
}

/// Missing parent directories are created, and so is the file.
#[tokio::test]
async fn connect_creates_parent_directories() {
    let path = scratch::db_path()
        .with_extension("")
        .join("nested/deeper/chat.db");
    assert!(!path.exists());
    let store = SqliteStore::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("open");
    store.ping().await.expect("ping");
    assert!(path.exists());
    store.close().await;
}

/// Each `sqlite::memory:` store is its own database, and keeps its data while open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_stores_are_separate() {
    let one = SqliteStore::connect("sqlite::memory:")
        .await
        .expect("open one");
    let two = SqliteStore::connect("sqlite::memory:")
        .await
        .expect("open two");
    let alice = new_user("alice");
    one.create_user(alice.clone()).await.expect("create_user");
    assert!(one.user(alice.id).await.expect("user").is_some());
    assert!(two.user(alice.id).await.expect("user").is_none());
    two.create_user(new_user("alice"))
        .await
        .expect("the name is free in the other database");
}

/// A malformed URL is refused with an error, not a panic.
#[tokio::test]
async fn bad_url_is_an_error() {
    assert!(
        SqliteStore::connect("sqlite://x.db?mode=sideways")
            .await
            .is_err()
    );
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
    first
        .create_conversation(conv.clone())
        .await
        .expect("conversation");

    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = if i % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for n in 0..25 {
                let new = NewMessage {
                    client_message_id: Some(format!("{i}-{n}")),
                    ..text(conv.id, alice.id, "x", t(n))
                };
                match store.append_message(new, Vec::new()).await.expect("append") {
                    Appended::Created(m) => seqs.push(m.seq),
                    Appended::Existing(m) => panic!("unexpected existing {m:?}"),
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
    let page = second
        .history(conv.id, HistoryCursor::Latest, 1)
        .await
        .expect("history");
    assert_eq!(page[0].seq, 200);
    first.close().await;
    second.close().await;
}
