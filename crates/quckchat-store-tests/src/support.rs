//! What the cases share: the store type they receive, and small builders for fixed
//! timestamps, users, conversations, messages and calls.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use quckchat_domain::call_model::{Call, CallKind, CallParticipant, CallStatus, ParticipantStatus};
use quckchat_domain::model::{
    Appended, ConversationKind, Message, MessageKind, NewConversation, NewMessage, NewUser, PushJob, PushKind, Role,
    Timestamp, User,
};
use quckchat_domain::store::CallStore;
use quckchat_domain::store::Store;
use quckchat_domain::{CallId, ConversationId, MessageId, UserId};

/// A backend under test: both halves of the store port. Implemented for every type that
/// implements both, so a backend never names it; an `Arc<MyStore>` coerces to
/// [`DynStore`].
pub trait Backend: Store + CallStore {}

impl<T: Store + CallStore + ?Sized> Backend for T {}

/// A store as the cases receive it.
pub type DynStore = Arc<dyn Backend>;

/// A fixed instant `ms` milliseconds after 2024-01-01T00:00:00.123Z, so that cases can
/// order events without waiting for the clock (the odd milliseconds check precision).
pub fn t(ms: i64) -> Timestamp {
    let base: DateTime<Utc> = Utc.timestamp_millis_opt(1_704_067_200_123).single().expect("base instant is valid");
    base + chrono::Duration::milliseconds(ms)
}

/// Registers a user named `username` (display name "`username` Display") at `t(0)`.
pub async fn user(store: &DynStore, username: &str) -> User {
    store
        .create_user(NewUser {
            id: UserId::new(),
            username: username.to_string(),
            display_name: format!("{username} Display"),
            password_hash: format!("hash-of-{username}"),
            created_at: t(0),
        })
        .await
        .expect("create_user")
}

/// Creates a group made by `creator` (admin) with `members` (members), at `at`.
pub async fn group(store: &DynStore, creator: UserId, members: &[UserId], at: Timestamp) -> ConversationId {
    let id = ConversationId::new();
    let mut participants = vec![(creator, Role::Admin)];
    participants.extend(members.iter().map(|m| (*m, Role::Member)));
    store
        .create_conversation(NewConversation {
            id,
            kind: ConversationKind::Group,
            name: Some("Group".into()),
            avatar: None,
            created_by: creator,
            participants,
            created_at: at,
        })
        .await
        .expect("create group");
    id
}

/// The conversation record for a single between `a` (creator) and `b`.
pub fn new_single(a: UserId, b: UserId, at: Timestamp) -> NewConversation {
    NewConversation {
        id: ConversationId::new(),
        kind: ConversationKind::Single,
        name: None,
        avatar: None,
        created_by: a,
        participants: vec![(a, Role::Member), (b, Role::Member)],
        created_at: at,
    }
}

/// Creates a single conversation between `a` (creator) and `b`, at `at`.
pub async fn single(store: &DynStore, a: UserId, b: UserId, at: Timestamp) -> ConversationId {
    let new = new_single(a, b, at);
    let id = new.id;
    store.create_conversation(new).await.expect("create single");
    id
}

/// A text message, without a client message id.
pub fn text(conversation: ConversationId, sender: UserId, content: &str, at: Timestamp) -> NewMessage {
    NewMessage {
        id: MessageId::new(),
        conversation_id: conversation,
        sender_id: sender,
        kind: MessageKind::Text,
        content: content.to_string(),
        attachments: Vec::new(),
        reply_to: None,
        client_message_id: None,
        created_at: at,
    }
}

/// Appends a text message and insists that it was created.
pub async fn send(
    store: &DynStore,
    conversation: ConversationId,
    sender: UserId,
    content: &str,
    at: Timestamp,
) -> Message {
    created(store.append_message(text(conversation, sender, content, at), Vec::new()).await.expect("append_message"))
}

/// The message of an [`Appended::Created`]; panics on [`Appended::Existing`].
pub fn created(appended: Appended) -> Message {
    match appended {
        Appended::Created(m) => m,
        other => panic!("expected a new message, got {other:?}"),
    }
}

/// A message push job for `user`, queued at `at`.
pub fn message_push(
    user: UserId,
    conversation: ConversationId,
    message: Option<MessageId>,
    sender: UserId,
    at: Timestamp,
) -> PushJob {
    PushJob::new(user, PushKind::Message, conversation, message, None, sender, "Sender".into(), "hello".into(), at)
}

/// The `last_read_seq` of `user` in `conversation`, as `user` sees it.
pub async fn last_read_seq(store: &DynStore, conversation: ConversationId, user: UserId) -> i64 {
    store
        .conversation(conversation, user)
        .await
        .expect("conversation")
        .expect("conversation exists")
        .participant(user)
        .expect("user is a participant")
        .last_read_seq
}

/// Sorts ids so that sets compare regardless of order.
pub fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// A call placed by `initiator` in `conversation` at `at`, ringing `callees`: the
/// initiator joined first (with a device), the callees ringing, in the order given,
/// at version 0.
pub fn new_call(
    conversation: ConversationId,
    initiator: UserId,
    callees: &[UserId],
    kind: CallKind,
    at: Timestamp,
) -> Call {
    let mut participants = vec![CallParticipant {
        user_id: initiator,
        status: ParticipantStatus::Joined,
        joined_at: Some(at),
        left_at: None,
        device: Some(format!("socket-of-{initiator}")),
    }];
    participants.extend(callees.iter().map(|callee| CallParticipant {
        user_id: *callee,
        status: ParticipantStatus::Ringing,
        joined_at: None,
        left_at: None,
        device: None,
    }));
    Call {
        id: CallId::new(),
        conversation_id: conversation,
        initiator_id: initiator,
        kind,
        status: CallStatus::Ringing,
        participants,
        created_at: at,
        started_at: None,
        ended_at: None,
        duration_sec: None,
        version: 0,
    }
}

/// Stores `call` and returns it.
pub async fn place(store: &DynStore, call: Call) -> Call {
    store.create_call(&call).await.expect("create_call");
    call
}

/// A stored call, which must exist.
pub async fn fetch_call(store: &DynStore, id: CallId) -> Call {
    store.call(id).await.expect("call").unwrap_or_else(|| panic!("call {id} is stored"))
}
