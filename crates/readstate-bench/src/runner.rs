//! Runs one measurement phase against one target: `connections` workers, each with
//! its own client (an HTTP connection, a share of Redis connections or the pool), a
//! closed loop (saturation) or an open loop at a fixed rate, HDR histograms per
//! worker, and a monitor that every second merges the workers' interval figures,
//! samples the server's memory and prints a row of the live table.
//!
//! Open loop and coordinated omission: each worker owns the time slots
//! `start + offset + i · connections / rate`. When a slot comes while the worker
//! is still busy with an earlier request, the request is timed from its slot, not
//! from when it could be sent, so a stalled server is charged for every request it
//! made wait (the correction of wrk2 / HdrHistogram). When the worker was idle, it
//! sleeps until the slot and times from the moment it sent: tokio's timer has 1 ms
//! granularity, and charging that to the server would swamp sub-millisecond
//! latencies. Requests still unsent when the phase is cut off are recorded with the
//! time they had waited, never dropped.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::future::try_join_all;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;

use super::client::HttpClient;
use super::cpu::CpuProbe;
use super::dataset::mix_seed;
use super::grpc::GrpcClient;
use super::mix::OpKind;
use super::pg::PgDirect;
use super::redis::RedisTarget;
use super::server::{rss_of_pid, scrape_metric};
use super::workload::{Op, Workload};

/// Histogram range: 1 µs to 10 minutes.
const HIST_MAX_US: u64 = 600_000_000;
/// How long past its end a phase waits for requests in flight before cutting off.
const CUTOFF_GRACE: Duration = Duration::from_secs(5);
/// Workers per Redis connection (each connection is multiplexed, pipelining its
/// workers' requests as a real client does).
const WORKERS_PER_REDIS_CONNECTION: usize = 16;

/// How the bench reaches a target.
#[derive(Debug, Clone)]
pub enum Connector {
    /// Over HTTP/1.1, one connection per worker.
    Http(SocketAddr),
    /// Over gRPC (HTTP/2), one connection per worker.
    Grpc(SocketAddr),
    /// Redis scripts; one multiplexed connection per 16 workers.
    Redis {
        url: String,
        prefix: String,
        unread_cap: u32,
        mention_cap: u32,
    },
    /// One SQL statement per operation over a pool shared by all workers.
    Postgres(PgDirect),
}

/// One worker's handle on the target.
#[derive(Debug)]
pub enum Client {
    /// An HTTP connection.
    Http(HttpClient),
    /// A gRPC connection.
    Grpc(GrpcClient),
    /// A (shared) Redis connection.
    Redis(RedisTarget),
    /// The shared pool.
    Postgres(PgDirect),
}

impl Client {
    /// Runs one operation.
    ///
    /// # Errors
    /// Whatever the target answered instead of success.
    pub async fn execute(&mut self, op: &Op) -> anyhow::Result<()> {
        match self {
            Client::Http(http) => http.execute(op).await,
            Client::Grpc(grpc) => grpc.execute(op).await,
            Client::Postgres(pg) => pg.execute(op).await,
            Client::Redis(redis) => match *op {
                Op::Ack {
                    user,
                    channel,
                    message,
                } => redis.ack(user, channel, message).await,
                Op::Unread {
                    user,
                    channel,
                    message,
                } => redis.mark_unread(user, channel, message).await,
                Op::Message {
                    channel,
                    message,
                    author,
                    ..
                } => {
                    redis
                        .message_created(channel, message, author, op.mentions())
                        .await
                }
                Op::ReadStates { user } => redis.read_states(user).await.map(|states| {
                    std::hint::black_box(states);
                }),
                Op::Summary { user } => redis.summary(user).await.map(|summary| {
                    std::hint::black_box(summary);
                }),
            },
        }
    }
}

impl Connector {
    /// Opens `workers` clients.
    ///
    /// # Errors
    /// When the target cannot be reached.
    pub async fn clients(&self, workers: usize) -> anyhow::Result<Vec<Client>> {
        match self {
            Connector::Http(addr) => {
                let conns = try_join_all((0..workers).map(|_| HttpClient::connect(*addr))).await?;
                Ok(conns.into_iter().map(Client::Http).collect())
            }
            Connector::Grpc(addr) => {
                let conns = try_join_all((0..workers).map(|_| GrpcClient::connect(*addr))).await?;
                Ok(conns.into_iter().map(Client::Grpc).collect())
            }
            Connector::Redis {
                url,
                prefix,
                unread_cap,
                mention_cap,
            } => {
                let n = workers.div_ceil(WORKERS_PER_REDIS_CONNECTION).max(1);
                let conns = try_join_all(
                    (0..n).map(|_| RedisTarget::connect(url, prefix, *unread_cap, *mention_cap)),
                )
                .await?;
                Ok((0..workers)
                    .map(|w| Client::Redis(conns[w % n].clone()))
                    .collect())
            }
            Connector::Postgres(pg) => {
                pg.warm(workers).await?;
                Ok((0..workers).map(|_| Client::Postgres(pg.clone())).collect())
            }
        }
    }
}

/// Where the server's memory is read from, once a second.
#[derive(Debug, Clone)]
pub enum MemoryProbe {
    /// `VmRSS` of a local process.
    Pid(u32),
    /// A gauge of a server's `/metrics`: `readstate_process_resident_bytes`, or
    /// `readstate_cache_bytes` (the bytes its cache counts against
    /// `cache.max_bytes`, not a resident set).
    Metrics(SocketAddr, &'static str),
    /// Redis `INFO memory` `used_memory`.
    Redis(RedisTarget),
    /// Redis `INFO memory` `used_memory_rss`.
    RedisRss(RedisTarget),
    /// Not measured.
    None,
}

impl MemoryProbe {
    /// The memory in use now, if known.
    pub async fn sample(&self) -> Option<u64> {
        match self {
            MemoryProbe::Pid(pid) => rss_of_pid(*pid),
            MemoryProbe::Metrics(addr, gauge) => {
                let mut client = HttpClient::connect(*addr).await.ok()?;
                scrape_metric(&mut client, gauge).await.map(|v| v as u64)
            }
            MemoryProbe::Redis(redis) => redis.used_memory().await.ok(),
            MemoryProbe::RedisRss(redis) => redis.used_memory_rss().await.ok(),
            MemoryProbe::None => None,
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct PhaseSpec {
    /// `warmup`, `saturation`, `fixed_rate` or `soak`.
    pub name: &'static str,
    /// How long.
    pub duration: Duration,
    /// `None`: closed loop; `Some(r)`: open loop at r operations per second.
    pub rate: Option<f64>,
    /// Workers (connections).
    pub connections: usize,
    /// Seeds each worker's operation stream (with the worker's index).
    pub seed: u64,
}

/// One second of a phase.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    /// Seconds since the phase started.
    pub t_s: f64,
    /// Operations answered in that second (successes and failures).
    pub ops_per_sec: f64,
    /// Failures in that second.
    pub errors: u64,
    /// Latency percentiles of that second (null when nothing completed).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// The server's memory at the end of that second (RSS, or Redis `used_memory`).
    pub memory_bytes: Option<u64>,
}

/// Per-kind counts and latency.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OpFigures {
    /// Operations of this kind answered.
    pub count: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// The result of a phase.
#[derive(Debug)]
pub struct PhaseOutcome {
    /// The phase's length in seconds.
    pub seconds: f64,
    /// Successful operations.
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    /// Successful operations per second.
    pub ops_per_sec: f64,
    /// The open loop's rate, if any.
    pub target_rate: Option<f64>,
    /// The server's CPU time (user + system) from just before the workers started
    /// until the last one finished, in µs; `None` when not measured.
    pub server_cpu_us: Option<u64>,
    /// Latency of every operation, in microseconds.
    pub latency: Histogram<u64>,
    /// Per kind, in [`OpKind::ALL`] order.
    pub per_op: Vec<(OpKind, OpFigures)>,
    /// One row per second.
    pub samples: Vec<Sample>,
    /// The first failure, to explain errors.
    pub first_error: Option<String>,
}

/// Microseconds to milliseconds.
pub fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn new_histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, sigfig)
        .expect("1 ≤ low, high ≥ 2·low and sigfig ≤ 5 are valid histogram bounds")
}

/// What one worker records; locked by the worker per operation and by the monitor
/// once a second (so uncontended almost always).
struct Recorder {
    total: Histogram<u64>,
    interval: Histogram<u64>,
    per_op: Vec<Histogram<u64>>,
    ops: u64,
    errors: u64,
    interval_errors: u64,
    first_error: Option<String>,
}

impl Recorder {
    fn new() -> Self {
        Self {
            total: new_histogram(3),
            interval: new_histogram(3),
            per_op: (0..OpKind::ALL.len()).map(|_| new_histogram(2)).collect(),
            ops: 0,
            errors: 0,
            interval_errors: 0,
            first_error: None,
        }
    }

    fn record(&mut self, kind: OpKind, latency: Duration, error: Option<anyhow::Error>) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.total.saturating_record(us);
        self.interval.saturating_record(us);
        self.per_op[kind.index()].saturating_record(us);
        match error {
            None => self.ops += 1,
            Some(e) => {
                self.errors += 1;
                self.interval_errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(format!("{e:#}"));
                }
            }
        }
    }
}

fn lock(recorder: &Mutex<Recorder>) -> MutexGuard<'_, Recorder> {
    // A worker that panicked mid-record leaves figures that are still counts.
    recorder
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Prints the live table: a progress bar per phase with a row per second above it
/// on a terminal; one summary line per phase otherwise.
#[derive(Debug, Clone)]
pub struct Live {
    /// The target's name, first column of every row.
    pub target: String,
}

impl Live {
    /// The table's header.
    pub fn header() -> String {
        format!(
            "{:<16} {:<11} {:>5} {:>10} {:>7} {:>9} {:>9} {:>9} {:>10}",
            "target", "phase", "t s", "ops/s", "errors", "p50 ms", "p99 ms", "max ms", "memory MB"
        )
    }

    fn row(&self, phase: &str, s: &Sample) -> String {
        let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
        format!(
            "{:<16} {:<11} {:>5.0} {:>10.0} {:>7} {:>9} {:>9} {:>9} {:>10}",
            self.target,
            phase,
            s.t_s,
            s.ops_per_sec,
            s.errors,
            opt(s.p50_ms),
            opt(s.p99_ms),
            opt(s.max_ms),
            s.memory_bytes
                .map_or("-".to_owned(), |b| format!("{:.1}", b as f64 / 1e6)),
        )
    }
}

/// Runs one phase and returns its figures.
///
/// # Errors
/// When the clients cannot connect.
pub async fn run_phase(
    spec: &PhaseSpec,
    connector: &Connector,
    workload: &Arc<Workload>,
    memory: &MemoryProbe,
    cpu: &CpuProbe,
    live: &Live,
) -> anyhow::Result<PhaseOutcome> {
    let workers = spec.connections.max(1);
    let clients = connector
        .clients(workers)
        .await
        .with_context(|| format!("while connecting {workers} clients"))?;
    let recorders: Vec<Arc<Mutex<Recorder>>> = (0..workers)
        .map(|_| Arc::new(Mutex::new(Recorder::new())))
        .collect();
    // After the clients connected, so connection set-up is not charged to the phase.
    let cpu_before = cpu.sample_us();
    let start = Instant::now() + Duration::from_millis(20);
    let end = start + spec.duration;
    let cutoff = end + CUTOFF_GRACE;
    let mut handles = Vec::with_capacity(workers);
    for (worker, client) in clients.into_iter().enumerate() {
        let recorder = Arc::clone(&recorders[worker]);
        let workload = Arc::clone(workload);
        let rng = Xoshiro256PlusPlus::seed_from_u64(mix_seed(spec.seed, worker as u64));
        let schedule = spec.rate.map(|rate| {
            let interval = workers as f64 / rate.max(1e-3);
            (interval * worker as f64 / workers as f64, interval)
        });
        handles.push(tokio::spawn(async move {
            match schedule {
                None => closed_loop(client, rng, &workload, &recorder, start, end, cutoff).await,
                Some((offset, interval)) => {
                    open_loop(
                        client, rng, &workload, &recorder, start, end, cutoff, offset, interval,
                    )
                    .await;
                }
            }
        }));
    }

    let bar = progress_bar(spec, live);
    let mut samples = Vec::new();
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::from_std(start + Duration::from_secs(1)),
        Duration::from_secs(1),
    );
    let mut last_tick = start;
    let mut interval = new_histogram(3);
    let mut seen_total = 0_u64;
    loop {
        let tick = ticker.tick().await.into_std();
        let mut errors = 0;
        let mut total = 0;
        interval.reset();
        for recorder in &recorders {
            let mut r = lock(recorder);
            let _ = interval.add(&r.interval);
            r.interval.reset();
            errors += r.interval_errors;
            r.interval_errors = 0;
            total += r.ops + r.errors;
        }
        let elapsed = tick.duration_since(last_tick).as_secs_f64().max(1e-3);
        last_tick = tick;
        let done_in_tick = total - seen_total;
        seen_total = total;
        let has = !interval.is_empty();
        let sample = Sample {
            t_s: tick.duration_since(start).as_secs_f64(),
            ops_per_sec: done_in_tick as f64 / elapsed,
            errors,
            p50_ms: has.then(|| ms(interval.value_at_quantile(0.5))),
            p99_ms: has.then(|| ms(interval.value_at_quantile(0.99))),
            max_ms: has.then(|| ms(interval.max())),
            memory_bytes: memory.sample().await,
        };
        bar.println(live.row(spec.name, &sample));
        bar.set_position(sample.t_s as u64);
        let past_end = tick >= end;
        samples.push(sample);
        if past_end {
            break;
        }
    }
    bar.finish_and_clear();
    for handle in handles {
        handle.await.context("a load worker panicked")?;
    }
    let cpu_after = cpu.sample_us();
    let server_cpu_us = match (cpu_before, cpu_after) {
        (Some(before), Some(after)) => after.checked_sub(before),
        _ => None,
    };

    let mut latency = new_histogram(3);
    let mut per_op: Vec<Histogram<u64>> =
        (0..OpKind::ALL.len()).map(|_| new_histogram(2)).collect();
    let (mut ops, mut errors, mut first_error) = (0, 0, None);
    for recorder in &recorders {
        let r = lock(recorder);
        let _ = latency.add(&r.total);
        for (sum, h) in per_op.iter_mut().zip(&r.per_op) {
            let _ = sum.add(h);
        }
        ops += r.ops;
        errors += r.errors;
        if first_error.is_none() {
            first_error.clone_from(&r.first_error);
        }
    }
    let seconds = spec.duration.as_secs_f64();
    let outcome = PhaseOutcome {
        seconds,
        ops,
        errors,
        ops_per_sec: ops as f64 / seconds,
        target_rate: spec.rate,
        server_cpu_us,
        per_op: OpKind::ALL
            .iter()
            .zip(&per_op)
            .map(|(&kind, h)| {
                let has = !h.is_empty();
                (
                    kind,
                    OpFigures {
                        count: h.len(),
                        p50_ms: has.then(|| ms(h.value_at_quantile(0.5))),
                        p99_ms: has.then(|| ms(h.value_at_quantile(0.99))),
                    },
                )
            })
            .collect(),
        latency,
        samples,
        first_error,
    };
    if bar.is_hidden() {
        eprintln!("{}", summary_line(live, spec, &outcome));
    } else {
        bar.println(summary_line(live, spec, &outcome));
    }
    Ok(outcome)
}

fn progress_bar(spec: &PhaseSpec, live: &Live) -> ProgressBar {
    let bar = ProgressBar::new(spec.duration.as_secs().max(1));
    let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} s")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(format!("{} {}", live.target, spec.name));
    bar
}

fn summary_line(live: &Live, spec: &PhaseSpec, o: &PhaseOutcome) -> String {
    let has = !o.latency.is_empty();
    let q = |x: f64| {
        if has {
            format!("{:.3}", ms(o.latency.value_at_quantile(x)))
        } else {
            "-".to_owned()
        }
    };
    let rate = spec
        .rate
        .map_or(String::new(), |r| format!(" (target {r:.0}/s)"));
    let cpu = o
        .server_cpu_us
        .filter(|_| o.ops > 0)
        .map_or(String::new(), |us| {
            format!(", server CPU {:.1} µs/op", us as f64 / o.ops as f64)
        });
    format!(
        "{} {}: {:.0} ops/s{rate}{cpu}, {} errors, p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms",
        live.target,
        spec.name,
        o.ops_per_sec,
        o.errors,
        q(0.5),
        q(0.99),
        q(0.999),
        if has {
            format!("{:.3}", ms(o.latency.max()))
        } else {
            "-".to_owned()
        },
    )
}

async fn closed_loop(
    mut client: Client,
    mut rng: Xoshiro256PlusPlus,
    workload: &Workload,
    recorder: &Mutex<Recorder>,
    start: Instant,
    end: Instant,
    cutoff: Instant,
) {
    tokio::time::sleep_until(start.into()).await;
    loop {
        let op = workload.next_op(&mut rng);
        let sent = Instant::now();
        if sent >= end {
            return;
        }
        let result = tokio::time::timeout_at(cutoff.into(), client.execute(&op)).await;
        let done = Instant::now();
        match result {
            // Answers after the end are not counted: the rate is over [start, end].
            Ok(_) if done > end => return,
            Ok(result) => lock(recorder).record(op.kind(), done - sent, result.err()),
            Err(_) => {
                lock(recorder).record(
                    op.kind(),
                    done - sent,
                    Some(anyhow::anyhow!(
                        "no answer within {} s",
                        (cutoff - sent).as_secs()
                    )),
                );
                return;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn open_loop(
    mut client: Client,
    mut rng: Xoshiro256PlusPlus,
    workload: &Workload,
    recorder: &Mutex<Recorder>,
    start: Instant,
    end: Instant,
    cutoff: Instant,
    offset_s: f64,
    interval_s: f64,
) {
    let slot = |i: u64| start + Duration::from_secs_f64(offset_s + i as f64 * interval_s);
    let mut i = 0_u64;
    loop {
        let intended = slot(i);
        if intended >= end {
            return;
        }
        let now = Instant::now();
        let origin = if now < intended {
            tokio::time::sleep_until(intended.into()).await;
            Instant::now()
        } else {
            // Behind schedule: the wait since the slot is the server's doing.
            intended
        };
        let op = workload.next_op(&mut rng);
        match tokio::time::timeout_at(cutoff.into(), client.execute(&op)).await {
            Ok(result) => lock(recorder).record(op.kind(), origin.elapsed(), result.err()),
            Err(_) => {
                // Cut off: this request and every slot not yet served waited at least
                // until now; record that rather than dropping them.
                let now = Instant::now();
                let mut r = lock(recorder);
                r.record(op.kind(), now - origin, Some(anyhow::anyhow!("cut off")));
                i += 1;
                while slot(i) < end {
                    let kind = workload.next_op(&mut rng).kind();
                    r.record(kind, now - slot(i), Some(anyhow::anyhow!("never sent")));
                    i += 1;
                }
                return;
            }
        }
        i += 1;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_recorder_counts_failures_apart_and_keeps_the_first_reason() {
        let mut r = Recorder::new();

        r.record(OpKind::Ack, Duration::from_micros(250), None);
        r.record(
            OpKind::Ack,
            Duration::from_millis(3),
            Some(anyhow::anyhow!("first")),
        );
        r.record(
            OpKind::Summary,
            Duration::ZERO,
            Some(anyhow::anyhow!("second")),
        );

        assert_eq!((r.ops, r.errors), (1, 2));
        assert_eq!(r.first_error.as_deref(), Some("first"));
        assert_eq!(r.total.len(), 3);
        assert_eq!(r.per_op[OpKind::Ack.index()].len(), 2);
        assert!(r.total.equivalent(r.total.max(), 3_000));
    }
}
