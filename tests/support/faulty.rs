//! A [`Store`] wrapper for the service's fault tests (`service_faults`, `log_faults`)
//! that makes storage fail for real callers: loads held at a gate (before or after
//! they read, so that what they read can go stale meanwhile), the next N commits
//! failing, or the whole database down (commits refused and counted; with loads down,
//! loads, readers and the readiness check fail too). Every fault is off at first.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use async_trait::async_trait;
use readstate::domain::{ChannelWindow, UserStates};
use readstate::store::{Store, StoreError, Write};
use tokio::sync::Semaphore;

/// Permits of the load gate: taking them all holds every load.
pub const LOAD_PERMITS: u32 = 1_000;

#[derive(Debug)]
pub struct FaultyStore {
    /// The wrapped store (to check what really landed).
    pub inner: Arc<dyn Store>,
    /// `load_user` waits for a permit (take them all to hold loads).
    pub load_gate: Semaphore,
    /// Loads (users and channels) wait for a permit after reading, before returning
    /// what they read (take them all to hold loads with their rows in hand).
    pub loaded_gate: Semaphore,
    /// Loads that have read their rows (counted before `loaded_gate`).
    pub loads_read: AtomicU64,
    /// The next this-many commits fail (`StoreError::Corrupt`).
    pub failing_commits: AtomicU32,
    commits_down: AtomicBool,
    loads_down: AtomicBool,
    /// Commits refused while the database was down.
    pub refused: AtomicU64,
    /// Calls of [`Store::idle`] (passed on to the wrapped store).
    pub idles: AtomicU64,
}

fn down() -> StoreError {
    StoreError::Unavailable(sqlx::Error::PoolTimedOut)
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            load_gate: Semaphore::new(LOAD_PERMITS as usize),
            loaded_gate: Semaphore::new(LOAD_PERMITS as usize),
            loads_read: AtomicU64::new(0),
            failing_commits: AtomicU32::new(0),
            commits_down: AtomicBool::new(false),
            loads_down: AtomicBool::new(false),
            refused: AtomicU64::new(0),
            idles: AtomicU64::new(0),
        }
    }

    /// Takes the database down (or brings it back): commits, and with `loads` loads.
    pub fn set_down(&self, commits: bool, loads: bool) {
        self.commits_down.store(commits, Ordering::SeqCst);
        self.loads_down.store(loads, Ordering::SeqCst);
    }

    /// Counts a load that has read its rows and holds it at `loaded_gate`.
    async fn loaded(&self) {
        self.loads_read.fetch_add(1, Ordering::SeqCst);
        let _permit = self.loaded_gate.acquire().await.expect("never closed");
    }

    fn check_loads(&self) -> Result<(), StoreError> {
        if self.loads_down.load(Ordering::SeqCst) {
            return Err(down());
        }
        Ok(())
    }
}

#[async_trait]
impl Store for FaultyStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        self.inner.migrate().await
    }
    async fn ready(&self) -> Result<(), StoreError> {
        self.check_loads()?;
        self.inner.ready().await
    }
    async fn load_user(&self, user: u64, mention_window: usize) -> Result<UserStates, StoreError> {
        let _permit = self.load_gate.acquire().await.expect("never closed");
        self.check_loads()?;
        let states = self.inner.load_user(user, mention_window).await?;
        self.loaded().await;
        Ok(states)
    }
    async fn load_channels(
        &self,
        channels: &[u64],
        window: usize,
    ) -> Result<Vec<(u64, ChannelWindow)>, StoreError> {
        self.check_loads()?;
        let windows = self.inner.load_channels(channels, window).await?;
        self.loaded().await;
        Ok(windows)
    }
    async fn commit(&self, writes: &[Write]) -> Result<(), StoreError> {
        if self.commits_down.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(down());
        }
        if self
            .failing_commits
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::Corrupt("injected commit failure".into()));
        }
        self.inner.commit(writes).await
    }
    async fn readers(
        &self,
        channel: u64,
        message: u64,
        after: u64,
        limit: u32,
    ) -> Result<Vec<u64>, StoreError> {
        self.check_loads()?;
        self.inner.readers(channel, message, after, limit).await
    }
    async fn idle(&self) {
        self.idles.fetch_add(1, Ordering::SeqCst);
        self.inner.idle().await;
    }
    fn commit_concurrency(&self) -> usize {
        self.inner.commit_concurrency()
    }
    async fn close(&self) {
        self.inner.close().await;
    }
}
