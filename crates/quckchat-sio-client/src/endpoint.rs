//! Building the WebSocket URL of the Engine.IO endpoint from a base URL.

use crate::Error;

/// Percent-encodes a query component (everything except RFC 3986 unreserved characters).
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Builds `ws://HOST:PORT[/prefix]/socket.io/?EIO=<eio>&transport=websocket[&k=v...]`.
///
/// `base_url` may use the `http`, `https`, `ws` or `wss` scheme. A path in the base URL
/// is kept as a prefix in front of `/socket.io/`; a query string in the base URL is
/// kept (appended after the Engine.IO parameters); a fragment is dropped.
pub(crate) fn build_ws_url(base_url: &str, eio: u8, query: &[(String, String)]) -> Result<String, Error> {
    let base = base_url.trim();
    let (scheme, rest) =
        base.split_once("://").ok_or_else(|| Error::Http(format!("base URL has no scheme: {base_url:?}")))?;
    let ws_scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        other => {
            return Err(Error::Http(format!("unsupported URL scheme {other:?} in {base_url:?}")));
        }
    };
    // Drop the fragment.
    let rest = rest.split('#').next().unwrap_or("");
    // Split off the query.
    let (rest, base_query) = match rest.split_once('?') {
        Some((r, q)) => (r, q),
        None => (rest, ""),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(Error::Http(format!("base URL has no host: {base_url:?}")));
    }
    let prefix = path.trim_end_matches('/');

    let mut url = format!("{ws_scheme}://{authority}{prefix}/socket.io/?EIO={eio}&transport=websocket");
    for (k, v) in query {
        url.push('&');
        url.push_str(&percent_encode(k));
        url.push('=');
        url.push_str(&percent_encode(v));
    }
    if !base_query.is_empty() {
        url.push('&');
        url.push_str(base_query);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_urls() {
        assert_eq!(
            build_ws_url("http://127.0.0.1:3000", 4, &[]).unwrap(),
            "ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket"
        );
        assert_eq!(
            build_ws_url("http://127.0.0.1:3000/", 3, &[]).unwrap(),
            "ws://127.0.0.1:3000/socket.io/?EIO=3&transport=websocket"
        );
        assert_eq!(
            build_ws_url("https://example.com/api/", 4, &[]).unwrap(),
            "wss://example.com/api/socket.io/?EIO=4&transport=websocket"
        );
        assert_eq!(
            build_ws_url("ws://h:1?x=1#frag", 4, &[]).unwrap(),
            "ws://h:1/socket.io/?EIO=4&transport=websocket&x=1"
        );
    }

    #[test]
    fn query_pairs_are_encoded() {
        let q = vec![("token".to_string(), "a b&c=d/é".to_string()), ("k".to_string(), "v-._~".to_string())];
        assert_eq!(
            build_ws_url("http://h:1", 4, &q).unwrap(),
            "ws://h:1/socket.io/?EIO=4&transport=websocket&token=a%20b%26c%3Dd%2F%C3%A9&k=v-._~"
        );
    }

    #[test]
    fn bad_urls() {
        assert!(matches!(build_ws_url("127.0.0.1:3000", 4, &[]), Err(Error::Http(_))));
        assert!(matches!(build_ws_url("ftp://h", 4, &[]), Err(Error::Http(_))));
        assert!(matches!(build_ws_url("http://", 4, &[]), Err(Error::Http(_))));
    }
}
