//! Conversations and their participants.
//!
//! A conversation is one document with its participants embedded as an array, in the
//! order they joined: creating a conversation with its members is one atomic insert,
//! and membership changes are single-document updates (`$push` guarded by "not yet a
//! member" and "the actor is an admin"; a removal with its promotion as one conditional
//! `$set` of the whole array) that the server applies atomically, so concurrent changes
//! from any process cannot half-apply, add a member twice or leave a group without an
//! admin.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use quckchat_domain::model::{Conversation, ConversationKind, NewConversation, Participant, Removal, Role, Timestamp};
use quckchat_domain::store::{ConversationStore, StoreResult};
use quckchat_domain::{ConversationId, StoreError, UserId};

use crate::MongoStore;
use crate::codec::{DbId, corrupt, date, db, docs, id, int, is_duplicate, limit, opt_string, opt_time, time, wire};
use crate::{Collections, names};

/// The key that makes a single conversation unique per pair, whichever way round.
pub(crate) fn single_key(a: UserId, b: UserId) -> String {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    format!("{low}:{high}")
}

fn role(s: &str) -> StoreResult<Role> {
    Role::parse(s).ok_or_else(|| corrupt(format!("role {s:?}")))
}

fn participant_doc(user: UserId, role: Role, at: Timestamp) -> Document {
    doc! {
        "userId": user.bson(),
        "role": role.as_str(),
        "joinedAt": date(at),
        "lastReadSeq": 0_i64,
    }
}

/// A conversation document as `viewer` sees it, with `unread` their unread count.
/// Participants are listed creator first, then by join time, then in the order they
/// were added (the array's order).
fn conversation_from_doc(doc: &Document, unread: i64) -> StoreResult<Conversation> {
    let created_by: UserId = id(doc, "createdBy")?;
    let mut participants = docs(doc, "participants")?
        .into_iter()
        .map(|p| {
            Ok(Participant {
                user_id: id(p, "userId")?,
                role: role(&crate::codec::string(p, "role")?)?,
                joined_at: time(p, "joinedAt")?,
                last_read_seq: int(p, "lastReadSeq")?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    // A stable sort keeps the array's order among equals.
    participants.sort_by_key(|p| (p.user_id != created_by, p.joined_at));
    Ok(Conversation {
        id: id(doc, "_id")?,
        kind: wire(doc, "kind", ConversationKind::parse)?,
        name: opt_string(doc, "name")?,
        avatar: opt_string(doc, "avatar")?,
        participants,
        created_by,
        created_at: time(doc, "createdAt")?,
        last_message_at: opt_time(doc, "lastMessageAt")?,
        last_seq: int(doc, "lastSeq")?,
        unread_count: unread,
    })
}

/// The viewer's read pointer in a conversation document, when a member.
fn pointer_of(doc: &Document, viewer: UserId) -> StoreResult<Option<i64>> {
    for p in docs(doc, "participants")? {
        if id::<UserId>(p, "userId")? == viewer {
            return Ok(Some(int(p, "lastReadSeq")?));
        }
    }
    Ok(None)
}

/// The unread counts of `viewer` in each of `conversations`: messages from others after
/// the viewer's pointer, not deleted. One aggregation for all of them.
async fn unread_counts(
    c: &Collections,
    conversations: &[Document],
    viewer: UserId,
) -> StoreResult<HashMap<ConversationId, i64>> {
    let mut branches = Vec::new();
    for conversation in conversations {
        if let Some(pointer) = pointer_of(conversation, viewer)? {
            let id: ConversationId = id(conversation, "_id")?;
            branches.push(Bson::Document(doc! { "conversationId": id.bson(), "seq": { "$gt": pointer } }));
        }
    }
    if branches.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<Document> = c
        .messages
        .aggregate(vec![
            doc! { "$match": {
                "$or": branches,
                "senderId": { "$ne": viewer.bson() },
                "deletedAt": Bson::Null,
            } },
            doc! { "$group": { "_id": "$conversationId", "n": { "$sum": 1 } } },
        ])
        .await
        .map_err(db)?
        .try_collect()
        .await
        .map_err(db)?;
    rows.iter().map(|row| Ok((id(row, "_id")?, int(row, "n")?))).collect()
}

/// Conversation documents as `viewer` sees them, in the order given.
async fn as_seen_by(c: &Collections, found: Vec<Document>, viewer: UserId) -> StoreResult<Vec<Conversation>> {
    let unread = unread_counts(c, &found, viewer).await?;
    found
        .iter()
        .map(|doc| {
            let id: ConversationId = id(doc, "_id")?;
            conversation_from_doc(doc, unread.get(&id).copied().unwrap_or(0))
        })
        .collect()
}

/// How many times a membership change retries after losing a race for the document.
const MEMBERSHIP_ATTEMPTS: u32 = 100;

/// The filter "`user` is an admin of this conversation document".
fn admin_filter(user: UserId) -> Document {
    doc! { "$elemMatch": { "userId": user.bson(), "role": Role::Admin.as_str() } }
}

/// Moves `user`'s pointer in `conversation` up to `seq` and records the receipt, when
/// that is a move up; returns whether it moved. The guard ("below `seq`") and the move
/// are one atomic update of the conversation document, so of concurrent moves each
/// sees the one before it and a pointer never goes down.
pub(crate) async fn advance_pointer(
    c: &Collections,
    conversation: ConversationId,
    user: UserId,
    seq: i64,
    at: Timestamp,
) -> StoreResult<bool> {
    let moved = c
        .conversations
        .update_one(
            doc! {
                "_id": conversation.bson(),
                "participants": { "$elemMatch": { "userId": user.bson(), "lastReadSeq": { "$lt": seq } } },
            },
            doc! { "$set": { "participants.$.lastReadSeq": seq } },
        )
        .await
        .map_err(db)?;
    if moved.modified_count == 0 {
        return Ok(false);
    }
    c.receipts
        .insert_one(doc! {
            "conversationId": conversation.bson(),
            "userId": user.bson(),
            "seq": seq,
            "readAt": date(at),
        })
        .await
        .map_err(db)?;
    Ok(true)
}

#[async_trait]
impl ConversationStore for MongoStore {
    async fn create_conversation(&self, new: NewConversation) -> StoreResult<()> {
        let c = &self.c;
        let key = match (new.kind, new.participants.as_slice()) {
            (ConversationKind::Single, [(a, _), (b, _)]) if a != b => Some(single_key(*a, *b)),
            (ConversationKind::Single, _) => {
                return Err(StoreError::Conflict("a single conversation has exactly two participants".into()));
            }
            (ConversationKind::Group, _) => None,
        };
        let mut seen = HashSet::new();
        if !new.participants.iter().all(|(u, _)| seen.insert(*u)) {
            return Err(StoreError::Conflict("a participant is listed twice".into()));
        }
        let participants: Vec<Document> =
            new.participants.iter().map(|(u, r)| participant_doc(*u, *r, new.created_at)).collect();
        let mut document = doc! {
            "_id": new.id.bson(),
            "kind": new.kind.as_str(),
            "name": crate::codec::opt_str_bson(new.name.as_deref()),
            "avatar": crate::codec::opt_str_bson(new.avatar.as_deref()),
            "createdBy": new.created_by.bson(),
            "createdAt": date(new.created_at),
            "lastMessageAt": Bson::Null,
            // COALESCE(lastMessageAt, createdAt), kept by the store: the listing order.
            "lastActivityAt": date(new.created_at),
            "lastSeq": 0_i64,
            "participants": participants,
        };
        // Only singles carry the key: the unique index is partial on its existence, so
        // groups never collide on it.
        if let Some(key) = key {
            document.insert("singleKey", key);
        }
        // One insert: the conversation and its members appear together or not at all, and
        // of concurrent creations of one pair's single the unique key lets one through.
        match c.conversations.insert_one(document).await {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate(&e) => Err(StoreError::Conflict(format!(
                "these two users already have a single conversation ({})",
                names::CONVERSATIONS_SINGLE_KEY
            ))),
            Err(e) => Err(db(e)),
        }
    }

    async fn single_between(&self, a: UserId, b: UserId, viewer: UserId) -> StoreResult<Option<Conversation>> {
        let c = &self.c;
        let found = c.conversations.find_one(doc! { "singleKey": single_key(a, b) }).await.map_err(db)?;
        Ok(as_seen_by(c, found.into_iter().collect(), viewer).await?.into_iter().next())
    }

    async fn conversation(&self, conversation: ConversationId, viewer: UserId) -> StoreResult<Option<Conversation>> {
        let c = &self.c;
        let found = c.conversations.find_one(doc! { "_id": conversation.bson() }).await.map_err(db)?;
        Ok(as_seen_by(c, found.into_iter().collect(), viewer).await?.into_iter().next())
    }

    async fn conversations_of(
        &self,
        user: UserId,
        before: Option<Timestamp>,
        max: u32,
    ) -> StoreResult<Vec<Conversation>> {
        let c = &self.c;
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut filter = doc! { "participants.userId": user.bson() };
        if let Some(before) = before {
            filter.insert("lastActivityAt", doc! { "$lt": date(before) });
        }
        let found: Vec<Document> = c
            .conversations
            .find(filter)
            .sort(doc! { "lastActivityAt": -1, "_id": -1 })
            .limit(limit(max))
            .await
            .map_err(db)?
            .try_collect()
            .await
            .map_err(db)?;
        as_seen_by(c, found, user).await
    }

    async fn member_role(&self, conversation: ConversationId, user: UserId) -> StoreResult<Option<Role>> {
        let c = &self.c;
        // Only the member's own entry comes back, however large the group.
        let found = c
            .conversations
            .find_one(doc! { "_id": conversation.bson(), "participants.userId": user.bson() })
            .projection(doc! { "participants": { "$elemMatch": { "userId": user.bson() } } })
            .await
            .map_err(db)?;
        let Some(found) = found else {
            return Ok(None);
        };
        for p in docs(&found, "participants")? {
            if id::<UserId>(p, "userId")? == user {
                return role(&crate::codec::string(p, "role")?).map(Some);
            }
        }
        Ok(None)
    }

    async fn conversation_ids_of(&self, user: UserId) -> StoreResult<Vec<ConversationId>> {
        let c = &self.c;
        let found: Vec<Document> = c
            .conversations
            .find(doc! { "participants.userId": user.bson() })
            .projection(doc! { "_id": 1 })
            .await
            .map_err(db)?
            .try_collect()
            .await
            .map_err(db)?;
        found.iter().map(|d| id(d, "_id")).collect()
    }

    async fn co_members_of(&self, user: UserId) -> StoreResult<Vec<UserId>> {
        let c = &self.c;
        let found: Vec<Document> = c
            .conversations
            .find(doc! { "participants.userId": user.bson() })
            .projection(doc! { "participants.userId": 1 })
            .await
            .map_err(db)?
            .try_collect()
            .await
            .map_err(db)?;
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for conversation in &found {
            for p in docs(conversation, "participants")? {
                let other: UserId = id(p, "userId")?;
                if other != user && seen.insert(other) {
                    out.push(other);
                }
            }
        }
        Ok(out)
    }

    async fn update_conversation(
        &self,
        conversation: ConversationId,
        name: Option<String>,
        avatar: Option<String>,
    ) -> StoreResult<()> {
        let c = &self.c;
        let mut set = Document::new();
        if let Some(name) = name {
            set.insert("name", name);
        }
        if let Some(avatar) = avatar {
            set.insert("avatar", avatar);
        }
        let matched = if set.is_empty() {
            c.conversations.count_documents(doc! { "_id": conversation.bson() }).await.map_err(db)?
        } else {
            c.conversations
                .update_one(doc! { "_id": conversation.bson() }, doc! { "$set": set })
                .await
                .map_err(db)?
                .matched_count
        };
        if matched == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn add_members(
        &self,
        conversation: ConversationId,
        by: UserId,
        users: &[UserId],
        at: Timestamp,
    ) -> StoreResult<Option<Vec<UserId>>> {
        let c = &self.c;
        let exists = c.conversations.count_documents(doc! { "_id": conversation.bson() }).await.map_err(db)?;
        if exists == 0 {
            return Err(StoreError::NotFound);
        }
        // Each user once, in the order given. Each push is guarded, in the same atomic update,
        // by "not a member yet" (so of concurrent adds of one user exactly one adds them) and
        // by "`by` is an admin" (so an admin who has just left adds nobody).
        let mut seen = HashSet::new();
        let mut added = Vec::new();
        for user in users.iter().copied().filter(|u| seen.insert(*u)) {
            let done = c
                .conversations
                .update_one(
                    doc! {
                        "_id": conversation.bson(),
                        "participants": admin_filter(by),
                        "participants.userId": { "$ne": user.bson() },
                    },
                    doc! { "$push": { "participants": participant_doc(user, Role::Member, at) } },
                )
                .await
                .map_err(db)?;
            if done.modified_count == 1 {
                added.push(user);
                continue;
            }
            let still_admin = c
                .conversations
                .count_documents(doc! { "_id": conversation.bson(), "participants": admin_filter(by) })
                .await
                .map_err(db)?;
            if still_admin == 0 {
                return Ok(if added.is_empty() { None } else { Some(added) });
            }
        }
        Ok(Some(added))
    }

    /// Removes `target` and promotes an heir in one conditional write: the new participants
    /// array is computed from the one read and written only if the document still holds
    /// exactly that array (any concurrent change, a read pointer's move included, makes the
    /// write match nothing and the step is redone on the new state). MongoDB applies a
    /// single-document update atomically, so two racing leaves are serialised here.
    async fn remove_member(&self, conversation: ConversationId, by: UserId, target: UserId) -> StoreResult<Removal> {
        let c = &self.c;
        for attempt in 0..MEMBERSHIP_ATTEMPTS {
            let Some(found) = c
                .conversations
                .find_one(doc! { "_id": conversation.bson() })
                .projection(doc! { "participants": 1, "createdBy": 1 })
                .await
                .map_err(db)?
            else {
                return Ok(Removal::NotMember);
            };
            let created_by: UserId = id(&found, "createdBy")?;
            let before: Vec<Document> = docs(&found, "participants")?.into_iter().cloned().collect();
            let member = |p: &Document, u: UserId| id::<UserId>(p, "userId").is_ok_and(|x| x == u);
            let is_admin = |p: &Document| crate::codec::string(p, "role").is_ok_and(|r| r == Role::Admin.as_str());
            if by != target && !before.iter().any(|p| member(p, by) && is_admin(p)) {
                return Ok(Removal::NotAllowed);
            }
            if !before.iter().any(|p| member(p, target)) {
                return Ok(Removal::NotMember);
            }
            let mut after: Vec<Document> = before.iter().filter(|p| !member(p, target)).cloned().collect();
            let mut promoted = None;
            if !after.is_empty() && !after.iter().any(is_admin) {
                // The heir, in the order participants are listed: the creator, then the
                // earliest joined, then the array's order.
                let mut order: Vec<(usize, bool, Timestamp)> = Vec::with_capacity(after.len());
                for (i, p) in after.iter().enumerate() {
                    order.push((i, id::<UserId>(p, "userId")? != created_by, time(p, "joinedAt")?));
                }
                order.sort_by_key(|&(i, not_creator, joined)| (not_creator, joined, i));
                let heir = order[0].0;
                after[heir].insert("role", Role::Admin.as_str());
                promoted = Some(id::<UserId>(&after[heir], "userId")?);
            }
            let done = c
                .conversations
                .update_one(
                    doc! { "_id": conversation.bson(), "participants": before },
                    doc! { "$set": { "participants": after } },
                )
                .await
                .map_err(db)?;
            if done.matched_count == 1 {
                return Ok(Removal::Removed { promoted });
            }
            // Lost a race for the document: read it again, after a short pause that grows.
            tokio::time::sleep(std::time::Duration::from_millis(u64::from(attempt.min(20)) + 1)).await;
        }
        Err(StoreError::Conflict(format!(
            "gave up changing the members of conversation {conversation} after {MEMBERSHIP_ATTEMPTS} lost races"
        )))
    }
}
