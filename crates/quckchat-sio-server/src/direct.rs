//! The WebSocket upgrade answered straight from the socket, without an HTTP server.
//!
//! Why: an HTTP server gives every connection a read buffer (hyper's is 8 KiB or more)
//! and a task for the handshake. Freed after the upgrade, those buffers still leave holes
//! in the heap between the long-lived connection state allocated meanwhile, so a storm of
//! connects leaves the process larger than its live memory (measured at 5,000 idle
//! sockets: 5.4 KiB of RSS per connection through hyper, 3.4 KiB once the heap is
//! trimmed, 2.4 KiB here). Here the request is peeked into the thread's scratch buffer,
//! parsed, consumed and answered in place; the connection allocates nothing for its
//! handshake. Anything else — another path, a polling request, a request not yet whole
//! in the socket — is left unread for the HTTP server.

use std::any::Any;
use std::mem::MaybeUninit;

use bytes::Bytes;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::eio::Version;
use crate::engine::{Engine, Opening};
use crate::transport::with_scratch;
use crate::upgrade::accept_key;

/// What the first request of a connection is.
enum First {
    /// An Engine.IO WebSocket upgrade: its header length, the `Sec-WebSocket-Accept`, the
    /// protocol version and the URL's query.
    Upgrade { header_len: usize, accept: String, opening: Opening },
    /// Something for the HTTP server.
    Other,
    /// The peer closed before sending anything.
    Closed,
}

/// Whether `buf` (the start of a connection) is a complete Engine.IO v4 WebSocket upgrade
/// request for `path`.
fn classify(buf: &[u8], path: &str, allow_eio3: bool, keep: &[String]) -> First {
    if buf.is_empty() {
        return First::Closed;
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let header_len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        _ => return First::Other,
    };
    if request.method != Some("GET") {
        return First::Other;
    }
    let Some((request_path, query)) = request.path.and_then(|p| p.split_once('?')) else { return First::Other };
    if request_path != path {
        return First::Other;
    }
    let param =
        |name: &str| query.split('&').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v));
    let version = match param("EIO").and_then(Version::from_query) {
        Some(Version::V3) if !allow_eio3 => return First::Other,
        Some(version) => version,
        None => return First::Other,
    };
    if param("transport") != Some("websocket") || param("sid").is_some() {
        return First::Other;
    }
    // The headers checked in place (no header map: nothing allocated per handshake).
    let has_token = |name: &str, token: &str| {
        request.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)).any(|h| {
            std::str::from_utf8(h.value).is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let value = |name: &str| request.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    if !has_token("upgrade", "websocket")
        || !has_token("connection", "upgrade")
        || value("sec-websocket-version") != Some(b"13")
    {
        return First::Other;
    }
    match value("sec-websocket-key") {
        Some(key) => First::Upgrade {
            header_len,
            accept: accept_key(key),
            opening: Opening::new(version, query, keep, request.headers.iter().map(|h| (h.name, h.value))),
        },
        None => First::Other,
    }
}

impl Engine {
    /// Takes `stream` if its first request is an Engine.IO WebSocket upgrade on `path`
    /// (`/socket.io/`): answers it and serves the connection in a task of its own, keeping
    /// `guard` until the connection ends. Otherwise gives both back untouched, for the
    /// HTTP server.
    pub async fn serve_direct(
        &self,
        stream: TcpStream,
        path: &str,
        guard: Box<dyn Any + Send>,
    ) -> Option<(TcpStream, Box<dyn Any + Send>)> {
        // Readiness can be reported before the bytes are there: a peek that would block
        // clears it (through `try_io`) and the wait goes on.
        let waited = tokio::time::timeout(self.config().first_request_timeout, async {
            loop {
                if stream.readable().await.is_err() {
                    break First::Closed;
                }
                let peeked = stream.try_io(Interest::READABLE, || {
                    with_scratch(|scratch| {
                        // socket2's `peek` takes possibly uninitialised memory; ours is initialised.
                        // SAFETY: `[u8]` and `[MaybeUninit<u8>]` have the same layout, and `peek`
                        // only writes initialised bytes into it, so `scratch` stays valid `[u8]`.
                        let uninit: &mut [MaybeUninit<u8>] =
                            unsafe { &mut *(std::ptr::from_mut::<[u8]>(scratch) as *mut [MaybeUninit<u8>]) };
                        let n = socket2::SockRef::from(&stream).peek(uninit)?;
                        Ok(classify(&scratch[..n], path, self.config().allow_eio3, &self.config().keep_headers))
                    })
                });
                match peeked {
                    Ok(first) => break first,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(_) => break First::Closed,
                }
            }
        })
        .await;
        // A connection that sends nothing in time is closed (it holds a descriptor, and
        // the caller's place under its connection cap).
        let Ok(first) = waited else { return None };
        match first {
            First::Closed => None,
            First::Other => Some((stream, guard)),
            First::Upgrade { header_len, accept, opening } => {
                // Consume the request (it is in the socket's buffer: peeked whole), then
                // answer. Both are small enough to go in one call each.
                let consumed = with_scratch(|scratch| stream.try_read(&mut scratch[..header_len]));
                if consumed.ok() != Some(header_len) {
                    return None;
                }
                const HEAD: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ";
                let written = with_scratch(|scratch| {
                    let len = HEAD.len() + accept.len() + 4;
                    scratch[..HEAD.len()].copy_from_slice(HEAD);
                    scratch[HEAD.len()..len - 4].copy_from_slice(accept.as_bytes());
                    scratch[len - 4..len].copy_from_slice(b"\r\n\r\n");
                    stream.try_write(&scratch[..len]).ok() == Some(len)
                });
                if !written {
                    return None;
                }
                // A task of its own, as small as the connection needs: the caller's task
                // (sized for the HTTP server it might have needed) ends here.
                let engine = self.clone();
                tokio::spawn(async move {
                    engine.serve_websocket(stream, Bytes::new(), opening).await;
                    drop(guard);
                });
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &str = "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    #[test]
    fn recognises_only_whole_engine_upgrades() {
        match classify(UPGRADE.as_bytes(), "/socket.io/", true, &["host".to_string()]) {
            First::Upgrade { header_len, accept, opening } => {
                assert_eq!(header_len, UPGRADE.len());
                assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
                assert_eq!((opening.version, opening.query.as_str()), (Version::V4, "EIO=4&transport=websocket"));
                assert_eq!(opening.headers, vec![("host".to_string(), "x".to_string())]);
            }
            _ => panic!("an upgrade"),
        }
        let v3 = UPGRADE.replace("EIO=4", "EIO=3");
        assert!(matches!(
            classify(v3.as_bytes(), "/socket.io/", true, &[]),
            First::Upgrade { opening: Opening { version: Version::V3, .. }, .. }
        ));
        assert!(matches!(classify(v3.as_bytes(), "/socket.io/", false, &[]), First::Other));
        for other in [
            &UPGRADE[..UPGRADE.len() - 2],
            &UPGRADE.replace("GET", "POST"),
            &UPGRADE.replace("/socket.io/", "/api/"),
            &UPGRADE.replace("EIO=4", "EIO=2"),
            &UPGRADE.replace("transport=websocket", "transport=polling"),
            &UPGRADE.replace("EIO=4", "EIO=4&sid=abc"),
            &UPGRADE.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),
            "GET /api/v1/health HTTP/1.1\r\n\r\n",
        ] {
            assert!(matches!(classify(other.as_bytes(), "/socket.io/", true, &[]), First::Other), "{other:?}");
        }
        assert!(matches!(classify(b"", "/socket.io/", true, &[]), First::Closed));
    }
}
