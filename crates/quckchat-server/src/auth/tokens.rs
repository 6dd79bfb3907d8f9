//! Access tokens (HS256 JWT) and opaque refresh tokens.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use quckchat_domain::{SessionId, UserId};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::AuthError;

/// The claims QuckChat puts in an access token.
#[derive(Debug, Serialize, Deserialize)]
struct RawClaims {
    sub: String,
    sid: String,
    iat: i64,
    exp: i64,
    typ: String,
}

/// Verified claims.
#[derive(Debug, Clone, Copy)]
pub struct Claims {
    /// `sub`.
    pub user_id: UserId,
    /// `sid`.
    pub session_id: SessionId,
}

/// The HS256 signing and verifying keys.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// Derives a refresh token's successor (see [`JwtKeys::successor_refresh_token`]).
    refresh_key: [u8; 32],
}

impl JwtKeys {
    /// Keys from a secret.
    pub fn from_secret(secret: &[u8]) -> anyhow::Result<Self> {
        if secret.is_empty() {
            anyhow::bail!("the JWT secret must not be empty");
        }
        let mut refresh = Sha256::new();
        refresh.update(b"quckchat refresh-token successor v1\0");
        refresh.update(secret);
        Ok(Self {
            encoding: EncodingKey::from_secret(secret).context("JWT signing key")?,
            decoding: DecodingKey::from_secret(secret).context("JWT verifying key")?,
            refresh_key: refresh.finalize().into(),
        })
    }

    /// The configured secret, or one generated once and kept in `data_dir/jwt_secret`
    /// (with a warning: a fleet must share a configured secret).
    pub fn load_or_generate(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<Self> {
        if let Some(secret) = configured {
            return Self::from_secret(secret.as_bytes());
        }
        let path = data_dir.join("jwt_secret");
        if let Ok(existing) = std::fs::read_to_string(&path) {
            let existing = existing.trim();
            if !existing.is_empty() {
                tracing::warn!(path = %path.display(), "JWT_SECRET is not set; using the secret kept in the data directory");
                return Self::from_secret(existing.as_bytes());
            }
        }
        std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        let mut bytes = [0u8; 48];
        rand::rng().fill_bytes(&mut bytes);
        let secret = hex::encode(bytes);
        write_private(&path, &secret).with_context(|| format!("writing {}", path.display()))?;
        tracing::warn!(path = %path.display(), "JWT_SECRET is not set; generated a secret and kept it in the data directory");
        Self::from_secret(secret.as_bytes())
    }

    /// The refresh token that `token` rotates into: `<session>.<HMAC-SHA256(key, token)>`.
    ///
    /// Deterministic on purpose: a client that fires two refreshes with one token (a
    /// double tap, a retry after a lost answer) must get the same pair both times, in any
    /// instance of a fleet, without the store keeping plaintext tokens. Only the server
    /// (which holds the key) can compute it, so a leaked token yields nothing new beyond
    /// the reuse grace, after which presenting it still ends the session.
    pub fn successor_refresh_token(&self, session: SessionId, token: &str) -> (String, String) {
        use hmac::{KeyInit, Mac};
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&self.refresh_key)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(token.trim().as_bytes());
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        let next = format!("{session}.{secret}");
        let hash = hash_refresh(&next);
        (next, hash)
    }

    /// Issues an access token.
    pub fn issue(&self, user: UserId, session: SessionId, ttl: Duration) -> Result<String, AuthError> {
        let iat = chrono::Utc::now().timestamp();
        let claims = RawClaims {
            sub: user.to_string(),
            sid: session.to_string(),
            iat,
            exp: iat + ttl.as_secs() as i64,
            typ: "access".into(),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::Internal(format!("signing failed: {e}")))
    }

    /// Checks signature and expiry (no leeway) and reads the claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = decode::<RawClaims>(token, &self.decoding, &validation).map_err(|_| AuthError::InvalidToken)?;
        let c = data.claims;
        if c.typ != "access" {
            return Err(AuthError::InvalidToken);
        }
        Ok(Claims {
            user_id: UserId::parse(&c.sub).ok_or(AuthError::InvalidToken)?,
            session_id: SessionId::parse(&c.sid).ok_or(AuthError::InvalidToken)?,
        })
    }
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

/// A new refresh token `<session>.<random>` and the hash the store keeps of it.
pub fn new_refresh_token(session: SessionId) -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let token = format!("{session}.{secret}");
    let hash = hash_refresh(&token);
    (token, hash)
}

/// The session a refresh token names, and its hash.
pub fn parse_refresh_token(token: &str) -> Option<(SessionId, String)> {
    let (session, secret) = token.trim().split_once('.')?;
    if secret.len() < 16 {
        return None;
    }
    Some((SessionId::parse(session)?, hash_refresh(token.trim())))
}

fn hash_refresh(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares two hashes without an early exit.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_tokens_round_trip_and_reject_tampering() {
        let keys = JwtKeys::from_secret(b"secret").unwrap();
        let (u, s) = (UserId::new(), SessionId::new());
        let t = keys.issue(u, s, Duration::from_secs(60)).unwrap();
        let c = keys.verify(&t).unwrap();
        assert_eq!((c.user_id, c.session_id), (u, s));
        assert!(JwtKeys::from_secret(b"other").unwrap().verify(&t).is_err());
        assert!(keys.verify("not.a.jwt").is_err());
        let past = chrono::Utc::now().timestamp() - 10;
        let claims =
            RawClaims { sub: u.to_string(), sid: s.to_string(), iat: past - 60, exp: past, typ: "access".into() };
        let expired = encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding).unwrap();
        assert!(keys.verify(&expired).is_err());
    }

    #[test]
    fn refresh_tokens_name_their_session() {
        let s = SessionId::new();
        let (t, h) = new_refresh_token(s);
        let (s2, h2) = parse_refresh_token(&t).unwrap();
        assert_eq!(s, s2);
        assert!(constant_time_eq(&h, &h2));
        assert!(parse_refresh_token("garbage").is_none());
    }
}
