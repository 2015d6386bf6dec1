//! Fault paths of the service, through a store wrapper that can hold loads at a gate
//! and fail commits: a request dropped mid-load does not wedge later callers, and a
//! failing commit answers "unavailable" (never success), then lands on retry. On the
//! storage `READSTATE_TEST_STORAGE` picks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use readstate::cache::Cache;
use readstate::commit::{self, CommitConfig};
use readstate::config::Durability;
use readstate::domain::{Caps, ChannelId, ChannelWindow, MessageId, Op, UserId, UserStates};
use readstate::service::{Service, ServiceError, ServiceLimits};
use readstate::store::{Store, StoreError, Write};
use support::TestStorage;
use support::store::open_store;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug)]
struct FaultyStore {
    inner: Arc<dyn Store>,
    /// Loads wait for a permit (closed = blocked).
    load_gate: Semaphore,
    /// The next this-many commits fail.
    failing_commits: AtomicU32,
}

#[async_trait]
impl Store for FaultyStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        self.inner.migrate().await
    }
    async fn ready(&self) -> Result<(), StoreError> {
        self.inner.ready().await
    }
    async fn load_user(&self, user: u64, mention_window: usize) -> Result<UserStates, StoreError> {
        let _permit = self.load_gate.acquire().await.expect("never closed");
        self.inner.load_user(user, mention_window).await
    }
    async fn load_channels(
        &self,
        channels: &[u64],
        window: usize,
    ) -> Result<Vec<(u64, ChannelWindow)>, StoreError> {
        self.inner.load_channels(channels, window).await
    }
    async fn commit(&self, writes: &[Write]) -> Result<(), StoreError> {
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
        self.inner.readers(channel, message, after, limit).await
    }
    async fn close(&self) {
        self.inner.close().await;
    }
}

async fn service(storage: &TestStorage) -> (Service, Arc<FaultyStore>, CancellationToken) {
    let caps = Caps::default();
    let inner = open_store(storage, caps).await;
    let store = Arc::new(FaultyStore {
        inner,
        load_gate: Semaphore::new(1_000),
        failing_commits: AtomicU32::new(0),
    });
    let cache = Arc::new(Cache::new(1 << 20));
    let cancel = CancellationToken::new();
    let committer = commit::spawn(
        store.clone(),
        cache.clone(),
        CommitConfig {
            durability: Durability::Sync,
            max_batch: 64,
            flush_interval: Duration::from_millis(5),
            max_unflushed: 1_000,
            checkpoint_interval: Duration::from_millis(50),
            checkpoint_writes: 1_000,
        },
        cancel.clone(),
        &TaskTracker::new(),
    );
    let limits = ServiceLimits {
        max_mentions: 10,
        max_batch_ops: 100,
        max_page: 100,
        max_summary_users: 100,
        max_channels_filter: 100,
    };
    let service = Service::new(
        cache,
        store.clone(),
        committer,
        caps,
        limits,
        Duration::from_secs(10),
    );
    (service, store, cancel)
}

fn ack(user: u64, channel: u64, message: u64) -> Op {
    Op::Ack {
        user: UserId::new(user).unwrap(),
        channel: ChannelId::new(channel).unwrap(),
        message: MessageId::new(message).unwrap(),
        at: None,
    }
}

#[tokio::test]
async fn a_request_dropped_while_loading_does_not_wedge_the_next_one() {
    let storage = TestStorage::from_env();
    let (service, store, cancel) = service(&storage).await;
    let user = UserId::new(7).unwrap();
    let held = store.load_gate.acquire_many(1_000).await.unwrap();

    // The first caller owns the load and is dropped while storage holds it.
    let dropped =
        tokio::time::timeout(Duration::from_millis(50), service.read_states(user, None)).await;
    drop(held);
    let next = tokio::time::timeout(Duration::from_secs(10), service.read_states(user, None)).await;

    assert!(
        dropped.is_err(),
        "the first call was still loading when dropped"
    );
    assert!(
        next.is_ok(),
        "the next call waited forever on a load nobody was running"
    );
    assert_eq!(next.unwrap().unwrap(), vec![]);
    cancel.cancel();
}

#[tokio::test]
async fn a_failing_commit_answers_unavailable_then_the_retried_batch_lands() {
    let storage = TestStorage::from_env();
    let (service, store, cancel) = service(&storage).await;
    store.failing_commits.store(2, Ordering::SeqCst);

    let first = service.execute(&ack(1, 1, 10)).await;
    let healthy_during = service.committer().is_healthy();
    service.committer().flush().await.unwrap();
    let stored = store.inner.load_user(1, 10).await.unwrap();

    assert!(
        matches!(first, Err(ServiceError::Unavailable { .. })),
        "{first:?}"
    );
    assert!(!healthy_during, "readiness reflects the failing commits");
    assert_eq!(
        stored.get(1).map(|s| s.read.pos),
        Some(10),
        "the batch was retried until it committed"
    );
    assert!(service.committer().is_healthy());
    cancel.cancel();
}
