//! Users: registration, lookup, login credentials, profiles, search, last seen.

use quckchat_domain::StoreError;
use quckchat_domain::UserId;
use quckchat_domain::model::{NewUser, OnlineStatus, ProfilePatch, now};

use crate::support::{DynStore, sorted, t, user};

fn new_user(username: &str) -> NewUser {
    NewUser {
        id: UserId::new(),
        username: username.to_string(),
        display_name: format!("{username} Display"),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        created_at: t(0),
    }
}

/// A created user comes back by id exactly as written; an unknown id gives `None`.
pub async fn create_and_fetch(store: DynStore) {
    let new = new_user("Alice_1");
    let created = store.create_user(new.clone()).await.expect("create_user");
    assert_eq!(created.id, new.id);
    assert_eq!(created.username, "Alice_1", "the username is kept as given");
    assert_eq!(created.display_name, new.display_name);
    assert_eq!(created.bio, None);
    assert_eq!(created.avatar, None);
    assert_eq!(created.status, OnlineStatus::Offline);
    assert_eq!(created.last_seen, None);
    assert_eq!(created.created_at, new.created_at);

    let fetched = store.user(new.id).await.expect("user").expect("user exists");
    assert_eq!(fetched, created);
    assert!(store.user(UserId::new()).await.expect("user").is_none());
}

/// A username differing only in case is taken, for ASCII and non-ASCII letters.
pub async fn duplicate_username_conflicts_case_insensitively(store: DynStore) {
    store.create_user(new_user("Alice")).await.expect("first Alice");
    for taken in ["Alice", "alice", "ALICE", "aLiCe"] {
        let result = store.create_user(new_user(taken)).await;
        assert!(matches!(result, Err(StoreError::Conflict(_))), "{taken}: expected Conflict, got {result:?}");
    }
    store.create_user(new_user("Émile")).await.expect("first Émile");
    let result = store.create_user(new_user("éMILE")).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "éMILE: expected Conflict, got {result:?}");
    store.create_user(new_user("alice2")).await.expect("a different name is free");
}

/// Credentials are found by username whatever its case, with the stored hash.
pub async fn credentials_by_username_case_insensitive(store: DynStore) {
    let new = new_user("Alice");
    store.create_user(new.clone()).await.expect("create_user");
    for name in ["Alice", "alice", "ALICE"] {
        let creds = store.credentials(name).await.expect("credentials").expect("found");
        assert_eq!(creds.user.id, new.id);
        assert_eq!(creds.user.username, "Alice");
        assert_eq!(creds.password_hash, new.password_hash);
    }
    assert!(store.credentials("bob").await.expect("credentials").is_none());
    assert!(store.credentials("Alic").await.expect("credentials").is_none(), "no prefix match");
}

/// `users` returns the known ids and leaves the unknown out.
pub async fn users_skip_unknown_ids(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    user(&store, "carol").await;
    let found = store.users(&[a.id, UserId::new(), b.id]).await.expect("users");
    assert_eq!(sorted(found.iter().map(|u| u.id).collect()), sorted(vec![a.id, b.id]));
    assert!(found.contains(&a) && found.contains(&b), "the records are whole");
    assert!(store.users(&[]).await.expect("users").is_empty());
    assert!(store.users(&[UserId::new()]).await.expect("users").is_empty());
}

/// A profile patch changes only the fields it names; an unknown user is `NotFound`.
pub async fn update_profile_patches_only_given_fields(store: DynStore) {
    let a = user(&store, "alice").await;
    let patched = store
        .update_profile(a.id, ProfilePatch { bio: Some("hi there".into()), ..Default::default() })
        .await
        .expect("update_profile");
    assert_eq!(patched.bio.as_deref(), Some("hi there"));
    assert_eq!(patched.display_name, a.display_name);
    assert_eq!(patched.avatar, None);

    let patched = store
        .update_profile(
            a.id,
            ProfilePatch {
                display_name: Some("Alice A.".into()),
                avatar: Some("https://img.example/a.png".into()),
                bio: None,
            },
        )
        .await
        .expect("update_profile");
    assert_eq!(patched.display_name, "Alice A.");
    assert_eq!(patched.avatar.as_deref(), Some("https://img.example/a.png"));
    assert_eq!(patched.bio.as_deref(), Some("hi there"), "bio untouched");
    assert_eq!(patched.username, "alice");
    assert_eq!(patched.created_at, a.created_at);
    assert_eq!(store.user(a.id).await.expect("user").expect("exists"), patched);

    let unknown =
        store.update_profile(UserId::new(), ProfilePatch { bio: Some("x".into()), ..Default::default() }).await;
    assert!(matches!(unknown, Err(StoreError::NotFound)), "got {unknown:?}");
}

/// Search matches username or display name substrings case-insensitively, by username,
/// at most `limit`.
pub async fn search_by_username_or_display_name(store: DynStore) {
    let alice = user(&store, "alice").await;
    let bob = store.create_user(NewUser { display_name: "Bobby Tables".into(), ..new_user("bob") }).await.expect("bob");
    let carol = store
        .create_user(NewUser { display_name: "Friend of ALIce".into(), ..new_user("carol") })
        .await
        .expect("carol");
    user(&store, "dave").await;

    let ids = |v: Vec<quckchat_domain::model::User>| v.into_iter().map(|u| u.id).collect::<Vec<_>>();
    assert_eq!(ids(store.search_users("ALI", 10).await.expect("search")), vec![alice.id, carol.id]);
    assert_eq!(ids(store.search_users("tabl", 10).await.expect("search")), vec![bob.id]);
    assert_eq!(ids(store.search_users("ali", 1).await.expect("search")), vec![alice.id], "limit");
    assert!(store.search_users("zzz", 10).await.expect("search").is_empty());
    assert!(store.search_users("%", 10).await.expect("search").is_empty(), "wildcards are literal");
    assert!(store.search_users("_", 10).await.expect("search").is_empty(), "wildcards are literal");
}

/// `set_last_seen` is read back exactly.
pub async fn set_last_seen_round_trips(store: DynStore) {
    let a = user(&store, "alice").await;
    store.set_last_seen(a.id, t(5_000)).await.expect("set_last_seen");
    assert_eq!(store.user(a.id).await.expect("user").expect("exists").last_seen, Some(t(5_000)));
    store.set_last_seen(a.id, t(9_001)).await.expect("set_last_seen");
    let listed = store.users(&[a.id]).await.expect("users");
    assert_eq!(listed[0].last_seen, Some(t(9_001)));
}

/// Timestamps come back exactly as written (millisecond precision, UTC).
pub async fn timestamps_round_trip_exactly(store: DynStore) {
    for at in [now(), t(0), t(-1_704_067_200_123 - 86_400_000)] {
        let new = NewUser { created_at: at, ..new_user(&format!("u{}", at.timestamp_millis().unsigned_abs())) };
        let created = store.create_user(new.clone()).await.expect("create_user");
        assert_eq!(created.created_at, at);
        let fetched = store.user(new.id).await.expect("user").expect("exists");
        assert_eq!(fetched.created_at, at, "read back {at}");
        store.set_last_seen(new.id, at).await.expect("set_last_seen");
        assert_eq!(store.user(new.id).await.expect("user").expect("exists").last_seen, Some(at));
    }
}
