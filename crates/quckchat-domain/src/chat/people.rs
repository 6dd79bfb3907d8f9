//! Users as others see them, and presence: online/offline is told to co-members only,
//! counted over every device of a user.

use std::collections::HashSet;

use tracing::instrument;

use super::{Chat, ChatResult};
use crate::error::DomainError;
use crate::events::ServerEvent;
use crate::hot::Changed;
use crate::ids::UserId;
use crate::model::{OnlineStatus, ProfilePatch, User, now};
use crate::realtime::Audience;

impl Chat {
    /// Fills in `status` and `last_seen` for a viewer: only the user and co-members may see
    /// them; everyone else sees `offline` and no `lastSeen`.
    async fn present(&self, viewer: UserId, mut users: Vec<User>) -> ChatResult<Vec<User>> {
        let co: HashSet<UserId> = self.store.co_members_of(viewer).await?.into_iter().collect();
        let visible: Vec<UserId> = users.iter().map(|u| u.id).filter(|id| *id == viewer || co.contains(id)).collect();
        let online = self.presence.online_among(&visible).await?;
        for user in &mut users {
            if visible.contains(&user.id) {
                user.status = if online.contains(&user.id) { OnlineStatus::Online } else { OnlineStatus::Offline };
            } else {
                user.status = OnlineStatus::Offline;
                user.last_seen = None;
            }
        }
        Ok(users)
    }

    /// A user as `viewer` may see them.
    pub async fn user(&self, viewer: UserId, id: UserId) -> ChatResult<User> {
        let user = self.store.user(id).await?.ok_or(DomainError::NotFound("user"))?;
        Ok(self.present(viewer, vec![user]).await?.remove(0))
    }

    /// Users matching `query`, as `viewer` may see them.
    pub async fn search_users(&self, viewer: UserId, query: &str, limit: u32) -> ChatResult<Vec<User>> {
        let query = query.trim();
        if query.is_empty() {
            return Ok(Vec::new());
        }
        let users = self.store.search_users(query, limit.clamp(1, 100)).await?;
        self.present(viewer, users).await
    }

    /// Changes one's own profile.
    pub async fn update_profile(&self, actor: UserId, patch: ProfilePatch) -> ChatResult<User> {
        let user = self.store.update_profile(actor, patch).await?;
        self.changed(Changed::User(actor)).await;
        Ok(self.present(actor, vec![user]).await?.remove(0))
    }

    /// A socket of `actor` connected. On the user's first socket anywhere, co-members
    /// (and nobody else) get `user:online`. `Ok` means the socket was counted; every
    /// counted socket must be matched by one [`Chat::socket_disconnected`].
    #[instrument(skip_all, fields(%actor))]
    pub async fn socket_connected(&self, actor: UserId) -> ChatResult<()> {
        if self.presence.socket_connected(actor).await? {
            // The socket is counted now: failing to announce it must not undo that.
            match self.store.co_members_of(actor).await {
                Ok(co) if !co.is_empty() => {
                    self.realtime.publish(Audience::Users(co), ServerEvent::UserOnline { user_id: actor }).await;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(%actor, error = %e, "could not announce a user online"),
            }
        }
        Ok(())
    }

    /// A socket of `actor` went away. When it was the last, `lastSeen` is stored and
    /// co-members get `user:offline`.
    #[instrument(skip_all, fields(%actor))]
    pub async fn socket_disconnected(&self, actor: UserId) -> ChatResult<()> {
        if self.presence.socket_disconnected(actor).await? {
            let at = now();
            self.store.set_last_seen(actor, at).await?;
            let co = self.store.co_members_of(actor).await?;
            if !co.is_empty() {
                self.realtime
                    .publish(Audience::Users(co), ServerEvent::UserOffline { user_id: actor, last_seen: at })
                    .await;
            }
        }
        Ok(())
    }
}
