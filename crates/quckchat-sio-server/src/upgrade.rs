//! The WebSocket opening handshake (RFC 6455 §4.2), server side.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest, Sha1};

/// The GUID RFC 6455 appends to the client's key.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` answering a `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(GUID);
    BASE64.encode(sha1.finalize())
}

/// Whether a request asks for a WebSocket (version 13), and its key: `Upgrade: websocket`,
/// `Connection: upgrade` (among other tokens), `Sec-WebSocket-Version: 13`, a key.
pub fn websocket_key(headers: &http::HeaderMap) -> Option<&[u8]> {
    let has_token = |name: http::header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))))
    };
    if !has_token(http::header::UPGRADE, "websocket") || !has_token(http::header::CONNECTION, "upgrade") {
        return None;
    }
    if headers.get(http::header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        return None;
    }
    headers.get(http::header::SEC_WEBSOCKET_KEY).map(|v| v.as_bytes())
}

#[cfg(test)]
pub(crate) mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    #[test]
    fn the_rfc_example() {
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn recognises_upgrade_requests() {
        let mut headers = http::HeaderMap::new();
        headers.insert("upgrade", "WebSocket".parse().unwrap());
        headers.insert("connection", "keep-alive, Upgrade".parse().unwrap());
        headers.insert("sec-websocket-version", "13".parse().unwrap());
        headers.insert("sec-websocket-key", "abc".parse().unwrap());
        assert_eq!(websocket_key(&headers), Some(&b"abc"[..]));
        headers.insert("sec-websocket-version", "8".parse().unwrap());
        assert_eq!(websocket_key(&headers), None);
        headers.insert("sec-websocket-version", "13".parse().unwrap());
        headers.insert("connection", "keep-alive".parse().unwrap());
        assert_eq!(websocket_key(&headers), None);
    }

    /// Reads an upgrade request from `stream` and answers 101 (tests of the layers below
    /// HTTP). Panics on anything else.
    pub(crate) async fn accept_by_hand(mut stream: TcpStream) -> TcpStream {
        let mut buf = Vec::new();
        while !buf.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.expect("request");
            buf.push(byte[0]);
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        request.parse(&buf).expect("HTTP");
        let mut map = http::HeaderMap::new();
        for h in request.headers.iter() {
            map.append(
                http::HeaderName::from_bytes(h.name.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(h.value).unwrap(),
            );
        }
        let key = websocket_key(&map).expect("an upgrade request");
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            accept_key(key)
        );
        stream.write_all(response.as_bytes()).await.expect("response");
        stream
    }
}
