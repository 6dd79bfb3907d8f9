//! HTTP long-polling: what a connection's client has not fetched yet, and the one GET
//! that may wait for it.
//!
//! Packets are queued as the WebSocket frames the engine encodes anyway (a broadcast's
//! one frame is shared by WebSocket and polling clients alike); a GET answers with their
//! payloads, the frame headers skipped, in the client's payload format. The queue is
//! bounded in bytes like a WebSocket's.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::eio::{self, Outgoing, Version};
use crate::transport::{SendError, Transport};

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Bytes>,
    bytes: usize,
    /// A GET is waiting (a second one at the same time is an error).
    getting: bool,
    /// The connection is closed: a waiting or later GET gets the close packet.
    closed: bool,
    /// Closed by the client's CLOSE packet: a waiting GET gets a noop, not a CLOSE.
    client_closed: bool,
    /// The probe of an upgrade was answered: GETs are answered at once with a noop.
    upgrading: bool,
    slow: bool,
    /// Upgraded: everything goes through this WebSocket now.
    upgraded: Option<Arc<Transport>>,
}

/// A polling connection's outgoing side.
#[derive(Debug)]
pub(crate) struct Polling {
    state: Mutex<State>,
    wake: Notify,
    budget: usize,
    /// A v3 client that may get binary payloads (it did not ask for `b64`).
    binary_ok: bool,
}

/// Why a GET got no payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PollError {
    /// Another GET is already waiting on this connection.
    Overlap,
}

/// The payload of a server frame (the engine's: final, unmasked, text): its header skipped.
fn frame_payload(frame: &[u8]) -> &[u8] {
    let header = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    };
    frame.get(header..).unwrap_or_default()
}

/// Frames (the engine's server frames) and trailing text packets as one payload in
/// `version`'s format: a text frame's packet as it is, a binary frame's data as a binary
/// packet (in v3 without the type byte its WebSocket frame starts with).
fn payload(version: Version, binary_ok: bool, frames: &[Bytes], extra: &[&str]) -> Body {
    let mut packets: Vec<Outgoing<'_>> = Vec::with_capacity(frames.len() + extra.len());
    for frame in frames {
        let data = frame_payload(frame);
        match frame.first().map(|b| b & 0x0f) {
            Some(1) => {
                if let Some((digit, rest)) = data.split_first().filter(|(d, _)| d.is_ascii_digit())
                    && let Ok(rest) = std::str::from_utf8(rest)
                {
                    packets.push(Outgoing::Text(digit - b'0', rest));
                }
            }
            Some(2) => packets.push(Outgoing::Binary(match version {
                Version::V4 => data,
                Version::V3 => data.get(1..).unwrap_or_default(),
            })),
            _ => {}
        }
    }
    for text in extra {
        if let Some(digit) = text.as_bytes().first() {
            packets.push(Outgoing::Text(digit.wrapping_sub(b'0'), &text[1..]));
        }
    }
    // A v3 client with XHR2 that did not ask for base64 gets binary as binary.
    if version == Version::V3 && binary_ok && packets.iter().any(|p| matches!(p, Outgoing::Binary(_))) {
        let mut body = Vec::new();
        eio::encode_v3_binary_payload(&packets, &mut body);
        return Body::Binary(body);
    }
    let mut body = String::new();
    eio::encode_payload(version, &packets, &mut body);
    Body::Text(body)
}

/// A GET's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Body {
    /// A text payload (`text/plain`).
    Text(String),
    /// A v3 binary payload (`application/octet-stream`).
    Binary(Vec<u8>),
}

impl Polling {
    pub(crate) fn new(budget: usize, binary_ok: bool) -> Self {
        Self { state: Mutex::new(State::default()), wake: Notify::new(), budget, binary_ok }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a frame for the next GET.
    pub(crate) fn send(&self, frame: Bytes) -> Result<(), SendError> {
        let mut state = self.state();
        if let Some(transport) = &state.upgraded {
            return transport.send(frame);
        }
        if state.closed {
            return Err(if state.slow { SendError::SlowConsumer } else { SendError::Closed });
        }
        if !state.queue.is_empty() && state.bytes + frame.len() > self.budget {
            state.closed = true;
            state.slow = true;
            drop(state);
            self.wake.notify_one();
            return Err(SendError::SlowConsumer);
        }
        state.bytes += frame.len();
        state.queue.push_back(frame);
        drop(state);
        self.wake.notify_one();
        Ok(())
    }

    /// Closes: a waiting GET returns the close packet (after what was queued).
    pub(crate) fn close(&self, code: u16, reason: &str) {
        let mut state = self.state();
        if let Some(transport) = &state.upgraded {
            return transport.close(code, reason);
        }
        state.closed = true;
        drop(state);
        self.wake.notify_one();
    }

    /// The upgrade's probe was answered: the waiting GET, if any, returns (a noop) so that
    /// the client stops polling. (A GET that comes later is released by the upgrade.)
    pub(crate) fn release_poll(&self) {
        self.state().upgrading = true;
        self.wake.notify_one();
    }

    /// The client closed the session (its CLOSE packet): a waiting GET ends with a noop.
    pub(crate) fn closed_by_client(&self) {
        let mut state = self.state();
        state.closed = true;
        state.client_closed = true;
        drop(state);
        self.wake.notify_one();
    }

    /// The client completed the upgrade: what is queued goes out on the WebSocket, in
    /// order, and so does everything sent from now on.
    pub(crate) fn upgrade(&self, transport: Arc<Transport>) {
        let mut state = self.state();
        for frame in std::mem::take(&mut state.queue) {
            let _ = transport.send(frame);
        }
        state.bytes = 0;
        state.upgraded = Some(transport);
        drop(state);
        self.wake.notify_one();
    }

    /// Whether the connection went over to a WebSocket.
    pub(crate) fn is_upgraded(&self) -> bool {
        self.state().upgraded.is_some()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state().closed
    }

    pub(crate) fn was_slow(&self) -> bool {
        self.state().slow
    }

    /// Everything queued now, as a payload (the handshake's answer); `None` when empty.
    pub(crate) fn take_now(&self, version: Version) -> Option<Body> {
        let frames = {
            let mut state = self.state();
            state.bytes = 0;
            std::mem::take(&mut state.queue)
        };
        let frames: Vec<Bytes> = frames.into();
        (!frames.is_empty()).then(|| payload(version, self.binary_ok, &frames, &[]))
    }

    /// Waits up to `wait` for something to send, then answers with everything queued
    /// (a noop when nothing came, so the client polls again; the close packet last once
    /// the connection is closed).
    pub(crate) async fn take(&self, version: Version, wait: Duration) -> Result<Body, PollError> {
        {
            let mut state = self.state();
            if state.getting {
                return Err(PollError::Overlap);
            }
            state.getting = true;
        }
        let ready = async {
            loop {
                {
                    let state = self.state();
                    if !state.queue.is_empty() || state.closed || state.upgrading {
                        return;
                    }
                }
                self.wake.notified().await;
            }
        };
        let _ = tokio::time::timeout(wait, ready).await;
        let mut state = self.state();
        state.getting = false;
        // During an upgrade what is queued waits for the WebSocket; the GET gets a noop.
        if state.upgrading || state.upgraded.is_some() {
            return Ok(payload(version, self.binary_ok, &[], &["6"]));
        }
        let frames = std::mem::take(&mut state.queue);
        state.bytes = 0;
        let closed = state.closed && !state.slow && !state.client_closed;
        drop(state);
        let frames: Vec<Bytes> = frames.into();
        let extra: &[&str] = match (closed, frames.is_empty()) {
            (true, _) => &["1"],
            (false, true) => &["6"],
            (false, false) => &[],
        };
        Ok(payload(version, self.binary_ok, &frames, extra))
    }
}

#[cfg(test)]
impl Body {
    fn text(self) -> String {
        match self {
            Body::Text(text) => text,
            Body::Binary(_) => panic!("a binary payload"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws;

    #[tokio::test]
    async fn a_get_answers_with_everything_queued_in_the_clients_format() {
        let polling = Polling::new(1 << 20, false);
        polling.send(ws::text_frame("42[\"a\"]")).unwrap();
        polling.send(ws::text_frame(&format!("42[\"{}\"]", "x".repeat(200)))).unwrap();
        let body = polling.take(Version::V4, Duration::from_secs(1)).await.unwrap().text();
        assert_eq!(body, format!("42[\"a\"]\x1e42[\"{}\"]", "x".repeat(200)));
        polling.send(ws::text_frame("2")).unwrap();
        assert_eq!(polling.take(Version::V3, Duration::from_secs(1)).await.unwrap().text(), "1:2");
    }

    #[tokio::test]
    async fn an_empty_wait_ends_with_a_noop_and_a_close_with_the_close_packet() {
        let polling = Polling::new(1 << 20, false);
        assert_eq!(polling.take(Version::V4, Duration::from_millis(10)).await.unwrap().text(), "6");
        polling.send(ws::text_frame("40")).unwrap();
        polling.close(1000, "");
        assert_eq!(polling.take(Version::V4, Duration::from_secs(1)).await.unwrap().text(), "40\x1e1");
        assert_eq!(polling.send(ws::text_frame("2")), Err(SendError::Closed));
    }

    #[tokio::test]
    async fn a_second_get_while_one_waits_is_refused() {
        let polling = std::sync::Arc::new(Polling::new(1 << 20, false));
        let first = tokio::spawn({
            let polling = polling.clone();
            async move { polling.take(Version::V4, Duration::from_secs(5)).await }
        });
        // The first GET is waiting once it holds the slot: poll until then.
        while !polling.state().getting {
            tokio::task::yield_now().await;
        }
        assert_eq!(polling.take(Version::V4, Duration::from_secs(1)).await, Err(PollError::Overlap));
        polling.send(ws::text_frame("3")).unwrap();
        assert_eq!(first.await.unwrap().unwrap().text(), "3");
    }

    #[test]
    fn a_client_that_never_polls_is_cut_off_at_its_budget() {
        let polling = Polling::new(100, false);
        polling.send(ws::text_frame(&"x".repeat(90))).unwrap();
        assert_eq!(polling.send(ws::text_frame(&"y".repeat(20))), Err(SendError::SlowConsumer));
        assert!(polling.is_closed() && polling.was_slow());
    }
}
