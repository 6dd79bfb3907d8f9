//! A WebSocket over a raw [`TcpStream`], shaped for idle connections and cheap fan-out.
//!
//! - **Reading** waits for readiness, not for bytes: an idle connection owns no read
//!   buffer. When the socket is readable, its task reads into the thread's scratch buffer
//!   and decodes the frames in place; only the tail of a frame that has not fully arrived
//!   is copied into a buffer of the connection's own, freed once the frame completes.
//! - **Writing**: a frame is sent with [`Transport::send`] from whatever task produced
//!   it. When nothing is queued the frame is written inline, one `write` syscall from the
//!   sender's thread (no task wake-up, no copy); what the kernel did not take is queued,
//!   and the connection's task writes the queue out with `writev` when the socket is
//!   writable again. The queue is bounded in bytes: past the budget the connection is
//!   closed as a slow consumer (counted by the caller), never grown without end and never
//!   dropped silently.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::ws::{self, Decoder, Message, WsError};

/// Bytes read per `read` call into the thread's scratch buffer.
const SCRATCH: usize = 64 * 1024;

/// Frames written per `writev` call at most.
const MAX_IOVECS: usize = 64;

/// Bytes read per wake-up at most before the task yields: a client that sends faster
/// than its messages are handled must not hold the thread (other connections, the
/// heartbeat, its own close all wait on it otherwise).
const READ_PER_WAKE: usize = 4 * SCRATCH;

/// How long a closing connection may take to write what was queued before it.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

thread_local! {
    /// The read buffer every connection served on this thread shares.
    static SCRATCH_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH]);
}

/// Runs `f` with this thread's scratch buffer (reads that keep nothing once handled).
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH_BUF.with(|scratch| f(&mut scratch.borrow_mut()))
}

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The connection is closed or closing.
    #[error("connection closed")]
    Closed,
    /// The client does not read fast enough: its queue went over the byte budget, and the
    /// connection is being closed.
    #[error("slow consumer: send queue over its byte budget")]
    SlowConsumer,
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The client closed the WebSocket (close frame) or the TCP connection.
    ClientClosed,
    /// The server closed it ([`Transport::close`]).
    ServerClosed,
    /// The client broke the protocol (the close code was sent).
    Protocol(WsError),
    /// The queue went over its byte budget.
    SlowConsumer,
    /// The socket failed.
    Io(io::ErrorKind),
}

/// What a transport delivers upwards.
pub trait Inbound: Send {
    /// A text message.
    fn text(&mut self, transport: &Transport, text: &str);
    /// A binary message.
    fn binary(&mut self, transport: &Transport, data: &[u8]);
}

#[derive(Debug, Default)]
struct Outbox {
    /// Frames not yet written; the first may be partly written (`written` bytes of it).
    queue: VecDeque<Bytes>,
    written: usize,
    /// Bytes queued, for the budget.
    bytes: usize,
    /// Set once: the task writes what is queued (a close frame last) and ends.
    closing: Option<Ended>,
}

/// One WebSocket connection's shared half: the socket and its send queue.
#[derive(Debug)]
pub struct Transport {
    stream: TcpStream,
    outbox: Mutex<Outbox>,
    /// Wakes the connection's task: something was queued, or the connection is closing.
    wake: Notify,
    budget: usize,
    /// Mirrors `outbox.closing.is_some()`, read per message without the lock: once set, no
    /// more messages are delivered.
    closing: std::sync::atomic::AtomicBool,
}

impl Transport {
    /// A transport over an upgraded stream; `budget`: the most bytes queued for a client
    /// that does not read.
    pub fn new(stream: TcpStream, budget: usize) -> Self {
        Self {
            stream,
            outbox: Mutex::new(Outbox::default()),
            wake: Notify::new(),
            budget,
            closing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends a complete frame (from [`crate::ws`]): written inline when nothing is queued,
    /// queued otherwise. Frames leave in the order `send` was called.
    pub fn send(&self, frame: Bytes) -> Result<(), SendError> {
        let mut out = self.outbox();
        if out.closing.is_some() {
            return Err(if out.closing == Some(Ended::SlowConsumer) {
                SendError::SlowConsumer
            } else {
                SendError::Closed
            });
        }
        if out.queue.is_empty() {
            // The fast path: the kernel's buffer has room nearly always. The lock is held
            // across the syscall so that concurrent senders keep their order.
            match self.stream.try_write(&frame) {
                Ok(n) if n == frame.len() => return Ok(()),
                Ok(n) => {
                    out.bytes = frame.len() - n;
                    out.queue.push_back(frame.slice(n..));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    out.bytes = frame.len();
                    out.queue.push_back(frame);
                }
                Err(e) => {
                    out.closing = Some(Ended::Io(e.kind()));
                    self.closing.store(true, std::sync::atomic::Ordering::Release);
                    drop(out);
                    self.wake.notify_one();
                    return Err(SendError::Closed);
                }
            }
            drop(out);
            self.wake.notify_one();
            return Ok(());
        }
        if out.bytes + frame.len() > self.budget {
            out.closing = Some(Ended::SlowConsumer);
            self.closing.store(true, std::sync::atomic::Ordering::Release);
            drop(out);
            self.wake.notify_one();
            return Err(SendError::SlowConsumer);
        }
        out.bytes += frame.len();
        out.queue.push_back(frame);
        Ok(())
    }

    /// Closes the connection: what is queued is written, then a close frame with `code`
    /// and `reason`, then the TCP connection is shut.
    pub fn close(&self, code: u16, reason: &str) {
        let mut out = self.outbox();
        if out.closing.is_none() {
            let frame = ws::close_frame(code, reason);
            out.bytes += frame.len();
            out.queue.push_back(frame);
            out.closing = Some(Ended::ServerClosed);
            self.closing.store(true, std::sync::atomic::Ordering::Release);
        }
        drop(out);
        self.wake.notify_one();
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.outbox().bytes
    }

    /// Writes as much of the queue as the socket takes now. `Ok(true)`: all written.
    fn flush(&self) -> io::Result<bool> {
        let mut out = self.outbox();
        while !out.queue.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            for (i, frame) in out.queue.iter().take(MAX_IOVECS).enumerate() {
                let start = if i == 0 { out.written } else { 0 };
                slices[i] = IoSlice::new(&frame[start..]);
                count += 1;
            }
            let n = match self.stream.try_write_vectored(&slices[..count]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            };
            out.bytes -= n;
            let mut left = n + out.written;
            out.written = 0;
            while let Some(front) = out.queue.front() {
                if left >= front.len() {
                    left -= front.len();
                    out.queue.pop_front();
                } else {
                    out.written = left;
                    break;
                }
            }
        }
        // Let go of the queue's memory once drained: an idle connection holds none.
        out.queue = VecDeque::new();
        Ok(true)
    }

    /// Runs the connection until it ends: reads, decodes and delivers messages to
    /// `inbound`, answers pings, writes what was queued. `leftover`: bytes read before the
    /// upgrade (hyper's read buffer).
    pub async fn run(&self, inbound: &mut dyn Inbound, max_message: usize, leftover: Bytes) -> Ended {
        let mut decoder = Decoder::new(max_message);
        // The tail of a frame that has not fully arrived; empty (no allocation) otherwise.
        let mut pending: Vec<u8> = leftover.to_vec();
        // `leftover` may be a slice of hyper's whole read buffer (8 KiB or more), which it
        // keeps alive however short it is: let go of it now, not when the connection ends.
        drop(leftover);
        if !pending.is_empty()
            && let Err(ended) = self.deliver(&mut decoder, &mut pending, inbound)
        {
            return self.finish(ended).await;
        }
        loop {
            let closing = self.outbox().closing.clone();
            if let Some(ended) = closing {
                return self.finish(ended).await;
            }
            let want_write = !self.outbox().queue.is_empty();
            tokio::select! {
                biased;
                ready = self.stream.writable(), if want_write => {
                    if let Err(e) = ready.and_then(|()| self.flush()) {
                        return self.finish(Ended::Io(e.kind())).await;
                    }
                }
                () = self.wake.notified() => {}
                ready = self.stream.readable() => {
                    if let Err(e) = ready {
                        return self.finish(Ended::Io(e.kind())).await;
                    }
                    match self.read_some(&mut decoder, &mut pending, inbound) {
                        Ok(Read::Drained) => {}
                        // Read its share: let the other tasks of this thread run.
                        Ok(Read::More) => tokio::task::yield_now().await,
                        Ok(Read::Eof) => return self.finish(Ended::ClientClosed).await,
                        Err(ended) => return self.finish(ended).await,
                    }
                }
            }
        }
    }

    /// Reads what is there, up to [`READ_PER_WAKE`], and delivers whole messages.
    fn read_some(
        &self,
        decoder: &mut Decoder,
        pending: &mut Vec<u8>,
        inbound: &mut dyn Inbound,
    ) -> Result<Read, Ended> {
        SCRATCH_BUF.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let mut taken = 0;
            loop {
                if self.closing.load(std::sync::atomic::Ordering::Acquire) {
                    return Ok(Read::Drained);
                }
                if taken >= READ_PER_WAKE {
                    return Ok(Read::More);
                }
                // A partial frame keeps its own buffer; otherwise read into the scratch.
                let read = if pending.is_empty() {
                    self.stream.try_read(&mut scratch[..])
                } else {
                    let len = pending.len();
                    pending.resize(len + SCRATCH.min(len.max(4096)), 0);
                    let read = self.stream.try_read(&mut pending[len..]);
                    pending.truncate(len + *read.as_ref().unwrap_or(&0));
                    read
                };
                match read {
                    Ok(0) => return Ok(Read::Eof),
                    Ok(n) => {
                        taken += n;
                        if pending.is_empty() {
                            let used = self.deliver_from(decoder, &mut scratch[..n], inbound)?;
                            if used < n {
                                pending.extend_from_slice(&scratch[used..n]);
                            }
                        } else {
                            self.deliver(decoder, pending, inbound)?;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Read::Drained),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Ended::Io(e.kind())),
                }
            }
        })
    }

    /// Delivers the whole frames at the front of `pending`, keeping the rest (and letting
    /// go of the buffer when nothing is left).
    fn deliver(&self, decoder: &mut Decoder, pending: &mut Vec<u8>, inbound: &mut dyn Inbound) -> Result<(), Ended> {
        let used = self.deliver_from(decoder, pending, inbound)?;
        pending.drain(..used);
        if pending.is_empty() {
            *pending = Vec::new();
        }
        Ok(())
    }

    /// Delivers the whole frames at the front of `buf`; returns the bytes they took.
    fn deliver_from(&self, decoder: &mut Decoder, buf: &mut [u8], inbound: &mut dyn Inbound) -> Result<usize, Ended> {
        let mut at = 0;
        loop {
            // The server is closing this connection: nothing more is handled.
            if self.closing.load(std::sync::atomic::Ordering::Acquire) {
                return Ok(at);
            }
            let (used, message) = match decoder.decode(&mut buf[at..]) {
                Ok(Some(decoded)) => decoded,
                Ok(None) => return Ok(at),
                Err(e) => return Err(Ended::Protocol(e)),
            };
            match message {
                Some(Message::Text(text)) => inbound.text(self, text),
                Some(Message::Binary(data)) => inbound.binary(self, data),
                Some(Message::Ping(payload)) => {
                    let _ = self.send(ws::pong_frame(payload));
                }
                Some(Message::Pong(_)) | None => {}
                Some(Message::Close(_)) => return Err(Ended::ClientClosed),
            }
            at += used;
        }
    }

    /// Ends the connection the way `ended` says. Every way out of [`Transport::run`]
    /// comes through here: the state is set under the lock first (later sends fail), a
    /// close frame goes after whatever was queued when there is one to send (a protocol
    /// error's code, the echo of a client's close, the server's own), what is queued is
    /// written within [`CLOSE_GRACE`], and the socket is shut down, whoever still holds
    /// the transport.
    async fn finish(&self, ended: Ended) -> Ended {
        let frame = match &ended {
            Ended::Protocol(e) => Some(ws::close_frame(e.close_code(), &e.to_string())),
            Ended::ClientClosed => Some(ws::close_frame(1000, "")),
            Ended::ServerClosed | Ended::SlowConsumer | Ended::Io(_) => None,
        };
        let drain = {
            let mut out = self.outbox();
            let ended = out.closing.get_or_insert(ended).clone();
            self.closing.store(true, std::sync::atomic::Ordering::Release);
            if let Some(frame) = frame
                && ended != Ended::ServerClosed
            {
                out.bytes += frame.len();
                out.queue.push_back(frame);
            }
            // A slow consumer's queue or a failed socket's is not worth waiting for.
            let drain = matches!(ended, Ended::ServerClosed | Ended::ClientClosed | Ended::Protocol(_));
            if !drain {
                out.queue = VecDeque::new();
                out.bytes = 0;
            }
            drain
        };
        if drain {
            let written = async {
                loop {
                    match self.flush() {
                        Ok(true) | Err(_) => break,
                        Ok(false) => {
                            if self.stream.writable().await.is_err() {
                                break;
                            }
                        }
                    }
                }
            };
            let _ = tokio::time::timeout(CLOSE_GRACE, written).await;
        }
        let mut out = self.outbox();
        out.queue = VecDeque::new();
        out.bytes = 0;
        let ended = out.closing.clone().unwrap_or(Ended::ServerClosed);
        drop(out);
        // After a drain, only our side: the client reads what was sent, then the FIN (both
        // sides could answer its unread bytes with a reset that destroys what it has not
        // read yet). Otherwise both.
        let how = if drain { std::net::Shutdown::Write } else { std::net::Shutdown::Both };
        let _ = socket2::SockRef::from(&self.stream).shutdown(how);
        ended
    }
}

/// How a read ended.
enum Read {
    /// Everything the socket had was read.
    Drained,
    /// The share of one wake-up was read; there may be more.
    More,
    /// The client closed its side.
    Eof,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures_util::{SinkExt, StreamExt};
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::Message as TMessage;

    use super::*;

    /// Echoes text and binary messages back.
    struct Echo;

    impl Inbound for Echo {
        fn text(&mut self, transport: &Transport, text: &str) {
            let _ = transport.send(ws::text_frame(text));
        }
        fn binary(&mut self, transport: &Transport, data: &[u8]) {
            let _ = transport.send(ws::binary_frame(data));
        }
    }

    /// A server accepting one raw WebSocket (the handshake done by hand, as the engine's
    /// upgrade does), running `Transport::run` with `Echo`.
    async fn echo_server(
        budget: usize,
    ) -> (String, tokio::task::JoinHandle<Ended>, tokio::sync::oneshot::Receiver<Arc<Transport>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let stream = crate::upgrade::tests::accept_by_hand(stream).await;
            let transport = Arc::new(Transport::new(stream, budget));
            let _ = tx.send(transport.clone());
            transport.run(&mut Echo, 1 << 20, Bytes::new()).await
        });
        (format!("ws://{addr}/"), task, rx)
    }

    #[tokio::test]
    async fn echoes_messages_of_every_size() {
        let (url, task, _) = echo_server(1 << 20).await;
        let (mut client, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        for size in [0usize, 1, 125, 126, 65_535, 65_536, 300_000] {
            let text = "x".repeat(size);
            client.send(TMessage::text(text.clone())).await.unwrap();
            assert_eq!(client.next().await.unwrap().unwrap(), TMessage::text(text));
            let bytes: Vec<u8> = (0..size).map(|i| i as u8).collect();
            client.send(TMessage::binary(bytes.clone())).await.unwrap();
            assert_eq!(client.next().await.unwrap().unwrap(), TMessage::binary(bytes));
        }
        client.send(TMessage::Ping(Bytes::from_static(b"hi"))).await.unwrap();
        assert_eq!(client.next().await.unwrap().unwrap(), TMessage::Pong(Bytes::from_static(b"hi")));
        client.close(None).await.unwrap();
        assert_eq!(task.await.unwrap(), Ended::ClientClosed);
    }

    #[tokio::test]
    async fn a_protocol_error_closes_with_its_code() {
        let (url, task, _) = echo_server(1 << 20).await;
        let (mut client, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        client.send(TMessage::binary(vec![0u8; 2 << 20])).await.unwrap();
        match client.next().await.unwrap().unwrap() {
            TMessage::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1009),
            other => panic!("expected a close frame, got {other:?}"),
        }
        assert!(matches!(task.await.unwrap(), Ended::Protocol(WsError::TooBig(_))));
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_is_cut_off_at_its_budget() {
        let (url, task, transport) = echo_server(256 * 1024).await;
        // A raw TCP client that completes the handshake and then never reads.
        let (_client, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let transport = transport.await.unwrap();
        let frame = ws::binary_frame(&[7u8; 16 * 1024]);
        let mut sent = 0usize;
        let refused = loop {
            match transport.send(frame.clone()) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(sent < 100_000, "never refused");
        };
        assert_eq!(refused, SendError::SlowConsumer);
        assert_eq!(transport.send(frame), Err(SendError::SlowConsumer));
        assert_eq!(task.await.unwrap(), Ended::SlowConsumer);
    }

    /// Closes the connection at the first message.
    struct CloseAtOnce(Arc<std::sync::atomic::AtomicUsize>);

    impl Inbound for CloseAtOnce {
        fn text(&mut self, transport: &Transport, _text: &str) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            transport.close(4000, "enough");
        }
        fn binary(&mut self, _transport: &Transport, _data: &[u8]) {}
    }

    #[tokio::test]
    async fn nothing_is_handled_once_the_server_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = handled.clone();
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let stream = crate::upgrade::tests::accept_by_hand(stream).await;
            Transport::new(stream, 1 << 20).run(&mut CloseAtOnce(counter), 1 << 20, Bytes::new()).await
        });
        let (mut client, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await.unwrap();
        // A thousand messages in one go: they arrive in few reads, after the first the
        // connection is closing and the rest are not handled.
        for i in 0..1000 {
            client.feed(TMessage::text(format!("m{i}"))).await.unwrap();
        }
        client.flush().await.unwrap();
        match client.next().await.unwrap().unwrap() {
            TMessage::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 4000),
            other => panic!("expected a close frame, got {other:?}"),
        }
        assert_eq!(task.await.unwrap(), Ended::ServerClosed);
        assert_eq!(handled.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn the_server_closes_after_what_it_queued() {
        let (url, task, transport) = echo_server(1 << 20).await;
        let (mut client, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let transport = transport.await.unwrap();
        transport.send(ws::text_frame("last words")).unwrap();
        transport.close(4000, "bye");
        assert_eq!(transport.send(ws::text_frame("too late")), Err(SendError::Closed));
        assert_eq!(client.next().await.unwrap().unwrap(), TMessage::text("last words"));
        match client.next().await.unwrap().unwrap() {
            TMessage::Close(Some(frame)) => assert_eq!((u16::from(frame.code), frame.reason.as_str()), (4000, "bye")),
            other => panic!("expected a close frame, got {other:?}"),
        }
        assert_eq!(task.await.unwrap(), Ended::ServerClosed);
    }
}
