//! RFC 6455 framing for the server side of a WebSocket.
//!
//! Shaped for connections that are idle most of their life:
//! - [`Decoder`] decodes frames **in place** from a buffer the caller owns (in the engine, a
//!   per-thread scratch buffer filled when the socket is readable). It keeps bytes of its
//!   own only while a fragmented message is in progress, so an idle connection holds no
//!   read buffer at all. A message that fits in one frame is handed out borrowed from the
//!   caller's buffer: no copy, no allocation.
//! - Server frames are encoded once into [`Bytes`] that every recipient of a broadcast
//!   shares ([`text_frame_with`] writes the payload and the header into one allocation).
//!
//! The frame header itself is parsed and formatted by tungstenite's `FrameHeader` (the
//! codec of the most used Rust WebSocket crate, without any of its buffering); masking,
//! fragmentation, control-frame rules, close codes and UTF-8 are checked here.

use std::io::Cursor;

use bytes::Bytes;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

/// The largest header a server frame needs (no mask: 2 + 8 bytes of length).
const MAX_SERVER_HEADER: usize = 10;

/// Why a connection must be closed, with the close code RFC 6455 §7.4.1 gives it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    /// The peer broke the framing rules (close code 1002).
    #[error("WebSocket protocol error: {0}")]
    Protocol(&'static str),
    /// A message over the configured limit (close code 1009).
    #[error("WebSocket message of at least {0} bytes is over the limit")]
    TooBig(u64),
    /// A text message or close reason that is not UTF-8 (close code 1007).
    #[error("WebSocket text is not UTF-8")]
    InvalidUtf8,
}

impl WsError {
    /// The close code to send before closing.
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::Protocol(_) => 1002,
            WsError::TooBig(_) => 1009,
            WsError::InvalidUtf8 => 1007,
        }
    }
}

/// A complete message from the client, borrowed from the decode buffer or the decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message (validated UTF-8).
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
    /// A ping: answer with [`pong_frame`] of the same payload.
    Ping(&'a [u8]),
    /// A pong.
    Pong(&'a [u8]),
    /// The client closes: answer with a close frame, then close the TCP connection.
    Close(Option<CloseReason<'a>>),
}

/// The code and reason of a close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason<'a> {
    /// The close code (checked against RFC 6455 §7.4).
    pub code: u16,
    /// The reason (UTF-8).
    pub reason: &'a str,
}

/// A fragmented message in progress.
#[derive(Debug)]
struct Partial {
    text: bool,
    data: Vec<u8>,
    /// Handed out already: dropped at the next call.
    done: bool,
}

/// The decoding state of one connection: at most one fragmented message in progress.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    partial: Option<Partial>,
}

impl Decoder {
    /// A decoder refusing messages over `max_message` bytes (1009).
    pub fn new(max_message: usize) -> Self {
        // Bounded so that a header's length plus its payload's never overflows.
        Self { max_message: max_message.min(1 << 40), partial: None }
    }

    /// Whether a fragmented message is in progress (the decoder holds its bytes).
    pub fn holds_partial(&self) -> bool {
        self.partial.as_ref().is_some_and(|p| !p.done)
    }

    /// Decodes the frame at the front of `buf`, unmasking it in place.
    ///
    /// - `Ok(None)`: `buf` does not hold a whole frame yet; nothing was consumed.
    /// - `Ok(Some((n, message)))`: the frame took the first `n` bytes of `buf`; `message`
    ///   is the message it completed, if any (a non-final fragment completes none).
    ///
    /// A frame announcing more than the limit is refused from its header, before its
    /// payload is waited for, so a caller never buffers more than the limit plus 14 bytes.
    pub fn decode<'a>(&'a mut self, buf: &'a mut [u8]) -> Result<Option<(usize, Option<Message<'a>>)>, WsError> {
        if self.partial.as_ref().is_some_and(|p| p.done) {
            self.partial = None;
        }
        let mut cursor = Cursor::new(&*buf);
        let (header, length) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok(None),
            Err(_) => return Err(WsError::Protocol("reserved opcode")),
        };
        let header_len = cursor.position() as usize;
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(WsError::Protocol("reserved bits set without an extension"));
        }
        let Some(mask) = header.mask else {
            return Err(WsError::Protocol("client frames must be masked"));
        };
        let is_control = matches!(header.opcode, OpCode::Control(_));
        if is_control && (!header.is_final || length > 125) {
            return Err(WsError::Protocol("control frames are final and at most 125 bytes"));
        }
        let already = self.partial.as_ref().map_or(0, |p| p.data.len() as u64);
        if !is_control && already.saturating_add(length) > self.max_message as u64 {
            return Err(WsError::TooBig(already.saturating_add(length)));
        }
        // `length` fits in usize now: a control frame is ≤ 125, a data frame ≤ the limit.
        let end = header_len + length as usize;
        if buf.len() < end {
            return Ok(None);
        }
        let payload = &mut buf[header_len..end];
        unmask(payload, mask);
        let payload: &'a [u8] = payload;

        let message = match header.opcode {
            OpCode::Control(Control::Ping) => Some(Message::Ping(payload)),
            OpCode::Control(Control::Pong) => Some(Message::Pong(payload)),
            OpCode::Control(Control::Close) => Some(Message::Close(close_reason(payload)?)),
            OpCode::Data(Data::Text | Data::Binary) => {
                if self.holds_partial() {
                    return Err(WsError::Protocol("a new message inside a fragmented one"));
                }
                let text = matches!(header.opcode, OpCode::Data(Data::Text));
                if header.is_final {
                    Some(whole(text, payload)?)
                } else {
                    self.partial = Some(Partial { text, data: payload.to_vec(), done: false });
                    None
                }
            }
            OpCode::Data(Data::Continue) => {
                let Some(partial) = self.partial.as_mut().filter(|p| !p.done) else {
                    return Err(WsError::Protocol("a continuation with no message to continue"));
                };
                partial.data.extend_from_slice(payload);
                if header.is_final {
                    partial.done = true;
                    let partial: &'a Partial = partial;
                    Some(whole(partial.text, &partial.data)?)
                } else {
                    None
                }
            }
            OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => {
                return Err(WsError::Protocol("reserved opcode"));
            }
        };
        Ok(Some((end, message)))
    }
}

/// A complete data message.
fn whole(text: bool, payload: &[u8]) -> Result<Message<'_>, WsError> {
    Ok(if text {
        Message::Text(std::str::from_utf8(payload).map_err(|_| WsError::InvalidUtf8)?)
    } else {
        Message::Binary(payload)
    })
}

/// The code and reason of a close frame's payload (RFC 6455 §5.5.1, §7.4).
fn close_reason(payload: &[u8]) -> Result<Option<CloseReason<'_>>, WsError> {
    match payload {
        [] => Ok(None),
        [_] => Err(WsError::Protocol("a close payload of one byte")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let known = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !known {
                return Err(WsError::Protocol("a close code that may not be sent"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| WsError::InvalidUtf8)?;
            Ok(Some(CloseReason { code, reason }))
        }
    }
}

/// Unmasks (or masks) `payload` in place: XOR with the 4-byte key, eight bytes at a time.
pub fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let key = u32::from_ne_bytes(mask);
    let wide = u64::from(key) | (u64::from(key) << 32);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // Every full chunk was 8 bytes, a multiple of 4: the key starts over for the rest.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

/// The header of a server frame (final, unmasked) for a payload of `len` bytes, written
/// into the end of `out`; returns how many bytes it took.
fn header_into(opcode: OpCode, len: usize, out: &mut [u8; MAX_SERVER_HEADER]) -> usize {
    let header = FrameHeader { is_final: true, rsv1: false, rsv2: false, rsv3: false, opcode, mask: None };
    let size = header.len(len as u64);
    let mut cursor = Cursor::new(&mut out[MAX_SERVER_HEADER - size..]);
    // Writing into a slice of exactly the header's length cannot fail.
    let _ = header.format(len as u64, &mut cursor);
    size
}

/// One server frame in one allocation.
fn frame(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut header = [0u8; MAX_SERVER_HEADER];
    let size = header_into(opcode, payload.len(), &mut header);
    let mut out = Vec::with_capacity(size + payload.len());
    out.extend_from_slice(&header[MAX_SERVER_HEADER - size..]);
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// A text frame.
pub fn text_frame(text: &str) -> Bytes {
    frame(OpCode::Data(Data::Text), text.as_bytes())
}

/// A binary frame.
pub fn binary_frame(data: &[u8]) -> Bytes {
    frame(OpCode::Data(Data::Binary), data)
}

/// A pong answering a ping's payload.
pub fn pong_frame(payload: &[u8]) -> Bytes {
    frame(OpCode::Control(Control::Pong), payload)
}

/// A ping.
pub fn ping_frame(payload: &[u8]) -> Bytes {
    frame(OpCode::Control(Control::Ping), payload)
}

/// A close frame with a code and a reason (cut to fit the 125-byte control payload, at a
/// character boundary).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    frame(OpCode::Control(Control::Close), &payload)
}

/// A text frame whose payload `write` appends to the buffer it is given: the payload is
/// written once, and the header lands in front of it in the same allocation (room for the
/// longest header is kept ahead; the frame is the slice that starts where its header does).
/// The payload must be UTF-8; `write` is trusted with that (it is how the engine writes
/// JSON).
pub fn text_frame_with(capacity: usize, write: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut out = Vec::with_capacity(MAX_SERVER_HEADER + capacity);
    out.extend_from_slice(&[0u8; MAX_SERVER_HEADER]);
    write(&mut out);
    let len = out.len() - MAX_SERVER_HEADER;
    let mut header = [0u8; MAX_SERVER_HEADER];
    let size = header_into(OpCode::Data(Data::Text), len, &mut header);
    let start = MAX_SERVER_HEADER - size;
    out[start..MAX_SERVER_HEADER].copy_from_slice(&header[start..]);
    Bytes::from(out).slice(start..)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use proptest::prelude::*;
    use tungstenite::Message as TMessage;
    use tungstenite::protocol::{Role, WebSocket, WebSocketConfig};

    use super::*;

    /// A stream that reads from one buffer and writes into another.
    struct Pipe {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Pipe {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.output.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What tungstenite, as a client, puts on the wire for `messages`, split into frames
    /// of at most `frame_size` bytes.
    fn client_wire(messages: &[TMessage], frame_size: Option<usize>) -> Vec<u8> {
        let mut config = WebSocketConfig::default();
        if let Some(size) = frame_size {
            config = config.max_frame_size(Some(size));
        }
        let pipe = Pipe { input: Cursor::new(Vec::new()), output: Vec::new() };
        let mut ws = WebSocket::from_raw_socket(pipe, Role::Client, Some(config));
        for m in messages {
            ws.send(m.clone()).expect("send");
        }
        ws.flush().expect("flush");
        std::mem::take(&mut ws.get_mut().output)
    }

    /// Hand-made client frames: `(opcode byte, fin, payload)`, masked with `mask`.
    fn raw_frames(frames: &[(u8, bool, &[u8])], mask: [u8; 4]) -> Vec<u8> {
        let mut out = Vec::new();
        for (opcode, fin, payload) in frames {
            out.push(opcode | if *fin { 0x80 } else { 0 });
            let len = payload.len();
            if len < 126 {
                out.push(0x80 | len as u8);
            } else if len <= u16::MAX as usize {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            } else {
                out.push(0x80 | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
            out.extend_from_slice(&mask);
            let mut body = payload.to_vec();
            unmask(&mut body, mask);
            out.extend_from_slice(&body);
        }
        out
    }

    /// An owned copy of a decoded message, to compare.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Owned {
        Text(String),
        Binary(Vec<u8>),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<(u16, String)>),
    }

    impl From<Message<'_>> for Owned {
        fn from(m: Message<'_>) -> Self {
            match m {
                Message::Text(t) => Owned::Text(t.to_string()),
                Message::Binary(b) => Owned::Binary(b.to_vec()),
                Message::Ping(b) => Owned::Ping(b.to_vec()),
                Message::Pong(b) => Owned::Pong(b.to_vec()),
                Message::Close(c) => Owned::Close(c.map(|c| (c.code, c.reason.to_string()))),
            }
        }
    }

    impl From<&TMessage> for Owned {
        fn from(m: &TMessage) -> Self {
            match m {
                TMessage::Text(t) => Owned::Text(t.to_string()),
                TMessage::Binary(b) => Owned::Binary(b.to_vec()),
                TMessage::Ping(b) => Owned::Ping(b.to_vec()),
                TMessage::Pong(b) => Owned::Pong(b.to_vec()),
                other => panic!("not generated: {other:?}"),
            }
        }
    }

    /// Feeds `wire` to a decoder as a socket would deliver it, in reads of `chunk` bytes,
    /// keeping unconsumed bytes as the engine does; returns the messages or the error.
    fn decode_all(wire: &[u8], chunk: usize, max: usize) -> Result<Vec<Owned>, WsError> {
        let mut decoder = Decoder::new(max);
        let mut pending: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        for piece in wire.chunks(chunk.max(1)) {
            pending.extend_from_slice(piece);
            loop {
                match decoder.decode(&mut pending)? {
                    None => break,
                    Some((used, message)) => {
                        if let Some(m) = message {
                            out.push(Owned::from(m));
                        }
                        pending.drain(..used);
                    }
                }
            }
        }
        assert!(pending.is_empty(), "bytes left over: {pending:?}");
        Ok(out)
    }

    fn message() -> impl Strategy<Value = TMessage> {
        prop_oneof![
            4 => ".{0,300}".prop_map(TMessage::text),
            3 => proptest::collection::vec(any::<u8>(), 0..70_000).prop_map(TMessage::binary),
            1 => proptest::collection::vec(any::<u8>(), 0..125).prop_map(|b| TMessage::Ping(b.into())),
            1 => proptest::collection::vec(any::<u8>(), 0..125).prop_map(|b| TMessage::Pong(b.into())),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever tungstenite (a client) sends, fragmented or not, read in any pieces,
        /// decodes to the same messages.
        #[test]
        fn decodes_what_a_client_sends(
            messages in proptest::collection::vec(message(), 1..8),
            frame_size in proptest::option::of(1usize..5_000),
            chunk in 1usize..20_000,
        ) {
            let wire = client_wire(&messages, frame_size);
            let decoded = decode_all(&wire, chunk, 1 << 20).expect("valid frames");
            let expected: Vec<Owned> = messages.iter().map(Owned::from).collect();
            prop_assert_eq!(decoded, expected);
        }

        /// Garbage never panics and never yields more than it was given.
        #[test]
        fn garbage_is_refused_or_decoded_without_panicking(
            wire in proptest::collection::vec(any::<u8>(), 0..2_000),
            chunk in 1usize..64,
        ) {
            let _ = decode_all_lenient(&wire, chunk);
        }

        /// Every server frame we encode, tungstenite (a client) reads back as sent.
        #[test]
        fn clients_read_what_we_encode(
            texts in proptest::collection::vec(".{0,300}", 1..6),
            binary in proptest::collection::vec(any::<u8>(), 0..70_000),
        ) {
            let mut wire = Vec::new();
            for t in &texts {
                wire.extend_from_slice(&text_frame(t));
                wire.extend_from_slice(&text_frame_with(0, |out| out.extend_from_slice(t.as_bytes())));
            }
            wire.extend_from_slice(&binary_frame(&binary));
            wire.extend_from_slice(&ping_frame(b"p"));
            let pipe = Pipe { input: Cursor::new(wire), output: Vec::new() };
            let mut ws = WebSocket::from_raw_socket(pipe, Role::Client, None);
            for t in &texts {
                prop_assert_eq!(ws.read().expect("text"), TMessage::text(t.clone()));
                prop_assert_eq!(ws.read().expect("text_with"), TMessage::text(t.clone()));
            }
            prop_assert_eq!(ws.read().expect("binary"), TMessage::binary(binary));
            prop_assert_eq!(ws.read().expect("ping"), TMessage::Ping(Bytes::from_static(b"p")));
        }
    }

    /// Like [`decode_all`], stopping at the first error, without the leftover check.
    fn decode_all_lenient(wire: &[u8], chunk: usize) -> Result<usize, WsError> {
        let mut decoder = Decoder::new(4_096);
        let mut pending: Vec<u8> = Vec::new();
        let mut count = 0;
        for piece in wire.chunks(chunk) {
            pending.extend_from_slice(piece);
            let available = pending.len();
            while let Some((used, message)) = decoder.decode(&mut pending)? {
                count += usize::from(message.is_some());
                assert!(used > 0 && used <= available);
                pending.drain(..used);
            }
        }
        Ok(count)
    }

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    #[test]
    fn a_message_in_one_frame_is_borrowed_from_the_buffer() {
        let mut wire = raw_frames(&[(0x1, true, b"Hello")], MASK);
        let mut decoder = Decoder::new(100);
        let (used, message) = decoder.decode(&mut wire).unwrap().unwrap();
        assert_eq!(used, 2 + 4 + 5);
        assert_eq!(message, Some(Message::Text("Hello")));
        assert!(!decoder.holds_partial());
    }

    #[test]
    fn control_frames_may_come_between_fragments() {
        let wire = raw_frames(&[(0x1, false, b"Hel"), (0x9, true, b"ping"), (0x0, true, b"lo")], MASK);
        assert_eq!(
            decode_all(&wire, 3, 100).unwrap(),
            vec![Owned::Ping(b"ping".to_vec()), Owned::Text("Hello".to_string())]
        );
    }

    #[test]
    fn the_partial_message_is_let_go_once_handed_out() {
        let mut wire = raw_frames(&[(0x2, false, b"ab"), (0x0, true, b"cd")], MASK);
        let mut decoder = Decoder::new(100);
        let (used, none) = decoder.decode(&mut wire).unwrap().unwrap();
        assert!(none.is_none());
        assert!(decoder.holds_partial());
        let mut rest = wire[used..].to_vec();
        assert_eq!(decoder.decode(&mut rest).unwrap().unwrap().1, Some(Message::Binary(b"abcd")));
        assert!(!decoder.holds_partial());
    }

    #[test]
    fn refuses_what_the_rfc_forbids() {
        let cases: &[(Vec<u8>, WsError)] = &[
            // Unmasked client frame.
            (vec![0x81, 0x02, b'h', b'i'], WsError::Protocol("client frames must be masked")),
            // RSV1 without an extension.
            (vec![0xC1, 0x80, 0, 0, 0, 0], WsError::Protocol("reserved bits set without an extension")),
            // Reserved opcode 3.
            (vec![0x83, 0x80, 0, 0, 0, 0], WsError::Protocol("reserved opcode")),
            // A fragmented ping.
            (
                raw_frames(&[(0x9, false, b"")], MASK),
                WsError::Protocol("control frames are final and at most 125 bytes"),
            ),
            // A ping of 126 bytes.
            (
                raw_frames(&[(0x9, true, &[0; 126])], MASK),
                WsError::Protocol("control frames are final and at most 125 bytes"),
            ),
            // A continuation out of nowhere.
            (raw_frames(&[(0x0, true, b"x")], MASK), WsError::Protocol("a continuation with no message to continue")),
            // A new text message inside a fragmented one.
            (
                raw_frames(&[(0x1, false, b"a"), (0x1, true, b"b")], MASK),
                WsError::Protocol("a new message inside a fragmented one"),
            ),
            // Invalid UTF-8, whole and across fragments.
            (raw_frames(&[(0x1, true, &[0xff])], MASK), WsError::InvalidUtf8),
            (raw_frames(&[(0x1, false, &[0xe2, 0x82]), (0x0, true, &[0x28])], MASK), WsError::InvalidUtf8),
            // Close payloads: one byte, a code that may not be sent, a reason not UTF-8.
            (raw_frames(&[(0x8, true, &[3])], MASK), WsError::Protocol("a close payload of one byte")),
            (
                raw_frames(&[(0x8, true, &1005u16.to_be_bytes())], MASK),
                WsError::Protocol("a close code that may not be sent"),
            ),
            (raw_frames(&[(0x8, true, &[0x03, 0xe8, 0xff])], MASK), WsError::InvalidUtf8),
        ];
        for (wire, expected) in cases {
            assert_eq!(decode_all(wire, 1, 100).unwrap_err(), *expected, "{wire:x?}");
        }
    }

    #[test]
    fn a_message_over_the_limit_is_refused_from_its_header() {
        // Only the header of a 2^40-byte frame: refused without waiting for the payload.
        let mut wire = vec![0x82, 0x80 | 127];
        wire.extend_from_slice(&(1u64 << 40).to_be_bytes());
        wire.extend_from_slice(&MASK);
        assert_eq!(Decoder::new(1_000).decode(&mut wire).unwrap_err(), WsError::TooBig(1 << 40));
        // The limit counts the fragments already held.
        let wire = raw_frames(&[(0x2, false, &[0; 60]), (0x0, true, &[0; 60])], MASK);
        assert_eq!(decode_all(&wire, 200, 100).unwrap_err(), WsError::TooBig(120));
        assert_eq!(WsError::TooBig(1).close_code(), 1009);
    }

    #[test]
    fn close_frames_carry_their_code_and_reason() {
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice("bye ✓".as_bytes());
        let wire = raw_frames(&[(0x8, true, &payload), (0x8, true, b"")], MASK);
        assert_eq!(
            decode_all(&wire, 7, 100).unwrap(),
            vec![Owned::Close(Some((1000, "bye ✓".to_string()))), Owned::Close(None)]
        );
        // Ours: the reason is cut at a character boundary to fit 125 bytes.
        let frame = close_frame(1001, &"é".repeat(100));
        assert_eq!(frame[1] as usize, frame.len() - 2);
        assert!(frame.len() - 2 <= 125);
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
    }

    #[test]
    fn unmasking_twice_gives_the_bytes_back() {
        for len in 0..40 {
            let original: Vec<u8> = (0..len as u8).collect();
            let mut bytes = original.clone();
            unmask(&mut bytes, MASK);
            let expected: Vec<u8> = original.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]).collect();
            assert_eq!(bytes, expected);
            unmask(&mut bytes, MASK);
            assert_eq!(bytes, original);
        }
    }

    #[test]
    fn header_sizes_follow_the_payload_length() {
        for (len, header) in [(0usize, 2usize), (125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            let payload = vec![b'a'; len];
            let text = std::str::from_utf8(&payload).unwrap();
            assert_eq!(text_frame(text).len(), header + len, "{len}");
            let with = text_frame_with(len, |out| out.extend_from_slice(&payload));
            assert_eq!(with, text_frame(text), "{len}");
        }
    }
}
