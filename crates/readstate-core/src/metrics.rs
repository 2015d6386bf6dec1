//! Metric names, descriptions and the few functions that record them, so that a log
//! line and its counter never drift apart. Labels are bounded (route templates,
//! outcomes), never user or channel ids. Every series is exported from start-up (at
//! 0), so alerts on absent series and `rate()` over the first increment work.
//!
//! Also the dashboard's [`History`]: a fixed-size ring of samples (request rates by
//! status class, latency quantiles, in-flight, cache, RSS, commits) taken every
//! [`HISTORY_INTERVAL`] by [`spawn_history`], so the page at `/` has a chart at once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use parking_lot::Mutex;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub const HTTP_REQUESTS: &str = "readstate_http_requests_total";
pub const HTTP_DURATION: &str = "readstate_http_request_duration_seconds";
pub const HTTP_IN_FLIGHT: &str = "readstate_http_in_flight_requests";
pub const HTTP_SOFT_LIMIT: &str = "readstate_http_soft_limit_exceeded_total";
pub const HTTP_SHED: &str = "readstate_http_shed_total";
pub const HTTP_CONNECTIONS: &str = "readstate_http_connections";
pub const HTTP_CONNECTIONS_CLOSED: &str = "readstate_http_connections_closed_total";
/// Why the server closed a connection itself.
pub const CONNECTION_CLOSE_REASONS: &[&str] = &["limit", "silent"];
pub const READY: &str = "readstate_ready";
pub const AUTH_DENIED: &str = "readstate_auth_denied_total";
pub const RATE_LIMITED: &str = "readstate_rate_limited_total";
pub const CACHE_BYTES: &str = "readstate_cache_bytes";
pub const CACHE_BUDGET: &str = "readstate_cache_budget_bytes";
pub const CACHE_USERS: &str = "readstate_cache_users";
pub const CACHE_READ_STATES: &str = "readstate_cache_read_states";
pub const CACHE_CHANNELS: &str = "readstate_cache_channels";
pub const CACHE_DIRTY: &str = "readstate_cache_dirty_entries";
pub const CACHE_EVICTIONS: &str = "readstate_cache_evictions_total";
pub const CACHE_LOADS: &str = "readstate_cache_loads_total";
pub const CACHE_INVALIDATIONS: &str = "readstate_cache_remote_invalidations_total";
pub const COMMIT_BATCH_ENTRIES: &str = "readstate_commit_batch_entries";
pub const COMMIT_BATCH_WRITES: &str = "readstate_commit_batch_writes";
pub const COMMIT_DURATION: &str = "readstate_commit_duration_seconds";
pub const COMMIT_QUEUE: &str = "readstate_commit_queue_entries";
pub const COMMIT_BACKPRESSURE: &str = "readstate_commit_backpressure_total";
pub const STORAGE_ERRORS: &str = "readstate_storage_errors_total";
pub const LOG_APPENDS: &str = "readstate_log_appends_total";
pub const LOG_APPENDED_BYTES: &str = "readstate_log_appended_bytes_total";
pub const LOG_FSYNC: &str = "readstate_log_fsync_duration_seconds";
pub const LOG_BYTES: &str = "readstate_log_bytes";
pub const LOG_REPLAY: &str = "readstate_log_replay_seconds";
pub const LOG_REPLAYED: &str = "readstate_log_replayed_records";
pub const CHECKPOINT_DURATION: &str = "readstate_checkpoint_duration_seconds";
pub const CHECKPOINT_WRITES: &str = "readstate_checkpoint_writes";
pub const CHECKPOINT_URGENT: &str = "readstate_checkpoints_urgent_total";
pub const CHECKPOINT_PACED: &str = "readstate_checkpoint_paced_sleep_seconds";
pub const CHECKPOINT_UNPACED: &str = "readstate_checkpoints_pacing_given_up_total";
pub const PROCESS_RSS: &str = "readstate_process_resident_bytes";
pub const ALLOCATED: &str = "readstate_allocator_allocated_bytes";
pub const EVENT_SUBSCRIBERS: &str = "readstate_events_subscribers";
pub const EVENTS_SENT: &str = "readstate_events_sent_total";
pub const EVENT_RESYNCS: &str = "readstate_events_resyncs_total";
pub const NATS_EVENTS: &str = "readstate_nats_events_total";
pub const NATS_PENDING: &str = "readstate_nats_consumer_pending";
pub const NATS_ACK_PENDING: &str = "readstate_nats_consumer_ack_pending";
pub const NATS_PUBLISHED: &str = "readstate_nats_changes_published_total";
/// Seconds since the service started (sampled on each scrape).
pub const UPTIME: &str = "readstate_uptime_seconds";
/// Always 1, labelled with `version` and `durability`, for dashboards.
pub const BUILD_INFO: &str = "readstate_build_info";

/// The `operation` labels of [`STORAGE_ERRORS`] (exported at 0 from start-up).
pub const STORAGE_OPERATIONS: &[&str] = &["load", "commit", "log", "checkpoint"];
/// The `kind` labels of [`CACHE_LOADS`].
pub const CACHE_LOAD_KINDS: &[&str] = &["user", "channel"];
/// The `kind` labels of [`CACHE_INVALIDATIONS`].
pub const INVALIDATION_KINDS: &[&str] = &["key", "resync"];
/// The `outcome` labels of [`NATS_EVENTS`].
pub const NATS_EVENT_OUTCOMES: &[&str] = &["applied", "poison", "retried"];
/// The `outcome` labels of [`NATS_PUBLISHED`].
pub const NATS_PUBLISH_OUTCOMES: &[&str] = &["published", "dropped"];

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
const SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
];

/// Installs the global recorder (once per process; later calls reuse the first).
///
/// # Errors
/// When another recorder was installed by someone else.
pub fn install() -> Result<PrometheusHandle, String> {
    static HANDLE: std::sync::OnceLock<Result<PrometheusHandle, String>> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Prefix("readstate_commit_batch".into()),
                        SIZE_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(CHECKPOINT_WRITES.into()), SIZE_BUCKETS)
                })
                .map_err(|e| e.to_string())?;
            let handle = builder.install_recorder().map_err(|e| e.to_string())?;
            describe();
            export_at_zero();
            Ok(handle)
        })
        .clone()
}

fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route template, method and status"
    );
    describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "HTTP request latency by route template"
    );
    describe_gauge!(HTTP_IN_FLIGHT, "HTTP requests being handled now");
    describe_counter!(
        HTTP_SOFT_LIMIT,
        "Requests that arrived above the soft in-flight limit"
    );
    describe_counter!(
        HTTP_SHED,
        "Requests refused with 503 at the hard in-flight limit"
    );
    describe_gauge!(HTTP_CONNECTIONS, "Open HTTP connections");
    describe_counter!(
        HTTP_CONNECTIONS_CLOSED,
        "HTTP connections the server closed itself: at limits.max_connections (limit), or sending nothing within http.header_read_timeout_ms (silent)"
    );
    describe_gauge!(
        READY,
        "1 when /readyz would answer 200 (started, not draining, storage answering, last commit ok), else 0; sampled per scrape"
    );
    describe_counter!(
        AUTH_DENIED,
        "Requests refused by access control (401 and 403), by reason"
    );
    describe_counter!(
        RATE_LIMITED,
        "Requests refused with 429: a caller over limits.per_caller_rps"
    );
    describe_gauge!(
        CACHE_BYTES,
        metrics::Unit::Bytes,
        "Bytes held by the cache, all overhead included"
    );
    describe_gauge!(
        CACHE_BUDGET,
        metrics::Unit::Bytes,
        "The cache's byte budget (cache.max_bytes)"
    );
    describe_gauge!(CACHE_USERS, "Users cached");
    describe_gauge!(CACHE_READ_STATES, "Read states cached");
    describe_gauge!(CACHE_CHANNELS, "Channels cached");
    describe_gauge!(CACHE_DIRTY, "Cache entries with writes not yet committed");
    describe_counter!(
        CACHE_EVICTIONS,
        "Cache entries evicted to stay within the budget"
    );
    describe_counter!(CACHE_LOADS, "Cache misses loaded from storage, by kind");
    describe_counter!(
        CACHE_INVALIDATIONS,
        "Cache entries invalidated because another node wrote them (resync: whole cache)"
    );
    describe_histogram!(COMMIT_BATCH_ENTRIES, "Queued entries per group commit");
    describe_histogram!(COMMIT_BATCH_WRITES, "Storage writes per group commit");
    describe_histogram!(
        COMMIT_DURATION,
        metrics::Unit::Seconds,
        "Group commit latency (one transaction)"
    );
    describe_gauge!(COMMIT_QUEUE, "Entries waiting for the commit writer");
    describe_counter!(
        LOG_APPENDS,
        "Commit log groups appended and fdatasync'ed (one per group commit)"
    );
    describe_counter!(
        LOG_APPENDED_BYTES,
        metrics::Unit::Bytes,
        "Bytes appended to the commit log"
    );
    describe_histogram!(
        LOG_FSYNC,
        metrics::Unit::Seconds,
        "Commit log write plus fdatasync latency per group"
    );
    describe_gauge!(
        LOG_BYTES,
        metrics::Unit::Bytes,
        "Bytes of commit log segments on disk"
    );
    describe_gauge!(
        LOG_REPLAY,
        metrics::Unit::Seconds,
        "Time the last start spent replaying the commit log into the database"
    );
    describe_gauge!(
        LOG_REPLAYED,
        "Commit log records replayed at the last start"
    );
    describe_histogram!(
        CHECKPOINT_DURATION,
        metrics::Unit::Seconds,
        "Checkpoint latency (one database transaction of merged logged writes)"
    );
    describe_histogram!(
        CHECKPOINT_WRITES,
        "Logged writes per checkpoint (rows are merged: each written once)"
    );
    describe_counter!(
        CHECKPOINT_URGENT,
        "Checkpoints run at normal priority because logged writes neared storage.max_unflushed"
    );
    describe_histogram!(
        CHECKPOINT_PACED,
        metrics::Unit::Seconds,
        "Time a paced checkpoint's writes slept to keep to storage.checkpoint_write_rate"
    );
    describe_counter!(
        CHECKPOINT_UNPACED,
        "Checkpoints that stopped pacing their writes because the writer thread waited for CPU longer than it slept"
    );
    describe_counter!(
        COMMIT_BACKPRESSURE,
        "Writes refused because the commit queue was full"
    );
    describe_counter!(
        STORAGE_ERRORS,
        "Storage operations that failed, by operation"
    );
    describe_gauge!(
        PROCESS_RSS,
        metrics::Unit::Bytes,
        "Resident set size of the process"
    );
    describe_gauge!(
        EVENT_SUBSCRIBERS,
        "Open change subscriptions (SSE, WebSocket, NATS publisher)"
    );
    describe_counter!(EVENTS_SENT, "Change events sent to subscribers");
    describe_counter!(
        EVENT_RESYNCS,
        "Resync events sent (unresumable Last-Event-ID or a subscriber that fell behind)"
    );
    describe_counter!(
        NATS_EVENTS,
        "JetStream events consumed, by outcome (applied, poison, retried)"
    );
    describe_gauge!(
        NATS_PENDING,
        "JetStream messages not yet delivered to the consumer (ingest lag)"
    );
    describe_gauge!(
        NATS_ACK_PENDING,
        "JetStream messages delivered but not yet acknowledged"
    );
    describe_counter!(
        NATS_PUBLISHED,
        "Read-state changes published to NATS, by outcome (published, dropped)"
    );
    describe_gauge!(
        ALLOCATED,
        metrics::Unit::Bytes,
        "Bytes allocated through the allocator (jemalloc)"
    );
}

/// Registers every series at 0 (labelled families with their known labels), so
/// that `/metrics` lists them before anything was counted. Adding 0 leaves a series
/// that was already counted unchanged. The per-route HTTP series are registered by
/// [`init_route_series`], for the routes the router documents. The NATS series are
/// exported (at 0) whether or not `nats.url` is set.
fn export_at_zero() {
    for name in [
        HTTP_SOFT_LIMIT,
        HTTP_SHED,
        CACHE_EVICTIONS,
        COMMIT_BACKPRESSURE,
        EVENTS_SENT,
        EVENT_RESYNCS,
        LOG_APPENDS,
        LOG_APPENDED_BYTES,
        CHECKPOINT_URGENT,
        CHECKPOINT_UNPACED,
        RATE_LIMITED,
    ] {
        counter!(name).increment(0);
    }
    for (name, label, values) in [
        (STORAGE_ERRORS, "operation", STORAGE_OPERATIONS),
        (CACHE_LOADS, "kind", CACHE_LOAD_KINDS),
        (CACHE_INVALIDATIONS, "kind", INVALIDATION_KINDS),
        (NATS_EVENTS, "outcome", NATS_EVENT_OUTCOMES),
        (NATS_PUBLISHED, "outcome", NATS_PUBLISH_OUTCOMES),
        (HTTP_CONNECTIONS_CLOSED, "reason", CONNECTION_CLOSE_REASONS),
        (AUTH_DENIED, "reason", &crate::auth::Denied::REASONS),
    ] {
        for &value in values {
            counter!(name, label => value).increment(0);
        }
    }
    for name in [
        READY,
        HTTP_IN_FLIGHT,
        HTTP_CONNECTIONS,
        CACHE_BYTES,
        CACHE_BUDGET,
        CACHE_USERS,
        CACHE_READ_STATES,
        CACHE_CHANNELS,
        CACHE_DIRTY,
        COMMIT_QUEUE,
        PROCESS_RSS,
        ALLOCATED,
        EVENT_SUBSCRIBERS,
        NATS_PENDING,
        NATS_ACK_PENDING,
        UPTIME,
        LOG_BYTES,
        LOG_REPLAY,
        LOG_REPLAYED,
    ] {
        gauge!(name).increment(0.0);
    }
    // A registered histogram is rendered (all buckets 0) before its first sample.
    for name in [
        COMMIT_BATCH_ENTRIES,
        COMMIT_BATCH_WRITES,
        COMMIT_DURATION,
        LOG_FSYNC,
        CHECKPOINT_DURATION,
        CHECKPOINT_WRITES,
        CHECKPOINT_PACED,
    ] {
        let _ = histogram!(name);
    }
}

/// Registers `readstate_http_requests_total{route,method,status}` at 0 for each
/// `(route, method, statuses)` and `readstate_http_request_duration_seconds{route,method}`
/// for each `(route, method)`, with the labels the request middleware uses (route
/// template, upper-case method, status code). Idempotent.
pub fn init_route_series<'a>(routes: impl IntoIterator<Item = (&'a str, &'a str, Vec<String>)>) {
    for (route, method, statuses) in routes {
        let method = method.to_ascii_uppercase();
        let _ = histogram!(HTTP_DURATION, "route" => route.to_owned(), "method" => method.clone());
        for status in statuses {
            counter!(
                HTTP_REQUESTS,
                "route" => route.to_owned(),
                "method" => method.clone(),
                "status" => status
            )
            .increment(0);
        }
    }
}

/// A group commit finished.
pub fn commit_done(entries: usize, writes: usize, took: Duration) {
    histogram!(COMMIT_BATCH_ENTRIES).record(entries as f64);
    histogram!(COMMIT_BATCH_WRITES).record(writes as f64);
    histogram!(COMMIT_DURATION).record(took.as_secs_f64());
}

/// A commit log group was appended and fdatasync'ed (`bytes` appended, `took` for
/// the write and the sync); `on_disk` is the log's size now.
pub fn log_synced(bytes: u64, took: Duration, on_disk: u64) {
    counter!(LOG_APPENDS).increment(1);
    counter!(LOG_APPENDED_BYTES).increment(bytes);
    histogram!(LOG_FSYNC).record(took.as_secs_f64());
    gauge!(LOG_BYTES).set(on_disk as f64);
}

/// The commit log's size on disk changed (a checkpoint deleted segments).
pub fn log_on_disk(bytes: u64) {
    gauge!(LOG_BYTES).set(bytes as f64);
}

/// A checkpoint wrote `writes` logged writes to the database in `took`; `urgent`:
/// at normal priority, since writes neared the unflushed bound.
pub fn checkpoint_done(writes: usize, took: Duration, urgent: bool) {
    histogram!(CHECKPOINT_WRITES).record(writes as f64);
    histogram!(CHECKPOINT_DURATION).record(took.as_secs_f64());
    if urgent {
        counter!(CHECKPOINT_URGENT).increment(1);
    }
}

/// A paced checkpoint slept `slept` in all to keep to its write rate; `gave_up`: it
/// stopped pacing part-way ([`crate::store`]'s throttle).
pub fn checkpoint_paced(slept: Duration, gave_up: bool) {
    histogram!(CHECKPOINT_PACED).record(slept.as_secs_f64());
    if gave_up {
        counter!(CHECKPOINT_UNPACED).increment(1);
    }
}

/// Start-up replayed `records` commit log records into the database in `took`.
pub fn log_replayed(records: usize, took: Duration) {
    gauge!(LOG_REPLAYED).set(records as f64);
    gauge!(LOG_REPLAY).set(took.as_secs_f64());
}

/// A storage operation failed (the caller logs it).
pub fn storage_error(operation: &'static str) {
    debug_assert!(
        STORAGE_OPERATIONS.contains(&operation),
        "add {operation:?} to STORAGE_OPERATIONS so that it is exported from start-up"
    );
    counter!(STORAGE_ERRORS, "operation" => operation).increment(1);
}

/// A write was refused because the commit queue was full.
pub fn backpressure() {
    counter!(COMMIT_BACKPRESSURE).increment(1);
    tracing::debug!("commit queue full; answering 503");
}

/// A cache miss was loaded from storage.
pub fn cache_load(kind: &'static str) {
    debug_assert!(
        CACHE_LOAD_KINDS.contains(&kind),
        "add {kind:?} to CACHE_LOAD_KINDS so that it is exported from start-up"
    );
    counter!(CACHE_LOADS, "kind" => kind).increment(1);
}

/// Another node's commits invalidated `keys` cache entries (or, on resync, all).
pub fn remote_invalidation(keys: usize, resync: bool) {
    if resync {
        counter!(CACHE_INVALIDATIONS, "kind" => "resync").increment(1);
    } else {
        counter!(CACHE_INVALIDATIONS, "kind" => "key").increment(keys as u64);
    }
}

/// A change event went out to a subscriber.
pub fn event_sent() {
    counter!(EVENTS_SENT).increment(1);
}

/// A subscriber was told to resync.
pub fn event_resync() {
    counter!(EVENT_RESYNCS).increment(1);
}

/// JetStream events finished with `outcome` (`applied`, `poison`, `retried`).
pub fn nats_events(outcome: &'static str, n: usize) {
    debug_assert!(
        NATS_EVENT_OUTCOMES.contains(&outcome),
        "add {outcome:?} to NATS_EVENT_OUTCOMES so that it is exported from start-up"
    );
    counter!(NATS_EVENTS, "outcome" => outcome).increment(n as u64);
}

/// The consumer's backlog, from its info.
pub fn nats_lag(pending: u64, ack_pending: usize) {
    gauge!(NATS_PENDING).set(pending as f64);
    gauge!(NATS_ACK_PENDING).set(ack_pending as f64);
}

/// A change was published to NATS (`published`) or dropped (`dropped`).
pub fn nats_published(outcome: &'static str) {
    debug_assert!(
        NATS_PUBLISH_OUTCOMES.contains(&outcome),
        "add {outcome:?} to NATS_PUBLISH_OUTCOMES so that it is exported from start-up"
    );
    counter!(NATS_PUBLISHED, "outcome" => outcome).increment(1);
}

/// Gauges sampled on each scrape.
pub fn sample(service: &crate::service::ServiceStats) {
    let stats = &service.cache;
    gauge!(CACHE_BYTES).set(stats.bytes as f64);
    gauge!(CACHE_BUDGET).set(service.cache_budget as f64);
    gauge!(CACHE_USERS).set(stats.users as f64);
    gauge!(CACHE_READ_STATES).set(stats.read_states as f64);
    gauge!(CACHE_CHANNELS).set(stats.channels as f64);
    gauge!(CACHE_DIRTY).set(stats.dirty_entries as f64);
    counter!(CACHE_EVICTIONS).absolute(stats.evictions);
    gauge!(COMMIT_QUEUE).set(service.queued as f64);
    gauge!(EVENT_SUBSCRIBERS).set(service.subscribers as f64);
    if let Some(rss) = resident_bytes() {
        gauge!(PROCESS_RSS).set(rss as f64);
    }
    if let Some(allocated) = allocated_bytes() {
        gauge!(ALLOCATED).set(allocated as f64);
    }
}

/// Resident set size from /proc/self/statm (Linux), in bytes.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Bytes allocated through jemalloc (refreshes its statistics epoch first).
pub fn allocated_bytes() -> Option<u64> {
    tikv_jemalloc_ctl::epoch::advance().ok()?;
    tikv_jemalloc_ctl::stats::allocated::read()
        .ok()
        .map(|b| b as u64)
}

/// How often [`spawn_history`] samples for the dashboard.
pub const HISTORY_INTERVAL: Duration = Duration::from_secs(2);
/// Samples the dashboard history keeps: 10 minutes at [`HISTORY_INTERVAL`].
pub const HISTORY_LEN: usize = 300;
/// The quantiles of [`HistorySample`] (p50 and p99).
const QUANTILES: [f64; 2] = [0.5, 0.99];

/// One point of the dashboard history: rates over the interval that ends at `t`,
/// gauges at `t`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HistorySample {
    /// Unix time in seconds.
    pub t: f64,
    /// HTTP requests answered per second (every status).
    pub rps: f64,
    /// ... with a 2xx status.
    pub rps_2xx: f64,
    /// ... with a 4xx status.
    pub rps_4xx: f64,
    /// ... with a 5xx status.
    pub rps_5xx: f64,
    /// Median request latency in the interval (interpolated within histogram
    /// buckets, as Prometheus' `histogram_quantile`); `None` without requests.
    pub p50_ms: Option<f64>,
    /// 99th percentile request latency, likewise.
    pub p99_ms: Option<f64>,
    /// `/v1` requests in flight.
    pub in_flight: f64,
    /// Bytes held by the cache.
    pub cache_bytes: u64,
    /// Resident set size, when the platform tells.
    pub rss_bytes: Option<u64>,
    /// Group commits per second.
    pub commits_per_s: f64,
}

/// Counters since start as of the newest sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct HistoryTotals {
    /// HTTP requests answered.
    pub requests: u64,
    /// Group commits.
    pub commits: u64,
    /// Entries written by group commits.
    pub commit_entries: u64,
    /// Storage writes of group commits.
    pub commit_writes: u64,
}

/// What `GET /dashboard/history` answers.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryBody {
    /// Milliseconds between samples.
    pub interval_ms: u64,
    /// The most samples kept.
    pub capacity: usize,
    /// Samples taken since start; pass it back as `after` to get only newer ones.
    pub next: u64,
    /// Counters since start as of the newest sample.
    pub totals: HistoryTotals,
    /// Oldest first.
    pub samples: Vec<HistorySample>,
}

/// The counters and gauges one sample is computed from (see [`Reading::parse`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// `readstate_http_requests_total` summed: every status, then 2xx, 4xx, 5xx.
    pub requests: [f64; 4],
    /// `readstate_http_request_duration_seconds_bucket` summed over routes:
    /// `(le, cumulative count)`, ascending, `+Inf` last.
    pub latency: Vec<(f64, f64)>,
    /// `readstate_http_in_flight_requests`.
    pub in_flight: f64,
    /// `_count` of `readstate_commit_duration_seconds`.
    pub commits: f64,
    /// `_sum` of `readstate_commit_batch_entries`.
    pub commit_entries: f64,
    /// `_sum` of `readstate_commit_batch_writes`.
    pub commit_writes: f64,
}

impl Reading {
    /// Reads the series a sample needs from the Prometheus text format.
    pub fn parse(text: &str) -> Self {
        let mut reading = Self::default();
        let bucket = format!("{HTTP_DURATION}_bucket");
        let commits = format!("{COMMIT_DURATION}_count");
        let entries = format!("{COMMIT_BATCH_ENTRIES}_sum");
        let writes = format!("{COMMIT_BATCH_WRITES}_sum");
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels),
                None => (series, ""),
            };
            if name == HTTP_REQUESTS {
                reading.requests[0] += value;
                let class = match label(labels, "status").and_then(|s| s.chars().next()) {
                    Some('2') => 1,
                    Some('4') => 2,
                    Some('5') => 3,
                    _ => continue,
                };
                reading.requests[class] += value;
            } else if name == bucket {
                let Some(le) = label(labels, "le").and_then(|le| match le {
                    "+Inf" => Some(f64::INFINITY),
                    le => le.parse::<f64>().ok(),
                }) else {
                    continue;
                };
                match reading.latency.iter_mut().find(|(l, _)| *l == le) {
                    Some((_, count)) => *count += value,
                    None => reading.latency.push((le, value)),
                }
            } else if name == HTTP_IN_FLIGHT {
                reading.in_flight += value;
            } else if name == commits {
                reading.commits += value;
            } else if name == entries {
                reading.commit_entries += value;
            } else if name == writes {
                reading.commit_writes += value;
            }
        }
        reading.latency.sort_by(|a, b| a.0.total_cmp(&b.0));
        reading
    }
}

/// The value of `key` in a rendered label set (`a="x",b="y"}`); values here (status
/// codes, bucket bounds) have no escapes.
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    let mut rest = labels;
    while let Some(at) = rest.find(key) {
        let after = &rest[at + key.len()..];
        let boundary = at == 0 || matches!(rest.as_bytes()[at - 1], b',' | b'{');
        if boundary && let Some(value) = after.strip_prefix("=\"") {
            return value.find('"').map(|end| &value[..end]);
        }
        rest = after;
    }
    None
}

/// The `q` quantile of the observations between two cumulative bucket lists (as
/// Prometheus' `histogram_quantile`: linear within the bucket; the largest finite
/// bound when it falls in `+Inf`). `None` when nothing was observed.
pub fn quantile(q: f64, now: &[(f64, f64)], before: &[(f64, f64)]) -> Option<f64> {
    let deltas: Vec<(f64, f64)> = now
        .iter()
        .map(|&(le, count)| {
            let old = before
                .iter()
                .find(|(l, _)| *l == le)
                .map_or(0.0, |(_, c)| *c);
            (le, (count - old).max(0.0))
        })
        .collect();
    let total = deltas.last().map_or(0.0, |(_, c)| *c);
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, cumulative) in &deltas {
        if cumulative >= rank && cumulative > below {
            if le.is_infinite() {
                return Some(lower);
            }
            return Some(lower + (le - lower) * (rank - below) / (cumulative - below));
        }
        (lower, below) = (le, cumulative);
    }
    Some(lower)
}

/// Three decimals are plenty for a chart and keep the JSON short.
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[derive(Debug)]
struct Ring {
    samples: VecDeque<HistorySample>,
    taken: u64,
    last: Option<(Instant, Reading)>,
    totals: HistoryTotals,
}

/// The dashboard history: the last [`HISTORY_LEN`] samples, oldest first.
#[derive(Debug)]
pub struct History {
    ring: Mutex<Ring>,
    interval: Duration,
}

impl History {
    /// An empty history sampled every `interval` (only reported to clients).
    pub fn new(interval: Duration) -> Self {
        Self {
            ring: Mutex::new(Ring {
                samples: VecDeque::with_capacity(HISTORY_LEN),
                taken: 0,
                last: None,
                totals: HistoryTotals::default(),
            }),
            interval,
        }
    }

    /// Adds the sample between the previous reading and `reading` (the first reading
    /// only sets the baseline). `t` is Unix seconds; the gauges are as of now.
    pub fn record(
        &self,
        at: Instant,
        t: f64,
        reading: Reading,
        cache_bytes: u64,
        rss_bytes: Option<u64>,
    ) {
        let mut ring = self.ring.lock();
        ring.totals = HistoryTotals {
            requests: reading.requests[0] as u64,
            commits: reading.commits as u64,
            commit_entries: reading.commit_entries as u64,
            commit_writes: reading.commit_writes as u64,
        };
        let sample = ring.last.as_ref().and_then(|(then, before)| {
            let dt = at.saturating_duration_since(*then).as_secs_f64();
            if dt <= 0.0 {
                return None;
            }
            let per_s = |now: f64, old: f64| round3((now - old).max(0.0) / dt);
            let ms = |q| quantile(q, &reading.latency, &before.latency).map(|s| round3(s * 1000.0));
            Some(HistorySample {
                t: round3(t),
                rps: per_s(reading.requests[0], before.requests[0]),
                rps_2xx: per_s(reading.requests[1], before.requests[1]),
                rps_4xx: per_s(reading.requests[2], before.requests[2]),
                rps_5xx: per_s(reading.requests[3], before.requests[3]),
                p50_ms: ms(QUANTILES[0]),
                p99_ms: ms(QUANTILES[1]),
                in_flight: reading.in_flight,
                cache_bytes,
                rss_bytes,
                commits_per_s: per_s(reading.commits, before.commits),
            })
        });
        if let Some(sample) = sample {
            if ring.samples.len() == HISTORY_LEN {
                ring.samples.pop_front();
            }
            ring.samples.push_back(sample);
            ring.taken += 1;
        }
        ring.last = Some((at, reading));
    }

    /// The samples taken after the first `after` (all kept ones without `after`, or
    /// when `after` is ahead, as after a restart).
    pub fn body(&self, after: Option<u64>) -> HistoryBody {
        let ring = self.ring.lock();
        let newer = match after {
            Some(after) if after <= ring.taken => {
                usize::try_from(ring.taken - after).unwrap_or(usize::MAX)
            }
            _ => ring.samples.len(),
        };
        let skip = ring.samples.len().saturating_sub(newer);
        HistoryBody {
            interval_ms: u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX),
            capacity: HISTORY_LEN,
            next: ring.taken,
            totals: ring.totals,
            samples: ring.samples.iter().skip(skip).copied().collect(),
        }
    }
}

/// Starts the dashboard sampler on `tracker`: every `interval` until `cancel`, reads
/// `/metrics` (as a scrape would) and the cache, and adds a sample to the returned
/// history. Constant work per tick; the history is bounded.
pub fn spawn_history(
    service: Arc<crate::service::Service>,
    handle: PrometheusHandle,
    interval: Duration,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> Arc<History> {
    let history = Arc::new(History::new(interval));
    let ring = history.clone();
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = cancel.cancelled() => break,
            }
            let t = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            let reading = Reading::parse(&handle.render());
            let cache_bytes = service.stats().cache.bytes;
            ring.record(Instant::now(), t, reading, cache_bytes, resident_bytes());
        }
    });
    history
}

#[cfg(test)]
mod tests {
    use super::*;

    const INF: f64 = f64::INFINITY;

    #[test]
    fn every_series_is_exported_before_anything_is_counted() {
        let handle = install().expect("the recorder installs");
        let text = handle.render();
        for name in [
            HTTP_IN_FLIGHT,
            HTTP_SOFT_LIMIT,
            HTTP_SHED,
            HTTP_CONNECTIONS,
            HTTP_CONNECTIONS_CLOSED,
            AUTH_DENIED,
            RATE_LIMITED,
            READY,
            CACHE_BYTES,
            CACHE_BUDGET,
            CACHE_USERS,
            CACHE_READ_STATES,
            CACHE_CHANNELS,
            CACHE_DIRTY,
            CACHE_EVICTIONS,
            CACHE_LOADS,
            CACHE_INVALIDATIONS,
            COMMIT_QUEUE,
            COMMIT_BACKPRESSURE,
            STORAGE_ERRORS,
            PROCESS_RSS,
            ALLOCATED,
            EVENT_SUBSCRIBERS,
            EVENTS_SENT,
            EVENT_RESYNCS,
            NATS_EVENTS,
            NATS_PENDING,
            NATS_ACK_PENDING,
            NATS_PUBLISHED,
            CHECKPOINT_URGENT,
            CHECKPOINT_UNPACED,
        ] {
            assert!(
                text.lines().any(|l| l
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with([' ', '{']))),
                "{name} missing:\n{text}"
            );
        }
        for name in [COMMIT_BATCH_ENTRIES, COMMIT_BATCH_WRITES, COMMIT_DURATION] {
            assert!(text.contains(&format!("{name}_count")), "{name} missing");
        }
        for (name, label) in [
            (STORAGE_ERRORS, "operation=\"commit\""),
            (NATS_EVENTS, "outcome=\"poison\""),
            (NATS_PUBLISHED, "outcome=\"dropped\""),
        ] {
            assert!(
                text.contains(&format!("{name}{{{label}}}")),
                "{name}{{{label}}}"
            );
        }
    }

    #[test]
    fn route_series_are_registered_with_the_middlewares_labels() {
        let handle = install().expect("the recorder installs");
        init_route_series([("/test/route/{id}", "get", vec!["200".to_owned()])]);
        let text = handle.render();
        assert!(
            text.contains(
                "readstate_http_requests_total{route=\"/test/route/{id}\",method=\"GET\",status=\"200\"} 0"
            ),
            "{text}"
        );
        assert!(text.contains(
            "readstate_http_request_duration_seconds_count{route=\"/test/route/{id}\",method=\"GET\"} 0"
        ));
    }

    #[test]
    fn quantiles_interpolate_within_buckets_like_prometheus() {
        let now = [(0.001, 0.0), (0.01, 50.0), (0.1, 100.0), (INF, 100.0)];
        let p50 = quantile(0.5, &now, &[]).expect("observations");
        assert!((p50 - 0.01).abs() < 1e-12, "{p50}");
        let p99 = quantile(0.99, &now, &[]).expect("observations");
        assert!((p99 - (0.01 + 0.09 * 49.0 / 50.0)).abs() < 1e-12, "{p99}");
        // Only what was observed since `before` counts.
        let before = [(0.001, 0.0), (0.01, 50.0), (0.1, 50.0), (INF, 50.0)];
        let p50 = quantile(0.5, &now, &before).expect("observations");
        assert!((p50 - 0.055).abs() < 1e-12, "{p50}");
        // Nothing new: no quantile. Beyond the last bound: the last finite bound.
        assert_eq!(quantile(0.5, &now, &now), None);
        assert_eq!(quantile(0.99, &[(0.1, 0.0), (INF, 10.0)], &[]), Some(0.1));
    }

    #[test]
    fn a_reading_sums_the_series_of_the_text_format() {
        let text = "\
# TYPE readstate_http_requests_total counter
readstate_http_requests_total{route=\"/a\",method=\"GET\",status=\"200\"} 7
readstate_http_requests_total{route=\"/a\",method=\"GET\",status=\"404\"} 2
readstate_http_requests_total{route=\"/b\",method=\"POST\",status=\"503\"} 1
readstate_http_requests_total{route=\"/b\",method=\"POST\",status=\"301\"} 1
readstate_http_request_duration_seconds_bucket{route=\"/a\",method=\"GET\",le=\"0.001\"} 3
readstate_http_request_duration_seconds_bucket{route=\"/a\",method=\"GET\",le=\"+Inf\"} 9
readstate_http_request_duration_seconds_bucket{route=\"/b\",method=\"POST\",le=\"0.001\"} 1
readstate_http_request_duration_seconds_bucket{route=\"/b\",method=\"POST\",le=\"+Inf\"} 2
readstate_http_request_duration_seconds_sum{route=\"/b\",method=\"POST\"} 0.5
readstate_http_in_flight_requests 4
readstate_commit_duration_seconds_count 12
readstate_commit_batch_entries_sum 30
readstate_commit_batch_writes_sum 20
readstate_commit_batch_entries_count 12
";
        let reading = Reading::parse(text);
        assert_eq!(reading.requests, [11.0, 7.0, 2.0, 1.0]);
        assert_eq!(reading.latency, vec![(0.001, 4.0), (INF, 11.0)]);
        assert_eq!(reading.in_flight, 4.0);
        assert_eq!(
            (
                reading.commits,
                reading.commit_entries,
                reading.commit_writes
            ),
            (12.0, 30.0, 20.0)
        );
    }

    #[test]
    fn the_label_parser_finds_whole_keys_only() {
        let labels = "xstatus=\"1\",status=\"200\",le=\"+Inf\"}";
        assert_eq!(label(labels, "status"), Some("200"));
        assert_eq!(label(labels, "le"), Some("+Inf"));
        assert_eq!(label(labels, "route"), None);
    }

    fn reading(requests: f64, commits: f64) -> Reading {
        Reading {
            requests: [requests, requests, 0.0, 0.0],
            commits,
            ..Reading::default()
        }
    }

    #[test]
    fn the_history_is_a_bounded_ring_of_rates() {
        let history = History::new(HISTORY_INTERVAL);
        let start = Instant::now();
        history.record(start, 0.0, reading(0.0, 0.0), 1, Some(2));
        assert!(
            history.body(None).samples.is_empty(),
            "the first reading is the baseline"
        );
        for i in 1..=(HISTORY_LEN as u64 + 10) {
            let at = start + Duration::from_secs(2 * i);
            history.record(
                at,
                2.0 * i as f64,
                reading(10.0 * i as f64, i as f64),
                1,
                Some(2),
            );
        }
        let body = history.body(None);
        assert_eq!(body.samples.len(), HISTORY_LEN);
        assert_eq!(body.next, HISTORY_LEN as u64 + 10);
        assert_eq!(body.capacity, HISTORY_LEN);
        assert_eq!(body.interval_ms, 2000);
        let last = body.samples.last().expect("samples");
        assert_eq!((last.rps, last.rps_2xx, last.rps_4xx), (5.0, 5.0, 0.0));
        assert_eq!(last.commits_per_s, 0.5);
        assert_eq!(last.p50_ms, None, "no latency buckets, no quantile");
        assert_eq!(body.samples[0].t, 22.0, "the oldest ones were dropped");
        assert_eq!(body.totals.requests, 10 * (HISTORY_LEN as u64 + 10));

        let newer = history.body(Some(body.next - 3));
        assert_eq!(newer.samples, body.samples[HISTORY_LEN - 3..].to_vec());
        assert!(history.body(Some(body.next)).samples.is_empty());
        assert_eq!(
            history.body(Some(body.next + 1)).samples.len(),
            HISTORY_LEN,
            "a cursor from before a restart gets everything"
        );
        assert_eq!(history.body(Some(0)).samples.len(), HISTORY_LEN);
    }
}
