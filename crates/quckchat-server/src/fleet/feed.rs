//! The hot state's change feed over Redis pub/sub: an instance that changes a
//! conversation's members or a user's profile publishes it on `{prefix}:hot`, and every
//! instance (itself included, harmlessly) forgets its cached copy.
//!
//! While the subscription is down the hot state is suspended (every lookup goes to the
//! store): an announcement published meanwhile would be lost, and memory could be stale.
//! It resumes, empty, once the subscription is back. What stays possible is the window
//! between a change's commit and its announcement arriving (sub-millisecond on a healthy
//! Redis); the store's own membership check on appends covers what matters there.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use quckchat_domain::hot::{ChangeFeed, Changed, HotState};
use quckchat_domain::{CallId, ConversationId, SessionId, UserId};
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

use super::Fleet;

/// How long the subscriber waits before subscribing again after losing Redis.
const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(250);

/// Announces changes on the fleet's channel; its subscriber task applies everyone's.
pub struct RedisChangeFeed {
    fleet: Fleet,
    channel: String,
}

impl RedisChangeFeed {
    /// Starts the subscriber (the hot state stays suspended until it is subscribed).
    pub fn start(fleet: Fleet, hot: Arc<HotState>, stop: CancellationToken) -> Self {
        let channel = fleet.key("hot");
        hot.suspend();
        tokio::spawn(subscribe(fleet.client.clone(), channel.clone(), fleet.instance.clone(), hot, stop));
        Self { fleet, channel }
    }
}

#[async_trait]
impl ChangeFeed for RedisChangeFeed {
    async fn announce(&self, change: Changed) {
        let mut redis = self.fleet.redis.clone();
        let payload = encode(&self.fleet.instance, change);
        if let Err(e) = self.fleet.run(redis.publish::<_, _, i64>(&self.channel, payload.clone())).await {
            // While Redis is away the others' subscriptions are down too, so their hot state
            // is suspended; but this instance may think so a little longer than they do.
            // Keep trying in the background, so that an instance that is already back does
            // not keep the old state (at worst until `MAX_AGE`).
            tracing::warn!(error = %e, ?change, "could not announce a change to the fleet; retrying");
            let channel = self.channel.clone();
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + quckchat_domain::hot::MAX_AGE;
                while tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(RESUBSCRIBE_AFTER).await;
                    if super::bounded(redis.publish::<_, _, i64>(&channel, payload.clone())).await.is_ok() {
                        return;
                    }
                }
            });
        }
    }
}

/// `{origin instance} {kind}:{id}`: the origin lets an instance skip its own
/// announcements (it already holds the new state).
fn encode(origin: &str, change: Changed) -> String {
    match change {
        Changed::Conversation(id) => format!("{origin} c:{id}"),
        Changed::User(id) => format!("{origin} u:{id}"),
        Changed::Call(id) => format!("{origin} k:{id}"),
        Changed::Session(id) => format!("{origin} s:{id}"),
    }
}

fn decode(payload: &str) -> Option<(&str, Changed)> {
    let (origin, change) = payload.split_once(' ')?;
    let (kind, id) = change.split_once(':')?;
    let change = match kind {
        "c" => ConversationId::parse(id).map(Changed::Conversation),
        "u" => UserId::parse(id).map(Changed::User),
        "k" => CallId::parse(id).map(Changed::Call),
        "s" => SessionId::parse(id).map(Changed::Session),
        _ => None,
    }?;
    Some((origin, change))
}

async fn subscribe(
    client: redis::Client,
    channel: String,
    instance: String,
    hot: Arc<HotState>,
    stop: CancellationToken,
) {
    loop {
        let connected = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            redis::RedisResult::Ok(pubsub)
        };
        let connected = tokio::select! {
            c = tokio::time::timeout(super::REDIS_TIMEOUT * 4, connected) => c,
            _ = stop.cancelled() => return,
        };
        match connected {
            Ok(Ok(mut pubsub)) => {
                hot.resume();
                tracing::debug!(%channel, "hot state feed subscribed");
                let mut messages = pubsub.on_message();
                loop {
                    tokio::select! {
                        message = messages.next() => match message {
                            Some(message) => match message.get_payload::<String>().ok().as_deref().and_then(decode) {
                                Some((origin, _)) if origin == instance => {}
                                Some((_, change)) => hot.forget(change),
                                None => tracing::warn!("unreadable hot state announcement"),
                            },
                            None => break,
                        },
                        _ = stop.cancelled() => return,
                    }
                }
                tracing::warn!("hot state feed lost its Redis subscription; answering from the store until it is back");
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "hot state feed cannot subscribe yet"),
            Err(_) => tracing::debug!("hot state feed: subscribing timed out"),
        }
        hot.suspend();
        tokio::select! {
            _ = tokio::time::sleep(RESUBSCRIBE_AFTER) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_round_trip() {
        for change in [
            Changed::Conversation(ConversationId::new()),
            Changed::User(UserId::new()),
            Changed::Call(CallId::new()),
            Changed::Session(SessionId::new()),
        ] {
            assert_eq!(decode(&encode("i-1", change)), Some(("i-1", change)));
        }
        assert_eq!(decode("i x:1"), None);
        assert_eq!(decode("i c:not-a-uuid"), None);
        assert_eq!(decode("c:no-origin"), None);
    }
}
