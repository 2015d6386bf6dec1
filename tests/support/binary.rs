//! The real `readstate` binary, started with env config and port 0, and a
//! writer/checker pair for durability tests: concurrent ack writers keep a history of
//! what they sent and what was answered 200, and the checker reads every key back
//! after a restart: stored ≥ largest acknowledged (nothing answered was lost) and
//! ≤ largest sent (nothing was invented).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::{TestStorage, wait_for};

pub const BIN: &str = env!("CARGO_BIN_EXE_readstate");

/// A running `readstate serve`. Dropping it kills it.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub started_in: Duration,
}

/// Starts the binary on a free port over the database at `url` with `env` on top,
/// and waits for its `listening` log line.
pub fn start(url: &str, env: &[(&str, &str)]) -> Server {
    let started = Instant::now();
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .env_clear()
        .env("READSTATE_HTTP__ADDR", "127.0.0.1:0")
        .env("READSTATE_STORAGE__URL", url)
        .env("READSTATE_LOG__FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("the binary starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if std::env::var_os("TEST_LOG").is_some() {
                eprintln!("{line}");
            }
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no listening line within 30 s (TEST_LOG=1 shows the server's log)");
        };
        if line.contains("listening") {
            let v: serde_json::Value = serde_json::from_str(&line).expect("JSON logs");
            let addr = find_str(&v, "addr").expect("the listening line names addr");
            return Server {
                child,
                addr,
                started_in: started.elapsed(),
            };
        }
    }
}

fn find_str(v: &serde_json::Value, key: &str) -> Option<String> {
    match v {
        serde_json::Value::Object(map) => map
            .get(key)
            .and_then(|x| x.as_str().map(str::to_string))
            .or_else(|| map.values().find_map(|x| find_str(x, key))),
        _ => None,
    }
}

impl Server {
    /// `http://ADDR` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `kill -9`, then reaps the process.
    pub fn kill_9(&mut self) {
        self.child.kill().expect("the server is killed");
        self.child.wait().expect("the server is reaped");
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client that gives up on a hung request (far above every server timeout).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("a client")
}

/// One write as a writer saw it.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    pub invoked: Instant,
    pub answered: Instant,
    pub status: u16,
    pub retry_after: bool,
}

/// What the writers saw: per (user, channel), the largest ack answered 200 and the
/// largest ever sent, and every answer in order.
#[derive(Debug, Default)]
pub struct History {
    pub acked: HashMap<(u64, u64), u64>,
    pub invoked: HashMap<(u64, u64), u64>,
    pub answers: Vec<Answer>,
}

/// Concurrent ack writers against one server. Each writer owns its keys and sends
/// increasing message ids, so every write changes something.
pub struct Writers {
    history: Arc<Mutex<History>>,
    ok: Arc<AtomicU64>,
    transport_errors: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Writers {
    /// Starts `writers` loops against `addr`. A loop ends when asked to, once
    /// `stop_after` writes were answered 200 in all, or at its first transport error
    /// (a killed server).
    pub fn spawn(addr: &str, writers: u64, stop_after: u64) -> Self {
        Self::spawn_keyed(addr, writers, stop_after, |w, message| {
            (w * 100 + message % 7 + 1, message % 3 + 1)
        })
    }

    /// As [`Writers::spawn`], but every write goes to a read state never written
    /// before (a new user each time), so the database keeps growing: what a disk-full
    /// test needs (a fixed set of keys soon stops allocating disk space at all, since
    /// the WAL is rewritten in place after each checkpoint).
    pub fn spawn_fresh_keys(addr: &str, writers: u64, stop_after: u64) -> Self {
        Self::spawn_keyed(addr, writers, stop_after, |w, message| {
            ((w + 1) * 10_000_000 + message, message % 3 + 1)
        })
    }

    /// The writer loops; `key(writer, message)` names the read state each write acks.
    fn spawn_keyed(
        addr: &str,
        writers: u64,
        stop_after: u64,
        key: fn(u64, u64) -> (u64, u64),
    ) -> Self {
        let history = Arc::new(Mutex::new(History::default()));
        let ok = Arc::new(AtomicU64::new(0));
        let transport_errors = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let client = client();
        let tasks = (0..writers)
            .map(|w| {
                let (history, ok, errors, stop, client, addr) = (
                    history.clone(),
                    ok.clone(),
                    transport_errors.clone(),
                    stop.clone(),
                    client.clone(),
                    addr.to_owned(),
                );
                tokio::spawn(async move {
                    let mut message = 0u64;
                    while !stop.load(Ordering::SeqCst) && ok.load(Ordering::SeqCst) < stop_after {
                        message += 1;
                        let (user, channel) = key(w, message);
                        history
                            .lock()
                            .expect("not poisoned")
                            .invoked
                            .insert((user, channel), message);
                        let invoked = Instant::now();
                        let res = client
                            .post(format!(
                                "http://{addr}/v1/users/{user}/channels/{channel}/ack"
                            ))
                            .json(&serde_json::json!({ "message_id": message }))
                            .send()
                            .await;
                        let Ok(res) = res else {
                            errors.fetch_add(1, Ordering::SeqCst);
                            break;
                        };
                        let status = res.status().as_u16();
                        let retry_after = res.headers().contains_key("retry-after");
                        let _ = res.bytes().await;
                        let mut h = history.lock().expect("not poisoned");
                        h.answers.push(Answer {
                            invoked,
                            answered: Instant::now(),
                            status,
                            retry_after,
                        });
                        if status == 200 {
                            let e = h.acked.entry((user, channel)).or_default();
                            *e = (*e).max(message);
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        Self {
            history,
            ok,
            transport_errors,
            stop,
            tasks,
        }
    }

    /// Writes answered 200 so far.
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }

    /// Requests that got no HTTP answer at all (each ends its writer).
    pub fn transport_errors(&self) -> u64 {
        self.transport_errors.load(Ordering::SeqCst)
    }

    /// Runs `f` on the history so far.
    pub fn with_history<T>(&self, f: impl FnOnce(&History) -> T) -> T {
        f(&self.history.lock().expect("not poisoned"))
    }

    /// Waits until `n` more writes than now were answered 200, for at most `deadline`.
    pub async fn wait_for_more_ok(&self, n: u64, deadline: Duration) {
        let target = self.ok() + n;
        wait_for(
            &format!("{target} writes answered 200"),
            deadline,
            || async { (self.ok() >= target).then_some(()) },
        )
        .await;
    }

    /// Waits for every loop to end (asking them to stop first) and returns the history.
    pub async fn finish(self) -> History {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("a writer does not panic");
        }
        Arc::try_unwrap(self.history)
            .expect("the writers are done")
            .into_inner()
            .expect("not poisoned")
    }

    /// Waits for every loop to end by itself (stop_after reached or server gone).
    pub async fn join(self) -> History {
        for task in self.tasks {
            task.await.expect("a writer does not panic");
        }
        Arc::try_unwrap(self.history)
            .expect("the writers are done")
            .into_inner()
            .expect("not poisoned")
    }
}

/// Reads every acknowledged key back from the server at `addr`: returns the keys whose
/// stored read position is below the largest acknowledged ack `(key, acked, stored)`,
/// and panics if a stored position was never sent.
pub async fn lost_writes(addr: &str, history: &History) -> Vec<((u64, u64), u64, u64)> {
    let client = client();
    let mut lost = Vec::new();
    for (&key, &acked) in &history.acked {
        let stored = stored_position(&client, addr, key, history.invoked[&key]).await;
        if stored < acked {
            lost.push((key, acked, stored));
        }
    }
    lost
}

/// As [`lost_writes`], with `parallel` requests in flight (for histories of many
/// thousands of keys). Sorted by key.
pub async fn lost_writes_concurrently(
    addr: &str,
    history: &History,
    parallel: usize,
) -> Vec<((u64, u64), u64, u64)> {
    let client = client();
    let mut keys: Vec<((u64, u64), u64, u64)> = history
        .acked
        .iter()
        .map(|(&key, &acked)| (key, acked, history.invoked[&key]))
        .collect();
    keys.sort_unstable();
    let chunk = keys.len().div_ceil(parallel.max(1)).max(1);
    let tasks: Vec<_> = keys
        .chunks(chunk)
        .map(|part| {
            let (client, addr, part) = (client.clone(), addr.to_owned(), part.to_vec());
            tokio::spawn(async move {
                let mut lost = Vec::new();
                for (key, acked, invoked) in part {
                    let stored = stored_position(&client, &addr, key, invoked).await;
                    if stored < acked {
                        lost.push((key, acked, stored));
                    }
                }
                lost
            })
        })
        .collect();
    let mut lost = Vec::new();
    for task in tasks {
        lost.extend(task.await.expect("a checker does not panic"));
    }
    lost.sort_unstable();
    lost
}

/// The stored read position of `(user, channel)` (0 when there is none); panics if
/// it is above `invoked`, the largest ever sent (never written by us).
async fn stored_position(
    client: &reqwest::Client,
    addr: &str,
    (user, channel): (u64, u64),
    invoked: u64,
) -> u64 {
    let url = format!("http://{addr}/v1/users/{user}/channels/{channel}");
    let res = client.get(url).send().await.expect("the server answers");
    let stored = match res.status().as_u16() {
        404 => 0,
        200 => {
            let v: serde_json::Value = res.json().await.expect("json");
            v["last_read_message_id"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("a read position")
        }
        other => panic!("{user}/{channel}: read back answered {other}"),
    };
    assert!(
        stored <= invoked,
        "{user}/{channel}: stored {stored} was never sent (max {invoked})"
    );
    stored
}

/// Polls `GET /readyz` every 25 ms in the background, recording every answer, until
/// stopped or the server is gone.
pub struct ReadyzProbe {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<(Instant, u16)>>>,
    task: JoinHandle<()>,
}

impl ReadyzProbe {
    pub fn spawn(addr: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let (client, url) = (client(), format!("http://{addr}/readyz"));
        let task = tokio::spawn({
            let (stop, answers) = (stop.clone(), answers.clone());
            async move {
                while !stop.load(Ordering::SeqCst) {
                    let Ok(res) = client.get(&url).send().await else {
                        break;
                    };
                    let status = res.status().as_u16();
                    let _ = res.bytes().await;
                    answers
                        .lock()
                        .expect("not poisoned")
                        .push((Instant::now(), status));
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
        });
        Self {
            stop,
            answers,
            task,
        }
    }

    /// Whether an answer with `status` came at or after `since`.
    pub fn answered_since(&self, status: u16, since: Instant) -> bool {
        self.answers
            .lock()
            .expect("not poisoned")
            .iter()
            .any(|&(at, s)| s == status && at >= since)
    }

    /// Stops polling and returns every answer.
    pub async fn finish(self) -> Vec<(Instant, u16)> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the probe does not panic");
        Arc::try_unwrap(self.answers)
            .expect("the probe is done")
            .into_inner()
            .expect("not poisoned")
    }
}

/// A small tmpfs mounted on a fresh temp dir (needs root), unmounted on drop, even
/// when the test panics: a disk that can be filled for real.
pub struct Tmpfs {
    dir: Option<tempfile::TempDir>,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=…`, e.g. `12m`).
    ///
    /// # Panics
    /// With a clear message when the mount fails (not root): such a test fails, it
    /// never skips.
    pub fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(out) if out.status.success() => Self { dir: Some(dir) },
            Ok(out) => panic!(
                "cannot mount a {size} tmpfs on {}: {} (exit {:?}). This test fills a real \
                 disk and must run as root (as in CI); it never skips.",
                dir.path().display(),
                String::from_utf8_lossy(&out.stderr).trim(),
                out.status.code()
            ),
            Err(e) => panic!("cannot run `mount` ({e}): this test needs root and mount(8)"),
        }
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.as_ref().expect("mounted").path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let umount = |lazy: bool| {
            let mut cmd = Command::new("umount");
            if lazy {
                cmd.arg("-l");
            }
            cmd.arg(dir.path())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        // A server still holding files (a panic before it was killed) makes the plain
        // unmount fail: detach lazily then, it goes once the server is gone.
        if !umount(false) && !umount(true) {
            eprintln!("could not unmount the tmpfs at {}", dir.path().display());
            // Never remove files through a mount that is still there.
            let _ = dir.keep();
            return;
        }
        drop(dir);
    }
}

/// A file filling the file system of a directory, removed on drop.
pub struct Filler {
    pub path: std::path::PathBuf,
    pub bytes: u64,
}

impl Filler {
    /// Writes zeros into `dir/filler` until the file system answers ENOSPC (big
    /// chunks, then page-sized ones for the rest), then closes the file.
    pub fn fill(dir: &std::path::Path) -> Self {
        use std::io::Write as _;
        let path = dir.join("filler");
        let mut file = std::fs::File::create(&path).expect("the filler is created");
        let mut bytes = 0u64;
        for chunk in [1 << 20, 4096, 1] {
            let zeros = vec![0u8; chunk];
            loop {
                match file.write(&zeros) {
                    Ok(0) => break,
                    Ok(n) => bytes += n as u64,
                    Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => panic!("filling {}: {e}", path.display()),
                }
            }
        }
        drop(file);
        Self { path, bytes }
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

// Durability scenarios shared by tests/cli.rs (on the backend the env var picks) and
// tests/pg_faults.rs (always on PostgreSQL).

/// `kill -9` of the service mid-stream in sync mode, three rounds after a varying
/// amount of acknowledged work; after a restart on the same database nothing that was
/// answered 200 is missing.
pub async fn kill_9_in_sync_mode_loses_nothing(storage: impl Fn() -> TestStorage) {
    for round in 0..3u64 {
        let storage = storage();
        let mut server = start(storage.url(), &[]);
        eprintln!("round {round}: ready in {:?}", server.started_in);
        let writers = Writers::spawn(&server.addr, 8, u64::MAX);
        writers
            .wait_for_more_ok(300 + round * 400, Duration::from_secs(120))
            .await;

        server.kill_9();
        let history = writers.join().await;
        assert!(history.acked.len() > 10, "the writers made progress");

        let restarted = start(storage.url(), &[]);
        let lost = lost_writes(&restarted.addr, &history).await;
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged writes lost after kill -9: {lost:?}"
        );
    }
}

/// Async mode with a flush interval longer than the test: `kill -9` must lose some
/// acknowledged writes, and the checker must say so (a checker that cannot see loss
/// proves nothing).
pub async fn kill_9_in_async_mode_loses_something(storage: TestStorage) {
    let env = [
        ("READSTATE_STORAGE__DURABILITY", "async"),
        ("READSTATE_STORAGE__FLUSH_INTERVAL_MS", "60000"),
    ];
    let mut server = start(storage.url(), &env);
    let history = Writers::spawn(&server.addr, 4, 200).join().await;

    server.kill_9();

    let restarted = start(storage.url(), &env);
    let lost = lost_writes(&restarted.addr, &history).await;
    assert!(
        !lost.is_empty(),
        "the negative control lost nothing: the checker cannot see loss"
    );
}

/// The HTTP request of `op` as the README's API table gives it: method, path, body
/// (optional fields left out when unset).
pub fn http_request(
    op: &readstate::domain::Op,
) -> (reqwest::Method, String, Option<serde_json::Value>) {
    use readstate::domain::Op;
    use serde_json::json;
    match op {
        Op::MessageCreated {
            channel,
            message,
            author,
            mentions,
        } => {
            let mut body = json!({ "message_id": message.get().to_string() });
            if let Some(author) = author {
                body["author_id"] = json!(author.get().to_string());
            }
            body["mentions"] = json!(
                mentions
                    .iter()
                    .map(|m| m.get().to_string())
                    .collect::<Vec<_>>()
            );
            (
                reqwest::Method::POST,
                format!("/v1/channels/{channel}/messages", channel = channel.get()),
                Some(body),
            )
        }
        Op::MessageDeleted { channel, message } => (
            reqwest::Method::DELETE,
            format!("/v1/channels/{}/messages/{}", channel.get(), message.get()),
            None,
        ),
        Op::Ack {
            user,
            channel,
            message,
            ..
        } => (
            reqwest::Method::POST,
            format!("/v1/users/{}/channels/{}/ack", user.get(), channel.get()),
            Some(json!({ "message_id": message.get().to_string() })),
        ),
        Op::Unread {
            user,
            channel,
            message,
        } => (
            reqwest::Method::POST,
            format!("/v1/users/{}/channels/{}/unread", user.get(), channel.get()),
            Some(json!({ "message_id": message.get().to_string() })),
        ),
        Op::Join {
            user,
            channel,
            read,
        } => (
            reqwest::Method::PUT,
            format!("/v1/users/{}/channels/{}", user.get(), channel.get()),
            Some(read.map_or_else(
                || json!({}),
                |r| json!({ "last_read_message_id": r.to_string() }),
            )),
        ),
        Op::Leave { user, channel } => (
            reqwest::Method::DELETE,
            format!("/v1/users/{}/channels/{}", user.get(), channel.get()),
            None,
        ),
        Op::AckAll { user } => (
            reqwest::Method::POST,
            format!("/v1/users/{}/ack-all", user.get()),
            None,
        ),
        Op::DeleteChannel { channel } => (
            reqwest::Method::DELETE,
            format!("/v1/channels/{}", channel.get()),
            None,
        ),
        Op::SetChannel {
            channel,
            parent,
            group,
            at,
        } => {
            let mut body = json!({
                "parent_id": parent.map(|p| p.get().to_string()),
                "group_id": group.map(|g| g.get().to_string()),
            });
            if let Some(at) = at {
                body["at"] = json!(at);
            }
            (
                reqwest::Method::PUT,
                format!("/v1/channels/{}", channel.get()),
                Some(body),
            )
        }
        Op::Settings {
            user,
            channel,
            muted_until,
            level,
            at,
        } => {
            let mut body = json!({});
            if let Some(until) = muted_until {
                // The API's null: muted until unmuted.
                body["muted_until"] = if *until == readstate::domain::MUTED_FOREVER {
                    serde_json::Value::Null
                } else {
                    json!(until)
                };
            }
            if let Some(level) = level {
                body["level"] = json!(level.as_str());
            }
            if let Some(at) = at {
                body["at"] = json!(at);
            }
            (
                reqwest::Method::PUT,
                format!(
                    "/v1/users/{}/channels/{}/settings",
                    user.get(),
                    channel.get()
                ),
                Some(body),
            )
        }
        Op::DeleteUser { user } => (
            reqwest::Method::DELETE,
            format!("/v1/users/{}", user.get()),
            None,
        ),
    }
}
