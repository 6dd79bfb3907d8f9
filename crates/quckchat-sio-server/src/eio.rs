//! Engine.IO packets (protocol v4, and v3 for socket.io-client 2.x), over WebSocket frames
//! and HTTP long-polling payloads, and the handshake.
//!
//! | | WebSocket | long-polling payload |
//! |---|---|---|
//! | v4 | a text frame per packet: type digit + data; a binary frame is a binary message | packets joined by `\x1e`; binary as `b` + base64 |
//! | v3 | the same, but a binary frame starts with the type byte `4` | each packet as `<length>:<packet>`, the length in UTF-16 code units (JavaScript's `String.length`); binary as `b4` + base64 |
//!
//! Decoding borrows from the frame or request body; only base64 binary is decoded into
//! an owned buffer.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// The protocol version a client speaks (`EIO=4` or `EIO=3` in its query).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// socket.io-client 2.x.
    V3,
    /// socket.io-client 3.x and 4.x.
    V4,
}

impl Version {
    /// The version an `EIO` query value names; `None` for any other.
    pub fn from_query(value: &str) -> Option<Version> {
        match value {
            "3" => Some(Version::V3),
            "4" => Some(Version::V4),
            _ => None,
        }
    }
}

/// A packet that does not follow the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EioError {
    /// An empty packet.
    #[error("empty Engine.IO packet")]
    Empty,
    /// The type is not 0–6.
    #[error("unknown Engine.IO packet type {0:?}")]
    UnknownType(char),
    /// A v3 payload's length prefix is missing, not a number, or longer than what follows.
    #[error("malformed Engine.IO v3 payload length")]
    BadLength,
    /// Binary data that is not valid base64.
    #[error("invalid base64 in an Engine.IO binary packet")]
    BadBase64,
}

/// One Engine.IO packet from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// `0`: not sent by clients; refused by the session.
    Open,
    /// `1`: the client closes the session.
    Close,
    /// `2` + data: a ping (v3 clients ping; `2probe` on the upgrade path).
    Ping(&'a str),
    /// `3` + data: a pong (v4 clients answer the server's pings).
    Pong(&'a str),
    /// `4` + text: a message (a Socket.IO packet).
    Message(&'a str),
    /// Binary data: a binary message (a Socket.IO attachment).
    Binary(Cow<'a, [u8]>),
    /// `5`: the client completes the upgrade to WebSocket.
    Upgrade,
    /// `6`: noop (answers a polling request during an upgrade).
    Noop,
}

/// Decodes one packet of text (a WebSocket text frame, or one packet of a payload).
pub fn decode_text(text: &str) -> Result<Packet<'_>, EioError> {
    let Some(&first) = text.as_bytes().first() else { return Err(EioError::Empty) };
    // An ASCII first byte: index 1 is a character boundary.
    let rest = if first.is_ascii() { &text[1..] } else { "" };
    Ok(match first {
        b'0' => Packet::Open,
        b'1' => Packet::Close,
        b'2' => Packet::Ping(rest),
        b'3' => Packet::Pong(rest),
        b'4' => Packet::Message(rest),
        b'5' => Packet::Upgrade,
        b'6' => Packet::Noop,
        _ => return Err(EioError::UnknownType(text.chars().next().unwrap_or('\u{fffd}'))),
    })
}

/// Decodes a WebSocket binary frame: a binary message (v3 puts the type byte `4` first).
pub fn decode_binary(version: Version, data: &[u8]) -> Result<Packet<'_>, EioError> {
    match version {
        Version::V4 => Ok(Packet::Binary(Cow::Borrowed(data))),
        Version::V3 => match data.split_first() {
            Some((4, rest)) => Ok(Packet::Binary(Cow::Borrowed(rest))),
            Some((t, _)) => Err(EioError::UnknownType(char::from(*t))),
            None => Err(EioError::Empty),
        },
    }
}

/// Decodes the body of a polling POST into its packets.
pub fn decode_payload(version: Version, body: &str) -> Result<Vec<Packet<'_>>, EioError> {
    match version {
        Version::V4 => body.split('\x1e').map(decode_v4_payload_packet).collect(),
        Version::V3 => decode_v3_payload(body),
    }
}

fn decode_v4_payload_packet(packet: &str) -> Result<Packet<'_>, EioError> {
    match packet.strip_prefix('b') {
        Some(b64) => Ok(Packet::Binary(Cow::Owned(BASE64.decode(b64).map_err(|_| EioError::BadBase64)?))),
        None => decode_text(packet),
    }
}

/// `<length>:<packet>` repeated; the length counts UTF-16 code units.
fn decode_v3_payload(mut body: &str) -> Result<Vec<Packet<'_>>, EioError> {
    let mut packets = Vec::new();
    if body.is_empty() {
        return Err(EioError::Empty);
    }
    while !body.is_empty() {
        let colon = body.find(':').ok_or(EioError::BadLength)?;
        let units: usize = body[..colon].parse().map_err(|_| EioError::BadLength)?;
        let rest = &body[colon + 1..];
        let end = utf16_prefix(rest, units).ok_or(EioError::BadLength)?;
        let packet = &rest[..end];
        packets.push(match packet.strip_prefix("b4") {
            Some(b64) => Packet::Binary(Cow::Owned(BASE64.decode(b64).map_err(|_| EioError::BadBase64)?)),
            None => decode_text(packet)?,
        });
        body = &rest[end..];
    }
    Ok(packets)
}

/// The byte length of the first `units` UTF-16 code units of `s`; `None` when `s` is
/// shorter or the count ends inside a surrogate pair.
fn utf16_prefix(s: &str, units: usize) -> Option<usize> {
    let mut counted = 0;
    for (i, c) in s.char_indices() {
        if counted == units {
            return Some(i);
        }
        counted += c.len_utf16();
        if counted > units {
            return None;
        }
    }
    (counted == units).then_some(s.len())
}

/// What a server sends, ready to be framed for either transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing<'a> {
    /// A text packet: its type digit and data (`4` + a Socket.IO packet, `2` ping, …).
    Text(u8, &'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

/// Appends packets to a polling response body in `version`'s payload encoding.
pub fn encode_payload(version: Version, packets: &[Outgoing<'_>], out: &mut String) {
    for (i, packet) in packets.iter().enumerate() {
        match version {
            Version::V4 => {
                if i > 0 {
                    out.push('\x1e');
                }
                match packet {
                    Outgoing::Text(t, data) => {
                        out.push(char::from(b'0' + t));
                        out.push_str(data);
                    }
                    Outgoing::Binary(data) => {
                        out.push('b');
                        BASE64.encode_string(data, out);
                    }
                }
            }
            Version::V3 => match packet {
                Outgoing::Text(t, data) => {
                    let units = 1 + data.encode_utf16().count();
                    out.push_str(itoa::Buffer::new().format(units));
                    out.push(':');
                    out.push(char::from(b'0' + t));
                    out.push_str(data);
                }
                Outgoing::Binary(data) => {
                    let encoded = BASE64.encode(data);
                    out.push_str(itoa::Buffer::new().format(2 + encoded.len()));
                    out.push_str(":b4");
                    out.push_str(&encoded);
                }
            },
        }
    }
}

/// Engine.IO v3's binary payload (what a client with XHR2 gets when it did not ask for
/// base64, and may POST): per packet a kind byte (0 text, 1 binary), its length as one
/// byte per decimal digit, 255, then the packet: a text packet's type digit and data
/// (its length in UTF-16 units, as JavaScript counts), or the type byte 4 and the data.
pub fn encode_v3_binary_payload(packets: &[Outgoing<'_>], out: &mut Vec<u8>) {
    let digits = |out: &mut Vec<u8>, n: usize| {
        out.extend(itoa::Buffer::new().format(n).bytes().map(|d| d - b'0'));
        out.push(255);
    };
    for packet in packets {
        match packet {
            Outgoing::Text(t, data) => {
                out.push(0);
                digits(out, 1 + data.encode_utf16().count());
                out.push(b'0' + t);
                out.extend_from_slice(data.as_bytes());
            }
            Outgoing::Binary(data) => {
                out.push(1);
                digits(out, 1 + data.len());
                out.push(4);
                out.extend_from_slice(data);
            }
        }
    }
}

/// Decodes Engine.IO v3's binary payload (see [`encode_v3_binary_payload`]).
pub fn decode_v3_binary_payload(mut body: &[u8]) -> Result<Vec<Packet<'_>>, EioError> {
    let mut packets = Vec::new();
    if body.is_empty() {
        return Err(EioError::Empty);
    }
    while let Some((&kind, rest)) = body.split_first() {
        let end = rest.iter().position(|&b| b == 255).ok_or(EioError::BadLength)?;
        if end == 0 || end > 10 || rest[..end].iter().any(|&d| d > 9) {
            return Err(EioError::BadLength);
        }
        let len = rest[..end].iter().fold(0usize, |n, &d| n * 10 + usize::from(d));
        let rest = &rest[end + 1..];
        match kind {
            0 => {
                let text = std::str::from_utf8(rest).map_err(|_| EioError::BadLength);
                // The length counts UTF-16 units of the text; find where they end.
                let text = match text {
                    Ok(text) => text,
                    // The body may go on with binary packets after this one: decode the
                    // longest UTF-8 prefix.
                    Err(_) => {
                        let valid = std::str::from_utf8(rest).err().map_or(rest.len(), |e| e.valid_up_to());
                        std::str::from_utf8(&rest[..valid]).map_err(|_| EioError::BadLength)?
                    }
                };
                let bytes = utf16_prefix(text, len).ok_or(EioError::BadLength)?;
                packets.push(decode_text(&text[..bytes])?);
                body = &rest[bytes..];
            }
            1 => {
                let data = rest.get(..len).ok_or(EioError::BadLength)?;
                match data.split_first() {
                    Some((4, data)) => packets.push(Packet::Binary(Cow::Borrowed(data))),
                    Some((t, _)) => return Err(EioError::UnknownType(char::from(*t))),
                    None => return Err(EioError::Empty),
                }
                body = &rest[len..];
            }
            _ => return Err(EioError::BadLength),
        }
    }
    Ok(packets)
}

/// The handshake's settings, as the open packet announces them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake<'a> {
    /// The session id.
    pub sid: &'a str,
    /// Whether a polling session may upgrade to WebSocket.
    pub upgrades: bool,
    /// Milliseconds between the server's pings (v4) or the client's (v3).
    pub ping_interval_ms: u64,
    /// Milliseconds a pong (v4) or ping (v3) may be late before the session closes.
    pub ping_timeout_ms: u64,
    /// The largest polling payload accepted, in bytes.
    pub max_payload: u64,
}

impl Handshake<'_> {
    /// The open packet's data: `{"sid":…,"upgrades":[…],"pingInterval":…,"pingTimeout":…}`
    /// and `maxPayload`. The sid is ours (base64url), so it needs no escaping.
    pub fn json(&self, version: Version) -> String {
        let upgrades = if self.upgrades { r#"["websocket"]"# } else { "[]" };
        let mut json = format!(
            r#"{{"sid":"{}","upgrades":{},"pingInterval":{},"pingTimeout":{}"#,
            self.sid, upgrades, self.ping_interval_ms, self.ping_timeout_ms
        );
        // v3's reference server (engine.io 3.6) announces it too.
        let _ = version;
        json.push_str(&format!(r#","maxPayload":{}"#, self.max_payload));
        json.push('}');
        json
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn text_packets() {
        assert_eq!(decode_text("2probe"), Ok(Packet::Ping("probe")));
        assert_eq!(decode_text("3"), Ok(Packet::Pong("")));
        assert_eq!(decode_text(r#"42["a"]"#), Ok(Packet::Message(r#"2["a"]"#)));
        assert_eq!(decode_text("5"), Ok(Packet::Upgrade));
        assert_eq!(decode_text("6"), Ok(Packet::Noop));
        assert_eq!(decode_text("1"), Ok(Packet::Close));
        assert_eq!(decode_text(""), Err(EioError::Empty));
        assert_eq!(decode_text("9"), Err(EioError::UnknownType('9')));
        assert_eq!(decode_text("é"), Err(EioError::UnknownType('é')));
    }

    #[test]
    fn binary_frames() {
        assert_eq!(decode_binary(Version::V4, &[1, 2]), Ok(Packet::Binary(Cow::Borrowed(&[1, 2][..]))));
        assert_eq!(decode_binary(Version::V3, &[4, 1, 2]), Ok(Packet::Binary(Cow::Borrowed(&[1, 2][..]))));
        assert_eq!(decode_binary(Version::V3, &[2]), Err(EioError::UnknownType('\u{2}')));
        assert_eq!(decode_binary(Version::V3, &[]), Err(EioError::Empty));
    }

    #[test]
    fn v4_payloads() {
        let body = "4hello\x1e2\x1ebAQID";
        assert_eq!(
            decode_payload(Version::V4, body),
            Ok(vec![Packet::Message("hello"), Packet::Ping(""), Packet::Binary(Cow::Owned(vec![1, 2, 3]))])
        );
        assert_eq!(decode_payload(Version::V4, "b!!"), Err(EioError::BadBase64));
    }

    #[test]
    fn v3_payloads_count_utf16_units() {
        // "é" is one unit, "😀" two (a surrogate pair), as socket.io-client 2.x counts them.
        let body = "3:4é!3:4😀2:2x6:b4AQID";
        assert_eq!(
            decode_payload(Version::V3, body),
            Ok(vec![
                Packet::Message("é!"),
                Packet::Message("😀"),
                Packet::Ping("x"),
                Packet::Binary(Cow::Owned(vec![1, 2, 3]))
            ])
        );
        for bad in ["", "x:4a", "5:4a", "2", "2:4😀"] {
            assert_eq!(
                decode_payload(Version::V3, bad),
                Err(if bad.is_empty() { EioError::Empty } else { EioError::BadLength }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn v3_binary_payloads() {
        let mut out = Vec::new();
        encode_v3_binary_payload(&[Outgoing::Binary(&[1, 2, 3, 4]), Outgoing::Text(4, "héllo")], &mut out);
        let mut expected = vec![1, 5, 255, 4, 1, 2, 3, 4, 0, 6, 255, b'4'];
        expected.extend_from_slice("héllo".as_bytes());
        assert_eq!(out, expected);
        assert_eq!(
            decode_v3_binary_payload(&out),
            Ok(vec![Packet::Binary(Cow::Borrowed(&[1, 2, 3, 4][..])), Packet::Message("héllo")])
        );
        for bad in [&[][..], &[1, 5], &[1, 9, 255, 4], &[2, 1, 255, 4], &[0, 12, 255, b'4']] {
            assert!(decode_v3_binary_payload(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn handshake_json() {
        let h = Handshake {
            sid: "abc",
            upgrades: true,
            ping_interval_ms: 25_000,
            ping_timeout_ms: 20_000,
            max_payload: 1_000_000,
        };
        assert_eq!(
            h.json(Version::V4),
            r#"{"sid":"abc","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
        );
        let v3: serde_json::Value =
            serde_json::from_str(&Handshake { upgrades: false, ..h }.json(Version::V3)).unwrap();
        assert_eq!(
            v3,
            serde_json::json!({"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000})
        );
    }

    fn outgoing() -> impl Strategy<Value = (bool, String, Vec<u8>, u8)> {
        (any::<bool>(), "[^\x1e]{0,40}", proptest::collection::vec(any::<u8>(), 0..40), 2u8..5)
    }

    proptest! {
        /// What we encode into a payload, a client's decoder (ours, symmetric) reads back.
        #[test]
        fn payloads_round_trip(items in proptest::collection::vec(outgoing(), 1..8), v3 in any::<bool>()) {
            let version = if v3 { Version::V3 } else { Version::V4 };
            let packets: Vec<Outgoing<'_>> = items
                .iter()
                .map(|(bin, text, data, t)| if *bin { Outgoing::Binary(data) } else { Outgoing::Text(*t, text) })
                .collect();
            let mut body = String::new();
            encode_payload(version, &packets, &mut body);
            let decoded = decode_payload(version, &body).expect("decodes");
            prop_assert_eq!(decoded.len(), packets.len());
            for (got, sent) in decoded.iter().zip(&packets) {
                match (got, sent) {
                    (Packet::Binary(a), Outgoing::Binary(b)) => prop_assert_eq!(&a[..], *b),
                    (Packet::Ping(a), Outgoing::Text(2, b))
                    | (Packet::Pong(a), Outgoing::Text(3, b))
                    | (Packet::Message(a), Outgoing::Text(4, b)) => prop_assert_eq!(a, b),
                    other => prop_assert!(false, "mismatch {:?}", other),
                }
            }
        }

        /// Any body either decodes or is refused; nothing panics.
        #[test]
        fn any_body_is_decoded_or_refused(body in ".{0,200}", v3 in any::<bool>()) {
            let _ = decode_payload(if v3 { Version::V3 } else { Version::V4 }, &body);
        }
    }
}
