//! Sessions: creation, refresh-token rotation, revocation.

use quckchat_domain::SessionId;
use quckchat_domain::model::Session;

use crate::support::{DynStore, t, user};

async fn session(store: &DynStore, hash: &str) -> Session {
    let owner = user(store, "alice").await;
    let session = Session {
        id: SessionId::new(),
        user_id: owner.id,
        refresh_token_hash: hash.to_string(),
        created_at: t(0),
        expires_at: t(86_400_000),
        revoked_at: None,
        rotated_at: None,
    };
    store.create_session(session.clone()).await.expect("create_session");
    session
}

/// A created session comes back whole; an unknown id gives `None`.
pub async fn create_and_fetch(store: DynStore) {
    let s = session(&store, "h1").await;
    assert_eq!(store.session(s.id).await.expect("session"), Some(s));
    assert_eq!(store.session(SessionId::new()).await.expect("session"), None);
}

/// Rotation succeeds once per token: the old hash stops working, the new one works.
pub async fn rotate_refresh_token_once(store: DynStore) {
    let s = session(&store, "h1").await;
    assert!(store.rotate_refresh_token(s.id, "h1", "h2", t(2_000), t(1000)).await.expect("rotate"));
    let after = store.session(s.id).await.expect("session").expect("exists");
    assert_eq!(after.refresh_token_hash, "h2");
    assert_eq!(after.expires_at, t(2_000));
    assert_eq!(after.rotated_at, Some(t(1000)), "the rotation time is kept");
    assert_eq!(after.created_at, s.created_at);

    assert!(!store.rotate_refresh_token(s.id, "h1", "h3", t(3_000), t(1500)).await.expect("rotate"), "a reused token");
    let unchanged = store.session(s.id).await.expect("session").expect("exists");
    assert_eq!(unchanged, after, "a failed rotation changes nothing");

    assert!(store.rotate_refresh_token(s.id, "h2", "h3", t(3_000), t(1500)).await.expect("rotate"));
    assert!(
        !store.rotate_refresh_token(SessionId::new(), "h3", "h4", t(4_000), t(2000)).await.expect("rotate"),
        "unknown session"
    );
}

/// A revoked session cannot rotate, even with its current hash.
pub async fn rotate_fails_on_revoked_session(store: DynStore) {
    let s = session(&store, "h1").await;
    assert!(store.revoke_session(s.id, t(1_000)).await.expect("revoke"));
    assert!(!store.rotate_refresh_token(s.id, "h1", "h2", t(2_000), t(1000)).await.expect("rotate"));
    assert_eq!(store.session(s.id).await.expect("session").expect("exists").refresh_token_hash, "h1");
}

/// Revoking answers `true` once, then `false`; the revocation time is kept.
pub async fn revoke_once(store: DynStore) {
    let s = session(&store, "h1").await;
    assert!(store.revoke_session(s.id, t(1_000)).await.expect("revoke"));
    assert!(!store.revoke_session(s.id, t(2_000)).await.expect("revoke"));
    let revoked = store.session(s.id).await.expect("session").expect("revoked sessions are kept");
    assert_eq!(revoked.revoked_at, Some(t(1_000)), "the first revocation time stays");
    assert!(!store.revoke_session(SessionId::new(), t(1_000)).await.expect("revoke"), "unknown session");
}
