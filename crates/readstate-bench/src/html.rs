//! `bench-report.html`: one self-contained page (inline CSS and SVG, no script, no
//! font, nothing fetched) with the ratios to each peer as headline numbers, bar
//! charts of throughput, server CPU per operation, latency percentiles (log axis)
//! and memory per read state, line charts of latency and memory over time, and
//! every figure in tables.

use std::fmt::Write as _;

use super::report::{PhaseFigures, Results, TargetResult};

const WIDTH: f64 = 760.0;
const PERCENTILE_COLORS: [(&str, &str); 4] = [
    ("p50", "#93c5fd"),
    ("p99", "#3b82f6"),
    ("p99.9", "#1d4ed8"),
    ("max", "#1e1b4b"),
];

/// The color of a target in every chart.
fn color(target: &str) -> &'static str {
    match target {
        "readstate" => "#2563eb",
        "floor" => "#6b7280",
        "redis" => "#dc2626",
        "redis-aof-always" => "#9a3412",
        "redis-aof-everysec" => "#f97316",
        "postgres-direct" => "#059669",
        _ => "#a16207",
    }
}

/// Escapes text for HTML and SVG.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// `1234567.8` → `1,234,568`.
fn thousands(v: f64) -> String {
    let n = v.round().max(0.0) as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A latency in ms with sensible digits.
fn fmt_ms(v: f64) -> String {
    if v == 0.0 {
        "0".to_owned()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// A round step for about `parts` ticks over `range`.
fn nice_step(range: f64, parts: f64) -> f64 {
    let raw = (range / parts).max(f64::MIN_POSITIVE);
    let magnitude = 10_f64.powf(raw.log10().floor());
    let norm = raw / magnitude;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Unix seconds → `YYYY-MM-DD HH:MM UTC`.
pub fn utc(unix_s: u64) -> String {
    let secs = i64::try_from(unix_s).unwrap_or(0);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3_600,
        rem % 3_600 / 60
    )
}

/// Horizontal bars, one per row; rows without a value say why.
fn bar_chart(rows: &[(String, Option<f64>, String)], format: &dyn Fn(f64) -> String) -> String {
    let row_h = 30.0;
    let label_w = 150.0;
    let bar_w = 470.0;
    let height = row_h * rows.len() as f64 + 10.0;
    let max = rows
        .iter()
        .filter_map(|r| r.1)
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let mut svg = format!(
        r#"<svg viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img">"#
    );
    for (i, (name, value, note)) in rows.iter().enumerate() {
        let y = 5.0 + row_h * i as f64;
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end" class="label">{}</text>"#,
            label_w - 8.0,
            y + 19.0,
            esc(name)
        );
        match value {
            Some(v) => {
                let w = (v / max * bar_w).max(1.0);
                let _ = write!(
                    svg,
                    r#"<rect x="{label_w}" y="{}" width="{w:.1}" height="{}" fill="{}"><title>{}: {}</title></rect><text x="{:.1}" y="{}" class="value">{}</text>"#,
                    y + 4.0,
                    row_h - 8.0,
                    color(name),
                    esc(name),
                    esc(&format(*v)),
                    label_w + w + 6.0,
                    y + 19.0,
                    esc(&format(*v))
                );
            }
            None => {
                let _ = write!(
                    svg,
                    r#"<text x="{label_w}" y="{}" class="note">{}</text>"#,
                    y + 19.0,
                    esc(note)
                );
            }
        }
    }
    svg.push_str("</svg>");
    svg
}

/// Grouped vertical bars of the latency percentiles per target, log y axis.
fn latency_chart(targets: &[(&str, [Option<f64>; 4])]) -> String {
    let (left, right, top, bottom) = (60.0, 20.0, 30.0, 40.0);
    let height = 320.0;
    let plot_w = WIDTH - left - right;
    let plot_h = height - top - bottom;
    let values: Vec<f64> = targets
        .iter()
        .flat_map(|(_, v)| v.iter().flatten().copied())
        .filter(|v| *v > 0.0)
        .collect();
    let mut svg = format!(
        r#"<svg viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img">"#
    );
    if values.is_empty() {
        svg.push_str(r#"<text x="20" y="40" class="note">no latency was measured</text></svg>"#);
        return svg;
    }
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(0.0_f64, f64::max);
    let lmin = lo.log10().floor();
    let mut lmax = hi.log10().ceil();
    if lmax <= lmin {
        lmax = lmin + 1.0;
    }
    let y_of = |v: f64| top + plot_h * (1.0 - (v.log10() - lmin) / (lmax - lmin));
    let mut decade = lmin;
    while decade <= lmax + 1e-9 {
        let v = 10_f64.powf(decade);
        let y = y_of(v);
        let _ = write!(
            svg,
            r#"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" class="grid"/><text x="{}" y="{:.1}" text-anchor="end" class="tick">{} ms</text>"#,
            left + plot_w,
            left - 6.0,
            y + 4.0,
            esc(&fmt_ms(v))
        );
        decade += 1.0;
    }
    let group_w = plot_w / targets.len().max(1) as f64;
    let bar_w = (group_w - 24.0) / 4.0;
    for (g, (name, percentiles)) in targets.iter().enumerate() {
        let gx = left + group_w * g as f64 + 12.0;
        for (i, value) in percentiles.iter().enumerate() {
            let Some(v) = value.filter(|v| *v > 0.0) else {
                continue;
            };
            let x = gx + bar_w * i as f64;
            let y = y_of(v);
            let (label, fill) = PERCENTILE_COLORS[i];
            let _ = write!(
                svg,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{fill}"><title>{} {label}: {} ms</title></rect><text x="{:.1}" y="{:.1}" text-anchor="middle" class="small">{}</text>"#,
                (bar_w - 2.0).max(1.0),
                (top + plot_h - y).max(0.5),
                esc(name),
                esc(&fmt_ms(v)),
                x + bar_w / 2.0,
                y - 3.0,
                esc(&fmt_ms(v))
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle" class="label">{}</text>"#,
            gx + bar_w * 2.0,
            height - bottom + 18.0,
            esc(name)
        );
    }
    for (i, (label, fill)) in PERCENTILE_COLORS.iter().enumerate() {
        let x = left + 70.0 * i as f64;
        let _ = write!(
            svg,
            r#"<rect x="{x}" y="6" width="12" height="12" fill="{fill}"/><text x="{}" y="16" class="tick">{label}</text>"#,
            x + 16.0
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The y axis of a line chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scale {
    /// From 0, round steps.
    Linear,
    /// Whole decades, so one target's collapse does not flatten the others.
    Log,
}

/// One line per series over time (x in seconds).
fn line_chart(series: &[(&str, Vec<(f64, f64)>)], y_unit: &str, scale: Scale) -> String {
    let (left, right, top, bottom) = (70.0, 20.0, 30.0, 36.0);
    let height = 260.0;
    let plot_w = WIDTH - left - right;
    let plot_h = height - top - bottom;
    let mut svg = format!(
        r#"<svg viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img">"#
    );
    let points: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|(_, p)| p.iter().copied())
        .filter(|p| scale == Scale::Linear || p.1 > 0.0)
        .collect();
    if points.is_empty() {
        svg.push_str(r#"<text x="20" y="40" class="note">nothing was sampled</text></svg>"#);
        return svg;
    }
    let x_max = points.iter().map(|p| p.0).fold(1.0_f64, f64::max);
    let y_hi = points
        .iter()
        .map(|p| p.1)
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let y_lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let label = |y: f64| {
        if y_unit == "ms" {
            fmt_ms(y)
        } else {
            format!("{y}")
        }
    };
    // The y ticks and the function placing a value.
    let (ticks, y_of): (Vec<f64>, Box<dyn Fn(f64) -> f64>) = match scale {
        Scale::Linear => {
            let step = nice_step(y_hi * 1.1, 5.0);
            let y_top = (y_hi * 1.1 / step).ceil() * step;
            let ticks = (0..)
                .map(|i| f64::from(i) * step)
                .take_while(|y| *y <= y_top + step * 1e-6)
                .collect();
            (
                ticks,
                Box::new(move |y: f64| top + plot_h * (1.0 - y / y_top)),
            )
        }
        Scale::Log => {
            let lmin = y_lo.log10().floor();
            let lmax = y_hi.log10().ceil().max(lmin + 1.0);
            let ticks = (0..)
                .map(|i| 10_f64.powf(lmin + f64::from(i)))
                .take_while(|y| y.log10() <= lmax + 1e-9)
                .collect();
            (
                ticks,
                Box::new(move |y: f64| {
                    let l = y.max(10_f64.powf(lmin)).log10();
                    top + plot_h * (1.0 - (l - lmin) / (lmax - lmin))
                }),
            )
        }
    };
    let x_step = nice_step(x_max, 8.0);
    let x_of = |x: f64| left + plot_w * x / x_max;
    for y in ticks {
        let py = y_of(y);
        let _ = write!(
            svg,
            r#"<line x1="{left}" x2="{}" y1="{py:.1}" y2="{py:.1}" class="grid"/><text x="{}" y="{:.1}" text-anchor="end" class="tick">{} {}</text>"#,
            left + plot_w,
            left - 6.0,
            py + 4.0,
            esc(&label(y)),
            esc(y_unit)
        );
    }
    let mut x = 0.0;
    while x <= x_max + x_step * 1e-6 {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle" class="tick">{x} s</text>"#,
            x_of(x),
            height - bottom + 16.0
        );
        x += x_step;
    }
    for (i, (name, pts)) in series.iter().enumerate() {
        let path: Vec<String> = pts
            .iter()
            .filter(|(_, y)| scale == Scale::Linear || *y > 0.0)
            .map(|(x, y)| format!("{:.1},{:.1}", x_of(*x), y_of(*y)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="1.6"><title>{}</title></polyline>"#,
            path.join(" "),
            color(name),
            esc(name)
        );
        let lx = left + 130.0 * i as f64;
        let _ = write!(
            svg,
            r#"<rect x="{lx}" y="6" width="12" height="12" fill="{}"/><text x="{}" y="16" class="tick">{}</text>"#,
            color(name),
            lx + 16.0,
            esc(name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The phase whose per-second samples the time charts show: the soak when there
/// was one, else the fixed-rate phase.
fn timeline(t: &TargetResult) -> Option<&PhaseFigures> {
    t.soak.as_ref().or(t.fixed_rate.as_ref())
}

fn opt(v: Option<f64>, f: &dyn Fn(f64) -> String) -> String {
    v.map_or("–".to_owned(), f)
}

/// Renders the report.
pub fn render(results: &Results) -> String {
    let p = &results.params;
    let mut html = String::with_capacity(64 * 1024);
    let _ = write!(
        html,
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>readstate bench: {preset}</title>
<style>
body {{ font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #111827; max-width: 820px; margin: 24px auto; padding: 0 16px; }}
h1 {{ font-size: 24px; margin-bottom: 4px; }}
h2 {{ font-size: 18px; margin-top: 32px; border-bottom: 1px solid #e5e7eb; padding-bottom: 4px; }}
.meta {{ color: #4b5563; }}
.cards {{ display: flex; flex-wrap: wrap; gap: 12px; margin-top: 16px; }}
.card {{ flex: 1 1 220px; border: 1px solid #e5e7eb; border-radius: 8px; padding: 12px 14px; }}
.card .big {{ font-size: 30px; font-weight: 650; }}
.card .sub {{ color: #4b5563; font-size: 13px; }}
table {{ border-collapse: collapse; width: 100%; font-size: 13px; }}
th, td {{ border-bottom: 1px solid #e5e7eb; padding: 4px 6px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
.error {{ color: #b91c1c; }}
svg {{ max-width: 100%; height: auto; display: block; margin: 8px 0; }}
svg .label {{ font-size: 13px; fill: #111827; }}
svg .value, svg .tick {{ font-size: 11px; fill: #374151; }}
svg .small {{ font-size: 9px; fill: #374151; }}
svg .note {{ font-size: 12px; fill: #9ca3af; }}
svg .grid {{ stroke: #e5e7eb; stroke-width: 1; }}
pre {{ background: #f9fafb; padding: 8px; overflow-x: auto; font-size: 12px; }}
</style>
</head>
<body>
<h1>readstate bench</h1>
<p class="meta">Preset <b>{preset}</b>: {users} users, {channels} channels, {states} read states, seed {seed}. {conns} connections, {dur} s per phase, mix {mix}; readstate on {storage} ({durability}). Machine: {cores} cores, {mem}{cpu}. Commit {commit}, {date}.</p>
"#,
        preset = esc(p.preset),
        users = thousands(f64::from(p.users)),
        channels = thousands(f64::from(p.channels)),
        states = thousands(p.read_states as f64),
        seed = p.seed,
        conns = p.connections,
        dur = p.duration_s,
        mix = esc(&p.mix),
        storage = esc(&p.storage),
        durability = esc(&p.durability),
        cores = results.machine.cores,
        mem = results
            .machine
            .memory_bytes
            .map_or("unknown memory".to_owned(), |b| format!(
                "{:.1} GB memory",
                b as f64 / 1e9
            )),
        cpu = results
            .machine
            .cpu
            .as_ref()
            .map_or(String::new(), |c| format!(", {}", esc(c))),
        commit = esc(results.git_commit.as_deref().unwrap_or("unknown")),
        date = utc(results.started_at_unix_s),
    );

    // Headline: readstate relative to each peer.
    html.push_str("<h2>readstate relative to each peer</h2>\n<div class=\"cards\">\n");
    if results.ratios.is_empty() {
        html.push_str("<p>readstate was not measured in this run, so there are no ratios.</p>\n");
    }
    for (pair, r) in &results.ratios {
        let times = |v: Option<f64>| opt(v, &|v| format!("{v:.2}×"));
        let _ = writeln!(
            html,
            r#"<div class="card"><div class="sub">{}</div><div class="big">{}</div><div class="sub">throughput (higher is better)</div><div class="sub">server CPU per op {} · at the fixed rate {} (lower is better)</div><div class="sub">p99 {} · p99.9 {} · max {} (lower is better)</div><div class="sub">bytes per read state {} · RSS {}</div></div>"#,
            esc(pair),
            times(r.ops_per_sec),
            times(r.cpu_us_per_op),
            times(r.fixed_rate_cpu_us_per_op),
            times(r.p99_ms),
            times(r.p999_ms),
            times(r.max_ms),
            times(r.bytes_per_read_state),
            times(r.rss_bytes_per_read_state),
        );
    }
    html.push_str("</div>\n<p class=\"meta\">Ratios are readstate's figure divided by the peer's, measured in the same run on the same machine with the same load generator.</p>\n");

    let note = |t: &TargetResult| {
        t.error.as_ref().map_or("not applicable".to_owned(), |e| {
            format!("not measured: {}", e.lines().next().unwrap_or_default())
        })
    };
    html.push_str("<h2>Throughput at saturation</h2>\n<p class=\"meta\">Closed loop: every connection sends its next request as soon as the previous one is answered. Successful operations per second.</p>\n");
    let rows: Vec<(String, Option<f64>, String)> = results
        .targets
        .iter()
        .map(|(n, t)| (n.clone(), t.ops_per_sec, note(t)))
        .collect();
    html.push_str(&bar_chart(&rows, &|v| format!("{} ops/s", thousands(v))));

    html.push_str("\n<h2>Server CPU per operation</h2>\n<p class=\"meta\">CPU time (user + system, all threads, from <code>/proc/&lt;pid&gt;/stat</code>) the target's server processes used during the saturation phase, divided by the operations that succeeded in it: what an operation costs the machine, apart from the load generator. Lower is better. What each figure counts is under “What each target is”.</p>\n");
    let cpu_note = |t: &TargetResult| {
        if t.error.is_some() {
            note(t)
        } else {
            t.cpu_basis
                .as_deref()
                .map_or("not measured".to_owned(), str::to_owned)
        }
    };
    let rows: Vec<(String, Option<f64>, String)> = results
        .targets
        .iter()
        .map(|(n, t)| (n.clone(), t.cpu_us_per_op, cpu_note(t)))
        .collect();
    html.push_str(&bar_chart(&rows, &|v| format!("{v:.1} µs/op")));

    html.push_str("\n<h2>Latency at a fixed rate</h2>\n<p class=\"meta\">Open loop at the rate shown below the table (by default half of each target's own saturation figure), corrected for coordinated omission: a request that had to wait for a slow earlier one is timed from when it was due. Log scale.</p>\n");
    let lat: Vec<(&str, [Option<f64>; 4])> = results
        .targets
        .iter()
        .filter(|(_, t)| t.error.is_none())
        .map(|(n, t)| (n.as_str(), [t.p50_ms, t.p99_ms, t.p999_ms, t.max_ms]))
        .collect();
    html.push_str(&latency_chart(&lat));

    html.push_str("\n<h2>Memory per read state</h2>\n<p class=\"meta\">readstate: growth of the server's resident set over the population, divided by the read states. Redis: growth of <code>used_memory</code>. The floor holds nothing; PostgreSQL keeps its state on disk (its size on disk is in the table below).</p>\n");
    let rows: Vec<(String, Option<f64>, String)> = results
        .targets
        .iter()
        .map(|(n, t)| (n.clone(), t.bytes_per_read_state, note(t)))
        .collect();
    html.push_str(&bar_chart(&rows, &|v| format!("{v:.1} bytes")));
    html.push_str("\n<h3>Resident set growth per read state</h3>\n<p class=\"meta\">The same growth counted as resident memory on both sides: readstate's RSS, Redis' <code>used_memory_rss</code> (allocator fragmentation included).</p>\n");
    let rows: Vec<(String, Option<f64>, String)> = results
        .targets
        .iter()
        .map(|(n, t)| (n.clone(), t.rss_bytes_per_read_state, note(t)))
        .collect();
    html.push_str(&bar_chart(&rows, &|v| format!("{v:.1} bytes")));

    let has_soak = results.targets.iter().any(|(_, t)| t.soak.is_some());
    let _ = write!(
        html,
        "\n<h2>Over time ({})</h2>\n<p class=\"meta\">One point per second: latency percentiles of the requests answered in that second and the server's memory (resident set; Redis <code>used_memory</code>).</p>\n",
        if has_soak {
            "soak"
        } else {
            "fixed-rate phase; run with --soak 10m for a long one"
        }
    );
    for (title, pick, unit, scale) in [
        ("p99 latency (log scale)", 0_u8, "ms", Scale::Log),
        ("p50 latency (log scale)", 1, "ms", Scale::Log),
        ("memory", 2, "MB", Scale::Linear),
    ] {
        let series: Vec<(&str, Vec<(f64, f64)>)> = results
            .targets
            .iter()
            .filter_map(|(n, t)| {
                let phase = timeline(t)?;
                let points: Vec<(f64, f64)> = phase
                    .samples
                    .iter()
                    .filter_map(|s| {
                        let y = match pick {
                            0 => s.p99_ms?,
                            1 => s.p50_ms?,
                            _ => s.memory_bytes? as f64 / 1e6,
                        };
                        Some((s.t_s, y))
                    })
                    .collect();
                (!points.is_empty()).then_some((n.as_str(), points))
            })
            .collect();
        let _ = writeln!(html, "<h3>{}</h3>", esc(title));
        html.push_str(&line_chart(&series, unit, scale));
        html.push('\n');
    }

    html.push_str("\n<h2>All figures</h2>\n<table>\n<tr><th>target</th><th>ops/s</th><th>CPU µs/op</th><th>p50 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th><th>fixed rate (target)</th><th>CPU µs/op (fixed)</th><th>errors</th><th>bytes / read state</th><th>RSS bytes / read state</th><th>disk bytes / read state</th><th>population s (retries)</th></tr>\n");
    for (name, t) in &results.targets {
        if let Some(error) = &t.error {
            let _ = writeln!(
                html,
                r#"<tr><td>{}</td><td colspan="13" class="error">not measured: {}</td></tr>"#,
                esc(name),
                esc(error)
            );
            continue;
        }
        let errors = [&t.saturation, &t.fixed_rate, &t.soak]
            .iter()
            .filter_map(|p| p.as_ref().map(|p| p.errors))
            .sum::<u64>();
        let target_rate = t.fixed_rate.as_ref().and_then(|f| f.target_rate);
        let population = t.population.as_ref().map_or("–".to_owned(), |p| {
            let seconds = if p.reused {
                "reused".to_owned()
            } else {
                opt(p.seconds, &|v| format!("{v:.1}"))
            };
            format!("{seconds} ({})", p.retries)
        });
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ({})</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(name),
            opt(t.ops_per_sec, &thousands),
            opt(t.cpu_us_per_op, &|v| format!("{v:.1}")),
            opt(t.p50_ms, &fmt_ms),
            opt(t.p99_ms, &fmt_ms),
            opt(t.p999_ms, &fmt_ms),
            opt(t.max_ms, &fmt_ms),
            opt(t.fixed_rate_ops_per_sec, &thousands),
            opt(target_rate, &thousands),
            opt(t.fixed_rate_cpu_us_per_op, &|v| format!("{v:.1}")),
            errors,
            opt(t.bytes_per_read_state, &|v| format!("{v:.1}")),
            opt(t.rss_bytes_per_read_state, &|v| format!("{v:.1}")),
            opt(t.disk_bytes_per_read_state, &|v| format!("{v:.1}")),
            esc(&population),
        );
    }
    html.push_str("</table>\n");

    html.push_str("<h2>Per operation, fixed rate</h2>\n<table>\n<tr><th>target</th><th>operation</th><th>count</th><th>p50 ms</th><th>p99 ms</th></tr>\n");
    for (name, t) in &results.targets {
        let Some(fixed) = &t.fixed_rate else { continue };
        for (op, f) in &fixed.per_op {
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(name),
                esc(op),
                f.count,
                opt(f.p50_ms, &fmt_ms),
                opt(f.p99_ms, &fmt_ms)
            );
        }
    }
    html.push_str("</table>\n<h2>What each target is</h2>\n<table>\n");
    for (name, t) in &results.targets {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td style=\"text-align:left\">{}{}{}</td></tr>",
            esc(name),
            esc(&t.description),
            t.memory_basis
                .as_ref()
                .map_or(String::new(), |m| format!(" Memory: {}.", esc(m))),
            t.cpu_basis
                .as_ref()
                .map_or(String::new(), |c| format!(" CPU: {}.", esc(c)))
        );
    }
    html.push_str("</table>\n<h2>Parameters</h2>\n<pre>");
    html.push_str(&esc(
        &serde_json::to_string_pretty(&results.params).unwrap_or_default()
    ));
    html.push_str("</pre>\n</body>\n</html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_numbers_render_plainly() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_827_696), "2000-02-29 12:34 UTC");
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(esc("<a href=\"x\">&"), "&lt;a href=&quot;x&quot;&gt;&amp;");
        assert_eq!(nice_step(97.0, 5.0), 20.0);
    }

    #[test]
    fn charts_balance_their_svg_tags() {
        let bars = bar_chart(
            &[
                ("readstate".into(), Some(3.0), String::new()),
                ("redis".into(), None, "down".into()),
            ],
            &|v| format!("{v}"),
        );
        let lat = latency_chart(&[("floor", [Some(0.1), Some(1.0), None, Some(30.0)])]);
        let lines = line_chart(
            &[("readstate", vec![(1.0, 2.0), (2.0, 3.0)])],
            "ms",
            Scale::Linear,
        );
        let log = line_chart(
            &[("redis", vec![(1.0, 0.2), (2.0, 3000.0), (3.0, 0.0)])],
            "ms",
            Scale::Log,
        );

        for svg in [bars, lat, lines, log] {
            assert_eq!(svg.matches("<svg").count(), 1);
            assert!(svg.ends_with("</svg>"));
        }
    }
}
