//! The `/webrtc` namespace and the calls REST routes (CONTRACT §2 "Calls and ICE", §3
//! `/webrtc`): what every user's sockets see for each step of a call, and the stored
//! `Call` (`GET /calls/{id}`) after it. Absence is proven with an ack round trip on the
//! observer's own socket (`calls_support::assert_silent`), never with a sleep.

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine;
use hmac::{KeyInit, Mac};
use quckchat_domain::UserId;
use quckchat_domain::call_model::CallKind;
use quckchat_domain::calls::CallTarget;
use quckchat_domain::model::PushKind;
use quckchat_domain::realtime::{Device, DeviceId};
use quckchat_sio_client::Client;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::calls_support::*;
use crate::helpers::*;

fn user_id(user: &TestUser) -> UserId {
    UserId::parse(&user.id).expect("a user id")
}

// ---------------------------------------------------------------------------------------
// The happy path
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_one_to_one_call_rings_every_device_relays_signals_verbatim_and_is_recorded() {
    let app = spawn_app_with(relaxed).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let mut a = webrtc(&app, &alice).await;
    let mut b1 = webrtc(&app, &bob).await;
    let mut b2 = webrtc(&app, &bob).await;

    // Alice calls Bob by user id: the ack names the call, ringing.
    let ack = initiate(&a, json!({ "calleeId": bob.id, "type": "video" })).await;
    let call_id = str_of(&ack["callId"]);
    assert_eq!(ack["status"], json!("ringing"), "{ack}");
    assert_eq!(ack["joinedExisting"], json!(false), "{ack}");
    assert!(ack["iceServers"].is_array(), "the ack carries iceServers: {ack}");
    assert_eq!(ack["call"]["id"], json!(call_id), "{ack}");
    assert_eq!(ack["call"]["initiatorId"], json!(alice.id), "{ack}");

    // Every device of Bob rings.
    let ring1 = expect_call_event(&mut b1, "bob's device 1", "call:incoming", &call_id).await;
    let conv = str_of(&ring1["conversationId"]);
    assert_incoming(&ring1, &call_id, &alice, "video", &conv);
    let ring2 = expect_call_event(&mut b2, "bob's device 2", "call:incoming", &call_id).await;
    assert_incoming(&ring2, &call_id, &alice, "video", &conv);
    assert_eq!(app.single(&alice, &bob).await, conv, "the call is in their single conversation");

    // Device 1 answers: Alice learns it, device 2 stops ringing.
    let ack = answer(&b1, &call_id).await;
    assert_eq!(ack["callId"], json!(call_id), "{ack}");
    assert_eq!(ack["status"], json!("active"), "{ack}");
    assert!(ack["iceServers"].is_array(), "the answer ack carries iceServers: {ack}");
    let answered = expect_call_event(&mut a, "alice", "call:answered", &call_id).await;
    assert_eq!(answered["userId"], json!(bob.id), "{answered}");
    expect_ended(&mut b2, "bob's device 2", &call_id, "answered_elsewhere").await;

    // Device 2 answering afterwards loses.
    let late = emit(&b2, "call:answer", json!({ "callId": call_id })).await;
    assert_eq!(refused(&late), "conflict", "{late}");

    // Offer, answer and candidates are relayed untouched, with the sender named.
    let offer_sdp = json!({
        "type": "offer",
        "sdp": "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=—☎️ ünïcödé 通话\r\nt=0 0\r\n",
        "extra": { "nested": [1, 2.5, null, true, { "deep": "ключ", "emoji": "👩‍👩‍👧" }], "big": 9007199254740991_u64 }
    });
    ok(emit(&a, "offer", json!({ "callId": call_id, "sdp": offer_sdp })).await);
    let got = expect_call_event(&mut b1, "bob's device 1", "offer", &call_id).await;
    assert_eq!(got, json!({ "callId": call_id, "sdp": offer_sdp, "from": alice.id }));

    let answer_sdp = json!("v=0\r\na=ice-ufrag:F7gI\r\na=fingerprint:sha-256 4A:AD:B9 — ñ\r\n");
    ok(emit(&b1, "answer", json!({ "callId": call_id, "sdp": answer_sdp })).await);
    let got = expect_call_event(&mut a, "alice", "answer", &call_id).await;
    assert_eq!(got, json!({ "callId": call_id, "sdp": answer_sdp, "from": bob.id }));

    let cand_a = json!({
        "candidate": "candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 0.0.0.0 rport 0",
        "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": null
    });
    ok(emit(&a, "ice-candidate", json!({ "callId": call_id, "candidate": cand_a })).await);
    let got = expect_call_event(&mut b1, "bob's device 1", "ice-candidate", &call_id).await;
    assert_eq!(got, json!({ "callId": call_id, "candidate": cand_a, "from": alice.id }));

    let cand_b = json!({ "candidate": "candidate:1 1 UDP 2122252543 192.168.1.2 54321 typ host", "sdpMid": "ü", "sdpMLineIndex": 1 });
    ok(emit(&b1, "ice-candidate", json!({ "callId": call_id, "candidate": cand_b })).await);
    let got = expect_call_event(&mut a, "alice", "ice-candidate", &call_id).await;
    assert_eq!(got, json!({ "callId": call_id, "candidate": cand_b, "from": bob.id }));

    // The device that did not answer carries no media: it gets none of the signals.
    assert_none_of(&mut b2, "bob's device 2", SIGNALS).await;

    // Alice hangs up: both sides are told who ended it.
    let ack = ok(emit(&a, "call:end", json!({ "callId": call_id })).await);
    assert_eq!(ack["status"], json!("ended"), "{ack}");
    for (client, who) in [(&mut a, "alice"), (&mut b1, "bob's device 1")] {
        let ended = expect_ended(client, who, &call_id, "ended").await;
        assert_eq!(ended["endedBy"], json!(alice.id), "{who}: {ended}");
    }

    // The record.
    let call = get_call(&app, &bob, &call_id).await;
    assert_eq!(call["id"], json!(call_id), "{call}");
    assert_eq!(call["conversationId"], json!(conv), "{call}");
    assert_eq!(call["initiatorId"], json!(alice.id), "{call}");
    assert_eq!(call["type"], json!("video"), "{call}");
    assert_eq!(call["status"], json!("ended"), "{call}");
    assert_time(&call["createdAt"], "createdAt");
    assert_time(&call["startedAt"], "startedAt");
    assert_time(&call["endedAt"], "endedAt");
    assert!(call["durationSec"].as_i64().is_some_and(|d| d >= 0), "durationSec: {call}");
    assert_eq!(call["participants"].as_array().map(Vec::len), Some(2), "{call}");
    for user in [&alice, &bob] {
        let p = participant(&call, user);
        assert_eq!(p["status"], json!("left"), "{}: {p}", user.username);
        assert_time(&p["joinedAt"], "joinedAt");
        assert_time(&p["leftAt"], "leftAt");
    }
    assert_eq!(get_call(&app, &alice, &call_id).await, call, "both participants see the same record");

    // A second call in the conversation (Bob calls back, then cancels): the history
    // lists the newest first.
    let second = call_user(&b1, &alice, "audio").await;
    expect_call_event(&mut a, "alice", "call:incoming", &second).await;
    ok(emit(&b1, "call:end", json!({ "callId": second })).await);
    expect_ended(&mut a, "alice", &second, "cancelled").await;
    let (status, history) = app.get(&format!("/calls/history/{conv}"), &alice.token).await;
    assert_eq!(status, StatusCode::OK, "{history}");
    let ids: Vec<&Value> = history["data"].as_array().expect("data").iter().map(|c| &c["id"]).collect();
    assert_eq!(ids, vec![&json!(second), &json!(call_id)], "newest first: {history}");
    assert_eq!(history["data"][1], call, "the history holds the same record");
    let (status, page) = app.get(&format!("/calls/history/{conv}?limit=1"), &bob.token).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["data"].as_array().map(Vec::len), Some(1), "limit=1: {page}");
    assert_eq!(page["data"][0]["id"], json!(second), "{page}");
}

// ---------------------------------------------------------------------------------------
// Groups
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_group_call_rings_everyone_introduces_joiners_and_ends_when_fewer_than_two_remain() {
    let app = spawn_app_with(relaxed).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let group = app.group(&alice, &[&bob, &carol]).await;
    let mut a = webrtc(&app, &alice).await;
    let mut b = webrtc(&app, &bob).await;
    let mut c = webrtc(&app, &carol).await;

    let ack = initiate(&a, json!({ "conversationId": group, "type": "audio" })).await;
    let call_id = str_of(&ack["callId"]);
    assert_eq!(ack["status"], json!("ringing"), "{ack}");
    for (client, who) in [(&mut b, "bob"), (&mut c, "carol")] {
        let ring = expect_call_event(client, who, "call:incoming", &call_id).await;
        assert_incoming(&ring, &call_id, &alice, "audio", &group);
    }

    // Bob joins: Alice learns he answered and joined; Bob learns Alice is there.
    answer(&b, &call_id).await;
    let answered = expect_call_event(&mut a, "alice", "call:answered", &call_id).await;
    assert_eq!(answered["userId"], json!(bob.id), "{answered}");
    let joined = expect_call_event(&mut a, "alice", "call:participant-joined", &call_id).await;
    assert_eq!(joined["userId"], json!(bob.id), "{joined}");
    let there = expect_call_event(&mut b, "bob", "call:participant-joined", &call_id).await;
    assert_eq!(there["userId"], json!(alice.id), "{there}");

    // Carol joins second: she is told about each participant already joined.
    answer(&c, &call_id).await;
    let mut met = BTreeSet::new();
    for _ in 0..2 {
        let p = expect_call_event(&mut c, "carol", "call:participant-joined", &call_id).await;
        met.insert(str_of(&p["userId"]));
    }
    assert_eq!(met, BTreeSet::from([alice.id.clone(), bob.id.clone()]), "carol meets alice and bob");
    for (client, who) in [(&mut a, "alice"), (&mut b, "bob")] {
        let p = expect_call_event(client, who, "call:participant-joined", &call_id).await;
        assert_eq!(p["userId"], json!(carol.id), "{who}: {p}");
    }
    assert_none_of(&mut c, "carol", &["call:participant-joined"]).await;

    // A signal addressed with `to` reaches only that participant.
    let sdp = json!({ "type": "offer", "sdp": "v=0\r\ns=for carol only\r\n" });
    ok(emit(&a, "offer", json!({ "callId": call_id, "sdp": sdp, "to": carol.id })).await);
    let got = expect_call_event(&mut c, "carol", "offer", &call_id).await;
    assert_eq!(got, json!({ "callId": call_id, "sdp": sdp, "from": alice.id }));
    assert_none_of(&mut b, "bob", SIGNALS).await;

    // Without `to`, it reaches every other joined participant.
    let cand = json!({ "candidate": "candidate:7 1 udp 1 10.0.0.2 9 typ host", "sdpMid": "0", "sdpMLineIndex": 0 });
    ok(emit(&b, "ice-candidate", json!({ "callId": call_id, "candidate": cand })).await);
    for (client, who) in [(&mut a, "alice"), (&mut c, "carol")] {
        let got = expect_call_event(client, who, "ice-candidate", &call_id).await;
        assert_eq!(got, json!({ "callId": call_id, "candidate": cand, "from": bob.id }), "{who}");
    }

    // Bob leaves: the others are told; the call goes on.
    let ack = ok(emit(&b, "call:end", json!({ "callId": call_id })).await);
    assert_eq!(ack["status"], json!("active"), "{ack}");
    for (client, who) in [(&mut a, "alice"), (&mut c, "carol")] {
        let left = expect_call_event(client, who, "call:participant-left", &call_id).await;
        assert_eq!(left["userId"], json!(bob.id), "{who}: {left}");
    }
    let call = get_call(&app, &carol, &call_id).await;
    assert_eq!(call["status"], json!("active"), "{call}");
    assert_eq!(participant(&call, &bob)["status"], json!("left"), "{call}");
    assert_none_of(&mut a, "alice", &["call:ended"]).await;
    assert_none_of(&mut c, "carol", &["call:ended"]).await;

    // Alice leaves too: only Carol would remain, so the call ends.
    ok(emit(&a, "call:end", json!({ "callId": call_id })).await);
    let ended = expect_ended(&mut c, "carol", &call_id, "ended").await;
    assert_eq!(ended["endedBy"], json!(alice.id), "{ended}");
    expect_ended(&mut a, "alice", &call_id, "ended").await;
    let call = get_call(&app, &alice, &call_id).await;
    assert_eq!(call["status"], json!("ended"), "{call}");
    for user in [&alice, &bob, &carol] {
        assert_eq!(participant(&call, user)["status"], json!("left"), "{}: {call}", user.username);
    }
    assert!(call["durationSec"].as_i64().is_some_and(|d| d >= 0), "{call}");
}

// ---------------------------------------------------------------------------------------
// Who may do what, and malformed input
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn outsiders_and_ringing_callees_are_refused_and_nobody_sees_anything() {
    let app = spawn_app_with(relaxed).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let mallory = app.register("mallory").await;
    let conv = app.single(&alice, &bob).await;
    let mut a = webrtc(&app, &alice).await;
    let mut b = webrtc(&app, &bob).await;
    let m = webrtc(&app, &mallory).await;

    // Mallory cannot call into a conversation she is not in.
    let ack = emit(&m, "call:initiate", json!({ "conversationId": conv, "type": "audio" })).await;
    assert_eq!(refused(&ack), "forbidden", "{ack}");
    assert_silent(&mut a, "alice").await;
    assert_silent(&mut b, "bob").await;

    let call_id = call_user(&a, &bob, "audio").await;
    expect_call_event(&mut b, "bob", "call:incoming", &call_id).await;

    // Mallory cannot touch Alice's call in any way.
    let attempts = [
        ("call:answer", json!({ "callId": call_id })),
        ("call:reject", json!({ "callId": call_id })),
        ("call:end", json!({ "callId": call_id })),
        ("offer", json!({ "callId": call_id, "sdp": { "type": "offer", "sdp": "v=0" } })),
        ("offer", json!({ "callId": call_id, "sdp": "v=0", "to": bob.id })),
        ("answer", json!({ "callId": call_id, "sdp": "v=0" })),
        ("ice-candidate", json!({ "callId": call_id, "candidate": { "candidate": "candidate:1" } })),
        ("mute:audio", json!({ "callId": call_id, "muted": true })),
        ("mute:video", json!({ "callId": call_id, "muted": true })),
    ];
    for (event, payload) in &attempts {
        let ack = emit(&m, event, payload.clone()).await;
        assert_eq!(refused(&ack), "forbidden", "mallory's {event}: {ack}");
    }

    // Bob, still ringing, carries no media yet: he may not signal.
    for (event, payload) in [
        ("offer", json!({ "callId": call_id, "sdp": "v=0" })),
        ("answer", json!({ "callId": call_id, "sdp": "v=0" })),
        ("ice-candidate", json!({ "callId": call_id, "candidate": "candidate:1" })),
    ] {
        let ack = emit(&b, event, payload).await;
        assert_eq!(refused(&ack), "forbidden", "ringing bob's {event}: {ack}");
    }

    assert_silent(&mut a, "alice").await;
    assert_silent(&mut b, "bob").await;
    let call = get_call(&app, &alice, &call_id).await;
    assert_eq!(call["status"], json!("ringing"), "{call}");
    assert_eq!(participant(&call, &alice)["status"], json!("joined"), "{call}");
    assert_eq!(participant(&call, &bob)["status"], json!("ringing"), "{call}");

    // The record is for participants only.
    let (status, body) = app.get(&format!("/calls/{call_id}"), &mallory.token).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = app.get(&format!("/calls/history/{conv}"), &mallory.token).await;
    assert!(
        status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
        "history for a non-member: {status} {body}"
    );
    let (status, body) = app.get(&format!("/calls/{}", unknown_call_id()), &alice.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // The call still works for its participants.
    answer(&b, &call_id).await;
    expect_call_event(&mut a, "alice", "call:answered", &call_id).await;
}

#[tokio::test]
async fn unknown_calls_and_malformed_payloads_are_refused_and_the_socket_stays_usable() {
    let app = spawn_app_with(relaxed).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let conv = app.single(&alice, &bob).await;
    let a = webrtc(&app, &alice).await;
    let mut b = webrtc(&app, &bob).await;

    let unknown = unknown_call_id();
    for (event, payload) in [
        ("call:answer", json!({ "callId": unknown })),
        ("call:reject", json!({ "callId": unknown })),
        ("call:end", json!({ "callId": unknown })),
        ("offer", json!({ "callId": unknown, "sdp": "v=0" })),
        ("answer", json!({ "callId": unknown, "sdp": "v=0" })),
        ("ice-candidate", json!({ "callId": unknown, "candidate": "candidate:1" })),
        ("mute:audio", json!({ "callId": unknown, "muted": true })),
        ("mute:video", json!({ "callId": unknown, "muted": false })),
    ] {
        let ack = emit(&a, event, payload).await;
        assert_eq!(refused(&ack), "not_found", "{event} of an unknown call: {ack}");
    }

    let malformed = [
        ("call:initiate", json!("call bob please")),
        ("call:initiate", json!(42)),
        ("call:initiate", json!({ "calleeId": bob.id })),
        ("call:initiate", json!({ "type": "audio" })),
        ("call:initiate", json!({ "calleeId": bob.id, "type": "hologram" })),
        ("call:initiate", json!({ "calleeId": bob.id, "conversationId": conv, "type": "audio" })),
        ("call:initiate", json!({ "calleeId": "not-a-user-id", "type": "audio" })),
        ("call:initiate", json!({ "conversationId": 7, "type": "audio" })),
        ("call:initiate", json!({ "calleeId": alice.id, "type": "audio" })),
        ("call:answer", json!("nope")),
        ("call:answer", json!({})),
        ("call:answer", json!({ "callId": "not-a-call-id" })),
        ("call:reject", json!({ "callId": 12 })),
        ("call:end", json!([unknown])),
        ("offer", json!({ "callId": unknown })),
        ("offer", json!({ "callId": unknown, "sdp": 42 })),
        ("answer", json!({ "callId": unknown, "sdp": [1, 2] })),
        ("offer", json!({ "sdp": "v=0" })),
        ("ice-candidate", json!({ "callId": unknown, "candidate": true })),
        ("ice-candidate", json!({ "callId": unknown, "candidate": "candidate:1", "to": "nobody" })),
        ("mute:audio", json!({ "callId": unknown })),
        ("mute:video", json!({ "callId": unknown, "muted": "yes" })),
        ("call:hologram", json!({ "callId": unknown })),
    ];
    for (event, payload) in &malformed {
        let ack = emit(&a, event, payload.clone()).await;
        assert_eq!(refused(&ack), "invalid_payload", "{event} {payload}: {ack}");
    }
    // Without an ack callback a malformed event is dropped silently, too.
    a.emit("call:initiate", json!("no ack wanted")).await.expect("emit");
    assert!(a.is_connected(), "the socket survived the malformed payloads");

    // Nobody rang, and the socket still places calls.
    assert_silent(&mut b, "bob").await;
    let call_id = call_user(&a, &bob, "audio").await;
    let ring = expect_call_event(&mut b, "bob", "call:incoming", &call_id).await;
    assert_incoming(&ring, &call_id, &alice, "audio", &conv);
}

// ---------------------------------------------------------------------------------------
// Signals sent before the callee joined
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn signals_sent_while_ringing_reach_the_answering_device_in_order_and_only_it() {
    let app = spawn_app_with(relaxed).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let a = webrtc(&app, &alice).await;
    let mut b1 = webrtc(&app, &bob).await;
    let mut b2 = webrtc(&app, &bob).await;

    let call_id = call_user(&a, &bob, "video").await;
    expect_call_event(&mut b1, "bob's device 1", "call:incoming", &call_id).await;
    expect_call_event(&mut b2, "bob's device 2", "call:incoming", &call_id).await;

    let offer = json!({ "type": "offer", "sdp": "v=0\r\ns=early ☎\r\n" });
    let candidates: Vec<Value> = (0..3)
        .map(|i| json!({ "candidate": format!("candidate:{i} 1 udp {} 10.0.0.{i} 500{i} typ host", 2_000_000_000 - i), "sdpMid": "0", "sdpMLineIndex": i }))
        .collect();
    ok(emit(&a, "offer", json!({ "callId": call_id, "sdp": offer })).await);
    for cand in &candidates {
        ok(emit(&a, "ice-candidate", json!({ "callId": call_id, "candidate": cand })).await);
    }
    // Nothing is delivered while Bob only rings.
    assert_none_of(&mut b1, "bob's device 1", SIGNALS).await;
    assert_none_of(&mut b2, "bob's device 2", SIGNALS).await;

    answer(&b1, &call_id).await;
    let mut signals = Vec::new();
    while signals.len() < 4 {
        let (name, payload) = b1.next_event(T).await.expect("bob's device 1 gets the queued signals");
        if SIGNALS.contains(&name.as_str()) {
            signals.push((name, payload));
        }
    }
    let mut expected = vec![("offer".to_string(), json!({ "callId": call_id, "sdp": offer, "from": alice.id }))];
    expected.extend(
        candidates
            .iter()
            .map(|c| ("ice-candidate".to_string(), json!({ "callId": call_id, "candidate": c, "from": alice.id }))),
    );
    assert_eq!(signals, expected, "the early signals arrive once each, in the order sent");
    assert_none_of(&mut b1, "bob's device 1", SIGNALS).await;

    expect_ended(&mut b2, "bob's device 2", &call_id, "answered_elsewhere").await;
    assert_none_of(&mut b2, "bob's device 2", SIGNALS).await;
}

// ---------------------------------------------------------------------------------------
// How a call ends without being answered
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_rejected_call_tells_the_caller_and_stops_every_device_of_the_callee() {
    let app = spawn_app_with(relaxed).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let mut a = webrtc(&app, &alice).await;
    let mut b1 = webrtc(&app, &bob).await;
    let mut b2 = webrtc(&app, &bob).await;

    let call_id = call_user(&a, &bob, "audio").await;
    expect_call_event(&mut b1, "bob's device 1", "call:incoming", &call_id).await;
    expect_call_event(&mut b2, "bob's device 2", "call:incoming", &call_id).await;

    let ack = ok(emit(&b1, "call:reject", json!({ "callId": call_id })).await);
    assert_eq!(ack["status"], json!("rejected"), "{ack}");
    let rejected = expect_call_event(&mut a, "alice", "call:rejected", &call_id).await;
    assert_eq!(rejected["userId"], json!(bob.id), "{rejected}");
    expect_ended(&mut b1, "bob's device 1", &call_id, "rejected").await;
    expect_ended(&mut b2, "bob's device 2", &call_id, "rejected").await;

    let call = get_call(&app, &alice, &call_id).await;
    assert_eq!(call["status"], json!("rejected"), "{call}");
    assert_eq!(participant(&call, &bob)["status"], json!("rejected"), "{call}");
    assert_time(&call["endedAt"], "endedAt");
    assert_absent(&call["startedAt"], "startedAt of an unanswered call");
    assert_absent(&call["durationSec"], "durationSec of an unanswered call");

    // It is over: answering now is refused, and nothing more is sent.
    let late = emit(&b2, "call:answer", json!({ "callId": call_id })).await;
    assert_eq!(refused(&late), "conflict", "{late}");
}

#[tokio::test]
async fn the_caller_hanging_up_while_ringing_cancels_the_call() {
    let app = spawn_app_with(relaxed).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let mut a = webrtc(&app, &alice).await;
    let mut b1 = webrtc(&app, &bob).await;
    let mut b2 = webrtc(&app, &bob).await;

    let call_id = call_user(&a, &bob, "video").await;
    expect_call_event(&mut b1, "bob's device 1", "call:incoming", &call_id).await;
    expect_call_event(&mut b2, "bob's device 2", "call:incoming", &call_id).await;

    let ack = ok(emit(&a, "call:end", json!({ "callId": call_id })).await);
    assert_eq!(ack["status"], json!("cancelled"), "{ack}");
    for (client, who) in [(&mut b1, "bob's device 1"), (&mut b2, "bob's device 2"), (&mut a, "alice")] {
        let ended = expect_ended(client, who, &call_id, "cancelled").await;
        assert_eq!(ended["endedBy"], json!(alice.id), "{who}: {ended}");
    }

    let call = get_call(&app, &bob, &call_id).await;
    assert_eq!(call["status"], json!("cancelled"), "{call}");
    assert_eq!(participant(&call, &bob)["status"], json!("missed"), "{call}");
    assert_absent(&call["durationSec"], "durationSec of an unanswered call");
    let late = emit(&b1, "call:answer", json!({ "callId": call_id })).await;
    assert_eq!(refused(&late), "conflict", "{late}");
}

#[tokio::test]
async fn an_unanswered_call_is_missed_after_the_ring_timeout() {
    let app = spawn_app_with(|c| {
        relaxed(c);
        c.ring_timeout = Duration::from_millis(300);
    })
    .await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let mut a = webrtc(&app, &alice).await;
    let mut b = webrtc(&app, &bob).await;

    let call_id = call_user(&a, &bob, "audio").await;
    expect_call_event(&mut b, "bob", "call:incoming", &call_id).await;
    expect_ended(&mut a, "alice", &call_id, "missed").await;
    expect_ended(&mut b, "bob", &call_id, "missed").await;

    let call = get_call(&app, &alice, &call_id).await;
    assert_eq!(call["status"], json!("missed"), "{call}");
    assert_eq!(participant(&call, &bob)["status"], json!("missed"), "{call}");
    assert_time(&call["endedAt"], "endedAt");
    assert_absent(&call["durationSec"], "durationSec of a missed call");
}

#[tokio::test]
async fn the_ring_timeout_stops_only_those_still_ringing_in_an_answered_group_call() {
    // Long enough for Bob to answer first on a loaded CI box (his answer is a few store
    // round trips, each several milliseconds on SecantusDB beside other tests), short
    // enough to await.
    let app = spawn_app_with(|c| {
        relaxed(c);
        c.ring_timeout = Duration::from_millis(4000);
    })
    .await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let group = app.group(&alice, &[&bob, &carol]).await;
    let mut a = webrtc(&app, &alice).await;
    let mut b = webrtc(&app, &bob).await;
    let mut c = webrtc(&app, &carol).await;

    let call_id = str_of(&initiate(&a, json!({ "conversationId": group, "type": "audio" })).await["callId"]);
    expect_call_event(&mut b, "bob", "call:incoming", &call_id).await;
    expect_call_event(&mut c, "carol", "call:incoming", &call_id).await;
    answer(&b, &call_id).await;
    expect_call_event(&mut a, "alice", "call:answered", &call_id).await;

    // Carol never answers: her ringing stops; the call between Alice and Bob goes on.
    expect_ended(&mut c, "carol", &call_id, "missed").await;
    assert_none_of(&mut a, "alice", &["call:ended"]).await;
    assert_none_of(&mut b, "bob", &["call:ended"]).await;
    let call = get_call(&app, &alice, &call_id).await;
    assert_eq!(call["status"], json!("active"), "{call}");
    assert_eq!(participant(&call, &carol)["status"], json!("missed"), "{call}");
    assert_eq!(participant(&call, &bob)["status"], json!("joined"), "{call}");

    // The media path still works.
    ok(emit(&a, "offer", json!({ "callId": call_id, "sdp": "v=0" })).await);
    expect_call_event(&mut b, "bob", "offer", &call_id).await;
}

// ---------------------------------------------------------------------------------------
// Busy and glare
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn calling_someone_in_an_active_call_is_busy_and_does_not_ring_them() {
    let app = spawn_app_with(relaxed).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let mut a = webrtc(&app, &alice).await;
    let mut b1 = webrtc(&app, &bob).await;
    let mut b2 = webrtc(&app, &bob).await;
    let mut c = webrtc(&app, &carol).await;

    let first = call_user(&a, &bob, "audio").await;
    expect_call_event(&mut b1, "bob's device 1", "call:incoming", &first).await;
    answer(&b1, &first).await;
    expect_call_event(&mut a, "alice", "call:answered", &first).await;
    expect_ended(&mut b2, "bob's device 2", &first, "answered_elsewhere").await;
    for client in [&mut a, &mut b1, &mut b2] {
        drain(client).await;
    }

    let ack = initiate(&c, json!({ "calleeId": bob.id, "type": "video" })).await;
    assert_eq!(ack["status"], json!("busy"), "{ack}");
    let busy_id = str_of(&ack["callId"]);
    assert_ne!(busy_id, first);
    expect_ended(&mut c, "carol", &busy_id, "busy").await;

    assert_none_of(&mut b1, "bob's device 1", &["call:incoming"]).await;
    assert_none_of(&mut b2, "bob's device 2", &["call:incoming"]).await;
    assert_silent(&mut a, "alice").await;

    let call = get_call(&app, &carol, &busy_id).await;
    assert_eq!(call["status"], json!("busy"), "{call}");
    assert_ne!(participant(&call, &bob)["status"], json!("ringing"), "{call}");
    let first_call = get_call(&app, &alice, &first).await;
    assert_eq!(first_call["status"], json!("active"), "the busy call changed nothing: {first_call}");
}

/// One round of glare: Alice and Bob call each other at the same moment.
async fn glare_round(a: &Client, b: &Client, alice: &TestUser, bob: &TestUser) -> String {
    let (from_a, from_b) = tokio::join!(
        a.emit_with_ack("call:initiate", json!({ "calleeId": bob.id, "type": "audio" }), T),
        b.emit_with_ack("call:initiate", json!({ "calleeId": alice.id, "type": "audio" }), T),
    );
    let (from_a, from_b) = (ok(from_a.expect("alice's ack")), ok(from_b.expect("bob's ack")));
    assert_eq!(from_a["callId"], from_b["callId"], "both end up in the same call: {from_a} / {from_b}");
    let joined: Vec<bool> = [&from_a, &from_b].iter().map(|ack| ack["joinedExisting"] == json!(true)).collect();
    assert_eq!(joined.iter().filter(|j| **j).count(), 1, "exactly one joined the other's call: {from_a} / {from_b}");
    let joiner = if joined[0] { &from_a } else { &from_b };
    assert_eq!(joiner["status"], json!("active"), "{joiner}");
    str_of(&from_a["callId"])
}

#[tokio::test]
async fn two_users_calling_each_other_at_once_meet_in_one_call() {
    let app = spawn_app_with(relaxed).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let mut a = webrtc(&app, &alice).await;
    let mut b = webrtc(&app, &bob).await;

    // The first round also races the creation of their single conversation.
    for round in 0..5 {
        let call_id = glare_round(&a, &b, &alice, &bob).await;
        let call = get_call(&app, &alice, &call_id).await;
        assert_eq!(call["status"], json!("active"), "round {round}: {call}");
        assert_eq!(call["participants"].as_array().map(Vec::len), Some(2), "round {round}: {call}");
        for user in [&alice, &bob] {
            assert_eq!(participant(&call, user)["status"], json!("joined"), "round {round}: {call}");
        }
        // Both sides are told the call was answered, and the media path works both ways.
        expect_call_event(&mut a, "alice", "call:answered", &call_id).await;
        expect_call_event(&mut b, "bob", "call:answered", &call_id).await;
        ok(emit(&a, "offer", json!({ "callId": call_id, "sdp": format!("v=0 round {round}") })).await);
        expect_call_event(&mut b, "bob", "offer", &call_id).await;
        ok(emit(&b, "answer", json!({ "callId": call_id, "sdp": format!("v=0 answer {round}") })).await);
        expect_call_event(&mut a, "alice", "answer", &call_id).await;

        ok(emit(&a, "call:end", json!({ "callId": call_id })).await);
        expect_ended(&mut a, "alice", &call_id, "ended").await;
        expect_ended(&mut b, "bob", &call_id, "ended").await;
        drain(&mut a).await;
        drain(&mut b).await;
    }
    let (status, list) = app.get("/conversations", &alice.token).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(
        list["data"].as_array().map(Vec::len),
        Some(1),
        "one single conversation, however the race went: {list}"
    );
}

// ---------------------------------------------------------------------------------------
// Sockets going away
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_joined_device_dropping_ends_the_call_and_another_device_dropping_does_not() {
    let app = spawn_app_with(relaxed).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let mut a = webrtc(&app, &alice).await;
    let mut b1 = webrtc(&app, &bob).await;
    let mut b2 = webrtc(&app, &bob).await;

    let call_id = call_user(&a, &bob, "audio").await;
    expect_call_event(&mut b1, "bob's device 1", "call:incoming", &call_id).await;
    answer(&b1, &call_id).await;
    expect_call_event(&mut a, "alice", "call:answered", &call_id).await;
    expect_ended(&mut b2, "bob's device 2", &call_id, "answered_elsewhere").await;
    drain(&mut a).await;

    // Bob's other device goes away: the call does not care.
    close_webrtc(&app, b2).await;
    ok(emit(&b1, "offer", json!({ "callId": call_id, "sdp": "v=0 still here" })).await);
    let (name, payload) = a.next_event(T).await.expect("alice gets the offer");
    assert_eq!(name, "offer", "nothing before the offer: {payload}");
    let call = get_call(&app, &alice, &call_id).await;
    assert_eq!(call["status"], json!("active"), "{call}");
    assert_eq!(participant(&call, &bob)["status"], json!("joined"), "{call}");

    // The device carrying Bob's media goes away: Bob has left, and the call is over.
    close_webrtc(&app, b1).await;
    let ended = expect_ended(&mut a, "alice", &call_id, "ended").await;
    assert_eq!(ended["endedBy"], json!(bob.id), "{ended}");
    let call = get_call(&app, &alice, &call_id).await;
    assert_eq!(call["status"], json!("ended"), "{call}");
    assert_eq!(participant(&call, &bob)["status"], json!("left"), "{call}");
    assert!(call["durationSec"].as_i64().is_some(), "{call}");
}

#[tokio::test]
async fn a_group_participant_dropping_leaves_and_the_call_goes_on() {
    let app = spawn_app_with(relaxed).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let group = app.group(&alice, &[&bob, &carol]).await;
    let mut a = webrtc(&app, &alice).await;
    let mut b = webrtc(&app, &bob).await;
    let c = webrtc(&app, &carol).await;

    let call_id = str_of(&initiate(&a, json!({ "conversationId": group, "type": "video" })).await["callId"]);
    answer(&b, &call_id).await;
    answer(&c, &call_id).await;
    for (client, who) in [(&mut a, "alice"), (&mut b, "bob")] {
        client
            .expect_where("call:participant-joined", T, |p| p["userId"] == json!(carol.id))
            .await
            .unwrap_or_else(|e| panic!("{who} sees carol join: {e}"));
    }

    close_webrtc(&app, c).await;
    for (client, who) in [(&mut a, "alice"), (&mut b, "bob")] {
        let left = expect_call_event(client, who, "call:participant-left", &call_id).await;
        assert_eq!(left["userId"], json!(carol.id), "{who}: {left}");
    }
    assert_none_of(&mut a, "alice", &["call:ended"]).await;
    let call = get_call(&app, &alice, &call_id).await;
    assert_eq!(call["status"], json!("active"), "{call}");
    assert_eq!(participant(&call, &carol)["status"], json!("left"), "{call}");
}

// ---------------------------------------------------------------------------------------
// Mute
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn muting_is_told_to_the_other_participants() {
    let app = spawn_app_with(relaxed).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let mut a = webrtc(&app, &alice).await;
    let mut b = webrtc(&app, &bob).await;

    let call_id = call_user(&a, &bob, "video").await;
    answer(&b, &call_id).await;
    expect_call_event(&mut a, "alice", "call:answered", &call_id).await;

    let ack = ok(emit(&a, "mute:audio", json!({ "callId": call_id, "muted": true })).await);
    assert_eq!(ack["muted"], json!(true), "{ack}");
    let muted = expect_call_event(&mut b, "bob", "call:participant-muted", &call_id).await;
    assert_eq!(muted, json!({ "callId": call_id, "userId": alice.id, "kind": "audio", "muted": true }));

    ok(emit(&b, "mute:video", json!({ "callId": call_id, "muted": false })).await);
    let muted = expect_call_event(&mut a, "alice", "call:participant-muted", &call_id).await;
    assert_eq!(muted, json!({ "callId": call_id, "userId": bob.id, "kind": "video", "muted": false }));

    // Nobody is told about their own muting.
    assert_none_of(&mut a, "alice", &["call:participant-muted"]).await;
    assert_none_of(&mut b, "bob", &["call:participant-muted"]).await;
}

// ---------------------------------------------------------------------------------------
// Restarts
// ---------------------------------------------------------------------------------------

/// A device with no socket behind it: the calls service is driven directly, so that no
/// socket closing at shutdown can change the calls before the restart settles them.
fn ghost(user: &TestUser, name: &str) -> Device {
    Device { user: user_id(user), id: DeviceId(format!("ghost-{name}")) }
}

#[tokio::test]
async fn calls_left_ringing_or_active_by_a_stopped_server_are_settled_on_restart() {
    let app = spawn_app_with(relaxed).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let dave = app.register("dave").await;
    let calls = app.state.calls.clone();

    let ringing = calls
        .initiate(&ghost(&alice, "a"), CallTarget::User(user_id(&bob)), CallKind::Audio)
        .await
        .expect("alice calls bob")
        .call
        .id
        .to_string();
    let active = calls
        .initiate(&ghost(&carol, "c"), CallTarget::User(user_id(&dave)), CallKind::Video)
        .await
        .expect("carol calls dave")
        .call
        .id;
    calls.answer(&ghost(&dave, "d"), active).await.expect("dave answers");
    let active = active.to_string();
    drop(calls);
    assert_eq!(get_call(&app, &bob, &ringing).await["status"], json!("ringing"));
    assert_eq!(get_call(&app, &dave, &active).await["status"], json!("active"));

    let dir = app.stop().await;
    let app = spawn_in(dir, relaxed).await;

    let call = get_call(&app, &bob, &ringing).await;
    assert_eq!(call["status"], json!("missed"), "{call}");
    assert_eq!(participant(&call, &bob)["status"], json!("missed"), "{call}");
    assert_ne!(participant(&call, &alice)["status"], json!("joined"), "{call}");
    assert_time(&call["endedAt"], "endedAt");

    let call = get_call(&app, &dave, &active).await;
    assert_eq!(call["status"], json!("ended"), "{call}");
    for user in [&carol, &dave] {
        assert_eq!(participant(&call, user)["status"], json!("left"), "{}: {call}", user.username);
    }
    assert_time(&call["endedAt"], "endedAt");
    assert!(call["durationSec"].as_i64().is_some_and(|d| d >= 0), "{call}");

    // Nothing lingers: the settled users can call again.
    let a = webrtc(&app, &alice).await;
    let mut b = webrtc(&app, &bob).await;
    let again = call_user(&a, &bob, "audio").await;
    assert_ne!(again, ringing);
    expect_call_event(&mut b, "bob", "call:incoming", &again).await;
}

#[tokio::test]
async fn calls_with_connected_sockets_are_not_left_live_by_a_restart() {
    let app = spawn_app_with(relaxed).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let dave = app.register("dave").await;
    let a = webrtc(&app, &alice).await;
    let mut b = webrtc(&app, &bob).await;
    let mut c = webrtc(&app, &carol).await;
    let mut d = webrtc(&app, &dave).await;

    let ringing = call_user(&a, &bob, "audio").await;
    expect_call_event(&mut b, "bob", "call:incoming", &ringing).await;
    let active = call_user(&c, &dave, "video").await;
    answer(&d, &active).await;
    expect_call_event(&mut c, "carol", "call:answered", &active).await;

    // The server stops with every socket still open.
    let dir = app.stop().await;
    for (client, who) in [(&mut b, "bob"), (&mut c, "carol"), (&mut d, "dave")] {
        client.wait_disconnect(T).await.unwrap_or_else(|e| panic!("{who}'s socket is closed by the shutdown: {e}"));
    }
    drop((a, b, c, d));
    let app = spawn_in(dir, relaxed).await;

    // Whether the socket closing (the caller left: cancelled) or the restart (missed)
    // settled it first, the call is no longer ringing.
    let call = get_call(&app, &bob, &ringing).await;
    assert!(call["status"] == json!("missed") || call["status"] == json!("cancelled"), "{call}");
    assert_ne!(participant(&call, &bob)["status"], json!("ringing"), "{call}");
    let call = get_call(&app, &carol, &active).await;
    assert_eq!(call["status"], json!("ended"), "{call}");
}

// ---------------------------------------------------------------------------------------
// Push for callees without a call socket
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_callee_without_a_webrtc_socket_gets_a_call_push_and_a_connected_one_does_not() {
    let app = spawn_app_with(relaxed).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let a = webrtc(&app, &alice).await;
    // A `/chat` socket does not make Bob reachable for calls.
    let _bob_chat = app.chat(&bob).await;

    let pushes = |user: &TestUser| {
        let (store, id) = (app.state.store.clone(), user_id(user));
        async move { store.pushes_for(id).await.expect("the store answers") }
    };

    let call_id = call_user(&a, &bob, "video").await;
    let jobs = pushes(&bob).await;
    assert_eq!(jobs.len(), 1, "one push for the unreachable callee: {jobs:?}");
    let job = &jobs[0];
    assert_eq!(job.kind, PushKind::Call, "{job:?}");
    assert_eq!(job.call_id.as_deref(), Some(call_id.as_str()), "{job:?}");
    assert_eq!(job.sender_id, user_id(&alice), "{job:?}");
    assert_eq!(job.sender_name, "alice display", "{job:?}");
    assert_eq!(job.conversation_id.to_string(), app.single(&alice, &bob).await, "{job:?}");
    assert!(job.message_id.is_none(), "{job:?}");
    assert!(pushes(&alice).await.is_empty(), "no push for the caller");
    ok(emit(&a, "call:end", json!({ "callId": call_id })).await);

    // With a call socket, Bob is rung there and gets no push.
    let mut b = webrtc(&app, &bob).await;
    let second = call_user(&a, &bob, "audio").await;
    expect_call_event(&mut b, "bob", "call:incoming", &second).await;
    let jobs = pushes(&bob).await;
    assert_eq!(jobs.len(), 1, "no new push for a reachable callee: {jobs:?}");
}

// ---------------------------------------------------------------------------------------
// ICE servers
// ---------------------------------------------------------------------------------------

const TURN_SECRET: &str = "n0t-s0-s3cret turn key";

/// `base64(HMAC-SHA1(secret, username))`, computed here independently of the server.
fn turn_credential(secret: &str, username: &str) -> String {
    let mut mac = <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks an `iceServers` list minted for `user` at about `now` (unix seconds).
fn assert_ice_servers(servers: &Value, user: &TestUser, ttl: i64, now: i64) {
    let list = servers.as_array().unwrap_or_else(|| panic!("iceServers is an array: {servers}"));
    assert_eq!(list.len(), 2, "{servers}");
    assert_eq!(list[0], json!({ "urls": ["stun:stun.example.org:3478", "stun:stun2.example.org:19302"] }), "{servers}");
    let turn = &list[1];
    assert_eq!(
        turn["urls"],
        json!(["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"]),
        "{servers}"
    );
    let username = str_of(&turn["username"]);
    let (expiry, who) = username.split_once(':').unwrap_or_else(|| panic!("username is <expiry>:<userId>: {username}"));
    assert_eq!(who, user.id, "{username}");
    let expiry: i64 = expiry.parse().unwrap_or_else(|e| panic!("the expiry is unix seconds ({e}): {username}"));
    assert!((expiry - (now + ttl)).abs() <= 5, "expiry {expiry} is about now ({now}) + ttl ({ttl})");
    assert_eq!(turn["credential"], json!(turn_credential(TURN_SECRET, &username)), "{servers}");
}

#[tokio::test]
async fn ice_servers_carry_turn_rest_credentials_over_http_and_in_call_acks() {
    // The credential function itself, against RFC 2202 test case 2.
    assert_eq!(turn_credential("Jefe", "what do ya want for nothing?"), "7/zfauXrL6LSdBbV8YTfnCWafHk=");

    let app = spawn_app_with(|c| {
        relaxed(c);
        c.stun_urls = vec!["stun:stun.example.org:3478".into(), "stun:stun2.example.org:19302".into()];
        c.turn_urls = vec!["turn:turn.example.org:3478?transport=udp".into(), "turns:turn.example.org:5349".into()];
        c.turn_secret = Some(TURN_SECRET.into());
        c.turn_ttl = Duration::from_secs(600);
    })
    .await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;

    let (status, body) = app.get("/ice-servers", &alice.token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ttl"], json!(600), "{body}");
    assert_ice_servers(&body["iceServers"], &alice, 600, chrono::Utc::now().timestamp());
    let (status, body) = app.api(reqwest::Method::GET, "/ice-servers", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    let a = webrtc(&app, &alice).await;
    let b = webrtc(&app, &bob).await;
    let ack = initiate(&a, json!({ "calleeId": bob.id, "type": "audio" })).await;
    assert_ice_servers(&ack["iceServers"], &alice, 600, chrono::Utc::now().timestamp());
    let ack = answer(&b, &str_of(&ack["callId"])).await;
    assert_ice_servers(&ack["iceServers"], &bob, 600, chrono::Utc::now().timestamp());
}
