//! Messages: sequence numbers (also under concurrency), idempotent retries, history
//! pages, edits, deletes, attachments and replies.

use std::collections::HashSet;

use quckchat_domain::model::{Appended, Attachment, MessageKind, NewMessage};
use quckchat_domain::store::HistoryCursor;
use quckchat_domain::{ConversationId, MessageId, StoreError};

use crate::support::{DynStore, created, group, last_read_seq, message_push, send, single, t, text, user};

/// Appends get seq 1, 2, 3 and come back as written, with no reactions or readers.
pub async fn append_assigns_consecutive_seqs(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let id = single(&store, a.id, b.id, t(0)).await;
    for (i, sender) in [a.id, b.id, a.id].into_iter().enumerate() {
        let n = i as i64 + 1;
        let new = text(id, sender, &format!("message {n}"), t(100 * n));
        let m = created(store.append_message(new.clone(), Vec::new()).await.expect("append"));
        assert_eq!(m.seq, n);
        assert_eq!(m.id, new.id);
        assert_eq!(m.conversation_id, id);
        assert_eq!(m.sender_id, sender);
        assert_eq!(m.kind, MessageKind::Text);
        assert_eq!(m.content, new.content);
        assert_eq!(m.created_at, new.created_at);
        assert!(m.attachments.is_empty() && m.reactions.is_empty() && m.read_by.is_empty());
        assert_eq!((m.edited_at, m.deleted_at, m.reply_to, m.client_message_id.as_deref()), (None, None, None, None));
        assert_eq!(store.message(m.id).await.expect("message"), Some(m));
    }
    assert!(store.message(MessageId::new()).await.expect("message").is_none());
}

/// Appending moves the sender's read pointer to the new message and the conversation's
/// `last_seq` / `last_message_at`.
pub async fn append_updates_pointer_and_conversation(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let id = single(&store, a.id, b.id, t(0)).await;
    send(&store, id, a.id, "hi", t(100)).await;
    assert_eq!(last_read_seq(&store, id, a.id).await, 1);
    assert_eq!(last_read_seq(&store, id, b.id).await, 0);
    let conv = store.conversation(id, b.id).await.expect("conversation").expect("exists");
    assert_eq!((conv.last_seq, conv.last_message_at, conv.unread_count), (1, Some(t(100)), 1));

    send(&store, id, b.id, "hello", t(200)).await;
    send(&store, id, b.id, "there", t(300)).await;
    assert_eq!(last_read_seq(&store, id, b.id).await, 3);
    assert_eq!(last_read_seq(&store, id, a.id).await, 1);
    let conv = store.conversation(id, a.id).await.expect("conversation").expect("exists");
    assert_eq!((conv.last_seq, conv.last_message_at, conv.unread_count), (3, Some(t(300)), 2));
}

/// Appending to an unknown conversation is `NotFound`.
pub async fn append_to_unknown_conversation_not_found(store: DynStore) {
    let a = user(&store, "alice").await;
    let result = store.append_message(text(ConversationId::new(), a.id, "x", t(1)), Vec::new()).await;
    assert!(matches!(result, Err(StoreError::NotFound)), "got {result:?}");
}

/// An append by a user who is not (or no longer) a member is refused by the store itself,
/// whatever the caller believed, and writes nothing: no seq, no message, no push.
pub async fn append_by_non_member_is_refused(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let c = user(&store, "carol").await;
    let id = group(&store, a.id, &[b.id], t(0)).await;
    let outsider =
        store.append_message(text(id, c.id, "let me in", t(1)), vec![message_push(b.id, id, None, c.id, t(1))]);
    assert!(matches!(outsider.await, Ok(Appended::NotMember)));
    store.remove_member(id, b.id, b.id).await.expect("bob leaves");
    let gone = store.append_message(text(id, b.id, "one more", t(2)), Vec::new()).await;
    assert!(matches!(gone, Ok(Appended::NotMember)), "got {gone:?}");
    assert!(store.history(id, HistoryCursor::Latest, 10).await.expect("history").is_empty());
    assert!(store.pushes_for(b.id).await.expect("pushes_for").is_empty());
    let conv = store.conversation(id, a.id).await.expect("conversation").expect("exists");
    assert_eq!(conv.last_seq, 0);
    assert_eq!(
        created(store.append_message(text(id, a.id, "still here", t(3)), Vec::new()).await.expect("append")).seq,
        1
    );
}

/// 200 appends from 8 concurrent tasks into one conversation get exactly 1..=200.
pub async fn concurrent_appends_are_gap_free(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let id = group(&store, a.id, &[b.id], t(0)).await;
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let store = store.clone();
            let sender = if task % 2 == 0 { a.id } else { b.id };
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..25 {
                    let new = text(id, sender, &format!("{task}-{i}"), t(1 + i));
                    seqs.push(created(store.append_message(new, Vec::new()).await.expect("append")).seq);
                }
                seqs
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.extend(task.await.expect("task"));
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=200).collect::<Vec<i64>>(), "no gaps, no repeats");

    let stored: Vec<i64> =
        store.history(id, HistoryCursor::AfterSeq(0), 200).await.expect("history").iter().map(|m| m.seq).collect();
    assert_eq!(stored, (1..=200).collect::<Vec<i64>>());
    let conv = store.conversation(id, a.id).await.expect("conversation").expect("exists");
    assert_eq!(conv.last_seq, 200);
}

/// Concurrent appends to two conversations keep two separate sequences.
pub async fn concurrent_appends_keep_separate_sequences(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let c1 = group(&store, a.id, &[b.id], t(0)).await;
    let c2 = single(&store, a.id, b.id, t(0)).await;
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let store = store.clone();
            let conv = if task % 2 == 0 { c1 } else { c2 };
            tokio::spawn(async move {
                let mut out = Vec::new();
                for i in 0..10 {
                    let m =
                        created(store.append_message(text(conv, a.id, "x", t(i)), Vec::new()).await.expect("append"));
                    out.push((m.conversation_id, m.seq));
                }
                out
            })
        })
        .collect();
    let mut per_conv: Vec<(ConversationId, i64)> = Vec::new();
    for task in tasks {
        per_conv.extend(task.await.expect("task"));
    }
    for conv in [c1, c2] {
        let mut seqs: Vec<i64> = per_conv.iter().filter(|(c, _)| *c == conv).map(|(_, s)| *s).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=40).collect::<Vec<i64>>());
    }
}

/// A retried `(sender, clientMessageId)` gives back the first message and writes nothing:
/// no new message, no new seq, no extra push jobs.
pub async fn client_message_id_is_idempotent(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let id = single(&store, a.id, b.id, t(0)).await;
    let first = NewMessage { client_message_id: Some("c-1".into()), ..text(id, a.id, "hello", t(10)) };
    let push = message_push(b.id, id, Some(first.id), a.id, t(10));
    let original = created(store.append_message(first, vec![push.clone()]).await.expect("append"));
    assert_eq!(original.client_message_id.as_deref(), Some("c-1"));

    let retry = NewMessage { client_message_id: Some("c-1".into()), ..text(id, a.id, "hello again", t(20)) };
    let retry_push = message_push(b.id, id, Some(retry.id), a.id, t(20));
    match store.append_message(retry, vec![retry_push]).await.expect("append retry") {
        Appended::Existing(m) => assert_eq!(m, original),
        other => panic!("a retry gave {other:?}"),
    }
    let history = store.history(id, HistoryCursor::Latest, 10).await.expect("history");
    assert_eq!(history, vec![original]);
    assert_eq!(store.pushes_for(b.id).await.expect("pushes_for"), vec![push]);
    let conv = store.conversation(id, b.id).await.expect("conversation").expect("exists");
    assert_eq!((conv.last_seq, conv.last_message_at), (1, Some(t(10))));
}

/// The same clientMessageId from another sender is another message.
pub async fn client_message_id_is_per_sender(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let id = single(&store, a.id, b.id, t(0)).await;
    let from_a = NewMessage { client_message_id: Some("same".into()), ..text(id, a.id, "a", t(1)) };
    let from_b = NewMessage { client_message_id: Some("same".into()), ..text(id, b.id, "b", t(2)) };
    let ma = created(store.append_message(from_a, Vec::new()).await.expect("append a"));
    let mb = created(store.append_message(from_b, Vec::new()).await.expect("append b"));
    assert_eq!((ma.seq, mb.seq), (1, 2));
    assert_ne!(ma.id, mb.id);
}

/// Eight concurrent sends of one clientMessageId: one is created, all see its id.
pub async fn concurrent_duplicates_create_once(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let id = single(&store, a.id, b.id, t(0)).await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            let new = NewMessage { client_message_id: Some("dup".into()), ..text(id, a.id, &format!("try {i}"), t(i)) };
            let push = message_push(b.id, id, Some(new.id), a.id, t(i));
            tokio::spawn(async move { store.append_message(new, vec![push]).await.expect("append") })
        })
        .collect();
    let mut created_count = 0;
    let mut ids = HashSet::new();
    for task in tasks {
        match task.await.expect("task") {
            Appended::Created(m) => {
                created_count += 1;
                ids.insert(m.id);
            }
            Appended::Existing(m) => {
                ids.insert(m.id);
            }
            Appended::NotMember => panic!("the sender is a member"),
        }
    }
    assert_eq!(created_count, 1);
    assert_eq!(ids.len(), 1, "everyone got the same message");
    assert_eq!(store.history(id, HistoryCursor::Latest, 10).await.expect("history").len(), 1);
    assert_eq!(store.pushes_for(b.id).await.expect("pushes_for").len(), 1);
}

/// History pages: `Latest` and `Before` newest first, `AfterSeq` ascending, all limited,
/// only this conversation's messages.
pub async fn history_pages(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let id = single(&store, a.id, b.id, t(0)).await;
    let other = group(&store, a.id, &[], t(0)).await;
    let mut sent = Vec::new();
    for n in 1..=5 {
        sent.push(send(&store, id, a.id, &format!("m{n}"), t(n * 10)).await);
        send(&store, other, a.id, "elsewhere", t(n * 10 + 1)).await;
    }
    let seqs = |cursor: HistoryCursor, limit: u32| {
        let store = store.clone();
        async move {
            let page = store.history(id, cursor, limit).await.expect("history");
            assert!(page.iter().all(|m| m.conversation_id == id));
            page.iter().map(|m| m.seq).collect::<Vec<i64>>()
        }
    };
    assert_eq!(seqs(HistoryCursor::Latest, 3).await, vec![5, 4, 3]);
    assert_eq!(seqs(HistoryCursor::Latest, 10).await, vec![5, 4, 3, 2, 1]);
    assert_eq!(seqs(HistoryCursor::Before(sent[2].id), 10).await, vec![2, 1]);
    assert_eq!(seqs(HistoryCursor::Before(sent[2].id), 1).await, vec![2]);
    assert!(seqs(HistoryCursor::Before(sent[0].id), 10).await.is_empty());
    assert_eq!(seqs(HistoryCursor::AfterSeq(2), 2).await, vec![3, 4]);
    assert_eq!(seqs(HistoryCursor::AfterSeq(0), 10).await, vec![1, 2, 3, 4, 5]);
    assert!(seqs(HistoryCursor::AfterSeq(5), 10).await.is_empty());
    let latest = store.history(id, HistoryCursor::Latest, 1).await.expect("history");
    assert_eq!(latest, vec![sent[4].clone()], "pages hold whole messages");
}

/// An edit replaces the content and sets `edited_at`; an unknown id is `NotFound`.
pub async fn edit_sets_content_and_edited_at(store: DynStore) {
    let a = user(&store, "alice").await;
    let id = group(&store, a.id, &[], t(0)).await;
    let m = send(&store, id, a.id, "typo", t(10)).await;
    let edited = store.edit_message(m.id, "fixed", t(20)).await.expect("edit");
    assert_eq!(edited.content, "fixed");
    assert_eq!(edited.edited_at, Some(t(20)));
    assert_eq!((edited.seq, edited.created_at, edited.sender_id), (m.seq, m.created_at, m.sender_id));
    assert_eq!(store.message(m.id).await.expect("message"), Some(edited));
    let unknown = store.edit_message(MessageId::new(), "x", t(30)).await;
    assert!(matches!(unknown, Err(StoreError::NotFound)), "got {unknown:?}");
}

/// A delete empties the message (content and attachments), sets `deleted_at`, keeps the
/// seq and drops the reactions; an unknown id is `NotFound`.
pub async fn delete_empties_and_keeps_seq(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let id = group(&store, a.id, &[b.id], t(0)).await;
    send(&store, id, a.id, "first", t(10)).await;
    let new = NewMessage {
        kind: MessageKind::Image,
        attachments: vec![Attachment {
            url: "https://files.example/p.png".into(),
            kind: Some("image".into()),
            name: None,
            size: None,
            mime_type: None,
            thumbnail_url: None,
            width: None,
            height: None,
            duration: None,
        }],
        ..text(id, a.id, "secret", t(20))
    };
    let m = created(store.append_message(new, Vec::new()).await.expect("append"));
    assert!(store.add_reaction(m.id, b.id, "👍", t(25)).await.expect("react"));

    let deleted = store.delete_message(m.id, t(30)).await.expect("delete");
    assert_eq!(deleted.content, "");
    assert!(deleted.attachments.is_empty());
    assert_eq!(deleted.deleted_at, Some(t(30)));
    assert_eq!(deleted.seq, 2);
    assert!(deleted.reactions.is_empty());
    assert_eq!(store.message(m.id).await.expect("message"), Some(deleted.clone()));
    let page = store.history(id, HistoryCursor::Latest, 10).await.expect("history");
    assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![2, 1], "a deleted message keeps its place");
    assert_eq!(page[0], deleted);
    let unknown = store.delete_message(MessageId::new(), t(40)).await;
    assert!(matches!(unknown, Err(StoreError::NotFound)), "got {unknown:?}");
}

/// Attachments, kind, reply and client id come back exactly as written.
pub async fn attachments_and_reply_round_trip(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let id = single(&store, a.id, b.id, t(0)).await;
    let original = send(&store, id, b.id, "look", t(10)).await;
    let new = NewMessage {
        kind: MessageKind::Video,
        attachments: vec![
            Attachment {
                url: "https://files.example/v.mp4".into(),
                kind: Some("video".into()),
                name: Some("clip \"1\".mp4".into()),
                size: Some(12_345_678_901),
                mime_type: Some("video/mp4".into()),
                thumbnail_url: Some("https://files.example/v.jpg".into()),
                width: Some(1920),
                height: Some(1080),
                duration: Some(12.5),
            },
            Attachment {
                url: "https://files.example/f.bin".into(),
                kind: None,
                name: None,
                size: None,
                mime_type: None,
                thumbnail_url: None,
                width: None,
                height: None,
                duration: None,
            },
        ],
        reply_to: Some(original.id),
        client_message_id: Some("client-42".into()),
        ..text(id, a.id, "a reply ✓", t(20))
    };
    let m = created(store.append_message(new.clone(), Vec::new()).await.expect("append"));
    assert_eq!(m.kind, MessageKind::Video);
    assert_eq!(m.attachments, new.attachments);
    assert_eq!(m.reply_to, Some(original.id));
    assert_eq!(m.client_message_id.as_deref(), Some("client-42"));
    assert_eq!(m.content, "a reply ✓");
    assert_eq!(store.message(m.id).await.expect("message"), Some(m.clone()));
    let page = store.history(id, HistoryCursor::Latest, 1).await.expect("history");
    assert_eq!(page, vec![m]);
}
