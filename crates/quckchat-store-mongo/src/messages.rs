//! Messages, read pointers and receipts, reactions. How an append takes its `seq` is
//! explained in the [crate docs](crate).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use futures_util::TryStreamExt;
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::options::ReturnDocument;
use quckchat_domain::model::{
    Appended, Attachment, Message, MessageKind, NewMessage, PushJob, Reaction, ReadReceipt, Timestamp,
};
use quckchat_domain::store::{HistoryCursor, MessageStore, StoreResult};
use quckchat_domain::{ConversationId, MessageId, StoreError, UserId};
use rand::Rng;

use crate::MongoStore;
use crate::codec::{
    DbId, corrupt, date, db, docs, id, int, is_duplicate, limit, opt_id, opt_id_bson, opt_string, opt_time, string,
    time, ts, violates, wire,
};
use crate::conversations::advance_pointer;
use crate::pushes::{insert_jobs, job_doc};
use crate::{Collections, names};

/// How many times an append tries a seq before giving up. Every lost race means another
/// append took that seq, so this bounds only how long one append may keep losing.
const APPEND_ATTEMPTS: u32 = 1_000;

/// An unfinished append older than this is presumed abandoned (its process died between
/// storing the message and applying its effects) and is finished by whoever meets it.
/// Younger ones are left to their own append, which is finishing them right now.
pub(crate) const UNFINISHED_GRACE: Duration = Duration::from_secs(10);

/// What is projected to take the next seq and to finish an abandoned append.
fn probe_projection() -> Document {
    doc! { "_id": 1, "conversationId": 1, "seq": 1, "senderId": 1, "createdAt": 1, "unfinished": 1 }
}

fn attachments_bson(attachments: &[Attachment]) -> StoreResult<Bson> {
    bson::serialize_to_bson(attachments).map_err(StoreError::backend)
}

/// A message document, its reactions filled in, its readers still to be computed.
fn message_from_doc(doc: &Document) -> StoreResult<Message> {
    let attachments: Vec<Attachment> = match doc.get("attachments") {
        None | Some(Bson::Null) => Vec::new(),
        Some(value) => bson::deserialize_from_bson(value.clone()).map_err(|e| corrupt(format!("attachments: {e}")))?,
    };
    let mut reactions = docs(doc, "reactions")?
        .into_iter()
        .map(|r| Ok((time(r, "at")?, Reaction { emoji: string(r, "emoji")?, user_id: id(r, "userId")? })))
        .collect::<StoreResult<Vec<_>>>()?;
    // Oldest first; a stable sort keeps the order they were added among equal times.
    reactions.sort_by_key(|(at, _)| *at);
    Ok(Message {
        id: id(doc, "_id")?,
        conversation_id: id(doc, "conversationId")?,
        sender_id: id(doc, "senderId")?,
        seq: int(doc, "seq")?,
        kind: wire(doc, "kind", MessageKind::parse)?,
        content: string(doc, "content")?,
        attachments,
        reply_to: opt_id(doc, "replyTo")?,
        client_message_id: opt_string(doc, "clientMessageId")?,
        reactions: reactions.into_iter().map(|(_, r)| r).collect(),
        read_by: Vec::new(),
        created_at: time(doc, "createdAt")?,
        edited_at: opt_time(doc, "editedAt")?,
        deleted_at: opt_time(doc, "deletedAt")?,
    })
}

/// Decodes message documents and fills in their readers: one receipt query (and one
/// aggregation) per conversation involved.
async fn complete(c: &Collections, found: Vec<Document>) -> StoreResult<Vec<Message>> {
    let mut messages = found.iter().map(message_from_doc).collect::<StoreResult<Vec<_>>>()?;
    let mut seq_range: HashMap<ConversationId, (i64, i64)> = HashMap::new();
    for m in &messages {
        let range = seq_range.entry(m.conversation_id).or_insert((m.seq, m.seq));
        *range = (range.0.min(m.seq), range.1.max(m.seq));
    }
    let mut readers: HashMap<ConversationId, Readers> = HashMap::new();
    for (conversation, (low, high)) in seq_range {
        readers.insert(conversation, Readers::load(c, conversation, low, high).await?);
    }
    for m in &mut messages {
        if let Some(r) = readers.get(&m.conversation_id) {
            m.read_by = r.of(m);
        }
    }
    Ok(messages)
}

/// Each reader's receipts in a conversation, enough to answer "when did this user's
/// pointer first reach seq N" for every N in a range.
struct Readers {
    /// Per user: receipts by ascending seq, each with the earliest read time of it and
    /// every later receipt (the suffix minimum).
    by_user: HashMap<UserId, Vec<(i64, Timestamp)>>,
}

impl Readers {
    /// Receipts with seq in `low..=high`, plus, per user, one summary of everything
    /// above `high` (the earliest time the pointer went past it), so that what is read
    /// stays bounded by the page, not by the conversation's length.
    async fn load(c: &Collections, conversation: ConversationId, low: i64, high: i64) -> StoreResult<Self> {
        let in_range: Vec<Document> = c
            .receipts
            .find(doc! { "conversationId": conversation.bson(), "seq": { "$gte": low, "$lte": high } })
            .projection(doc! { "_id": 0, "userId": 1, "seq": 1, "readAt": 1 })
            .await
            .map_err(db)?
            .try_collect()
            .await
            .map_err(db)?;
        let above: Vec<Document> = c
            .receipts
            .aggregate(vec![
                doc! { "$match": { "conversationId": conversation.bson(), "seq": { "$gt": high } } },
                doc! { "$group": { "_id": "$userId", "readAt": { "$min": "$readAt" } } },
            ])
            .await
            .map_err(db)?
            .try_collect()
            .await
            .map_err(db)?;
        let mut by_user: HashMap<UserId, Vec<(i64, Timestamp)>> = HashMap::new();
        for r in &in_range {
            by_user.entry(id(r, "userId")?).or_default().push((int(r, "seq")?, time(r, "readAt")?));
        }
        for r in &above {
            by_user.entry(id(r, "_id")?).or_default().push((high + 1, time(r, "readAt")?));
        }
        for receipts in by_user.values_mut() {
            receipts.sort_unstable();
            let mut earliest: Option<Timestamp> = None;
            for (_, read_at) in receipts.iter_mut().rev() {
                let min = earliest.map_or(*read_at, |e| e.min(*read_at));
                *read_at = min;
                earliest = Some(min);
            }
        }
        Ok(Self { by_user })
    }

    /// Who read `message` (never its sender) and when first, earliest first.
    fn of(&self, message: &Message) -> Vec<ReadReceipt> {
        let mut read_by: Vec<ReadReceipt> = self
            .by_user
            .iter()
            .filter(|(user, _)| **user != message.sender_id)
            .filter_map(|(user, receipts)| {
                let first = receipts.partition_point(|(seq, _)| *seq < message.seq);
                receipts.get(first).map(|(_, read_at)| ReadReceipt { user_id: *user, read_at: *read_at })
            })
            .collect();
        read_by.sort_by_key(|r| (r.read_at, r.user_id));
        read_by
    }
}

/// One message by id, whole.
async fn load(c: &Collections, message: MessageId) -> StoreResult<Option<Message>> {
    let found =
        c.messages.find_one(doc! { "_id": message.bson() }).projection(doc! { "unfinished": 0 }).await.map_err(db)?;
    Ok(complete(c, found.into_iter().collect()).await?.into_iter().next())
}

// ---- appends --------------------------------------------------------------------------

/// What an append still has to do after its message is stored, as recorded in the
/// message's `unfinished` field (atomically with the message itself).
struct Effects {
    message: MessageId,
    conversation: ConversationId,
    sender: UserId,
    seq: i64,
    created_at: Timestamp,
    pushes: Vec<Document>,
}

impl Effects {
    /// The effects recorded in a stored message; `None` when it has none left.
    fn of(doc: &Document) -> StoreResult<Option<Self>> {
        if !matches!(doc.get("unfinished"), Some(Bson::Document(_))) {
            return Ok(None);
        }
        let unfinished = crate::codec::subdoc(doc, "unfinished")?;
        Ok(Some(Self {
            message: id(doc, "_id")?,
            conversation: id(doc, "conversationId")?,
            sender: id(doc, "senderId")?,
            seq: int(doc, "seq")?,
            created_at: time(doc, "createdAt")?,
            pushes: docs(unfinished, "pushes")?.into_iter().cloned().collect(),
        }))
    }

    /// Whether a stored message's effects were recorded longer ago than `grace`.
    fn abandoned(doc: &Document, grace: Duration) -> bool {
        let Ok(unfinished) = crate::codec::subdoc(doc, "unfinished") else {
            return false;
        };
        let Ok(since) = time(unfinished, "since") else {
            return true;
        };
        let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        Utc::now() - since > grace
    }

    /// Applies the effects. Every step is idempotent, so it is safe for several
    /// processes to finish the same append, and for a finish to be cut short and redone:
    /// - the conversation's `lastSeq` / `lastMessageAt` / `lastActivityAt` are set only
    ///   while its `lastSeq` is below this seq (so they describe the newest message);
    /// - the sender's read pointer moves up only (with its receipt when it moves);
    /// - the push jobs are inserted under their own ids, so a second insert of one is a
    ///   duplicate that is ignored;
    /// - then the record of unfinished effects is removed.
    async fn apply(&self, c: &Collections) -> StoreResult<()> {
        c.conversations
            .update_one(
                doc! { "_id": self.conversation.bson(), "lastSeq": { "$lt": self.seq } },
                doc! { "$set": {
                    "lastSeq": self.seq,
                    "lastMessageAt": date(self.created_at),
                    "lastActivityAt": date(self.created_at),
                } },
            )
            .await
            .map_err(db)?;
        // Sending is reading: the sender has seen everything up to their own message.
        advance_pointer(c, self.conversation, self.sender, self.seq, self.created_at).await?;
        insert_jobs(c, self.pushes.clone(), true).await?;
        c.messages
            .update_one(
                doc! { "_id": self.message.bson(), "unfinished": { "$exists": true } },
                doc! { "$unset": { "unfinished": "" } },
            )
            .await
            .map_err(db)?;
        Ok(())
    }
}

/// The stored message of `(sender, clientMessageId)`, its effects finished, whole.
async fn existing(c: &Collections, found: Document) -> StoreResult<Message> {
    if let Some(effects) = Effects::of(&found)? {
        // Its own append may still be finishing it; finishing twice is harmless, and the
        // caller gets a message whose effects are all in place.
        effects.apply(c).await?;
    }
    let message: MessageId = id(&found, "_id")?;
    load(c, message).await?.ok_or(StoreError::NotFound)
}

async fn by_client_id(c: &Collections, sender: UserId, client_id: &str) -> StoreResult<Option<Document>> {
    c.messages.find_one(doc! { "senderId": sender.bson(), "clientMessageId": client_id }).await.map_err(db)
}

/// Waits a little after losing a race for a seq, more the more often it was lost, so
/// that concurrent appenders spread out instead of colliding again at once.
async fn back_off(lost: u32) {
    if lost < 3 {
        tokio::task::yield_now().await;
        return;
    }
    let ceiling = u64::from(lost.min(20));
    let ms = rand::rng().random_range(0..=ceiling);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// An append, or with `abandon` one whose process "dies" right after storing the
/// message (its effects recorded as unfinished `abandon` ago, and not applied).
pub(crate) async fn append(
    c: &Collections,
    new: NewMessage,
    pushes: Vec<PushJob>,
    abandon: Option<Duration>,
) -> StoreResult<Appended> {
    // A retry of something already stored writes nothing.
    if let Some(client_id) = &new.client_message_id
        && let Some(found) = by_client_id(c, new.sender_id, client_id).await?
    {
        return Ok(Appended::Existing(existing(c, found).await?));
    }

    // The store's own membership check (an instance's cached membership may be stale).
    // Read before the insert, not atomically with it (no multi-document transaction
    // here): a removal that commits between the two lets that one message through, the
    // same window as a send that raced the removal.
    let conversation = c
        .conversations
        .find_one(doc! { "_id": new.conversation_id.bson() })
        .projection(doc! { "participants": { "$elemMatch": { "userId": new.sender_id.bson() } } })
        .await
        .map_err(db)?;
    match conversation {
        None => return Err(StoreError::NotFound),
        Some(found) if !found.get_array("participants").is_ok_and(|p| !p.is_empty()) => {
            return Ok(Appended::NotMember);
        }
        Some(_) => {}
    }

    let created_at = ts(new.created_at);
    let attachments = attachments_bson(&new.attachments)?;
    let push_docs: Vec<Document> = pushes.iter().map(job_doc).collect();
    let abandoned_for = chrono::Duration::from_std(abandon.unwrap_or_default()).map_err(StoreError::backend)?;
    let mut lost = 0;
    let seq = loop {
        if lost >= APPEND_ATTEMPTS {
            return Err(StoreError::Conflict(format!(
                "gave up taking a seq in conversation {} after {lost} lost races",
                new.conversation_id
            )));
        }
        // The newest message, read at majority: a seq k is only ever written after
        // k - 1 was seen majority-committed (see the crate docs).
        let top = c
            .messages_majority
            .find_one(doc! { "conversationId": new.conversation_id.bson() })
            .sort(doc! { "seq": -1 })
            .projection(probe_projection())
            .await
            .map_err(db)?;
        let next = match top {
            Some(top) => {
                // An append whose process died before finishing it: finish it now, so
                // that the conversation never lags by more than that one message.
                if Effects::abandoned(&top, UNFINISHED_GRACE)
                    && let Some(effects) = Effects::of(&top)?
                {
                    effects.apply(c).await?;
                }
                int(&top, "seq")? + 1
            }
            None => {
                let exists =
                    c.conversations.count_documents(doc! { "_id": new.conversation_id.bson() }).await.map_err(db)?;
                if exists == 0 {
                    return Err(StoreError::NotFound);
                }
                1
            }
        };
        let mut document = doc! {
            "_id": new.id.bson(),
            "conversationId": new.conversation_id.bson(),
            "seq": next,
            "senderId": new.sender_id.bson(),
            "kind": new.kind.as_str(),
            "content": &new.content,
            "attachments": attachments.clone(),
            "replyTo": opt_id_bson(new.reply_to),
            "createdAt": date(created_at),
            "editedAt": Bson::Null,
            "deletedAt": Bson::Null,
            "reactions": [],
            "unfinished": {
                "since": date(Utc::now() - abandoned_for),
                "pushes": push_docs.clone(),
            },
        };
        // Only messages with a client id carry the field: the unique index on
        // (senderId, clientMessageId) is partial on its existence.
        if let Some(client_id) = &new.client_message_id {
            document.insert("clientMessageId", client_id);
        }
        match c.messages.insert_one(document).await {
            Ok(_) => break next,
            // Someone else stored seq `next` first: take the one after theirs.
            Err(e) if violates(&e, names::MESSAGES_CONVERSATION_SEQ) => {
                lost += 1;
                back_off(lost).await;
            }
            Err(e) if is_duplicate(&e) => {
                // The same (sender, clientMessageId) was stored meanwhile (in this
                // conversation or another): that message is the answer. Otherwise the
                // message id itself is taken, or the server named the index differently:
                // look before concluding.
                if let Some(client_id) = &new.client_message_id
                    && let Some(found) = by_client_id(c, new.sender_id, client_id).await?
                {
                    return Ok(Appended::Existing(existing(c, found).await?));
                }
                let taken = c.messages.count_documents(doc! { "_id": new.id.bson() }).await.map_err(db)?;
                if taken > 0 {
                    return Err(StoreError::Conflict(format!("message id {} is already stored", new.id)));
                }
                lost += 1;
                back_off(lost).await;
            }
            Err(e) => return Err(db(e)),
        }
    };

    if abandon.is_none() {
        Effects {
            message: new.id,
            conversation: new.conversation_id,
            sender: new.sender_id,
            seq,
            created_at,
            pushes: push_docs,
        }
        .apply(c)
        .await?;
    }

    Ok(Appended::Created(Message { created_at, ..new.stored(seq) }))
}

/// Finishes every append left unfinished for longer than `grace` (by processes that
/// died mid-append); returns how many. Run at connect.
pub(crate) async fn finish_abandoned(c: &Collections, grace: Duration) -> StoreResult<usize> {
    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    let cutoff = Utc::now() - grace;
    let found: Vec<Document> = c
        .messages
        .find(doc! { "unfinished": { "$exists": true }, "unfinished.since": { "$lt": date(cutoff) } })
        .projection(probe_projection())
        .sort(doc! { "unfinished.since": 1 })
        .await
        .map_err(db)?
        .try_collect()
        .await
        .map_err(db)?;
    let mut finished = 0;
    for doc in &found {
        if let Some(effects) = Effects::of(doc)? {
            effects.apply(c).await?;
            finished += 1;
        }
    }
    Ok(finished)
}

// ---- reads and changes ----------------------------------------------------------------

#[async_trait]
impl MessageStore for MongoStore {
    async fn append_message(&self, new: NewMessage, pushes: Vec<PushJob>) -> StoreResult<Appended> {
        let c = &self.c;
        append(c, new, pushes, None).await
    }

    async fn message(&self, message: MessageId) -> StoreResult<Option<Message>> {
        let c = &self.c;
        load(c, message).await
    }

    async fn history(
        &self,
        conversation: ConversationId,
        cursor: HistoryCursor,
        max: u32,
    ) -> StoreResult<Vec<Message>> {
        let c = &self.c;
        if max == 0 {
            return Ok(Vec::new());
        }
        let (filter, order) = match cursor {
            HistoryCursor::Latest => (doc! { "conversationId": conversation.bson() }, -1),
            HistoryCursor::Before(anchor) => {
                let anchor = c
                    .messages
                    .find_one(doc! { "_id": anchor.bson(), "conversationId": conversation.bson() })
                    .projection(doc! { "seq": 1 })
                    .await
                    .map_err(db)?;
                let Some(anchor) = anchor else {
                    return Ok(Vec::new());
                };
                (doc! { "conversationId": conversation.bson(), "seq": { "$lt": int(&anchor, "seq")? } }, -1)
            }
            HistoryCursor::AfterSeq(after) => {
                (doc! { "conversationId": conversation.bson(), "seq": { "$gt": after } }, 1)
            }
        };
        let found: Vec<Document> = c
            .messages
            .find(filter)
            .sort(doc! { "seq": order })
            .limit(limit(max))
            .projection(doc! { "unfinished": 0 })
            .await
            .map_err(db)?
            .try_collect()
            .await
            .map_err(db)?;
        complete(c, found).await
    }

    async fn edit_message(&self, message: MessageId, content: &str, at: Timestamp) -> StoreResult<Message> {
        let c = &self.c;
        let edited = c
            .messages
            .find_one_and_update(
                doc! { "_id": message.bson() },
                doc! { "$set": { "content": content, "editedAt": date(at) } },
            )
            .return_document(ReturnDocument::After)
            .projection(doc! { "unfinished": 0 })
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound)?;
        complete(c, vec![edited]).await?.into_iter().next().ok_or(StoreError::NotFound)
    }

    async fn delete_message(&self, message: MessageId, at: Timestamp) -> StoreResult<Message> {
        let c = &self.c;
        // One atomic update (a pipeline, so that the first deletion time is kept): the
        // content, attachments and reactions go together.
        let deleted = c
            .messages
            .find_one_and_update(
                doc! { "_id": message.bson() },
                vec![doc! { "$set": {
                    "content": { "$literal": "" },
                    "attachments": { "$literal": [] },
                    "reactions": { "$literal": [] },
                    "deletedAt": { "$ifNull": ["$deletedAt", date(at)] },
                } }],
            )
            .return_document(ReturnDocument::After)
            .projection(doc! { "unfinished": 0 })
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound)?;
        complete(c, vec![deleted]).await?.into_iter().next().ok_or(StoreError::NotFound)
    }

    async fn mark_read(
        &self,
        conversation: ConversationId,
        user: UserId,
        seq: i64,
        at: Timestamp,
    ) -> StoreResult<bool> {
        let c = &self.c;
        // Never past the newest message: a pointer ahead of it would mark future messages
        // read. A concurrent append only makes the clamp conservative.
        let found = c
            .conversations
            .find_one(doc! { "_id": conversation.bson() })
            .projection(doc! { "lastSeq": 1 })
            .await
            .map_err(db)?;
        let Some(found) = found else {
            return Ok(false);
        };
        let last_seq = int(&found, "lastSeq")?;
        advance_pointer(c, conversation, user, seq.min(last_seq), at).await
    }

    async fn add_reaction(&self, message: MessageId, user: UserId, emoji: &str, at: Timestamp) -> StoreResult<bool> {
        let c = &self.c;
        // The guard and the push are one atomic update: of concurrent identical reactions
        // exactly one is added.
        let done = c
            .messages
            .update_one(
                doc! {
                    "_id": message.bson(),
                    "reactions": { "$not": { "$elemMatch": { "userId": user.bson(), "emoji": emoji } } },
                },
                doc! { "$push": { "reactions": { "emoji": emoji, "userId": user.bson(), "at": date(at) } } },
            )
            .await
            .map_err(db)?;
        if done.modified_count == 1 {
            return Ok(true);
        }
        let exists = c.messages.count_documents(doc! { "_id": message.bson() }).await.map_err(db)?;
        if exists == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(false)
    }

    async fn remove_reaction(&self, message: MessageId, user: UserId, emoji: &str) -> StoreResult<bool> {
        let c = &self.c;
        let done = c
            .messages
            .update_one(
                doc! { "_id": message.bson() },
                doc! { "$pull": { "reactions": { "userId": user.bson(), "emoji": emoji } } },
            )
            .await
            .map_err(db)?;
        Ok(done.modified_count == 1)
    }
}
