//! `readstate bench --capacity`: turns the per-node capacity a benchmark run measured
//! into the number of nodes, and the money, that a growing user base needs, per
//! target, and what readstate saves against each peer. It reads `bench-results.json`
//! and never measures anything itself.
//!
//! The model, kept deliberately simple so that every figure can be checked by hand:
//! - **Demand** at a user count `U`: `U × ops_per_user_per_sec` operations per second
//!   at peak, and `U × read_states_per_user` read states.
//! - **A node** is the machine the benchmark ran on. It serves the throughput of the
//!   bench's fixed-rate phase, provided that phase's p99 met the latency objective:
//!   that phase runs at about half of the saturation throughput, so the other half is
//!   the headroom for peaks and for a lost node. It holds `(1 − headroom) ×
//!   node memory / bytes_per_read_state` read states, for targets that keep their
//!   state in memory (those with a bytes-per-read-state figure); readstate is counted
//!   as holding every read state in its cache, which is conservative.
//! - **Nodes** = `max(⌈ops / ops per node⌉, ⌈read states / read states per node⌉, 1)`.
//! - **Growth** compounds: `U_m = U × g^m` with `g` the monthly factor of the rate
//!   (`5%/week` is `1.05^(365.25 / 12 / 7)` ≈ ×1.236 a month). Month `m` is
//!   provisioned for its users at the end of the month and costs `nodes × node_cost`.
//! - **Not modelled**: the database disk behind readstate and postgres-direct,
//!   network, replicas for durability, and people.
//!
//! Because demand compounds, a per-node advantage of `k×` is worth `ln k / ln g`
//! months of growth: the time before the faster system needs the node count the
//! slower one needs today. That, and the cumulative spend, are what a "performance
//! is a cost issue" argument needs; the report prints both.

mod render;

pub use render::render;

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use serde_json::Value;

/// Default user growth rate.
pub const DEFAULT_GROWTH: &str = "5%/week";
/// Default projection horizon, in months.
pub const DEFAULT_MONTHS: u32 = 12;
/// Default price of one node per month, in dollars.
pub const DEFAULT_NODE_COST: f64 = 20.0;
/// Default results file (what `readstate bench` writes).
pub const DEFAULT_RESULTS: &str = "bench-results.json";
/// Default peak operations per second per user, averaged over all users: e.g. 5 %
/// of users online at peak, each doing 0.2 read-state operations per second.
pub const DEFAULT_OPS_PER_USER_PER_SEC: f64 = 0.01;
/// Read states per user when the results file does not say (the bench presets have 10).
pub const DEFAULT_READ_STATES_PER_USER: f64 = 10.0;
/// Default fraction of a node's memory kept free (OS, allocator fragmentation,
/// Redis' fork for persistence).
pub const DEFAULT_HEADROOM: f64 = 0.25;
/// Default p99 latency objective, in milliseconds.
pub const DEFAULT_LATENCY_OBJECTIVE_MS: f64 = 10.0;
/// Node memory when neither the flag nor the results file gives it (GiB).
pub const FALLBACK_NODE_MEMORY_GIB: f64 = 4.0;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const DAYS_PER_MONTH: f64 = 365.25 / 12.0;

/// The flags of `readstate bench --capacity` (flattened into the bench's flags).
// `about = None` keeps this doc comment from becoming the `bench` command's about.
#[derive(Debug, Clone, clap::Args)]
#[command(about = None, long_about = None, next_help_heading = "Capacity projection (with --capacity)")]
pub struct CapacityArgs {
    /// Project nodes and cost from a results file instead of running the benchmark.
    #[arg(long)]
    pub capacity: bool,
    /// Users today (required with --capacity); accepts a suffix: 250k, 10M, 1B.
    #[arg(long, value_name = "N", value_parser = parse_count, requires = "capacity")]
    pub users: Option<u64>,
    /// User growth, compounding: <percent>%/<day|week|month|year>, e.g. 5%/week, 20%/month.
    #[arg(long, value_name = "RATE", default_value = DEFAULT_GROWTH)]
    pub growth: String,
    /// Months to project.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MONTHS)]
    pub months: u32,
    /// Price of one node per month, in dollars.
    #[arg(long, value_name = "DOLLARS", default_value_t = DEFAULT_NODE_COST)]
    pub node_cost: f64,
    /// The results file of a benchmark run.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_RESULTS)]
    pub results: PathBuf,
    /// Read states per user [default: the benchmarked dataset's ratio, else 10].
    #[arg(long, value_name = "N")]
    pub read_states_per_user: Option<f64>,
    /// Peak read-state operations per second per user, averaged over all users.
    #[arg(long, value_name = "RATE", default_value_t = DEFAULT_OPS_PER_USER_PER_SEC)]
    pub ops_per_user_per_sec: f64,
    /// Memory of a node in GiB [default: the benchmarked machine's].
    #[arg(long, value_name = "GIB")]
    pub node_memory_gb: Option<f64>,
    /// Fraction of a node's memory kept free.
    #[arg(long, value_name = "FRACTION", default_value_t = DEFAULT_HEADROOM)]
    pub headroom: f64,
    /// p99 latency a node must meet at its rated throughput, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_LATENCY_OBJECTIVE_MS)]
    pub latency_objective_ms: f64,
}

impl Default for CapacityArgs {
    fn default() -> Self {
        Self {
            capacity: false,
            users: None,
            growth: DEFAULT_GROWTH.to_owned(),
            months: DEFAULT_MONTHS,
            node_cost: DEFAULT_NODE_COST,
            results: PathBuf::from(DEFAULT_RESULTS),
            read_states_per_user: None,
            ops_per_user_per_sec: DEFAULT_OPS_PER_USER_PER_SEC,
            node_memory_gb: None,
            headroom: DEFAULT_HEADROOM,
            latency_objective_ms: DEFAULT_LATENCY_OBJECTIVE_MS,
        }
    }
}

/// A growth rate, compounding.
#[derive(Debug, Clone, PartialEq)]
pub struct Growth {
    /// The rate as given, e.g. `5%/week`.
    pub text: String,
    /// Factor per month, e.g. 1.2 for `20%/month`.
    pub monthly_factor: f64,
}

/// Parses `<percent>%/<day|week|month|year>` (spaces allowed, case-insensitive).
///
/// # Errors
/// Any other shape, a percent that is not a number, or a shrink of 100 % or more.
pub fn parse_growth(text: &str) -> anyhow::Result<Growth> {
    let shape =
        || format!("growth {text:?}: expected <percent>%/<day|week|month|year>, e.g. 5%/week");
    let (percent, unit) = text.split_once('/').with_context(shape)?;
    let percent = percent.trim().strip_suffix('%').with_context(shape)?.trim();
    let percent: f64 = percent.parse().ok().with_context(shape)?;
    if !percent.is_finite() || percent <= -100.0 {
        bail!("growth {text:?}: the percent must be a number above -100");
    }
    let periods_per_month = match unit.trim().to_ascii_lowercase().as_str() {
        "day" => DAYS_PER_MONTH,
        "week" => DAYS_PER_MONTH / 7.0,
        "month" => 1.0,
        "year" => 1.0 / 12.0,
        _ => bail!("{}", shape()),
    };
    Ok(Growth {
        text: text.trim().to_owned(),
        monthly_factor: (1.0 + percent / 100.0).powf(periods_per_month),
    })
}

/// Parses a count with an optional `k`, `M` or `B` suffix (`250k`, `1.5M`).
///
/// # Errors
/// Not a non-negative number, or too large.
pub fn parse_count(text: &str) -> Result<u64, String> {
    let t = text.trim().replace('_', "");
    let (digits, scale) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
        Some('m' | 'M') => (&t[..t.len() - 1], 1e6),
        Some('b' | 'B' | 'g' | 'G') => (&t[..t.len() - 1], 1e9),
        _ => (t.as_str(), 1.0),
    };
    let value: f64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a count (e.g. 1000000, 250k, 10M)"))?;
    let count = (value * scale).round();
    if !(0.0..=1e15).contains(&count) {
        return Err(format!("{text:?} is out of range"));
    }
    // Range-checked above: a non-negative integer below 2^53 converts exactly.
    Ok(count as u64)
}

/// One target's figures from the results file; `None` where the file has null.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetFigures {
    pub name: String,
    /// Saturation throughput (closed loop).
    pub ops_per_sec: Option<f64>,
    /// Throughput of the fixed-rate phase, where the latencies were measured.
    pub fixed_rate_ops_per_sec: Option<f64>,
    pub p99_ms: Option<f64>,
    pub bytes_per_read_state: Option<f64>,
    /// Why the target was not measured.
    pub error: Option<String>,
}

/// Everything the projection needs; see the module documentation for the model.
#[derive(Debug, Clone, PartialEq)]
pub struct CapacityInput {
    pub users: u64,
    pub growth: Growth,
    pub months: u32,
    pub node_cost: f64,
    pub read_states_per_user: f64,
    pub ops_per_user_per_sec: f64,
    pub node_memory_bytes: f64,
    pub headroom: f64,
    pub latency_objective_ms: f64,
    pub targets: Vec<TargetFigures>,
}

/// What one node of a target can take.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeCapacity {
    /// Operations per second at the latency objective.
    pub ops_per_sec: f64,
    /// The p99 measured at that throughput.
    pub p99_ms: f64,
    /// Bytes per read state, for targets that hold their state in memory.
    pub bytes_per_read_state: Option<f64>,
    /// Read states that fit in the node's memory less the headroom.
    pub read_states: Option<f64>,
    /// Users per node: the tighter of the two bounds.
    pub users: f64,
}

/// What bounds a node count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Ops,
    Memory,
}

/// One month of one target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MonthRow {
    /// 0 is today; months 1.. are provisioned for their users at the month's end.
    pub month: u32,
    pub users: f64,
    pub ops_per_sec: f64,
    pub read_states: f64,
    pub ops_nodes: u64,
    /// `None` for targets whose state is not in memory.
    pub memory_nodes: Option<u64>,
    pub nodes: u64,
    pub bound: Bound,
    /// Cost of this month (0 for today, which is not part of the horizon).
    pub cost: f64,
    /// Cost of months 1..=month.
    pub cumulative: f64,
}

/// A target's projection, or why there is none.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Projected {
        capacity: NodeCapacity,
        /// Month 0 (today) to the horizon.
        rows: Vec<MonthRow>,
    },
    NotProjectable {
        reason: String,
    },
}

/// One target of the projection.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetProjection {
    pub name: String,
    pub outcome: Outcome,
}

/// readstate against one peer, month by month.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub peer: String,
    /// `(month, readstate cost, peer cost)` for months 1..=horizon.
    pub months: Vec<(u32, f64, f64)>,
    pub readstate_total: f64,
    pub peer_total: f64,
    /// Users per node of readstate over the peer's.
    pub capacity_ratio: f64,
    /// Months of growth that capacity ratio is worth (`None` without growth or
    /// without an advantage).
    pub months_of_growth: Option<f64>,
}

/// The whole projection.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    pub targets: Vec<TargetProjection>,
    /// readstate against each projectable peer (every target but readstate and floor).
    pub comparisons: Vec<Comparison>,
    /// Users at the horizon over users today.
    pub growth_over_horizon: f64,
}

/// The target the others are compared with.
pub const SUBJECT: &str = "readstate";
/// The empty-handler target: a ceiling, not a peer.
pub const FLOOR: &str = "floor";

/// Rounds a node demand up, forgiving floating-point noise just above an integer.
fn nodes_for(demand: f64, per_node: f64) -> u64 {
    // At least 1; per_node > 0 is checked before, and `as` saturates on absurd inputs.
    (demand / per_node - 1e-9).ceil().max(1.0) as u64
}

fn node_capacity(t: &TargetFigures, input: &CapacityInput) -> Result<NodeCapacity, String> {
    if let Some(error) = &t.error {
        return Err(format!("not measured: {error}"));
    }
    let (Some(rate), Some(p99)) = (t.fixed_rate_ops_per_sec, t.p99_ms) else {
        return Err("no fixed-rate throughput and p99 latency in the results".to_owned());
    };
    if !(rate.is_finite() && rate > 0.0) {
        return Err(format!("fixed-rate throughput {rate} is not positive"));
    }
    if p99 > input.latency_objective_ms {
        return Err(format!(
            "p99 {p99:.2} ms at {rate:.0} ops/s misses the {} ms objective (benchmark it at a lower --rate)",
            input.latency_objective_ms
        ));
    }
    let bytes = t.bytes_per_read_state.filter(|b| b.is_finite() && *b > 0.0);
    let read_states = bytes.map(|b| input.node_memory_bytes * (1.0 - input.headroom) / b);
    let by_ops = rate / input.ops_per_user_per_sec;
    let by_memory = match read_states {
        Some(states) if input.read_states_per_user > 0.0 => states / input.read_states_per_user,
        _ => f64::INFINITY,
    };
    Ok(NodeCapacity {
        ops_per_sec: rate,
        p99_ms: p99,
        bytes_per_read_state: bytes,
        read_states,
        users: by_ops.min(by_memory),
    })
}

fn month_row(month: u32, users: f64, capacity: &NodeCapacity, input: &CapacityInput) -> MonthRow {
    let ops = users * input.ops_per_user_per_sec;
    let read_states = users * input.read_states_per_user;
    let ops_nodes = nodes_for(ops, capacity.ops_per_sec);
    let memory_nodes = capacity.read_states.map(|per| nodes_for(read_states, per));
    let (nodes, bound) = match memory_nodes {
        Some(m) if m > ops_nodes => (m, Bound::Memory),
        _ => (ops_nodes, Bound::Ops),
    };
    MonthRow {
        month,
        users,
        ops_per_sec: ops,
        read_states,
        ops_nodes,
        memory_nodes,
        nodes,
        bound,
        cost: 0.0,
        cumulative: 0.0,
    }
}

/// Projects every target month by month and compares readstate with each peer.
/// Pure: the input's figures and knobs in, numbers out (see the module docs).
pub fn project(input: &CapacityInput) -> Projection {
    let g = input.growth.monthly_factor;
    let targets: Vec<TargetProjection> = input
        .targets
        .iter()
        .map(|t| {
            let outcome = match node_capacity(t, input) {
                Err(reason) => Outcome::NotProjectable { reason },
                Ok(capacity) => {
                    let mut cumulative = 0.0;
                    let rows = (0..=input.months)
                        .map(|m| {
                            let users = input.users as f64 * g.powf(f64::from(m));
                            let mut row = month_row(m, users, &capacity, input);
                            if m > 0 {
                                row.cost = row.nodes as f64 * input.node_cost;
                                cumulative += row.cost;
                                row.cumulative = cumulative;
                            }
                            row
                        })
                        .collect();
                    Outcome::Projected { capacity, rows }
                }
            };
            TargetProjection {
                name: t.name.clone(),
                outcome,
            }
        })
        .collect();
    let comparisons = compare(&targets, g);
    Projection {
        targets,
        comparisons,
        growth_over_horizon: g.powf(f64::from(input.months)),
    }
}

fn compare(targets: &[TargetProjection], g: f64) -> Vec<Comparison> {
    let projected = |t: &TargetProjection| match &t.outcome {
        Outcome::Projected { capacity, rows } => Some((*capacity, rows.clone())),
        Outcome::NotProjectable { .. } => None,
    };
    let Some((subject_capacity, subject_rows)) = targets
        .iter()
        .find(|t| t.name == SUBJECT)
        .and_then(projected)
    else {
        return Vec::new();
    };
    targets
        .iter()
        .filter(|t| t.name != SUBJECT && t.name != FLOOR)
        .filter_map(|t| {
            let (capacity, rows) = projected(t)?;
            let months: Vec<(u32, f64, f64)> = subject_rows
                .iter()
                .zip(&rows)
                .skip(1)
                .map(|(s, p)| (s.month, s.cost, p.cost))
                .collect();
            let capacity_ratio = subject_capacity.users / capacity.users;
            let months_of_growth =
                (g > 1.0 && capacity_ratio > 1.0).then(|| capacity_ratio.ln() / g.ln());
            Some(Comparison {
                peer: t.name.clone(),
                readstate_total: months.iter().map(|m| m.1).sum(),
                peer_total: months.iter().map(|m| m.2).sum(),
                months,
                capacity_ratio,
                months_of_growth,
            })
        })
        .collect()
}

/// Reads the targets' figures from a results document, in the report's order:
/// readstate, floor, redis, redis-aof-always, redis-aof-everysec, postgres-direct,
/// then any others by name.
///
/// # Errors
/// A document without a `targets` object.
pub fn figures_from_results(results: &Value) -> anyhow::Result<Vec<TargetFigures>> {
    let Some(targets) = results.get("targets").and_then(Value::as_object) else {
        bail!("the results have no \"targets\" object");
    };
    let rank = |name: &str| {
        [
            SUBJECT,
            FLOOR,
            "redis",
            "redis-aof-always",
            "redis-aof-everysec",
            "postgres-direct",
        ]
        .iter()
        .position(|n| *n == name)
        .unwrap_or(usize::MAX)
    };
    let mut names: Vec<&String> = targets.keys().collect();
    names.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
    Ok(names
        .into_iter()
        .map(|name| {
            let t = &targets[name.as_str()];
            let num = |key: &str| t.get(key).and_then(Value::as_f64);
            TargetFigures {
                name: name.clone(),
                ops_per_sec: num("ops_per_sec"),
                fixed_rate_ops_per_sec: num("fixed_rate_ops_per_sec"),
                p99_ms: num("p99_ms"),
                bytes_per_read_state: num("bytes_per_read_state"),
                error: t.get("error").and_then(|e| match e {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                }),
            }
        })
        .collect())
}

/// Builds the projection's input from the flags and a results document.
///
/// # Errors
/// Missing `--users`, a bad growth rate, out-of-range knobs, or results without targets.
pub fn input_from(args: &CapacityArgs, results: &Value) -> anyhow::Result<CapacityInput> {
    let Some(users) = args.users else {
        bail!("--capacity needs --users <N>: the number of users today");
    };
    if users == 0 {
        bail!("--users must be at least 1");
    }
    let growth = parse_growth(&args.growth)?;
    if args.months == 0 || args.months > 240 {
        bail!("--months must be between 1 and 240");
    }
    if !(args.node_cost.is_finite() && args.node_cost >= 0.0) {
        bail!("--node-cost must be a non-negative number of dollars");
    }
    if !(args.ops_per_user_per_sec.is_finite() && args.ops_per_user_per_sec > 0.0) {
        bail!("--ops-per-user-per-sec must be positive");
    }
    if !(args.headroom.is_finite() && (0.0..1.0).contains(&args.headroom)) {
        bail!("--headroom must be at least 0 and below 1");
    }
    if !(args.latency_objective_ms.is_finite() && args.latency_objective_ms > 0.0) {
        bail!("--latency-objective-ms must be positive");
    }
    let read_states_per_user = match args.read_states_per_user {
        Some(n) if n.is_finite() && n >= 0.0 => n,
        Some(_) => bail!("--read-states-per-user must be a non-negative number"),
        None => dataset_ratio(results).unwrap_or(DEFAULT_READ_STATES_PER_USER),
    };
    let node_memory_bytes = match args.node_memory_gb {
        Some(gib) if gib.is_finite() && gib > 0.0 => gib * GIB,
        Some(_) => bail!("--node-memory-gb must be positive"),
        None => results
            .pointer("/machine/memory_bytes")
            .and_then(Value::as_f64)
            .filter(|b| *b > 0.0)
            .unwrap_or(FALLBACK_NODE_MEMORY_GIB * GIB),
    };
    Ok(CapacityInput {
        users,
        growth,
        months: args.months,
        node_cost: args.node_cost,
        read_states_per_user,
        ops_per_user_per_sec: args.ops_per_user_per_sec,
        node_memory_bytes,
        headroom: args.headroom,
        latency_objective_ms: args.latency_objective_ms,
        targets: figures_from_results(results)?,
    })
}

/// Read states per user of the benchmarked dataset, if the results record it.
fn dataset_ratio(results: &Value) -> Option<f64> {
    let params = results.get("params")?;
    let find = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| params.get(*k).and_then(Value::as_f64))
    };
    let states = find(&["read_states", "read_state_count"])?;
    let users = find(&["users", "user_count"])?;
    (users > 0.0 && states > 0.0).then(|| states / users)
}

/// Reads the results file and prints the projection.
///
/// # Errors
/// An unreadable or malformed results file, or bad flags.
pub fn run(args: &CapacityArgs) -> anyhow::Result<()> {
    if args.users.is_none() {
        bail!("--capacity needs --users <N>: the number of users today");
    }
    let text = std::fs::read_to_string(&args.results).with_context(|| {
        format!(
            "reading {} (run `readstate bench` first, or pass --results)",
            args.results.display()
        )
    })?;
    let results: Value = serde_json::from_str(&text)
        .with_context(|| format!("parsing {}", args.results.display()))?;
    let input = input_from(args, &results)?;
    let projection = project(&input);
    print!(
        "{}",
        render(
            &input,
            &projection,
            &args.results.display().to_string(),
            &results
        )
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::render::{dollars, grouped};
    use super::*;

    fn target(name: &str, rate: f64, p99: f64, bytes: Option<f64>) -> TargetFigures {
        TargetFigures {
            name: name.to_owned(),
            ops_per_sec: Some(rate * 2.0),
            fixed_rate_ops_per_sec: Some(rate),
            p99_ms: Some(p99),
            bytes_per_read_state: bytes,
            error: None,
        }
    }

    fn input(targets: Vec<TargetFigures>) -> CapacityInput {
        CapacityInput {
            users: 1_000_000,
            growth: parse_growth("20%/month").unwrap(),
            months: 3,
            node_cost: 20.0,
            read_states_per_user: 10.0,
            ops_per_user_per_sec: 0.01,
            node_memory_bytes: 4.0 * GIB,
            headroom: 0.25,
            latency_objective_ms: 10.0,
            targets,
        }
    }

    fn rows(p: &Projection, name: &str) -> Vec<MonthRow> {
        match &p.targets.iter().find(|t| t.name == name).unwrap().outcome {
            Outcome::Projected { rows, .. } => rows.clone(),
            Outcome::NotProjectable { reason } => panic!("{name} not projectable: {reason}"),
        }
    }

    #[test]
    fn growth_rates_are_parsed_into_a_monthly_factor() {
        let weekly = parse_growth("5%/week").unwrap();
        let monthly = parse_growth(" 20 % / Month ").unwrap();
        let yearly = parse_growth("100%/year").unwrap();
        let none = parse_growth("0%/day").unwrap();

        assert!((weekly.monthly_factor - 1.05f64.powf(365.25 / 12.0 / 7.0)).abs() < 1e-12);
        assert!((weekly.monthly_factor - 1.236).abs() < 1e-3);
        assert!((monthly.monthly_factor - 1.2).abs() < 1e-12);
        assert!((yearly.monthly_factor.powi(12) - 2.0).abs() < 1e-9);
        assert!((none.monthly_factor - 1.0).abs() < 1e-12);
    }

    #[test]
    fn malformed_growth_rates_are_errors() {
        for bad in [
            "",
            "5",
            "5%",
            "5/week",
            "x%/week",
            "5%/fortnight",
            "-100%/week",
            "NaN%/week",
        ] {
            assert!(parse_growth(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn counts_accept_suffixes() {
        assert_eq!(parse_count("1000000"), Ok(1_000_000));
        assert_eq!(parse_count("250k"), Ok(250_000));
        assert_eq!(parse_count("1.5M"), Ok(1_500_000));
        assert_eq!(parse_count("2B"), Ok(2_000_000_000));
        assert_eq!(parse_count("10_000"), Ok(10_000));
        assert!(parse_count("lots").is_err());
        assert!(parse_count("-5").is_err());
    }

    #[test]
    fn users_compound_month_by_month_and_costs_accumulate() {
        let p = project(&input(vec![target("readstate", 1_000.0, 1.0, None)]));

        let r = rows(&p, "readstate");
        assert_eq!(r.len(), 4);
        for (m, row) in r.iter().enumerate() {
            let expected = 1_000_000.0 * 1.2f64.powi(m as i32);
            assert!((row.users - expected).abs() < 1e-6, "month {m}");
        }
        // 10,000 ops/s today at 1,000 per node: 10 nodes, then 12, 14.4 → 15, 17.28 → 18.
        assert_eq!(
            r.iter().map(|x| x.nodes).collect::<Vec<_>>(),
            [10, 12, 15, 18]
        );
        assert_eq!(r[0].cost, 0.0);
        assert_eq!(
            r.iter().map(|x| x.cost).collect::<Vec<_>>(),
            [0.0, 240.0, 300.0, 360.0]
        );
        assert_eq!(r[3].cumulative, 900.0);
        assert!((p.growth_over_horizon - 1.728).abs() < 1e-9);
    }

    #[test]
    fn nodes_are_the_larger_of_the_ops_and_memory_bounds_rounded_up() {
        // Ops: 10,000 / 4,000 = 2.5 → 3. Memory: 10M states × 100 B = 1e9 B over
        // 3 GiB usable → 0.31 → 1. With 1,000 B a state: 3.1 → 4.
        let light = target("readstate", 4_000.0, 1.0, Some(100.0));
        let heavy = target("redis", 4_000.0, 1.0, Some(1_000.0));
        let mut i = input(vec![light, heavy]);
        i.months = 1;

        let p = project(&i);

        let light = rows(&p, "readstate")[0];
        assert_eq!(
            (light.ops_nodes, light.memory_nodes, light.nodes),
            (3, Some(1), 3)
        );
        assert_eq!(light.bound, Bound::Ops);
        let heavy = rows(&p, "redis")[0];
        assert_eq!(
            (heavy.ops_nodes, heavy.memory_nodes, heavy.nodes),
            (3, Some(4), 4)
        );
        assert_eq!(heavy.bound, Bound::Memory);
    }

    #[test]
    fn an_exact_fit_does_not_round_up_and_a_tiny_demand_still_needs_one_node() {
        assert_eq!(nodes_for(10_000.0, 1_000.0), 10);
        assert_eq!(nodes_for(0.1 + 0.2, 0.3), 1);
        assert_eq!(nodes_for(0.0, 1_000.0), 1);
        assert_eq!(nodes_for(10_001.0, 1_000.0), 11);
    }

    #[test]
    fn a_target_without_figures_or_missing_the_objective_is_not_projectable() {
        let empty = TargetFigures {
            name: "postgres-direct".to_owned(),
            ..TargetFigures::default()
        };
        let failed = TargetFigures {
            name: "redis".to_owned(),
            error: Some("connection refused".to_owned()),
            ..TargetFigures::default()
        };
        let slow = target("floor", 1_000.0, 25.0, None);

        let p = project(&input(vec![empty, failed, slow]));

        let reasons: Vec<String> = p
            .targets
            .iter()
            .map(|t| match &t.outcome {
                Outcome::NotProjectable { reason } => reason.clone(),
                Outcome::Projected { .. } => panic!("{} was projected", t.name),
            })
            .collect();
        assert!(
            reasons[0].contains("no fixed-rate throughput"),
            "{}",
            reasons[0]
        );
        assert_eq!(reasons[1], "not measured: connection refused");
        assert!(
            reasons[2].contains("misses the 10 ms objective"),
            "{}",
            reasons[2]
        );
        assert!(p.comparisons.is_empty());
    }

    #[test]
    fn savings_compare_readstate_with_each_peer_but_not_the_floor() {
        let i = input(vec![
            target("readstate", 2_000.0, 1.0, Some(30.0)),
            target("floor", 8_000.0, 0.5, None),
            target("redis", 1_000.0, 1.0, Some(100.0)),
        ]);

        let p = project(&i);

        assert_eq!(p.comparisons.len(), 1);
        let c = &p.comparisons[0];
        assert_eq!(c.peer, "redis");
        // Ops-bound both: readstate 6, 7.2 → 8, 8.64 → 9 nodes; redis 12, 14.4 → 15, 17.28 → 18.
        assert_eq!(
            c.months,
            vec![(1, 120.0, 240.0), (2, 160.0, 300.0), (3, 180.0, 360.0)]
        );
        assert_eq!((c.readstate_total, c.peer_total), (460.0, 900.0));
        assert!((c.capacity_ratio - 2.0).abs() < 1e-9);
        let months = c.months_of_growth.unwrap();
        assert!((months - 2f64.ln() / 1.2f64.ln()).abs() < 1e-9);
    }

    #[test]
    fn figures_are_read_from_the_results_with_nulls_as_missing() {
        let results: Value = serde_json::from_str(
            r#"{"targets": {
                "redis": {"ops_per_sec": 9000, "fixed_rate_ops_per_sec": 4500.5, "p50_ms": 0.2,
                          "p99_ms": 0.9, "p999_ms": 2, "max_ms": 5, "bytes_per_read_state": 80.5},
                "zeta": {"ops_per_sec": null},
                "readstate": {"ops_per_sec": null, "error": "binary not found"},
                "postgres-direct": {"ops_per_sec": 1000, "bytes_per_read_state": null}
              },
              "machine": {"cores": 2, "memory_bytes": 8589934592},
              "params": {"users": 10000, "read_states": 100000}}"#,
        )
        .unwrap();

        let figures = figures_from_results(&results).unwrap();

        let names: Vec<&str> = figures.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["readstate", "redis", "postgres-direct", "zeta"]);
        assert_eq!(figures[0].error.as_deref(), Some("binary not found"));
        assert_eq!(figures[1].fixed_rate_ops_per_sec, Some(4500.5));
        assert_eq!(figures[1].bytes_per_read_state, Some(80.5));
        assert_eq!(figures[2].bytes_per_read_state, None);
        let args = CapacityArgs {
            capacity: true,
            users: Some(5),
            ..CapacityArgs::default()
        };
        let i = input_from(&args, &results).unwrap();
        assert_eq!(i.read_states_per_user, 10.0);
        assert_eq!(i.node_memory_bytes, 8.0 * GIB);
        assert!(figures_from_results(&serde_json::json!({})).is_err());
    }

    #[test]
    fn the_flags_are_checked() {
        let results = serde_json::json!({"targets": {}});
        let with = |f: fn(&mut CapacityArgs)| {
            let mut args = CapacityArgs {
                capacity: true,
                users: Some(1_000),
                ..CapacityArgs::default()
            };
            f(&mut args);
            input_from(&args, &results)
        };

        assert!(with(|_| {}).is_ok());
        assert!(with(|a| a.users = None).is_err());
        assert!(with(|a| a.growth = "fast".to_owned()).is_err());
        assert!(with(|a| a.months = 0).is_err());
        assert!(with(|a| a.headroom = 1.0).is_err());
        assert!(with(|a| a.node_memory_gb = Some(0.0)).is_err());
    }

    #[test]
    fn clap_defaults_match_the_default_impl_and_users_requires_capacity() {
        use clap::Parser;
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            capacity: CapacityArgs,
        }

        let parsed = Cli::try_parse_from(["bench"]).unwrap().capacity;
        let defaults = CapacityArgs::default();

        assert_eq!(format!("{parsed:?}"), format!("{defaults:?}"));
        assert!(Cli::try_parse_from(["bench", "--users", "5"]).is_err());
        let on = Cli::try_parse_from(["bench", "--capacity", "--users", "10M"]).unwrap();
        assert_eq!(on.capacity.users, Some(10_000_000));
    }

    #[test]
    fn the_report_lays_out_months_costs_and_savings() {
        let i = input(vec![
            target("readstate", 2_000.0, 1.0, Some(30.0)),
            target("redis", 1_000.0, 1.0, Some(100.0)),
            TargetFigures {
                name: "postgres-direct".to_owned(),
                error: Some("no server".to_owned()),
                ..TargetFigures::default()
            },
        ]);
        let p = project(&i);

        let text = render(&i, &p, "bench-results.json", &serde_json::json!({}));

        assert!(
            text.contains("Capacity projection from bench-results.json"),
            "{text}"
        );
        assert!(
            text.contains("postgres-direct  not projectable: not measured: no server"),
            "{text}"
        );
        assert!(text.contains("vs redis"), "{text}");
        assert!(text.contains("Over 3 months readstate costs $460 and redis $900: $440 saved; redis costs 1.96× as much."), "{text}");
        assert!(text.contains("3.8 months of growth"), "{text}");
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(grouped(0.0), "0");
        assert_eq!(grouped(999.4), "999");
        assert_eq!(grouped(1_234_567.8), "1,234,568");
        assert_eq!(dollars(-1_500.0), "-$1,500");
    }
}
