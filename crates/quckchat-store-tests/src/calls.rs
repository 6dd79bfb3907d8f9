//! Calls: round trips, optimistic saves (also under concurrency), a conversation's call
//! history, and the live calls of a user and of the whole store.

use std::collections::HashSet;

use quckchat_domain::CallId;
use quckchat_domain::call_model::{Call, CallKind, CallParticipant, CallStatus, ParticipantStatus};

use crate::support::{DynStore, fetch_call, group, new_call, place, sorted, t, user};

/// The ids of `calls`, in order.
fn ids(calls: &[Call]) -> Vec<CallId> {
    calls.iter().map(|c| c.id).collect()
}

/// A call comes back exactly as created: every field, participants in their order
/// (which is not the order of their ids), devices, the version as given, and optional
/// timestamps present or absent.
pub async fn create_and_fetch(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let c = user(&store, "carol").await;
    let conv = group(&store, c.id, &[a.id, b.id], t(0)).await;

    // Ringing: only the initiator has a join time and a device.
    let ringing = new_call(conv, c.id, &[b.id, a.id], CallKind::Video, t(1_001));
    place(&store, ringing.clone()).await;
    let back = fetch_call(&store, ringing.id).await;
    assert_eq!(back, ringing);
    assert_eq!(back.member_ids(), vec![c.id, b.id, a.id], "participants keep the order they were stored in");
    assert_eq!(back.version, 0);
    assert_eq!(back.participants[0].device, ringing.participants[0].device);
    assert_eq!(back.participants[1].device, None);

    // Over: every optional field set, to the millisecond, and a version other than 0.
    let mut over = new_call(conv, a.id, &[c.id, b.id], CallKind::Audio, t(2_003));
    over.status = CallStatus::Ended;
    over.started_at = Some(t(2_507));
    over.ended_at = Some(t(65_509));
    over.duration_sec = Some(63);
    over.version = 7;
    over.participants = vec![
        CallParticipant {
            user_id: a.id,
            status: ParticipantStatus::Left,
            joined_at: Some(t(2_003)),
            left_at: Some(t(65_509)),
            device: Some("socket-a-1".into()),
        },
        CallParticipant {
            user_id: c.id,
            status: ParticipantStatus::Left,
            joined_at: Some(t(2_507)),
            left_at: Some(t(65_401)),
            device: Some("socket-c-9".into()),
        },
        CallParticipant {
            user_id: b.id,
            status: ParticipantStatus::Missed,
            joined_at: None,
            left_at: Some(t(32_003)),
            device: None,
        },
    ];
    place(&store, over.clone()).await;
    let back = fetch_call(&store, over.id).await;
    assert_eq!(back, over);
    assert_eq!(
        (back.started_at, back.ended_at, back.duration_sec, back.version),
        (Some(t(2_507)), Some(t(65_509)), Some(63), 7)
    );
    assert_eq!(back.participants[2].left_at, Some(t(32_003)));

    // The first call is untouched by the second.
    assert_eq!(fetch_call(&store, ringing.id).await, ringing);
}

/// An unknown call id is `None`.
pub async fn unknown_call_is_none(store: DynStore) {
    assert!(store.call(CallId::new()).await.expect("call").is_none());
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let conv = group(&store, a.id, &[b.id], t(0)).await;
    place(&store, new_call(conv, a.id, &[b.id], CallKind::Audio, t(1))).await;
    assert!(store.call(CallId::new()).await.expect("call").is_none());
}

/// Saving from the stored version succeeds and replaces the state and the participants
/// (changed, added, removed, reordered), and the stored version becomes the new one.
pub async fn save_with_current_version(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let c = user(&store, "carol").await;
    let d = user(&store, "dave").await;
    let conv = group(&store, a.id, &[b.id, c.id, d.id], t(0)).await;
    let call = place(&store, new_call(conv, a.id, &[b.id, c.id], CallKind::Video, t(10))).await;

    // Bob answers: the call becomes active.
    let mut answered = call.clone();
    answered.status = CallStatus::Active;
    answered.started_at = Some(t(1_011));
    let bob = answered.participant_mut(b.id).expect("bob rung");
    bob.status = ParticipantStatus::Joined;
    bob.joined_at = Some(t(1_011));
    bob.device = Some("bob-phone".into());
    answered.version = 1;
    assert!(store.save_call(&answered, 0).await.expect("save_call"));
    let back = fetch_call(&store, call.id).await;
    assert_eq!(back, answered);
    assert_eq!(back.status, CallStatus::Active);
    assert_eq!(back.version, 1);

    // Carol refuses, Dave is added, and the list is rewritten in another order.
    let mut changed = back.clone();
    let carol = changed.participant_mut(c.id).expect("carol rung");
    carol.status = ParticipantStatus::Rejected;
    carol.left_at = Some(t(2_013));
    changed.participants.push(CallParticipant {
        user_id: d.id,
        status: ParticipantStatus::Ringing,
        joined_at: None,
        left_at: None,
        device: None,
    });
    changed.participants.swap(1, 2);
    changed.version = 2;
    assert!(store.save_call(&changed, 1).await.expect("save_call"));
    let back = fetch_call(&store, call.id).await;
    assert_eq!(back, changed);
    assert_eq!(back.member_ids(), vec![a.id, c.id, b.id, d.id]);

    // Everyone but Alice is dropped, and the call ends.
    let mut ended = back.clone();
    ended.participants.truncate(1);
    ended.participants[0].status = ParticipantStatus::Left;
    ended.participants[0].left_at = Some(t(9_017));
    ended.participants[0].device = None;
    ended.status = CallStatus::Ended;
    ended.ended_at = Some(t(9_017));
    ended.duration_sec = Some(8);
    ended.version = 3;
    assert!(store.save_call(&ended, 2).await.expect("save_call"));
    let back = fetch_call(&store, call.id).await;
    assert_eq!(back, ended);
    assert_eq!(back.member_ids(), vec![a.id]);
    assert_eq!(back.participants[0].device, None, "a device can be cleared");
}

/// Saving from a stale version returns `false` and changes nothing: neither the state
/// nor the participants nor the version.
pub async fn save_with_stale_version_changes_nothing(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let conv = group(&store, a.id, &[b.id], t(0)).await;
    let call = place(&store, new_call(conv, a.id, &[b.id], CallKind::Audio, t(10))).await;

    let mut first = call.clone();
    first.status = CallStatus::Cancelled;
    first.ended_at = Some(t(500));
    first.participant_mut(b.id).expect("bob").status = ParticipantStatus::Missed;
    first.version = 1;
    assert!(store.save_call(&first, 0).await.expect("save_call"));

    // A second writer still holding version 0.
    let mut stale = call.clone();
    stale.status = CallStatus::Active;
    stale.started_at = Some(t(600));
    stale.participant_mut(b.id).expect("bob").status = ParticipantStatus::Joined;
    stale.participants.pop();
    stale.version = 1;
    assert!(!store.save_call(&stale, 0).await.expect("save_call"));
    assert_eq!(fetch_call(&store, call.id).await, first);

    // An expected version from the future is just as stale.
    stale.version = 6;
    assert!(!store.save_call(&stale, 5).await.expect("save_call"));
    assert_eq!(fetch_call(&store, call.id).await, first);

    // The right version still works afterwards.
    let mut second = first.clone();
    second.version = 2;
    second.duration_sec = Some(0);
    assert!(store.save_call(&second, 1).await.expect("save_call"));
    assert_eq!(fetch_call(&store, call.id).await, second);
}

/// Eight concurrent saves from the same version: exactly one wins, and the stored call
/// is the winner's, whole.
pub async fn concurrent_saves_one_wins(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let c = user(&store, "carol").await;
    let conv = group(&store, a.id, &[b.id, c.id], t(0)).await;
    let call = place(&store, new_call(conv, a.id, &[b.id, c.id], CallKind::Video, t(10))).await;

    let tasks: Vec<_> = (0..8i64)
        .map(|task| {
            let store = store.clone();
            let mut mine = call.clone();
            mine.status = CallStatus::Active;
            mine.started_at = Some(t(100 + task));
            let answering = if task % 2 == 0 { b.id } else { c.id };
            let p = mine.participant_mut(answering).expect("rung");
            p.status = ParticipantStatus::Joined;
            p.joined_at = Some(t(100 + task));
            p.device = Some(format!("device-{task}"));
            mine.version = 1;
            tokio::spawn(async move {
                let saved = store.save_call(&mine, 0).await.expect("save_call");
                (saved, mine)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (saved, mine) = task.await.expect("task");
        if saved {
            winners.push(mine);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one save from version 0 wins");
    assert_eq!(fetch_call(&store, call.id).await, winners[0]);
}

/// A conversation's calls come newest first, older than `before` when given, at most
/// `limit`, complete with participants, and without other conversations' calls.
pub async fn calls_of_conversation_newest_first(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let conv = group(&store, a.id, &[b.id], t(0)).await;
    let other = group(&store, b.id, &[a.id], t(0)).await;

    let mut placed = Vec::new();
    // Placed out of time order, so that the order comes from `created_at`.
    for at in [300, 100, 500, 200, 400] {
        let mut call = new_call(conv, a.id, &[b.id], CallKind::Audio, t(at));
        if at == 200 {
            call.status = CallStatus::Missed;
            call.ended_at = Some(t(230));
            call.participants[1].status = ParticipantStatus::Missed;
        }
        placed.push(place(&store, call).await);
    }
    let elsewhere = place(&store, new_call(other, b.id, &[a.id], CallKind::Video, t(450))).await;
    let by_time = |at: i64| placed.iter().find(|c| c.created_at == t(at)).cloned().expect("placed");

    let all = store.calls_of_conversation(conv, None, 50).await.expect("calls_of_conversation");
    assert_eq!(
        all,
        [500, 400, 300, 200, 100].map(by_time).to_vec(),
        "newest first, whole calls, only this conversation"
    );

    let first_page = store.calls_of_conversation(conv, None, 2).await.expect("calls_of_conversation");
    assert_eq!(ids(&first_page), ids(&[by_time(500), by_time(400)]));

    let next_page =
        store.calls_of_conversation(conv, Some(first_page[1].created_at), 2).await.expect("calls_of_conversation");
    assert_eq!(next_page, vec![by_time(300), by_time(200)]);

    let before_300 = store.calls_of_conversation(conv, Some(t(300)), 10).await.expect("calls_of_conversation");
    assert_eq!(ids(&before_300), ids(&[by_time(200), by_time(100)]), "`before` is exclusive");
    let before_301 = store.calls_of_conversation(conv, Some(t(301)), 1).await.expect("calls_of_conversation");
    assert_eq!(ids(&before_301), vec![by_time(300).id]);
    assert!(store.calls_of_conversation(conv, Some(t(100)), 10).await.expect("calls_of_conversation").is_empty());

    assert_eq!(store.calls_of_conversation(other, None, 10).await.expect("calls_of_conversation"), vec![elsewhere]);
    let empty = group(&store, a.id, &[], t(0)).await;
    assert!(store.calls_of_conversation(empty, None, 10).await.expect("calls_of_conversation").is_empty());
}

/// A user's live calls: ringing or active calls in which they are ringing or joined;
/// not calls that are over, not calls they left or refused, not other people's calls.
pub async fn live_calls_of_user(store: DynStore) {
    let u = user(&store, "ursula").await;
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let conv = group(&store, a.id, &[u.id, b.id], t(0)).await;
    let other = group(&store, b.id, &[u.id, a.id], t(0)).await;

    // Ringing, U being rung.
    let rung = place(&store, new_call(conv, a.id, &[u.id, b.id], CallKind::Audio, t(10))).await;
    // Active, U joined.
    let mut joined = new_call(other, b.id, &[u.id], CallKind::Video, t(20));
    joined.status = CallStatus::Active;
    joined.started_at = Some(t(25));
    joined.participants[1].status = ParticipantStatus::Joined;
    joined.participants[1].joined_at = Some(t(25));
    joined.participants[1].device = Some("u-laptop".into());
    let joined = place(&store, joined).await;
    // Active, U left.
    let mut left = new_call(conv, b.id, &[u.id, a.id], CallKind::Audio, t(30));
    left.status = CallStatus::Active;
    left.started_at = Some(t(31));
    left.participants[1].status = ParticipantStatus::Left;
    left.participants[1].joined_at = Some(t(31));
    left.participants[1].left_at = Some(t(35));
    left.participants[2].status = ParticipantStatus::Joined;
    left.participants[2].joined_at = Some(t(32));
    let left = place(&store, left).await;
    // Ringing, U refused.
    let mut refused = new_call(conv, a.id, &[u.id, b.id], CallKind::Audio, t(40));
    refused.participants[1].status = ParticipantStatus::Rejected;
    refused.participants[1].left_at = Some(t(41));
    let refused = place(&store, refused).await;
    // Over, even though U's entry still says joined.
    let mut ended = new_call(other, u.id, &[b.id], CallKind::Audio, t(50));
    ended.status = CallStatus::Ended;
    ended.started_at = Some(t(51));
    ended.ended_at = Some(t(59));
    ended.duration_sec = Some(0);
    place(&store, ended).await;
    // Missed while U was ringing.
    let mut missed = new_call(conv, a.id, &[u.id], CallKind::Video, t(60));
    missed.status = CallStatus::Missed;
    missed.ended_at = Some(t(90));
    place(&store, missed).await;
    // Live, without U.
    let without_u = place(&store, new_call(conv, a.id, &[b.id], CallKind::Audio, t(70))).await;

    let mut live = store.live_calls_of(u.id).await.expect("live_calls_of");
    live.sort_by_key(|c| c.created_at);
    assert_eq!(live, vec![rung.clone(), joined.clone()], "whole calls");

    let mut of_b = store.live_calls_of(b.id).await.expect("live_calls_of");
    of_b.sort_by_key(|c| c.created_at);
    assert_eq!(
        ids(&of_b),
        vec![rung.id, joined.id, left.id, refused.id, without_u.id],
        "as initiator (joined) and as callee (ringing)"
    );
    let of_a = store.live_calls_of(a.id).await.expect("live_calls_of");
    assert_eq!(sorted(ids(&of_a)), sorted(vec![rung.id, left.id, refused.id, without_u.id]));

    // U answers nothing and the ringing call is cancelled: it is no longer live.
    let mut cancelled = rung.clone();
    cancelled.status = CallStatus::Cancelled;
    cancelled.ended_at = Some(t(100));
    cancelled.version = 1;
    assert!(store.save_call(&cancelled, 0).await.expect("save_call"));
    assert_eq!(ids(&store.live_calls_of(u.id).await.expect("live_calls_of")), vec![joined.id]);

    // U hangs up: nothing live is left for U.
    let mut hung_up = joined.clone();
    hung_up.participants[1].status = ParticipantStatus::Left;
    hung_up.participants[1].left_at = Some(t(110));
    hung_up.participants[1].device = None;
    hung_up.version = 1;
    assert!(store.save_call(&hung_up, 0).await.expect("save_call"));
    assert!(store.live_calls_of(u.id).await.expect("live_calls_of").is_empty());
    let nobody = user(&store, "nobody").await;
    assert!(store.live_calls_of(nobody.id).await.expect("live_calls_of").is_empty());
}

/// Every ringing or active call, whatever its participants say, and none that is over.
pub async fn live_calls_are_ringing_or_active(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let conv = group(&store, a.id, &[b.id], t(0)).await;
    let other = group(&store, b.id, &[a.id], t(0)).await;
    assert!(store.live_calls().await.expect("live_calls").is_empty());

    let mut live = HashSet::new();
    let mut expected = Vec::new();
    for (i, status) in [
        CallStatus::Ringing,
        CallStatus::Active,
        CallStatus::Ended,
        CallStatus::Missed,
        CallStatus::Rejected,
        CallStatus::Busy,
        CallStatus::Cancelled,
    ]
    .into_iter()
    .enumerate()
    {
        for (j, conversation) in [conv, other].into_iter().enumerate() {
            let at = t(10 * i as i64 + j as i64);
            let mut call = new_call(conversation, a.id, &[b.id], CallKind::Audio, at);
            call.status = status;
            if status == CallStatus::Active {
                call.started_at = Some(at);
                call.participants[1].status = ParticipantStatus::Joined;
            }
            if !status.is_live() {
                call.ended_at = Some(at);
            }
            let call = place(&store, call).await;
            if status.is_live() {
                live.insert(call.id);
                expected.push(call);
            }
        }
    }

    let mut found = store.live_calls().await.expect("live_calls");
    assert_eq!(found.len(), 4);
    assert_eq!(found.iter().map(|c| c.id).collect::<HashSet<_>>(), live);
    found.sort_by_key(|c| c.created_at);
    assert_eq!(found, expected, "whole calls");

    // Ending one takes it off the list.
    let mut over = expected[0].clone();
    over.status = CallStatus::Missed;
    over.ended_at = Some(t(1_000));
    over.version = 1;
    assert!(store.save_call(&over, 0).await.expect("save_call"));
    let left = store.live_calls().await.expect("live_calls");
    assert_eq!(sorted(ids(&left)), sorted(ids(&expected[1..])));
}
