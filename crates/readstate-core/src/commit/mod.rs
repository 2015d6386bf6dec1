//! Group commit: one task owns the storage writer and turns the writes of many
//! concurrent requests into few transactions.
//!
//! - **Queue.** Callers reserve capacity first (`reserve`, never blocking: a full
//!   queue is back pressure and the caller answers 503), then apply their operation to
//!   the cache and send its writes while still holding the cache shard lock, so queue
//!   order equals apply order for every entity. The bound (`storage.max_unflushed`) is
//!   the most unflushed work the process ever holds.
//! - **Batches.** The task takes the first queued entry, then everything else already
//!   queued (`sync`), or whatever arrives within `flush_interval` (`async`), up to
//!   `max_batch`, and commits it in one transaction: one fsync for the lot.
//! - **Replies.** An entry may carry a waiter; it is answered only after the
//!   transaction holding the entry (and so every earlier one) has committed. In `sync`
//!   mode every write request ends with such a waiter, which is the whole difference
//!   between the two modes.
//! - **Failures.** A failed commit answers its waiters with an error at once (the
//!   outcome is in doubt: the request gets 503 and may retry, writes are idempotent)
//!   and keeps retrying the same batch with backoff: writes are merges, so a replay is
//!   harmless. The cache entries stay dirty (unevictable) until it succeeds.
//! - **Shutdown.** On cancellation the queue is closed, everything in it is committed,
//!   then the task ends. **kill -9** loses only what was queued and not committed, which
//!   in `sync` mode no caller was told had succeeded.
//!
//! **Two ways to make a batch durable** (`storage.commit`):
//!
//! - `direct`: the batch is one database transaction (above).
//! - `log`: the batch is one record appended to the commit log ([`crate::wal`]) with
//!   one write and one fdatasync; waiters are answered then. The logged writes go on
//!   to the [checkpointer](Checkpointer), which merges everything logged since its
//!   last checkpoint and writes it to the database in one transaction every
//!   `storage.checkpoint_interval_ms` (or once `storage.checkpoint_writes` wait),
//!   then records the log position it covers, which deletes older segments. Cache
//!   entries stay dirty (unevictable) until checkpointed, so a cache miss never reads
//!   a database that lacks a logged write; `storage.max_unflushed` bounds the
//!   entries between the queue and the checkpoint (503 beyond it). A failed log sync
//!   answers its waiters 503 and fails closed until the kept records are rewritten
//!   into a new segment (see [`crate::wal::Wal::repair`]); a failed checkpoint is
//!   retried with backoff while the log goes on. Appends never wait for a checkpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::background::Lane;
use crate::backoff::Backoff;
use crate::cache::Cache;
use crate::config::Durability;
use crate::metrics as m;
use crate::store::{Store, Write};
use crate::wal::{LogFs, Position, RecoveryReport, Wal, WalError, WalOptions};

/// Which cache entry a queued write keeps dirty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    User(u64),
    Channel(u64),
}

/// The reply a waiter gets.
pub type Reply = Result<(), CommitError>;

/// When an entry's waiter is answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Until {
    /// Once everything queued before it is durable (committed, or in the fsynced log).
    #[default]
    Durable,
    /// Once everything queued before it is in the database (with the commit log: once
    /// checkpointed), for reads that go to the database.
    Stored,
}

/// One queued unit: writes for some entities, and maybe a waiter.
#[derive(Debug, Default)]
pub struct Entry {
    pub keys: Vec<Key>,
    pub writes: Vec<Write>,
    pub reply: Option<oneshot::Sender<Reply>>,
    pub until: Until,
}

/// Why a write was not (known to be) committed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    /// The queue is full: back pressure.
    #[error("too many unflushed writes")]
    QueueFull,
    /// The commit failed; it is retried, but this caller cannot know whether it will land.
    #[error("storage commit failed")]
    Failed,
    /// The writer has stopped (shutting down).
    #[error("commit writer stopped")]
    Stopped,
}

/// Settings of the commit task.
#[derive(Debug, Clone, Copy)]
pub struct CommitConfig {
    pub durability: Durability,
    pub max_batch: usize,
    pub flush_interval: Duration,
    pub max_unflushed: usize,
    /// Commit log only: longest wait of a logged write for its checkpoint.
    pub checkpoint_interval: Duration,
    /// Commit log only: a checkpoint starts early once this many writes wait.
    pub checkpoint_writes: usize,
}

/// Readiness: the last log sync (or direct commit) and the last checkpoint succeeded.
#[derive(Debug)]
struct Health {
    commit: AtomicBool,
    checkpoint: AtomicBool,
}

/// The sending side, cloned into every request handler.
#[derive(Debug, Clone)]
pub struct Committer {
    tx: mpsc::Sender<Entry>,
    health: Arc<Health>,
    durability: Durability,
    /// Channel deletes queued and not yet in the database (incremented by the service
    /// before it queues one, decremented after the commit or checkpoint).
    deletes: Arc<AtomicU64>,
    /// Entries reserved and not yet in the database (the `storage.max_unflushed`
    /// bound); with the commit log this spans the queue, the log and the checkpoint.
    unflushed: Arc<AtomicUsize>,
    max_unflushed: usize,
    /// Whether the commit log is the durability point (the database lags it by up to
    /// a checkpoint).
    logged: bool,
}

/// Reserved queue capacity; sending through it cannot fail for lack of room.
pub struct Reserved<'a> {
    permits: mpsc::PermitIterator<'a, Entry>,
    unflushed: &'a AtomicUsize,
    /// Reserved and not sent: given back on drop.
    unused: usize,
}

impl Reserved<'_> {
    /// Queues `entry`. Returns false only if more entries were sent than reserved.
    pub fn send(&mut self, entry: Entry) -> bool {
        match self.permits.next() {
            Some(permit) => {
                permit.send(entry);
                self.unused = self.unused.saturating_sub(1);
                true
            }
            None => false,
        }
    }

    /// Queues a waiter behind everything queued so far; it is answered once all of it
    /// is durable (`Until::Durable`) or in the database (`Until::Stored`).
    pub fn barrier_until(&mut self, until: Until) -> Option<oneshot::Receiver<Reply>> {
        let (tx, rx) = oneshot::channel();
        self.send(Entry {
            reply: Some(tx),
            until,
            ..Entry::default()
        })
        .then_some(rx)
    }

    /// Queues a waiter behind everything queued so far; it is answered once all of it
    /// is durable.
    pub fn barrier(&mut self) -> Option<oneshot::Receiver<Reply>> {
        self.barrier_until(Until::Durable)
    }

    /// Spends this reservation (reserved earlier, before the writes it is to wait for
    /// were queued) on a barrier behind everything queued so far.
    ///
    /// # Errors
    /// [`CommitError::Stopped`] when nothing was left of the reservation.
    pub fn into_barrier(mut self) -> Result<Barrier, CommitError> {
        self.barrier().map(Barrier).ok_or(CommitError::Stopped)
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if self.unused > 0 {
            self.unflushed.fetch_sub(self.unused, Ordering::SeqCst);
        }
    }
}

impl Committer {
    /// Reserves room for `n` entries without waiting.
    ///
    /// # Errors
    /// [`CommitError::QueueFull`] when the queue cannot take them now,
    /// [`CommitError::Stopped`] after shutdown.
    pub fn reserve(&self, n: usize) -> Result<Reserved<'_>, CommitError> {
        let n = n.max(1);
        let before = self.unflushed.fetch_add(n, Ordering::SeqCst);
        if before + n > self.max_unflushed {
            self.unflushed.fetch_sub(n, Ordering::SeqCst);
            m::backpressure();
            return Err(CommitError::QueueFull);
        }
        match self.tx.try_reserve_many(n) {
            Ok(permits) => Ok(Reserved {
                permits,
                unflushed: &self.unflushed,
                unused: n,
            }),
            Err(mpsc::error::TrySendError::Full(())) => {
                self.unflushed.fetch_sub(n, Ordering::SeqCst);
                m::backpressure();
                Err(CommitError::QueueFull)
            }
            Err(mpsc::error::TrySendError::Closed(())) => {
                self.unflushed.fetch_sub(n, Ordering::SeqCst);
                Err(CommitError::Stopped)
            }
        }
    }

    /// Waits until everything queued before this call is in the database (with the
    /// commit log: checkpointed), e.g. before a load that must see a delete.
    ///
    /// # Errors
    /// As [`Committer::reserve`], or [`CommitError::Failed`] when the commit failed.
    pub async fn flush(&self) -> Result<(), CommitError> {
        let mut reserved = self.reserve(1)?;
        let rx = reserved
            .barrier_until(Until::Stored)
            .ok_or(CommitError::Stopped)?;
        drop(reserved);
        Barrier(rx).wait().await
    }

    /// A barrier behind everything queued so far, to wait on later (pipelining: the
    /// caller goes on queueing while earlier writes commit).
    ///
    /// # Errors
    /// As [`Committer::reserve`].
    pub fn barrier(&self) -> Result<Barrier, CommitError> {
        self.reserve(1)?.into_barrier()
    }

    /// Whether the last commit (log sync) and the last checkpoint succeeded (readiness).
    pub fn is_healthy(&self) -> bool {
        self.health.commit.load(Ordering::Relaxed) && self.health.checkpoint.load(Ordering::Relaxed)
    }

    /// Entries reserved and not yet in the database.
    pub fn unflushed(&self) -> usize {
        self.unflushed.load(Ordering::Relaxed)
    }

    /// Whether acknowledged writes may not be in the database yet (the commit log is
    /// the durability point and checkpoints write the database later).
    pub fn database_lags(&self) -> bool {
        self.logged
    }

    /// Counts a channel delete about to be queued.
    pub fn delete_started(&self) {
        self.deletes.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether a channel delete is queued and not yet committed: loads from storage
    /// must wait for it, or they would read rows it is about to remove.
    pub fn deletes_pending(&self) -> bool {
        self.deletes.load(Ordering::SeqCst) > 0
    }

    /// The configured durability mode.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Entries queued and not yet taken by the writer.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// Answered once everything queued before it is committed (see [`Committer::barrier`]).
#[derive(Debug)]
pub struct Barrier(oneshot::Receiver<Result<(), CommitError>>);

impl Barrier {
    /// Waits for the commit.
    ///
    /// # Errors
    /// [`CommitError::Failed`] when the commit failed, [`CommitError::Stopped`] when
    /// the writer stopped first.
    pub async fn wait(self) -> Result<(), CommitError> {
        self.0.await.map_err(|_| CommitError::Stopped)?
    }
}

/// Writes replayed per database transaction at start.
const REPLAY_CHUNK: usize = 100_000;

/// Opens the commit log, writes every record after its last checkpoint into the
/// database (merges are idempotent, so records the database already holds are
/// harmless), and records that checkpoint; a torn tail is truncated with a warning,
/// corruption before it stops start-up naming the file and offset.
///
/// # Errors
/// The log cannot be read or is corrupt, or the database refuses the replay.
pub async fn recover_log(
    store: &dyn Store,
    dir: &std::path::Path,
    options: WalOptions,
) -> anyhow::Result<Wal> {
    use anyhow::Context as _;
    let fs = crate::wal::DirFs::open(dir)
        .with_context(|| format!("while opening the commit log in {}", dir.display()))?;
    let (wal, _) = recover_log_on(store, Arc::new(fs), options)
        .await
        .with_context(|| format!("in {}", dir.display()))?;
    Ok(wal)
}

/// [`recover_log`] on any [`LogFs`] (tests run it on an in-memory file system that
/// injects faults); also returns what was recovered.
///
/// # Errors
/// As [`recover_log`].
pub async fn recover_log_on(
    store: &dyn Store,
    fs: Arc<dyn LogFs>,
    options: WalOptions,
) -> anyhow::Result<(Wal, RecoveryReport)> {
    use anyhow::Context as _;
    let started = Instant::now();
    let (mut wal, records, report) = tokio::task::spawn_blocking(move || Wal::open(fs, options))
        .await
        .context("while opening the commit log")?
        .context("while opening the commit log")?;
    let mut end = None;
    let mut chunk: Vec<crate::store::Write> = Vec::new();
    for record in &records {
        chunk.extend_from_slice(&record.writes);
        end = Some(record.end);
        if chunk.len() >= REPLAY_CHUNK {
            store
                .commit(&chunk)
                .await
                .context("while replaying the commit log into the database")?;
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        store
            .commit(&chunk)
            .await
            .context("while replaying the commit log into the database")?;
    }
    if let Some(end) = end {
        wal = tokio::task::spawn_blocking(move || wal.checkpointed(end).map(|_| wal))
            .await
            .context("while recording the replay in the commit log")?
            .context("while recording the replay in the commit log")?;
    }
    let took = started.elapsed();
    crate::metrics::log_replayed(records.len(), took);
    crate::metrics::log_on_disk(wal.bytes_on_disk());
    tracing::info!(
        records = report.records,
        writes = report.writes,
        bytes = report.bytes,
        took_ms = took.as_millis() as u64,
        "commit log replayed"
    );
    Ok((wal, report))
}

/// Starts the commit task on `tracker` (`direct` mode: every batch is a database
/// transaction); it ends after `cancel` once the queue is drained.
pub fn spawn(
    store: Arc<dyn Store>,
    cache: Arc<Cache>,
    config: CommitConfig,
    cancel: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> Committer {
    start(store, cache, config, None, cancel, tracker)
}

/// Starts the commit task with the commit log `wal` (already opened and recovered)
/// as the durability point, and its checkpointer, on `tracker`; both end after
/// `cancel` once everything queued is logged and checkpointed.
pub fn spawn_with_log(
    store: Arc<dyn Store>,
    cache: Arc<Cache>,
    config: CommitConfig,
    wal: Wal,
    cancel: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> Committer {
    start(store, cache, config, Some(wal), cancel, tracker)
}

fn start(
    store: Arc<dyn Store>,
    cache: Arc<Cache>,
    config: CommitConfig,
    wal: Option<Wal>,
    cancel: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> Committer {
    let (tx, rx) = mpsc::channel(config.max_unflushed.max(1));
    let health = Arc::new(Health {
        commit: AtomicBool::new(true),
        checkpoint: AtomicBool::new(true),
    });
    let deletes = Arc::new(AtomicU64::new(0));
    let unflushed = Arc::new(AtomicUsize::new(0));
    let release = Release {
        cache,
        deletes: deletes.clone(),
        unflushed: unflushed.clone(),
    };
    let logged = wal.is_some();
    let sink = match wal {
        None => Sink::Direct,
        Some(wal) => {
            let wal = Arc::new(parking_lot::Mutex::new(wal));
            let (logged_tx, logged_rx) = mpsc::unbounded_channel();
            let checkpointer = Checkpointer {
                store: store.clone(),
                wal: wal.clone(),
                release: release.clone(),
                health: health.clone(),
                interval: config.checkpoint_interval,
                max_writes: config.checkpoint_writes.max(1),
                urgent_at: (config.max_unflushed / 2).max(1),
            };
            tracker.spawn(checkpointer.run(logged_rx));
            Sink::Log {
                wal,
                checkpoint: logged_tx,
            }
        }
    };
    let writer = Writer {
        store,
        config,
        health: health.clone(),
        release,
        sink,
    };
    let lanes = writer.store.commit_concurrency();
    if matches!(writer.sink, Sink::Direct) && lanes > 1 {
        tracker.spawn(writer.run_concurrent(rx, cancel, lanes));
    } else {
        tracker.spawn(writer.run(rx, cancel));
    }
    Committer {
        tx,
        health,
        durability: config.durability,
        deletes,
        unflushed,
        max_unflushed: config.max_unflushed.max(1),
        logged,
    }
}

/// What makes a batch durable.
enum Sink {
    /// One database transaction per batch.
    Direct,
    /// One commit log record per batch; the checkpointer writes the database.
    Log {
        wal: Arc<parking_lot::Mutex<Wal>>,
        checkpoint: mpsc::UnboundedSender<Logged>,
    },
}

/// Ends what a committed (or checkpointed) batch held: cache entries become clean,
/// channel deletes stop holding up loads, the unflushed bound gets room back.
#[derive(Clone)]
struct Release {
    cache: Arc<Cache>,
    deletes: Arc<AtomicU64>,
    unflushed: Arc<AtomicUsize>,
}

impl Release {
    /// Each shard is locked once for all of its keys (a checkpoint releases tens of
    /// thousands), in short holds that requests interleave with.
    fn keys(&self, keys: &[Key]) {
        let mut keyed: Vec<(usize, Key)> = keys
            .iter()
            .map(|&key| match key {
                Key::User(user) => (self.cache.user_shard(user), key),
                Key::Channel(channel) => (self.cache.channel_shard(channel), key),
            })
            .collect();
        keyed.sort_unstable_by_key(|&(index, _)| index);
        for group in keyed.chunk_by(|a, b| a.0 == b.0) {
            let mut shard = self.cache.lock(group[0].0);
            for &(_, key) in group {
                match key {
                    Key::User(user) => shard.users.done_pending(user),
                    Key::Channel(channel) => shard.channels.done_pending(channel),
                }
            }
            shard.trim();
        }
    }

    fn stored(&self, writes: &[Write], entries: usize) {
        let deletes = writes
            .iter()
            .filter(|w| matches!(w, Write::DeleteChannel { .. }))
            .count() as u64;
        if deletes > 0 {
            self.deletes.fetch_sub(deletes, Ordering::SeqCst);
        }
        self.unflushed.fetch_sub(entries, Ordering::SeqCst);
    }
}

/// A batch in the fsynced log, on its way to the database.
struct Logged {
    keys: Vec<Key>,
    writes: Vec<Write>,
    /// Entries of the batch (for the unflushed bound).
    entries: usize,
    /// Waiters for the database (`Until::Stored`).
    stored: Vec<oneshot::Sender<Reply>>,
    /// The log position after the batch's record.
    end: Position,
}

struct Writer {
    store: Arc<dyn Store>,
    config: CommitConfig,
    health: Arc<Health>,
    release: Release,
    sink: Sink,
}

impl Writer {
    async fn run(self, mut rx: mpsc::Receiver<Entry>, cancel: CancellationToken) {
        let mut batch: Vec<Entry> = Vec::with_capacity(self.config.max_batch);
        let mut closing = false;
        loop {
            let first = tokio::select! {
                entry = rx.recv() => entry,
                () = cancel.cancelled(), if !closing => {
                    // Refuse new entries; what is queued is still received and committed.
                    rx.close();
                    closing = true;
                    continue;
                }
            };
            let Some(first) = first else { break };
            batch.push(first);
            self.fill(&mut rx, &mut batch, closing, &cancel).await;
            match &self.sink {
                Sink::Direct => self.commit(&mut batch).await,
                Sink::Log { wal, checkpoint } => self.log(wal, checkpoint, &mut batch).await,
            }
        }
        tracing::info!("commit writer drained and stopped");
    }

    /// `direct` with several commit transactions at once (PostgreSQL): a batch of
    /// merges is committed on its own task while the next batch forms, up to `lanes`
    /// at a time; waiters are answered in queue order (a barrier still means
    /// "everything before me"), and a batch with a removal waits for every earlier one
    /// and runs alone.
    async fn run_concurrent(
        self,
        mut rx: mpsc::Receiver<Entry>,
        cancel: CancellationToken,
        lanes: usize,
    ) {
        let mut in_flight: std::collections::VecDeque<InFlight> = std::collections::VecDeque::new();
        let mut closing = false;
        loop {
            let first = tokio::select! {
                entry = rx.recv() => entry,
                done = async { (&mut in_flight[0]).await }, if !in_flight.is_empty() => {
                    in_flight.pop_front();
                    self.finish(done);
                    continue;
                }
                () = cancel.cancelled(), if !closing => {
                    rx.close();
                    closing = true;
                    continue;
                }
            };
            let Some(first) = first else { break };
            let mut batch = Vec::with_capacity(self.config.max_batch);
            batch.push(first);
            self.fill(&mut rx, &mut batch, closing, &cancel).await;
            let removal = batch.iter().any(|e| e.writes.iter().any(Write::is_removal));
            if removal {
                // Orders against everything before and after it.
                while let Some(earlier) = in_flight.pop_front() {
                    self.finish(earlier.await);
                }
                self.commit(&mut batch).await;
                continue;
            }
            if in_flight.len() >= lanes
                && let Some(oldest) = in_flight.pop_front()
            {
                self.finish(oldest.await);
            }
            let store = self.store.clone();
            let health = self.health.clone();
            in_flight.push_back(tokio::spawn(commit_batch(store, health, batch)));
        }
        while let Some(earlier) = in_flight.pop_front() {
            self.finish(earlier.await);
        }
        tracing::info!("commit writer drained and stopped");
    }

    /// Ends a batch committed on its own task: cache entries clean, waiters answered.
    fn finish(&self, done: Result<(Vec<Entry>, Vec<Write>), tokio::task::JoinError>) {
        match done {
            Ok((entries, writes)) => {
                self.release.stored(&writes, entries.len());
                for entry in entries {
                    self.release.keys(&entry.keys);
                    if let Some(reply) = entry.reply {
                        let _ = reply.send(Ok(()));
                    }
                }
            }
            // Only a panic gets here (tests; release builds abort): its waiters see
            // the writer as stopped.
            Err(e) => tracing::error!(error = %e, "a commit task failed"),
        }
    }

    async fn fill(
        &self,
        rx: &mut mpsc::Receiver<Entry>,
        batch: &mut Vec<Entry>,
        closing: bool,
        cancel: &CancellationToken,
    ) {
        let max = self.config.max_batch;
        if self.config.durability == Durability::Async && !closing {
            // Gather for up to one flush interval, but a shutdown flushes at once.
            let deadline = tokio::time::Instant::now() + self.config.flush_interval;
            while batch.len() < max {
                tokio::select! {
                    entry = tokio::time::timeout_at(deadline, rx.recv()) => match entry {
                        Ok(Some(entry)) => batch.push(entry),
                        Ok(None) | Err(_) => break,
                    },
                    () = cancel.cancelled() => break,
                }
            }
        }
        while batch.len() < max {
            match rx.try_recv() {
                Ok(entry) => batch.push(entry),
                Err(_) => break,
            }
        }
    }

    /// `direct`: the batch is one database transaction, retried until it lands.
    async fn commit(&self, batch: &mut Vec<Entry>) {
        let taken = std::mem::take(batch);
        let done = commit_batch(self.store.clone(), self.health.clone(), taken).await;
        self.finish(Ok(done));
    }

    /// `log`: the batch is one record in the commit log, appended and fsynced (or,
    /// after a failed sync, rewritten into a new segment) until it is durable; then
    /// its durable waiters are answered and it goes on to the checkpointer.
    async fn log(
        &self,
        wal: &Arc<parking_lot::Mutex<Wal>>,
        checkpoint: &mpsc::UnboundedSender<Logged>,
        batch: &mut Vec<Entry>,
    ) {
        let writes: Vec<Write> = batch
            .iter()
            .flat_map(|e| e.writes.iter().copied())
            .collect();
        let mut retry = Retry::new(&self.health.commit, "log");
        let mut writes = writes;
        let end = loop {
            let started = Instant::now();
            let wal = wal.clone();
            let repair = retry.failures > 0;
            // File I/O and fdatasync block: off the async workers. The writes go to the
            // blocking thread and come back with the result (no copy per group).
            let (back, result) = match tokio::task::spawn_blocking(move || {
                let result = (|| {
                    let mut wal = wal.lock();
                    let before = wal.durable_end();
                    if repair {
                        // The record is kept by the log since the failed sync: rewrite it.
                        wal.repair()?;
                    } else {
                        if !writes.is_empty() {
                            wal.append(&writes)?;
                        }
                        wal.sync()?;
                    }
                    Ok::<_, WalError>((before, wal.durable_end(), wal.bytes_on_disk()))
                })();
                (writes, result)
            })
            .await
            {
                Ok(done) => done,
                // Only a panic gets here (tests; release builds abort).
                Err(join) => panic!("the commit log thread failed: {join}"),
            };
            writes = back;
            match result {
                Ok((before, end, on_disk)) => {
                    m::log_synced(log_bytes(before, end), started.elapsed(), on_disk);
                    if !writes.is_empty() {
                        // The group commit figures: in log mode a commit is a record.
                        m::commit_done(batch.len(), writes.len(), started.elapsed());
                    }
                    retry.succeeded("commit log writes again");
                    break end;
                }
                Err(e) => {
                    retry.failed(
                        &e,
                        "commit log sync failed; failed closed until its unsynced records are rewritten",
                    );
                    answer_failed(batch);
                    retry.wait().await;
                }
            }
        };
        let mut keys = Vec::new();
        let mut stored = Vec::new();
        let entries = batch.len();
        for entry in batch.drain(..) {
            keys.extend_from_slice(&entry.keys);
            if let Some(reply) = entry.reply {
                match entry.until {
                    Until::Durable => {
                        let _ = reply.send(Ok(()));
                    }
                    Until::Stored => stored.push(reply),
                }
            }
        }
        let logged = Logged {
            keys,
            writes,
            entries,
            stored,
            end,
        };
        if let Err(mpsc::error::SendError(logged)) = checkpoint.send(logged) {
            // The checkpointer ends only after this writer: unreachable in practice.
            // The writes are in the log and are replayed at the next start.
            tracing::error!("checkpointer gone; logged writes wait for the next start");
            for reply in logged.stored {
                let _ = reply.send(Err(CommitError::Stopped));
            }
        }
    }
}

/// The retries of one batch (a commit, a log sync or a checkpoint): each failure
/// marks its health flag down, is counted under `operation`, logged the first time
/// and at every power of two, and waits a doubling backoff (10 ms up to 2 s); the
/// success after failures marks it up again and says so.
struct Retry<'a> {
    healthy: &'a AtomicBool,
    operation: &'static str,
    failures: u32,
    backoff: Backoff,
}

impl<'a> Retry<'a> {
    fn new(healthy: &'a AtomicBool, operation: &'static str) -> Self {
        Self {
            healthy,
            operation,
            failures: 0,
            backoff: Backoff::new(Duration::from_millis(10), Duration::from_secs(2)),
        }
    }

    /// Counts and logs a failure (`what` says what happens now).
    fn failed(&mut self, e: &(dyn std::error::Error + 'static), what: &str) {
        self.failures += 1;
        self.healthy.store(false, Ordering::Relaxed);
        m::storage_error(self.operation);
        if self.failures == 1 || self.failures.is_power_of_two() {
            tracing::warn!(error = %crate::error_chain(e), failures = self.failures, "{what}");
        }
    }

    /// Waits before the next attempt.
    async fn wait(&mut self) {
        self.backoff.wait().await;
    }

    /// The attempt succeeded (`what` is logged when failures came before).
    fn succeeded(&self, what: &str) {
        if self.failures > 0 {
            tracing::info!(failures = self.failures, "{what}");
        }
        self.healthy.store(true, Ordering::Relaxed);
    }
}

/// A batch being committed on its own task.
type InFlight = tokio::task::JoinHandle<(Vec<Entry>, Vec<Write>)>;

/// Commits `batch` in one database transaction, retrying with backoff until it lands;
/// a failure answers the batch's waiters at once (in doubt). Returns the batch (its
/// remaining waiters are answered by the caller, in queue order) and its writes.
async fn commit_batch(
    store: Arc<dyn Store>,
    health: Arc<Health>,
    mut batch: Vec<Entry>,
) -> (Vec<Entry>, Vec<Write>) {
    let writes: Vec<Write> = batch
        .iter()
        .flat_map(|e| e.writes.iter().copied())
        .collect();
    let mut retry = Retry::new(&health.commit, "commit");
    loop {
        let started = Instant::now();
        let result = if writes.is_empty() {
            Ok(())
        } else {
            store.commit(&writes).await
        };
        match result {
            Ok(()) => {
                if !writes.is_empty() {
                    m::commit_done(batch.len(), writes.len(), started.elapsed());
                }
                retry.succeeded("storage commit succeeded again");
                break;
            }
            Err(e) => {
                retry.failed(&e, "storage commit failed; retrying the batch");
                answer_failed(&mut batch);
                retry.wait().await;
            }
        }
    }
    (batch, writes)
}

/// Bytes between two positions of the log (0 across a segment change, where the
/// count restarts).
fn log_bytes(before: Position, after: Position) -> u64 {
    if before.segment == after.segment {
        after.offset.saturating_sub(before.offset)
    } else {
        after.offset
    }
}

/// Answers a batch's waiters with "failed" (the outcome is in doubt; the batch is
/// retried and they may retry too).
fn answer_failed(batch: &mut [Entry]) {
    for entry in batch.iter_mut() {
        if let Some(reply) = entry.reply.take() {
            let _ = reply.send(Err(CommitError::Failed));
        }
    }
}

/// Writes what the log holds into the database in large merged batches, then tells
/// the log which position is covered.
struct Checkpointer {
    store: Arc<dyn Store>,
    wal: Arc<parking_lot::Mutex<Wal>>,
    release: Release,
    health: Arc<Health>,
    interval: Duration,
    max_writes: usize,
    /// At or above this many unflushed entries a checkpoint is urgent: it runs at
    /// normal priority instead of on idle CPU (half of `storage.max_unflushed`, so
    /// that writes are not refused while the CPU is busy with requests).
    urgent_at: usize,
}

/// Checkpoint intervals in a row with nothing to write after which the store is
/// told it is idle ([`Store::idle`]: SQLite frees its writer's page cache, up to
/// 64 MiB after a load). 30 s at the default interval: long enough that a steady
/// trickle of writes keeps the cache, short enough that a node left idle after a
/// burst gives the memory back.
const IDLE_TICKS: u32 = 3;

/// The threads checkpoints run on (`None`: one could not be started, and its
/// checkpoints run on the runtime).
struct Lanes {
    /// At the lowest priority: checkpoints that can wait for idle CPU.
    idle: Option<Lane>,
    /// At normal priority: checkpoints that are behind (`urgent_at`), off the
    /// request workers all the same.
    urgent: Option<Lane>,
}

fn started(lane: std::io::Result<Lane>) -> Option<Lane> {
    match lane {
        Ok(lane) => Some(lane),
        Err(e) => {
            tracing::warn!(error = %e, "no thread of its own for checkpoints; they run with the requests");
            None
        }
    }
}

/// Logged batches waiting for the next checkpoint.
#[derive(Default)]
struct Pending {
    keys: Vec<Key>,
    writes: Vec<Write>,
    entries: usize,
    stored: Vec<oneshot::Sender<Reply>>,
    end: Option<Position>,
}

impl Pending {
    fn add(&mut self, logged: Logged) {
        self.keys.extend(logged.keys);
        self.writes.extend(logged.writes);
        self.entries += logged.entries;
        self.stored.extend(logged.stored);
        self.end = Some(logged.end);
    }
}

impl Checkpointer {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Logged>) {
        // Checkpoints are background work: their CPU time (merging, SQL, B-tree
        // pages on the SQLite writer's own lowered thread) goes to a thread at the
        // lowest priority, never to the request workers (see `background`), unless
        // they fall behind (`urgent_at`).
        let lanes = Lanes {
            idle: started(Lane::start("readstate-checkpoint")),
            urgent: started(Lane::start_normal("readstate-checkpoint-urgent")),
        };
        let mut pending = Pending::default();
        // The first checkpoint is one interval after start, not at once.
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + self.interval, self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Intervals in a row with nothing to checkpoint; at IDLE_TICKS the store
        // gives back what it keeps for the next checkpoint (once per quiet spell).
        let mut quiet = 0u32;
        loop {
            let due = tokio::select! {
                logged = rx.recv() => match logged {
                    Some(logged) => {
                        pending.add(logged);
                        // Take whatever else is already logged.
                        while let Ok(more) = rx.try_recv() {
                            pending.add(more);
                        }
                        !pending.stored.is_empty() || pending.writes.len() >= self.max_writes
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    if pending.end.is_none() {
                        quiet = quiet.saturating_add(1);
                        if quiet == IDLE_TICKS {
                            self.store.idle().await;
                        }
                    }
                    true
                }
            };
            if due && pending.end.is_some() {
                quiet = 0;
                self.checkpoint(&lanes, std::mem::take(&mut pending)).await;
            }
        }
        // The writer has stopped: everything logged goes to the database now, so a
        // clean shutdown leaves nothing to replay.
        if pending.end.is_some() {
            self.checkpoint(&lanes, pending).await;
        }
        tracing::info!("checkpointer drained and stopped");
    }

    /// Writes `pending` in one transaction (the store merges it: each row once),
    /// retrying with backoff until it lands, then records the position.
    async fn checkpoint(&self, lanes: &Lanes, pending: Pending) {
        let Some(end) = pending.end else { return };
        let Pending {
            keys,
            mut writes,
            entries,
            stored,
            ..
        } = pending;
        let mut retry = Retry::new(&self.health.checkpoint, "checkpoint");
        loop {
            let started = Instant::now();
            // Behind (writes near the unflushed bound, e.g. the CPU busy with
            // requests for a while): this one runs at normal priority.
            let urgent = self.release.unflushed.load(Ordering::Relaxed) >= self.urgent_at;
            let lane = if urgent { &lanes.urgent } else { &lanes.idle };
            let result = if writes.is_empty() {
                Ok(())
            } else if let Some(lane) = lane {
                // The writes go to the lane and come back with the result.
                let store = self.store.clone();
                let (back, result) = lane
                    .block_on(move || async move {
                        let result = store.checkpoint(&writes, urgent).await;
                        (writes, result)
                    })
                    .await;
                writes = back;
                result
            } else {
                self.store.checkpoint(&writes, urgent).await
            };
            match result {
                Ok(()) => {
                    m::checkpoint_done(writes.len(), started.elapsed(), urgent);
                    retry.succeeded("checkpoint succeeded again");
                    break;
                }
                Err(e) => {
                    retry.failed(
                        &e,
                        &format!(
                            "checkpoint of {} writes failed; retrying (the writes are safe in the commit log)",
                            writes.len()
                        ),
                    );
                    retry.wait().await;
                }
            }
        }
        // Off the request workers, but at normal priority: a lowered thread holding
        // a shard lock would make requests wait for it.
        let release = self.release.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || release.keys(&keys)).await {
            // Only a panic or a runtime already shutting down gets here; the entries
            // then stay unevictable until the process ends.
            tracing::error!(error = %e, "could not mark checkpointed cache entries clean");
        }
        self.release.stored(&writes, entries);
        for reply in stored {
            let _ = reply.send(Ok(()));
        }
        let wal = self.wal.clone();
        let recorded = tokio::task::spawn_blocking(move || {
            // The checkpoint file is fsynced without the log's lock: appends go on.
            let job = wal.lock().checkpoint_job(end)?;
            if let Some(job) = job {
                job.write()?;
            }
            let doomed = wal.lock().checkpoint_written(end);
            // Unlinked without the log's lock, so that appends go on meanwhile.
            let deleted = doomed.delete();
            let mut wal = wal.lock();
            let removed = wal.deleted(deleted)?;
            Ok::<_, WalError>((removed, wal.bytes_on_disk()))
        })
        .await;
        match recorded {
            Ok(Ok((_, on_disk))) => m::log_on_disk(on_disk),
            // The database has the writes; the log keeps them a while longer and
            // replays them (harmlessly, merges are idempotent) if the process restarts
            // before the next checkpoint records its position.
            Ok(Err(e)) => {
                tracing::warn!(error = %crate::error_chain(&e), "could not record the checkpoint in the commit log");
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not record the checkpoint in the commit log")
            }
        }
    }
}
