//! `readstate backup` and `readstate restore` on the real binary: an online backup
//! under write load, with checkpoints held off so that acknowledged writes live only in
//! the commit log, restored into a new data directory and read back over HTTP; and
//! the refusals (exit 64): a target that is not empty, a PostgreSQL URL, a file that is
//! not a sound readstate database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::binary::{BIN, client, start};
use support::wait_for;
use tokio::task::JoinHandle;

/// Checkpoints held off: every acknowledged write stays in the commit log only.
const NO_CHECKPOINTS: (&str, &str) = ("READSTATE_STORAGE__CHECKPOINT_INTERVAL_MS", "3600000");

/// Runs `readstate <args>` on the database at `url`, with no other configuration.
fn run(args: &[&str], url: &str) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .env("READSTATE_STORAGE__URL", url)
        .output()
        .expect("the binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}/readstate.db", dir.display())
}

/// What one writer got answered: a write, and when its success answer arrived.
#[derive(Debug, Clone, Copy)]
enum Done {
    /// A message created in `channel` by `author`, mentioning `mentioned` if set.
    Message {
        channel: u64,
        message: u64,
        author: u64,
        mentioned: Option<u64>,
    },
    /// `user` acked `message` in `channel`.
    Ack {
        user: u64,
        channel: u64,
        message: u64,
    },
}

/// Writers that create messages (some with a mention) and ack them, each in a
/// channel of its own with increasing message ids, recording every success.
struct Load {
    done: Arc<Mutex<Vec<(Instant, Done)>>>,
    ok: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    fn spawn(addr: &str, writers: u64) -> Self {
        let done = Arc::new(Mutex::new(Vec::new()));
        let ok = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let client = client();
        let tasks = (0..writers)
            .map(|w| {
                let (done, ok, stop, client) =
                    (done.clone(), ok.clone(), stop.clone(), client.clone());
                let base = format!("http://{addr}/v1");
                tokio::spawn(async move {
                    let channel = 100 + w;
                    let mut message = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        message += 1;
                        let author = 1_000 + w * 10 + message % 5;
                        let mentioned = message
                            .is_multiple_of(4)
                            .then_some(2_000 + w * 10 + message % 3);
                        let body = match mentioned {
                            Some(m) => serde_json::json!({
                                "message_id": message, "author_id": author, "mentions": [m]
                            }),
                            None => {
                                serde_json::json!({ "message_id": message, "author_id": author })
                            }
                        };
                        let res = client
                            .post(format!("{base}/channels/{channel}/messages"))
                            .json(&body)
                            .send()
                            .await
                            .expect("the server answers");
                        if res.status().as_u16() == 204 {
                            done.lock().unwrap().push((
                                Instant::now(),
                                Done::Message {
                                    channel,
                                    message,
                                    author,
                                    mentioned,
                                },
                            ));
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        let user = 3_000 + w * 10 + message % 7;
                        let res = client
                            .post(format!("{base}/users/{user}/channels/{channel}/ack"))
                            .json(&serde_json::json!({ "message_id": message }))
                            .send()
                            .await
                            .expect("the server answers");
                        if res.status().as_u16() == 200 {
                            done.lock().unwrap().push((
                                Instant::now(),
                                Done::Ack {
                                    user,
                                    channel,
                                    message,
                                },
                            ));
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        Self {
            done,
            ok,
            stop,
            tasks,
        }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }

    async fn finish(self) -> Vec<(Instant, Done)> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("a writer does not panic");
        }
        Arc::try_unwrap(self.done).unwrap().into_inner().unwrap()
    }
}

/// What a read state must show at least, given the writes answered before a moment.
#[derive(Debug, Default, Clone, Copy)]
struct AtLeast {
    last_read: u64,
    last_message: u64,
    mentions: u64,
}

/// Per `(user, channel)`, what the successes answered before `before` imply.
fn expectations(done: &[(Instant, Done)], before: Instant) -> HashMap<(u64, u64), AtLeast> {
    let mut out: HashMap<(u64, u64), AtLeast> = HashMap::new();
    for &(at, d) in done {
        if at >= before {
            continue;
        }
        match d {
            Done::Message {
                channel,
                message,
                author,
                mentioned,
            } => {
                // The author has read their own message.
                let e = out.entry((author, channel)).or_default();
                e.last_read = e.last_read.max(message);
                e.last_message = e.last_message.max(message);
                if let Some(user) = mentioned {
                    out.entry((user, channel)).or_default().mentions += 1;
                }
            }
            Done::Ack {
                user,
                channel,
                message,
            } => {
                let e = out.entry((user, channel)).or_default();
                e.last_read = e.last_read.max(message);
            }
        }
    }
    out
}

/// Every expectation not met by the server at `addr`, as readable lines.
async fn unmet(addr: &str, expected: &HashMap<(u64, u64), AtLeast>) -> Vec<String> {
    let client = client();
    let mut missing = Vec::new();
    for (&(user, channel), want) in expected {
        let res = client
            .get(format!("http://{addr}/v1/users/{user}/channels/{channel}"))
            .send()
            .await
            .expect("the server answers");
        if res.status().as_u16() == 404 {
            missing.push(format!("{user}/{channel}: no read state, want {want:?}"));
            continue;
        }
        assert_eq!(res.status().as_u16(), 200);
        let v: serde_json::Value = res.json().await.unwrap();
        let id = |field: &str| -> u64 { v[field].as_str().unwrap().parse().unwrap() };
        let mentions = v["mention_count"].as_u64().unwrap();
        if id("last_read_message_id") < want.last_read
            || id("last_message_id") < want.last_message
            || mentions < want.mentions.min(99)
        {
            missing.push(format!("{user}/{channel}: got {v}, want at least {want:?}"));
        }
    }
    missing.sort();
    missing
}

/// Read states in the SQLite file `db` itself (what checkpoints wrote there).
async fn read_states_in_file(db: &Path) -> i64 {
    use sqlx::{ConnectOptions, Connection};
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await
        .unwrap();
    let n = sqlx::query_scalar("select count(*) from read_states")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_online_backup_under_load_holds_every_write_acknowledged_before_it_started() {
    let live = tempfile::tempdir().unwrap();
    let live_url = sqlite_url(&live.path().join("data"));
    let server = start(&live_url, &[NO_CHECKPOINTS]);
    let load = Load::spawn(&server.addr, 6);
    wait_for("1000 writes answered", Duration::from_secs(60), || async {
        (load.ok() >= 1_000).then_some(())
    })
    .await;

    // The database file has none of it: acknowledged writes are only in the log.
    assert_eq!(
        read_states_in_file(&live.path().join("data/readstate.db")).await,
        0,
        "checkpoints ran: this test would not exercise the commit log"
    );

    let out = tempfile::tempdir().unwrap();
    let backup_file = out.path().join("backups/readstate-backup.db");
    let started = Instant::now();
    let ok_at_start = load.ok();
    let output = {
        let (url, to) = (live_url.clone(), backup_file.display().to_string());
        tokio::task::spawn_blocking(move || run(&["backup", "--to", &to], &url))
            .await
            .unwrap()
    };
    let ok_during = load.ok() - ok_at_start;
    let done = load.finish().await;
    let log = stderr(&output);
    assert!(output.status.success(), "backup failed: {log}");
    eprintln!("{log}");
    assert!(
        log.contains(&backup_file.display().to_string()),
        "the path is named: {log}"
    );
    assert!(log.contains("commit log record(s)"), "{log}");
    assert!(ok_during > 0, "the server kept answering during the backup");
    drop(server);

    let expected = expectations(&done, started);
    assert!(
        expected.len() > 50,
        "{} read states expected",
        expected.len()
    );

    // Restore into a new, empty data directory and serve it.
    let restored_dir = tempfile::tempdir().unwrap();
    let restored_url = sqlite_url(&restored_dir.path().join("data"));
    let output = run(
        &["restore", "--from", &backup_file.display().to_string()],
        &restored_url,
    );
    assert!(
        output.status.success(),
        "restore failed: {}",
        stderr(&output)
    );
    let restored = start(&restored_url, &[]);
    let missing = unmet(&restored.addr, &expected).await;
    assert!(
        missing.is_empty(),
        "{} of {} read states lack writes acknowledged before the backup started: {:?}",
        missing.len(),
        expected.len(),
        &missing[..missing.len().min(10)]
    );
}

/// The opposite setting: checkpoints every 20 ms and 2 KiB segments, so that while
/// each backup runs the server checkpoints and deletes the segments the backup has
/// pinned and starts new ones. Each of several backups in a row holds everything
/// acknowledged before it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backups_while_checkpoints_delete_segments_lose_nothing() {
    let live = tempfile::tempdir().unwrap();
    let live_url = sqlite_url(&live.path().join("data"));
    let server = start(
        &live_url,
        &[
            ("READSTATE_STORAGE__CHECKPOINT_INTERVAL_MS", "20"),
            ("READSTATE_STORAGE__LOG_SEGMENT_BYTES", "2KiB"),
        ],
    );
    let load = Load::spawn(&server.addr, 6);
    let out = tempfile::tempdir().unwrap();
    let mut backups = Vec::new();
    for round in 0..6 {
        let target = load.ok() + 300;
        wait_for(
            "300 more writes answered",
            Duration::from_secs(60),
            || async { (load.ok() >= target).then_some(()) },
        )
        .await;
        let to = out.path().join(format!("backup-{round}.db"));
        let started = Instant::now();
        let output = {
            let (url, to) = (live_url.clone(), to.display().to_string());
            tokio::task::spawn_blocking(move || run(&["backup", "--to", &to], &url))
                .await
                .unwrap()
        };
        assert!(
            output.status.success(),
            "backup {round}: {}",
            stderr(&output)
        );
        let log = stderr(&output);
        eprintln!("backup {round}:\n{log}");
        let pinned = log
            .lines()
            .find(|l| l.contains("pinned the commit log"))
            .unwrap_or_default()
            .to_owned();
        backups.push((to, started, pinned));
    }
    let done = load.finish().await;
    drop(server);
    let checkpoints: std::collections::HashSet<_> = backups.iter().map(|b| &b.2).collect();
    assert!(
        checkpoints.len() > 1,
        "the log did not move between backups: {checkpoints:?}"
    );

    for (round, (file, started, _)) in backups.iter().enumerate() {
        let expected = expectations(&done, *started);
        let dir = tempfile::tempdir().unwrap();
        let url = sqlite_url(dir.path());
        let output = run(&["restore", "--from", &file.display().to_string()], &url);
        assert!(
            output.status.success(),
            "restore {round}: {}",
            stderr(&output)
        );
        let restored = start(&url, &[]);
        let missing = unmet(&restored.addr, &expected).await;
        assert!(
            missing.is_empty(),
            "backup {round}: {} of {} read states lack acknowledged writes: {:?}",
            missing.len(),
            expected.len(),
            &missing[..missing.len().min(10)]
        );
    }
}

/// A backup of a server that took a few writes (made while it serves).
async fn a_backup(dir: &Path) -> std::path::PathBuf {
    let url = sqlite_url(&dir.join("live"));
    let server = start(&url, &[NO_CHECKPOINTS]);
    let client = client();
    for message in 1..=40u64 {
        let res = client
            .post(server.url(&format!("/v1/users/{}/channels/7/ack", message % 9 + 1)))
            .json(&serde_json::json!({ "message_id": message }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
    }
    let to = dir.join("backup.db");
    let output = run(&["backup", "--to", &to.display().to_string()], &url);
    assert!(output.status.success(), "{}", stderr(&output));
    to
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_a_target_that_is_not_empty_and_backup_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let backup = a_backup(dir.path()).await;
    let from = backup.display().to_string();

    // Never over an existing backup file.
    let out = run(
        &["backup", "--to", &from],
        &sqlite_url(&dir.path().join("live")),
    );
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));

    // A target with a database: restored once, refused the second time.
    let target = sqlite_url(&dir.path().join("target"));
    let first = run(&["restore", "--from", &from], &target);
    assert!(first.status.success(), "{}", stderr(&first));
    let before = std::fs::read(dir.path().join("target/readstate.db")).unwrap();
    let again = run(&["restore", "--from", &from], &target);
    assert_eq!(again.status.code(), Some(64), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    assert_eq!(
        std::fs::read(dir.path().join("target/readstate.db")).unwrap(),
        before,
        "the existing database is untouched"
    );

    // A target with commit log records but no database.
    let logged = dir.path().join("logged");
    std::fs::create_dir_all(logged.join("wal")).unwrap();
    std::fs::write(logged.join("wal/wal-00000000000000000001.log"), b"records").unwrap();
    let out = run(&["restore", "--from", &from], &sqlite_url(&logged));
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("commit log"), "{}", stderr(&out));
    assert!(!logged.join("readstate.db").exists());
}

#[test]
fn backup_and_restore_refuse_a_postgresql_url() {
    let url = "postgres://postgres@127.0.0.1:1/readstate";
    for args in [
        ["backup", "--to", "/nonexistent/backup.db"],
        ["restore", "--from", "/nonexistent/backup.db"],
    ] {
        let started = Instant::now();
        let out = run(&args, url);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains("pg_dump"), "{err}");
        assert!(err.contains("docs/OPERATIONS.md"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "refused without connecting"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_a_corrupt_or_foreign_file() {
    let dir = tempfile::tempdir().unwrap();
    let backup = a_backup(dir.path()).await;
    let good = std::fs::read(&backup).unwrap();
    assert!(good.len() >= 4 * 4096, "{} bytes", good.len());

    // The same backup with its second page overwritten.
    let mut damaged = good.clone();
    damaged[4096..8192].fill(0x5a);
    let damaged_file = dir.path().join("damaged.db");
    std::fs::write(&damaged_file, damaged).unwrap();
    // Not SQLite at all.
    let text_file = dir.path().join("notes.txt");
    std::fs::write(&text_file, "not a database\n".repeat(500)).unwrap();
    // SQLite, but not readstate's.
    let foreign_file = dir.path().join("foreign.db");
    {
        use sqlx::{ConnectOptions, Connection};
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&foreign_file)
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        sqlx::query("create table read_states (x)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }

    let target = dir.path().join("target");
    for file in [&damaged_file, &text_file, &foreign_file] {
        let out = run(
            &["restore", "--from", &file.display().to_string()],
            &sqlite_url(&target),
        );
        assert_eq!(
            out.status.code(),
            Some(64),
            "{}: {}",
            file.display(),
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("not a sound readstate backup"),
            "{}",
            stderr(&out)
        );
        let left: Vec<_> = std::fs::read_dir(&target)
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "nothing is left at the target: {left:?}");
    }

    // And the undamaged one restores.
    let out = run(
        &["restore", "--from", &backup.display().to_string()],
        &sqlite_url(&target),
    );
    assert!(out.status.success(), "{}", stderr(&out));
}
