//! Scaling out, with failures: three readstate nodes on one PostgreSQL database
//! (`storage.commit = "direct"`) behind nginx (consistent hashing by user), the NATS
//! ingest on a three-server JetStream cluster (stream replicas = 3), all started by
//! `scripts/cluster`. A random workload runs through nginx (messages, deletions,
//! joins, acks, mark unread) and through NATS (messages, deletions, joins, acks) for
//! `READSTATE_CLUSTER_SECS` (30, at least 20) seconds; mid-run one readstate node and the NATS
//! server leading the stream get `kill -9`, and both are restarted a few seconds
//! later. Afterwards, once the ingest has drained, every user's read states are read
//! from every node directly (not through nginx) and checked against the acknowledged
//! writes: each one is reflected on each node, and the states equal the reference
//! model (`readstate::domain::Model`) applied to the acknowledged operations.
//!
//! Soundness: an operation whose outcome is unknown (every attempt failed) may or
//! may not have been applied, so the read states it could touch are checked against
//! bounds (the model without it and with it) instead of for equality. Everything but
//! mark unread commutes (merges), so the model may apply acknowledged operations in
//! any order; mark unread and acks of the same read state do not commute, so those
//! read states (users 1..=UNREAD_USERS) are each written by one writer, one request
//! at a time, never through NATS, and one with a failed attempt is left out of the
//! equality check (a failed attempt may still land later). That also keeps them on
//! one node (nginx hashes by user) but for a failover: an ack applied on a node that
//! has not yet seen another node's mark unread of the same state is lost
//! (docs/OPERATIONS.md, "Scaling out"), which this test does not provoke.
//!
//! `scripts/cluster --check` runs this test with the release binary
//! (`READSTATE_CLUSTER_BIN`); plain `cargo test --test cluster` uses the binary cargo
//! built for it. `READSTATE_CLUSTER_SEED` repeats a run's random choices;
//! `READSTATE_CLUSTER_KEEP=1` keeps the cluster's temp dir (logs, configs).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use readstate::domain::{Caps, ChannelId, MessageId, Model, Op, UserEffect, UserId, expand};
use serde_json::{Value, json};
use tokio::time::MissedTickBehavior;

use support::nats::{Rng, view_json};

/// Users 1..=USERS; users 1..=UNREAD_USERS get mark unread (and acks from one writer
/// only), the others only commuting writes.
const USERS: u64 = 240;
const UNREAD_USERS: u64 = 24;
const CHANNELS: u64 = 24;
const HTTP_WRITERS: u64 = 4;
/// Requests per second per HTTP writer, at most (each waits for its answer).
const HTTP_RATE: u64 = 150;
/// Events per second through NATS, at most.
const NATS_RATE: u64 = 300;
/// When the kills happen, and how long the two processes stay dead (longer than the
/// stream takes to elect a new leader, about 6 s with nats-server 2.9, so that the
/// stream is seen to work on two of its three servers).
const KILL_AT: Duration = Duration::from_secs(8);
const DEAD_FOR: Duration = Duration::from_secs(10);
/// How long one write is retried (every write is idempotent) before its outcome is
/// recorded as unknown.
const RETRY_FOR: Duration = Duration::from_secs(20);

// --- the cluster --------------------------------------------------------------------

/// `scripts/cluster` running in the foreground, and where its parts are. Dropping it
/// stops the script, which stops everything it started (by pid) and drops the
/// database.
struct Cluster {
    script: Child,
    _dir: tempfile::TempDir,
    output: PathBuf,
    nginx: String,
    nginx_one: String,
    nodes: Vec<String>,
    node_dirs: Vec<PathBuf>,
    nats_urls: Vec<String>,
    nats_dirs: Vec<PathBuf>,
    stream: String,
    subject: String,
    api_key: String,
    database: String,
}

impl Cluster {
    fn start(bin: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("readstate-cluster-test-")
            .tempdir()
            .expect("a temp dir");
        let env_file = dir.path().join("cluster.env");
        let output = dir.path().join("script.log");
        let log = std::fs::File::create(&output).expect("a log file");
        let mut script = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster"))
            .args(["--bin", bin, "--env-file"])
            .arg(&env_file)
            .args(["--parent-pid", &std::process::id().to_string()])
            .args(std::env::var_os("READSTATE_CLUSTER_KEEP").map(|_| "--keep"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a log file"))
            .stderr(log)
            .spawn()
            .expect("bash runs scripts/cluster");
        // Long enough for an nginx or nats-server install from Debian's packages.
        let deadline = Instant::now() + Duration::from_secs(300);
        let env = loop {
            if let Ok(text) = std::fs::read_to_string(&env_file) {
                break text;
            }
            if let Ok(Some(status)) = script.try_wait() {
                panic!(
                    "scripts/cluster exited ({status}) before the cluster was up:\n{}",
                    tail(&output, 15)
                );
            }
            if Instant::now() > deadline {
                stop_script(&mut script);
                panic!(
                    "scripts/cluster did not bring the cluster up within 300 s:\n{}",
                    tail(&output, 15)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let get = |key: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .unwrap_or_else(|| panic!("{key} missing from the cluster's env file:\n{env}"))
                .to_owned()
        };
        let list = |key: &str| get(key).split(',').map(str::to_owned).collect::<Vec<_>>();
        let paths = |key: &str| list(key).into_iter().map(PathBuf::from).collect();
        println!("cluster: {}", get("CLUSTER_DIR"));
        Self {
            nginx: get("NGINX_URL"),
            nginx_one: get("NGINX_ONE_URL"),
            nodes: list("NODE_URLS"),
            node_dirs: paths("NODE_DIRS"),
            nats_urls: list("NATS_URLS"),
            nats_dirs: paths("NATS_DIRS"),
            stream: get("NATS_STREAM"),
            subject: get("NATS_SUBJECT"),
            api_key: get("API_KEY"),
            database: get("DATABASE_URL"),
            script,
            _dir: dir,
            output,
        }
    }

    /// The last lines of each process's log, for failure messages.
    fn logs(&self) -> String {
        let mut out = format!("scripts/cluster:\n{}\n", tail(&self.output, 10));
        for dir in self.node_dirs.iter().chain(&self.nats_dirs) {
            out.push_str(&format!(
                "{}:\n{}\n",
                dir.display(),
                tail(&dir.join("log"), 8)
            ));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        stop_script(&mut self.script);
    }
}

/// SIGTERM to the script, which stops what it started and drops the database; waits
/// for it.
fn stop_script(script: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &script.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = script.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("scripts/cluster did not stop within 90 s; killing it");
    let _ = script.kill();
    let _ = script.wait();
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The pid a launcher recorded in `dir/pid`.
fn pid_in(dir: &Path) -> u32 {
    std::fs::read_to_string(dir.join("pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {}", dir.display()))
}

/// Whether `pid` runs (a zombie does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// `kill -9` of the process in `dir` (started by the script's launcher), then waits
/// until it is gone.
fn kill_9(dir: &Path) {
    let pid = pid_in(dir);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy()),
        "pid {pid} is not the cluster's process in {}",
        dir.display()
    );
    let status = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -9 {pid} failed");
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(Instant::now() < deadline, "pid {pid} survived kill -9");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts the process of `dir` again with the launcher the script wrote.
fn restart(dir: &Path) {
    let status = Command::new(dir.join("run"))
        .status()
        .expect("the launcher runs");
    assert!(status.success(), "{}/run failed", dir.display());
}

// --- operations ----------------------------------------------------------------------

fn uid(u: u64) -> UserId {
    UserId::new(u).expect("a user id")
}
fn cid(c: u64) -> ChannelId {
    ChannelId::new(c).expect("a channel id")
}
fn mid(m: u64) -> MessageId {
    MessageId::new(m).expect("a message id")
}

/// The NATS ingest event of `op` (README "NATS": `type` and the batch op's fields).
fn nats_event(op: &Op) -> Value {
    match op {
        Op::MessageCreated {
            channel,
            message,
            author,
            mentions,
        } => json!({
            "type": "message_created", "channel_id": channel.to_string(),
            "message_id": message.to_string(), "author_id": author.map(|a| a.to_string()),
            "mentions": mentions.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }),
        Op::MessageDeleted { channel, message } => json!({
            "type": "message_deleted", "channel_id": channel.to_string(),
            "message_id": message.to_string(),
        }),
        Op::Join {
            user,
            channel,
            read,
        } => json!({
            "type": "join", "user_id": user.to_string(), "channel_id": channel.to_string(),
            "last_read_message_id": read.map(|r| r.to_string()),
        }),
        Op::Ack {
            user,
            channel,
            message,
            ..
        } => json!({
            "type": "ack", "user_id": user.to_string(), "channel_id": channel.to_string(),
            "message_id": message.to_string(),
        }),
        other => panic!("the workload does not publish {other:?}"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Answered 2xx, or stored by JetStream.
    Acked,
    /// Every attempt failed: maybe applied, maybe not.
    Unknown,
}

#[derive(Debug, Clone)]
struct Done {
    op: Op,
    outcome: Outcome,
    nats: bool,
    /// When the outcome was known.
    at: Instant,
}

/// What the writers share: message ids, recent ids per channel, the stop flag and
/// counters.
struct Shared {
    stop: AtomicBool,
    next_message: AtomicU64,
    recent: Mutex<Vec<Vec<u64>>>,
    http_failed_attempts: AtomicU64,
    nats_failed_attempts: AtomicU64,
    /// The first and the last failed publish.
    nats_failures: Mutex<Option<(Instant, Instant)>>,
    unexpected: Mutex<Vec<String>>,
}

impl Shared {
    fn new() -> Self {
        Self {
            stop: AtomicBool::new(false),
            next_message: AtomicU64::new(1_000),
            recent: Mutex::new(vec![Vec::new(); CHANNELS as usize + 1]),
            http_failed_attempts: AtomicU64::new(0),
            nats_failed_attempts: AtomicU64::new(0),
            nats_failures: Mutex::new(None),
            unexpected: Mutex::new(Vec::new()),
        }
    }

    /// A publish sent at `sent` failed.
    fn nats_failed(&self, sent: Instant) {
        self.nats_failed_attempts.fetch_add(1, Ordering::SeqCst);
        let mut span = self.nats_failures.lock().expect("not poisoned");
        *span = Some(span.map_or((sent, sent), |(first, last)| {
            (first.min(sent), last.max(sent))
        }));
    }

    fn new_message(&self, rng: &mut Rng, channel: u64) -> u64 {
        let id = self
            .next_message
            .fetch_add(1 + rng.below(3), Ordering::SeqCst);
        let mut recent = self.recent.lock().expect("not poisoned");
        let ids = &mut recent[channel as usize];
        ids.push(id);
        if ids.len() > 64 {
            ids.remove(0);
        }
        id
    }

    /// A message id of `channel` to ack, delete or mark unread: mostly a recent one.
    fn some_message(&self, rng: &mut Rng, channel: u64) -> u64 {
        let recent = self.recent.lock().expect("not poisoned");
        let ids = &recent[channel as usize];
        if ids.is_empty() || rng.below(10) == 0 {
            let top = self.next_message.load(Ordering::SeqCst);
            1 + rng.below(top)
        } else {
            ids[rng.below(ids.len() as u64) as usize]
        }
    }
}

/// A commuting operation: message created (by a commuting user, mentioning anyone),
/// deleted, join at position 0, ack by a commuting user.
fn commuting_op(rng: &mut Rng, shared: &Shared) -> Op {
    let channel = 1 + rng.below(CHANNELS);
    let user = UNREAD_USERS + 1 + rng.below(USERS - UNREAD_USERS);
    match rng.below(100) {
        0..40 => Op::MessageCreated {
            channel: cid(channel),
            message: mid(shared.new_message(rng, channel)),
            author: (rng.below(5) > 0).then(|| uid(user)),
            mentions: (0..rng.below(3))
                .map(|_| uid(1 + rng.below(USERS)))
                .collect(),
        },
        40..45 => Op::MessageDeleted {
            channel: cid(channel),
            message: mid(shared.some_message(rng, channel)),
        },
        45..55 => Op::Join {
            user: uid(user),
            channel: cid(channel),
            read: Some(0),
        },
        _ => Op::Ack {
            user: uid(user),
            channel: cid(channel),
            message: mid(shared.some_message(rng, channel)),
            at: None,
        },
    }
}

/// One HTTP writer: commuting ops, and ack or mark unread on the unread users it owns
/// (user % HTTP_WRITERS == writer). Each op is retried until answered 2xx or until
/// RETRY_FOR passes. Returns its ops in the order it sent them, and the unread keys
/// that saw a failed attempt.
async fn http_writer(
    writer: u64,
    seed: u64,
    url: String,
    key: String,
    shared: Arc<Shared>,
) -> (Vec<Done>, BTreeSet<(u64, u64)>) {
    let client = client();
    let mut rng = Rng::new(seed);
    let owned: Vec<u64> = (1..=UNREAD_USERS)
        .filter(|u| u % HTTP_WRITERS == writer)
        .collect();
    let mut done = Vec::new();
    let mut tainted = BTreeSet::new();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / HTTP_RATE));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    while !shared.stop.load(Ordering::SeqCst) {
        tick.tick().await;
        let op = if rng.below(100) < 20 && !owned.is_empty() {
            let user = owned[rng.below(owned.len() as u64) as usize];
            let channel = 1 + rng.below(CHANNELS);
            let message = mid(shared.some_message(&mut rng, channel));
            if rng.below(2) == 0 {
                Op::Unread {
                    user: uid(user),
                    channel: cid(channel),
                    message,
                }
            } else {
                Op::Ack {
                    user: uid(user),
                    channel: cid(channel),
                    message,
                    at: None,
                }
            }
        } else {
            commuting_op(&mut rng, &shared)
        };
        let (method, path, body) = support::binary::http_request(&op);
        let until = Instant::now() + RETRY_FOR;
        let mut outcome = Outcome::Unknown;
        let mut failed = false;
        while Instant::now() < until {
            let mut request = client
                .request(method.clone(), format!("{url}{path}"))
                .bearer_auth(&key);
            if let Some(body) = &body {
                request = request.json(body);
            }
            match request.send().await {
                Ok(res) if res.status().is_success() => {
                    let _ = res.bytes().await;
                    outcome = Outcome::Acked;
                    break;
                }
                Ok(res) if res.status().is_server_error() || res.status().as_u16() == 429 => {}
                Ok(res) => {
                    let status = res.status();
                    let text = res.text().await.unwrap_or_default();
                    shared
                        .unexpected
                        .lock()
                        .expect("not poisoned")
                        .push(format!("{method} {path} {body:?}: {status} {text}"));
                    break;
                }
                Err(_) => {}
            }
            failed = true;
            shared.http_failed_attempts.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100 + rng.below(200))).await;
        }
        if failed
            && let Op::Unread { user, channel, .. } | Op::Ack { user, channel, .. } = &op
            && user.get() <= UNREAD_USERS
        {
            tainted.insert((user.get(), channel.get()));
        }
        done.push(Done {
            op,
            outcome,
            nats: false,
            at: Instant::now(),
        });
    }
    (done, tainted)
}

/// The NATS publisher: commuting events in bursts of 16, each retried until JetStream
/// stores it or RETRY_FOR passes.
async fn nats_publisher(
    seed: u64,
    js: async_nats::jetstream::Context,
    subject: String,
    shared: Arc<Shared>,
) -> Vec<Done> {
    let mut rng = Rng::new(seed);
    let mut done = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_micros(16_000_000 / NATS_RATE));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    while !shared.stop.load(Ordering::SeqCst) {
        tick.tick().await;
        let ops: Vec<Op> = (0..16).map(|_| commuting_op(&mut rng, &shared)).collect();
        let sent = Instant::now();
        let mut acks = Vec::new();
        for op in &ops {
            let payload = serde_json::to_vec(&nats_event(op)).expect("JSON");
            acks.push(js.publish(subject.clone(), payload.into()).await);
        }
        // Awaited together: each ack's timeout (5 s) starts when it is awaited, and a
        // burst sent to a leader that just died gets no ack at all.
        let acks = futures_util::future::join_all(acks.into_iter().map(|ack| async move {
            match ack {
                Ok(future) => future.await.is_ok(),
                Err(_) => false,
            }
        }))
        .await;
        let mut outcomes = vec![(Outcome::Unknown, Instant::now()); ops.len()];
        let mut pending: Vec<(usize, Instant)> = Vec::new();
        for (i, stored) in acks.into_iter().enumerate() {
            if stored {
                outcomes[i] = (Outcome::Acked, Instant::now());
            } else {
                pending.push((i, Instant::now() + RETRY_FOR));
            }
        }
        // Retry the ones that failed, one at a time (the stream may be electing a leader).
        for (i, until) in pending {
            shared.nats_failed(sent);
            let payload = serde_json::to_vec(&nats_event(&ops[i])).expect("JSON");
            while Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(100 + rng.below(200))).await;
                let sent = Instant::now();
                if let Ok(future) = js.publish(subject.clone(), payload.clone().into()).await
                    && future.await.is_ok()
                {
                    outcomes[i] = (Outcome::Acked, Instant::now());
                    break;
                }
                shared.nats_failed(sent);
            }
        }
        done.extend(
            ops.into_iter()
                .zip(outcomes)
                .map(|(op, (outcome, at))| Done {
                    op,
                    outcome,
                    nats: true,
                    at,
                }),
        );
    }
    done
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("a client")
}

// --- the check -----------------------------------------------------------------------

/// What the acknowledged operations determine.
struct Expected {
    /// The model of the acknowledged operations.
    lower: Model,
    /// The model of the acknowledged operations and those of unknown outcome.
    upper: Model,
    /// Read states an operation of unknown outcome may have changed.
    unknown_keys: BTreeSet<(u64, u64)>,
    /// Channels a message operation of unknown outcome may have changed.
    unknown_channels: BTreeSet<u64>,
    /// Unread keys with a failed attempt.
    tainted: BTreeSet<(u64, u64)>,
    /// `(channel, message)` of every deletion sent, acknowledged or not.
    deleted: BTreeSet<(u64, u64)>,
    acked: Vec<Op>,
}

impl Expected {
    fn new(http: &[Vec<Done>], nats: &[Done], tainted: BTreeSet<(u64, u64)>) -> Self {
        let mut lower = Model::new(Caps::default());
        let mut upper = Model::new(Caps::default());
        let (mut unknown_keys, mut unknown_channels) = (BTreeSet::new(), BTreeSet::new());
        let mut acked = Vec::new();
        let mut deleted = BTreeSet::new();
        // Each writer's ops in the order it sent them (mark unread needs that), the
        // writers one after the other (everything else commutes); `now` only has to
        // grow, it stamps mark unread epochs.
        let mut now = 0;
        for done in http.iter().flatten().chain(nats) {
            now += 1;
            upper.apply(&done.op, now);
            if let Op::MessageDeleted { channel, message } = &done.op {
                deleted.insert((channel.get(), message.get()));
            }
            match done.outcome {
                Outcome::Acked => {
                    lower.apply(&done.op, now);
                    acked.push(done.op.clone());
                }
                Outcome::Unknown => {
                    let (channel, users) = expand(&done.op, 0);
                    if let Some(effect) = channel {
                        unknown_channels.insert(effect.channel.get());
                    }
                    for effect in users {
                        if let UserEffect::Ack { channel, .. }
                        | UserEffect::Mention { channel, .. }
                        | UserEffect::Unread { channel, .. }
                        | UserEffect::Join { channel, .. }
                        | UserEffect::Leave { channel, .. } = effect
                        {
                            unknown_keys.insert((effect.user().get(), channel.get()));
                        }
                    }
                }
            }
        }
        Self {
            lower,
            upper,
            unknown_keys,
            unknown_channels,
            tainted,
            deleted,
            acked,
        }
    }

    fn states(model: &Model) -> BTreeMap<(u64, u64), Value> {
        let mut out = BTreeMap::new();
        for u in 1..=USERS {
            for view in model.read_states(uid(u), 0) {
                out.insert((u, view.channel_id), view_json(view));
            }
        }
        out
    }
}

/// Every read state of every user, read from one node directly.
async fn node_states(
    client: &reqwest::Client,
    node: &str,
    key: &str,
) -> Result<BTreeMap<(u64, u64), Value>, String> {
    let mut out = BTreeMap::new();
    for u in 1..=USERS {
        let res = client
            .get(format!("{node}/v1/users/{u}/read-states"))
            .bearer_auth(key)
            .send()
            .await
            .map_err(|e| format!("{node}: GET read-states of user {u}: {e}"))?;
        let status = res.status();
        let body: Value = res
            .json()
            .await
            .map_err(|e| format!("{node}: read-states of user {u}: {e}"))?;
        if !status.is_success() {
            return Err(format!("{node}: read-states of user {u}: {status} {body}"));
        }
        for state in body["read_states"].as_array().into_iter().flatten() {
            let channel: u64 = state["channel_id"]
                .as_str()
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("{node}: a read state without channel_id: {state}"))?;
            out.insert((u, channel), state.clone());
        }
    }
    Ok(out)
}

fn id_field(state: &Value, field: &str) -> u64 {
    state[field]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// What one node's read states break, and how much was checked.
#[derive(Default)]
struct Verdict {
    problems: Vec<String>,
    exact: usize,
    bounded: usize,
    op_checks: usize,
}

fn check_node(
    node: &str,
    states: &BTreeMap<(u64, u64), Value>,
    expected: &Expected,
    lower: &BTreeMap<(u64, u64), Value>,
    upper: &BTreeMap<(u64, u64), Value>,
) -> Verdict {
    let mut v = Verdict::default();
    let problem = |v: &mut Verdict, text: String| {
        if v.problems.len() < 20 {
            v.problems.push(format!("{node}: {text}"));
        } else if v.problems.len() == 20 {
            v.problems.push(format!("{node}: ... and more"));
        }
    };
    // Every acknowledged write is reflected.
    let mut heads: BTreeMap<u64, u64> = BTreeMap::new();
    // `Some(last read)` when `user` has not read `message` in `channel`.
    let unread = |user: UserId, channel: ChannelId, message: MessageId| {
        let read = states
            .get(&(user.get(), channel.get()))
            .map(|s| id_field(s, "last_read_message_id"));
        read.is_none_or(|r| r < message.get()).then_some(read)
    };
    for op in &expected.acked {
        v.op_checks += 1;
        match op {
            Op::Ack {
                user,
                channel,
                message,
                ..
            } if user.get() > UNREAD_USERS => {
                if let Some(read) = unread(*user, *channel, *message) {
                    problem(
                        &mut v,
                        format!(
                            "acknowledged ack of message {message} by user {user} in channel {channel} is not reflected: last read {read:?}"
                        ),
                    );
                }
            }
            Op::MessageCreated {
                channel,
                message,
                author,
                mentions,
            } => {
                if let Some(author) = author
                    && let Some(read) = unread(*author, *channel, *message)
                {
                    problem(
                        &mut v,
                        format!(
                            "acknowledged message {message} in channel {channel}: its author {author} has not read it: last read {read:?}"
                        ),
                    );
                }
                for user in mentions {
                    if !states.contains_key(&(user.get(), channel.get())) {
                        problem(
                            &mut v,
                            format!(
                                "acknowledged message {message} in channel {channel} mentions user {user}, who has no read state there"
                            ),
                        );
                    }
                }
                if !expected.deleted.contains(&(channel.get(), message.get())) {
                    let head = heads.entry(channel.get()).or_default();
                    *head = (*head).max(message.get());
                }
            }
            Op::Join { user, channel, .. }
                if !states.contains_key(&(user.get(), channel.get())) =>
            {
                problem(
                    &mut v,
                    format!(
                        "acknowledged join of user {user} to channel {channel} is not reflected"
                    ),
                );
            }
            _ => {}
        }
    }
    for ((user, channel), state) in states {
        if let Some(&head) = heads.get(channel) {
            let last = id_field(state, "last_message_id");
            if last < head {
                problem(
                    &mut v,
                    format!(
                        "channel {channel}: user {user}'s read state shows last message {last}, but message {head} was acknowledged (and not deleted)"
                    ),
                );
            }
        }
    }
    // The final states equal the model where the acknowledged ops determine them.
    let keys: BTreeSet<(u64, u64)> = states
        .keys()
        .chain(lower.keys())
        .chain(upper.keys())
        .copied()
        .collect();
    for key in keys {
        let (user, channel) = key;
        let (got, low, high) = (states.get(&key), lower.get(&key), upper.get(&key));
        let determined = !expected.unknown_keys.contains(&key)
            && !expected.unknown_channels.contains(&channel)
            && !expected.tainted.contains(&key);
        if determined {
            v.exact += 1;
            if got != low {
                problem(
                    &mut v,
                    format!(
                        "user {user} channel {channel}: {} but the model says {}",
                        got.map_or("no read state".to_owned(), Value::to_string),
                        low.map_or("no read state".to_owned(), Value::to_string)
                    ),
                );
            }
            continue;
        }
        v.bounded += 1;
        if low.is_some() && got.is_none() {
            problem(
                &mut v,
                format!("user {user} channel {channel}: no read state, but the model has one"),
            );
        }
        if got.is_some() && high.is_none() {
            problem(
                &mut v,
                format!(
                    "user {user} channel {channel}: a read state no operation could have made: {}",
                    got.map_or_else(String::new, Value::to_string)
                ),
            );
        }
        if let (Some(got), Some(low), Some(high)) = (got, low, high)
            && user > UNREAD_USERS
        {
            let read = id_field(got, "last_read_message_id");
            let (lo, hi) = (
                id_field(low, "last_read_message_id"),
                id_field(high, "last_read_message_id"),
            );
            if read < lo || read > hi {
                problem(
                    &mut v,
                    format!(
                        "user {user} channel {channel}: last read {read}, outside [{lo}, {hi}] of what was sent"
                    ),
                );
            }
        }
    }
    v
}

// --- throughput ------------------------------------------------------------------------

/// Acks through `url` from `connections` closed-loop tasks for `duration`: answered
/// 2xx per second, and the other answers.
async fn throughput(url: &str, key: &str, connections: u64, duration: Duration) -> (f64, u64) {
    let client = client();
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let until = started + duration;
    let tasks: Vec<_> = (0..connections)
        .map(|task| {
            let (client, url, key, ok, failed) = (
                client.clone(),
                url.to_owned(),
                key.to_owned(),
                ok.clone(),
                failed.clone(),
            );
            tokio::spawn(async move {
                let mut message = 0u64;
                while Instant::now() < until {
                    message += 1;
                    let user = 1_000_000 + task * 1_000 + message % 1_000;
                    let channel = 1 + message % 10;
                    let res = client
                        .post(format!("{url}/v1/users/{user}/channels/{channel}/ack"))
                        .bearer_auth(&key)
                        .json(&json!({ "message_id": message.to_string() }))
                        .send()
                        .await;
                    match res {
                        Ok(res) if res.status().is_success() => {
                            let _ = res.bytes().await;
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a load task");
    }
    let secs = started.elapsed().as_secs_f64();
    (
        ok.load(Ordering::Relaxed) as f64 / secs,
        failed.load(Ordering::Relaxed),
    )
}

// --- the scenario ------------------------------------------------------------------------

async fn ready(client: &reqwest::Client, node: &str) -> bool {
    client
        .get(format!("{node}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

async fn wait_ready(client: &reqwest::Client, node: &str, deadline: Duration) -> Duration {
    let started = Instant::now();
    while !ready(client, node).await {
        assert!(
            started.elapsed() < deadline,
            "{node} not ready within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// (acknowledged, unknown) among `done`.
fn tally<'a>(done: impl Iterator<Item = &'a Done>) -> (usize, usize) {
    done.fold((0, 0), |(acked, unknown), d| match d.outcome {
        Outcome::Acked => (acked + 1, unknown),
        Outcome::Unknown => (acked, unknown + 1),
    })
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_when_a_node_and_a_nats_server_are_killed() {
    let test_started = Instant::now();
    let bin = std::env::var("READSTATE_CLUSTER_BIN")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_readstate").to_owned());
    let secs = env_u64("READSTATE_CLUSTER_SECS").unwrap_or(30).max(20);
    let seed = env_u64("READSTATE_CLUSTER_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!("seed {seed} (READSTATE_CLUSTER_SEED), workload {secs} s, nodes run {bin}");
    let cluster = {
        let bin = bin.clone();
        tokio::task::spawn_blocking(move || Cluster::start(&bin))
            .await
            .expect("the cluster starts")
    };
    println!(
        "cluster up in {:.1} s: nginx {}, nodes {:?}, NATS {:?}",
        test_started.elapsed().as_secs_f64(),
        cluster.nginx,
        cluster.nodes,
        cluster.nats_urls
    );
    let http = client();
    let nats = async_nats::connect(cluster.nats_urls.clone())
        .await
        .expect("the test connects to the NATS cluster");
    let js = async_nats::jetstream::new(nats);

    // The workload.
    let shared = Arc::new(Shared::new());
    let mut rng = Rng::new(seed);
    let writers: Vec<_> = (0..HTTP_WRITERS)
        .map(|w| {
            tokio::spawn(http_writer(
                w,
                seed.wrapping_add(w + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                cluster.nginx.clone(),
                cluster.api_key.clone(),
                shared.clone(),
            ))
        })
        .collect();
    let publisher = tokio::spawn(nats_publisher(
        seed.wrapping_mul(0x2545_f491_4f6c_dd1d),
        js.clone(),
        cluster.subject.clone(),
        shared.clone(),
    ));
    let workload_started = Instant::now();

    // Mid-run: kill -9 one readstate node and the NATS server leading the stream.
    tokio::time::sleep(KILL_AT).await;
    let leader = js
        .get_stream(&cluster.stream)
        .await
        .expect("the stream")
        .info()
        .await
        .expect("stream info")
        .cluster
        .clone()
        .and_then(|c| c.leader)
        .expect("the stream has a leader");
    let nats_victim = cluster.nats_dirs[leader
        .trim_start_matches('n')
        .parse::<usize>()
        .expect("servers are named n1..n3")
        - 1]
    .clone();
    let node_victim = rng.below(3) as usize;
    let node_dir = cluster.node_dirs[node_victim].clone();
    let killed_at = Instant::now();
    {
        let (node_dir, nats_victim) = (node_dir.clone(), nats_victim.clone());
        tokio::task::spawn_blocking(move || {
            kill_9(&node_dir);
            kill_9(&nats_victim);
        })
        .await
        .expect("kill -9");
    }
    println!(
        "{:.1} s: kill -9 readstate node {} ({}) and NATS server {leader} (the stream's leader)",
        workload_started.elapsed().as_secs_f64(),
        node_victim + 1,
        cluster.nodes[node_victim]
    );
    tokio::time::sleep(DEAD_FOR).await;
    {
        let (node_dir, nats_victim) = (node_dir.clone(), nats_victim.clone());
        tokio::task::spawn_blocking(move || {
            restart(&nats_victim);
            restart(&node_dir);
        })
        .await
        .expect("restart");
    }
    let restarted_at = Instant::now();
    let ready_in = wait_ready(&http, &cluster.nodes[node_victim], Duration::from_secs(60)).await;
    println!(
        "{:.1} s: both restarted; the node was ready {} ms after its start",
        workload_started.elapsed().as_secs_f64(),
        ready_in.as_millis()
    );
    let rest = Duration::from_secs(secs).saturating_sub(workload_started.elapsed());
    tokio::time::sleep(rest).await;
    shared.stop.store(true, Ordering::SeqCst);
    let mut http_done = Vec::new();
    let mut tainted = BTreeSet::new();
    for writer in writers {
        let (done, t) = writer.await.expect("a writer");
        http_done.push(done);
        tainted.extend(t);
    }
    let nats_done = publisher.await.expect("the publisher");
    let workload_secs = workload_started.elapsed().as_secs_f64();

    let unexpected = shared.unexpected.lock().expect("not poisoned").clone();
    assert!(
        unexpected.is_empty(),
        "unexpected answers (4xx) through nginx:\n{}",
        unexpected.join("\n")
    );
    let (http_acked, http_unknown) = tally(http_done.iter().flatten());
    let (nats_acked, nats_unknown) = tally(nats_done.iter());
    let during_outage = |done: &mut dyn Iterator<Item = &Done>| {
        done.filter(|d| d.outcome == Outcome::Acked && d.at >= killed_at && d.at < restarted_at)
            .count()
    };
    println!(
        "workload: {workload_secs:.1} s; HTTP through nginx: {http_acked} acknowledged ({} while a node and \
         a NATS server were dead), {http_unknown} unknown, {} failed attempts retried; NATS: {nats_acked} \
         stored by JetStream ({} during the outage), {nats_unknown} unknown, {} failed publishes retried; \
         {} mark-unread read states left out of the equality check (a failed attempt)",
        during_outage(&mut http_done.iter().flatten()),
        shared.http_failed_attempts.load(Ordering::SeqCst),
        during_outage(&mut nats_done.iter()),
        shared.nats_failed_attempts.load(Ordering::SeqCst),
        tainted.len()
    );
    if let Some((first, last)) = *shared.nats_failures.lock().expect("not poisoned") {
        println!(
            "NATS publishes failed from {:.1} s to {:.1} s of the workload (sent then, answered never or 503)",
            first.duration_since(workload_started).as_secs_f64(),
            last.duration_since(workload_started).as_secs_f64()
        );
    }
    assert!(
        http_done.iter().flatten().all(|d| !d.nats) && nats_done.iter().all(|d| d.nats),
        "ops are recorded by their path"
    );

    // The ingest drains: every stored event applied (or terminated) and acknowledged.
    let drain_started = Instant::now();
    let stream_messages = loop {
        let drained = async {
            let mut stream = js.get_stream(&cluster.stream).await.ok()?;
            let messages = stream.info().await.ok()?.state.messages;
            let mut consumer: async_nats::jetstream::consumer::PullConsumer =
                stream.get_consumer("readstate").await.ok()?;
            let info = consumer.info().await.ok()?;
            (info.num_pending == 0 && info.num_ack_pending == 0).then_some(messages)
        }
        .await;
        if let Some(messages) = drained {
            break messages;
        }
        assert!(
            drain_started.elapsed() < Duration::from_secs(120),
            "the NATS ingest did not drain within 120 s\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The restarted server caught up: every replica of the stream is current again.
    let replicas = loop {
        let cluster_info = async {
            let mut stream = js.get_stream(&cluster.stream).await.ok()?;
            stream.info().await.ok()?.cluster.clone()
        }
        .await;
        if let Some(info) = &cluster_info
            && info.leader.is_some()
            && info.replicas.len() == 2
            && info.replicas.iter().all(|r| r.current && !r.offline)
        {
            break info.clone();
        }
        assert!(
            drain_started.elapsed() < Duration::from_secs(120),
            "the stream's replicas are not all current within 120 s: {cluster_info:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "stream {}: leader {}, replicas {} current",
        cluster.stream,
        replicas.leader.unwrap_or_default(),
        replicas
            .replicas
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(" and ")
    );
    assert!(
        stream_messages >= nats_acked as u64,
        "the stream holds {stream_messages} events, fewer than the {nats_acked} JetStream acknowledged"
    );
    println!(
        "ingest drained {:.1} s after the workload; the stream holds {stream_messages} events",
        drain_started.elapsed().as_secs_f64()
    );
    for node in &cluster.nodes {
        wait_ready(&http, node, Duration::from_secs(30)).await;
    }

    // Every node, read directly, against the model of the acknowledged operations.
    let expected = Expected::new(&http_done, &nats_done, tainted);
    let (lower, upper) = (
        Expected::states(&expected.lower),
        Expected::states(&expected.upper),
    );
    let check_started = Instant::now();
    let mut passes = 0;
    let mut first_node_states = BTreeMap::new();
    let verdicts = loop {
        passes += 1;
        let mut verdicts = Vec::new();
        for (i, node) in cluster.nodes.iter().enumerate() {
            match node_states(&http, node, &cluster.api_key).await {
                Ok(states) => {
                    verdicts.push(check_node(node, &states, &expected, &lower, &upper));
                    if i == 0 {
                        first_node_states = states;
                    }
                }
                Err(e) => verdicts.push(Verdict {
                    problems: vec![e],
                    ..Verdict::default()
                }),
            }
        }
        let clean = verdicts.iter().all(|v| v.problems.is_empty());
        // Nodes drop what other nodes committed through LISTEN/NOTIFY: a few
        // milliseconds, so a difference that lasts is a loss.
        if clean || check_started.elapsed() > Duration::from_secs(20) {
            break verdicts;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let problems: Vec<&String> = verdicts.iter().flat_map(|v| &v.problems).collect();
    assert!(
        problems.is_empty(),
        "seed {seed}: the nodes do not reflect every acknowledged write:\n{}\n\nlogs:\n{}",
        problems
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        cluster.logs()
    );
    let v = &verdicts[0];
    println!(
        "checked on each of the {} nodes (read directly): {} acknowledged writes ({http_acked} HTTP, {nats_acked} NATS), \
         {} read states equal to the model, {} within bounds (an op of unknown outcome, or mark unread with a failed attempt); \
         {passes} read(s) of all nodes, {:.1} s",
        cluster.nodes.len(),
        v.op_checks,
        v.exact,
        v.bounded,
        check_started.elapsed().as_secs_f64()
    );
    // The check can fail: one lost ack or one lost read state is reported.
    let victim = first_node_states
        .iter()
        .find(|((user, _), state)| {
            *user > UNREAD_USERS && id_field(state, "last_read_message_id") > 0
        })
        .map(|(key, _)| *key)
        .expect("some commuting user has read something");
    let mut lost_ack = first_node_states.clone();
    if let Some(state) = lost_ack.get_mut(&victim) {
        let read = id_field(state, "last_read_message_id");
        state["last_read_message_id"] = Value::String((read - 1).to_string());
    }
    let mut lost_state = first_node_states.clone();
    lost_state.remove(&victim);
    for (what, states) in [("an ack", lost_ack), ("a read state", lost_state)] {
        let verdict = check_node(&cluster.nodes[0], &states, &expected, &lower, &upper);
        assert!(
            !verdict.problems.is_empty(),
            "the check does not notice {what} lost from {victim:?}"
        );
    }

    // Which nodes applied the NATS events (a restarted node counts from its start).
    let mut applied = Vec::new();
    for node in &cluster.nodes {
        let metrics = http
            .get(format!("{node}/metrics"))
            .bearer_auth(&cluster.api_key)
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        let count = metrics
            .lines()
            .find(|l| l.starts_with("readstate_nats_events_total{outcome=\"applied\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        applied.push(count as u64);
    }
    println!("NATS events applied per node since its start: {applied:?}");

    // Throughput through nginx, one node and three (illustrative: every process
    // shares the same cores with this load generator).
    let (one, one_failed) = throughput(
        &cluster.nginx_one,
        &cluster.api_key,
        32,
        Duration::from_secs(5),
    )
    .await;
    let (three, three_failed) =
        throughput(&cluster.nginx, &cluster.api_key, 32, Duration::from_secs(5)).await;
    println!(
        "throughput through nginx, acks answered 200, 32 connections, 5 s each: \
         1 node {one:.0}/s ({one_failed} not 200), 3 nodes {three:.0}/s ({three_failed} not 200); \
         {} cores for everything, load generator included: illustrative only",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "database {}; whole test {:.1} s",
        cluster.database,
        test_started.elapsed().as_secs_f64()
    );
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .expect("the cluster stops");
}
