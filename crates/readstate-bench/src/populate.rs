//! Bulk population of a readstate server over its own API: `POST /v1/batch` with
//! `message_created` ops (each channel's first messages) and then `join` ops (every
//! read state at its starting position), several batches in flight at once. Also
//! the read-through that loads every user into a restarted server's cache.
//!
//! Like a real bulk loader, it takes the server's back pressure: a 503 (or ops
//! whose results are `overloaded`, `unavailable` or `timeout`) is retried after the
//! `Retry-After` wait, resending only the ops that failed (every op is idempotent),
//! and it gives up only when the server accepted nothing for 10 minutes. The
//! retries are counted and reported (`population.retries`).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use futures_util::future::try_join_all;
use hyper::{Method, StatusCode};
use indicatif::{ProgressBar, ProgressStyle};

use super::client::{HttpClient, check_status};
use super::dataset::Dataset;

/// Ops per batch request (readstate's default `limits.max_batch_ops`).
pub const BATCH_OPS: u64 = 1_000;

/// How the population backs off when the server pushes back: 100 ms to 5 s per
/// wait, and it gives up after 10 minutes in which no op was accepted.
pub const POPULATION_RETRY: RetryPolicy = RetryPolicy {
    min_wait: Duration::from_millis(100),
    max_wait: Duration::from_secs(5),
    patience: Duration::from_secs(600),
};

/// The problem slugs a client should retry (readstate's retryable kinds, answered
/// 503 + `Retry-After` to a request, or as a batch op's result).
const RETRYABLE: [&str; 3] = ["overloaded", "unavailable", "timeout"];

/// A bulk loader's back-off: wait what the server asks (`Retry-After`), else an
/// exponential back-off from `min_wait`; never less than `min_wait` nor more than
/// `max_wait`, plus up to 25 % of jitter (within `max_wait`) so that loaders do not
/// come back in lockstep; give up once nothing was accepted for `patience`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub min_wait: Duration,
    pub max_wait: Duration,
    pub patience: Duration,
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (1 for the first retry), given the
    /// server's `Retry-After`, how long nothing has been accepted, and a `jitter`
    /// in `[0, 1)`. `None`: give up.
    pub fn next_wait(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        stalled_for: Duration,
        jitter: f64,
    ) -> Option<Duration> {
        if stalled_for >= self.patience {
            return None;
        }
        let backoff = || {
            let doublings = attempt.saturating_sub(1).min(16);
            self.min_wait.saturating_mul(1 << doublings)
        };
        let base = retry_after
            .unwrap_or_else(backoff)
            .clamp(self.min_wait, self.max_wait);
        let ceiling = base.mul_f64(1.25).min(self.max_wait);
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        Some(base + (ceiling - base).mul_f64(jitter))
    }
}

/// The delay a `Retry-After` value asks for: delay-seconds (`"1"`) or an
/// HTTP-date (`"Sun, 06 Nov 1994 08:49:37 GMT"`, relative to `now_unix_s`; a date
/// in the past is no delay). `None` for anything else.
pub fn parse_retry_after(value: &str, now_unix_s: u64) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = parse_http_date(value)?;
    Some(Duration::from_secs(at.saturating_sub(now_unix_s)))
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) → Unix seconds.
fn parse_http_date(value: &str) -> Option<u64> {
    let (_, rest) = value.split_once(", ")?;
    let parts: Vec<&str> = rest.split_whitespace().collect();
    let [day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m == month)? as i64 + 1;
    let day: i64 = day.parse().ok()?;
    let year: i64 = year.parse().ok()?;
    let mut hms = time.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 || hms.next().is_some() {
        return None;
    }
    // Days from civil (proleptic Gregorian), the inverse of html::civil_from_days.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3_600 + m * 60 + s).ok()
}

/// What to do with a batch's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Every op was applied.
    Done,
    /// Resend the ops at these positions of the batch (all of them after a 503).
    Retry { positions: Vec<usize>, why: String },
    /// A failure no retry can fix.
    Failed(String),
}

/// The problem slug of a problem body's `type` URI.
fn problem_slug(problem: &serde_json::Value) -> &str {
    problem
        .get("type")
        .and_then(serde_json::Value::as_str)
        .map_or("", |t| t.rsplit('/').next().unwrap_or(t))
}

/// Judges the answer to a batch of `ops` ops.
fn judge(status: StatusCode, body: &[u8], ops: usize) -> Verdict {
    let text = || String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        return Verdict::Retry {
            positions: (0..ops).collect(),
            why: format!("HTTP 503: {}", text()),
        };
    }
    if let Err(e) = check_status(status, body) {
        return Verdict::Failed(format!("{e:#}"));
    }
    let Ok(answer) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Verdict::Failed(format!("the batch answer is not JSON: {}", text()));
    };
    let Some(results) = answer.get("results").and_then(serde_json::Value::as_array) else {
        return Verdict::Failed(format!("the batch answer has no results: {}", text()));
    };
    if results.len() != ops {
        return Verdict::Failed(format!(
            "the batch answer has {} results for {ops} ops",
            results.len()
        ));
    }
    let mut positions = Vec::new();
    let mut why = String::new();
    for (i, result) in results.iter().enumerate() {
        if result.get("ok").and_then(serde_json::Value::as_bool) == Some(true) {
            continue;
        }
        let problem = result.get("error").cloned().unwrap_or_default();
        if !RETRYABLE.contains(&problem_slug(&problem)) {
            return Verdict::Failed(format!("a batch op failed: {problem}"));
        }
        if why.is_empty() {
            why = format!("op {i}: {problem}");
        }
        positions.push(i);
    }
    if positions.is_empty() {
        Verdict::Done
    } else {
        Verdict::Retry { positions, why }
    }
}

/// What a population (or a read of every user) shares between its workers: when
/// the server last accepted something, and the retries.
#[derive(Debug)]
struct Pushback {
    started: std::time::Instant,
    /// Milliseconds from `started` to the last accepted op.
    last_progress_ms: AtomicU64,
    retries: AtomicU64,
    waited_us: AtomicU64,
}

impl Pushback {
    fn new() -> Self {
        Self {
            started: std::time::Instant::now(),
            last_progress_ms: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            waited_us: AtomicU64::new(0),
        }
    }

    fn progressed(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_progress_ms.fetch_max(now, Ordering::Relaxed);
    }

    fn stalled_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_progress_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// Waits before retry `attempt`, or explains why it gives up.
    async fn back_off(
        &self,
        attempt: u32,
        retry_after: Option<&str>,
        why: &str,
    ) -> anyhow::Result<()> {
        let asked = retry_after.and_then(|v| parse_retry_after(v, unix_now()));
        let Some(wait) =
            POPULATION_RETRY.next_wait(attempt, asked, self.stalled_for(), rand::random::<f64>())
        else {
            bail!(
                "gave up after {attempt} attempts: the server accepted nothing for {} s (the bound is {} s); its last answer: {why}",
                self.stalled_for().as_secs(),
                POPULATION_RETRY.patience.as_secs()
            );
        };
        self.retries.fetch_add(1, Ordering::Relaxed);
        self.waited_us.fetch_add(
            u64::try_from(wait.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        tokio::time::sleep(wait).await;
        Ok(())
    }

    fn stats(&self) -> PopulationStats {
        PopulationStats {
            retries: self.retries.load(Ordering::Relaxed),
            retry_wait_s: self.waited_us.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How often the server pushed back during a population.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PopulationStats {
    /// Requests sent again after a 503 or retryable op results.
    pub retries: u64,
    /// Seconds spent waiting before those retries.
    pub retry_wait_s: f64,
}

impl PopulationStats {
    fn add(self, other: Self) -> Self {
        Self {
            retries: self.retries + other.retries,
            retry_wait_s: self.retry_wait_s + other.retry_wait_s,
        }
    }
}

/// A progress bar on stderr (drawn only on a terminal).
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(
        "{prefix:<40} [{bar:30}] {human_pos}/{human_len} ({per_sec}, {eta} left)",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(what.to_owned());
    bar
}

/// Which ops a batch job writes.
#[derive(Clone, Copy)]
enum Stage {
    /// Op `i`: message `i % m + 1` of channel `i / m`.
    Messages,
    /// Op `i`: the `i % k`-th read state of user `i / k`.
    Joins,
}

fn batch_body(data: &Dataset, stage: Stage, ops: &[u64], body: &mut String) {
    body.clear();
    body.push_str("{\"ops\":[");
    for (n, &i) in ops.iter().enumerate() {
        if n > 0 {
            body.push(',');
        }
        match stage {
            Stage::Messages => {
                let m = u64::from(data.shape.messages_per_channel);
                let channel = Dataset::channel_id((i / m) as usize);
                let _ = write!(
                    body,
                    r#"{{"op":"message_created","channel_id":{channel},"message_id":{}}}"#,
                    i % m + 1
                );
            }
            Stage::Joins => {
                let k = data.per_user() as u64;
                let user = (i / k) as usize;
                let j = (i % k) as usize;
                let channel = Dataset::channel_id(data.channels_of(user)[j] as usize);
                let position = data.read_positions_of(user)[j];
                let _ = write!(
                    body,
                    r#"{{"op":"join","user_id":{},"channel_id":{channel},"last_read_message_id":{position}}}"#,
                    Dataset::user_id(user)
                );
            }
        }
    }
    body.push_str("]}");
}

/// Sends ops `ops` of `stage` until every one is applied, backing off as the
/// server asks and resending only the ops that failed (they are idempotent).
async fn send_batch(
    client: &mut HttpClient,
    data: &Dataset,
    stage: Stage,
    mut ops: Vec<u64>,
    body: &mut String,
    pushback: &Pushback,
    progress: &ProgressBar,
) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        batch_body(data, stage, &ops, body);
        let answer = match client
            .send_full(Method::POST, "/v1/batch", Some(Bytes::from(body.clone())))
            .await
        {
            Ok(answer) => answer,
            // A keep-alive connection the server closed while this worker waited (or
            // any other connection error): the ops are idempotent, so reconnect and
            // send them again, within the same patience as for 503s.
            Err(e) => {
                attempt += 1;
                pushback
                    .back_off(attempt, None, &format!("connection error: {e:#}"))
                    .await?;
                continue;
            }
        };
        match judge(answer.status, &answer.body, ops.len()) {
            Verdict::Done => {
                pushback.progressed();
                progress.inc(ops.len() as u64);
                return Ok(());
            }
            Verdict::Failed(why) => bail!(why),
            Verdict::Retry { positions, why } => {
                if positions.len() < ops.len() {
                    pushback.progressed();
                    progress.inc((ops.len() - positions.len()) as u64);
                }
                ops = positions.iter().map(|&p| ops[p]).collect();
                attempt += 1;
                pushback
                    .back_off(attempt, answer.retry_after.as_deref(), &why)
                    .await?;
            }
        }
    }
}

async fn run_stage(
    addr: SocketAddr,
    data: &Arc<Dataset>,
    stage: Stage,
    total: u64,
    connections: usize,
    label: &str,
) -> anyhow::Result<PopulationStats> {
    let progress = bar(total, label);
    let next = Arc::new(AtomicU64::new(0));
    let pushback = Arc::new(Pushback::new());
    let workers = (0..connections.max(1)).map(|_| {
        let data = Arc::clone(data);
        let next = Arc::clone(&next);
        let progress = progress.clone();
        let pushback = Arc::clone(&pushback);
        async move {
            let mut client = HttpClient::connect(addr).await?;
            let mut body = String::with_capacity(BATCH_OPS as usize * 96);
            loop {
                let from = next.fetch_add(BATCH_OPS, Ordering::Relaxed);
                if from >= total {
                    return anyhow::Ok(());
                }
                let to = (from + BATCH_OPS).min(total);
                send_batch(
                    &mut client,
                    &data,
                    stage,
                    (from..to).collect(),
                    &mut body,
                    &pushback,
                    &progress,
                )
                .await
                .with_context(|| format!("while sending ops {from}..{to}"))?;
            }
        }
    });
    let result = try_join_all(workers).await.map(|_| pushback.stats());
    progress.finish_and_clear();
    result
}

/// Loads the data set into the readstate server at `addr` over `connections`
/// concurrent batch requests.
///
/// A 503 or a retryable op result is retried after the wait the server asks for
/// ([`POPULATION_RETRY`]); the retries are counted.
///
/// # Errors
/// A failed request or op, or a server that accepted nothing for 10 minutes.
pub async fn populate_http(
    addr: SocketAddr,
    data: &Arc<Dataset>,
    connections: usize,
    target: &str,
) -> anyhow::Result<PopulationStats> {
    let messages = u64::from(data.shape.channels) * u64::from(data.shape.messages_per_channel);
    let first = run_stage(
        addr,
        data,
        Stage::Messages,
        messages,
        connections,
        &format!("{target}: populate messages"),
    )
    .await
    .context("while creating the channels' first messages")?;
    let second = run_stage(
        addr,
        data,
        Stage::Joins,
        data.read_states(),
        connections,
        &format!("{target}: populate read states"),
    )
    .await
    .context("while joining users to their channels")?;
    Ok(first.add(second))
}

/// Reads every user's read states once (`GET /v1/users/{id}/read-states`), which
/// loads them all into a freshly started server's cache.
///
/// A 503 is retried as in [`populate_http`].
///
/// # Errors
/// A failed request, or a server that answered nothing for 10 minutes.
pub async fn read_every_user(
    addr: SocketAddr,
    users: u32,
    connections: usize,
    target: &str,
) -> anyhow::Result<PopulationStats> {
    let progress = bar(u64::from(users), &format!("{target}: load every user"));
    let next = Arc::new(AtomicU64::new(1));
    let pushback = Arc::new(Pushback::new());
    let workers = (0..connections.max(1)).map(|_| {
        let next = Arc::clone(&next);
        let progress = progress.clone();
        let pushback = Arc::clone(&pushback);
        async move {
            let mut client = HttpClient::connect(addr).await?;
            loop {
                let user = next.fetch_add(1, Ordering::Relaxed);
                if user > u64::from(users) {
                    return anyhow::Ok(());
                }
                let path = format!("/v1/users/{user}/read-states");
                let mut attempt = 0;
                loop {
                    let answer = client.send_full(Method::GET, &path, None).await?;
                    if answer.status != StatusCode::SERVICE_UNAVAILABLE {
                        check_status(answer.status, &answer.body)?;
                        break;
                    }
                    attempt += 1;
                    let why = String::from_utf8_lossy(&answer.body).into_owned();
                    pushback
                        .back_off(attempt, answer.retry_after.as_deref(), &why)
                        .await?;
                }
                pushback.progressed();
                progress.inc(1);
            }
        }
    });
    let result = try_join_all(workers).await.map(|_| pushback.stats());
    progress.finish_and_clear();
    result
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::dataset::Shape;

    #[test]
    fn batch_bodies_are_valid_batches_covering_the_data_set() {
        let shape = Shape {
            users: 50,
            channels: 10,
            read_states: 150,
            messages_per_channel: 4,
        };
        let data = Dataset::generate(shape, 2, &|_| {}).unwrap();
        let mut body = String::new();

        batch_body(
            &data,
            Stage::Messages,
            &(0..40).collect::<Vec<_>>(),
            &mut body,
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let ops = v["ops"].as_array().unwrap();
        assert_eq!(ops.len(), 40);
        assert_eq!(ops[5]["channel_id"], 2);
        assert_eq!(ops[5]["message_id"], 2);

        batch_body(&data, Stage::Joins, &[3, 4, 5], &mut body);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let ops = v["ops"].as_array().unwrap();
        assert_eq!(ops.len(), 3);
        let rows: Vec<(u64, u64, u64)> = data.read_state_rows().skip(3).take(3).collect();
        for (op, (user, channel, position)) in ops.iter().zip(rows) {
            assert_eq!(op["op"], "join");
            assert_eq!(op["user_id"], user);
            assert_eq!(op["channel_id"], channel);
            assert_eq!(op["last_read_message_id"], position);
        }
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:40 GMT", now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past asks for no wait"
        );
        assert_eq!(
            parse_retry_after("Thu, 29 Feb 2024 00:00:00 GMT", 0),
            Some(Duration::from_secs(1_709_164_800))
        );
        for bad in [
            "",
            "-1",
            "1.5",
            "soon",
            "Sun, 06 Nov 1994 25:00:00 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn the_retry_policy_waits_as_asked_within_bounds_and_gives_up_when_stalled() {
        let p = POPULATION_RETRY;
        let fresh = Duration::ZERO;
        let secs = Duration::from_secs;
        let ms = Duration::from_millis;

        // As asked, plus at most 25 % of jitter.
        assert_eq!(p.next_wait(1, Some(secs(1)), fresh, 0.0), Some(secs(1)));
        assert_eq!(
            p.next_wait(1, Some(secs(1)), fresh, 0.999_999)
                .map(|d| d.as_millis()),
            Some(1_249)
        );
        assert_eq!(p.next_wait(1, Some(secs(2)), fresh, 0.5), Some(ms(2_250)));
        // At least 100 ms, at most 5 s, jitter included.
        assert_eq!(
            p.next_wait(1, Some(Duration::ZERO), fresh, 0.0),
            Some(ms(100))
        );
        assert_eq!(p.next_wait(1, Some(secs(3_600)), fresh, 0.9), Some(secs(5)));
        assert_eq!(p.next_wait(1, Some(secs(4_500)), fresh, 1.0), Some(secs(5)));
        assert_eq!(p.next_wait(1, Some(ms(4_500)), fresh, 1.0), Some(secs(5)));
        // Without Retry-After: exponential from 100 ms, capped.
        assert_eq!(p.next_wait(1, None, fresh, 0.0), Some(ms(100)));
        assert_eq!(p.next_wait(2, None, fresh, 0.0), Some(ms(200)));
        assert_eq!(p.next_wait(4, None, fresh, 0.0), Some(ms(800)));
        assert_eq!(p.next_wait(40, None, fresh, 0.0), Some(secs(5)));
        // A nonsense jitter is no jitter.
        assert_eq!(
            p.next_wait(1, Some(secs(1)), fresh, f64::NAN),
            Some(secs(1))
        );
        // Patience: 10 minutes without any accepted op.
        assert!(p.next_wait(1_000, Some(secs(1)), secs(599), 0.0).is_some());
        assert_eq!(p.next_wait(1, Some(secs(1)), secs(600), 0.0), None);
    }

    #[test]
    fn batch_answers_are_judged_op_by_op() {
        let problem = |slug: &str| {
            format!(
                r#"{{"ok":false,"error":{{"type":"https://readstate.dev/problems/{slug}","title":"x","status":503,"detail":"d"}}}}"#
            )
        };
        let ok = r#"{"ok":true}"#;

        let all_ok = format!(r#"{{"results":[{ok},{ok}]}}"#);
        assert_eq!(judge(StatusCode::OK, all_ok.as_bytes(), 2), Verdict::Done);

        let some = format!(
            r#"{{"results":[{ok},{},{ok},{}]}}"#,
            problem("overloaded"),
            problem("timeout")
        );
        let Verdict::Retry { positions, why } = judge(StatusCode::OK, some.as_bytes(), 4) else {
            panic!("retryable op results are retried")
        };
        assert_eq!(positions, [1, 3]);
        assert!(why.contains("overloaded"), "{why}");

        let Verdict::Retry { positions, .. } = judge(
            StatusCode::SERVICE_UNAVAILABLE,
            problem("unavailable").as_bytes(),
            3,
        ) else {
            panic!("a 503 is retried whole")
        };
        assert_eq!(positions, [0, 1, 2]);

        let bad = format!(r#"{{"results":[{ok},{}]}}"#, problem("invalid-input"));
        assert!(matches!(
            judge(StatusCode::OK, bad.as_bytes(), 2),
            Verdict::Failed(_)
        ));
        assert!(matches!(
            judge(StatusCode::BAD_REQUEST, b"{}", 2),
            Verdict::Failed(_)
        ));
        assert!(matches!(
            judge(StatusCode::OK, all_ok.as_bytes(), 3),
            Verdict::Failed(_)
        ));
        assert!(matches!(
            judge(StatusCode::OK, b"nope", 1),
            Verdict::Failed(_)
        ));
    }
}
