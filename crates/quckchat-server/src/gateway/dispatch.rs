//! What every namespace does with an incoming event, around the namespace's own work:
//! refuse while draining, refuse unknown events, wait for the socket's turn (arrival
//! order), apply the rate limit, run, count, and ack — success or the error body.

use std::future::Future;
use std::sync::Arc;

use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, SocketRef};
use tracing::Instrument;

use super::ack::{AckBody, AckError};
use super::session::{Queued, SocketCtx};
use crate::state::AppState;

/// Which rate limit an event counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateClass {
    /// Sends, edits, deletes (and placing calls).
    Message,
    /// Typing indicators.
    Typing,
    /// Everything else: receipts, reactions, call signaling.
    Other,
}

/// Handles one event. `route` is the event's canonical name and rate class, `None` for an
/// unknown event; `run` does the namespace's work once it is this event's turn.
#[allow(clippy::too_many_arguments)]
pub async fn dispatch<A: Adapter, Fut>(
    state: &AppState,
    namespace: &'static str,
    socket: SocketRef<A>,
    event: &str,
    ack: AckSender<A>,
    queued: Queued,
    route: Option<(&'static str, RateClass)>,
    run: impl FnOnce(Arc<SocketCtx>) -> Fut,
) where
    Fut: Future<Output = Result<AckBody, AckError>>,
{
    let Some(ctx) = queued.ctx else {
        socket.disconnect().ok();
        return;
    };
    let in_flight = state.drain.enter();
    let (name, class) = match (route, &in_flight) {
        (Some(route), Some(_)) => route,
        (route, _) => {
            let refusal = if in_flight.is_none() {
                // Shutting down: the client will reconnect and retry (idempotently).
                AckError::Internal
            } else {
                tracing::info!(namespace, event = %event.chars().take(64).collect::<String>(), "unknown event refused");
                AckError::InvalidPayload("unknown event".into())
            };
            state.metrics.event(namespace, route.map_or("unknown", |r| r.0), refusal.code());
            if let Some(ticket) = queued.ticket {
                drop(ctx.lane.turn(ticket).await);
            }
            if let Err(e) = ack.send(&refusal.to_ack()) {
                ack_undeliverable(state, namespace, &socket, &e);
            }
            return;
        }
    };
    let span = tracing::info_span!("event", namespace, event = name, user = %ctx.user);
    async move {
        let allowed = ctx.allow(class);
        let result = match queued.ticket {
            None => Err(AckError::RateLimited),
            Some(ticket) => {
                // Take the turn even when refusing, so the events after this one keep going.
                let _turn = ctx.lane.turn(ticket).await;
                if allowed { run(ctx.clone()).await } else { Err(AckError::RateLimited) }
            }
        };
        state.metrics.event(namespace, name, result.as_ref().map_or_else(AckError::code, |_| "ok"));
        let sent = match result {
            Ok(body) => ack.send(&body),
            Err(e) => {
                match &e {
                    AckError::InvalidPayload(reason) => tracing::info!(%reason, "malformed event refused"),
                    other => tracing::debug!(code = other.code(), "event refused"),
                }
                ack.send(&e.to_ack())
            }
        };
        if let Err(e) = sent {
            ack_undeliverable(state, namespace, &socket, &e);
        }
        drop(in_flight);
    }
    .instrument(span)
    .await;
}

/// An ack that cannot be queued (the socket's buffer is full) must not be lost while the
/// socket stays open: the event took effect, and a client waiting on it without a timeout
/// would wait forever. The socket's whole engine connection is closed instead (a
/// transport close, after which socket.io-client reconnects on its own and catches up
/// with `afterSeq` and idempotent retries; a Socket.IO DISCONNECT would read as "io server
/// disconnect", after which it does not). Without the engine handle (it is set for every
/// session) the DISCONNECT is retried until the full buffer has a free slot.
fn ack_undeliverable<A: Adapter>(
    state: &AppState,
    namespace: &'static str,
    socket: &SocketRef<A>,
    error: &socketioxide::SendError,
) {
    use socketioxide::{SendError, SocketError};
    match error {
        SendError::Socket(SocketError::Closed) => {
            tracing::debug!(namespace, "ack not sent: the socket is closed");
        }
        other => {
            state.metrics.ack_undeliverable(namespace);
            tracing::warn!(namespace, sid = %socket.id, error = %other, "ack could not be queued; disconnecting the socket");
            if let Some(closer) = socket.req_parts().extensions.get::<engineioxide::EngineCloser>() {
                closer.close(engineioxide::DisconnectReason::TransportError);
                return;
            }
            let socket = socket.clone();
            let give_up = state.config.ping_interval + state.config.ping_timeout;
            tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                while let Err(SocketError::InternalChannelFull) = socket.clone().disconnect() {
                    if started.elapsed() > give_up {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            });
        }
    }
}
