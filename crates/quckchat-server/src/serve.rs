//! The accept loop: HTTP/1.1 (with upgrades, for WebSockets) on hyper, with the
//! connection hygiene `axum::serve` does not offer.
//!
//! - **Header read timeout** (`HEADER_READ_TIMEOUT_MS`): hyper's timer runs from the moment
//!   it waits for a request head, so it also closes a connection that never sends a
//!   request, and a keep-alive connection idle that long. A slowloris client dribbling one
//!   byte a second is cut after it.
//! - **Body read timeout** (`BODY_READ_TIMEOUT_MS`): a body that stalls ends its request.
//! - **A cap on open connections** (`MAX_CONNECTIONS`, by default 90 % of the open-file
//!   limit): beyond it a new connection is closed as soon as it is accepted (counted in
//!   `quckchat_connections_refused_total`), so the process never runs out of descriptors
//!   and keeps serving the connections it has. Before this, 1,100 slow connections under a
//!   1,024 limit made accept fail with EMFILE in a loop and `/api/v1/health` time out.
//!
//! HTTP/2 is not offered: clients and proxies reach us over HTTP/1.1 (WebSocket upgrades
//! included), and hyper-util's auto-detection reads a preface with no timeout of its own.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::metrics::Metrics;

/// The limits of the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// How long a request head may take (and an idle connection may stay).
    pub header_read_timeout: Duration,
    /// How long a request body may take.
    pub body_read_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// After `shutdown` resolved, how long open connections get to finish.
    pub close_grace: Duration,
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, asks
/// every connection to finish its current request, and waits for them (at most
/// `close_grace`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    let mut accept_errors: u64 = 0;

    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            // Reap finished connection tasks as we go, so the set stays small.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE, ENFILE, ECONNABORTED…: the listener itself is fine. Log the
                    // first and then one in a thousand, and yield a moment so that a
                    // descriptor shortage cannot spin the loop.
                    if accept_errors.is_multiple_of(1000) {
                        tracing::warn!(error = %e, count = accept_errors + 1, "accept failed");
                    }
                    accept_errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Over the cap: close at once (the descriptor is freed as `stream` drops).
            metrics.connection_refused();
            drop(stream);
            continue;
        };
        // Small frames (acks, events) must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let body_timeout = limits.body_read_timeout;
        let service = router.clone().map_request(move |req: axum::http::Request<Incoming>| {
            let (mut parts, body) = req.into_parts();
            parts.extensions.insert(ConnectInfo(peer));
            axum::http::Request::from_parts(parts, DeadlineBody::new(body, body_timeout))
        });
        // The permit lives in the IO, not in this task: after a WebSocket upgrade hyper
        // hands the IO to the upgrade and this task ends, but the connection stays open
        // and must still count against the cap (and in the gauge).
        metrics.connection_gauge(1.0);
        let io = Counted { stream, _permit: permit, metrics: metrics.clone() };
        let conn = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(service)).with_upgrades();
        let mut closing = closing_rx.clone();
        connections.spawn(async move {
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => log_end(peer, result),
                () = closing_signal(&mut closing) => {
                    conn.as_mut().graceful_shutdown();
                    log_end(peer, conn.await);
                }
            }
        });
    }

    drop(listener);
    let _ = closing_tx.send(true);
    let drained =
        tokio::time::timeout(limits.close_grace, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(left = connections.len(), "connections still open after the close grace; dropping them");
        connections.abort_all();
    }
    Ok(())
}

/// An accepted connection holding its place under the cap (and in the gauge) for as long
/// as it is open, upgraded or not.
struct Counted {
    stream: tokio::net::TcpStream,
    _permit: tokio::sync::OwnedSemaphorePermit,
    metrics: Metrics,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.metrics.connection_gauge(-1.0);
    }
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A request body with one deadline for the whole of it, set when the request arrived.
/// (tower-http's `RequestBodyTimeout` restarts its timer at every frame, so a client
/// trickling a byte just inside it could hold a request open for as long as the body
/// limit allows.)
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl DeadlineBody {
    fn new(inner: Incoming, within: Duration) -> Self {
        Self { inner, deadline: Box::pin(tokio::time::sleep(within)) }
    }
}

/// The body did not arrive in time.
#[derive(Debug)]
struct BodyTimedOut;

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body read timed out")
    }
}

impl std::error::Error for BodyTimedOut {}

impl hyper::body::Body for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Resolves once shutdown began (or the loop is gone).
async fn closing_signal(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|c| *c).await;
}

fn log_end(peer: SocketAddr, result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        if e.is_timeout() {
            tracing::debug!(%peer, "connection closed: no complete request head in time");
        } else {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}
