//! Fault paths of the service, through a store wrapper that can hold loads at a gate
//! and fail commits: a request dropped mid-load does not wedge later callers, and a
//! failing commit answers "unavailable" (never success), then lands on retry. On the
//! storage `READSTATE_TEST_STORAGE` picks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use readstate::cache::Cache;
use readstate::commit::{self, CommitConfig};
use readstate::config::Durability;
use readstate::domain::{Caps, ChannelId, MessageId, Op, UserId};
use readstate::service::{Service, ServiceError};
use support::TestStorage;
use support::faulty::{FaultyStore, LOAD_PERMITS};
use support::store::open_store;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

async fn service(storage: &TestStorage) -> (Service, Arc<FaultyStore>, CancellationToken) {
    let caps = Caps::default();
    let inner = open_store(storage, caps).await;
    let store = Arc::new(FaultyStore::new(inner));
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
    let service = support::store::service(cache, store.clone(), committer, caps);
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
    let held = store.load_gate.acquire_many(LOAD_PERMITS).await.unwrap();

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
    let healthy_during = service.storage_healthy();
    service.flush().await.unwrap();
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
    assert!(service.storage_healthy());
    cancel.cancel();
}
