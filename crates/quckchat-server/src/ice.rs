//! ICE servers for clients: the configured STUN URLs, and TURN with credentials minted
//! per user in the TURN REST scheme that coturn's `use-auth-secret` checks: the username
//! is `<expiry-unix>:<userId>`, the credential `base64(HMAC-SHA1(secret, username))`.

use std::time::Duration;

use base64::Engine;
use hmac::{KeyInit, Mac};
use quckchat_domain::UserId;
use serde::Serialize;

use crate::config::Config;

/// One entry of `RTCConfiguration.iceServers`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct IceServer {
    /// Server URLs.
    pub urls: Vec<String>,
    /// TURN username.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN credential.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// What `GET /ice-servers` answers and call acks carry.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IceConfig {
    /// The servers.
    pub ice_servers: Vec<IceServer>,
    /// Seconds the credentials stay valid.
    pub ttl: u64,
}

/// Mints ICE configurations.
#[derive(Debug, Clone)]
pub struct IceProvider {
    stun: Vec<String>,
    turn: Vec<String>,
    secret: Option<String>,
    ttl: Duration,
}

impl IceProvider {
    /// From the configuration.
    pub fn new(config: &Config) -> Self {
        Self {
            stun: config.stun_urls.clone(),
            turn: config.turn_urls.clone(),
            secret: config.turn_secret.clone(),
            ttl: config.turn_ttl,
        }
    }

    /// The servers `user` may use now.
    pub fn for_user(&self, user: UserId) -> IceConfig {
        self.for_user_at(user, chrono::Utc::now().timestamp())
    }

    /// The servers `user` may use, as of `now` (unix seconds).
    pub fn for_user_at(&self, user: UserId, now: i64) -> IceConfig {
        let mut servers = Vec::new();
        if !self.stun.is_empty() {
            servers.push(IceServer { urls: self.stun.clone(), username: None, credential: None });
        }
        if let (false, Some(secret)) = (self.turn.is_empty(), &self.secret) {
            let username = format!("{}:{}", now + self.ttl.as_secs() as i64, user);
            servers.push(IceServer {
                urls: self.turn.clone(),
                credential: Some(turn_credential(secret, &username)),
                username: Some(username),
            });
        }
        IceConfig { ice_servers: servers, ttl: self.ttl.as_secs() }
    }
}

/// `base64(HMAC-SHA1(secret, username))`.
pub fn turn_credential(secret: &str, username: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_credentials_follow_the_rest_scheme() {
        // RFC 2202 test case 2 (HMAC-SHA1, key "Jefe"): effcdf6a…259a7c79 in base64.
        assert_eq!(turn_credential("Jefe", "what do ya want for nothing?"), "7/zfauXrL6LSdBbV8YTfnCWafHk=");
        let config = Config {
            turn_urls: vec!["turn:turn.example:3478".into()],
            turn_secret: Some("s3cret".into()),
            stun_urls: vec!["stun:stun.example:3478".into()],
            turn_ttl: Duration::from_secs(600),
            ..Config::default()
        };
        let user = UserId::new();
        let ice = IceProvider::new(&config).for_user_at(user, 1_000);
        assert_eq!(ice.ttl, 600);
        assert_eq!(ice.ice_servers.len(), 2);
        let turn = &ice.ice_servers[1];
        assert_eq!(turn.username.as_deref(), Some(format!("1600:{user}").as_str()));
        assert_eq!(turn.credential.as_deref(), Some(turn_credential("s3cret", &format!("1600:{user}")).as_str()));
    }

    #[test]
    fn no_turn_without_a_secret() {
        let ice = IceProvider::new(&Config::default()).for_user(UserId::new());
        assert!(ice.ice_servers.is_empty());
    }
}
