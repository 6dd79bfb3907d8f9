//! The records of calls: a call, its participants, and their states. The state machine
//! that moves them lives in [`crate::calls`].

use serde::{Deserialize, Serialize};

use crate::ids::{CallId, ConversationId, UserId};
use crate::model::Timestamp;

macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($(#[$vdoc])* $variant),* }

        impl $name {
            /// The stored / wire name.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),* }
            }

            /// Parses the stored / wire name.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some(Self::$variant),)* _ => None }
            }
        }
    };
}

wire_enum!(
    /// Audio only, or audio and video.
    CallKind {
        /// Audio only.
        Audio = "audio",
        /// Audio and video.
        Video = "video",
    }
);

wire_enum!(
    /// Where a call is in its life.
    CallStatus {
        /// Callees are being rung; nobody answered yet.
        Ringing = "ringing",
        /// At least one callee answered.
        Active = "active",
        /// It was active and is over.
        Ended = "ended",
        /// Nobody answered in time.
        Missed = "missed",
        /// Every callee refused.
        Rejected = "rejected",
        /// The callee was already in a call.
        Busy = "busy",
        /// The caller hung up before anyone answered.
        Cancelled = "cancelled",
    }
);

impl CallStatus {
    /// Whether the call is still going (ringing or active).
    pub fn is_live(self) -> bool {
        matches!(self, Self::Ringing | Self::Active)
    }
}

wire_enum!(
    /// Where one participant is.
    ParticipantStatus {
        /// Being rung.
        Ringing = "ringing",
        /// In the call (with one device).
        Joined = "joined",
        /// Was in the call and left.
        Left = "left",
        /// Refused.
        Rejected = "rejected",
        /// Did not answer in time.
        Missed = "missed",
    }
);

/// One participant of a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallParticipant {
    /// The user.
    pub user_id: UserId,
    /// Where they are.
    pub status: ParticipantStatus,
    /// When they joined (last time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub joined_at: Option<Timestamp>,
    /// When they left, refused or missed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub left_at: Option<Timestamp>,
    /// The one device (socket) carrying their media while joined; never shown to clients.
    #[serde(skip)]
    pub device: Option<String>,
}

/// A call (CONTRACT §2 `Call`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Call {
    /// The call's id.
    pub id: CallId,
    /// The conversation it belongs to.
    pub conversation_id: ConversationId,
    /// Who called.
    pub initiator_id: UserId,
    /// Audio or video.
    #[serde(rename = "type")]
    pub kind: CallKind,
    /// Where it is.
    pub status: CallStatus,
    /// Everyone rung, the initiator first.
    pub participants: Vec<CallParticipant>,
    /// When it was placed.
    pub created_at: Timestamp,
    /// When the first callee answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When it ended (any way).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// Seconds from `startedAt` to `endedAt`, for calls that were answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_sec: Option<i64>,
    /// Bumped by every saved change; the store refuses a save from a stale copy.
    #[serde(skip)]
    pub version: i64,
}

impl Call {
    /// The participant entry of `user`.
    pub fn participant(&self, user: UserId) -> Option<&CallParticipant> {
        self.participants.iter().find(|p| p.user_id == user)
    }

    /// The participant entry of `user`, to change it.
    pub fn participant_mut(&mut self, user: UserId) -> Option<&mut CallParticipant> {
        self.participants.iter_mut().find(|p| p.user_id == user)
    }

    /// Users currently joined.
    pub fn joined(&self) -> impl Iterator<Item = &CallParticipant> {
        self.participants.iter().filter(|p| p.status == ParticipantStatus::Joined)
    }

    /// All participant ids.
    pub fn member_ids(&self) -> Vec<UserId> {
        self.participants.iter().map(|p| p.user_id).collect()
    }
}
