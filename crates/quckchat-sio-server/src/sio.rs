//! Socket.IO packets (protocol v5, and v4 for socket.io-client 2.x), carried in Engine.IO
//! messages: `<type>[<attachments>-][<namespace>,][<ack id>][<JSON>]`, for example
//! `2/chat,12["message:send",{"conversationId":"…"}]`.
//!
//! Decoding borrows every part from the message text and leaves the JSON as text: the
//! handler that knows the argument types parses it once, straight into them. Encoding
//! writes into a caller's buffer, so a broadcast is encoded once for every recipient.

use serde_json::value::RawValue;

/// A packet's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `0`: join a namespace (with auth data in v5).
    Connect,
    /// `1`: leave a namespace.
    Disconnect,
    /// `2`: an event.
    Event,
    /// `3`: an answer to an event that asked for one.
    Ack,
    /// `4`: a namespace refused the connection (v5; `ERROR` in v4).
    ConnectError,
    /// `5`: an event with binary attachments.
    BinaryEvent,
    /// `6`: an ack with binary attachments.
    BinaryAck,
}

impl Kind {
    fn from_digit(d: u8) -> Option<Kind> {
        Some(match d {
            b'0' => Kind::Connect,
            b'1' => Kind::Disconnect,
            b'2' => Kind::Event,
            b'3' => Kind::Ack,
            b'4' => Kind::ConnectError,
            b'5' => Kind::BinaryEvent,
            b'6' => Kind::BinaryAck,
            _ => return None,
        })
    }

    fn digit(self) -> u8 {
        match self {
            Kind::Connect => b'0',
            Kind::Disconnect => b'1',
            Kind::Event => b'2',
            Kind::Ack => b'3',
            Kind::ConnectError => b'4',
            Kind::BinaryEvent => b'5',
            Kind::BinaryAck => b'6',
        }
    }

    /// Whether attachments follow the packet.
    pub fn is_binary(self) -> bool {
        matches!(self, Kind::BinaryEvent | Kind::BinaryAck)
    }
}

/// A packet that does not follow the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SioError {
    /// The type is not 0–6 (or the packet is empty).
    #[error("unknown Socket.IO packet type")]
    UnknownType,
    /// The attachment count is missing its `-`, or is not a number in range.
    #[error("malformed attachment count")]
    BadAttachments,
    /// A namespace without the `,` that ends it.
    #[error("unterminated namespace")]
    BadNamespace,
    /// An ack id that does not fit in 64 bits.
    #[error("ack id out of range")]
    BadAckId,
    /// The JSON is not what the packet type needs (an event needs an array whose first
    /// element is a string name; an ack an array).
    #[error("invalid Socket.IO payload: {0}")]
    BadPayload(&'static str),
}

/// The most attachments one packet may announce (the engine also bounds their bytes).
pub const MAX_ATTACHMENTS: usize = 64;

/// One decoded packet, borrowing from the Engine.IO message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Its type.
    pub kind: Kind,
    /// The namespace (`/` when the packet names none).
    pub nsp: &'a str,
    /// The query socket.io-client 2.x puts after the namespace of a CONNECT
    /// (`0/chat?token=…,`), without the `?`.
    pub query: Option<&'a str>,
    /// How many binary attachments follow (binary kinds only).
    pub attachments: usize,
    /// The ack id, when the sender wants an answer (events) or answers (acks).
    pub id: Option<u64>,
    /// The JSON payload as text; empty when there is none.
    pub data: &'a str,
}

/// Decodes a Socket.IO packet from an Engine.IO message's text.
pub fn decode(text: &str) -> Result<Packet<'_>, SioError> {
    let bytes = text.as_bytes();
    let kind = bytes.first().and_then(|d| Kind::from_digit(*d)).ok_or(SioError::UnknownType)?;
    let mut at = 1;

    let mut attachments = 0;
    if kind.is_binary() {
        let digits = bytes[at..].iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || bytes.get(at + digits) != Some(&b'-') {
            return Err(SioError::BadAttachments);
        }
        attachments = text[at..at + digits].parse().map_err(|_| SioError::BadAttachments)?;
        if attachments > MAX_ATTACHMENTS {
            return Err(SioError::BadAttachments);
        }
        at += digits + 1;
    }

    let (mut nsp, mut query) = ("/", None);
    if bytes.get(at) == Some(&b'/') {
        // A namespace runs to the first `,`; a packet with nothing after its namespace
        // (`1/chat`) may leave the comma out.
        let end = match text[at..].find(',') {
            Some(comma) => at + comma,
            None if text[at..].bytes().any(|b| matches!(b, b'[' | b'{' | b'"')) => {
                return Err(SioError::BadNamespace);
            }
            None => text.len(),
        };
        let full = &text[at..end];
        (nsp, query) = match full.split_once('?') {
            Some((n, q)) => (n, Some(q)),
            None => (full, None),
        };
        at = (end + 1).min(text.len());
    }

    let digits = bytes[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    let id = if digits > 0 {
        let id = text[at..at + digits].parse().map_err(|_| SioError::BadAckId)?;
        at += digits;
        Some(id)
    } else {
        None
    };

    Ok(Packet { kind, nsp, query, attachments, id, data: &text[at..] })
}

/// An event's name and its arguments, each as raw JSON.
#[derive(Debug)]
pub struct EventArgs<'a> {
    /// The event name.
    pub name: std::borrow::Cow<'a, str>,
    /// The arguments after the name.
    pub args: Vec<&'a RawValue>,
}

/// Splits an event's JSON (`["name", arg, …]`) into its name and raw arguments: one pass
/// over the text that allocates only the list of argument slices.
pub fn event_args(data: &str) -> Result<EventArgs<'_>, SioError> {
    let items: Vec<&RawValue> =
        serde_json::from_str(data).map_err(|_| SioError::BadPayload("an event is a JSON array"))?;
    let mut items = items.into_iter();
    let first = items.next().ok_or(SioError::BadPayload("an event names itself first"))?;
    let name: std::borrow::Cow<'_, str> =
        serde_json::from_str(first.get()).map_err(|_| SioError::BadPayload("an event name is a string"))?;
    Ok(EventArgs { name, args: items.collect() })
}

/// Writes the header of a packet: type, attachment count, namespace, ack id. The JSON
/// follows (the caller writes it).
pub fn write_header(out: &mut Vec<u8>, kind: Kind, nsp: &str, attachments: usize, id: Option<u64>) {
    out.push(kind.digit());
    if kind.is_binary() {
        out.extend_from_slice(itoa::Buffer::new().format(attachments).as_bytes());
        out.push(b'-');
    }
    if nsp != "/" {
        out.extend_from_slice(nsp.as_bytes());
        out.push(b',');
    }
    if let Some(id) = id {
        out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
    }
}

/// Writes a whole event packet: `2[/nsp,][id]["name",args…]` where `args` is the JSON of
/// the arguments without brackets (`{"a":1},2`), or empty.
pub fn write_event(out: &mut Vec<u8>, nsp: &str, id: Option<u64>, name: &str, args: &str) {
    write_header(out, Kind::Event, nsp, 0, id);
    out.push(b'[');
    // serde_json escapes the name as JSON requires; writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, name);
    if !args.is_empty() {
        out.push(b',');
        out.extend_from_slice(args.as_bytes());
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn p(kind: Kind, nsp: &str, id: Option<u64>, data: &str) -> Packet<'static> {
        let (nsp, data) = (nsp.to_string().leak(), data.to_string().leak());
        Packet { kind, nsp, query: None, attachments: 0, id, data }
    }

    #[test]
    fn decodes_the_protocol_examples() {
        assert_eq!(decode("0"), Ok(p(Kind::Connect, "/", None, "")));
        assert_eq!(decode(r#"0/admin,{"token":"123"}"#), Ok(p(Kind::Connect, "/admin", None, r#"{"token":"123"}"#)));
        assert_eq!(decode("1/admin,"), Ok(p(Kind::Disconnect, "/admin", None, "")));
        assert_eq!(decode("1/admin"), Ok(p(Kind::Disconnect, "/admin", None, "")));
        assert_eq!(decode(r#"2["hello",1]"#), Ok(p(Kind::Event, "/", None, r#"["hello",1]"#)));
        assert_eq!(
            decode(r#"2/admin,456["project:delete",123]"#),
            Ok(p(Kind::Event, "/admin", Some(456), r#"["project:delete",123]"#))
        );
        assert_eq!(decode("3/admin,456[]"), Ok(p(Kind::Ack, "/admin", Some(456), "[]")));
        assert_eq!(
            decode(r#"4/admin,{"message":"Not authorized"}"#),
            Ok(p(Kind::ConnectError, "/admin", None, r#"{"message":"Not authorized"}"#))
        );
        let binary = decode(r#"51-["hello",{"_placeholder":true,"num":0}]"#).unwrap();
        assert_eq!((binary.kind, binary.attachments, binary.nsp), (Kind::BinaryEvent, 1, "/"));
        let ack = decode(r#"61-/admin,456[{"_placeholder":true,"num":0}]"#).unwrap();
        assert_eq!((ack.kind, ack.attachments, ack.nsp, ack.id), (Kind::BinaryAck, 1, "/admin", Some(456)));
    }

    #[test]
    fn a_2x_client_puts_its_query_in_the_namespace() {
        let connect = decode("0/chat?token=abc&x=1,").unwrap();
        assert_eq!((connect.nsp, connect.query, connect.data), ("/chat", Some("token=abc&x=1"), ""));
    }

    #[test]
    fn refuses_malformed_packets() {
        assert_eq!(decode(""), Err(SioError::UnknownType));
        assert_eq!(decode("7"), Err(SioError::UnknownType));
        assert_eq!(decode(r#"5["a"]"#), Err(SioError::BadAttachments));
        assert_eq!(decode(r#"51["a"]"#), Err(SioError::BadAttachments));
        assert_eq!(decode("5999-[]"), Err(SioError::BadAttachments));
        assert_eq!(decode(r#"2/chat["a"]"#), Err(SioError::BadNamespace));
        assert_eq!(decode("299999999999999999999999[]"), Err(SioError::BadAckId));
    }

    #[test]
    fn event_arguments_stay_raw() {
        let args = event_args(r#"["message:send",{"content":"hi"},7]"#).unwrap();
        assert_eq!(args.name, "message:send");
        assert_eq!(args.args.iter().map(|a| a.get()).collect::<Vec<_>>(), vec![r#"{"content":"hi"}"#, "7"]);
        assert_eq!(event_args(r#"["a\"b"]"#).unwrap().name, "a\"b");
        assert!(event_args("{}").is_err());
        assert!(event_args("[]").is_err());
        assert!(event_args("[1]").is_err());
    }

    #[test]
    fn writes_events() {
        let mut out = Vec::new();
        write_event(&mut out, "/chat", Some(12), "message:new", r#"{"a":1}"#);
        assert_eq!(String::from_utf8(out).unwrap(), r#"2/chat,12["message:new",{"a":1}]"#);
        let mut out = Vec::new();
        write_event(&mut out, "/", None, "pong", "");
        assert_eq!(String::from_utf8(out).unwrap(), r#"2["pong"]"#);
        let mut out = Vec::new();
        write_header(&mut out, Kind::BinaryAck, "/x", 2, Some(3));
        assert_eq!(String::from_utf8(out).unwrap(), "62-/x,3");
    }

    proptest! {
        /// What we write, we read back: kind, namespace, id, data.
        #[test]
        fn events_round_trip(
            nsp in "(/|/[a-z]{1,10})",
            id in proptest::option::of(any::<u64>()),
            name in ".{0,20}",
            arg in "[a-z0-9 ]{0,20}",
        ) {
            let args = serde_json::to_string(&arg).unwrap();
            let mut out = Vec::new();
            write_event(&mut out, &nsp, id, &name, &args);
            let text = String::from_utf8(out).unwrap();
            let packet = decode(&text).unwrap();
            prop_assert_eq!((packet.kind, packet.nsp, packet.id), (Kind::Event, nsp.as_str(), id));
            let parsed = event_args(packet.data).unwrap();
            prop_assert_eq!(parsed.name, name);
            prop_assert_eq!(parsed.args.len(), 1);
            prop_assert_eq!(parsed.args[0].get(), args);
        }

        /// Any text decodes or is refused; nothing panics.
        #[test]
        fn any_text_is_decoded_or_refused(text in ".{0,60}") {
            if let Ok(packet) = decode(&text) {
                let _ = event_args(packet.data);
            }
        }
    }
}
