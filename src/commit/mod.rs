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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::config::Durability;
use crate::metrics as m;
use crate::store::{Store, StoreError, Write};

/// Which cache entry a queued write keeps dirty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    User(u64),
    Channel(u64),
}

/// The reply a waiter gets.
pub type Reply = Result<(), CommitError>;

/// One queued unit: writes for some entities, and maybe a waiter.
#[derive(Debug, Default)]
pub struct Entry {
    pub keys: Vec<Key>,
    pub writes: Vec<Write>,
    pub reply: Option<oneshot::Sender<Reply>>,
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
}

/// The sending side, cloned into every request handler.
#[derive(Debug, Clone)]
pub struct Committer {
    tx: mpsc::Sender<Entry>,
    healthy: Arc<AtomicBool>,
    durability: Durability,
    /// Channel deletes queued and not yet committed (incremented by the service
    /// before it queues one, decremented by the writer after the commit).
    deletes: Arc<AtomicU64>,
}

/// Reserved queue capacity; sending through it cannot fail for lack of room.
pub struct Reserved<'a> {
    permits: mpsc::PermitIterator<'a, Entry>,
}

impl Reserved<'_> {
    /// Queues `entry`. Returns false only if more entries were sent than reserved.
    pub fn send(&mut self, entry: Entry) -> bool {
        match self.permits.next() {
            Some(permit) => {
                permit.send(entry);
                true
            }
            None => false,
        }
    }

    /// Queues a waiter behind everything queued so far; it is answered once all of it
    /// is durable.
    pub fn barrier(&mut self) -> Option<oneshot::Receiver<Reply>> {
        let (tx, rx) = oneshot::channel();
        self.send(Entry {
            reply: Some(tx),
            ..Entry::default()
        })
        .then_some(rx)
    }
}

impl Committer {
    /// Reserves room for `n` entries without waiting.
    ///
    /// # Errors
    /// [`CommitError::QueueFull`] when the queue cannot take them now,
    /// [`CommitError::Stopped`] after shutdown.
    pub fn reserve(&self, n: usize) -> Result<Reserved<'_>, CommitError> {
        match self.tx.try_reserve_many(n.max(1)) {
            Ok(permits) => Ok(Reserved { permits }),
            Err(mpsc::error::TrySendError::Full(())) => {
                m::backpressure();
                Err(CommitError::QueueFull)
            }
            Err(mpsc::error::TrySendError::Closed(())) => Err(CommitError::Stopped),
        }
    }

    /// Waits until everything queued before this call is durable.
    ///
    /// # Errors
    /// As [`Committer::reserve`], or [`CommitError::Failed`] when the commit failed.
    pub async fn flush(&self) -> Result<(), CommitError> {
        self.barrier()?.wait().await
    }

    /// A barrier behind everything queued so far, to wait on later (pipelining: the
    /// caller goes on queueing while earlier writes commit).
    ///
    /// # Errors
    /// As [`Committer::reserve`].
    pub fn barrier(&self) -> Result<Barrier, CommitError> {
        let mut reserved = self.reserve(1)?;
        reserved.barrier().map(Barrier).ok_or(CommitError::Stopped)
    }

    /// Whether the last commit succeeded (readiness).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
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

/// Starts the commit task on `tracker`; it ends after `cancel` once the queue is drained.
pub fn spawn(
    store: Arc<dyn Store>,
    cache: Arc<Cache>,
    config: CommitConfig,
    cancel: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> Committer {
    let (tx, rx) = mpsc::channel(config.max_unflushed.max(1));
    let healthy = Arc::new(AtomicBool::new(true));
    let deletes = Arc::new(AtomicU64::new(0));
    let writer = Writer {
        store,
        cache,
        config,
        healthy: healthy.clone(),
        deletes: deletes.clone(),
    };
    tracker.spawn(writer.run(rx, cancel));
    Committer {
        tx,
        healthy,
        durability: config.durability,
        deletes,
    }
}

struct Writer {
    store: Arc<dyn Store>,
    cache: Arc<Cache>,
    config: CommitConfig,
    healthy: Arc<AtomicBool>,
    deletes: Arc<AtomicU64>,
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
            self.commit(&mut batch).await;
        }
        tracing::info!("commit writer drained and stopped");
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

    async fn commit(&self, batch: &mut Vec<Entry>) {
        let writes: Vec<Write> = batch
            .iter()
            .flat_map(|e| e.writes.iter().copied())
            .collect();
        let mut backoff = Duration::from_millis(10);
        let mut failures = 0u32;
        loop {
            let started = Instant::now();
            let result = if writes.is_empty() {
                Ok(())
            } else {
                self.store.commit(&writes).await
            };
            match result {
                Ok(()) => {
                    if !writes.is_empty() {
                        m::commit_done(batch.len(), writes.len(), started.elapsed());
                    }
                    if failures > 0 {
                        tracing::info!(failures, "storage commit succeeded again");
                    }
                    self.healthy.store(true, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    failures += 1;
                    self.failed(&e, failures, batch);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        let deletes = writes
            .iter()
            .filter(|w| matches!(w, Write::DeleteChannel { .. }))
            .count() as u64;
        self.deletes.fetch_sub(deletes, Ordering::SeqCst);
        for entry in batch.drain(..) {
            self.release(&entry.keys);
            if let Some(reply) = entry.reply {
                // The waiter may have timed out and gone; nothing to do then.
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// Logs and counts a failed commit and answers the batch's waiters (in doubt).
    fn failed(&self, e: &StoreError, failures: u32, batch: &mut [Entry]) {
        self.healthy.store(false, Ordering::Relaxed);
        m::storage_error("commit");
        if failures == 1 || failures.is_power_of_two() {
            tracing::warn!(error = %crate::error_chain(e), failures, "storage commit failed; retrying the batch");
        }
        for entry in batch.iter_mut() {
            if let Some(reply) = entry.reply.take() {
                let _ = reply.send(Err(CommitError::Failed));
            }
        }
    }

    fn release(&self, keys: &[Key]) {
        for key in keys {
            match *key {
                Key::User(user) => self
                    .cache
                    .lock(self.cache.user_shard(user))
                    .users
                    .done_pending(user),
                Key::Channel(channel) => {
                    self.cache
                        .lock(self.cache.channel_shard(channel))
                        .channels
                        .done_pending(channel);
                }
            }
        }
    }
}
