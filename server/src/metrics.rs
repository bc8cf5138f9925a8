//! Prometheus metrics, by the names the suites and dashboards rely on. Typed accessors
//! let tests and simulations read values without parsing text.
//!
//! Label order inside a family follows the client crate's map and is not part of any
//! trace; simulations read values through [`Metrics`] methods, never the text.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Why a stream or connection ended, as the `reason` label of `sse_disconnects_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DisconnectReason {
    /// The client closed or reset its side.
    ClientClosed,
    /// The subscriber fell out of the in-memory window.
    SlowConsumer,
    /// A write made no progress for `--write-timeout`.
    WriteTimeout,
    /// No whole request head within `--header-timeout`.
    HeaderTimeout,
    /// The server is draining.
    Shutdown,
    /// A catch-up read from the store failed.
    StoreError,
    /// The token that opened the stream (private topics) expired.
    TokenExpired,
}

impl DisconnectReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::ClientClosed => "client_closed",
            DisconnectReason::SlowConsumer => "slow_consumer",
            DisconnectReason::WriteTimeout => "write_timeout",
            DisconnectReason::HeaderTimeout => "header_timeout",
            DisconnectReason::Shutdown => "shutdown",
            DisconnectReason::StoreError => "store_error",
            DisconnectReason::TokenExpired => "token_expired",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    streams: Gauge,
    connections: Gauge,
    topics: Gauge,
    subscriptions: Gauge,
    buffered_bytes: Gauge,
    published: Counter,
    delivered: Counter,
    wakeups_at_once: Counter,
    wakeups_gathered: Counter,
    accept_errors: Counter,
    disconnects: Family<Reason, Counter>,
    rejected: Family<Reason, Counter>,
    resets: Family<Reason, Counter>,
    open_fds: Gauge,
    resident_bytes: Gauge,
    alive_tasks: Gauge,
    log_up: Gauge,
    log_lag: Gauge,
    log_append_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let metrics = Metrics {
            streams: Gauge::default(),
            connections: Gauge::default(),
            topics: Gauge::default(),
            subscriptions: Gauge::default(),
            buffered_bytes: Gauge::default(),
            published: Counter::default(),
            delivered: Counter::default(),
            wakeups_at_once: Counter::default(),
            wakeups_gathered: Counter::default(),
            accept_errors: Counter::default(),
            disconnects: Family::default(),
            rejected: Family::default(),
            resets: Family::default(),
            open_fds: Gauge::default(),
            resident_bytes: Gauge::default(),
            alive_tasks: Gauge::default(),
            log_up: Gauge::default(),
            log_lag: Gauge::default(),
            log_append_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 16)),
            registry: Registry::default(),
        };
        registry.register("sse_streams", "Open event streams", metrics.streams.clone());
        registry.register("sse_connections", "Open TCP connections", metrics.connections.clone());
        registry.register("sse_topics", "Topics held in memory", metrics.topics.clone());
        registry.register(
            "sse_subscriptions",
            "Stream registrations on topics (a stream on two topics counts twice)",
            metrics.subscriptions.clone(),
        );
        registry.register(
            "sse_buffered_bytes",
            "Framed event bytes held in topic windows",
            metrics.buffered_bytes.clone(),
        );
        registry.register("sse_events_published", "Events acknowledged to publishers", metrics.published.clone());
        registry.register("sse_events_delivered", "Events written to subscriber sockets", metrics.delivered.clone());
        let (at_once, gathered) = (metrics.wakeups_at_once.clone(), metrics.wakeups_gathered.clone());
        registry.register("sse_wakeups_at_once", "Topic wake-ups as soon as events arrived", at_once);
        registry.register("sse_wakeups_gathered", "Topic wake-ups held by --coalesce to gather events", gathered);
        registry.register("sse_accept_errors", "Errors from accept (EMFILE and others)", metrics.accept_errors.clone());
        registry.register("sse_disconnects", "Streams and connections ended, by reason", metrics.disconnects.clone());
        registry.register("sse_rejected", "Connections and requests refused, by reason", metrics.rejected.clone());
        registry.register(
            "sse_resets",
            "Reset notices sent for unusable resume ids, by reason",
            metrics.resets.clone(),
        );
        registry.register("process_open_fds", "Open file descriptors", metrics.open_fds.clone());
        registry.register("process_resident_memory_bytes", "Resident set size", metrics.resident_bytes.clone());
        registry.register("tokio_alive_tasks", "Tasks alive in the runtime", metrics.alive_tasks.clone());
        registry.register(
            "sse_log_up",
            "1 while the log (the store, or the JetStream backplane) takes appends and is followed",
            metrics.log_up.clone(),
        );
        registry.register(
            "sse_log_lag",
            "Events the log holds that this node has not applied yet (cluster mode)",
            metrics.log_lag.clone(),
        );
        registry.register(
            "sse_log_append_seconds",
            "Time from handing a publish to the log until it acknowledged it (cluster mode)",
            metrics.log_append_seconds.clone(),
        );
        Metrics { registry, ..metrics }
    }

    /// The Prometheus text exposition, refreshing process and runtime gauges first.
    pub fn render(&self) -> String {
        if let Some(fds) = count_open_fds() {
            self.open_fds.set(fds as i64);
        }
        if let Some(rss) = resident_bytes() {
            self.resident_bytes.set(rss as i64);
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            self.alive_tasks.set(handle.metrics().num_alive_tasks() as i64);
        }
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    pub(crate) fn stream_opened(&self) {
        self.streams.inc();
    }
    pub(crate) fn stream_closed(&self) {
        self.streams.dec();
    }
    pub(crate) fn connection_opened(&self) {
        self.connections.inc();
    }
    pub(crate) fn connection_closed(&self) {
        self.connections.dec();
    }
    pub(crate) fn add_subscriptions(&self, delta: i64) {
        self.subscriptions.inc_by(delta);
    }
    pub(crate) fn set_topics(&self, n: usize) {
        self.topics.set(n as i64);
    }
    pub(crate) fn add_buffered(&self, delta: i64) {
        self.buffered_bytes.inc_by(delta);
    }
    pub(crate) fn published(&self) {
        self.published.inc();
    }
    pub(crate) fn delivered(&self, n: usize) {
        self.delivered.inc_by(n as u64);
    }
    pub(crate) fn woke(&self, gathered: bool) {
        if gathered {
            self.wakeups_gathered.inc();
        } else {
            self.wakeups_at_once.inc();
        }
    }
    pub(crate) fn accept_error(&self) {
        self.accept_errors.inc();
    }
    pub(crate) fn disconnected(&self, reason: DisconnectReason) {
        self.disconnects.get_or_create(&Reason { reason: reason.as_str() }).inc();
    }
    pub(crate) fn rejected(&self, reason: &'static str) {
        self.rejected.get_or_create(&Reason { reason }).inc();
    }
    pub(crate) fn set_log_up(&self, up: bool) {
        self.log_up.set(i64::from(up));
    }
    pub(crate) fn set_log_lag(&self, lag: u64) {
        self.log_lag.set(i64::try_from(lag).unwrap_or(i64::MAX));
    }
    pub(crate) fn log_appended(&self, took: std::time::Duration) {
        self.log_append_seconds.observe(took.as_secs_f64());
    }
    pub(crate) fn reset_sent(&self, reason: &'static str) {
        self.resets.get_or_create(&Reason { reason }).inc();
    }

    /// Whether the log answers and this node has caught up with it (cluster mode): 1 or 0.
    pub fn log_up(&self) -> i64 {
        self.log_up.get()
    }
    /// Events the log holds that this node has not applied yet (cluster mode).
    pub fn log_lag(&self) -> i64 {
        self.log_lag.get()
    }
    /// Open event streams.
    pub fn streams(&self) -> i64 {
        self.streams.get()
    }
    /// Topic subscriptions of open streams (a stream on three topics counts three).
    pub fn subscriptions(&self) -> i64 {
        self.subscriptions.get()
    }
    /// Open connections.
    pub fn connections(&self) -> i64 {
        self.connections.get()
    }
    /// Bytes held in topic windows.
    pub fn buffered_bytes(&self) -> i64 {
        self.buffered_bytes.get()
    }
    /// Events acknowledged.
    pub fn published_total(&self) -> u64 {
        self.published.get()
    }
    /// Events written to subscribers.
    pub fn delivered_total(&self) -> u64 {
        self.delivered.get()
    }
    /// Accept errors seen.
    pub fn accept_errors_total(&self) -> u64 {
        self.accept_errors.get()
    }
    /// Streams or connections ended for `reason`.
    pub fn disconnects_total(&self, reason: DisconnectReason) -> u64 {
        self.disconnects.get_or_create(&Reason { reason: reason.as_str() }).get()
    }
    /// Refusals for `reason` (e.g. `max_connections`).
    pub fn rejected_total(&self, reason: &'static str) -> u64 {
        self.rejected.get_or_create(&Reason { reason }).get()
    }
}

fn count_open_fds() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of an unlabelled series in the exposition.
    fn value(text: &str, name: &str) -> Option<String> {
        text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ').map(str::to_owned))
    }

    #[test]
    fn the_gauges_show_what_was_set() {
        let metrics = Metrics::new();
        metrics.set_topics(3);
        metrics.add_buffered(700);
        metrics.add_buffered(-200);
        metrics.set_log_up(true);
        metrics.set_log_lag(42);
        metrics.add_subscriptions(5);
        metrics.add_subscriptions(-1);
        let text = metrics.render();
        assert_eq!(value(&text, "sse_topics").as_deref(), Some("3"), "{text}");
        assert_eq!(value(&text, "sse_buffered_bytes").as_deref(), Some("500"));
        assert_eq!(metrics.buffered_bytes(), 500);
        assert_eq!(value(&text, "sse_log_up").as_deref(), Some("1"));
        assert_eq!(value(&text, "sse_log_lag").as_deref(), Some("42"));
        assert_eq!(value(&text, "sse_subscriptions").as_deref(), Some("4"));
        metrics.set_log_up(false);
        assert_eq!(value(&metrics.render(), "sse_log_up").as_deref(), Some("0"));
        metrics.log_appended(std::time::Duration::from_millis(3));
        metrics.log_appended(std::time::Duration::from_millis(5));
        assert_eq!(value(&metrics.render(), "sse_log_append_seconds_count").as_deref(), Some("2"));
        metrics.reset_sent("evicted");
        assert_eq!(value(&metrics.render(), "sse_resets_total{reason=\"evicted\"}").as_deref(), Some("1"));
    }

    #[test]
    fn refusals_are_counted_per_reason() {
        let metrics = Metrics::new();
        metrics.rejected("max_connections");
        metrics.rejected("max_connections");
        metrics.rejected("tls_handshake");
        assert_eq!(metrics.rejected_total("max_connections"), 2);
        assert_eq!(metrics.rejected_total("tls_handshake"), 1);
        assert_eq!(metrics.rejected_total("buffer_full"), 0);
    }

    /// The process gauges are read from `/proc` at each render: this process's
    /// descriptors, its resident memory in whole pages.
    #[test]
    fn the_process_gauges_show_this_process() {
        let text = Metrics::new().render();
        // (Other tests of this process open and close files meanwhile: no exact count.)
        let fds: usize = value(&text, "process_open_fds").unwrap().parse().unwrap();
        assert!(fds >= 3, "{fds} descriptors shown: at least standard input, output and error");
        let rss: u64 = value(&text, "process_resident_memory_bytes").unwrap().parse().unwrap();
        assert!(rss >= 1 << 20 && rss.is_multiple_of(4096), "resident {rss} bytes");
    }
}
