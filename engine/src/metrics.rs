//! Metrics for Prometheus: counters kept per core and summed only when scraped.
//!
//! Each executor owns one [`CoreMetrics`] (a cache-line aligned block of relaxed atomics that
//! only its own thread writes), so counting on the data path is an uncontended add on a line no
//! other core touches. The admin listener's `/metrics` sums every core's block, adds what other
//! parts of the gateway already count (admission, audit, logging, pools, live sessions, the
//! process's descriptors and memory), and encodes the text format with `prometheus-client`.
//!
//! Where a new metric belongs: a count of events on a core goes into `CoreMetrics` (and into
//! `Scrape::encode`); a value another component already holds is read in `Scrape::encode`.

use portcullis_core::audit::{EndReason, Via};
use portcullis_core::config::Protocol;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// A counter only its core adds to.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram with fixed bucket bounds (seconds): per-bucket counts (not cumulative; the
/// scrape accumulates them) and the sum in microseconds.
pub struct Histogram<const N: usize> {
    bounds: &'static [f64; N],
    /// One more than the bounds: the last counts what is above every bound.
    buckets: [Counter; N],
    over: Counter,
    sum_micros: Counter,
}

impl<const N: usize> Histogram<N> {
    const fn new(bounds: &'static [f64; N]) -> Self {
        Histogram {
            bounds,
            buckets: [const { Counter(AtomicU64::new(0)) }; N],
            over: Counter(AtomicU64::new(0)),
            sum_micros: Counter(AtomicU64::new(0)),
        }
    }

    pub fn observe(&self, value: Duration) {
        let secs = value.as_secs_f64();
        match self.bounds.iter().position(|b| secs <= *b) {
            Some(i) => self.buckets[i].inc(),
            None => self.over.inc(),
        }
        self.sum_micros.add(value.as_micros().min(u128::from(u64::MAX)) as u64);
    }
}

/// Session lengths: a second to a day.
const DURATION_BOUNDS: [f64; 10] = [
    1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14_400.0, 28_800.0, 86_400.0,
];
/// Target connects: a tenth of a millisecond (loopback) to the longest connect timeout.
const CONNECT_BOUNDS: [f64; 11] = [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

const PROTOCOLS: [Protocol; 3] = [Protocol::Ssh, Protocol::Rdp, Protocol::Tcp];
const VIAS: [Via; 4] = [Via::Tunnel, Via::WebTerminal, Via::WebRdp, Via::RdGateway];
/// How many protocols and routes the per-session counters are kept for.
pub const PROTOCOL_COUNT: usize = PROTOCOLS.len();
pub const VIA_COUNT: usize = VIAS.len();

pub fn protocol_index(p: Protocol) -> usize {
    PROTOCOLS.iter().position(|q| *q == p).unwrap_or(0)
}

pub fn via_index(v: Via) -> usize {
    VIAS.iter().position(|w| *w == v).unwrap_or(0)
}

/// The route a request took, as the router decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind {
    Tunnel,
    WebRdp,
    RdGateway,
    Web,
    /// Answered and closed by the request path itself (refusals, health).
    Answered,
}

impl RouteKind {
    const ALL: [RouteKind; 5] = [
        RouteKind::Tunnel,
        RouteKind::WebRdp,
        RouteKind::RdGateway,
        RouteKind::Web,
        RouteKind::Answered,
    ];

    fn as_str(self) -> &'static str {
        match self {
            RouteKind::Tunnel => "tunnel",
            RouteKind::WebRdp => "web_rdp",
            RouteKind::RdGateway => "rd_gateway",
            RouteKind::Web => "web",
            RouteKind::Answered => "answered",
        }
    }
}

/// Why a request was refused, for `portcullis_requests_refused_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    /// No valid credential (401).
    Auth,
    /// The policy says no (403).
    Policy,
    /// No such target or path (404).
    NotFound,
    /// Sign-in attempts over the throttle (429).
    Throttle,
    /// The user holds `max_sessions_per_user` sessions already.
    SessionLimit,
    /// The target could not be reached (502).
    TargetUnreachable,
    /// The gateway cannot take the session now (503: audit log down, draining).
    Unavailable,
    /// Malformed or oversized requests, other 4xx.
    BadRequest,
}

impl RefusalKind {
    const ALL: [RefusalKind; 8] = [
        RefusalKind::Auth,
        RefusalKind::Policy,
        RefusalKind::NotFound,
        RefusalKind::Throttle,
        RefusalKind::SessionLimit,
        RefusalKind::TargetUnreachable,
        RefusalKind::Unavailable,
        RefusalKind::BadRequest,
    ];

    /// The kind of an audited refusal, by its HTTP status.
    pub fn of_status(status: u16) -> RefusalKind {
        match status {
            401 => RefusalKind::Auth,
            403 => RefusalKind::Policy,
            404 => RefusalKind::NotFound,
            // The only audited 429 is the session cap; the sign-in throttle counts itself.
            429 => RefusalKind::SessionLimit,
            502 | 504 => RefusalKind::TargetUnreachable,
            503 => RefusalKind::Unavailable,
            _ => RefusalKind::BadRequest,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            RefusalKind::Auth => "auth",
            RefusalKind::Policy => "policy",
            RefusalKind::NotFound => "not_found",
            RefusalKind::Throttle => "throttle",
            RefusalKind::SessionLimit => "session_limit",
            RefusalKind::TargetUnreachable => "target_unreachable",
            RefusalKind::Unavailable => "unavailable",
            RefusalKind::BadRequest => "bad_request",
        }
    }
}

/// What one core counts. Aligned so that two cores' blocks never share a cache line.
#[repr(align(128))]
pub struct CoreMetrics {
    pub connections_accepted: Counter,
    pub handshake_failures: Counter,
    pub handshake_timeouts: Counter,
    requests: [Counter; RouteKind::ALL.len()],
    refused: [Counter; RefusalKind::ALL.len()],
    /// By via, then protocol.
    sessions_started: [[Counter; PROTOCOLS.len()]; VIAS.len()],
    sessions_ended: [Counter; EndReason::ALL.len()],
    /// By protocol: client to target, target to client.
    bytes_up: [Counter; 3],
    bytes_down: [Counter; 3],
    pub session_duration: Histogram<{ DURATION_BOUNDS.len() }>,
    pub connect_latency: Histogram<{ CONNECT_BOUNDS.len() }>,
    /// The relay buffer pool of this core, as last published (`publish_pool`).
    pool_free_bytes: AtomicU64,
    pool_lent_bytes: AtomicU64,
}

impl CoreMetrics {
    fn new() -> CoreMetrics {
        CoreMetrics {
            connections_accepted: Counter::default(),
            handshake_failures: Counter::default(),
            handshake_timeouts: Counter::default(),
            requests: Default::default(),
            refused: Default::default(),
            sessions_started: Default::default(),
            sessions_ended: std::array::from_fn(|_| Counter::default()),
            bytes_up: Default::default(),
            bytes_down: Default::default(),
            session_duration: Histogram::new(&DURATION_BOUNDS),
            connect_latency: Histogram::new(&CONNECT_BOUNDS),
            pool_free_bytes: AtomicU64::new(0),
            pool_lent_bytes: AtomicU64::new(0),
        }
    }

    pub fn request(&self, route: RouteKind) {
        self.requests[route as usize].inc();
    }

    pub fn refused(&self, kind: RefusalKind) {
        self.refused[kind as usize].inc();
    }

    pub fn session_started(&self, via: Via, protocol: Protocol) {
        self.sessions_started[via_index(via)][protocol_index(protocol)].inc();
    }

    pub fn session_ended(&self, reason: EndReason, lasted: Duration) {
        if let Some(i) = EndReason::ALL.iter().position(|r| *r == reason) {
            self.sessions_ended[i].inc();
        }
        self.session_duration.observe(lasted);
    }

    /// Bytes a session relayed since it last reported.
    pub fn relayed(&self, protocol: Protocol, up: u64, down: u64) {
        let i = protocol_index(protocol);
        if up > 0 {
            self.bytes_up[i].add(up);
        }
        if down > 0 {
            self.bytes_down[i].add(down);
        }
    }

    /// Publishes this thread's relay buffer pool (called by each executor, once a second).
    pub fn publish_pool(&self) {
        use portcullis_core::relay::pool;
        self.pool_free_bytes
            .store(pool::pooled_bytes() as u64, Ordering::Relaxed);
        self.pool_lent_bytes.store(pool::lent_bytes() as u64, Ordering::Relaxed);
    }
}

/// Every core's block, plus one for threads that are not executors.
fn cores() -> &'static Mutex<Vec<Arc<CoreMetrics>>> {
    static CORES: OnceLock<Mutex<Vec<Arc<CoreMetrics>>>> = OnceLock::new();
    CORES.get_or_init(|| Mutex::new(vec![Arc::new(CoreMetrics::new())]))
}

thread_local! {
    static CORE: std::cell::OnceCell<Arc<CoreMetrics>> = const { std::cell::OnceCell::new() };
}

/// Gives the calling thread (an executor) its own block; called once as each executor starts.
pub fn register_core() {
    let block = Arc::new(CoreMetrics::new());
    cores().lock().unwrap_or_else(|e| e.into_inner()).push(block.clone());
    CORE.with(|c| {
        let _ = c.set(block);
    });
}

/// Counts on this thread's block (an executor's own; other threads share the first block).
pub fn with<R>(f: impl FnOnce(&CoreMetrics) -> R) -> R {
    CORE.with(|c| match c.get() {
        Some(block) => f(block),
        None => {
            let shared = cores().lock().unwrap_or_else(|e| e.into_inner())[0].clone();
            f(&shared)
        }
    })
}

/// What a scrape reads besides the cores' counters.
pub struct Sources<'a> {
    /// Connection-limit refusals by limit, connections held, and of those unauthenticated.
    pub connections_refused: Vec<(&'static str, u64)>,
    pub connections_open: u64,
    pub connections_unauthenticated: u64,
    pub audit: &'a crate::audit::Audit,
    pub pools: &'a crate::blocking::Pools,
    pub panics: u64,
    /// Live sessions by via and protocol.
    pub live: [[u64; PROTOCOLS.len()]; VIAS.len()],
    pub draining: bool,
    pub config_sha256: String,
    pub recordings_dropped: u64,
    pub recording_failures: u64,
    pub recordings_unrecorded: u64,
    pub recordings_expired: u64,
    pub store_up: bool,
    pub store_failures: u64,
}

/// The text exposition of every metric (OpenMetrics text, which Prometheus reads).
pub fn render(sources: &Sources<'_>) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(Snapshot::take(sources)));
    let mut out = String::with_capacity(16 * 1024);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// Every value of one scrape, summed and copied, so the collector owns what it encodes.
#[derive(Debug)]
struct Snapshot {
    accepted: u64,
    handshake_failures: u64,
    handshake_timeouts: u64,
    requests: Vec<(&'static str, u64)>,
    refused: Vec<(&'static str, u64)>,
    connections_refused: Vec<(&'static str, u64)>,
    connections_open: u64,
    connections_unauthenticated: u64,
    sessions_started: Vec<(&'static str, &'static str, u64)>,
    sessions_live: Vec<(&'static str, &'static str, u64)>,
    sessions_ended: Vec<(&'static str, u64)>,
    bytes: Vec<(&'static str, &'static str, u64)>,
    duration: HistogramSnapshot,
    connect: HistogramSnapshot,
    pool_free: u64,
    pool_lent: u64,
    audit_writable: bool,
    audit_failures: u64,
    audit_dropped: u64,
    audit_syslog_failures: u64,
    recordings_dropped: u64,
    recording_failures: u64,
    recordings_unrecorded: u64,
    recordings_expired: u64,
    store_up: bool,
    store_failures: u64,
    log_dropped: u64,
    blocking_refused: Vec<(&'static str, u64)>,
    panics: u64,
    draining: bool,
    config_sha256: String,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
    rss_bytes: Option<u64>,
}

#[derive(Debug, Default)]
struct HistogramSnapshot {
    sum: f64,
    count: u64,
    /// Cumulative, with `f64::INFINITY` last.
    buckets: Vec<(f64, u64)>,
}

impl HistogramSnapshot {
    fn sum_of<const N: usize>(blocks: &[Arc<CoreMetrics>], pick: impl Fn(&CoreMetrics) -> &Histogram<N>) -> Self {
        let Some(first) = blocks.first() else {
            return HistogramSnapshot::default();
        };
        let bounds = pick(first).bounds;
        let mut per = vec![0u64; N + 1];
        let mut micros = 0u64;
        for b in blocks {
            let h = pick(b);
            for (i, c) in h.buckets.iter().enumerate() {
                per[i] += c.get();
            }
            per[N] += h.over.get();
            micros += h.sum_micros.get();
        }
        let mut running = 0;
        let mut buckets = Vec::with_capacity(N + 1);
        for (i, n) in per.iter().enumerate() {
            running += n;
            buckets.push((bounds.get(i).copied().unwrap_or(f64::INFINITY), running));
        }
        HistogramSnapshot {
            sum: micros as f64 / 1e6,
            count: running,
            buckets,
        }
    }
}

impl Snapshot {
    fn take(s: &Sources<'_>) -> Snapshot {
        let blocks = cores().lock().unwrap_or_else(|e| e.into_inner()).clone();
        let sum = |f: &dyn Fn(&CoreMetrics) -> u64| blocks.iter().map(|b| f(b)).sum::<u64>();
        let proc = ProcessStats::read();
        Snapshot {
            accepted: sum(&|b| b.connections_accepted.get()),
            handshake_failures: sum(&|b| b.handshake_failures.get()),
            handshake_timeouts: sum(&|b| b.handshake_timeouts.get()),
            requests: RouteKind::ALL
                .iter()
                .map(|r| (r.as_str(), sum(&|b| b.requests[*r as usize].get())))
                .collect(),
            refused: RefusalKind::ALL
                .iter()
                .map(|k| (k.as_str(), sum(&|b| b.refused[*k as usize].get())))
                .collect(),
            connections_refused: s.connections_refused.clone(),
            connections_open: s.connections_open,
            connections_unauthenticated: s.connections_unauthenticated,
            sessions_started: VIAS
                .iter()
                .enumerate()
                .flat_map(|(v, via)| PROTOCOLS.iter().enumerate().map(move |(p, proto)| (v, via, p, proto)))
                .map(|(v, via, p, proto)| (via.as_str(), proto.as_str(), sum(&|b| b.sessions_started[v][p].get())))
                .collect(),
            sessions_live: VIAS
                .iter()
                .enumerate()
                .flat_map(|(v, via)| {
                    PROTOCOLS
                        .iter()
                        .enumerate()
                        .map(move |(p, proto)| (via.as_str(), proto.as_str(), s.live[v][p]))
                })
                .collect(),
            sessions_ended: EndReason::ALL
                .iter()
                .enumerate()
                .map(|(i, r)| (r.as_str(), sum(&|b| b.sessions_ended[i].get())))
                .collect(),
            bytes: PROTOCOLS
                .iter()
                .enumerate()
                .flat_map(|(i, p)| {
                    [
                        (p.as_str(), "client_to_target", sum(&|b| b.bytes_up[i].get())),
                        (p.as_str(), "target_to_client", sum(&|b| b.bytes_down[i].get())),
                    ]
                })
                .collect(),
            duration: HistogramSnapshot::sum_of(&blocks, |b| &b.session_duration),
            connect: HistogramSnapshot::sum_of(&blocks, |b| &b.connect_latency),
            pool_free: sum(&|b| b.pool_free_bytes.load(Ordering::Relaxed)),
            pool_lent: sum(&|b| b.pool_lent_bytes.load(Ordering::Relaxed)),
            audit_writable: s.audit.writable(),
            audit_failures: s.audit.write_failures(),
            audit_dropped: s.audit.dropped(),
            audit_syslog_failures: s.audit.syslog_failures(),
            recordings_dropped: s.recordings_dropped,
            recording_failures: s.recording_failures,
            recordings_unrecorded: s.recordings_unrecorded,
            recordings_expired: s.recordings_expired,
            store_up: s.store_up,
            store_failures: s.store_failures,
            log_dropped: crate::logging::dropped_lines(),
            blocking_refused: vec![
                ("files", s.pools.files.refused()),
                ("hashing", s.pools.hashing.refused()),
                ("dns", s.pools.dns.refused()),
            ],
            panics: s.panics,
            draining: s.draining,
            config_sha256: s.config_sha256.clone(),
            open_fds: proc.open_fds,
            max_fds: proc.max_fds,
            rss_bytes: proc.rss_bytes,
        }
    }
}

/// What the kernel says about this process.
struct ProcessStats {
    open_fds: Option<u64>,
    max_fds: Option<u64>,
    rss_bytes: Option<u64>,
}

impl ProcessStats {
    fn read() -> ProcessStats {
        let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64);
        let max_fds = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        // "VmRSS:   12345 kB"
        let rss_bytes = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        });
        ProcessStats {
            open_fds,
            max_fds,
            rss_bytes,
        }
    }
}

/// Encodes one metric without labels.
fn plain<M: EncodeMetric>(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, metric: M) -> std::fmt::Result {
    let metric_encoder = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(metric_encoder)
}

fn counter(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> std::fmt::Result {
    plain(
        encoder,
        name,
        help,
        prometheus_client::metrics::counter::ConstCounter::new(v),
    )
}

fn gauge(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: i64) -> std::fmt::Result {
    plain(
        encoder,
        name,
        help,
        prometheus_client::metrics::gauge::ConstGauge::new(v),
    )
}

/// A family with labels: each `(labels, value)` row as a counter or a gauge.
fn family<const L: usize>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: impl IntoIterator<Item = ([(&'static str, &'static str); L], u64)>,
) -> std::fmt::Result {
    let mut metric: MetricEncoder<'_> = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in rows {
        let labels = labels.to_vec();
        let mut row = metric.encode_family(&labels)?;
        match kind {
            MetricType::Counter => row.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&v, None)?,
            _ => row.encode_gauge(&(v as i64))?,
        }
    }
    Ok(())
}

fn histogram(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, h: &HistogramSnapshot) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(
        name,
        help,
        Some(&prometheus_client::registry::Unit::Seconds),
        MetricType::Histogram,
    )?;
    metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(h.sum, h.count, &h.buckets, None)
}

impl prometheus_client::collector::Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        use MetricType::{Counter as C, Gauge as G};
        let e = &mut e;
        counter(
            e,
            "portcullis_connections_accepted",
            "TCP connections accepted.",
            self.accepted,
        )?;
        family(
            e,
            "portcullis_connections_refused",
            "Connections closed at once by the connection limits, by limit.",
            C,
            self.connections_refused.iter().map(|(k, n)| ([("reason", *k)], *n)),
        )?;
        gauge(
            e,
            "portcullis_connections_open",
            "Connections held now.",
            self.connections_open as i64,
        )?;
        gauge(
            e,
            "portcullis_connections_unauthenticated",
            "Connections that have not finished TLS and their request.",
            self.connections_unauthenticated as i64,
        )?;
        family(
            e,
            "portcullis_tls_handshake_failures",
            "TLS handshakes that failed or timed out.",
            C,
            [
                ([("kind", "error")], self.handshake_failures),
                ([("kind", "timeout")], self.handshake_timeouts),
            ],
        )?;
        family(
            e,
            "portcullis_requests",
            "Requests after TLS, by the route the router chose.",
            C,
            self.requests.iter().map(|(r, n)| ([("route", *r)], *n)),
        )?;
        family(
            e,
            "portcullis_requests_refused",
            "Refused requests (each also in the audit log), by reason.",
            C,
            self.refused.iter().map(|(r, n)| ([("reason", *r)], *n)),
        )?;
        family(
            e,
            "portcullis_sessions_started",
            "Sessions granted and started, by route and protocol.",
            C,
            self.sessions_started
                .iter()
                .map(|(v, p, n)| ([("via", *v), ("protocol", *p)], *n)),
        )?;
        family(
            e,
            "portcullis_sessions_live",
            "Sessions running now, by route and protocol.",
            G,
            self.sessions_live
                .iter()
                .map(|(v, p, n)| ([("via", *v), ("protocol", *p)], *n)),
        )?;
        family(
            e,
            "portcullis_sessions_ended",
            "Sessions ended, by the audit log's end reason.",
            C,
            self.sessions_ended.iter().map(|(r, n)| ([("reason", *r)], *n)),
        )?;
        family(
            e,
            "portcullis_relayed_bytes",
            "Payload bytes relayed, by protocol and direction.",
            C,
            self.bytes
                .iter()
                .map(|(p, d, n)| ([("protocol", *p), ("direction", *d)], *n)),
        )?;
        histogram(
            e,
            "portcullis_session_duration",
            "How long sessions lasted.",
            &self.duration,
        )?;
        histogram(
            e,
            "portcullis_target_connect",
            "Time to connect to a target.",
            &self.connect,
        )?;
        gauge(
            e,
            "portcullis_relay_buffer_pool_free_bytes",
            "Relay buffers kept for reuse.",
            self.pool_free as i64,
        )?;
        gauge(
            e,
            "portcullis_relay_buffer_lent_bytes",
            "Relay buffers holding data in flight.",
            self.pool_lent as i64,
        )?;
        gauge(
            e,
            "portcullis_audit_writable",
            "1 while audit records are getting out, 0 while writes fail.",
            i64::from(self.audit_writable),
        )?;
        counter(
            e,
            "portcullis_audit_write_failures",
            "Failed audit writes (each retry counts).",
            self.audit_failures,
        )?;
        counter(
            e,
            "portcullis_audit_syslog_failures",
            "Audit records the syslog socket did not take (the file has them).",
            self.audit_syslog_failures,
        )?;
        counter(
            e,
            "portcullis_audit_records_dropped",
            "Audit records dropped: queue full.",
            self.audit_dropped,
        )?;
        counter(
            e,
            "portcullis_recording_events_dropped",
            "Recording events dropped: the recorder was behind.",
            self.recordings_dropped,
        )?;
        counter(
            e,
            "portcullis_recording_write_failures",
            "Recordings stopped by a write error.",
            self.recording_failures,
        )?;
        counter(
            e,
            "portcullis_sessions_unrecorded",
            "Sessions that went on unrecorded: their recording could not start (not required).",
            self.recordings_unrecorded,
        )?;
        counter(
            e,
            "portcullis_recordings_expired",
            "Recordings deleted for being older than the retention.",
            self.recordings_expired,
        )?;
        counter(
            e,
            "portcullis_log_lines_dropped",
            "Log lines dropped: stderr did not keep up.",
            self.log_dropped,
        )?;
        family(
            e,
            "portcullis_blocking_jobs_refused",
            "Jobs refused by a full blocking pool, by pool.",
            C,
            self.blocking_refused.iter().map(|(p, n)| ([("pool", *p)], *n)),
        )?;
        counter(
            e,
            "portcullis_connection_panics",
            "Connection tasks that panicked (each ended its connection only).",
            self.panics,
        )?;
        gauge(
            e,
            "portcullis_store_up",
            "1 while the state store answers (always, for the local store).",
            i64::from(self.store_up),
        )?;
        counter(
            e,
            "portcullis_store_failures",
            "State store commands that failed or timed out.",
            self.store_failures,
        )?;
        gauge(
            e,
            "portcullis_draining",
            "1 once the gateway stops accepting and drains.",
            i64::from(self.draining),
        )?;
        if let Some(n) = self.open_fds {
            gauge(e, "process_open_fds", "Open file descriptors.", n as i64)?;
        }
        if let Some(n) = self.max_fds {
            gauge(
                e,
                "process_max_fds",
                "The open-files limit.",
                n.min(i64::MAX as u64) as i64,
            )?;
        }
        if let Some(n) = self.rss_bytes {
            gauge(e, "process_resident_memory_bytes", "Resident memory.", n as i64)?;
        }
        let info = prometheus_client::metrics::info::Info::new(vec![
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
            ("config_sha256", self.config_sha256.clone()),
        ]);
        plain(
            e,
            "portcullis_build",
            "Version and the SHA-256 of the loaded configuration.",
            info,
        )
    }
}
