//! A full disk under the SQLite store, for real: the data directory is a small tmpfs
//! (mounting it needs root, as in CI; without it these tests fail, they never skip),
//! filled with a file mid-stream while acks run in `sync` mode, freed 2.5 s later.
//! While full, writes answer 503 + `Retry-After` and `/readyz` 503; once freed,
//! everything recovers by itself; after `kill -9` (or SIGTERM) and a restart, every
//! ack that was answered 200 is there. Always SQLite, whatever
//! `READSTATE_TEST_STORAGE` says (a PostgreSQL server's disk is not ours to fill), in
//! both commit modes: the commit log (the default on SQLite; the log and the database
//! share the disk) and `direct` (every group a SQLite transaction).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use support::binary::{
    Filler, ReadyzProbe, Server, Tmpfs, Writers, lost_writes_concurrently, start,
};
use support::wait_for;

/// Small enough to fill in a blink, large enough for the schema and a busy WAL.
const TMPFS_SIZE: &str = "12m";
/// How long the disk stays full.
const FULL_FOR: Duration = Duration::from_millis(2500);

/// Requests waiting on a stalled commit give up after this, so the full phase shows
/// answers (503 + `Retry-After`) instead of requests still pending.
const LOG: [(&str, &str); 2] = [
    ("READSTATE_STORAGE__COMMIT_TIMEOUT_MS", "500"),
    ("READSTATE_STORAGE__COMMIT", "log"),
];
const DIRECT: [(&str, &str); 2] = [
    ("READSTATE_STORAGE__COMMIT_TIMEOUT_MS", "500"),
    ("READSTATE_STORAGE__COMMIT", "direct"),
];

enum Stop {
    Kill9,
    Sigterm,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_answers_503_recovers_and_loses_no_acknowledged_write_across_kill_9() {
    full_disk_scenario(Stop::Kill9, &LOG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_answers_503_recovers_and_loses_no_acknowledged_write_across_sigterm() {
    full_disk_scenario(Stop::Sigterm, &LOG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn direct_commits_a_full_disk_answers_503_recovers_and_loses_nothing_across_kill_9() {
    full_disk_scenario(Stop::Kill9, &DIRECT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn direct_commits_a_full_disk_answers_503_recovers_and_loses_nothing_across_sigterm() {
    full_disk_scenario(Stop::Sigterm, &DIRECT).await;
}

async fn full_disk_scenario(stop: Stop, env: &[(&str, &str)]) {
    // Declared first, so dropped last: the servers are gone before the unmount.
    let disk = Tmpfs::mount(TMPFS_SIZE);
    let url = format!("sqlite://{}", disk.path().join("readstate.db").display());
    let mut server = start(&url, env);
    let writers = Writers::spawn_fresh_keys(&server.addr, 8, u64::MAX);
    let readyz = ReadyzProbe::spawn(&server.addr);
    writers.wait_for_more_ok(300, Duration::from_secs(20)).await;

    // Full: the filler takes every free byte.
    let filling = Instant::now();
    let filler = Filler::fill(disk.path());
    let full_since = Instant::now();
    eprintln!(
        "filled the disk with {} KiB in {:?} after {} acks",
        filler.bytes / 1024,
        full_since - filling,
        writers.ok()
    );
    tokio::time::sleep(FULL_FOR).await;
    let ok_while_full = writers.ok();
    drop(filler);
    let freed_at = Instant::now();

    // Recovers by itself: fresh writes answer 200 and /readyz 200 again.
    wait_for(
        "a write sent after the disk was freed answers 200",
        Duration::from_secs(20),
        || async {
            writers
                .with_history(|h| {
                    h.answers
                        .iter()
                        .any(|a| a.invoked >= freed_at && a.status == 200)
                })
                .then_some(())
        },
    )
    .await;
    wait_for(
        "/readyz answers 200 after the disk was freed",
        Duration::from_secs(20),
        || async { readyz.answered_since(200, freed_at).then_some(()) },
    )
    .await;
    let recovered_in = freed_at.elapsed();
    writers.wait_for_more_ok(300, Duration::from_secs(20)).await;

    let history = match stop {
        Stop::Kill9 => {
            server.kill_9();
            writers.join().await
        }
        Stop::Sigterm => {
            server.sigterm();
            let code = wait_for_exit(&mut server, Duration::from_secs(20));
            assert_eq!(code, Some(0), "graceful shutdown exits 0");
            writers.finish().await
        }
    };
    let probes = readyz.finish().await;

    // What the clients saw while the disk was full (sent after it was, answered before
    // it was freed).
    let during =
        |invoked: Instant, answered: Instant| invoked >= full_since && answered <= freed_at;
    let full: Vec<_> = history
        .answers
        .iter()
        .filter(|a| during(a.invoked, a.answered))
        .collect();
    let unavailable = full
        .iter()
        .filter(|a| a.status == 503 && a.retry_after)
        .count();
    let ok_in_full = full.iter().filter(|a| a.status == 200).count();
    let other: Vec<u16> = full
        .iter()
        .map(|a| a.status)
        .filter(|&s| s != 200 && s != 503)
        .collect();
    let readyz_503 = probes
        .iter()
        .filter(|&&(at, s)| s == 503 && at >= full_since && at <= freed_at)
        .count();
    eprintln!(
        "full phase: {} answers ({unavailable} × 503 + Retry-After, {ok_in_full} × 200, other {other:?}), \
         /readyz 503 × {readyz_503}; acks answered 200 before the disk was freed: {ok_while_full}; \
         recovered {recovered_in:?} after freeing; {} acks answered 200 in all over {} keys",
        full.len(),
        history.answers.iter().filter(|a| a.status == 200).count(),
        history.acked.len(),
    );

    // Same directory, space free again: every acknowledged write must be there.
    let restarted = start(&url, &[]);
    let lost = lost_writes_concurrently(&restarted.addr, &history, 16).await;
    drop(restarted);

    let mut failures = Vec::new();
    if !lost.is_empty() {
        failures.push(format!(
            "{} of {} acknowledged writes lost after restart (first: {:?})",
            lost.len(),
            history.acked.len(),
            &lost[..lost.len().min(5)]
        ));
    }
    if unavailable == 0 {
        failures.push(format!(
            "no write answered 503 + Retry-After while the disk was full ({} answers, {ok_in_full} × 200)",
            full.len()
        ));
    }
    if readyz_503 == 0 {
        failures.push("/readyz never answered 503 while the disk was full".to_owned());
    }
    if !other.is_empty() {
        failures.push(format!(
            "while full, writes answered neither 200 nor 503: {other:?}"
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Waits (bounded) for the server to exit and returns its exit code.
fn wait_for_exit(server: &mut Server, deadline: Duration) -> Option<i32> {
    let until = Instant::now() + deadline;
    loop {
        if let Some(status) = server.child.try_wait().expect("try_wait") {
            return status.code();
        }
        assert!(
            Instant::now() < until,
            "the server did not exit within {deadline:?} of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
