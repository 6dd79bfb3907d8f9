//! The fleet's shared state on a real Redis (`REDIS_URL_TEST`, default
//! `redis://127.0.0.1:6379`): presence counted across instances and released when an
//! instance dies, early call signals taken by any instance, device liveness. Each test
//! uses its own key prefix, so runs never see each other. Ignored by default: CI runs
//! them with `--include-ignored` after starting Redis.

use quckchat_domain::calls::devices::DeviceDirectory;
use quckchat_domain::calls::signals::{PendingSignal, SignalBuffer};
use quckchat_domain::events::{SignalKind, SignalPayload};
use quckchat_domain::presence::PresenceRegistry;
use quckchat_domain::realtime::{Device, DeviceId};
use quckchat_domain::{CallId, UserId};
use quckchat_server::fleet::Fleet;
use quckchat_server::fleet::devices::RedisDevices;
use quckchat_server::fleet::presence::RedisPresence;
use quckchat_server::fleet::signals::RedisSignalBuffer;
use redis::AsyncCommands;

fn redis_url() -> String {
    std::env::var("REDIS_URL_TEST").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Two instances of one fleet (a fresh prefix).
async fn two_instances() -> (Fleet, Fleet) {
    let client = redis::Client::open(redis_url()).expect("REDIS_URL_TEST is a Redis URL");
    let prefix = format!("qctest:{}", uuid::Uuid::now_v7());
    let a = Fleet::join(&client, &prefix).await.expect("Redis answers");
    let b = Fleet::join(&client, &prefix).await.expect("Redis answers");
    (a, b)
}

/// What an instance dying looks like to the others: its heartbeat key expires.
async fn kill(fleet: &Fleet) {
    let mut redis = fleet.redis.clone();
    redis.del::<_, ()>(fleet.instance_key(&fleet.instance)).await.expect("Redis answers");
}

#[tokio::test]
#[ignore = "needs Redis: set REDIS_URL_TEST"]
async fn presence_is_counted_over_every_instance() {
    let (a, b) = two_instances().await;
    let (pa, pb) = (RedisPresence::new(a, "presence"), RedisPresence::new(b, "presence"));
    let user = UserId::new();
    assert!(pa.socket_connected(user).await.unwrap(), "first socket anywhere");
    assert!(!pb.socket_connected(user).await.unwrap(), "a second socket on another instance is not first");
    assert!(!pa.socket_disconnected(user).await.unwrap(), "one socket is still on b");
    assert_eq!(pa.online_among(&[user]).await.unwrap().len(), 1, "instance a sees the socket on b");
    assert!(pb.socket_disconnected(user).await.unwrap(), "last socket anywhere");
    assert!(pa.online_among(&[user]).await.unwrap().is_empty());
    assert!(!pb.socket_disconnected(user).await.unwrap(), "nothing left to count");
}

#[tokio::test]
#[ignore = "needs Redis: set REDIS_URL_TEST"]
async fn a_dead_instance_leaves_nobody_online() {
    let (a, b) = two_instances().await;
    let (pa, pb) = (RedisPresence::new(a.clone(), "presence"), RedisPresence::new(b, "presence"));
    let (stranded, roaming) = (UserId::new(), UserId::new());
    pa.socket_connected(stranded).await.unwrap();
    pa.socket_connected(roaming).await.unwrap();
    kill(&a).await;
    assert!(pb.online_among(&[stranded, roaming]).await.unwrap().is_empty(), "a's sockets no longer count");
    // A user whose sockets died with `a` comes back on `b`: that is a first socket again.
    assert!(pb.socket_connected(roaming).await.unwrap());
}

#[tokio::test]
#[ignore = "needs Redis: set REDIS_URL_TEST"]
async fn early_signals_wait_for_any_instance_in_order_and_are_capped() {
    let (a, b) = two_instances().await;
    let (sa, sb) = (RedisSignalBuffer::new(a), RedisSignalBuffer::new(b));
    let (call, callee, caller) = (CallId::new(), UserId::new(), UserId::new());
    let signal = |n: u32| PendingSignal {
        kind: SignalKind::IceCandidate,
        from: caller,
        payload: SignalPayload(format!("{{\"candidate\":\"c{n}\",\"sdpMid\":\"0\"}}")),
    };
    for n in 0..3 {
        assert!(sa.push(call, callee, signal(n), 3).await.unwrap());
    }
    assert!(!sa.push(call, callee, signal(3), 3).await.unwrap(), "the fourth is refused at a cap of 3");
    let taken = sb.take(call, callee).await.unwrap();
    assert_eq!(taken, vec![signal(0), signal(1), signal(2)], "instance b takes a's signals, in order");
    assert!(sb.take(call, callee).await.unwrap().is_empty(), "taken once");
    sa.push(call, callee, signal(9), 3).await.unwrap();
    sb.clear(call, &[callee, caller]).await.unwrap();
    assert!(sa.take(call, callee).await.unwrap().is_empty(), "cleared for everyone");
}

#[tokio::test]
#[ignore = "needs Redis: set REDIS_URL_TEST"]
async fn devices_live_while_their_instance_does() {
    let (a, b) = two_instances().await;
    let (da, db) = (RedisDevices::new(a.clone()), RedisDevices::new(b));
    let device = Device { user: UserId::new(), id: DeviceId("sid-1".into()) };
    assert!(!db.is_live(&device.id).await.unwrap());
    da.register(&device).await.unwrap();
    assert!(db.is_live(&device.id).await.unwrap(), "b sees a's device");
    kill(&a).await;
    assert!(!db.is_live(&device.id).await.unwrap(), "a device of a dead instance is gone");
    da.unregister(&device).await.unwrap();
}

#[tokio::test]
#[ignore = "needs Redis: set REDIS_URL_TEST"]
async fn a_conversation_turn_is_held_by_one_instance_at_a_time() {
    use quckchat_domain::ConversationId;
    use quckchat_domain::ordering::ConversationOrder;
    use quckchat_server::fleet::order::RedisOrder;

    let (a, b) = two_instances().await;
    let (oa, ob) = (RedisOrder::new(a), RedisOrder::new(b));
    let conversation = ConversationId::new();
    let held_by_a = oa.turn(conversation).await;
    // While a holds the turn, b cannot have it (b keeps retrying for up to 2 s).
    let early = tokio::time::timeout(std::time::Duration::from_millis(300), ob.turn(conversation)).await;
    assert!(early.is_err(), "b got the turn while a held it");
    drop(held_by_a);
    tokio::time::timeout(std::time::Duration::from_secs(5), ob.turn(conversation))
        .await
        .expect("b gets the turn once a lets go");
    // Another conversation is never blocked by this one.
    let _other = tokio::time::timeout(std::time::Duration::from_secs(1), ob.turn(ConversationId::new()))
        .await
        .expect("other conversations go at once");
}

/// Two full servers of one fleet: one SQLite file (shared as two processes would share
/// it), one Redis under a fresh prefix.
async fn two_servers() -> (crate::helpers::TestApp, crate::helpers::TestApp) {
    use crate::helpers::{relaxed, spawn_app_with};
    let prefix = format!("qctest:{}", uuid::Uuid::now_v7());
    let a = spawn_app_with(|c| {
        relaxed(c);
        c.redis_url = Some(redis_url());
        c.redis_prefix = prefix.clone();
    })
    .await;
    let database_url = a.state.config.database_url.clone();
    let b = spawn_app_with(|c| {
        relaxed(c);
        c.redis_url = Some(redis_url());
        c.redis_prefix = prefix.clone();
        c.database_url = database_url;
    })
    .await;
    (a, b)
}

/// Issue 11: a member removed through instance A cannot get one more message stored
/// through instance B, whose hot state had just answered "member" for them; and B stops
/// relaying their typing once the change feed has told it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Redis: set REDIS_URL_TEST"]
async fn a_member_removed_on_one_instance_cannot_send_through_another() {
    use crate::helpers::{T, emit, eventually, ok, refused, send};
    use serde_json::json;

    let (a, b) = two_servers().await;
    let alice = a.register("fleetalice").await;
    let bob = a.register("fleetbob").await;
    let carol = a.register("fleetcarol").await;
    let group = a.group(&alice, &[&bob, &carol]).await;
    let bob_on_b = b.chat(&bob).await;
    // B answers bob's membership from memory from now on.
    send(&bob_on_b, &group, "before").await;
    ok(emit(&bob_on_b, "user:typing", json!({ "conversationId": group })).await);

    let (status, body) = a.delete(&format!("/conversations/{group}/members/{}", bob.id), &alice.token).await;
    assert!(status.is_success(), "alice removes bob on A: {status} {body}");

    let ack = emit(&bob_on_b, "message:send", json!({ "conversationId": group, "content": "after" })).await;
    assert_eq!(refused(&ack), "forbidden", "B must not store a removed member's message: {ack}");
    let history = a.history(&alice, &group, "afterSeq=0&limit=200").await;
    assert_eq!(history.len(), 1, "only the message from before the removal is stored: {history:?}");

    // Typing touches no store: B refuses it once the feed has made it forget.
    eventually("B refuses bob's typing", || async {
        let ack = bob_on_b.emit_with_ack("user:typing", json!({ "conversationId": group }), T).await.expect("ack");
        ack["success"] == json!(false)
    })
    .await;
    a.stop().await;
    b.stop().await;
}
