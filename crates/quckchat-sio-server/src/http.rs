//! The HTTP side: `GET /socket.io/?EIO=4&transport=websocket` answered with 101, and the
//! upgraded connection handed to the engine as the raw [`TcpStream`] underneath, so that
//! hyper's buffers and task are gone once the upgrade completes.

use std::any::Any;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use bytes::Bytes;

use crate::engine::{Engine, Opening, PollRefusal};
use crate::polling::Body;
use crate::upgrade::{accept_key, websocket_key};

/// An accepted connection's IO, as the HTTP server wrapped it: gives back the TCP stream
/// and whatever must live as long as the connection (a permit under a connection cap).
pub trait IntoTcp: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The stream, and a guard dropped when the connection ends.
    fn into_tcp(self) -> (TcpStream, Box<dyn Any + Send>);
}

impl IntoTcp for TcpStream {
    fn into_tcp(self) -> (TcpStream, Box<dyn Any + Send>) {
        (self, Box::new(()))
    }
}

/// A JSON error the way the reference server answers (`{"code":…,"message":…}`).
fn refuse(code: u8, message: &str) -> http::Response<Bytes> {
    let mut response = http::Response::new(Bytes::from(format!(r#"{{"code":{code},"message":"{message}"}}"#)));
    *response.status_mut() = http::StatusCode::BAD_REQUEST;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

impl Engine {
    /// Answers an Engine.IO request: long-polling (the handshake, a GET that waits for
    /// packets, a POST that brings them), or a WebSocket upgrade, accepted (101) and
    /// served once hyper hands the connection over; `IO` is the type the HTTP server
    /// serves connections on (wrapped in hyper-util's `TokioIo`).
    pub async fn handle<IO: IntoTcp, B>(&self, mut request: http::Request<B>) -> http::Response<Bytes>
    where
        B: http_body::Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let uri = request.uri().clone();
        let query = uri.query().unwrap_or("");
        let param = |name: &str| {
            query.split('&').find_map(|pair| pair.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v))
        };
        let version = match param("EIO").and_then(crate::eio::Version::from_query) {
            Some(crate::eio::Version::V3) if !self.config().allow_eio3 => {
                return refuse(5, "Unsupported protocol version");
            }
            Some(version) => version,
            None => return refuse(5, "Unsupported protocol version"),
        };
        match param("transport") {
            Some("polling") if self.config().polling => {
                return self.handle_polling(request, version, param("sid")).await;
            }
            Some("websocket") => {}
            _ => return refuse(0, "Transport unknown"),
        }
        // With a sid: the upgrade of a polling session, which must exist.
        let sid = param("sid").map(str::to_string);
        if let Some(sid) = &sid
            && !self.is_polling_session(sid)
        {
            return refuse(1, "Session ID unknown");
        }
        let Some(key) = websocket_key(request.headers()).map(accept_key) else {
            return refuse(3, "Bad request");
        };
        let opening = Opening::new(
            version,
            query,
            &self.config().keep_headers,
            request.headers().iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
        );
        let on_upgrade = hyper::upgrade::on(&mut request);
        let engine = self.clone();
        tokio::spawn(async move {
            // An upgrade that never completes (the client went away) leaves nothing to do.
            let Ok(upgraded) = on_upgrade.await else { return };
            let Ok(parts) = upgraded.downcast::<TokioIo<IO>>() else {
                // The HTTP server serves another IO type than it told us: a wiring bug.
                debug_assert!(false, "the upgraded IO is not the type given to Engine::handle");
                return;
            };
            let (stream, guard) = parts.io.into_inner().into_tcp();
            match sid {
                Some(sid) => engine.serve_upgrade(stream, parts.read_buf, &sid).await,
                None => engine.serve_websocket(stream, parts.read_buf, opening).await,
            }
            drop(guard);
        });
        let mut response = http::Response::new(Bytes::new());
        *response.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(http::header::UPGRADE, http::HeaderValue::from_static("websocket"));
        headers.insert(http::header::CONNECTION, http::HeaderValue::from_static("Upgrade"));
        if let Ok(accept) = http::HeaderValue::from_str(&key) {
            headers.insert(http::header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        response
    }

    /// Long-polling: no sid opens a session (its handshake in the answer); a GET waits
    /// for packets; a POST brings the client's.
    async fn handle_polling<B>(
        &self,
        request: http::Request<B>,
        version: crate::eio::Version,
        sid: Option<&str>,
    ) -> http::Response<Bytes>
    where
        B: http_body::Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let text = |body: Body| {
            let (body, content_type) = match body {
                Body::Text(text) => (Bytes::from(text), "text/plain; charset=UTF-8"),
                Body::Binary(bytes) => (Bytes::from(bytes), "application/octet-stream"),
            };
            let mut response = http::Response::new(body);
            response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
            response
        };
        let query = request.uri().query().unwrap_or("").to_string();
        let refused = |refusal: PollRefusal| match refusal {
            PollRefusal::UnknownSid => refuse(1, "Session ID unknown"),
            PollRefusal::BadRequest => refuse(3, "Bad request"),
        };
        match (request.method(), sid) {
            (&http::Method::GET, None) => match self.open_polling(Opening::new(
                version,
                &query,
                &self.config().keep_headers,
                request.headers().iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
            )) {
                Some(handshake) => text(handshake),
                None => refuse(3, "Bad request"),
            },
            (&http::Method::GET, Some(sid)) => match self.poll(sid).await {
                Ok(body) => text(body),
                Err(refusal) => refused(refusal),
            },
            (&http::Method::POST, Some(sid)) => {
                let sid = sid.to_string();
                let binary = request
                    .headers()
                    .get(http::header::CONTENT_TYPE)
                    .is_some_and(|v| v.as_bytes().starts_with(b"application/octet-stream"));
                let limit = self.config().max_payload;
                let body = http_body_util::Limited::new(request.into_body(), limit);
                let Ok(collected) = http_body_util::BodyExt::collect(body).await else {
                    self.post_too_large(&sid);
                    let mut response = refuse(3, "Bad request");
                    *response.status_mut() = http::StatusCode::PAYLOAD_TOO_LARGE;
                    return response;
                };
                let bytes = collected.to_bytes();
                match self.post(&sid, &bytes, binary) {
                    Ok(()) => text(Body::Text("ok".to_string())),
                    Err(refusal) => refused(refusal),
                }
            }
            _ => refuse(2, "Bad handshake method"),
        }
    }

    /// Serves one accepted connection on its own, without an application's HTTP server:
    /// a WebSocket upgrade on `path` straight from the socket, anything else through
    /// hyper (polling and upgrades on `path`, 404 elsewhere). For servers that are only
    /// an engine (examples, tests, a dedicated realtime port).
    pub async fn serve_connection(&self, stream: TcpStream, path: &'static str) {
        let Some((stream, _)) = self.serve_direct(stream, path, Box::new(())).await else { return };
        let engine = self.clone();
        let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let engine = engine.clone();
            async move {
                let response = if request.uri().path() == path {
                    engine.handle::<TcpStream, _>(request).await
                } else {
                    let mut response = http::Response::new(Bytes::from_static(b"Not Found"));
                    *response.status_mut() = http::StatusCode::NOT_FOUND;
                    response
                };
                Ok::<_, std::convert::Infallible>(response.map(http_body_util::Full::new))
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades()
            .await;
    }
}
