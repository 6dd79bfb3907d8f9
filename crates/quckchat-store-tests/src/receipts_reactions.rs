//! Read pointers, read receipts (`readBy`) and reactions.

use quckchat_domain::UserId;
use quckchat_domain::model::{Message, Reaction, Timestamp};
use quckchat_domain::store::HistoryCursor;

use crate::support::{DynStore, group, last_read_seq, send, t, user};

fn readers(m: &Message) -> Vec<(UserId, Timestamp)> {
    let mut r: Vec<(UserId, Timestamp)> = m.read_by.iter().map(|r| (r.user_id, r.read_at)).collect();
    r.sort();
    r
}

fn sorted_pairs(mut v: Vec<(UserId, Timestamp)>) -> Vec<(UserId, Timestamp)> {
    v.sort();
    v
}

/// The read pointer only moves up; `mark_read` says whether it moved.
pub async fn mark_read_moves_up_only(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let id = group(&store, a.id, &[b.id], t(0)).await;
    for n in 1..=3 {
        send(&store, id, b.id, "m", t(n)).await;
    }
    assert!(store.mark_read(id, a.id, 2, t(10)).await.expect("mark_read"));
    assert!(store.mark_read(id, a.id, 3, t(20)).await.expect("mark_read"));
    assert!(!store.mark_read(id, a.id, 3, t(30)).await.expect("mark_read"), "not moving");
    assert!(!store.mark_read(id, a.id, 1, t(40)).await.expect("mark_read"), "never down");
    assert_eq!(last_read_seq(&store, id, a.id).await, 3);

    let second = store.history(id, HistoryCursor::AfterSeq(1), 1).await.expect("history").remove(0);
    assert_eq!(readers(&second), vec![(a.id, t(10))], "a refused move records no receipt");
}

/// `readBy` lists each reader once, with the time their pointer first reached the
/// message, never the sender; sending moves the sender's pointer too.
pub async fn read_by_is_first_time_reached(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let c = user(&store, "carol").await;
    let d = user(&store, "dave").await;
    let id = group(&store, a.id, &[b.id, c.id, d.id], t(0)).await;
    let mut m = Vec::new();
    for n in 1..=5 {
        m.push(send(&store, id, a.id, &format!("m{n}"), t(n * 10)).await);
    }
    assert!(store.mark_read(id, b.id, 3, t(100)).await.expect("mark_read"));
    assert!(store.mark_read(id, b.id, 5, t(200)).await.expect("mark_read"));
    assert!(store.mark_read(id, c.id, 2, t(300)).await.expect("mark_read"));

    let fetched = |i: usize| {
        let store = store.clone();
        let mid = m[i].id;
        async move { store.message(mid).await.expect("message").expect("exists") }
    };
    assert_eq!(readers(&fetched(0).await), sorted_pairs(vec![(b.id, t(100)), (c.id, t(300))]));
    assert_eq!(readers(&fetched(1).await), sorted_pairs(vec![(b.id, t(100)), (c.id, t(300))]));
    assert_eq!(readers(&fetched(2).await), vec![(b.id, t(100))]);
    assert_eq!(readers(&fetched(3).await), vec![(b.id, t(200))]);
    assert_eq!(readers(&fetched(4).await), vec![(b.id, t(200))]);

    // Bob answers: his own message has no readers yet. Carol answers too: her pointer
    // passes bob's message and the older ones she had not read.
    let six = send(&store, id, b.id, "m6", t(400)).await;
    assert!(six.read_by.is_empty());
    let seven = send(&store, id, c.id, "m7", t(500)).await;
    assert!(seven.read_by.is_empty(), "never the sender");
    let six = store.message(six.id).await.expect("message").expect("exists");
    assert_eq!(readers(&six), vec![(c.id, t(500))]);
    assert_eq!(readers(&fetched(2).await), sorted_pairs(vec![(b.id, t(100)), (c.id, t(500))]));

    // History pages compute the same receipts as single lookups.
    let page = store.history(id, HistoryCursor::Latest, 10).await.expect("history");
    assert_eq!(page.len(), 7);
    for message in &page {
        let single = store.message(message.id).await.expect("message").expect("exists");
        assert_eq!(readers(message), readers(&single), "seq {}", message.seq);
        assert!(message.read_by.iter().all(|r| r.user_id != message.sender_id));
    }
    let older = store.history(id, HistoryCursor::AfterSeq(0), 2).await.expect("history");
    assert_eq!(readers(&older[1]), sorted_pairs(vec![(b.id, t(100)), (c.id, t(300))]));
}

/// Reactions: adding twice answers `false`, removing twice answers `false`, and the
/// message lists them oldest first.
pub async fn reactions_add_and_remove(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let c = user(&store, "carol").await;
    let id = group(&store, a.id, &[b.id, c.id], t(0)).await;
    let m = send(&store, id, a.id, "react to me", t(1)).await;
    assert!(store.add_reaction(m.id, b.id, "👍", t(10)).await.expect("add"));
    assert!(!store.add_reaction(m.id, b.id, "👍", t(11)).await.expect("add again"));
    assert!(store.add_reaction(m.id, c.id, "👍", t(20)).await.expect("add"));
    assert!(store.add_reaction(m.id, b.id, "❤️", t(30)).await.expect("add"));

    let reaction = |emoji: &str, user_id: UserId| Reaction { emoji: emoji.to_string(), user_id };
    let fetched = store.message(m.id).await.expect("message").expect("exists");
    assert_eq!(fetched.reactions, vec![reaction("👍", b.id), reaction("👍", c.id), reaction("❤️", b.id)]);

    assert!(store.remove_reaction(m.id, b.id, "👍").await.expect("remove"));
    assert!(!store.remove_reaction(m.id, b.id, "👍").await.expect("remove again"));
    assert!(!store.remove_reaction(m.id, a.id, "🎉").await.expect("remove none"));
    let page = store.history(id, HistoryCursor::Latest, 1).await.expect("history");
    assert_eq!(page[0].reactions, vec![reaction("👍", c.id), reaction("❤️", b.id)]);
}
