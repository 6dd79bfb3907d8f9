//! The lean connection driver: WebSocket (RFC 6455, client side, no extensions), Engine.IO
//! v4 and Socket.IO v5 written by hand over one `TcpStream`, one small task per
//! connection, on a single-threaded runtime (`Rc`, `Cell`; no locks, no channels).
//!
//! A connection costs one task, a socket and a read buffer that starts at 4 KiB. Writes go
//! straight to the socket with `try_write`; only when the kernel buffer is full does a
//! flush task take the rest (in order). Every text frame received is handed to
//! [`Ctx::on_text`](crate::ctx::Ctx::on_text), which counts it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::ctx::Ctx;

/// What an ack we wait for answers.
#[derive(Debug, Clone, Copy)]
pub enum AckKind {
    /// `message:send`; the room had this many connected members when it was sent.
    Message { members: u32 },
    /// `user:typing` and other fire-and-count events.
    Plain,
    /// `call:initiate`: the ack carries the call id.
    Initiate,
    /// `call:answer`.
    Answer,
    /// `offer` / `answer` / `ice-candidate`.
    Relay,
}

#[derive(Debug, Clone, Copy)]
pub struct Pending {
    pub sent_us: u64,
    pub kind: AckKind,
    pub tag: u32,
}

/// One Socket.IO connection to one namespace.
pub struct Conn {
    /// The fixture user this connection authenticates as.
    pub user: u32,
    stream: RefCell<Option<Rc<TcpStream>>>,
    backlog: RefCell<Vec<u8>>,
    flushing: Cell<bool>,
    reader: RefCell<Option<JoinHandle<()>>>,
    pub pending: RefCell<HashMap<u64, Pending>>,
    next_ack: Cell<u64>,
    /// A slow consumer stops reading while this is set.
    pub paused: Cell<bool>,
    resume: Notify,
    /// Counted separately (B7's slow consumers).
    pub slow: Cell<bool>,
    /// Highest `seq` seen per conversation index.
    pub seqs: RefCell<Vec<(u32, u64)>>,
    pub alive: Cell<bool>,
    /// `/webrtc`: the call this device is in (from `call:incoming` or the initiate ack).
    pub call_id: RefCell<Option<String>>,
    pub answered: Cell<bool>,
    /// Notified on every ack (closed-loop senders wait on it).
    pub acked: Notify,
}

impl Conn {
    pub fn next_ack(&self) -> u64 {
        let id = self.next_ack.get();
        self.next_ack.set(id + 1);
        id
    }

    /// Emits a Socket.IO packet (`2/nsp,ID[...]` without the Engine.IO `4`), registering
    /// the ack it waits for.
    pub fn emit_raw(self: &Rc<Self>, ctx: &Ctx, body: &str, pending: Option<(u64, Pending)>) {
        if let Some((id, p)) = pending {
            self.pending.borrow_mut().insert(id, p);
        }
        let mut text = String::with_capacity(body.len() + 1);
        text.push('4');
        text.push_str(body);
        self.send_text(ctx, text.as_bytes());
    }

    /// Sends one masked text frame, in order after anything still being flushed.
    pub fn send_text(self: &Rc<Self>, _ctx: &Ctx, payload: &[u8]) {
        let mut frame = Vec::with_capacity(payload.len() + 14);
        encode_frame(0x1, payload, &mut frame);
        self.send_frame(frame);
    }

    fn send_frame(self: &Rc<Self>, frame: Vec<u8>) {
        if self.flushing.get() {
            self.backlog.borrow_mut().extend_from_slice(&frame);
            return;
        }
        let Some(stream) = self.stream.borrow().clone() else { return };
        let rest = match stream.try_write(&frame) {
            Ok(n) if n == frame.len() => return,
            Ok(n) => frame[n..].to_vec(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => frame,
            Err(_) => return,
        };
        *self.backlog.borrow_mut() = rest;
        self.flushing.set(true);
        let me = self.clone();
        tokio::task::spawn_local(async move {
            loop {
                let data = std::mem::take(&mut *me.backlog.borrow_mut());
                if data.is_empty() {
                    me.flushing.set(false);
                    return;
                }
                let mut off = 0;
                while off < data.len() {
                    if stream.writable().await.is_err() {
                        me.flushing.set(false);
                        return;
                    }
                    match stream.try_write(&data[off..]) {
                        Ok(n) => off += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => {
                            me.flushing.set(false);
                            return;
                        }
                    }
                }
            }
        });
    }

    /// Stops reading (the kernel buffers fill, then the server's).
    pub fn pause(&self) {
        self.paused.set(true);
    }

    pub fn resume(&self) {
        self.paused.set(false);
        self.resume.notify_one();
    }

    /// Drops the TCP connection at once (no Socket.IO DISCONNECT).
    pub fn close(&self) {
        if let Some(h) = self.reader.borrow_mut().take() {
            h.abort();
        }
        self.stream.borrow_mut().take();
        self.alive.set(false);
    }
}

fn mask_key() -> [u8; 4] {
    thread_local!(static STATE: Cell<u64> = const { Cell::new(0x9E37_79B9_7F4A_7C15) });
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x as u32).to_le_bytes()
    })
}

/// Appends a masked client frame.
pub fn encode_frame(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len < 65536 {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let key = mask_key();
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i & 3]));
}

/// One frame parsed from the front of `buf`: (bytes used, fin, opcode, payload range).
fn parse_frame(buf: &[u8]) -> Option<(usize, bool, u8, std::ops::Range<usize>)> {
    if buf.len() < 2 {
        return None;
    }
    let fin = buf[0] & 0x80 != 0;
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let mut len = (buf[1] & 0x7f) as usize;
    let mut pos = 2;
    if len == 126 {
        if buf.len() < 4 {
            return None;
        }
        len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
        pos = 4;
    } else if len == 127 {
        if buf.len() < 10 {
            return None;
        }
        len = u64::from_be_bytes(buf[2..10].try_into().ok()?) as usize;
        pos = 10;
    }
    if masked {
        pos += 4; // servers never mask; unmasked in place by the caller if they do
    }
    if buf.len() < pos + len {
        return None;
    }
    Some((pos + len, fin, opcode, pos..pos + len))
}

/// The reading half of a connection's life: frames → Engine.IO → [`Ctx::on_text`].
struct Reader {
    buf: Vec<u8>,
    frag: Vec<u8>,
}

enum Step {
    Text(Vec<u8>),
    Closed,
}

impl Reader {
    /// Parses every complete frame in the buffer; control frames are answered here.
    fn drain(&mut self, conn: &Rc<Conn>, out: &mut Vec<Step>) {
        let mut pos = 0;
        while let Some((used, fin, opcode, range)) = parse_frame(&self.buf[pos..]) {
            let payload = &self.buf[pos + range.start..pos + range.end];
            match opcode {
                0x1 | 0x2 => {
                    if fin {
                        out.push(Step::Text(payload.to_vec()));
                    } else {
                        self.frag.clear();
                        self.frag.extend_from_slice(payload);
                    }
                }
                0x0 => {
                    self.frag.extend_from_slice(payload);
                    if fin {
                        out.push(Step::Text(std::mem::take(&mut self.frag)));
                    }
                }
                0x8 => out.push(Step::Closed),
                0x9 => {
                    let mut frame = Vec::with_capacity(payload.len() + 14);
                    encode_frame(0xA, payload, &mut frame);
                    conn.send_frame(frame);
                }
                _ => {}
            }
            pos += used;
        }
        if pos > 0 {
            self.buf.drain(..pos);
        }
    }

    async fn fill(&mut self, stream: &TcpStream) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 2048 {
            self.buf.reserve(4096);
        }
        loop {
            stream.readable().await?;
            match stream.try_read_buf(&mut self.buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// How to open a connection.
pub struct Dial {
    pub server: SocketAddr,
    pub src: Ipv4Addr,
    pub nsp: &'static str,
    pub token: String,
    pub user: u32,
    /// SO_RCVBUF for this socket (a slow consumer's small window).
    pub rcvbuf: Option<u32>,
    pub timeout: Duration,
}

/// Opens a connection: TCP from `src`, the WebSocket upgrade, the Engine.IO open packet,
/// and the Socket.IO CONNECT with `auth.token`; then spawns its reader.
pub async fn connect(ctx: &Rc<Ctx>, dial: Dial) -> Result<Rc<Conn>, String> {
    let timeout = dial.timeout;
    match tokio::time::timeout(timeout, connect_inner(ctx, dial)).await {
        Ok(r) => r,
        Err(_) => Err("timeout".into()),
    }
}

async fn connect_inner(ctx: &Rc<Ctx>, dial: Dial) -> Result<Rc<Conn>, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    // Let connect() pick the port per 4-tuple, so each source address has its own range.
    let one: libc::c_int = 1;
    // SAFETY: a valid fd and a c_int option value of the right size.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    if let Some(size) = dial.rcvbuf {
        socket.set_recv_buffer_size(size).map_err(|e| format!("SO_RCVBUF: {e}"))?;
    }
    socket.bind(SocketAddr::from((dial.src, 0))).map_err(|e| format!("bind {}: {e}", dial.src))?;
    let stream = socket.connect(dial.server).await.map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).ok();
    let stream = Rc::new(stream);

    let conn = Rc::new(Conn {
        user: dial.user,
        stream: RefCell::new(Some(stream.clone())),
        backlog: RefCell::new(Vec::new()),
        flushing: Cell::new(false),
        reader: RefCell::new(None),
        pending: RefCell::new(HashMap::new()),
        next_ack: Cell::new(1),
        paused: Cell::new(false),
        resume: Notify::new(),
        slow: Cell::new(false),
        seqs: RefCell::new(Vec::new()),
        alive: Cell::new(true),
        call_id: RefCell::new(None),
        answered: Cell::new(false),
        acked: Notify::new(),
    });

    // The WebSocket upgrade.
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let req = format!(
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        dial.server
    );
    write_all(&stream, req.as_bytes()).await.map_err(|e| format!("upgrade write: {e}"))?;
    let mut reader = Reader { buf: Vec::with_capacity(4096), frag: Vec::new() };
    let head_end = loop {
        if let Some(i) = find(&reader.buf, b"\r\n\r\n") {
            break i + 4;
        }
        if reader.buf.len() > 16 * 1024 {
            return Err("upgrade response too large".into());
        }
        reader.fill(&stream).await.map_err(|e| format!("upgrade read: {e}"))?;
    };
    let head = String::from_utf8_lossy(&reader.buf[..head_end]).to_string();
    if !head.starts_with("HTTP/1.1 101") {
        return Err(format!("upgrade refused: {}", head.lines().next().unwrap_or("")));
    }
    reader.buf.drain(..head_end);

    // Engine.IO open, then the Socket.IO CONNECT.
    let auth = serde_json::json!({ "token": format!("Bearer {}", dial.token) });
    let connect_packet = format!("40{},{}", dial.nsp, auth);
    let ok_prefix = format!("40{},", dial.nsp);
    let err_prefix = format!("44{},", dial.nsp);
    let mut opened = false;
    let mut steps = Vec::new();
    loop {
        reader.drain(&conn, &mut steps);
        for step in steps.drain(..) {
            match step {
                Step::Closed => return Err("closed during handshake".into()),
                Step::Text(t) => {
                    if !opened && t.first() == Some(&b'0') {
                        opened = true;
                        conn.send_text(ctx, connect_packet.as_bytes());
                    } else if t.starts_with(ok_prefix.as_bytes()) {
                        // Connected. Anything already buffered is handled by the reader.
                        let c = conn.clone();
                        let cx = ctx.clone();
                        let handle = tokio::task::spawn_local(read_loop(cx, c, stream.clone(), reader));
                        *conn.reader.borrow_mut() = Some(handle);
                        return Ok(conn);
                    } else if t.starts_with(err_prefix.as_bytes()) {
                        return Err(format!("refused: {}", String::from_utf8_lossy(&t[err_prefix.len()..])));
                    } else if t.first() == Some(&b'2') {
                        conn.send_text(ctx, b"3");
                    } else {
                        ctx.on_text(&conn, &t);
                    }
                }
            }
        }
        reader.fill(&stream).await.map_err(|e| format!("handshake read: {e}"))?;
    }
}

async fn read_loop(ctx: Rc<Ctx>, conn: Rc<Conn>, stream: Rc<TcpStream>, mut reader: Reader) {
    let mut steps = Vec::new();
    loop {
        reader.drain(&conn, &mut steps);
        for step in steps.drain(..) {
            match step {
                Step::Closed => {
                    conn.alive.set(false);
                    ctx.on_disconnect(&conn);
                    return;
                }
                Step::Text(t) => {
                    if t.first() == Some(&b'2') {
                        conn.send_text(&ctx, b"3");
                    } else {
                        ctx.on_text(&conn, &t);
                    }
                }
            }
        }
        while conn.paused.get() {
            conn.resume.notified().await;
        }
        if reader.fill(&stream).await.is_err() {
            conn.alive.set(false);
            ctx.on_disconnect(&conn);
            return;
        }
    }
}

async fn write_all(stream: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        stream.writable().await?;
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_roundtrip_through_the_parser() {
        for len in [0usize, 5, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut f = Vec::new();
            encode_frame(1, &payload, &mut f);
            let (used, fin, op, range) = parse_frame(&f).unwrap();
            assert_eq!((used, fin, op), (f.len(), true, 1));
            let key = &f[range.start - 4..range.start];
            let back: Vec<u8> = f[range].iter().enumerate().map(|(i, b)| b ^ key[i & 3]).collect();
            assert_eq!(back, payload);
            assert!(parse_frame(&f[..f.len() - 1]).is_none() || len == 0);
        }
    }
}
