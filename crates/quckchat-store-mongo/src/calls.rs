//! Calls and their participants: the [`CallStore`](quckchat_domain::call_store::CallStore)
//! half of the store.
//!
//! A call is one document with its participants embedded in order, so a call is always
//! read whole from one moment, and `save_call` replaces its state and participants in
//! one atomic update guarded by the stored `version` (`updateOne({_id, version})`): of
//! several saves from the same version exactly one matches.

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use quckchat_domain::call_model::{Call, CallKind, CallParticipant, CallStatus, ParticipantStatus};
use quckchat_domain::model::Timestamp;
use quckchat_domain::store::{CallStore, StoreResult};
use quckchat_domain::{CallId, ConversationId, UserId};

use crate::Collections;
use crate::MongoStore;
use crate::codec::{
    DbId, date, db, docs, id, int, limit, opt_date, opt_int, opt_str_bson, opt_string, opt_time, time, wire,
};

/// The statuses in which a call is live (see [`CallStatus::is_live`]).
fn live_statuses() -> Bson {
    Bson::Array(vec![CallStatus::Ringing.as_str().into(), CallStatus::Active.as_str().into()])
}

fn participants_bson(call: &Call) -> Bson {
    Bson::Array(
        call.participants
            .iter()
            .map(|p| {
                Bson::Document(doc! {
                    "userId": p.user_id.bson(),
                    "status": p.status.as_str(),
                    "joinedAt": opt_date(p.joined_at),
                    "leftAt": opt_date(p.left_at),
                    "device": opt_str_bson(p.device.as_deref()),
                })
            })
            .collect(),
    )
}

fn opt_i64_bson(n: Option<i64>) -> Bson {
    n.map_or(Bson::Null, Bson::Int64)
}

fn call_from_doc(doc: &Document) -> StoreResult<Call> {
    let participants = docs(doc, "participants")?
        .into_iter()
        .map(|p| {
            Ok(CallParticipant {
                user_id: id(p, "userId")?,
                status: wire(p, "status", ParticipantStatus::parse)?,
                joined_at: opt_time(p, "joinedAt")?,
                left_at: opt_time(p, "leftAt")?,
                device: opt_string(p, "device")?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(Call {
        id: id(doc, "_id")?,
        conversation_id: id(doc, "conversationId")?,
        initiator_id: id(doc, "initiatorId")?,
        kind: wire(doc, "kind", CallKind::parse)?,
        status: wire(doc, "status", CallStatus::parse)?,
        participants,
        created_at: time(doc, "createdAt")?,
        started_at: opt_time(doc, "startedAt")?,
        ended_at: opt_time(doc, "endedAt")?,
        duration_sec: opt_int(doc, "durationSec")?,
        version: int(doc, "version")?,
    })
}

async fn find_calls(c: &Collections, filter: Document, sort: Document, max: Option<u32>) -> StoreResult<Vec<Call>> {
    let mut find = c.calls.find(filter).sort(sort);
    if let Some(max) = max {
        find = find.limit(limit(max));
    }
    let found: Vec<Document> = find.await.map_err(db)?.try_collect().await.map_err(db)?;
    found.iter().map(call_from_doc).collect()
}

#[async_trait]
impl CallStore for MongoStore {
    async fn create_call(&self, call: &Call) -> StoreResult<()> {
        let c = &self.c;
        let document = doc! {
            "_id": call.id.bson(),
            "conversationId": call.conversation_id.bson(),
            "initiatorId": call.initiator_id.bson(),
            "kind": call.kind.as_str(),
            "status": call.status.as_str(),
            "createdAt": date(call.created_at),
            "startedAt": opt_date(call.started_at),
            "endedAt": opt_date(call.ended_at),
            "durationSec": opt_i64_bson(call.duration_sec),
            "version": call.version,
            "participants": participants_bson(call),
        };
        // A taken id is a unique violation: `Conflict`.
        c.calls.insert_one(document).await.map_err(db)?;
        Ok(())
    }

    async fn call(&self, call: CallId) -> StoreResult<Option<Call>> {
        let c = &self.c;
        c.calls.find_one(doc! { "_id": call.bson() }).await.map_err(db)?.as_ref().map(call_from_doc).transpose()
    }

    async fn save_call(&self, call: &Call, expected_version: i64) -> StoreResult<bool> {
        let c = &self.c;
        // What a call is (its conversation, initiator, kind and creation time) never
        // changes, so only its state is written. An unknown id matches no version either.
        let done = c
            .calls
            .update_one(
                doc! { "_id": call.id.bson(), "version": expected_version },
                doc! { "$set": {
                    "status": call.status.as_str(),
                    "startedAt": opt_date(call.started_at),
                    "endedAt": opt_date(call.ended_at),
                    "durationSec": opt_i64_bson(call.duration_sec),
                    "version": call.version,
                    "participants": participants_bson(call),
                } },
            )
            .await
            .map_err(db)?;
        Ok(done.matched_count == 1)
    }

    async fn calls_of_conversation(
        &self,
        conversation: ConversationId,
        before: Option<Timestamp>,
        max: u32,
    ) -> StoreResult<Vec<Call>> {
        let c = &self.c;
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut filter = doc! { "conversationId": conversation.bson() };
        if let Some(before) = before {
            filter.insert("createdAt", doc! { "$lt": date(before) });
        }
        find_calls(c, filter, doc! { "createdAt": -1, "_id": -1 }, Some(max)).await
    }

    async fn live_calls_of(&self, user: UserId) -> StoreResult<Vec<Call>> {
        let c = &self.c;
        let filter = doc! {
            "status": { "$in": live_statuses() },
            "participants": { "$elemMatch": {
                "userId": user.bson(),
                "status": { "$in": [ParticipantStatus::Ringing.as_str(), ParticipantStatus::Joined.as_str()] },
            } },
        };
        find_calls(c, filter, doc! { "createdAt": 1, "_id": 1 }, None).await
    }

    async fn live_calls(&self) -> StoreResult<Vec<Call>> {
        let c = &self.c;
        let filter = doc! { "status": { "$in": live_statuses() } };
        find_calls(c, filter, doc! { "createdAt": 1, "_id": 1 }, None).await
    }
}
