//! Tests that run the real `readstate` binary: exit codes, durability across
//! `kill -9` (with a negative control that must lose data), graceful SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

const BIN: &str = env!("CARGO_BIN_EXE_readstate");

struct Server {
    child: Child,
    addr: String,
    started_in: Duration,
}

/// Starts the binary on a free port over `dir`, waits for its `listening` log line.
fn start(dir: &std::path::Path, env: &[(&str, &str)]) -> Server {
    let started = Instant::now();
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .env_clear()
        .env("READSTATE_HTTP__ADDR", "127.0.0.1:0")
        .env(
            "READSTATE_STORAGE__URL",
            format!("sqlite://{}/readstate.db", dir.display()),
        )
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
            panic!("no listening line within 30 s");
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

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// What the writers saw: per (user, channel), the largest acked message answered 200
/// and the largest ever sent.
#[derive(Default)]
struct History {
    acked: HashMap<(u64, u64), u64>,
    invoked: HashMap<(u64, u64), u64>,
}

/// Runs `writers` concurrent ack loops until `stop_after` acks were answered 200
/// (or every writer failed), then returns without stopping the server.
async fn write_until(addr: &str, writers: u64, stop_after: u64) -> Arc<Mutex<History>> {
    let history = Arc::new(Mutex::new(History::default()));
    let ok = Arc::new(AtomicU64::new(0));
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (history, ok, client, addr) = (
            history.clone(),
            ok.clone(),
            client.clone(),
            addr.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let mut message = 0u64;
            while ok.load(Ordering::SeqCst) < stop_after {
                message += 1;
                let (user, channel) = (w * 100 + message % 7 + 1, message % 3 + 1);
                history
                    .lock()
                    .await
                    .invoked
                    .insert((user, channel), message);
                let url = format!("http://{addr}/v1/users/{user}/channels/{channel}/ack");
                let res = client
                    .post(url)
                    .json(&serde_json::json!({ "message_id": message }))
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status() == 200 => {
                        let mut h = history.lock().await;
                        let e = h.acked.entry((user, channel)).or_default();
                        *e = (*e).max(message);
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    history
}

/// Keys whose stored read position is below the largest acknowledged ack.
async fn lost_writes(addr: &str, history: &History) -> Vec<((u64, u64), u64, u64)> {
    let client = reqwest::Client::new();
    let mut lost = Vec::new();
    for (&(user, channel), &acked) in &history.acked {
        let url = format!("http://{addr}/v1/users/{user}/channels/{channel}");
        let res = client.get(url).send().await.expect("server answers");
        let stored = if res.status() == 404 {
            0
        } else {
            let v: serde_json::Value = res.json().await.expect("json");
            v["last_read_message_id"].as_str().unwrap().parse().unwrap()
        };
        let invoked = history.invoked[&(user, channel)];
        assert!(
            stored <= invoked,
            "{user}/{channel}: stored {stored} was never sent (max {invoked})"
        );
        if stored < acked {
            lost.push(((user, channel), acked, stored));
        }
    }
    lost
}

#[test]
fn an_invalid_configuration_exits_with_64_before_binding() {
    let status = Command::new(BIN)
        .arg("check-config")
        .env_clear()
        .env("READSTATE_STORAGE__DURABILITY", "sometimes")
        .stderr(Stdio::piped())
        .output()
        .expect("runs");
    assert_eq!(status.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&status.stderr).contains("storage.durability"));
}

#[test]
fn check_config_prints_the_effective_configuration() {
    let out = Command::new(BIN)
        .arg("check-config")
        .env_clear()
        .env("READSTATE_CACHE__MAX_BYTES", "64MiB")
        .output()
        .expect("runs");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json on stdout");
    assert_eq!(v["cache"]["max_bytes"], serde_json::json!("64MiB"));
}

#[test]
fn version_prints_the_crate_version() {
    let out = Command::new(BIN).arg("--version").output().expect("runs");
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn migrate_creates_the_database_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let status = Command::new(BIN)
            .arg("migrate")
            .env_clear()
            .env(
                "READSTATE_STORAGE__URL",
                format!("sqlite://{}/db/readstate.db", dir.path().display()),
            )
            .status()
            .expect("runs");
        assert!(status.success());
    }
    assert!(dir.path().join("db/readstate.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_sync_mode_loses_no_acknowledged_write() {
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let mut server = start(dir.path(), &[]);
        eprintln!("round {round}: ready in {:?}", server.started_in);
        let addr = server.addr.clone();
        let writing = tokio::spawn(async move { write_until(&addr, 8, u64::MAX).await });
        // Kill mid-stream, after a varying amount of acknowledged work.
        let client = reqwest::Client::new();
        let metrics_url = format!("http://{}/metrics", server.addr);
        let target = 300 + round * 400;
        loop {
            let text = client
                .get(&metrics_url)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let acked: f64 = text
                .lines()
                .filter(|l| {
                    l.starts_with("readstate_http_requests_total")
                        && l.contains("ack")
                        && l.contains("status=\"200\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            if acked >= target as f64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        let history = writing.await.unwrap();
        let history = history.lock().await;
        assert!(history.acked.len() > 10, "the writers made progress");

        let mut restarted = start(dir.path(), &[]);
        let lost = lost_writes(&restarted.addr, &history).await;
        restarted.child.kill().unwrap();
        restarted.child.wait().unwrap();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged writes lost after kill -9: {lost:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_async_mode_does_lose_acknowledged_writes_so_the_checker_can_see_loss() {
    // Negative control: async mode acknowledges before the commit; with a long flush
    // interval a kill -9 must lose some acknowledged writes, and the checker must say so.
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("READSTATE_STORAGE__DURABILITY", "async"),
        ("READSTATE_STORAGE__FLUSH_INTERVAL_MS", "60000"),
    ];
    let mut server = start(dir.path(), &env);
    let history = write_until(&server.addr, 4, 200).await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let mut restarted = start(dir.path(), &env);
    let lost = lost_writes(&restarted.addr, &*history.lock().await).await;
    restarted.child.kill().unwrap();
    restarted.child.wait().unwrap();
    assert!(
        !lost.is_empty(),
        "the negative control lost nothing: the checker cannot see loss"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_in_async_mode_flushes_everything_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("READSTATE_STORAGE__DURABILITY", "async"),
        ("READSTATE_STORAGE__FLUSH_INTERVAL_MS", "60000"),
    ];
    let mut server = start(dir.path(), &env);
    let history = write_until(&server.addr, 4, 400).await;
    sigterm(&server.child);
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
    let mut restarted = start(dir.path(), &env);
    let lost = lost_writes(&restarted.addr, &*history.lock().await).await;
    sigterm(&restarted.child);
    assert_eq!(restarted.child.wait().unwrap().code(), Some(0));
    assert!(
        lost.is_empty(),
        "SIGTERM lost acknowledged writes: {lost:?}"
    );
}
