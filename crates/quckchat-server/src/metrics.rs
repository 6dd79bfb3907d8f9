//! Every metric the server exports, named once here. The recorder belongs to one
//! server instance (no process-global recorder), so several servers in one process
//! (tests) keep their own figures.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use quckchat_domain::store::{self, StoreObserver};

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

/// Times store calls into `quckchat_store_seconds` (see [`Metrics::store_timings`]).
pub struct StoreTimings {
    by_method: HashMap<&'static str, Histogram>,
    metrics: Metrics,
}

impl StoreObserver for StoreTimings {
    fn observe(&self, method: &'static str, took: Duration) {
        match self.by_method.get(method) {
            Some(histogram) => histogram.record(took.as_secs_f64()),
            // A method missing from the parts' lists: still counted, at the price of a lookup.
            None => self
                .metrics
                .recorder
                .register_histogram(&Metrics::key(STORE_SECONDS, vec![Label::new("op", method)]), &METADATA)
                .record(took.as_secs_f64()),
        }
    }
}

/// Metric handles registered on first use and kept. Registering builds a `Key` (a vector
/// of labels) and looks it up in the recorder's registry; the per-event and per-connection
/// paths pay a read lock and a hash of a few static strings instead.
struct Handles<K, H> {
    map: RwLock<HashMap<K, H>>,
}

impl<K: Eq + Hash, H> Handles<K, H> {
    fn new() -> Self {
        Self { map: RwLock::new(HashMap::new()) }
    }

    /// Runs `use_it` on `key`'s handle, registering it first if needed.
    fn with(&self, key: K, register: impl FnOnce() -> H, use_it: impl FnOnce(&H)) {
        if let Some(handle) = self.map.read().unwrap_or_else(PoisonError::into_inner).get(&key) {
            return use_it(handle);
        }
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        use_it(map.entry(key).or_insert_with(register));
    }
}

/// The handles of the hot paths' metrics.
struct HotHandles {
    events: Handles<(&'static str, &'static str, &'static str), Counter>,
    sockets: Handles<&'static str, Gauge>,
    connections: Gauge,
}

/// A handle on this server's metrics.
#[derive(Clone)]
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    hot: Arc<HotHandles>,
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
        let hot = Arc::new(HotHandles {
            events: Handles::new(),
            sockets: Handles::new(),
            connections: recorder.register_gauge(&Self::key(CONNECTIONS_OPEN, vec![]), &METADATA),
        });
        Self { recorder: Arc::new(recorder), handle, hot }
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
        self.hot.sockets.with(
            namespace,
            || {
                self.recorder
                    .register_gauge(&Self::key(SOCKETS_CONNECTED, vec![Label::new("namespace", namespace)]), &METADATA)
            },
            |gauge| move_gauge(gauge, delta),
        );
    }

    /// A client event was handled.
    pub fn event(&self, namespace: &'static str, event: &'static str, outcome: &'static str) {
        let register = || {
            let labels =
                vec![Label::new("namespace", namespace), Label::new("event", event), Label::new("outcome", outcome)];
            self.recorder.register_counter(&Self::key(SOCKET_EVENTS, labels), &METADATA)
        };
        self.hot.events.with((namespace, event, outcome), register, |counter| counter.increment(1));
    }

    /// The observer that times store calls, one histogram handle per store method
    /// resolved here once (registering per call would build and hash a key every time).
    pub fn store_timings(&self) -> StoreTimings {
        let parts = [
            store::USER_STORE_METHODS,
            store::CONVERSATION_STORE_METHODS,
            store::MESSAGE_STORE_METHODS,
            store::PUSH_OUTBOX_METHODS,
            store::CALL_STORE_METHODS,
            store::STORE_HEALTH_METHODS,
        ];
        let by_method = parts
            .into_iter()
            .flatten()
            .map(|&op| {
                let key = Self::key(STORE_SECONDS, vec![Label::new("op", op)]);
                (op, self.recorder.register_histogram(&key, &METADATA))
            })
            .collect();
        StoreTimings { by_method, metrics: self.clone() }
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
        move_gauge(&self.hot.connections, delta);
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

/// Moves a gauge up or down by `delta`.
fn move_gauge(gauge: &Gauge, delta: f64) {
    if delta >= 0.0 {
        gauge.increment(delta);
    } else {
        gauge.decrement(-delta);
    }
}
