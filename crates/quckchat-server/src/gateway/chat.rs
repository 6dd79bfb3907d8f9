//! `/chat` events: each incoming packet is parsed once into a typed [`ChatCommand`],
//! run through the socket's ordered lane and rate limits, handed to the chat service,
//! and acked.

use quckchat_domain::chat::{ClientMessageId, SendMessage};
use quckchat_domain::model::Message;
use quckchat_domain::model::{Attachment, MessageKind};
use quckchat_domain::values::{Emoji, MessageContent};
use quckchat_domain::{ConversationId, MessageId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Event, SocketRef, TryData};

use super::ack::{AckBody, AckError, id, ok_ack, ok_raw, payload};
use super::dispatch::{RateClass, dispatch};
use super::session::{Queued, SocketCtx};
use std::sync::Weak;

use crate::state::AppState;

/// The `/chat` namespace path.
pub const NAMESPACE: &str = "/chat";

/// A client request on `/chat`, parsed and validated.
#[derive(Debug)]
pub enum ChatCommand {
    /// `message:send`
    Send(SendMessage),
    /// `message:edit`
    Edit { message_id: MessageId, content: MessageContent },
    /// `message:delete`
    Delete { message_id: MessageId },
    /// `message:read`
    Read { message_id: MessageId },
    /// `user:typing` (true) / `user:stop-typing` (false)
    Typing { conversation_id: ConversationId, typing: bool },
    /// `reaction:add` (true) / `reaction:remove` (false)
    React { message_id: MessageId, emoji: Emoji, add: bool },
}

/// The events `/chat` understands, with their rate class. Anything else is refused.
pub fn known_event(name: &str) -> Option<(&'static str, RateClass)> {
    Some(match name {
        "message:send" => ("message:send", RateClass::Message),
        "message:edit" => ("message:edit", RateClass::Message),
        "message:delete" => ("message:delete", RateClass::Message),
        "message:read" => ("message:read", RateClass::Other),
        "user:typing" => ("user:typing", RateClass::Typing),
        "user:stop-typing" => ("user:stop-typing", RateClass::Typing),
        "reaction:add" => ("reaction:add", RateClass::Other),
        "reaction:remove" => ("reaction:remove", RateClass::Other),
        _ => return None,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendPayload {
    conversation_id: String,
    #[serde(default)]
    content: Option<String>,
    #[serde(rename = "type", default)]
    kind: Option<MessageKind>,
    #[serde(default)]
    attachments: Option<Vec<Attachment>>,
    #[serde(default)]
    reply_to: Option<String>,
    #[serde(default)]
    client_message_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EditPayload {
    message_id: String,
    content: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageRef {
    message_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConversationRef {
    conversation_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReactionPayload {
    message_id: String,
    emoji: String,
}

impl ChatCommand {
    /// Parses an event and its first argument; every failure is `invalid_payload`.
    pub fn parse(event: &str, data: Value) -> Result<Self, AckError> {
        Ok(match event {
            "message:send" => {
                let p: SendPayload = payload(data)?;
                let attachments = p.attachments.unwrap_or_default();
                SendMessage {
                    conversation_id: id(&p.conversation_id, "conversationId", ConversationId::parse)?,
                    content: MessageContent::parse(p.content.unwrap_or_default(), true)?,
                    kind: p.kind.unwrap_or_default(),
                    attachments,
                    reply_to: p.reply_to.as_deref().map(|r| id(r, "replyTo", MessageId::parse)).transpose()?,
                    client_message_id: p.client_message_id.map(ClientMessageId::parse).transpose()?,
                }
                .validate()
                .map(Self::Send)?
            }
            "message:edit" => {
                let p: EditPayload = payload(data)?;
                Self::Edit {
                    message_id: id(&p.message_id, "messageId", MessageId::parse)?,
                    content: MessageContent::parse(p.content, true)?,
                }
            }
            "message:delete" => {
                let p: MessageRef = payload(data)?;
                Self::Delete { message_id: id(&p.message_id, "messageId", MessageId::parse)? }
            }
            "message:read" => {
                // The client's `conversationId` is ignored: the message's stored conversation counts.
                let p: MessageRef = payload(data)?;
                Self::Read { message_id: id(&p.message_id, "messageId", MessageId::parse)? }
            }
            "user:typing" | "user:stop-typing" => {
                let p: ConversationRef = payload(data)?;
                Self::Typing {
                    conversation_id: id(&p.conversation_id, "conversationId", ConversationId::parse)?,
                    typing: event == "user:typing",
                }
            }
            "reaction:add" | "reaction:remove" => {
                let p: ReactionPayload = payload(data)?;
                Self::React {
                    message_id: id(&p.message_id, "messageId", MessageId::parse)?,
                    emoji: Emoji::parse(p.emoji)?,
                    add: event == "reaction:add",
                }
            }
            other => return Err(AckError::InvalidPayload(format!("unknown event `{other}`"))),
        })
    }
}

/// The ack of `message:send`, serialized straight from the record (no `Value` tree).
#[derive(Serialize)]
struct SentAck<'a> {
    success: bool,
    message: &'a Message,
}

/// Runs one command for the socket's user and builds the success ack.
async fn execute(state: &AppState, ctx: &SocketCtx, command: ChatCommand) -> Result<AckBody, AckError> {
    let chat = &state.chat;
    let actor = ctx.user;
    Ok(match command {
        ChatCommand::Send(cmd) => ok_raw(&SentAck { success: true, message: &chat.send_message(actor, cmd).await? }),
        ChatCommand::Edit { message_id, content } => {
            ok_ack(json!({ "message": chat.edit_message(actor, message_id, content).await? }))
        }
        ChatCommand::Delete { message_id } => {
            let m = chat.delete_message(actor, message_id).await?;
            ok_ack(json!({ "messageId": m.id, "conversationId": m.conversation_id }))
        }
        ChatCommand::Read { message_id } => {
            let r = chat.mark_read(actor, message_id).await?;
            ok_ack(
                json!({ "messageId": r.message_id, "conversationId": r.conversation_id, "seq": r.seq, "readAt": r.read_at }),
            )
        }
        ChatCommand::Typing { conversation_id, typing } => {
            chat.typing(actor, conversation_id, typing).await?;
            ok_ack(json!({ "conversationId": conversation_id }))
        }
        ChatCommand::React { message_id, emoji, add } => ok_ack(chat.react(actor, message_id, emoji, add).await?),
    })
}

/// The one handler of every `/chat` event (registered as the socket's fallback, so
/// unknown events get an answer too).
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
    dispatch(&state, NAMESPACE, socket, &event, ack, queued, route, async move |ctx| {
        let data = data.map_err(|e| AckError::InvalidPayload(format!("unreadable payload: {e}")))?;
        let command = ChatCommand::parse(&name, data)?;
        execute(&st, &ctx, command).await
    })
    .await;
}
