//! Pure encoding / decoding of Engine.IO (v3/v4) and Socket.IO (v4/v5) text packets.
//!
//! Nothing in this module does I/O; every function is deterministic and is unit tested
//! below. It is public so that tests and load generators can build raw frames (for
//! example for [`Client::send_raw`](crate::Client::send_raw)).
//!
//! Wire format reminders:
//!
//! * An Engine.IO packet over WebSocket is one text frame: a single type digit followed by
//!   an optional payload (`0{json}` open, `1` close, `2` ping, `3` pong, `4…` message,
//!   `5` upgrade, `6` noop).
//! * A Socket.IO packet travels inside an Engine.IO message: a type digit, then
//!   `/nsp,` when the namespace is not `/`, then an optional decimal ack id, then an
//!   optional JSON payload. For example `2/chat,12["message",{"a":1}]`.

use serde_json::Value;

/// Errors produced while decoding a packet received from the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The frame was empty.
    #[error("empty packet")]
    Empty,
    /// The leading packet type character is not a known type.
    #[error("unknown packet type {0:?}")]
    UnknownType(char),
    /// The packet is a binary Socket.IO packet (`5` BINARY_EVENT or `6` BINARY_ACK),
    /// which this client does not support.
    #[error("binary Socket.IO packets are not supported")]
    BinaryUnsupported,
    /// The ack id does not fit in a `u64`.
    #[error("ack id out of range")]
    BadAckId,
    /// The JSON payload could not be parsed.
    #[error("invalid JSON payload: {0}")]
    Json(String),
    /// The payload is valid JSON but has the wrong shape for this packet type.
    #[error("invalid payload: {0}")]
    BadPayload(&'static str),
}

// ---------------------------------------------------------------------------------------
// Engine.IO
// ---------------------------------------------------------------------------------------

/// A decoded Engine.IO packet, borrowing its payload from the frame text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnginePacket<'a> {
    /// `0{json}`: handshake data (see [`OpenPacket::parse`]).
    Open(&'a str),
    /// `1`: the server closes the Engine.IO session.
    Close,
    /// `2[payload]`: ping (sent by the server in v4, by the client in v3).
    Ping(&'a str),
    /// `3[payload]`: pong.
    Pong(&'a str),
    /// `4<socket.io packet>`: a message, normally a Socket.IO packet.
    Message(&'a str),
    /// `5`: upgrade (not expected on a pure WebSocket connection).
    Upgrade,
    /// `6`: noop.
    Noop,
}

/// Decodes one Engine.IO text frame.
pub fn decode_engine(text: &str) -> Result<EnginePacket<'_>, CodecError> {
    let first = *text.as_bytes().first().ok_or(CodecError::Empty)?;
    if !first.is_ascii() {
        // Safe: a non-empty string has a first char.
        let c = text.chars().next().unwrap_or('\u{fffd}');
        return Err(CodecError::UnknownType(c));
    }
    // The first byte is ASCII, so index 1 is a char boundary.
    let rest = &text[1..];
    Ok(match first {
        b'0' => EnginePacket::Open(rest),
        b'1' => EnginePacket::Close,
        b'2' => EnginePacket::Ping(rest),
        b'3' => EnginePacket::Pong(rest),
        b'4' => EnginePacket::Message(rest),
        b'5' => EnginePacket::Upgrade,
        b'6' => EnginePacket::Noop,
        other => return Err(CodecError::UnknownType(other as char)),
    })
}

/// Encodes an Engine.IO ping frame (`2` + payload).
pub fn encode_engine_ping(payload: &str) -> String {
    format!("2{payload}")
}

/// Encodes an Engine.IO pong frame (`3` + payload). A pong echoes the ping's payload.
pub fn encode_engine_pong(payload: &str) -> String {
    format!("3{payload}")
}

/// Wraps a Socket.IO packet string into an Engine.IO message frame (`4` + packet).
pub fn encode_engine_message(socket_io_packet: &str) -> String {
    format!("4{socket_io_packet}")
}

/// The Engine.IO handshake data carried by the open packet (`0{...}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPacket {
    /// The Engine.IO session id.
    pub sid: String,
    /// Ping interval in milliseconds.
    pub ping_interval_ms: u64,
    /// Ping timeout in milliseconds.
    pub ping_timeout_ms: u64,
    /// Maximum payload size in bytes (absent in Engine.IO v3).
    pub max_payload: Option<u64>,
}

impl OpenPacket {
    /// Parses the JSON payload of an Engine.IO open packet (the text after the `0`).
    pub fn parse(json: &str) -> Result<Self, CodecError> {
        let v: Value = serde_json::from_str(json).map_err(|e| CodecError::Json(e.to_string()))?;
        let obj = v.as_object().ok_or(CodecError::BadPayload("open payload is not an object"))?;
        let sid = obj
            .get("sid")
            .and_then(Value::as_str)
            .ok_or(CodecError::BadPayload("open payload has no string sid"))?
            .to_owned();
        let ping_interval_ms = obj
            .get("pingInterval")
            .and_then(Value::as_u64)
            .ok_or(CodecError::BadPayload("open payload has no pingInterval"))?;
        let ping_timeout_ms = obj
            .get("pingTimeout")
            .and_then(Value::as_u64)
            .ok_or(CodecError::BadPayload("open payload has no pingTimeout"))?;
        let max_payload = obj.get("maxPayload").and_then(Value::as_u64);
        Ok(OpenPacket { sid, ping_interval_ms, ping_timeout_ms, max_payload })
    }
}

// ---------------------------------------------------------------------------------------
// Socket.IO
// ---------------------------------------------------------------------------------------

/// A decoded (non-binary) Socket.IO packet.
#[derive(Debug, Clone, PartialEq)]
pub enum SioPacket {
    /// `0`: CONNECT. From the client it carries the optional auth payload; from the
    /// server (protocol v5) it carries `{"sid": "..."}`.
    Connect {
        /// Namespace, always starting with `/`.
        nsp: String,
        /// Optional payload object.
        data: Option<Value>,
    },
    /// `1`: DISCONNECT of a namespace.
    Disconnect {
        /// Namespace, always starting with `/`.
        nsp: String,
    },
    /// `2`: EVENT, `[name, args...]`, with an optional ack id.
    Event {
        /// Namespace, always starting with `/`.
        nsp: String,
        /// Ack id, when the sender wants an acknowledgement.
        id: Option<u64>,
        /// Event name (first array element).
        event: String,
        /// Event arguments (remaining array elements).
        args: Vec<Value>,
    },
    /// `3`: ACK of an earlier event, `[args...]`.
    Ack {
        /// Namespace, always starting with `/`.
        nsp: String,
        /// The acknowledged event's ack id.
        id: u64,
        /// Acknowledgement arguments.
        args: Vec<Value>,
    },
    /// `4`: CONNECT_ERROR. In protocol v5 the payload is an object such as
    /// `{"message": "unauthorized"}`; in protocol v4 it may be a plain string.
    ConnectError {
        /// Namespace, always starting with `/`.
        nsp: String,
        /// The error payload (`Value::Null` when absent).
        data: Value,
    },
}

impl SioPacket {
    /// The namespace the packet belongs to.
    pub fn nsp(&self) -> &str {
        match self {
            SioPacket::Connect { nsp, .. }
            | SioPacket::Disconnect { nsp }
            | SioPacket::Event { nsp, .. }
            | SioPacket::Ack { nsp, .. }
            | SioPacket::ConnectError { nsp, .. } => nsp,
        }
    }
}

/// Normalizes a namespace: empty becomes `/`, and a missing leading `/` is added.
pub fn normalize_nsp(nsp: &str) -> String {
    if nsp.is_empty() {
        "/".to_owned()
    } else if nsp.starts_with('/') {
        nsp.to_owned()
    } else {
        format!("/{nsp}")
    }
}

/// Writes the `type[/nsp,][id]` header of a Socket.IO packet.
fn header(kind: char, nsp: &str, id: Option<u64>) -> String {
    let mut s = String::with_capacity(nsp.len() + 24);
    s.push(kind);
    if !nsp.is_empty() && nsp != "/" {
        if !nsp.starts_with('/') {
            s.push('/');
        }
        s.push_str(nsp);
        s.push(',');
    }
    if let Some(id) = id {
        s.push_str(&id.to_string());
    }
    s
}

/// Encodes a Socket.IO packet (without the Engine.IO `4` prefix).
pub fn encode_sio(packet: &SioPacket) -> String {
    match packet {
        SioPacket::Connect { nsp, data } => {
            let mut s = header('0', nsp, None);
            if let Some(d) = data {
                s.push_str(&d.to_string());
            }
            s
        }
        SioPacket::Disconnect { nsp } => header('1', nsp, None),
        SioPacket::Event { nsp, id, event, args } => encode_event(nsp, event, args, *id),
        SioPacket::Ack { nsp, id, args } => {
            let mut s = header('3', nsp, Some(*id));
            s.push_str(&Value::Array(args.clone()).to_string());
            s
        }
        SioPacket::ConnectError { nsp, data } => {
            let mut s = header('4', nsp, None);
            if !data.is_null() {
                s.push_str(&data.to_string());
            }
            s
        }
    }
}

/// Encodes a Socket.IO EVENT packet (without the Engine.IO `4` prefix), e.g.
/// `2/chat,3["message",{"text":"hi"}]`.
pub fn encode_event(nsp: &str, event: &str, args: &[Value], ack_id: Option<u64>) -> String {
    let mut s = header('2', nsp, ack_id);
    let mut arr = Vec::with_capacity(args.len() + 1);
    arr.push(Value::String(event.to_owned()));
    arr.extend(args.iter().cloned());
    s.push_str(&Value::Array(arr).to_string());
    s
}

/// Encodes a Socket.IO CONNECT packet (without the Engine.IO `4` prefix), e.g. `0` or
/// `0/chat,{"token":"x"}`.
pub fn encode_connect(nsp: &str, auth: Option<&Value>) -> String {
    let mut s = header('0', nsp, None);
    if let Some(a) = auth {
        s.push_str(&a.to_string());
    }
    s
}

/// Encodes a Socket.IO DISCONNECT packet (without the Engine.IO `4` prefix), e.g. `1`
/// or `1/chat,`.
pub fn encode_disconnect(nsp: &str) -> String {
    header('1', nsp, None)
}

/// Encodes a Socket.IO ACK packet (without the Engine.IO `4` prefix), e.g.
/// `3/chat,7["ok"]`.
pub fn encode_ack(nsp: &str, id: u64, args: &[Value]) -> String {
    let mut s = header('3', nsp, Some(id));
    s.push_str(&Value::Array(args.to_vec()).to_string());
    s
}

/// Decodes a Socket.IO packet (the text after the Engine.IO `4`).
pub fn decode_sio(text: &str) -> Result<SioPacket, CodecError> {
    let first = *text.as_bytes().first().ok_or(CodecError::Empty)?;
    if !first.is_ascii_digit() {
        let c = text.chars().next().unwrap_or('\u{fffd}');
        return Err(CodecError::UnknownType(c));
    }
    let kind = first - b'0';
    match kind {
        0..=4 => {}
        5 | 6 => return Err(CodecError::BinaryUnsupported),
        _ => return Err(CodecError::UnknownType(first as char)),
    }
    // First byte is ASCII: index 1 is a char boundary.
    let mut rest = &text[1..];

    // Namespace: `/nsp,` (the comma terminates it; a namespace without trailing comma
    // runs to the end of the packet).
    let nsp = if rest.starts_with('/') {
        match rest.find(',') {
            Some(i) => {
                let n = &rest[..i];
                rest = &rest[i + 1..];
                n.to_owned()
            }
            None => {
                let n = rest;
                rest = "";
                n.to_owned()
            }
        }
    } else {
        "/".to_owned()
    };

    // Ack id: leading ASCII digits.
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = if digits > 0 {
        let id = rest[..digits].parse::<u64>().map_err(|_| CodecError::BadAckId)?;
        rest = &rest[digits..];
        Some(id)
    } else {
        None
    };

    let data: Option<Value> = if rest.is_empty() {
        None
    } else {
        Some(serde_json::from_str(rest).map_err(|e| CodecError::Json(e.to_string()))?)
    };

    match kind {
        0 => {
            if let Some(d) = &data
                && !d.is_object()
            {
                return Err(CodecError::BadPayload("CONNECT payload is not an object"));
            }
            Ok(SioPacket::Connect { nsp, data })
        }
        1 => Ok(SioPacket::Disconnect { nsp }),
        2 => {
            let Some(Value::Array(mut arr)) = data else {
                return Err(CodecError::BadPayload("EVENT payload is not an array"));
            };
            if arr.is_empty() {
                return Err(CodecError::BadPayload("EVENT payload is an empty array"));
            }
            let Value::String(event) = arr.remove(0) else {
                return Err(CodecError::BadPayload("EVENT name is not a string"));
            };
            Ok(SioPacket::Event { nsp, id, event, args: arr })
        }
        3 => {
            let id = id.ok_or(CodecError::BadPayload("ACK without id"))?;
            let Some(Value::Array(args)) = data else {
                return Err(CodecError::BadPayload("ACK payload is not an array"));
            };
            Ok(SioPacket::Ack { nsp, id, args })
        }
        _ => Ok(SioPacket::ConnectError { nsp, data: data.unwrap_or(Value::Null) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // ----- Engine.IO -----

    #[test]
    fn engine_decode_all_types() {
        assert_eq!(decode_engine("0{}").unwrap(), EnginePacket::Open("{}"));
        assert_eq!(decode_engine("1").unwrap(), EnginePacket::Close);
        assert_eq!(decode_engine("2").unwrap(), EnginePacket::Ping(""));
        assert_eq!(decode_engine("2probe").unwrap(), EnginePacket::Ping("probe"));
        assert_eq!(decode_engine("3").unwrap(), EnginePacket::Pong(""));
        assert_eq!(decode_engine("42[\"a\"]").unwrap(), EnginePacket::Message("2[\"a\"]"));
        assert_eq!(decode_engine("5").unwrap(), EnginePacket::Upgrade);
        assert_eq!(decode_engine("6").unwrap(), EnginePacket::Noop);
    }

    #[test]
    fn engine_decode_errors() {
        assert_eq!(decode_engine(""), Err(CodecError::Empty));
        assert_eq!(decode_engine("7"), Err(CodecError::UnknownType('7')));
        assert_eq!(decode_engine("x"), Err(CodecError::UnknownType('x')));
        assert_eq!(decode_engine("é4"), Err(CodecError::UnknownType('é')));
    }

    #[test]
    fn engine_encode() {
        assert_eq!(encode_engine_ping(""), "2");
        assert_eq!(encode_engine_pong(""), "3");
        assert_eq!(encode_engine_pong("probe"), "3probe");
        assert_eq!(encode_engine_message("0"), "40");
    }

    #[test]
    fn open_packet_parse() {
        let p = OpenPacket::parse(
            r#"{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#,
        )
        .unwrap();
        assert_eq!(
            p,
            OpenPacket {
                sid: "abc".into(),
                ping_interval_ms: 25000,
                ping_timeout_ms: 20000,
                max_payload: Some(1_000_000),
            }
        );
        // Engine.IO v3: no maxPayload.
        let p = OpenPacket::parse(r#"{"sid":"x","upgrades":[],"pingInterval":1,"pingTimeout":2}"#).unwrap();
        assert_eq!(p.max_payload, None);
        assert!(OpenPacket::parse("{").is_err());
        assert!(OpenPacket::parse("[]").is_err());
        assert!(OpenPacket::parse(r#"{"sid":1,"pingInterval":1,"pingTimeout":2}"#).is_err());
        assert!(OpenPacket::parse(r#"{"sid":"a","pingTimeout":2}"#).is_err());
    }

    // ----- Socket.IO encoding -----

    #[test]
    fn encode_event_root_namespace() {
        assert_eq!(encode_event("/", "hello", &[json!("world")], None), r#"2["hello","world"]"#);
        assert_eq!(encode_event("", "hello", &[], None), r#"2["hello"]"#);
        assert_eq!(
            encode_event("/", "hello", &[json!(1), json!({"a":true})], Some(12)),
            r#"212["hello",1,{"a":true}]"#
        );
    }

    #[test]
    fn encode_event_custom_namespace() {
        assert_eq!(
            encode_event("/chat", "message:send", &[json!({"text":"hi"})], None),
            r#"2/chat,["message:send",{"text":"hi"}]"#
        );
        assert_eq!(
            encode_event("/chat", "message:send", &[json!({"text":"hi"})], Some(0)),
            r#"2/chat,0["message:send",{"text":"hi"}]"#
        );
        // Namespace without leading slash is normalized.
        assert_eq!(encode_event("chat", "e", &[], Some(3)), r#"2/chat,3["e"]"#);
    }

    #[test]
    fn encode_connect_disconnect_ack() {
        assert_eq!(encode_connect("/", None), "0");
        assert_eq!(encode_connect("/", Some(&json!({"token":"t"}))), r#"0{"token":"t"}"#);
        assert_eq!(encode_connect("/chat", None), "0/chat,");
        assert_eq!(encode_connect("/chat", Some(&json!({"token":"t"}))), r#"0/chat,{"token":"t"}"#);
        assert_eq!(encode_disconnect("/"), "1");
        assert_eq!(encode_disconnect("/chat"), "1/chat,");
        assert_eq!(encode_ack("/", 5, &[json!("ok")]), r#"35["ok"]"#);
        assert_eq!(encode_ack("/chat", 5, &[]), "3/chat,5[]");
        assert_eq!(encode_engine_message(&encode_disconnect("/chat")), "41/chat,");
    }

    #[test]
    fn encode_sio_roundtrip() {
        let packets = vec![
            SioPacket::Connect { nsp: "/".into(), data: None },
            SioPacket::Connect { nsp: "/chat".into(), data: Some(json!({"sid":"s,[1]"})) },
            SioPacket::Disconnect { nsp: "/chat".into() },
            SioPacket::Disconnect { nsp: "/".into() },
            SioPacket::Event {
                nsp: "/chat".into(),
                id: Some(42),
                event: "a,b[c]".into(),
                args: vec![json!("x,y"), json!([1, [2, {"k": "]"}]])],
            },
            SioPacket::Event { nsp: "/".into(), id: None, event: "e".into(), args: vec![] },
            SioPacket::Ack { nsp: "/".into(), id: 0, args: vec![json!(null)] },
            SioPacket::Ack { nsp: "/chat".into(), id: 9, args: vec![] },
            SioPacket::ConnectError { nsp: "/chat".into(), data: json!({"message":"unauthorized"}) },
        ];
        for p in packets {
            let s = encode_sio(&p);
            assert_eq!(decode_sio(&s).unwrap(), p, "roundtrip of {s}");
        }
    }

    // ----- Socket.IO decoding -----

    #[test]
    fn decode_connect_reply() {
        assert_eq!(
            decode_sio(r#"0{"sid":"abc"}"#).unwrap(),
            SioPacket::Connect { nsp: "/".into(), data: Some(json!({"sid":"abc"})) }
        );
        assert_eq!(
            decode_sio(r#"0/chat,{"sid":"abc"}"#).unwrap(),
            SioPacket::Connect { nsp: "/chat".into(), data: Some(json!({"sid":"abc"})) }
        );
        // Protocol v4 style (no payload), with and without the trailing comma.
        assert_eq!(decode_sio("0").unwrap(), SioPacket::Connect { nsp: "/".into(), data: None });
        assert_eq!(decode_sio("0/chat,").unwrap(), SioPacket::Connect { nsp: "/chat".into(), data: None });
        assert_eq!(decode_sio("0/chat").unwrap(), SioPacket::Connect { nsp: "/chat".into(), data: None });
        assert!(matches!(decode_sio("0/chat,[1]"), Err(CodecError::BadPayload(_))));
    }

    #[test]
    fn decode_connect_error() {
        assert_eq!(
            decode_sio(r#"4/chat,{"message":"unauthorized"}"#).unwrap(),
            SioPacket::ConnectError { nsp: "/chat".into(), data: json!({"message":"unauthorized"}) }
        );
        assert_eq!(
            decode_sio(r#"4{"message":"nope","data":{"code":1}}"#).unwrap(),
            SioPacket::ConnectError { nsp: "/".into(), data: json!({"message":"nope","data":{"code":1}}) }
        );
        // Protocol v4: plain string payload.
        assert_eq!(
            decode_sio(r#"4/chat,"Invalid namespace""#).unwrap(),
            SioPacket::ConnectError { nsp: "/chat".into(), data: json!("Invalid namespace") }
        );
    }

    #[test]
    fn decode_disconnect() {
        assert_eq!(decode_sio("1").unwrap(), SioPacket::Disconnect { nsp: "/".into() });
        assert_eq!(decode_sio("1/chat,").unwrap(), SioPacket::Disconnect { nsp: "/chat".into() });
        assert_eq!(decode_sio("1/chat").unwrap(), SioPacket::Disconnect { nsp: "/chat".into() });
    }

    #[test]
    fn decode_event() {
        assert_eq!(
            decode_sio(r#"2["hello","world"]"#).unwrap(),
            SioPacket::Event { nsp: "/".into(), id: None, event: "hello".into(), args: vec![json!("world")] }
        );
        assert_eq!(
            decode_sio(r#"2/chat,["message:new",{"text":"a, b [c] {d}","n":[1,2]}]"#).unwrap(),
            SioPacket::Event {
                nsp: "/chat".into(),
                id: None,
                event: "message:new".into(),
                args: vec![json!({"text":"a, b [c] {d}","n":[1,2]})]
            }
        );
        assert_eq!(
            decode_sio(r#"2/chat,17["ping"]"#).unwrap(),
            SioPacket::Event { nsp: "/chat".into(), id: Some(17), event: "ping".into(), args: vec![] }
        );
        assert_eq!(
            decode_sio(r#"20["e",1,"2",null]"#).unwrap(),
            SioPacket::Event {
                nsp: "/".into(),
                id: Some(0),
                event: "e".into(),
                args: vec![json!(1), json!("2"), json!(null)]
            }
        );
        // Event name with comma and slash in the root namespace must not be mistaken
        // for a namespace.
        assert_eq!(
            decode_sio(r#"2["/a,b",","]"#).unwrap(),
            SioPacket::Event { nsp: "/".into(), id: None, event: "/a,b".into(), args: vec![json!(",")] }
        );
    }

    #[test]
    fn decode_ack() {
        assert_eq!(
            decode_sio(r#"30["ok"]"#).unwrap(),
            SioPacket::Ack { nsp: "/".into(), id: 0, args: vec![json!("ok")] }
        );
        assert_eq!(
            decode_sio(r#"3/chat,123[{"ok":true,"ids":[1,2]},"x,y"]"#).unwrap(),
            SioPacket::Ack { nsp: "/chat".into(), id: 123, args: vec![json!({"ok":true,"ids":[1,2]}), json!("x,y")] }
        );
        assert_eq!(decode_sio("3/chat,4[]").unwrap(), SioPacket::Ack { nsp: "/chat".into(), id: 4, args: vec![] });
    }

    #[test]
    fn decode_errors() {
        assert_eq!(decode_sio(""), Err(CodecError::Empty));
        assert_eq!(decode_sio("x"), Err(CodecError::UnknownType('x')));
        assert_eq!(decode_sio("7"), Err(CodecError::UnknownType('7')));
        assert_eq!(decode_sio(r#"51-["a",{"_placeholder":true,"num":0}]"#), Err(CodecError::BinaryUnsupported));
        assert_eq!(decode_sio("61-0[]"), Err(CodecError::BinaryUnsupported));
        assert!(matches!(decode_sio(r#"2/chat,["message:send", {bad"#), Err(CodecError::Json(_))));
        assert!(matches!(decode_sio("2"), Err(CodecError::BadPayload(_))));
        assert!(matches!(decode_sio("2[]"), Err(CodecError::BadPayload(_))));
        assert!(matches!(decode_sio("2[1]"), Err(CodecError::BadPayload(_))));
        assert!(matches!(decode_sio(r#"2{"a":1}"#), Err(CodecError::BadPayload(_))));
        assert!(matches!(decode_sio(r#"3["x"]"#), Err(CodecError::BadPayload(_))));
        assert!(matches!(decode_sio(r#"31{}"#), Err(CodecError::BadPayload(_))));
        assert_eq!(decode_sio(r#"299999999999999999999999["e"]"#), Err(CodecError::BadAckId));
    }

    #[test]
    fn normalize_namespace() {
        assert_eq!(normalize_nsp(""), "/");
        assert_eq!(normalize_nsp("/"), "/");
        assert_eq!(normalize_nsp("chat"), "/chat");
        assert_eq!(normalize_nsp("/chat"), "/chat");
    }
}
