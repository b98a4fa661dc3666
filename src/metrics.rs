//! Metrics in Prometheus' text format (`/metrics` on a listener with the
//! `metrics` resource), through the Prometheus project's Rust client:
//! requests and their latency by endpoint (the route, not the path, so
//! IDs do not multiply series), events appended, sync waiters, the
//! federation queue, RocksDB's figures, the process's memory, accounts and
//! rooms. Counters and histograms are updated as requests end; the rest is
//! read when scraped.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicI64, AtomicU64},
    },
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::text::encode,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<Labels, Counter>,
    latency: Family<Labels, Histogram, fn() -> Histogram>,
    /// Events the pipeline appended (local and other servers').
    pub events_appended: Counter<u64, AtomicU64>,
    gauges: Family<Labels, Gauge<i64, AtomicI64>>,
    started: Instant,
    /// When [`Metrics::events_per_second`] last looked, and the count then.
    last_rate: Mutex<(Instant, u64)>,
}

fn latency_histogram() -> Histogram {
    // 1 ms to ~32 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Metrics {
    /// `events_appended` is the pipeline's counter.
    pub fn new(events_appended: Counter<u64, AtomicU64>) -> Self {
        let mut registry = Registry::with_prefix("hearth");
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by endpoint and status",
            requests.clone(),
        );
        let latency = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer HTTP requests, by endpoint",
            latency.clone(),
        );
        registry.register(
            "events_appended",
            "Events the pipeline appended to rooms",
            events_appended.clone(),
        );
        let gauges = Family::<Labels, Gauge<i64, AtomicI64>>::default();
        registry.register("state", "Figures read at scrape time (see the `what` label)", gauges.clone());
        let started = Instant::now();
        Self {
            registry: Mutex::new(registry),
            requests,
            latency,
            events_appended,
            gauges,
            started,
            last_rate: Mutex::new((started, 0)),
        }
    }

    /// Records an answered request. `endpoint` is the route's path.
    pub fn request(&self, method: &str, endpoint: &str, status: u16, seconds: f64) {
        let labels = vec![("method", method.to_owned()), ("endpoint", endpoint.to_owned())];
        self.latency.get_or_create(&labels).observe(seconds);
        let mut labels = labels;
        labels.push(("status", status.to_string()));
        self.requests.get_or_create(&labels).inc();
    }

    /// Sets a figure read at scrape time.
    pub fn set(&self, what: &str, value: u64) {
        let labels = vec![("what", what.to_owned())];
        self.gauges.get_or_create(&labels).set(i64::try_from(value).unwrap_or(i64::MAX));
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Events appended per second since the last call (since the start on
    /// the first).
    pub fn events_per_second(&self) -> f64 {
        let now = (Instant::now(), self.events_appended.get());
        let mut last = self.last_rate.lock().expect("rate");
        let seconds = now.0.duration_since(last.0).as_secs_f64();
        let rate = if seconds > 0.0 { (now.1 - last.1) as f64 / seconds } else { 0.0 };
        *last = now;
        rate
    }

    /// Everything, in Prometheus' text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().expect("metrics registry");
        encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }
}

/// The process's resident memory in bytes (Linux's `VmRSS`), if known.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
