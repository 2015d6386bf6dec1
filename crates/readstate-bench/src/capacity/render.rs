//! The printed capacity report: the model, per-node capacities, each target month
//! by month, and readstate's savings against each peer (the numbers come from
//! [`super::project`]).

use std::fmt::Write as _;

use serde_json::Value;

use super::{Bound, CapacityInput, FLOOR, GIB, Outcome, Projection};

/// `1234567.8` → `1,234,568`.
pub(super) fn grouped(value: f64) -> String {
    if !value.is_finite() {
        return "-".to_owned();
    }
    let rounded = format!("{:.0}", value.abs());
    let mut out = String::with_capacity(rounded.len() + rounded.len() / 3 + 1);
    if value < -0.5 {
        out.push('-');
    }
    for (i, c) in rounded.chars().enumerate() {
        if i > 0 && (rounded.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(super) fn dollars(value: f64) -> String {
    if value < -0.5 {
        format!("-${}", grouped(-value))
    } else {
        format!("${}", grouped(value))
    }
}

fn ratio(num: f64, den: f64) -> String {
    if den > 0.0 {
        format!("{:.2}×", num / den)
    } else {
        "-".to_owned()
    }
}

/// The printed report: the model, per-node capacities, each target month by month,
/// and readstate's savings against each peer.
pub fn render(
    input: &CapacityInput,
    projection: &Projection,
    source: &str,
    results: &Value,
) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored throughout.
    let g = input.growth.monthly_factor;
    let machine = match (
        results.pointer("/machine/cores").and_then(Value::as_u64),
        results
            .pointer("/machine/memory_bytes")
            .and_then(Value::as_f64),
    ) {
        (Some(cores), Some(bytes)) => {
            format!(" (measured on {cores} cores, {:.1} GiB)", bytes / GIB)
        }
        _ => String::new(),
    };
    let _ = writeln!(out, "Capacity projection from {source}{machine}");
    let _ = writeln!(out);
    let _ = writeln!(out, "Model");
    let _ = writeln!(
        out,
        "  demand   users × {} ops/s at peak, users × {} read states",
        input.ops_per_user_per_sec, input.read_states_per_user
    );
    let _ = writeln!(
        out,
        "  a node   the benchmarked machine: it serves the bench's fixed-rate throughput if its p99 met {} ms",
        input.latency_objective_ms
    );
    let _ = writeln!(
        out,
        "           (that phase runs near half of saturation: the rest is headroom for peaks and a lost node),"
    );
    let _ = writeln!(
        out,
        "           and holds read states in {:.1} GiB less {:.0} % headroom at the measured bytes per read state",
        input.node_memory_bytes / GIB,
        input.headroom * 100.0
    );
    let _ = writeln!(
        out,
        "  nodes    max(ops-bound, memory-bound) rounded up, at least 1; {}/node/month",
        dollars(input.node_cost)
    );
    let _ = writeln!(
        out,
        "  growth   {} compounding = ×{:.3} a month, ×{:.2} over {} months; each month is provisioned for its end",
        input.growth.text, g, projection.growth_over_horizon, input.months
    );
    let _ = writeln!(
        out,
        "  omitted  the database disk behind readstate and postgres-direct, network, replicas, people"
    );
    let _ = writeln!(out);

    let _ = writeln!(out, "Per-node capacity");
    let _ = writeln!(
        out,
        "  {:<16} {:>14} {:>9} {:>12} {:>18} {:>15}",
        "target", "ops/s per node", "p99 ms", "bytes/state", "states per node", "users per node"
    );
    for t in &projection.targets {
        match &t.outcome {
            Outcome::Projected { capacity: c, .. } => {
                let _ = writeln!(
                    out,
                    "  {:<16} {:>14} {:>9.2} {:>12} {:>18} {:>15}",
                    t.name,
                    grouped(c.ops_per_sec),
                    c.p99_ms,
                    c.bytes_per_read_state
                        .map_or_else(|| "-".to_owned(), |b| format!("{b:.1}")),
                    c.read_states.map_or_else(|| "-".to_owned(), grouped),
                    grouped(c.users)
                );
            }
            Outcome::NotProjectable { reason } => {
                let _ = writeln!(out, "  {:<16} not projectable: {reason}", t.name);
            }
        }
    }
    let _ = writeln!(out);

    for t in &projection.targets {
        let Outcome::Projected { rows, .. } = &t.outcome else {
            continue;
        };
        let label = if t.name == FLOOR {
            format!(
                "{} (an empty HTTP handler: the ceiling, not a peer)",
                t.name
            )
        } else {
            t.name.clone()
        };
        let _ = writeln!(out, "{label}");
        let _ = writeln!(
            out,
            "  {:>5} {:>14} {:>12} {:>16} {:>6} {:>7} {:>11} {:>13}",
            "month", "users", "ops/s", "read states", "nodes", "bound", "$/month", "cumulative $"
        );
        for r in rows {
            let month = if r.month == 0 {
                "now".to_owned()
            } else {
                r.month.to_string()
            };
            let bound = match r.bound {
                Bound::Ops => "ops",
                Bound::Memory => "memory",
            };
            let (cost, cumulative) = if r.month == 0 {
                (dollars(r.nodes as f64 * input.node_cost), "-".to_owned())
            } else {
                (dollars(r.cost), dollars(r.cumulative))
            };
            let _ = writeln!(
                out,
                "  {:>5} {:>14} {:>12} {:>16} {:>6} {:>7} {:>11} {:>13}",
                month,
                grouped(r.users),
                grouped(r.ops_per_sec),
                grouped(r.read_states),
                r.nodes,
                bound,
                cost,
                cumulative
            );
        }
        let _ = writeln!(out);
    }

    if projection.comparisons.is_empty() {
        let _ = writeln!(
            out,
            "No savings to show: readstate and at least one peer must both be projectable."
        );
        return out;
    }
    let _ = writeln!(out, "Savings with readstate");
    for c in &projection.comparisons {
        let _ = writeln!(out, "  vs {}", c.peer);
        let _ = writeln!(
            out,
            "  {:>5} {:>14} {:>14} {:>12} {:>10} {:>14}",
            "month",
            "readstate $",
            format!("{} $", c.peer),
            "saved $",
            "× cost",
            "saved so far $"
        );
        let mut so_far = 0.0;
        for &(month, ours, theirs) in &c.months {
            so_far += theirs - ours;
            let _ = writeln!(
                out,
                "  {:>5} {:>14} {:>14} {:>12} {:>10} {:>14}",
                month,
                dollars(ours),
                dollars(theirs),
                dollars(theirs - ours),
                ratio(theirs, ours),
                dollars(so_far)
            );
        }
        let _ = writeln!(
            out,
            "  Over {} months readstate costs {} and {} {}: {} saved; {} costs {} as much.",
            input.months,
            dollars(c.readstate_total),
            c.peer,
            dollars(c.peer_total),
            dollars(c.peer_total - c.readstate_total),
            c.peer,
            ratio(c.peer_total, c.readstate_total)
        );
        if let Some(&(month, ours, theirs)) = c.months.last() {
            let _ = writeln!(
                out,
                "  At month {month} the gap is {} a month, and it grows with the user base (×{g:.3} a month).",
                dollars(theirs - ours)
            );
        }
        let _ = match c.months_of_growth {
            Some(months) => writeln!(
                out,
                "  Per node readstate serves {:.2}× the users {} does: at {} that is {:.1} months of growth before readstate needs the nodes {} needs today.",
                c.capacity_ratio, c.peer, input.growth.text, months, c.peer
            ),
            None => writeln!(
                out,
                "  Per node readstate serves {:.2}× the users {} does.",
                c.capacity_ratio, c.peer
            ),
        };
        let _ = writeln!(out);
    }
    out
}
