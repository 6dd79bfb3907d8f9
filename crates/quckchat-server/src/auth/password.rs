//! argon2id password hashing, always off the async worker threads.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;

use super::AuthError;

/// The shortest and longest accepted passwords, in characters.
const PASSWORD_CHARS: std::ops::RangeInclusive<usize> = 8..=128;

/// A hash of a password nobody has, verified when the username is unknown so that a
/// failed login takes the same time either way.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0Kq8GwFz1e8c8FM2mFe3MJTeQ5B1cJd8wAK7MZcAfGk";

/// Checks the password rules.
pub fn check_rules(password: &str) -> Result<(), AuthError> {
    if !PASSWORD_CHARS.contains(&password.chars().count()) {
        return Err(AuthError::InvalidInput(format!(
            "password must be {} to {} characters",
            PASSWORD_CHARS.start(),
            PASSWORD_CHARS.end()
        )));
    }
    Ok(())
}

/// Hashes a password with argon2id (default parameters) on the blocking pool.
pub async fn hash(password: String) -> Result<String, AuthError> {
    tokio::task::spawn_blocking(move || {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        let salt = SaltString::encode_b64(&bytes).map_err(|e| AuthError::Internal(format!("salt: {e}")))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| AuthError::Internal(format!("hashing failed: {e}")))
    })
    .await
    .map_err(|e| AuthError::Internal(format!("hashing task failed: {e}")))?
}

/// Checks a password against a stored hash on the blocking pool; with no hash, spends
/// the time of a check and answers `false`.
pub async fn verify(password: String, hash: Option<String>) -> Result<bool, AuthError> {
    tokio::task::spawn_blocking(move || {
        let stored = hash.as_deref().unwrap_or(DUMMY_HASH);
        let parsed =
            PasswordHash::new(stored).map_err(|e| AuthError::Internal(format!("stored hash unreadable: {e}")))?;
        let ok = Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok();
        Ok(ok && hash.is_some())
    })
    .await
    .map_err(|e| AuthError::Internal(format!("verify task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let h = hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse".into(), Some(h.clone())).await.unwrap());
        assert!(!verify("wrong horse!".into(), Some(h)).await.unwrap());
        assert!(!verify("anything at all".into(), None).await.unwrap());
    }

    #[test]
    fn rules() {
        assert!(check_rules("short").is_err());
        assert!(check_rules("long enough").is_ok());
    }
}
