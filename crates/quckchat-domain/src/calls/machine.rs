//! The call state machine, pure: each transition checks who may make it, changes the
//! [`Call`], and says what must be told to whom ([`Effect`]). The service loads, applies,
//! saves and delivers; nothing here does I/O, so every rule is tested on its own.
//!
//! ```text
//! ringing ──answer──▶ active ──last but one leaves──▶ ended
//!    │ caller hangs up ▶ cancelled
//!    │ every callee refuses ▶ rejected
//!    │ nobody answers in time ▶ missed
//!    └ (at creation) callee in another call ▶ busy
//! ```

use crate::call_model::{Call, CallStatus, ParticipantStatus};
use crate::error::DomainError;
use crate::events::{EndReason, ServerEvent};
use crate::ids::UserId;
use crate::model::Timestamp;
use crate::realtime::{Audience, DeviceId};

/// The most participants joined at once (a mesh: each sends media to every other).
pub const MAX_JOINED: usize = 6;

/// Something to deliver after a transition is saved. (Effects live for one transition;
/// boxing the event to shrink the enum would buy nothing.)
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Effect {
    /// Send an event.
    Send(Audience, ServerEvent),
    /// Deliver the signals queued for `user` to its newly joined device.
    FlushPending(UserId, DeviceId),
    /// The call is over: drop everything queued for it.
    ClearPending,
}

type Outcome = Result<Vec<Effect>, DomainError>;

fn send(to: Audience, event: ServerEvent) -> Effect {
    Effect::Send(to, event)
}

fn not_participant() -> DomainError {
    DomainError::Forbidden("not a participant of this call")
}

fn over() -> DomainError {
    DomainError::Conflict("the call is over".into())
}

/// Everyone in the call, each as a user audience.
fn to_everyone(call: &Call, event: ServerEvent) -> Vec<Effect> {
    vec![send(Audience::Users(call.member_ids()), event)]
}

/// Ends the call: remaining ringing participants missed it, joined ones left.
fn finish(call: &mut Call, status: CallStatus, now: Timestamp) {
    call.status = status;
    call.ended_at = Some(now);
    if let Some(started) = call.started_at {
        call.duration_sec = Some((now - started).num_seconds().max(0));
    }
    for p in &mut call.participants {
        match p.status {
            ParticipantStatus::Ringing => {
                p.status = ParticipantStatus::Missed;
                p.left_at = Some(now);
            }
            ParticipantStatus::Joined => {
                p.status = ParticipantStatus::Left;
                p.left_at = Some(now);
                p.device = None;
            }
            _ => {}
        }
    }
}

/// A device answers. The first device of a user wins; the user's other devices stop
/// ringing; in a group the joiner learns who is already there.
pub fn answer(call: &mut Call, user: UserId, device: &DeviceId, now: Timestamp) -> Outcome {
    if !call.status.is_live() {
        return Err(over());
    }
    let joined_count = call.joined().count();
    let participant = call.participant(user).ok_or_else(not_participant)?;
    match participant.status {
        ParticipantStatus::Ringing => {}
        ParticipantStatus::Joined if participant.device.as_deref() == Some(device.0.as_str()) => {
            return Ok(Vec::new()); // the same device answering twice changes nothing
        }
        ParticipantStatus::Joined => return Err(DomainError::Conflict("answered on another device".into())),
        // Someone who left, refused or missed may come back while the call goes on.
        _ if call.status == CallStatus::Active => {}
        _ => return Err(DomainError::Conflict("this call can no longer be answered".into())),
    }
    if joined_count >= MAX_JOINED {
        return Err(DomainError::Conflict(format!("the call is full ({MAX_JOINED} joined)")));
    }
    let others_joined: Vec<UserId> = call.joined().map(|p| p.user_id).filter(|u| *u != user).collect();
    let p = call.participant_mut(user).ok_or_else(not_participant)?;
    p.status = ParticipantStatus::Joined;
    p.joined_at = Some(now);
    p.left_at = None;
    p.device = Some(device.0.clone());
    if call.status == CallStatus::Ringing {
        call.status = CallStatus::Active;
        call.started_at = Some(now);
    }
    let id = call.id;
    let mut effects = to_everyone(call, ServerEvent::CallAnswered { call_id: id, user_id: user });
    effects.push(send(
        Audience::UserExceptDevice(user, device.clone()),
        ServerEvent::CallEnded { call_id: id, reason: EndReason::AnsweredElsewhere, ended_by: None },
    ));
    for other in &others_joined {
        effects.push(send(
            Audience::Device(device.clone()),
            ServerEvent::ParticipantJoined { call_id: id, user_id: *other },
        ));
    }
    effects.push(send(Audience::Users(others_joined), ServerEvent::ParticipantJoined { call_id: id, user_id: user }));
    effects.push(Effect::FlushPending(user, device.clone()));
    Ok(effects)
}

/// A callee refuses. The caller learns it; all of the callee's devices stop ringing;
/// when nobody is left to answer, the call is `rejected`.
pub fn reject(call: &mut Call, user: UserId, now: Timestamp) -> Outcome {
    if !call.status.is_live() {
        return Err(over());
    }
    let p = call.participant_mut(user).ok_or_else(not_participant)?;
    if p.status != ParticipantStatus::Ringing {
        return Err(DomainError::Conflict("only a ringing participant can reject".into()));
    }
    p.status = ParticipantStatus::Rejected;
    p.left_at = Some(now);
    let id = call.id;
    let mut effects = vec![
        send(Audience::User(call.initiator_id), ServerEvent::CallRejected { call_id: id, user_id: user }),
        send(
            Audience::User(user),
            ServerEvent::CallEnded { call_id: id, reason: EndReason::Rejected, ended_by: Some(user) },
        ),
    ];
    let still_ringing = call.participants.iter().any(|p| p.status == ParticipantStatus::Ringing);
    if call.status == CallStatus::Ringing && !still_ringing {
        finish(call, CallStatus::Rejected, now);
        effects.push(send(
            Audience::User(call.initiator_id),
            ServerEvent::CallEnded { call_id: id, reason: EndReason::Rejected, ended_by: Some(user) },
        ));
        effects.push(Effect::ClearPending);
    } else if call.status == CallStatus::Active && call.joined().count() < 2 && !still_ringing {
        finish(call, CallStatus::Ended, now);
        effects.extend(to_everyone(
            call,
            ServerEvent::CallEnded { call_id: id, reason: EndReason::Ended, ended_by: Some(user) },
        ));
        effects.push(Effect::ClearPending);
    }
    Ok(effects)
}

/// A user hangs up (`call:end`), or — with `dropped` — the device carrying its media
/// disconnected. The caller hanging up a ringing call cancels it; a ringing callee
/// hanging up refuses; a joined participant leaves, and the call ends when fewer than
/// two remain.
pub fn hang_up(call: &mut Call, user: UserId, dropped: Option<&DeviceId>, now: Timestamp) -> Outcome {
    if !call.status.is_live() {
        return if dropped.is_some() { Ok(Vec::new()) } else { Err(over()) };
    }
    let p = call.participant(user).ok_or_else(not_participant)?;
    if let Some(device) = dropped
        && (p.status != ParticipantStatus::Joined || p.device.as_deref() != Some(device.0.as_str()))
    {
        // Another device of the user went away: the call does not care.
        return Ok(Vec::new());
    }
    let id = call.id;
    match (call.status, p.status) {
        (CallStatus::Ringing, _) if user == call.initiator_id => {
            finish(call, CallStatus::Cancelled, now);
            let mut effects = to_everyone(
                call,
                ServerEvent::CallEnded { call_id: id, reason: EndReason::Cancelled, ended_by: Some(user) },
            );
            effects.push(Effect::ClearPending);
            Ok(effects)
        }
        (_, ParticipantStatus::Ringing) => reject(call, user, now),
        (_, ParticipantStatus::Joined) => {
            let p = call.participant_mut(user).ok_or_else(not_participant)?;
            p.status = ParticipantStatus::Left;
            p.left_at = Some(now);
            p.device = None;
            let remaining: Vec<UserId> = call.joined().map(|p| p.user_id).collect();
            if remaining.len() >= 2 {
                Ok(vec![send(Audience::Users(remaining), ServerEvent::ParticipantLeft { call_id: id, user_id: user })])
            } else {
                finish(call, CallStatus::Ended, now);
                let mut effects = to_everyone(
                    call,
                    ServerEvent::CallEnded { call_id: id, reason: EndReason::Ended, ended_by: Some(user) },
                );
                effects.push(Effect::ClearPending);
                Ok(effects)
            }
        }
        _ => Err(DomainError::Conflict("not in this call".into())),
    }
}

/// The ring timeout fired. A call nobody answered is `missed` for everyone; in a call
/// that goes on, those still ringing stop ringing.
pub fn ring_timeout(call: &mut Call, now: Timestamp) -> Vec<Effect> {
    let id = call.id;
    let missed = ServerEvent::CallEnded { call_id: id, reason: EndReason::Missed, ended_by: None };
    match call.status {
        CallStatus::Ringing => {
            finish(call, CallStatus::Missed, now);
            let mut effects = to_everyone(call, missed);
            effects.push(Effect::ClearPending);
            effects
        }
        CallStatus::Active => {
            let ringing: Vec<UserId> = call
                .participants
                .iter_mut()
                .filter(|p| p.status == ParticipantStatus::Ringing)
                .map(|p| {
                    p.status = ParticipantStatus::Missed;
                    p.left_at = Some(now);
                    p.user_id
                })
                .collect();
            if ringing.is_empty() { Vec::new() } else { vec![send(Audience::Users(ringing), missed)] }
        }
        _ => Vec::new(),
    }
}

/// After a restart nobody is connected any more: a ringing call was missed, an active
/// one ended.
pub fn settle_after_restart(call: &mut Call, now: Timestamp) {
    match call.status {
        CallStatus::Ringing => finish(call, CallStatus::Missed, now),
        CallStatus::Active => finish(call, CallStatus::Ended, now),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call_model::{CallKind, CallParticipant};
    use crate::ids::{CallId, ConversationId};
    use crate::model::now;

    fn dev(s: &str) -> DeviceId {
        DeviceId(s.into())
    }

    fn call_with(caller: UserId, callees: &[UserId]) -> Call {
        let at = now();
        let mut participants = vec![CallParticipant {
            user_id: caller,
            status: ParticipantStatus::Joined,
            joined_at: Some(at),
            left_at: None,
            device: Some("caller-dev".into()),
        }];
        participants.extend(callees.iter().map(|u| CallParticipant {
            user_id: *u,
            status: ParticipantStatus::Ringing,
            joined_at: None,
            left_at: None,
            device: None,
        }));
        Call {
            id: CallId::new(),
            conversation_id: ConversationId::new(),
            initiator_id: caller,
            kind: CallKind::Video,
            status: CallStatus::Ringing,
            participants,
            created_at: at,
            started_at: None,
            ended_at: None,
            duration_sec: None,
            version: 0,
        }
    }

    fn ended_reasons(effects: &[Effect]) -> Vec<EndReason> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send(_, ServerEvent::CallEnded { reason, .. }) => Some(*reason),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn answer_makes_it_active_and_stops_other_devices() {
        let (a, b) = (UserId::new(), UserId::new());
        let mut c = call_with(a, &[b]);
        let fx = answer(&mut c, b, &dev("b1"), now()).unwrap();
        assert_eq!(c.status, CallStatus::Active);
        assert!(c.started_at.is_some());
        assert_eq!(c.participant(b).unwrap().device.as_deref(), Some("b1"));
        assert!(fx.contains(&Effect::Send(
            Audience::UserExceptDevice(b, dev("b1")),
            ServerEvent::CallEnded { call_id: c.id, reason: EndReason::AnsweredElsewhere, ended_by: None }
        )));
        assert!(fx.contains(&Effect::FlushPending(b, dev("b1"))));
        // A second device of the same user loses.
        assert!(matches!(answer(&mut c, b, &dev("b2"), now()), Err(DomainError::Conflict(_))));
        // The same device again is harmless.
        assert!(answer(&mut c, b, &dev("b1"), now()).unwrap().is_empty());
    }

    #[test]
    fn outsiders_are_forbidden() {
        let (a, b, x) = (UserId::new(), UserId::new(), UserId::new());
        let mut c = call_with(a, &[b]);
        assert!(matches!(answer(&mut c, x, &dev("x"), now()), Err(DomainError::Forbidden(_))));
        assert!(matches!(reject(&mut c, x, now()), Err(DomainError::Forbidden(_))));
        assert!(matches!(hang_up(&mut c, x, None, now()), Err(DomainError::Forbidden(_))));
        assert_eq!(c.status, CallStatus::Ringing);
    }

    #[test]
    fn reject_by_the_only_callee_rejects_the_call() {
        let (a, b) = (UserId::new(), UserId::new());
        let mut c = call_with(a, &[b]);
        let fx = reject(&mut c, b, now()).unwrap();
        assert_eq!(c.status, CallStatus::Rejected);
        assert!(
            fx.iter()
                .any(|e| matches!(e, Effect::Send(Audience::User(u), ServerEvent::CallRejected { .. }) if *u == a))
        );
        assert!(c.ended_at.is_some() && c.duration_sec.is_none());
    }

    #[test]
    fn group_reject_keeps_ringing_the_others() {
        let (a, b, d) = (UserId::new(), UserId::new(), UserId::new());
        let mut c = call_with(a, &[b, d]);
        reject(&mut c, b, now()).unwrap();
        assert_eq!(c.status, CallStatus::Ringing);
        reject(&mut c, d, now()).unwrap();
        assert_eq!(c.status, CallStatus::Rejected);
    }

    #[test]
    fn caller_hanging_up_while_ringing_cancels() {
        let (a, b) = (UserId::new(), UserId::new());
        let mut c = call_with(a, &[b]);
        let fx = hang_up(&mut c, a, None, now()).unwrap();
        assert_eq!(c.status, CallStatus::Cancelled);
        assert_eq!(ended_reasons(&fx), vec![EndReason::Cancelled]);
        assert_eq!(c.participant(b).unwrap().status, ParticipantStatus::Missed);
    }

    #[test]
    fn hanging_up_an_active_call_ends_it_with_a_duration() {
        let (a, b) = (UserId::new(), UserId::new());
        let mut c = call_with(a, &[b]);
        let t0 = now();
        answer(&mut c, b, &dev("b1"), t0).unwrap();
        let fx = hang_up(&mut c, b, None, t0 + chrono::Duration::seconds(42)).unwrap();
        assert_eq!(c.status, CallStatus::Ended);
        assert_eq!(c.duration_sec, Some(42));
        assert_eq!(ended_reasons(&fx), vec![EndReason::Ended]);
        assert!(c.participants.iter().all(|p| p.status == ParticipantStatus::Left));
        assert!(matches!(hang_up(&mut c, a, None, now()), Err(DomainError::Conflict(_))));
    }

    #[test]
    fn only_the_joined_device_dropping_counts() {
        let (a, b) = (UserId::new(), UserId::new());
        let mut c = call_with(a, &[b]);
        answer(&mut c, b, &dev("b1"), now()).unwrap();
        assert!(hang_up(&mut c, b, Some(&dev("b2")), now()).unwrap().is_empty());
        assert_eq!(c.status, CallStatus::Active);
        hang_up(&mut c, b, Some(&dev("b1")), now()).unwrap();
        assert_eq!(c.status, CallStatus::Ended);
    }

    #[test]
    fn group_call_goes_on_until_fewer_than_two_remain() {
        let (a, b, d) = (UserId::new(), UserId::new(), UserId::new());
        let mut c = call_with(a, &[b, d]);
        answer(&mut c, b, &dev("b"), now()).unwrap();
        let fx = answer(&mut c, d, &dev("d"), now()).unwrap();
        // d learns that a and b are there.
        let told: Vec<UserId> = fx
            .iter()
            .filter_map(|e| match e {
                Effect::Send(Audience::Device(x), ServerEvent::ParticipantJoined { user_id, .. }) if *x == dev("d") => {
                    Some(*user_id)
                }
                _ => None,
            })
            .collect();
        assert_eq!(told.len(), 2);
        let fx = hang_up(&mut c, a, None, now()).unwrap();
        assert_eq!(c.status, CallStatus::Active);
        assert!(fx.iter().any(|e| matches!(e, Effect::Send(_, ServerEvent::ParticipantLeft { .. }))));
        hang_up(&mut c, b, None, now()).unwrap();
        assert_eq!(c.status, CallStatus::Ended);
    }

    #[test]
    fn ring_timeout_misses_a_ringing_call_and_spares_an_active_one() {
        let (a, b, d) = (UserId::new(), UserId::new(), UserId::new());
        let mut c = call_with(a, &[b]);
        let fx = ring_timeout(&mut c, now());
        assert_eq!(c.status, CallStatus::Missed);
        assert_eq!(ended_reasons(&fx), vec![EndReason::Missed]);

        let mut g = call_with(a, &[b, d]);
        answer(&mut g, b, &dev("b"), now()).unwrap();
        let fx = ring_timeout(&mut g, now());
        assert_eq!(g.status, CallStatus::Active);
        assert_eq!(g.participant(d).unwrap().status, ParticipantStatus::Missed);
        assert_eq!(ended_reasons(&fx), vec![EndReason::Missed]);
        assert!(ring_timeout(&mut g, now()).is_empty());
    }

    #[test]
    fn at_most_six_joined() {
        let a = UserId::new();
        let others: Vec<UserId> = (0..7).map(|_| UserId::new()).collect();
        let mut c = call_with(a, &others);
        for (i, u) in others.iter().take(5).enumerate() {
            answer(&mut c, *u, &dev(&format!("d{i}")), now()).unwrap();
        }
        assert_eq!(c.joined().count(), 6);
        assert!(matches!(answer(&mut c, others[5], &dev("d5"), now()), Err(DomainError::Conflict(_))));
    }

    #[test]
    fn restart_settles_live_calls() {
        let (a, b) = (UserId::new(), UserId::new());
        let mut ringing = call_with(a, &[b]);
        settle_after_restart(&mut ringing, now());
        assert_eq!(ringing.status, CallStatus::Missed);
        let mut active = call_with(a, &[b]);
        answer(&mut active, b, &dev("b"), now()).unwrap();
        settle_after_restart(&mut active, now());
        assert_eq!(active.status, CallStatus::Ended);
        assert!(active.duration_sec.is_some());
    }
}
