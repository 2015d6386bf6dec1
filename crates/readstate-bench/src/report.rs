//! `bench-results.json`: every figure of a run, the machine, the git commit and the
//! parameters, in a shape scripts can compare across runs
//! (`targets.<name>.{ops_per_sec, cpu_us_per_op, p50_ms, p99_ms, p999_ms, max_ms,
//! bytes_per_read_state, rss_bytes_per_read_state}`; null where a figure does not
//! apply, `error` where a target was not measured). Also the final terminal table
//! and the ratios.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::ser::SerializeMap;

use super::runner::{OpFigures, PhaseOutcome, Sample, ms};

/// The targets, in the order they run and are shown.
pub const TARGET_NAMES: [&str; 6] = [
    "readstate",
    "floor",
    "redis",
    "redis-aof-always",
    "redis-aof-everysec",
    "postgres-direct",
];

/// The whole run.
#[derive(Debug, Serialize)]
pub struct Results {
    /// `readstate bench`.
    pub tool: &'static str,
    /// The crate version of the binary that ran.
    pub version: &'static str,
    /// Unix time (s) the run started and finished.
    pub started_at_unix_s: u64,
    pub finished_at_unix_s: u64,
    /// `git rev-parse HEAD` of the source tree, when it can be found.
    pub git_commit: Option<String>,
    pub machine: Machine,
    pub params: Params,
    /// Per target, in run order.
    #[serde(serialize_with = "in_order")]
    pub targets: Vec<(String, TargetResult)>,
    /// `readstate/<peer>` → figure → readstate's figure divided by the peer's.
    pub ratios: BTreeMap<String, Ratios>,
}

fn in_order<S: serde::Serializer>(
    targets: &[(String, TargetResult)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut map = serializer.serialize_map(Some(targets.len()))?;
    for (name, result) in targets {
        map.serialize_entry(name, result)?;
    }
    map.end()
}

/// The machine the run was on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs available to the bench (shared by the generator and the server).
    pub cores: usize,
    /// `MemTotal` of `/proc/meminfo`.
    pub memory_bytes: Option<u64>,
    /// `model name` of `/proc/cpuinfo`.
    pub cpu: Option<String>,
    pub os: &'static str,
    pub arch: &'static str,
}

impl Machine {
    /// Reads the machine's description.
    pub fn detect() -> Self {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_bytes = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<u64>().ok())
            .map(|kib| kib * 1024);
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned());
        Self {
            cores: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            memory_bytes,
            cpu,
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
        }
    }
}

/// The parameters of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Params {
    pub preset: &'static str,
    pub seed: u64,
    pub users: u32,
    pub channels: u32,
    pub read_states: u64,
    pub messages_per_channel: u32,
    pub channels_per_user: usize,
    /// `ack=40,message=30,…`.
    pub mix: String,
    pub connections: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// The `--rate` asked for; null means 50 % of each target's saturation figure.
    pub rate: Option<f64>,
    pub soak_s: Option<f64>,
    pub targets: Vec<String>,
    /// readstate's storage (`sqlite`, `postgres`, or `external` with `--url`).
    pub storage: String,
    pub durability: String,
    pub url: Option<String>,
    pub reuse: bool,
    pub namespace: String,
    pub cache_max_bytes: String,
    pub unread_cap: u32,
    pub mention_cap: u32,
}

/// How the data set got into a target.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Population {
    /// True when `--reuse` found the data of an earlier run.
    pub reused: bool,
    /// Seconds the load took (null when reused).
    pub seconds: Option<f64>,
    pub read_states: u64,
    /// The memory figure before and after (RSS or Redis `used_memory`).
    pub memory_before_bytes: Option<u64>,
    pub memory_after_bytes: Option<u64>,
    /// Redis `used_memory_rss` before and after (Redis targets only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_before_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_after_bytes: Option<u64>,
    /// Requests sent again because the server pushed back (503 with `Retry-After`,
    /// or ops answered `overloaded`, `unavailable` or `timeout`).
    pub retries: u64,
    /// Seconds spent waiting before those retries.
    pub retry_wait_s: f64,
}

impl Population {
    /// A population of `read_states`, loaded in `seconds` (none when reused), with the
    /// memory figure before and after.
    pub fn new(
        reused: bool,
        seconds: Option<f64>,
        read_states: u64,
        memory_before_bytes: Option<u64>,
        memory_after_bytes: Option<u64>,
    ) -> Self {
        Self {
            reused,
            seconds,
            read_states,
            memory_before_bytes,
            memory_after_bytes,
            ..Self::default()
        }
    }
}

/// One phase's figures.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseFigures {
    pub seconds: f64,
    /// Successful operations.
    pub ops: u64,
    pub errors: u64,
    pub ops_per_sec: f64,
    /// Server CPU time over the phase (user + system, seconds; null where the
    /// server's processes cannot be read, see the target's `cpu_basis`).
    pub server_cpu_s: Option<f64>,
    /// Server CPU microseconds per successful operation.
    pub cpu_us_per_op: Option<f64>,
    /// The open loop's rate (null for the closed loop).
    pub target_rate: Option<f64>,
    pub mean_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub per_op: BTreeMap<&'static str, OpFigures>,
    /// One row per second.
    pub samples: Vec<Sample>,
    /// The first failure, when there were failures.
    pub first_error: Option<String>,
}

impl From<&PhaseOutcome> for PhaseFigures {
    fn from(o: &PhaseOutcome) -> Self {
        let h = &o.latency;
        let has = !h.is_empty();
        let q = |x: f64| has.then(|| ms(h.value_at_quantile(x)));
        Self {
            seconds: o.seconds,
            ops: o.ops,
            errors: o.errors,
            ops_per_sec: o.ops_per_sec,
            server_cpu_s: o.server_cpu_us.map(|us| us as f64 / 1e6),
            cpu_us_per_op: o
                .server_cpu_us
                .and_then(|us| (o.ops > 0).then(|| us as f64 / o.ops as f64)),
            target_rate: o.target_rate,
            mean_ms: has.then(|| h.mean() / 1000.0),
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: has.then(|| ms(h.max())),
            per_op: o
                .per_op
                .iter()
                .map(|(kind, figures)| (kind.name(), figures.clone()))
                .collect(),
            samples: o.samples.clone(),
            first_error: o.first_error.clone(),
        }
    }
}

/// One target's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetResult {
    /// What was measured.
    pub description: String,
    /// Saturation throughput (closed loop), successful operations per second.
    pub ops_per_sec: Option<f64>,
    /// Server CPU µs per operation in the saturation phase (see `cpu_basis`).
    pub cpu_us_per_op: Option<f64>,
    /// Fixed-rate latency percentiles (open loop, coordinated omission corrected).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Memory per read state (see `memory_basis`); null where not applicable.
    pub bytes_per_read_state: Option<f64>,
    /// Resident-set growth per read state: readstate's RSS, Redis'
    /// `used_memory_rss` (allocator fragmentation included); null elsewhere.
    pub rss_bytes_per_read_state: Option<f64>,
    /// The rate the fixed-rate phase achieved.
    pub fixed_rate_ops_per_sec: Option<f64>,
    /// Server CPU µs per operation in the fixed-rate phase.
    pub fixed_rate_cpu_us_per_op: Option<f64>,
    /// Which processes' CPU `cpu_us_per_op` counts, or why it is null.
    pub cpu_basis: Option<String>,
    /// The server process the bench started for this target (Redis AOF targets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerInfo>,
    /// Why the target was not (fully) measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How `bytes_per_read_state` was measured.
    pub memory_basis: Option<String>,
    /// Storage on disk per read state, where there is one to measure.
    pub disk_bytes_per_read_state: Option<f64>,
    pub population: Option<Population>,
    pub saturation: Option<PhaseFigures>,
    pub fixed_rate: Option<PhaseFigures>,
    pub soak: Option<PhaseFigures>,
}

impl TargetResult {
    /// A target that was not measured, and why.
    pub fn failed(description: String, error: &anyhow::Error) -> Self {
        Self {
            description,
            error: Some(format!("{error:#}")),
            ..Self::default()
        }
    }

    /// Fills the headline figures from the phases.
    pub fn set_headline(&mut self) {
        if let Some(s) = &self.saturation {
            self.ops_per_sec = Some(s.ops_per_sec);
            self.cpu_us_per_op = s.cpu_us_per_op;
        }
        if let Some(f) = &self.fixed_rate {
            self.p50_ms = f.p50_ms;
            self.p99_ms = f.p99_ms;
            self.p999_ms = f.p999_ms;
            self.max_ms = f.max_ms;
            self.fixed_rate_ops_per_sec = Some(f.ops_per_sec);
            self.fixed_rate_cpu_us_per_op = f.cpu_us_per_op;
        }
    }
}

/// A server process the bench started, as it was run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerInfo {
    pub program: String,
    pub pid: u32,
    pub version: Option<String>,
    /// Its data directory (removed at the end unless `--reuse`).
    pub dir: String,
    /// The options it was started with.
    pub args: Vec<String>,
}

/// readstate's figures divided by a peer's.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ratios {
    pub ops_per_sec: Option<f64>,
    /// Server CPU per operation, saturation and fixed rate (lower is better).
    pub cpu_us_per_op: Option<f64>,
    pub fixed_rate_cpu_us_per_op: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub bytes_per_read_state: Option<f64>,
    pub rss_bytes_per_read_state: Option<f64>,
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
        _ => None,
    }
}

/// `readstate/<peer>` for every peer measured next to readstate.
pub fn ratios(targets: &[(String, TargetResult)]) -> BTreeMap<String, Ratios> {
    let Some((_, rs)) = targets.iter().find(|(n, _)| n == "readstate") else {
        return BTreeMap::new();
    };
    targets
        .iter()
        .filter(|(name, _)| name != "readstate")
        .map(|(name, peer)| {
            (
                format!("readstate/{name}"),
                Ratios {
                    ops_per_sec: ratio(rs.ops_per_sec, peer.ops_per_sec),
                    cpu_us_per_op: ratio(rs.cpu_us_per_op, peer.cpu_us_per_op),
                    fixed_rate_cpu_us_per_op: ratio(
                        rs.fixed_rate_cpu_us_per_op,
                        peer.fixed_rate_cpu_us_per_op,
                    ),
                    p50_ms: ratio(rs.p50_ms, peer.p50_ms),
                    p99_ms: ratio(rs.p99_ms, peer.p99_ms),
                    p999_ms: ratio(rs.p999_ms, peer.p999_ms),
                    max_ms: ratio(rs.max_ms, peer.max_ms),
                    bytes_per_read_state: ratio(rs.bytes_per_read_state, peer.bytes_per_read_state),
                    rss_bytes_per_read_state: ratio(
                        rs.rss_bytes_per_read_state,
                        peer.rss_bytes_per_read_state,
                    ),
                },
            )
        })
        .collect()
}

fn cell(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.digits$}"))
}

/// The final table, as Markdown (readable in a terminal, pasteable in a README).
pub fn table(results: &Results) -> String {
    let mut out = String::from(
        "| target | ops/s (saturation) | CPU µs/op | p50 ms | p99 ms | p99.9 ms | max ms | fixed rate ops/s | CPU µs/op (fixed) | bytes / read state | RSS bytes / read state |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (name, t) in &results.targets {
        if let Some(error) = &t.error {
            let first = error.lines().next().unwrap_or_default();
            out.push_str(&format!(
                "| {name} | not measured: {first} | | | | | | | | | |\n"
            ));
            continue;
        }
        out.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            cell(t.ops_per_sec, 0),
            cell(t.cpu_us_per_op, 1),
            cell(t.p50_ms, 3),
            cell(t.p99_ms, 3),
            cell(t.p999_ms, 3),
            cell(t.max_ms, 3),
            cell(t.fixed_rate_ops_per_sec, 0),
            cell(t.fixed_rate_cpu_us_per_op, 1),
            cell(t.bytes_per_read_state, 1),
            cell(t.rss_bytes_per_read_state, 1),
        ));
    }
    out
}

/// The ratios, one line per peer, then the population's retries where there were any.
pub fn ratio_lines(results: &Results) -> String {
    let mut out = String::new();
    for (pair, r) in &results.ratios {
        let x = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}×"));
        out.push_str(&format!(
            "{pair}: throughput {}, CPU per op {} (fixed rate {}), p50 {}, p99 {}, p99.9 {}, max {}, bytes per read state {}, RSS bytes per read state {}\n",
            x(r.ops_per_sec),
            x(r.cpu_us_per_op),
            x(r.fixed_rate_cpu_us_per_op),
            x(r.p50_ms),
            x(r.p99_ms),
            x(r.p999_ms),
            x(r.max_ms),
            x(r.bytes_per_read_state),
            x(r.rss_bytes_per_read_state),
        ));
    }
    for (name, t) in &results.targets {
        if let Some(p) = t.population.as_ref().filter(|p| p.retries > 0) {
            out.push_str(&format!(
                "{name}: the population was pushed back and retried {} requests ({:.1} s of waiting)\n",
                p.retries, p.retry_wait_s
            ));
        }
    }
    for (name, t) in &results.targets {
        if t.error.is_none()
            && t.cpu_us_per_op.is_none()
            && let Some(basis) = &t.cpu_basis
        {
            out.push_str(&format!("{name}: no CPU figure: {basis}\n"));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn measured(ops: f64, p99: f64, bytes: Option<f64>) -> TargetResult {
        TargetResult {
            ops_per_sec: Some(ops),
            cpu_us_per_op: Some(200_000.0 / ops),
            p99_ms: Some(p99),
            bytes_per_read_state: bytes,
            ..TargetResult::default()
        }
    }

    #[test]
    fn ratios_divide_readstate_by_each_peer_and_skip_what_is_missing() {
        let targets = vec![
            ("readstate".to_owned(), measured(8_000.0, 2.0, Some(30.0))),
            ("floor".to_owned(), measured(10_000.0, 1.0, None)),
            (
                "redis".to_owned(),
                TargetResult::failed("redis".into(), &anyhow::anyhow!("down")),
            ),
        ];

        let r = ratios(&targets);

        assert_eq!(r.len(), 2);
        let floor = &r["readstate/floor"];
        assert_eq!(floor.ops_per_sec, Some(0.8));
        assert_eq!(floor.p99_ms, Some(2.0));
        assert_eq!(floor.bytes_per_read_state, None);
        assert_eq!(floor.cpu_us_per_op, Some(1.25));
        assert_eq!(floor.fixed_rate_cpu_us_per_op, None);
        assert_eq!(r["readstate/redis"].ops_per_sec, None);
    }

    #[test]
    fn a_failed_target_serializes_its_error_and_null_figures() {
        let t = TargetResult::failed("x".into(), &anyhow::anyhow!("no server"));

        let v = serde_json::to_value(&t).unwrap();

        assert_eq!(v["error"], "no server");
        assert!(v["ops_per_sec"].is_null() && v["p999_ms"].is_null());
        assert!(v.get("bytes_per_read_state").is_some());
    }
}
