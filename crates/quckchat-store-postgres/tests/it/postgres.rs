//! What only the PostgreSQL backend has: several pools (as several server instances
//! would have) sharing one database, migrations applied again, schemas, and the
//! mapping of PostgreSQL's errors.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use quckchat_domain::call_model::{Call, CallKind, CallParticipant, CallStatus, ParticipantStatus};
use quckchat_domain::model::{
    Appended, ConversationKind, MessageKind, NewConversation, NewMessage, NewUser, PushJob, PushKind, Role, Timestamp,
};
use quckchat_domain::store::HistoryCursor;
use quckchat_domain::store::prelude::*;
use quckchat_domain::{CallId, ConversationId, MessageId, StoreError, UserId};
use quckchat_store_postgres::PostgresStore;

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

/// Two instances: two pools on one schema.
async fn two_instances(scratch: &Scratch) -> [Arc<PostgresStore>; 2] {
    [Arc::new(scratch.store().await), Arc::new(scratch.store().await)]
}

/// Two pools (as two server instances) append 200 messages into one conversation at
/// once, 4 tasks each: the seqs are exactly 1..=200.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL: set DATABASE_URL_PG_TEST"]
async fn two_pools_append_gap_free() {
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
    assert_eq!(seqs, (1..=200).collect::<Vec<i64>>(), "no gaps, no repeats");

    for store in &stores {
        let stored: Vec<i64> =
            store.history(id, HistoryCursor::AfterSeq(0), 500).await.expect("history").iter().map(|m| m.seq).collect();
        assert_eq!(stored, (1..=200).collect::<Vec<i64>>());
        let conv = store.conversation(id, a.id).await.expect("conversation").expect("exists");
        assert_eq!(conv.last_seq, 200);
    }
    for store in &stores {
        store.close().await;
    }
    scratch.drop().await;
}

/// The same `(sender, clientMessageId)` sent at once through two pools, into one
/// conversation and into two: each round stores one message, everyone gets its id, and
/// no seq is used up by the duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL: set DATABASE_URL_PG_TEST"]
async fn two_pools_duplicate_client_id_create_once() {
    let scratch = Scratch::new();
    let stores = two_instances(&scratch).await;
    let a = stores[0].create_user(new_user("alice")).await.expect("alice");
    let b = stores[0].create_user(new_user("bob")).await.expect("bob");
    let c1 = group(a.id, &[b.id]);
    let c2 = group(a.id, &[b.id]);
    let (c1, c2) = {
        let ids = (c1.id, c2.id);
        stores[0].create_conversation(c1).await.expect("c1");
        stores[1].create_conversation(c2).await.expect("c2");
        ids
    };

    for round in 0..10 {
        let client_id = format!("dup-{round}");
        // Odd rounds spread the copies over two conversations, which lock different
        // rows: only the unique index sees those races.
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = stores[i % 2].clone();
                let conv = if round % 2 == 1 && i % 4 >= 2 { c2 } else { c1 };
                let new = NewMessage {
                    client_message_id: Some(client_id.clone()),
                    ..text(conv, a.id, &format!("try {i}"), t(100 + round))
                };
                let job = push(b.id, conv, a.id, t(100 + round));
                tokio::spawn(async move { store.append_message(new, vec![job]).await })
            })
            .collect();
        let mut created = 0;
        let mut ids = HashSet::new();
        for task in tasks {
            match task.await.expect("task").expect("append") {
                Appended::Created(m) => {
                    created += 1;
                    ids.insert(m.id);
                }
                Appended::Existing(m) => {
                    ids.insert(m.id);
                }
                Appended::NotMember => panic!("round {round}: the sender is a member"),
            }
        }
        assert_eq!(created, 1, "round {round}: one message created");
        assert_eq!(ids.len(), 1, "round {round}: everyone got the same message");
    }

    let mut total = 0;
    for conv in [c1, c2] {
        let seqs: Vec<i64> = stores[1]
            .history(conv, HistoryCursor::AfterSeq(0), 100)
            .await
            .expect("history")
            .iter()
            .map(|m| m.seq)
            .collect();
        assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "duplicates leave no gaps");
        total += seqs.len();
    }
    assert_eq!(total, 10, "one message per round");
    assert_eq!(stores[0].pushes_for(b.id).await.expect("pushes_for").len(), 10, "one push per stored message");
    for store in &stores {
        store.close().await;
    }
    scratch.drop().await;
}

/// Two pools claiming the same outbox at once take disjoint jobs, and between them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL: set DATABASE_URL_PG_TEST"]
async fn two_pools_claim_disjoint_jobs() {
    let scratch = Scratch::new();
    let stores = two_instances(&scratch).await;
    let a = UserId::new();
    let b = UserId::new();
    let conv = ConversationId::new();
    let jobs: Vec<PushJob> = (0..120).map(|i| push(b, conv, a, t(i))).collect();
    stores[0].enqueue_pushes(jobs.clone()).await.expect("enqueue");

    let tasks: Vec<_> = (0..6)
        .map(|task| {
            let store = stores[task % 2].clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = store.claim_pushes(t(1_000), t(100_000), 7).await.expect("claim");
                    if batch.is_empty() {
                        return mine;
                    }
                    assert!(batch.windows(2).all(|w| w[0].created_at <= w[1].created_at), "a batch is oldest first");
                    mine.extend(batch.into_iter().map(|j| j.id));
                }
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for task in tasks {
        claimed.extend(task.await.expect("task"));
    }
    let unique: HashSet<_> = claimed.iter().copied().collect();
    assert_eq!(claimed.len(), unique.len(), "no job claimed twice");
    assert_eq!(unique, jobs.iter().map(|j| j.id).collect::<HashSet<_>>());
    for store in &stores {
        store.close().await;
    }
    scratch.drop().await;
}

/// Connecting again to a migrated schema applies nothing twice and keeps the data.
#[tokio::test]
#[ignore = "needs PostgreSQL: set DATABASE_URL_PG_TEST"]
async fn migrations_run_twice() {
    let scratch = Scratch::new();
    let first = scratch.store().await;
    let alice = first.create_user(new_user("alice")).await.expect("alice");
    first.close().await;

    let second = scratch.store().await;
    assert_eq!(second.user(alice.id).await.expect("user"), Some(alice), "the data is kept");
    let mut conn = scratch.connection().await;
    let applied: Vec<(i64, bool)> = sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
        .fetch_all(&mut conn)
        .await
        .expect("read the migration table");
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .expect("migrations directory")
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql")))
        .count();
    assert_eq!(applied.len(), files, "each migration once");
    assert!(applied.iter().all(|(_, ok)| *ok));
    drop(conn);
    second.close().await;
    scratch.drop().await;
}

/// `ping` answers while connected and fails, without panicking, once closed.
#[tokio::test]
#[ignore = "needs PostgreSQL: set DATABASE_URL_PG_TEST"]
async fn ping_works() {
    let scratch = Scratch::new();
    let store = scratch.store().await;
    store.ping().await.expect("ping");
    store.close().await;
    assert!(matches!(store.ping().await, Err(StoreError::Backend(_))));
    scratch.drop().await;
}

/// Two schemas of one database are separate stores.
#[tokio::test]
#[ignore = "needs PostgreSQL: set DATABASE_URL_PG_TEST"]
async fn schemas_are_separate() {
    let (one, two) = (Scratch::new(), Scratch::new());
    let (s1, s2) = (one.store().await, two.store().await);
    let alice = s1.create_user(new_user("alice")).await.expect("alice");
    assert_eq!(s2.user(alice.id).await.expect("user"), None);
    s2.create_user(new_user("alice")).await.expect("the name is free in the other schema");
    s1.close().await;
    s2.close().await;
    one.drop().await;
    two.drop().await;
}

/// A malformed URL or an unreachable server is an error, not a panic.
#[tokio::test]
#[ignore = "needs PostgreSQL: set DATABASE_URL_PG_TEST"]
async fn bad_urls_are_errors() {
    assert!(PostgresStore::connect("not a url").await.is_err());
    assert!(PostgresStore::connect_in_schema(&scratch::url(), "").await.is_err(), "an empty schema name");
}

/// PostgreSQL's errors map onto the port's: a broken reference is `NotFound`, a
/// duplicate key `Conflict` (an unknown sender is refused first, as no member).
#[tokio::test]
#[ignore = "needs PostgreSQL: set DATABASE_URL_PG_TEST"]
async fn errors_map_onto_the_port() {
    let scratch = Scratch::new();
    let store = scratch.store().await;
    let a = store.create_user(new_user("alice")).await.expect("alice");
    let b = store.create_user(new_user("bob")).await.expect("bob");
    let conv = group(a.id, &[b.id]);
    let id = conv.id;
    store.create_conversation(conv.clone()).await.expect("group");

    // An unknown sender is no member: refused before anything is written.
    let unknown_sender = store.append_message(text(id, UserId::new(), "x", t(5)), Vec::new()).await;
    assert!(matches!(unknown_sender, Ok(Appended::NotMember)), "got {unknown_sender:?}");
    assert_eq!(
        store.conversation(id, a.id).await.expect("conversation").expect("exists").last_seq,
        0,
        "a failed append uses up no seq"
    );
    let again = store.create_conversation(conv).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "got {again:?}");
    let unknown_member = store.add_members(id, a.id, &[UserId::new()], t(6)).await;
    assert!(matches!(unknown_member, Err(StoreError::NotFound)), "got {unknown_member:?}");
    let unknown_message = store.add_reaction(MessageId::new(), a.id, "👍", t(7)).await;
    assert!(matches!(unknown_message, Err(StoreError::NotFound)), "got {unknown_message:?}");

    let call = Call {
        id: CallId::new(),
        conversation_id: id,
        initiator_id: a.id,
        kind: CallKind::Audio,
        status: CallStatus::Ringing,
        participants: vec![CallParticipant {
            user_id: a.id,
            status: ParticipantStatus::Joined,
            joined_at: Some(t(8)),
            left_at: None,
            device: Some("socket-1".into()),
        }],
        created_at: t(8),
        started_at: None,
        ended_at: None,
        duration_sec: None,
        version: 0,
    };
    store.create_call(&call).await.expect("create_call");
    let twice = store.create_call(&call).await;
    assert!(matches!(twice, Err(StoreError::Conflict(_))), "got {twice:?}");
    let nowhere =
        store.create_call(&Call { id: CallId::new(), conversation_id: ConversationId::new(), ..call.clone() }).await;
    assert!(matches!(nowhere, Err(StoreError::NotFound)), "got {nowhere:?}");
    let mut same_user_twice = Call { id: CallId::new(), ..call.clone() };
    same_user_twice.participants.push(same_user_twice.participants[0].clone());
    let result = store.create_call(&same_user_twice).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "got {result:?}");
    assert_eq!(store.call(same_user_twice.id).await.expect("call"), None, "a failed creation leaves nothing behind");

    store.close().await;
    scratch.drop().await;
}

/// Timestamps are kept to the millisecond, like every backend: finer digits are
/// dropped on the way in.
#[tokio::test]
#[ignore = "needs PostgreSQL: set DATABASE_URL_PG_TEST"]
async fn timestamps_keep_milliseconds() {
    let scratch = Scratch::new();
    let store = scratch.store().await;
    let precise = Utc.timestamp_opt(1_704_067_200, 123_456_789).single().expect("valid instant");
    let user = store.create_user(NewUser { created_at: precise, ..new_user("alice") }).await.expect("alice");
    let millis = Utc.timestamp_opt(1_704_067_200, 123_000_000).single().expect("valid instant");
    assert_eq!(user.created_at, millis);
    assert_eq!(store.user(user.id).await.expect("user").expect("exists").created_at, millis);
    store.close().await;
    scratch.drop().await;
}

/// An append that started before a removal committed and waited for the conversation's
/// lock must not store the removed member's message: the statement read the members
/// before the wait, so the row having been written meanwhile (as `remove_member` writes
/// it) makes it store nothing and the careful path answer `NotMember`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL: set DATABASE_URL_PG_TEST"]
async fn an_append_that_waited_for_a_removal_is_refused() {
    use sqlx::{Executor, Row};

    let scratch = Scratch::new();
    let store = Arc::new(scratch.store().await);
    let a = store.create_user(new_user("alice")).await.expect("alice");
    let b = store.create_user(new_user("bob")).await.expect("bob");
    let conv = group(a.id, &[b.id]);
    let id = conv.id;
    store.create_conversation(conv).await.expect("group");

    // What `remove_member` does in its transaction (lock the row by writing it, delete the
    // participant), held open.
    let mut removal = scratch.connection().await;
    removal.execute("BEGIN").await.expect("begin");
    sqlx::query("UPDATE conversations SET last_seq = last_seq WHERE id = $1")
        .bind(id.as_uuid())
        .execute(&mut removal)
        .await
        .expect("lock the conversation");
    sqlx::query("DELETE FROM participants WHERE conversation_id = $1 AND user_id = $2")
        .bind(id.as_uuid())
        .bind(b.id.as_uuid())
        .execute(&mut removal)
        .await
        .expect("remove bob");
    let xid: i64 = sqlx::query("SELECT (pg_current_xact_id()::text::bigint % 4294967296) AS xid")
        .fetch_one(&mut removal)
        .await
        .expect("xid")
        .get("xid");

    let appending = {
        let store = store.clone();
        tokio::spawn(async move { store.append_message(text(id, b.id, "one more", t(5)), Vec::new()).await })
    };
    // Wait until the append is blocked on the removal (no event says so: ask PostgreSQL).
    let mut observer = scratch.connection().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query(
            "SELECT count(*) AS n FROM pg_locks
              WHERE locktype = 'transactionid' AND NOT granted AND transactionid::text::bigint = $1",
        )
        .bind(xid)
        .fetch_one(&mut observer)
        .await
        .expect("pg_locks")
        .get("n");
        if waiting > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the append never waited for the removal");
        tokio::task::yield_now().await;
    }
    removal.execute("COMMIT").await.expect("commit the removal");

    let result = appending.await.expect("task");
    assert!(matches!(result, Ok(Appended::NotMember)), "got {result:?}");
    assert!(store.history(id, HistoryCursor::Latest, 10).await.expect("history").is_empty());
    assert_eq!(store.conversation(id, a.id).await.expect("conversation").expect("exists").last_seq, 0);
    store.close().await;
    scratch.drop().await;
}
