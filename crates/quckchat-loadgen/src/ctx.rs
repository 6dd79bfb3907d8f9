//! What the generator counts: every text frame a connection receives goes through
//! [`Ctx::on_text`]. Deliveries carry the send time and the phase tag in their content
//! (`~B<tag>~<send µs>~…`), so latency is measured end to end on one clock and a late
//! delivery from an earlier phase is counted as such, never as this phase's.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Instant;

use serde::Serialize;

use crate::conn::{AckKind, Conn};
use crate::hist::{Hist, Summary};

/// The counters of one measurement window.
#[derive(Default)]
pub struct Phase {
    pub tag: u32,
    pub sent: u64,
    pub acked_ok: u64,
    pub ack_errors: BTreeMap<String, u64>,
    /// Deliveries the acked messages owe (members connected at send time).
    pub expected: u64,
    pub delivered: u64,
    pub delivered_slow: u64,
    /// Seq numbers skipped, seen by a receiver (a later one arrived first or instead).
    pub gaps: u64,
    pub gaps_slow: u64,
    /// A seq at or below one already seen on that connection.
    pub dups: u64,
    /// Deliveries tagged with an earlier phase.
    pub stale: u64,
    pub typing: u64,
    pub presence: u64,
    pub other_events: u64,
    pub lat: Hist,
    pub lat_slow: Hist,
    pub ack_lat: Hist,
    pub last_delivery_us: u64,
    pub min_seq: u64,
    pub max_seq: u64,
}

/// A phase's counters, for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseReport {
    pub sent: u64,
    pub acked_ok: u64,
    pub ack_errors: BTreeMap<String, u64>,
    pub no_ack: u64,
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub gaps: u64,
    pub dups: u64,
    pub stale: u64,
    pub typing: u64,
    pub presence: u64,
    pub latency: Summary,
    pub ack_latency: Summary,
    pub min_seq: u64,
    pub max_seq: u64,
}

pub struct Ctx {
    t0: Instant,
    pub phase: RefCell<Phase>,
    next_tag: Cell<u32>,
    /// Conversation id → index in the fixture.
    pub conv_index: HashMap<String, u32>,
    pub disconnects: Cell<u64>,
    pub protocol_errors: Cell<u64>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr_find(hay, needle)
}

fn memchr_find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..hay.len() - needle.len() + 1].iter().position(|&b| b == first) {
            None => return None,
            Some(p) => {
                i += p;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

fn digits(hay: &[u8]) -> Option<u64> {
    let n = hay.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 {
        return None;
    }
    std::str::from_utf8(&hay[..n]).ok()?.parse().ok()
}

/// The `"key":<digits>` value in a JSON text.
fn num_field(hay: &[u8], key: &[u8]) -> Option<u64> {
    let i = find(hay, key)?;
    digits(&hay[i + key.len()..])
}

/// The `~B<tag>~<µs>~` marker in a content or candidate string.
fn marker(hay: &[u8]) -> Option<(u32, u64)> {
    let i = find(hay, b"~B")?;
    let rest = &hay[i + 2..];
    let tag = digits(rest)?;
    let skip = rest.iter().position(|&b| b == b'~')? + 1;
    let us = digits(&rest[skip..])?;
    Some((tag as u32, us))
}

impl Ctx {
    pub fn new(conv_index: HashMap<String, u32>) -> Rc<Self> {
        Rc::new(Self {
            t0: Instant::now(),
            phase: RefCell::new(Phase::default()),
            next_tag: Cell::new(1),
            conv_index,
            disconnects: Cell::new(0),
            protocol_errors: Cell::new(0),
        })
    }

    pub fn now_us(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64
    }

    /// Starts a new measurement window; returns the previous one's counters.
    pub fn new_phase(&self) -> Phase {
        let tag = self.next_tag.get();
        self.next_tag.set(tag + 1);
        std::mem::replace(&mut *self.phase.borrow_mut(), Phase { tag, ..Phase::default() })
    }

    pub fn tag(&self) -> u32 {
        self.phase.borrow().tag
    }

    /// A marker for content sent now.
    pub fn marker(&self) -> String {
        format!("~B{}~{}~", self.tag(), self.now_us())
    }

    pub fn on_disconnect(&self, _conn: &Conn) {
        self.disconnects.set(self.disconnects.get() + 1);
    }

    /// One Engine.IO text packet (not a ping) received by `conn`.
    pub fn on_text(&self, conn: &Rc<Conn>, t: &[u8]) {
        // `4` + Socket.IO: `2/nsp,[…]` event or `3/nsp,ID[…]` ack.
        if t.len() < 3 || t[0] != b'4' {
            return;
        }
        let kind = t[1];
        let mut rest = &t[2..];
        if rest.first() == Some(&b'/') {
            match rest.iter().position(|&b| b == b',') {
                Some(i) => rest = &rest[i + 1..],
                None => return,
            }
        }
        match kind {
            b'2' => self.on_event(conn, rest),
            b'3' => self.on_ack(conn, rest),
            b'1' => conn.alive.set(false),
            _ => {}
        }
    }

    fn on_event(&self, conn: &Rc<Conn>, rest: &[u8]) {
        // Skip an ack id, then `["name",…`.
        let start = rest.iter().position(|&b| b == b'[').unwrap_or(0);
        let body = &rest[start..];
        if body.len() < 3 || body[1] != b'"' {
            self.protocol_errors.set(self.protocol_errors.get() + 1);
            return;
        }
        let Some(end) = body[2..].iter().position(|&b| b == b'"') else { return };
        let name = &body[2..2 + end];
        let payload = &body[2 + end + 1..];
        let now = self.now_us();
        match name {
            b"message:new" | b"offer" | b"answer" | b"ice-candidate" => {
                let Some((tag, sent)) = marker(payload) else {
                    self.phase.borrow_mut().other_events += 1;
                    return;
                };
                let mut ph = self.phase.borrow_mut();
                if tag != ph.tag {
                    ph.stale += 1;
                    return;
                }
                let lat = now.saturating_sub(sent);
                let slow = conn.slow.get();
                if slow {
                    ph.delivered_slow += 1;
                    ph.lat_slow.record(lat);
                } else {
                    ph.lat.record(lat);
                }
                ph.delivered += 1;
                ph.last_delivery_us = now;
                if name == b"message:new" {
                    let (Some(seq), Some(conv)) = (num_field(payload, b"\"seq\":"), self.conv_of(payload)) else {
                        return;
                    };
                    let mut seqs = conn.seqs.borrow_mut();
                    match seqs.iter_mut().find(|(c, _)| *c == conv) {
                        None => seqs.push((conv, seq)),
                        Some((_, last)) => {
                            if seq > *last + 1 {
                                ph.gaps += seq - *last - 1;
                                if slow {
                                    ph.gaps_slow += seq - *last - 1;
                                }
                            } else if seq <= *last {
                                ph.dups += 1;
                            }
                            *last = (*last).max(seq);
                        }
                    }
                }
            }
            b"user:typing" | b"user:stop-typing" => self.phase.borrow_mut().typing += 1,
            b"user:online" | b"user:offline" => self.phase.borrow_mut().presence += 1,
            b"call:incoming" => {
                if let Some(id) = str_field(payload, b"\"callId\":\"") {
                    *conn.call_id.borrow_mut() = Some(id);
                }
            }
            b"call:answered" => conn.answered.set(true),
            _ => self.phase.borrow_mut().other_events += 1,
        }
    }

    fn conv_of(&self, payload: &[u8]) -> Option<u32> {
        let id = str_field(payload, b"\"conversationId\":\"")?;
        self.conv_index.get(&id).copied()
    }

    fn on_ack(&self, conn: &Rc<Conn>, rest: &[u8]) {
        let Some(id) = digits(rest) else { return };
        let Some(p) = conn.pending.borrow_mut().remove(&id) else { return };
        conn.acked.notify_one();
        let now = self.now_us();
        let ok = find(rest, b"\"success\":true").is_some();
        let mut ph = self.phase.borrow_mut();
        if p.tag != ph.tag {
            ph.stale += 1;
            return;
        }
        if ok {
            ph.acked_ok += 1;
            ph.ack_lat.record(now.saturating_sub(p.sent_us));
            match p.kind {
                AckKind::Message { members } => {
                    ph.expected += members as u64;
                    if let Some(seq) = num_field(rest, b"\"seq\":") {
                        ph.min_seq = if ph.min_seq == 0 { seq } else { ph.min_seq.min(seq) };
                        ph.max_seq = ph.max_seq.max(seq);
                    }
                }
                AckKind::Initiate => {
                    if let Some(call) = str_field(rest, b"\"callId\":\"") {
                        *conn.call_id.borrow_mut() = Some(call);
                    }
                }
                AckKind::Answer => conn.answered.set(true),
                AckKind::Plain | AckKind::Relay => {}
            }
        } else {
            let code = str_field(rest, b"\"code\":\"").unwrap_or_else(|| "unknown".into());
            *ph.ack_errors.entry(code).or_default() += 1;
        }
    }

    /// Sends nothing; the number of acks still awaited on these connections.
    pub fn outstanding(conns: &[Rc<Conn>]) -> u64 {
        conns.iter().map(|c| c.pending.borrow().len() as u64).sum()
    }
}

fn str_field(hay: &[u8], key: &[u8]) -> Option<String> {
    let i = find(hay, key)?;
    let rest = &hay[i + key.len()..];
    let end = rest.iter().position(|&b| b == b'"')?;
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

impl Phase {
    /// The report of this phase; `outstanding` acks are counted as never answered.
    pub fn report(&self, outstanding: u64) -> PhaseReport {
        let errors: u64 = self.ack_errors.values().sum();
        let _ = errors;
        PhaseReport {
            sent: self.sent,
            acked_ok: self.acked_ok,
            ack_errors: self.ack_errors.clone(),
            no_ack: outstanding,
            expected: self.expected,
            delivered: self.delivered,
            lost: self.expected.saturating_sub(self.delivered),
            gaps: self.gaps,
            dups: self.dups,
            stale: self.stale,
            typing: self.typing,
            presence: self.presence,
            latency: {
                let mut all = self.lat.clone();
                all.merge(&self.lat_slow);
                all.summary()
            },
            ack_latency: self.ack_lat.summary(),
            min_seq: self.min_seq,
            max_seq: self.max_seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanners() {
        let p = br#",{"id":"x","conversationId":"0190-abc","seq":42,"content":"~B7~123456~pad"}]"#;
        assert_eq!(num_field(p, b"\"seq\":"), Some(42));
        assert_eq!(str_field(p, b"\"conversationId\":\""), Some("0190-abc".into()));
        assert_eq!(marker(p), Some((7, 123456)));
        assert_eq!(find(b"abcabd", b"abd"), Some(3));
        assert_eq!(find(b"ab", b"abd"), None);
    }
}
