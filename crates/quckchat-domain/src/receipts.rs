//! Read receipts as every store reports them: a user's read pointer moves up by
//! receipts `(seq, read_at)`, and a message's `readBy` lists, for each reader other than
//! its sender, the first time the pointer reached the message's `seq`. The stores only
//! fetch the receipts; this computes `readBy` the same way for all of them.

use std::collections::HashMap;

use crate::ids::UserId;
use crate::model::{Message, ReadReceipt, Timestamp};

/// The receipts of one conversation (or of the part of it a page needs).
#[derive(Debug, Default)]
pub struct ReceiptIndex {
    /// Per user, `(seq, first time the pointer reached at least seq)`, by seq.
    by_user: HashMap<UserId, Vec<(i64, Timestamp)>>,
}

impl ReceiptIndex {
    /// Builds the index from receipts `(user, seq, read_at)` in any order. To answer for
    /// messages with `seq` in `low..=high`, give every receipt in that range plus, per user,
    /// the earliest receipt above it.
    pub fn new(receipts: impl IntoIterator<Item = (UserId, i64, Timestamp)>) -> Self {
        let mut by_user: HashMap<UserId, Vec<(i64, Timestamp)>> = HashMap::new();
        for (user, seq, read_at) in receipts {
            by_user.entry(user).or_default().push((seq, read_at));
        }
        for receipts in by_user.values_mut() {
            receipts.sort_unstable();
            // Reading up to seq n also reads everything below it: the time a message was
            // first read is the earliest receipt at or above its seq.
            let mut earliest: Option<Timestamp> = None;
            for (_, read_at) in receipts.iter_mut().rev() {
                let min = earliest.map_or(*read_at, |e| e.min(*read_at));
                *read_at = min;
                earliest = Some(min);
            }
        }
        Self { by_user }
    }

    /// Who read `message` (never its sender) and when first, earliest first.
    pub fn read_by(&self, message: &Message) -> Vec<ReadReceipt> {
        let mut read_by: Vec<ReadReceipt> = self
            .by_user
            .iter()
            .filter(|(user, _)| **user != message.sender_id)
            .filter_map(|(user, receipts)| {
                let first = receipts.partition_point(|(seq, _)| *seq < message.seq);
                receipts.get(first).map(|(_, read_at)| ReadReceipt { user_id: *user, read_at: *read_at })
            })
            .collect();
        read_by.sort_by_key(|r| (r.read_at, r.user_id));
        read_by
    }
}
