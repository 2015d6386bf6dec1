//! Fault paths of the service in `log` commit mode (the commit log is the durability
//! point, checkpoints write the database later), in-process over a real store on the
//! storage `READSTATE_TEST_STORAGE` picks, with the log on an in-memory file system
//! ([`MemFs`]) that injects failures and simulates machine crashes:
//!
//! - a failed fdatasync (with the dirty pages kept, or dropped) is never acknowledged:
//!   the write answers 503 `unavailable`, readiness drops, the log repairs itself (a
//!   single failure) or once the disk works again (a held failure), later writes
//!   succeed and readiness returns; after a machine crash that keeps only synced bytes
//!   and no graceful shutdown, replaying the log puts every acknowledged write in the
//!   database;
//! - a failing checkpoint (database down) does not fail writes: they only need the
//!   log; readiness drops, and once the database is back the checkpoint lands;
//! - with checkpoints unable to land, `storage.max_unflushed` turns writes away with
//!   back pressure (503 `Overloaded`), never a silent success beyond the bound, and
//!   nothing acknowledged is lost once the database is back;
//! - a checkpointer with nothing to write for a while tells the store once per quiet
//!   spell (`Store::idle`, where SQLite frees its writer's page cache), and writes
//!   go on afterwards.
//!
//! No timing assertions: waits are bounded polls.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use readstate::cache::Cache;
use readstate::commit::{self, CommitConfig};
use readstate::config::Durability;
use readstate::domain::{Caps, ChannelId, MessageId, Op, UserId};
use readstate::service::{Service, ServiceError};
use readstate::store::Store;
use readstate::wal::memfs::{Fault, FaultOp, MemFs};
use readstate::wal::{Recovered, Wal, WalOptions};
use support::faulty::FaultyStore;
use support::store::open_store;
use support::{TestStorage, wait_for};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const CAPS: Caps = Caps {
    unread: 99,
    mention: 99,
};

/// Bound of every poll.
const PATIENCE: Duration = Duration::from_secs(30);

/// The commit settings a test varies.
#[derive(Debug, Clone, Copy)]
struct Setup {
    max_unflushed: usize,
    checkpoint_interval: Duration,
    checkpoint_writes: usize,
}

impl Setup {
    /// No timed checkpoints (only on `flush`, at shutdown, and perhaps one right at
    /// the start: an interval's first tick is immediate): acknowledged writes live in
    /// the log alone.
    fn no_checkpoints() -> Self {
        Setup {
            max_unflushed: 10_000,
            checkpoint_interval: Duration::from_secs(3_600),
            checkpoint_writes: 1_000_000,
        }
    }

    /// A checkpoint every few milliseconds.
    fn frequent_checkpoints(max_unflushed: usize) -> Self {
        Setup {
            max_unflushed,
            checkpoint_interval: Duration::from_millis(10),
            checkpoint_writes: 1_000,
        }
    }
}

/// A service in `log` mode, `sync` durability.
struct Running {
    service: Service,
    store: Arc<FaultyStore>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

/// Opens the log on `fs`: the log and what it recovered.
fn open_log(fs: &MemFs) -> (Wal, Vec<Recovered>) {
    let (wal, recovered, _report) =
        Wal::open(Arc::new(fs.clone()), WalOptions::default()).expect("the commit log opens");
    (wal, recovered)
}

async fn start(storage: &TestStorage, wal: Wal, setup: Setup) -> Running {
    let inner = open_store(storage, CAPS).await;
    let store = Arc::new(FaultyStore::new(inner));
    let cache = Arc::new(Cache::new(1 << 20));
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let committer = commit::spawn_with_log(
        store.clone(),
        cache.clone(),
        CommitConfig {
            durability: Durability::Sync,
            max_batch: 64,
            flush_interval: Duration::from_millis(5),
            max_unflushed: setup.max_unflushed,
            checkpoint_interval: setup.checkpoint_interval,
            checkpoint_writes: setup.checkpoint_writes,
        },
        wal,
        cancel.clone(),
        &tracker,
    );
    let service = support::store::service(cache, store.clone(), committer, CAPS);
    Running {
        service,
        store,
        cancel,
        tracker,
    }
}

/// A service in `log` mode on the storage the environment picks (returned: its
/// files live as long as it does), with a new log on an in-memory file system
/// (returned, to check the log after the stop).
async fn start_on_a_new_log(setup: Setup) -> (TestStorage, MemFs, Running) {
    let storage = TestStorage::from_env();
    let fs = MemFs::new();
    let (wal, _) = open_log(&fs);
    let running = start(&storage, wal, setup).await;
    (storage, fs, running)
}

impl Running {
    /// A graceful stop: the queue is drained into the log and the log checkpointed.
    /// Returns the store, still open.
    async fn stop(self) -> Arc<FaultyStore> {
        self.cancel.cancel();
        self.tracker.close();
        tokio::time::timeout(PATIENCE, self.tracker.wait())
            .await
            .expect("the commit writer and the checkpointer drain and stop");
        self.store
    }

    fn healthy(&self) -> bool {
        self.service.storage_healthy()
    }
}

fn ack(user: u64, channel: u64, message: u64) -> Op {
    Op::Ack {
        user: UserId::new(user).unwrap(),
        channel: ChannelId::new(channel).unwrap(),
        message: MessageId::new(message).unwrap(),
        at: None,
    }
}

/// Stops gracefully, then checks that every acknowledged write is in the database
/// and that the log has nothing left to replay.
async fn stop_and_check(running: Running, ledger: &Ledger, fs: &MemFs, when: &str) {
    let store = running.stop().await;
    ledger.assert_stored(store.inner.as_ref(), when).await;
    let (_, left) = open_log(fs);
    assert!(
        left.is_empty(),
        "a graceful stop checkpoints everything: {} records left to replay",
        left.len()
    );
    store.close().await;
}

/// What the service answered: the highest acknowledged ack per (user, channel), and
/// the writes whose outcome is in doubt (answered with an error).
#[derive(Debug, Default)]
struct Ledger {
    acked: BTreeMap<(u64, u64), u64>,
    in_doubt: Vec<(u64, u64, u64)>,
}

impl Ledger {
    fn record(&mut self, op: &Op, result: &Result<(), ServiceError>) {
        let Op::Ack {
            user,
            channel,
            message,
            ..
        } = op
        else {
            panic!("only acks are recorded");
        };
        let key = (user.get(), channel.get());
        if result.is_ok() {
            let max = self.acked.entry(key).or_default();
            *max = (*max).max(message.get());
        } else {
            self.in_doubt.push((key.0, key.1, message.get()));
        }
    }

    /// Executes `op`, which must succeed.
    async fn ok(&mut self, service: &Service, op: Op) {
        let result = service.execute(&op).await;
        self.record(&op, &result);
        assert!(
            result.is_ok(),
            "{op:?} failed on a healthy service: {result:?}"
        );
    }

    /// Executes `op` again and again (writes are idempotent) until it succeeds.
    async fn until_ok(&mut self, service: &Service, op: Op) {
        let until = std::time::Instant::now() + PATIENCE;
        loop {
            let result = service.execute(&op).await;
            self.record(&op, &result);
            if result.is_ok() {
                return;
            }
            assert!(
                std::time::Instant::now() < until,
                "{op:?} still fails after {PATIENCE:?}: {result:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The acknowledged writes `store` lacks, as `(user, channel, acked, stored)`.
    async fn missing_from(&self, store: &dyn Store) -> Vec<(u64, u64, u64, Option<u64>)> {
        let mut missing = Vec::new();
        for (&(user, channel), &message) in &self.acked {
            let states = store
                .load_user(user, CAPS.mention_window())
                .await
                .expect("the database answers");
            let stored = states.get(channel).map(|s| s.read.pos);
            if stored.is_none_or(|pos| pos < message) {
                missing.push((user, channel, message, stored));
            }
        }
        missing
    }

    /// Waits (bounded) until every acknowledged write is in `store`: a checkpoint
    /// landed.
    async fn wait_stored(&self, store: &dyn Store, what: &str) {
        wait_for(what, PATIENCE, || async {
            self.missing_from(store).await.is_empty().then_some(())
        })
        .await;
    }

    /// Every acknowledged write is in `store`.
    async fn assert_stored(&self, store: &dyn Store, when: &str) {
        let missing = self.missing_from(store).await;
        assert!(
            missing.is_empty(),
            "{when}: acknowledged writes missing from the database \
             (user, channel, acked, stored): {missing:?}"
        );
    }
}

/// What `commit::recover_log` does, on a log that is not in a directory: writes every
/// recovered record into the database and records the checkpoint.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// The position the log's checkpoint file records (format in `readstate::wal`).
fn checkpoint_of(fs: &MemFs) -> Option<(u64, u64)> {
    let data = fs.file("checkpoint")?;
    let field = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().unwrap());
    (data.len() == 28 && data.starts_with(b"RSWALCP1")).then(|| (field(8), field(16)))
}

/// The newest segment of the log and its length: the durable end when every write
/// to it was synced.
fn log_end(fs: &MemFs) -> (u64, u64) {
    let name = fs
        .names()
        .into_iter()
        .filter(|n| n.starts_with("wal-") && n.ends_with(".log"))
        .max()
        .expect("the log has a segment");
    let seq = name["wal-".len()..name.len() - ".log".len()]
        .parse()
        .expect("a segment number");
    (seq, fs.file(&name).expect("the segment").len() as u64)
}

/// Failures queued behind the first one to keep the disk failing until the test
/// clears them: more than the writer's backoff can consume while the test looks.
const HELD_FAILURES: usize = 1_000;

/// Scenario 1, with `fault` for the failing fdatasync.
fn failed_fdatasync_then_crash(fault: Fault) {
    let storage = TestStorage::from_env();
    let fs = MemFs::new();
    // The first "process": its runtime is shut down at the end without the service
    // being stopped, so nothing is drained (kill -9). It runs on one thread so that a
    // request's write and the barrier behind it are both queued before the commit
    // writer runs (`execute` does not yield between them) and share the record whose
    // fdatasync fails. On several threads the writer may take the write alone: its
    // failed sync then answers nobody, the repair makes it durable, and the barrier is
    // answered Ok after that, also correct but not the path pinned down here. (The
    // log's file I/O still runs on the blocking pool.)
    let process = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (running, ledger) = process.block_on(async {
        let (wal, recovered) = open_log(&fs);
        assert!(recovered.is_empty(), "a fresh log holds no records");
        let running = start(&storage, wal, Setup::no_checkpoints()).await;
        let service = &running.service;
        let mut ledger = Ledger::default();

        for user in 1..=5 {
            ledger.ok(service, ack(user, 1, 10 + user)).await;
        }
        // Checkpoint these, and wait until the checkpointer is idle: a checkpoint file
        // written later would take the fdatasync failure meant for the commit writer.
        // (Despite the long interval the checkpointer may run one early: its first
        // tick is immediate.) From here on the database lags and the log alone holds
        // what is acknowledged.
        service
            .flush()
            .await
            .expect("the first writes are checkpointed");
        wait_for("the checkpoint covers the log", PATIENCE, || async {
            (checkpoint_of(&fs) == Some(log_end(&fs))).then_some(())
        })
        .await;
        assert!(running.healthy());

        // One fdatasync fails: that write is not acknowledged, and the log repairs
        // itself (no fault is cleared).
        fs.fail_next(FaultOp::SyncData, fault);
        let op = ack(6, 1, 16);
        let failed = service.execute(&op).await;
        ledger.record(&op, &failed);
        assert!(
            matches!(failed, Err(ServiceError::Unavailable { .. })),
            "a write whose fdatasync failed answers unavailable: {failed:?}"
        );
        ledger.until_ok(service, ack(7, 1, 17)).await;
        wait_for("readiness after the repair", PATIENCE, || async {
            running.healthy().then_some(())
        })
        .await;

        // fdatasync fails until the disk is fixed: not ready, nothing acknowledged.
        fs.fail_next(FaultOp::SyncData, fault);
        for _ in 0..HELD_FAILURES {
            fs.fail_next(FaultOp::SyncData, Fault::Fail);
        }
        let op = ack(8, 1, 18);
        let failed = service.execute(&op).await;
        ledger.record(&op, &failed);
        assert!(
            matches!(failed, Err(ServiceError::Unavailable { .. })),
            "a write whose fdatasync failed answers unavailable: {failed:?}"
        );
        assert!(!running.healthy(), "not ready while the log cannot sync");
        // A write issued during the outage is not acknowledged while it lasts (it waits
        // in the queue; abandoned here, its outcome is in doubt).
        let op = ack(9, 1, 19);
        let during = tokio::time::timeout(Duration::from_millis(200), service.execute(&op)).await;
        assert!(
            !matches!(during, Ok(Ok(()))),
            "a write was acknowledged while every fdatasync failed"
        );
        ledger.in_doubt.push((9, 1, 19));
        assert!(!running.healthy(), "not ready while the log cannot sync");
        fs.clear_faults();
        ledger.until_ok(service, ack(10, 1, 20)).await;
        wait_for("readiness after the disk works again", PATIENCE, || async {
            running.healthy().then_some(())
        })
        .await;

        for user in 11..=15 {
            ledger.ok(service, ack(user, 1, 10 + user)).await;
        }
        // A later position for an earlier state: the replay must end on it.
        ledger.ok(service, ack(1, 1, 50)).await;
        (running, ledger)
    });

    // kill -9, then the machine loses every unsynced byte of the log.
    process.shutdown_timeout(PATIENCE);
    fs.crash_losing_unsynced();

    let restarted = runtime();
    restarted.block_on(async {
        drop(running);
        let store = open_store(&storage, CAPS).await;
        let lacking = ledger.missing_from(store.as_ref()).await.len();
        // The start-up replay itself, on the crashed file system.
        let (wal, report) =
            commit::recover_log_on(store.as_ref(), Arc::new(fs.clone()), WalOptions::default())
                .await
                .expect("the log replays");
        let writes = report.writes;
        ledger
            .assert_stored(store.as_ref(), "after the crash and the replay")
            .await;
        let mut landed = Vec::new();
        for &(user, channel, message) in &ledger.in_doubt {
            let states = store.load_user(user, CAPS.mention_window()).await.unwrap();
            let stored = states.get(channel).map(|s| s.read.pos);
            landed.push((user, message, stored.is_some_and(|p| p >= message)));
        }
        eprintln!(
            "{fault:?}: {} acknowledged states, {lacking} of them not in the database before \
             the replay; {} records ({writes} writes) replayed; in doubt (user, message, \
             landed): {landed:?}",
            ledger.acked.len(),
            report.records,
        );

        // The recovered log goes on taking writes.
        let mut ledger = ledger;
        let running = start(&storage, wal, Setup::no_checkpoints()).await;
        ledger.ok(&running.service, ack(16, 1, 26)).await;
        ledger.ok(&running.service, ack(2, 1, 60)).await;
        stop_and_check(running, &ledger, &fs, "after a restart and a graceful stop").await;
    });
}

#[test]
fn a_failed_fdatasync_is_never_acknowledged_and_the_log_repairs_itself() {
    failed_fdatasync_then_crash(Fault::Fail);
}

#[test]
fn a_failed_fdatasync_that_drops_the_dirty_pages_is_never_acknowledged_either() {
    failed_fdatasync_then_crash(Fault::FailDroppingCache);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_checkpoint_keeps_writes_durable_in_the_log() {
    let (_storage, fs, running) = start_on_a_new_log(Setup::frequent_checkpoints(10_000)).await;
    let service = &running.service;
    let store = running.store.clone();
    let mut ledger = Ledger::default();

    // Cached users, their states checkpointed.
    for user in 1..=5 {
        ledger.ok(service, ack(user, 1, 10)).await;
    }
    ledger
        .wait_stored(store.inner.as_ref(), "the first checkpoint lands")
        .await;

    // The database goes down (commits, loads and its readiness check): writes to
    // cached users only need the log.
    store.set_down(true, true);
    for user in 1..=5 {
        ledger.ok(service, ack(user, 1, 20)).await;
    }
    wait_for("readiness drops with the checkpoints", PATIENCE, || async {
        (!running.healthy() && store.refused.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    for user in 1..=3 {
        ledger.ok(service, ack(user, 2, 30)).await;
    }
    // Every state was written while the database was down: none is in it yet.
    let lacking = ledger.missing_from(store.inner.as_ref()).await;
    assert_eq!(
        lacking.len(),
        ledger.acked.len(),
        "the database has writes it refused: {lacking:?}"
    );

    // The database comes back: the checkpoint lands and readiness returns.
    store.set_down(false, false);
    ledger
        .wait_stored(store.inner.as_ref(), "the held checkpoint lands")
        .await;
    wait_for("readiness returns", PATIENCE, || async {
        running.healthy().then_some(())
    })
    .await;
    ledger.ok(service, ack(1, 1, 40)).await;

    stop_and_check(running, &ledger, &fs, "after a graceful stop").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_checkpointer_tells_the_store_once_per_quiet_spell() {
    let (_storage, fs, running) = start_on_a_new_log(Setup::frequent_checkpoints(10_000)).await;
    let service = &running.service;
    let store = running.store.clone();
    let mut ledger = Ledger::default();
    let idles = || store.idles.load(Ordering::SeqCst);

    // A node starts quiet: that is a spell too.
    wait_for("the store is told at start", PATIENCE, || async {
        (idles() > 0).then_some(())
    })
    .await;
    for spell in 1..=2u64 {
        let before = idles();
        ledger.ok(service, ack(spell, 1, 10 * spell)).await;
        ledger
            .wait_stored(store.inner.as_ref(), "the checkpoint lands")
            .await;
        wait_for(
            "the quiet checkpointer tells the store",
            PATIENCE,
            || async { (idles() > before).then_some(()) },
        )
        .await;
        // Many more quiet intervals (10 ms each) pass: once per spell, not per tick.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(idles(), before + 1, "quiet spell {spell}");
    }
    // The store works on after giving back its memory.
    ledger.ok(service, ack(3, 1, 40)).await;
    stop_and_check(running, &ledger, &fs, "after quiet spells").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_pressure_when_checkpoints_cannot_land_never_loss() {
    const MAX_UNFLUSHED: usize = 50;
    let (_storage, _fs, running) =
        start_on_a_new_log(Setup::frequent_checkpoints(MAX_UNFLUSHED)).await;
    let service = &running.service;
    let store = running.store.clone();
    let mut ledger = Ledger::default();

    ledger.ok(service, ack(1, 1, 1)).await;

    // Commits fail (loads still work, so new users can be loaded): every write stays
    // unflushed until a checkpoint lands.
    store.set_down(true, false);
    let mut acked_while_down = 0;
    let mut user = 100;
    let overloaded = loop {
        user += 1;
        assert!(
            user < 100 + 10 * MAX_UNFLUSHED as u64,
            "no back pressure after {} writes with the database down",
            user - 100
        );
        let op = ack(user, 1, 7);
        let result = service.execute(&op).await;
        ledger.record(&op, &result);
        match result {
            Ok(()) => acked_while_down += 1,
            Err(ServiceError::Overloaded) => break user,
            Err(e) => panic!("{op:?}: expected success or back pressure, got {e:?}"),
        }
    };
    assert!(
        acked_while_down <= MAX_UNFLUSHED,
        "{acked_while_down} writes acknowledged with the database down, beyond the bound of \
         {MAX_UNFLUSHED} unflushed entries"
    );
    // Nothing lands while the database is down, so the bound stays reached.
    for user in overloaded + 1..=overloaded + 20 {
        let op = ack(user, 1, 7);
        let result = service.execute(&op).await;
        ledger.record(&op, &result);
        assert!(
            matches!(result, Err(ServiceError::Overloaded)),
            "{op:?} with the bound reached and the database down: {result:?}"
        );
    }
    assert!(
        service.unflushed() >= MAX_UNFLUSHED,
        "unflushed {} below the bound while nothing can land",
        service.unflushed()
    );
    wait_for("readiness drops with the checkpoints", PATIENCE, || async {
        (!running.healthy()).then_some(())
    })
    .await;
    eprintln!(
        "back pressure after {acked_while_down} acknowledged writes \
         (max_unflushed {MAX_UNFLUSHED}), {} commits refused",
        store.refused.load(Ordering::SeqCst)
    );

    // The database comes back: writes succeed again, readiness returns.
    store.set_down(false, false);
    // Back pressure eases as the held checkpoints land (not all at once): retry.
    for user in 2..=20 {
        ledger.until_ok(service, ack(user, 1, user)).await;
    }
    wait_for("readiness returns", PATIENCE, || async {
        running.healthy().then_some(())
    })
    .await;

    let store = running.stop().await;
    ledger
        .assert_stored(store.inner.as_ref(), "after a graceful stop")
        .await;
    store.close().await;
}
