//! Every metric the server exports, named once here. The recorder belongs to one
//! server instance (no process-global recorder), so several servers in one process
//! (tests) keep their own figures.

use std::sync::Arc;
use std::time::Instant;

use metrics::{Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// Connected sockets, by namespace.
pub const SOCKETS_CONNECTED: &str = "quckchat_sockets_connected";
/// Client events handled, by namespace, event and outcome (`ok` or an error code).
pub const SOCKET_EVENTS: &str = "quckchat_socket_events_total";
/// Time spent in one store call, by operation.
pub const STORE_SECONDS: &str = "quckchat_store_seconds";
/// Server→client events that could not be queued for some socket (full buffer, closed).
pub const BROADCAST_FAILURES: &str = "quckchat_broadcast_failures_total";
/// Push notifications, by outcome (`delivered`, `retry`, `failed`).
pub const PUSHES: &str = "quckchat_push_jobs_total";
/// HTTP requests, by method and status.
pub const HTTP_REQUESTS: &str = "quckchat_http_requests_total";
/// Handshakes refused, by namespace.
pub const HANDSHAKES_REFUSED: &str = "quckchat_handshakes_refused_total";

/// Open HTTP connections (upgraded WebSockets included).
pub const CONNECTIONS_OPEN: &str = "quckchat_connections_open";
/// Connections closed at once because `MAX_CONNECTIONS` were open.
pub const CONNECTIONS_REFUSED: &str = "quckchat_connections_refused_total";
/// Sockets disconnected because an ack could not be queued for them (full buffer).
pub const ACKS_UNDELIVERABLE: &str = "quckchat_acks_undeliverable_total";
/// Auth attempts refused before any work, by reason (`throttled`, `hashing_busy`).
pub const AUTH_REFUSED: &str = "quckchat_auth_refused_total";

/// Hot state lookups, by outcome (`hit`, `miss`), and entries evicted to stay bounded.
pub const HOT_LOOKUPS: &str = "quckchat_hot_state_lookups_total";
/// Hot state entries evicted to stay within capacity.
pub const HOT_EVICTIONS: &str = "quckchat_hot_state_evictions_total";
/// Hot state entries held, by kind (`conversation`, `user`).
pub const HOT_ENTRIES: &str = "quckchat_hot_state_entries";

/// A handle on this server's metrics.
#[derive(Clone)]
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics.
    pub fn new() -> Self {
        let builder = PrometheusBuilder::new();
        let builder = builder
            .set_buckets(&[
                0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ])
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        Self { recorder: Arc::new(recorder), handle }
    }

    /// Copies the hot state's counters in (they are kept by the domain, read at scrape).
    pub fn hot_state(&self, stats: quckchat_domain::hot::HotStats) {
        let counter = |name: &'static str, labels: Vec<Label>, value: u64| {
            self.recorder.register_counter(&Self::key(name, labels), &METADATA).absolute(value);
        };
        counter(HOT_LOOKUPS, vec![Label::new("outcome", "hit")], stats.hits);
        counter(HOT_LOOKUPS, vec![Label::new("outcome", "miss")], stats.misses);
        counter(HOT_EVICTIONS, vec![], stats.evictions);
        for (kind, value) in [("conversation", stats.conversations), ("user", stats.users), ("call", stats.calls)] {
            self.recorder
                .register_gauge(&Self::key(HOT_ENTRIES, vec![Label::new("kind", kind)]), &METADATA)
                .set(value as f64);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    fn key(name: &'static str, labels: Vec<Label>) -> Key {
        Key::from_parts(name, labels)
    }

    /// A socket connected (`+1`) or went (`-1`).
    pub fn socket_gauge(&self, namespace: &'static str, delta: f64) {
        let gauge = self
            .recorder
            .register_gauge(&Self::key(SOCKETS_CONNECTED, vec![Label::new("namespace", namespace)]), &METADATA);
        if delta >= 0.0 {
            gauge.increment(delta);
        } else {
            gauge.decrement(-delta);
        }
    }

    /// A client event was handled.
    pub fn event(&self, namespace: &'static str, event: &'static str, outcome: &'static str) {
        self.recorder
            .register_counter(
                &Self::key(
                    SOCKET_EVENTS,
                    vec![
                        Label::new("namespace", namespace),
                        Label::new("event", event),
                        Label::new("outcome", outcome),
                    ],
                ),
                &METADATA,
            )
            .increment(1);
    }

    /// A store call took from `started` until now.
    pub fn store_call(&self, op: &'static str, started: Instant) {
        self.recorder
            .register_histogram(&Self::key(STORE_SECONDS, vec![Label::new("op", op)]), &METADATA)
            .record(started.elapsed().as_secs_f64());
    }

    /// An event could not be queued for `sockets` sockets.
    pub fn broadcast_failed(&self, event: &'static str, sockets: usize) {
        self.recorder
            .register_counter(&Self::key(BROADCAST_FAILURES, vec![Label::new("event", event)]), &METADATA)
            .increment(sockets as u64);
    }

    /// A push job ended an attempt.
    pub fn push(&self, outcome: &'static str) {
        self.recorder
            .register_counter(&Self::key(PUSHES, vec![Label::new("outcome", outcome)]), &METADATA)
            .increment(1);
    }

    /// An HTTP request was answered.
    pub fn http(&self, method: &str, status: u16) {
        self.recorder
            .register_counter(
                &Self::key(
                    HTTP_REQUESTS,
                    vec![Label::new("method", method.to_string()), Label::new("status", status.to_string())],
                ),
                &METADATA,
            )
            .increment(1);
    }

    /// A handshake was refused.
    pub fn handshake_refused(&self, namespace: &'static str) {
        self.recorder
            .register_counter(&Self::key(HANDSHAKES_REFUSED, vec![Label::new("namespace", namespace)]), &METADATA)
            .increment(1);
    }

    /// A connection opened (`+1`) or closed (`-1`).
    pub fn connection_gauge(&self, delta: f64) {
        let gauge = self.recorder.register_gauge(&Self::key(CONNECTIONS_OPEN, vec![]), &METADATA);
        if delta >= 0.0 {
            gauge.increment(delta);
        } else {
            gauge.decrement(-delta);
        }
    }

    /// A connection was closed at once: too many were open.
    pub fn connection_refused(&self) {
        self.recorder.register_counter(&Self::key(CONNECTIONS_REFUSED, vec![]), &METADATA).increment(1);
    }

    /// A socket was disconnected because its ack could not be queued.
    pub fn ack_undeliverable(&self, namespace: &'static str) {
        self.recorder
            .register_counter(&Self::key(ACKS_UNDELIVERABLE, vec![Label::new("namespace", namespace)]), &METADATA)
            .increment(1);
    }

    /// An auth attempt was refused before any work.
    pub fn auth_refused(&self, reason: &'static str) {
        self.recorder
            .register_counter(&Self::key(AUTH_REFUSED, vec![Label::new("reason", reason)]), &METADATA)
            .increment(1);
    }
}
