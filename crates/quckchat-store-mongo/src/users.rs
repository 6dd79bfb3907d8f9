//! Users and sessions.

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use quckchat_domain::model::{NewUser, OnlineStatus, ProfilePatch, Session, Timestamp, User};
use quckchat_domain::store::{Credentials, StoreResult, UserStore};
use quckchat_domain::{SessionId, StoreError, UserId};

use crate::MongoStore;
use crate::codec::{
    DbId, date, db, fold, id, id_array, is_duplicate, limit, literal_regex, opt_date, opt_string, opt_time, string,
    time, ts,
};
use crate::names;

fn user_from_doc(doc: &Document) -> StoreResult<User> {
    Ok(User {
        id: id(doc, "_id")?,
        username: string(doc, "username")?,
        display_name: string(doc, "displayName")?,
        bio: opt_string(doc, "bio")?,
        avatar: opt_string(doc, "avatar")?,
        // Presence is not stored: the service fills it in for each viewer.
        status: OnlineStatus::Offline,
        last_seen: opt_time(doc, "lastSeen")?,
        created_at: time(doc, "createdAt")?,
    })
}

// ---- sessions -------------------------------------------------------------------------

fn session_from_doc(doc: &Document) -> StoreResult<Session> {
    Ok(Session {
        id: id(doc, "_id")?,
        user_id: id(doc, "userId")?,
        refresh_token_hash: string(doc, "refreshTokenHash")?,
        created_at: time(doc, "createdAt")?,
        expires_at: time(doc, "expiresAt")?,
        revoked_at: opt_time(doc, "revokedAt")?,
        rotated_at: opt_time(doc, "rotatedAt")?,
    })
}

#[async_trait]
impl UserStore for MongoStore {
    async fn create_user(&self, new: NewUser) -> StoreResult<User> {
        let c = &self.c;
        let document = doc! {
            "_id": new.id.bson(),
            "username": &new.username,
            "usernameKey": fold(&new.username),
            "displayName": &new.display_name,
            "displayNameKey": fold(&new.display_name),
            "passwordHash": &new.password_hash,
            "bio": Bson::Null,
            "avatar": Bson::Null,
            "lastSeen": Bson::Null,
            "createdAt": date(new.created_at),
        };
        match c.users.insert_one(document).await {
            Ok(_) => Ok(User {
                id: new.id,
                username: new.username,
                display_name: new.display_name,
                bio: None,
                avatar: None,
                status: OnlineStatus::Offline,
                last_seen: None,
                created_at: ts(new.created_at),
            }),
            // The unique `usernameKey` index (or, by a caller's bug, the id).
            Err(e) if is_duplicate(&e) => {
                Err(StoreError::Conflict(format!("username is taken ({})", names::USERS_USERNAME_KEY)))
            }
            Err(e) => Err(db(e)),
        }
    }

    async fn user(&self, user: UserId) -> StoreResult<Option<User>> {
        let c = &self.c;
        c.users
            .find_one(doc! { "_id": user.bson() })
            .projection(doc! { "passwordHash": 0 })
            .await
            .map_err(db)?
            .as_ref()
            .map(user_from_doc)
            .transpose()
    }

    async fn users(&self, ids: &[UserId]) -> StoreResult<Vec<User>> {
        let c = &self.c;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let found: Vec<Document> = c
            .users
            .find(doc! { "_id": { "$in": id_array(ids.iter().copied()) } })
            .projection(doc! { "passwordHash": 0 })
            .await
            .map_err(db)?
            .try_collect()
            .await
            .map_err(db)?;
        found.iter().map(user_from_doc).collect()
    }

    async fn credentials(&self, username: &str) -> StoreResult<Option<Credentials>> {
        let c = &self.c;
        let found = c.users.find_one(doc! { "usernameKey": fold(username) }).await.map_err(db)?;
        found
            .map(|doc| Ok(Credentials { user: user_from_doc(&doc)?, password_hash: string(&doc, "passwordHash")? }))
            .transpose()
    }

    async fn update_profile(&self, user_id: UserId, patch: ProfilePatch) -> StoreResult<User> {
        let c = &self.c;
        let mut set = Document::new();
        if let Some(name) = &patch.display_name {
            set.insert("displayName", name);
            set.insert("displayNameKey", fold(name));
        }
        if let Some(bio) = &patch.bio {
            set.insert("bio", bio);
        }
        if let Some(avatar) = &patch.avatar {
            set.insert("avatar", avatar);
        }
        if set.is_empty() {
            // Nothing to change (the server refuses an empty `$set`).
            return self.user(user_id).await?.ok_or(StoreError::NotFound);
        }
        let updated = c
            .users
            .find_one_and_update(doc! { "_id": user_id.bson() }, doc! { "$set": set })
            .return_document(mongodb::options::ReturnDocument::After)
            .projection(doc! { "passwordHash": 0 })
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound)?;
        user_from_doc(&updated)
    }

    async fn search_users(&self, query: &str, max: u32) -> StoreResult<Vec<User>> {
        let c = &self.c;
        if max == 0 {
            return Ok(Vec::new());
        }
        // A literal substring of the folded keys: `%`, `_`, `.` and the like are plain
        // characters. Sorted by the folded username, which the server compares byte-wise
        // (no collation), as every backend does.
        let pattern = literal_regex(&fold(query));
        let found: Vec<Document> = c
            .users
            .find(doc! { "$or": [
                { "usernameKey": { "$regex": &pattern } },
                { "displayNameKey": { "$regex": &pattern } },
            ] })
            .sort(doc! { "usernameKey": 1, "_id": 1 })
            .limit(limit(max))
            .projection(doc! { "passwordHash": 0 })
            .await
            .map_err(db)?
            .try_collect()
            .await
            .map_err(db)?;
        found.iter().map(user_from_doc).collect()
    }

    async fn set_last_seen(&self, user: UserId, at: Timestamp) -> StoreResult<()> {
        let c = &self.c;
        let done = c
            .users
            .update_one(doc! { "_id": user.bson() }, doc! { "$set": { "lastSeen": date(at) } })
            .await
            .map_err(db)?;
        if done.matched_count == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn create_session(&self, session: Session) -> StoreResult<()> {
        let c = &self.c;
        c.sessions
            .insert_one(doc! {
                "_id": session.id.bson(),
                "userId": session.user_id.bson(),
                "refreshTokenHash": session.refresh_token_hash,
                "createdAt": date(session.created_at),
                "expiresAt": date(session.expires_at),
                "revokedAt": opt_date(session.revoked_at),
                "rotatedAt": opt_date(session.rotated_at),
            })
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn session(&self, session: SessionId) -> StoreResult<Option<Session>> {
        let c = &self.c;
        c.sessions
            .find_one(doc! { "_id": session.bson() })
            .await
            .map_err(db)?
            .as_ref()
            .map(session_from_doc)
            .transpose()
    }

    async fn rotate_refresh_token(
        &self,
        session: SessionId,
        current_hash: &str,
        new_hash: &str,
        new_expires_at: Timestamp,
        at: Timestamp,
    ) -> StoreResult<bool> {
        let c = &self.c;
        // One conditional update of one document, which the server applies atomically: of
        // two concurrent rotations with the same token, only one still matches the hash.
        let done = c
        .sessions
        .update_one(
            doc! { "_id": session.bson(), "refreshTokenHash": current_hash, "revokedAt": Bson::Null },
            doc! { "$set": { "refreshTokenHash": new_hash, "expiresAt": date(new_expires_at), "rotatedAt": date(at) } },
        )
        .await
        .map_err(db)?;
        Ok(done.matched_count == 1)
    }

    async fn revoke_session(&self, session: SessionId, at: Timestamp) -> StoreResult<bool> {
        let c = &self.c;
        let done = c
            .sessions
            .update_one(
                doc! { "_id": session.bson(), "revokedAt": Bson::Null },
                doc! { "$set": { "revokedAt": date(at) } },
            )
            .await
            .map_err(db)?;
        Ok(done.matched_count == 1)
    }
}
