//! Metric names, descriptions and the few functions that record them, so that a log
//! line and its counter never drift apart. Labels are bounded (route templates,
//! outcomes), never user or channel ids.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS: &str = "readstate_http_requests_total";
pub const HTTP_DURATION: &str = "readstate_http_request_duration_seconds";
pub const HTTP_IN_FLIGHT: &str = "readstate_http_in_flight_requests";
pub const HTTP_SOFT_LIMIT: &str = "readstate_http_soft_limit_exceeded_total";
pub const HTTP_SHED: &str = "readstate_http_shed_total";
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
                .map_err(|e| e.to_string())?;
            let handle = builder.install_recorder().map_err(|e| e.to_string())?;
            describe();
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

/// A group commit finished.
pub fn commit_done(entries: usize, writes: usize, took: Duration) {
    histogram!(COMMIT_BATCH_ENTRIES).record(entries as f64);
    histogram!(COMMIT_BATCH_WRITES).record(writes as f64);
    histogram!(COMMIT_DURATION).record(took.as_secs_f64());
}

/// A storage operation failed (the caller logs it).
pub fn storage_error(operation: &'static str) {
    counter!(STORAGE_ERRORS, "operation" => operation).increment(1);
}

/// A write was refused because the commit queue was full.
pub fn backpressure() {
    counter!(COMMIT_BACKPRESSURE).increment(1);
    tracing::debug!("commit queue full; answering 503");
}

/// A cache miss was loaded from storage.
pub fn cache_load(kind: &'static str) {
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

/// The number of open change subscriptions changed.
pub fn subscribers(count: usize) {
    gauge!(EVENT_SUBSCRIBERS).set(count as f64);
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
    counter!(NATS_EVENTS, "outcome" => outcome).increment(n as u64);
}

/// The consumer's backlog, from its info.
pub fn nats_lag(pending: u64, ack_pending: usize) {
    gauge!(NATS_PENDING).set(pending as f64);
    gauge!(NATS_ACK_PENDING).set(ack_pending as f64);
}

/// A change was published to NATS (`published`) or dropped (`dropped`).
pub fn nats_published(outcome: &'static str) {
    counter!(NATS_PUBLISHED, "outcome" => outcome).increment(1);
}

/// Gauges sampled on each scrape.
pub fn sample(stats: &crate::cache::CacheStats, budget: u64, queued: usize) {
    gauge!(CACHE_BYTES).set(stats.bytes as f64);
    gauge!(CACHE_BUDGET).set(budget as f64);
    gauge!(CACHE_USERS).set(stats.users as f64);
    gauge!(CACHE_READ_STATES).set(stats.read_states as f64);
    gauge!(CACHE_CHANNELS).set(stats.channels as f64);
    gauge!(CACHE_DIRTY).set(stats.dirty_entries as f64);
    counter!(CACHE_EVICTIONS).absolute(stats.evictions);
    gauge!(COMMIT_QUEUE).set(queued as f64);
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
