//! Events the server pushes to clients. Each variant is one event name of the wire
//! contract; serializing an event gives its payload.

use serde::Serialize;

use crate::call_model::CallKind;
use crate::ids::{CallId, ConversationId, MessageId, UserId};
use crate::model::{Conversation, Message, Timestamp};

/// Which part of the realtime API an event belongs to (a Socket.IO namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Messaging, presence, conversations (`/chat`).
    Chat,
    /// Call set-up and signaling (`/webrtc`).
    Calls,
}

/// Why a call ended for those who get `call:ended`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Hung up after it was answered.
    Ended,
    /// The caller hung up before anyone answered.
    Cancelled,
    /// Nobody answered in time.
    Missed,
    /// The callee refused.
    Rejected,
    /// The callee was in another call.
    Busy,
    /// Another device of the same user answered.
    AnsweredElsewhere,
}

/// What a relayed signaling message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    /// `offer` (its payload field is `sdp`).
    Offer,
    /// `answer` (`sdp`).
    Answer,
    /// `ice-candidate` (`candidate`).
    IceCandidate,
}

impl SignalKind {
    /// The event name.
    pub fn event(self) -> &'static str {
        match self {
            Self::Offer => "offer",
            Self::Answer => "answer",
            Self::IceCandidate => "ice-candidate",
        }
    }

    /// The payload's field name.
    pub fn field(self) -> &'static str {
        match self {
            Self::Offer | Self::Answer => "sdp",
            Self::IceCandidate => "candidate",
        }
    }
}

/// An opaque signaling payload (an SDP or ICE candidate object) as the client sent it,
/// kept as serialized text: the server relays it and never looks inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalPayload(pub String);

/// Something that happened, to be delivered to an [`crate::realtime::Audience`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ServerEvent {
    /// `message:new`
    MessageNew(Message),
    /// `message:updated`
    MessageUpdated(Message),
    /// `message:deleted`
    #[serde(rename_all = "camelCase")]
    MessageDeleted {
        /// The deleted message.
        message_id: MessageId,
        /// Its conversation.
        conversation_id: ConversationId,
    },
    /// `message:read`
    #[serde(rename_all = "camelCase")]
    MessageRead {
        /// Read up to this message.
        message_id: MessageId,
        /// The reader.
        user_id: UserId,
        /// Its conversation.
        conversation_id: ConversationId,
        /// When.
        read_at: Timestamp,
        /// The `seq` of that message.
        seq: i64,
    },
    /// `user:typing`
    #[serde(rename_all = "camelCase")]
    Typing {
        /// Who types.
        user_id: UserId,
        /// Where.
        conversation_id: ConversationId,
    },
    /// `user:stop-typing`
    #[serde(rename_all = "camelCase")]
    StopTyping {
        /// Who stopped.
        user_id: UserId,
        /// Where.
        conversation_id: ConversationId,
    },
    /// `reaction:added`
    ReactionAdded(ReactionChange),
    /// `reaction:removed`
    ReactionRemoved(ReactionChange),
    /// `user:online`
    #[serde(rename_all = "camelCase")]
    UserOnline {
        /// Who came online.
        user_id: UserId,
    },
    /// `user:offline`
    #[serde(rename_all = "camelCase")]
    UserOffline {
        /// Who went offline.
        user_id: UserId,
        /// When the last socket went.
        last_seen: Timestamp,
    },
    /// `conversation:new`: the user was added to (or created) a conversation.
    ConversationNew(Conversation),
    /// `conversation:updated`: name, avatar or members changed.
    ConversationUpdated(Conversation),
    /// `call:incoming`
    #[serde(rename_all = "camelCase")]
    CallIncoming {
        /// The call.
        call_id: CallId,
        /// Who calls.
        caller_id: UserId,
        /// The caller's display name.
        caller_name: String,
        /// Audio or video.
        #[serde(rename = "type")]
        kind: CallKind,
        /// The call's conversation.
        conversation_id: ConversationId,
    },
    /// `call:answered`
    #[serde(rename_all = "camelCase")]
    CallAnswered {
        /// The call.
        call_id: CallId,
        /// Who answered.
        user_id: UserId,
    },
    /// `call:rejected`
    #[serde(rename_all = "camelCase")]
    CallRejected {
        /// The call.
        call_id: CallId,
        /// Who refused.
        user_id: UserId,
    },
    /// `call:ended`
    #[serde(rename_all = "camelCase")]
    CallEnded {
        /// The call.
        call_id: CallId,
        /// Why.
        reason: EndReason,
        /// Who hung up, when someone did.
        #[serde(skip_serializing_if = "Option::is_none")]
        ended_by: Option<UserId>,
    },
    /// `call:participant-joined`
    #[serde(rename_all = "camelCase")]
    ParticipantJoined {
        /// The call.
        call_id: CallId,
        /// Who joined.
        user_id: UserId,
    },
    /// `call:participant-left`
    #[serde(rename_all = "camelCase")]
    ParticipantLeft {
        /// The call.
        call_id: CallId,
        /// Who left.
        user_id: UserId,
    },
    /// `call:participant-muted`
    #[serde(rename_all = "camelCase")]
    ParticipantMuted {
        /// The call.
        call_id: CallId,
        /// Who.
        user_id: UserId,
        /// `audio` or `video`.
        kind: &'static str,
        /// Muted or not.
        muted: bool,
    },
    /// `offer`, `answer`, `ice-candidate`: `{callId, sdp | candidate, from}`. The payload
    /// is raw JSON text, so the transport writes this event itself (see
    /// [`ServerEvent::signal`]).
    #[serde(rename_all = "camelCase")]
    Signal {
        /// Which message.
        #[serde(skip)]
        kind: SignalKind,
        /// The call.
        call_id: CallId,
        /// Who sent it.
        from: UserId,
        /// The SDP or candidate, untouched.
        #[serde(skip)]
        payload: SignalPayload,
    },
    /// `conversation:removed`: the user is no longer a member.
    #[serde(rename_all = "camelCase")]
    ConversationRemoved {
        /// The conversation left.
        conversation_id: ConversationId,
        /// The member who left or was removed.
        user_id: UserId,
    },
}

/// The payload of `reaction:added` / `reaction:removed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReactionChange {
    /// The message.
    pub message_id: MessageId,
    /// Its conversation.
    pub conversation_id: ConversationId,
    /// The emoji.
    pub emoji: String,
    /// Who reacted.
    pub user_id: UserId,
}

impl ServerEvent {
    /// The event's name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Self::MessageNew(_) => "message:new",
            Self::MessageUpdated(_) => "message:updated",
            Self::MessageDeleted { .. } => "message:deleted",
            Self::MessageRead { .. } => "message:read",
            Self::Typing { .. } => "user:typing",
            Self::StopTyping { .. } => "user:stop-typing",
            Self::ReactionAdded(_) => "reaction:added",
            Self::ReactionRemoved(_) => "reaction:removed",
            Self::UserOnline { .. } => "user:online",
            Self::UserOffline { .. } => "user:offline",
            Self::ConversationNew(_) => "conversation:new",
            Self::ConversationUpdated(_) => "conversation:updated",
            Self::ConversationRemoved { .. } => "conversation:removed",
            Self::CallIncoming { .. } => "call:incoming",
            Self::CallAnswered { .. } => "call:answered",
            Self::CallRejected { .. } => "call:rejected",
            Self::CallEnded { .. } => "call:ended",
            Self::ParticipantJoined { .. } => "call:participant-joined",
            Self::ParticipantLeft { .. } => "call:participant-left",
            Self::ParticipantMuted { .. } => "call:participant-muted",
            Self::Signal { kind, .. } => kind.event(),
        }
    }

    /// The channel (namespace) the event belongs to.
    pub fn channel(&self) -> Channel {
        match self {
            Self::CallIncoming { .. }
            | Self::CallAnswered { .. }
            | Self::CallRejected { .. }
            | Self::CallEnded { .. }
            | Self::ParticipantJoined { .. }
            | Self::ParticipantLeft { .. }
            | Self::ParticipantMuted { .. }
            | Self::Signal { .. } => Channel::Calls,
            _ => Channel::Chat,
        }
    }

    /// For a relayed signal: its call, sender, payload field name and raw payload.
    pub fn signal(&self) -> Option<(CallId, UserId, &'static str, &str)> {
        match self {
            Self::Signal { kind, call_id, from, payload } => Some((*call_id, *from, kind.field(), &payload.0)),
            _ => None,
        }
    }
}
