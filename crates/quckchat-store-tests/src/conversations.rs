//! Conversations: creation, the single-pair rule, listings, membership and roles.

use quckchat_domain::model::{ConversationKind, NewConversation, Removal, Role};
use quckchat_domain::{ConversationId, StoreError, UserId};

use crate::support::{DynStore, group, last_read_seq, new_single, send, single, sorted, t, user};

/// A group comes back with its fields and participants, the creator first, with roles,
/// join times and read pointers at 0.
pub async fn create_group_with_roles(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let c = user(&store, "carol").await;
    let new = NewConversation {
        id: ConversationId::new(),
        kind: ConversationKind::Group,
        name: Some("Climbers".into()),
        avatar: Some("https://img.example/g.png".into()),
        created_by: b.id,
        participants: vec![(b.id, Role::Admin), (c.id, Role::Member), (a.id, Role::Member)],
        created_at: t(10),
    };
    store.create_conversation(new.clone()).await.expect("create_conversation");

    let conv = store.conversation(new.id, a.id).await.expect("conversation").expect("exists");
    assert_eq!(conv.id, new.id);
    assert_eq!(conv.kind, ConversationKind::Group);
    assert_eq!(conv.name.as_deref(), Some("Climbers"));
    assert_eq!(conv.avatar.as_deref(), Some("https://img.example/g.png"));
    assert_eq!(conv.created_by, b.id);
    assert_eq!(conv.created_at, t(10));
    assert_eq!(conv.last_message_at, None);
    assert_eq!(conv.last_seq, 0);
    assert_eq!(conv.unread_count, 0);
    let people: Vec<(UserId, Role)> = conv.participants.iter().map(|p| (p.user_id, p.role)).collect();
    assert_eq!(people, new.participants, "creator first, then in the given order");
    for p in &conv.participants {
        assert_eq!(p.joined_at, t(10));
        assert_eq!(p.last_read_seq, 0);
    }
    assert!(store.conversation(ConversationId::new(), a.id).await.expect("conversation").is_none());
}

/// The single conversation of a pair is found whichever way round the pair is given.
pub async fn single_between_either_order(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let c = user(&store, "carol").await;
    let id = single(&store, a.id, b.id, t(0)).await;

    let ab = store.single_between(a.id, b.id, a.id).await.expect("single_between").expect("found");
    assert_eq!(ab.id, id);
    assert_eq!(ab.kind, ConversationKind::Single);
    assert_eq!(ab.participants.len(), 2);
    let ba = store.single_between(b.id, a.id, b.id).await.expect("single_between").expect("found");
    assert_eq!(ba.id, id);
    assert!(store.single_between(a.id, c.id, a.id).await.expect("single_between").is_none());

    group(&store, a.id, &[c.id], t(1)).await;
    assert!(store.single_between(a.id, c.id, a.id).await.expect("single_between").is_none(), "a group is not a single");
}

/// A second single for the same pair, either way round, is a `Conflict`; a group of the
/// same two people is fine.
pub async fn second_single_for_pair_conflicts(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let first = single(&store, a.id, b.id, t(0)).await;
    for (x, y) in [(a.id, b.id), (b.id, a.id)] {
        let result = store.create_conversation(new_single(x, y, t(1))).await;
        assert!(matches!(result, Err(StoreError::Conflict(_))), "got {result:?}");
    }
    group(&store, a.id, &[b.id], t(2)).await;
    let found = store.single_between(a.id, b.id, a.id).await.expect("single_between").expect("found");
    assert_eq!(found.id, first);
}

/// Eight concurrent creations of the same pair's single: exactly one wins.
pub async fn concurrent_single_creates_one_wins(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            let new = if i % 2 == 0 { new_single(a.id, b.id, t(i)) } else { new_single(b.id, a.id, t(i)) };
            tokio::spawn(async move {
                let id = new.id;
                (id, store.create_conversation(new).await)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (id, result) = task.await.expect("task");
        match result {
            Ok(()) => winners.push(id),
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("expected Ok or Conflict, got {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one single per pair");
    let found = store.single_between(a.id, b.id, b.id).await.expect("single_between").expect("found");
    assert_eq!(found.id, winners[0]);
    assert_eq!(store.conversation_ids_of(a.id).await.expect("ids"), winners);
}

/// Listing: most recent activity first (a message beats creation), `before`, `limit`,
/// and only the user's conversations, each with the viewer's unread count.
pub async fn conversations_of_by_activity(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let z = user(&store, "zed").await;
    let c1 = group(&store, a.id, &[b.id], t(1_000)).await;
    let c2 = group(&store, a.id, &[], t(2_000)).await;
    let c3 = single(&store, a.id, b.id, t(3_000)).await;
    group(&store, z.id, &[], t(3_500)).await;
    let m = send(&store, c1, b.id, "newest", t(4_000)).await;

    let ids = |v: Vec<quckchat_domain::model::Conversation>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
    let all = store.conversations_of(a.id, None, 10).await.expect("conversations_of");
    assert_eq!(ids(all.clone()), vec![c1, c3, c2]);
    assert_eq!(all[0].last_message_at, Some(m.created_at));
    assert_eq!(all[0].last_seq, 1);
    assert_eq!(all[0].unread_count, 1, "alice has not read bob's message");
    assert_eq!(all[0].participants.len(), 2);
    assert_eq!(all[0].participants[0].user_id, a.id, "creator first");

    assert_eq!(ids(store.conversations_of(a.id, Some(t(4_000)), 10).await.expect("before")), vec![c3, c2]);
    assert_eq!(ids(store.conversations_of(a.id, Some(t(3_000)), 10).await.expect("before")), vec![c2]);
    assert!(store.conversations_of(a.id, Some(t(2_000)), 10).await.expect("before").is_empty());
    assert_eq!(ids(store.conversations_of(a.id, None, 2).await.expect("limit")), vec![c1, c3]);

    let bobs = store.conversations_of(b.id, None, 10).await.expect("conversations_of");
    assert_eq!(ids(bobs.clone()), vec![c1, c3]);
    assert_eq!(bobs[0].unread_count, 0, "bob sent the only message");
    let stranger = user(&store, "nobody").await;
    assert!(store.conversations_of(stranger.id, None, 10).await.expect("conversations_of").is_empty());
}

/// `conversation_ids_of` lists exactly the user's conversations.
pub async fn conversation_ids_of_lists_memberships(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let c1 = group(&store, a.id, &[b.id], t(1)).await;
    let c2 = single(&store, b.id, a.id, t(2)).await;
    let c3 = group(&store, b.id, &[], t(3)).await;
    assert_eq!(sorted(store.conversation_ids_of(a.id).await.expect("ids")), sorted(vec![c1, c2]));
    assert_eq!(sorted(store.conversation_ids_of(b.id).await.expect("ids")), sorted(vec![c1, c2, c3]));
    assert!(store.conversation_ids_of(UserId::new()).await.expect("ids").is_empty());
}

/// Co-members: everyone sharing a conversation, each once, never the user themself.
pub async fn co_members_of_are_distinct(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let c = user(&store, "carol").await;
    let d = user(&store, "dave").await;
    let e = user(&store, "erin").await;
    group(&store, a.id, &[b.id, c.id], t(1)).await;
    single(&store, b.id, a.id, t(2)).await;
    single(&store, a.id, d.id, t(3)).await;
    group(&store, e.id, &[b.id], t(4)).await;
    assert_eq!(sorted(store.co_members_of(a.id).await.expect("co_members_of")), sorted(vec![b.id, c.id, d.id]));
    assert_eq!(sorted(store.co_members_of(e.id).await.expect("co_members_of")), vec![b.id]);
    let loner = user(&store, "loner").await;
    group(&store, loner.id, &[], t(5)).await;
    assert!(store.co_members_of(loner.id).await.expect("co_members_of").is_empty());
}

/// `member_role`: the role, or `None` for non-members and unknown conversations.
pub async fn member_role_of_members_only(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let c = user(&store, "carol").await;
    let id = group(&store, a.id, &[b.id], t(1)).await;
    assert_eq!(store.member_role(id, a.id).await.expect("role"), Some(Role::Admin));
    assert_eq!(store.member_role(id, b.id).await.expect("role"), Some(Role::Member));
    assert_eq!(store.member_role(id, c.id).await.expect("role"), None);
    assert_eq!(store.member_role(ConversationId::new(), a.id).await.expect("role"), None);
}

/// Renaming changes only what is given; an unknown conversation is `NotFound`.
pub async fn update_conversation_changes_given_fields(store: DynStore) {
    let a = user(&store, "alice").await;
    let id = group(&store, a.id, &[], t(1)).await;
    store.update_conversation(id, Some("Renamed".into()), None).await.expect("rename");
    let conv = store.conversation(id, a.id).await.expect("conversation").expect("exists");
    assert_eq!(conv.name.as_deref(), Some("Renamed"));
    assert_eq!(conv.avatar, None);
    store.update_conversation(id, None, Some("https://img.example/n.png".into())).await.expect("re-picture");
    let conv = store.conversation(id, a.id).await.expect("conversation").expect("exists");
    assert_eq!(conv.name.as_deref(), Some("Renamed"));
    assert_eq!(conv.avatar.as_deref(), Some("https://img.example/n.png"));
    let unknown = store.update_conversation(ConversationId::new(), Some("x".into()), None).await;
    assert!(matches!(unknown, Err(StoreError::NotFound)), "got {unknown:?}");
}

/// `add_members` adds newcomers as members and returns only them; existing members keep
/// their role and join time.
pub async fn add_members_returns_only_added(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let c = user(&store, "carol").await;
    let d = user(&store, "dave").await;
    let id = group(&store, a.id, &[b.id], t(1)).await;
    let added = store.add_members(id, a.id, &[b.id, c.id, a.id, d.id, c.id], t(50)).await.expect("add_members");
    assert_eq!(sorted(added.expect("alice is an admin")), sorted(vec![c.id, d.id]));
    let conv = store.conversation(id, a.id).await.expect("conversation").expect("exists");
    assert_eq!(conv.participants.len(), 4);
    assert_eq!(conv.participants[0].user_id, a.id, "creator still first");
    let pa = conv.participant(a.id).expect("a");
    assert_eq!((pa.role, pa.joined_at), (Role::Admin, t(1)));
    let pb = conv.participant(b.id).expect("b");
    assert_eq!((pb.role, pb.joined_at), (Role::Member, t(1)));
    for newcomer in [c.id, d.id] {
        let p = conv.participant(newcomer).expect("added");
        assert_eq!((p.role, p.joined_at, p.last_read_seq), (Role::Member, t(50), 0));
    }
    assert_eq!(store.add_members(id, a.id, &[b.id], t(60)).await.expect("add_members"), Some(vec![]));
    // A member who is not an admin adds nobody.
    let e = user(&store, "erin").await;
    assert_eq!(store.add_members(id, b.id, &[e.id], t(70)).await.expect("add_members"), None);
    assert_eq!(store.member_role(id, e.id).await.expect("role"), None);
}

/// `remove_member`: a member leaves once (then `NotMember`); only an admin removes others.
pub async fn remove_member_once(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let c = user(&store, "carol").await;
    let id = group(&store, a.id, &[b.id, c.id], t(1)).await;
    assert_eq!(
        store.remove_member(id, b.id, c.id).await.expect("remove"),
        Removal::NotAllowed,
        "a member removes nobody"
    );
    assert_eq!(store.member_role(id, c.id).await.expect("role"), Some(Role::Member));
    assert_eq!(store.remove_member(id, b.id, b.id).await.expect("leave"), Removal::Removed { promoted: None });
    assert_eq!(store.remove_member(id, b.id, b.id).await.expect("leave again"), Removal::NotMember);
    assert_eq!(store.member_role(id, b.id).await.expect("role"), None);
    assert_eq!(store.remove_member(id, a.id, c.id).await.expect("admin removes"), Removal::Removed { promoted: None });
    let conv = store.conversation(id, a.id).await.expect("conversation").expect("exists");
    assert_eq!(conv.member_ids(), vec![a.id]);
    assert!(store.conversation_ids_of(b.id).await.expect("ids").is_empty());
    assert_eq!(store.remove_member(ConversationId::new(), a.id, a.id).await.expect("unknown"), Removal::NotMember);
}

/// The last admin leaving promotes the first remaining member (the creator first, then
/// the earliest joined) in the same step; the last member leaving promotes nobody.
pub async fn last_admin_leaving_promotes_the_next_member(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let c = user(&store, "carol").await;
    let id = group(&store, a.id, &[b.id], t(1)).await;
    store.add_members(id, a.id, &[c.id], t(5)).await.expect("add").expect("admin");
    assert_eq!(store.remove_member(id, a.id, a.id).await.expect("leave"), Removal::Removed { promoted: Some(b.id) });
    assert_eq!(store.member_role(id, b.id).await.expect("role"), Some(Role::Admin));
    assert_eq!(store.member_role(id, c.id).await.expect("role"), Some(Role::Member));
    // Another admin remains: nobody else is promoted.
    assert_eq!(store.remove_member(id, b.id, c.id).await.expect("remove"), Removal::Removed { promoted: None });
    assert_eq!(store.remove_member(id, b.id, b.id).await.expect("last leaves"), Removal::Removed { promoted: None });
}

/// The sole admin and the member next in line leave at the same moment, 20 times over:
/// every group keeps exactly one admin among those left, and both leaves take effect.
pub async fn concurrent_leaves_keep_an_admin(store: DynStore) {
    for round in 0..20 {
        let a = user(&store, &format!("a{round}")).await;
        let b = user(&store, &format!("b{round}")).await;
        let c = user(&store, &format!("c{round}")).await;
        let d = user(&store, &format!("d{round}")).await;
        let id = group(&store, a.id, &[b.id, c.id, d.id], t(1)).await;
        let (s1, s2) = (store.clone(), store.clone());
        let leave_a = tokio::spawn(async move { s1.remove_member(id, a.id, a.id).await });
        let leave_b = tokio::spawn(async move { s2.remove_member(id, b.id, b.id).await });
        let ra = leave_a.await.expect("task").expect("a leaves");
        let rb = leave_b.await.expect("task").expect("b leaves");
        assert!(matches!(ra, Removal::Removed { .. }), "round {round}: {ra:?}");
        assert!(matches!(rb, Removal::Removed { .. }), "round {round}: {rb:?}");
        let conv = store.conversation(id, c.id).await.expect("conversation").expect("exists");
        assert_eq!(sorted(conv.member_ids()), sorted(vec![c.id, d.id]), "round {round}");
        let admins: Vec<_> = conv.participants.iter().filter(|p| p.role == Role::Admin).map(|p| p.user_id).collect();
        assert_eq!(admins.len(), 1, "round {round}: admins {admins:?}");
    }
}

/// Unread: messages from others after the viewer's pointer, deleted ones excluded.
pub async fn unread_count_counts_others_unread_messages(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let c = user(&store, "carol").await;
    let id = group(&store, a.id, &[b.id, c.id], t(1)).await;
    send(&store, id, b.id, "1", t(10)).await;
    send(&store, id, b.id, "2", t(20)).await;
    send(&store, id, a.id, "3", t(30)).await;
    send(&store, id, b.id, "4", t(40)).await;
    send(&store, id, b.id, "5", t(50)).await;
    let sixth = send(&store, id, c.id, "6", t(60)).await;
    send(&store, id, a.id, "7", t(70)).await;
    send(&store, id, c.id, "8", t(80)).await;

    let unread = |viewer: UserId| {
        let store = store.clone();
        async move { store.conversation(id, viewer).await.expect("conversation").expect("exists").unread_count }
    };
    assert_eq!(last_read_seq(&store, id, a.id).await, 7);
    assert_eq!(unread(a.id).await, 1, "only carol's 8 is after alice's pointer");
    assert_eq!(unread(b.id).await, 3, "bob: 6 and 8 from carol, 7 from alice");
    store.delete_message(sixth.id, t(90)).await.expect("delete");
    assert_eq!(unread(b.id).await, 2, "a deleted message is not unread");
    assert_eq!(unread(c.id).await, 0);
    assert!(store.mark_read(id, b.id, 7, t(100)).await.expect("mark_read"));
    assert_eq!(unread(b.id).await, 1);
    let listed = store.conversations_of(b.id, None, 10).await.expect("conversations_of");
    assert_eq!(listed[0].unread_count, 1, "the listing shows the same count");
}
