//! `/webrtc` events: call set-up and signaling relay. Each packet is parsed once into a
//! [`CallCommand`]; the calls service owns every call's state and decides who may do what.

use std::sync::Arc;

use quckchat_domain::call_model::{Call, CallKind};
use quckchat_domain::calls::CallTarget;
use quckchat_domain::events::{SignalKind, SignalPayload};
use quckchat_domain::realtime::{Device, DeviceId};
use quckchat_domain::{CallId, ConversationId, UserId};
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Event, SocketRef, TryData};

use super::ack::{AckBody, AckError, id, ok_ack, payload};
use super::dispatch::{RateClass, dispatch};
use super::session::{Queued, SocketCtx};
use std::sync::Weak;

use crate::state::AppState;

/// The `/webrtc` namespace path.
pub const NAMESPACE: &str = "/webrtc";

/// The largest SDP accepted, bytes of JSON.
const MAX_SDP_BYTES: usize = 64 * 1024;
/// The largest ICE candidate accepted, bytes of JSON.
const MAX_CANDIDATE_BYTES: usize = 4 * 1024;

/// A client request on `/webrtc`, parsed and validated.
#[derive(Debug)]
pub enum CallCommand {
    /// `call:initiate`
    Initiate { target: CallTarget, kind: CallKind },
    /// `call:answer`
    Answer { call_id: CallId },
    /// `call:reject`
    Reject { call_id: CallId },
    /// `call:end`
    End { call_id: CallId },
    /// `offer`, `answer`, `ice-candidate`
    Relay { call_id: CallId, kind: SignalKind, payload: SignalPayload, to: Option<UserId> },
    /// `mute:audio` / `mute:video`
    Mute { call_id: CallId, video: bool, muted: bool },
}

/// The events `/webrtc` understands, with their rate class.
pub fn known_event(name: &str) -> Option<(&'static str, RateClass)> {
    Some(match name {
        "call:initiate" => ("call:initiate", RateClass::Message),
        "call:answer" => ("call:answer", RateClass::Other),
        "call:reject" => ("call:reject", RateClass::Other),
        "call:end" => ("call:end", RateClass::Other),
        "offer" => ("offer", RateClass::Other),
        "answer" => ("answer", RateClass::Other),
        "ice-candidate" => ("ice-candidate", RateClass::Other),
        "mute:audio" => ("mute:audio", RateClass::Other),
        "mute:video" => ("mute:video", RateClass::Other),
        _ => return None,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InitiatePayload {
    #[serde(default)]
    callee_id: Option<String>,
    #[serde(default)]
    conversation_id: Option<String>,
    #[serde(rename = "type")]
    kind: CallKind,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CallRef {
    call_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RelayPayload {
    call_id: String,
    #[serde(default)]
    sdp: Option<Value>,
    #[serde(default)]
    candidate: Option<Value>,
    #[serde(default)]
    to: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MutePayload {
    call_id: String,
    muted: bool,
}

impl CallCommand {
    /// Parses an event and its first argument; every failure is `invalid_payload`.
    pub fn parse(event: &str, data: Value) -> Result<Self, AckError> {
        Ok(match event {
            "call:initiate" => {
                let p: InitiatePayload = payload(data)?;
                let target = match (p.callee_id, p.conversation_id) {
                    (Some(callee), None) => CallTarget::User(id(&callee, "calleeId", UserId::parse)?),
                    (None, Some(conversation)) => {
                        CallTarget::Conversation(id(&conversation, "conversationId", ConversationId::parse)?)
                    }
                    _ => return Err(AckError::InvalidPayload("give either `calleeId` or `conversationId`".into())),
                };
                Self::Initiate { target, kind: p.kind }
            }
            "call:answer" | "call:reject" | "call:end" => {
                let p: CallRef = payload(data)?;
                let call_id = id(&p.call_id, "callId", CallId::parse)?;
                match event {
                    "call:answer" => Self::Answer { call_id },
                    "call:reject" => Self::Reject { call_id },
                    _ => Self::End { call_id },
                }
            }
            "offer" | "answer" | "ice-candidate" => {
                let p: RelayPayload = payload(data)?;
                let (kind, body, max) = match event {
                    "offer" => (SignalKind::Offer, p.sdp, MAX_SDP_BYTES),
                    "answer" => (SignalKind::Answer, p.sdp, MAX_SDP_BYTES),
                    _ => (SignalKind::IceCandidate, p.candidate, MAX_CANDIDATE_BYTES),
                };
                let body = body.filter(|v| v.is_object() || v.is_string()).ok_or_else(|| {
                    AckError::InvalidPayload(format!("`{}` must be an object or a string", kind.field()))
                })?;
                let text = body.to_string();
                if text.len() > max {
                    return Err(AckError::InvalidPayload(format!("`{}` is larger than {max} bytes", kind.field())));
                }
                Self::Relay {
                    call_id: id(&p.call_id, "callId", CallId::parse)?,
                    kind,
                    payload: SignalPayload(text),
                    to: p.to.as_deref().map(|t| id(t, "to", UserId::parse)).transpose()?,
                }
            }
            "mute:audio" | "mute:video" => {
                let p: MutePayload = payload(data)?;
                Self::Mute {
                    call_id: id(&p.call_id, "callId", CallId::parse)?,
                    video: event == "mute:video",
                    muted: p.muted,
                }
            }
            other => return Err(AckError::InvalidPayload(format!("unknown event `{other}`"))),
        })
    }
}

fn call_ack(state: &AppState, user: UserId, call: &Call, extra: Value) -> AckBody {
    let mut body = json!({ "callId": call.id, "status": call.status, "call": call, "iceServers": state.ice.for_user(user).ice_servers });
    if let (Some(map), Some(more)) = (body.as_object_mut(), extra.as_object()) {
        map.extend(more.clone());
    }
    ok_ack(body)
}

async fn execute(
    state: &AppState,
    ctx: &SocketCtx,
    device: &DeviceId,
    command: CallCommand,
) -> Result<AckBody, AckError> {
    let calls = &state.calls;
    let me = Device { user: ctx.user, id: device.clone() };
    Ok(match command {
        CallCommand::Initiate { target, kind } => {
            let placed = calls.initiate(&me, target, kind).await?;
            call_ack(state, ctx.user, &placed.call, json!({ "joinedExisting": placed.joined_existing }))
        }
        CallCommand::Answer { call_id } => {
            let call = calls.answer(&me, call_id).await?;
            call_ack(state, ctx.user, &call, json!({}))
        }
        CallCommand::Reject { call_id } => {
            let call = calls.reject(ctx.user, call_id).await?;
            ok_ack(json!({ "callId": call.id, "status": call.status }))
        }
        CallCommand::End { call_id } => {
            let call = calls.end(ctx.user, call_id).await?;
            ok_ack(json!({ "callId": call.id, "status": call.status, "durationSec": call.duration_sec }))
        }
        CallCommand::Relay { call_id, kind, payload, to } => {
            calls.relay(&me, call_id, kind, payload, to).await?;
            ok_ack(json!({ "callId": call_id }))
        }
        CallCommand::Mute { call_id, video, muted } => {
            calls.mute(&me, call_id, video, muted).await?;
            ok_ack(json!({ "callId": call_id, "muted": muted }))
        }
    })
}

/// The one handler of every `/webrtc` event.
pub async fn on_event<A: Adapter>(
    state: Weak<AppState>,
    socket: SocketRef<A>,
    Event(event): Event,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
    queued: Queued,
) {
    let Some(state) = state.upgrade() else { return };
    let route = known_event(&event);
    let st = state.clone();
    let name = event.clone();
    let device = DeviceId(socket.id.to_string());
    dispatch(&state, NAMESPACE, socket, &event, ack, queued, route, async move |ctx: Arc<SocketCtx>| {
        let data = data.map_err(|e| AckError::InvalidPayload(format!("unreadable payload: {e}")))?;
        let command = CallCommand::parse(&name, data)?;
        execute(&st, &ctx, &device, command).await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let call = CallId::new();
        assert!(matches!(
            CallCommand::parse("offer", json!({"callId": call, "sdp": {"type": "offer", "sdp": "v=0"}})),
            Ok(CallCommand::Relay { kind: SignalKind::Offer, to: None, .. })
        ));
        assert!(CallCommand::parse("offer", json!({"callId": call})).is_err());
        assert!(CallCommand::parse("ice-candidate", json!({"callId": call, "candidate": 7})).is_err());
        assert!(CallCommand::parse("call:initiate", json!({"type": "audio"})).is_err());
        assert!(CallCommand::parse("call:initiate", json!({"calleeId": UserId::new(), "type": "hologram"})).is_err());
        assert!(CallCommand::parse("call:answer", json!("nope")).is_err());
        let huge = "x".repeat(MAX_CANDIDATE_BYTES + 1);
        assert!(CallCommand::parse("ice-candidate", json!({"callId": call, "candidate": huge})).is_err());
    }
}
