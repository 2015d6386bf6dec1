//! Fault paths of the service, through a store wrapper that can hold loads at a gate
//! and fail commits: a request dropped mid-load does not wedge later callers, a load
//! that read a channel's rows before the channel was deleted does not bring them back,
//! and a failing commit answers "unavailable" (never success), then lands on retry. On
//! the storage `READSTATE_TEST_STORAGE` picks.
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
    let (service, store, _, cancel) = service_and_cache(storage).await;
    (service, store, cancel)
}

async fn service_and_cache(
    storage: &TestStorage,
) -> (Service, Arc<FaultyStore>, Arc<Cache>, CancellationToken) {
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
    let service = support::store::service(cache.clone(), store.clone(), committer, caps);
    (service, store, cache, cancel)
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

/// A GET of a channel loads it; the load reads the channel's rows and is held there
/// while the channel is deleted, the delete is stored and the deleted channel's
/// (clean, empty) window is evicted. What the load read predates the delete: the GET
/// answers not found, and so does the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_load_that_read_before_a_delete_does_not_bring_the_channel_back() {
    let storage = TestStorage::from_env();
    let (service, store, cache, cancel) = service_and_cache(&storage).await;
    let service = Arc::new(service);
    let channel = ChannelId::new(5).unwrap();
    service
        .execute(&Op::MessageCreated {
            channel,
            message: MessageId::new(100).unwrap(),
            author: None,
            mentions: vec![],
        })
        .await
        .unwrap();
    service.flush().await.unwrap();
    let shard = cache.channel_shard(5);
    cache.lock(shard).channels.invalidate(5);

    let held = store.loaded_gate.acquire_many(LOAD_PERMITS).await.unwrap();
    let reads_before = store.loads_read.load(Ordering::SeqCst);
    let get = tokio::spawn({
        let service = service.clone();
        async move { service.channel(channel).await }
    });
    let read = wait_for(|| store.loads_read.load(Ordering::SeqCst) == reads_before + 1).await;
    service
        .execute(&Op::DeleteChannel { channel })
        .await
        .unwrap();
    service.flush().await.unwrap();
    let was_cached = cache.lock(shard).channels.get(5).is_some();
    cache.lock(shard).channels.invalidate(5);
    drop(held);
    let during = tokio::time::timeout(Duration::from_secs(10), get)
        .await
        .expect("the GET ends once loads go on")
        .unwrap();
    let after = service.channel(channel).await;

    assert!(read, "the GET's load read the channel before the delete");
    assert!(was_cached, "the delete cached the deleted channel's window");
    assert!(
        matches!(during, Err(ServiceError::NotFound { .. })),
        "the held load's rows predate the delete: {during:?}"
    );
    assert!(
        matches!(after, Err(ServiceError::NotFound { .. })),
        "nothing stale was cached: {after:?}"
    );
    cancel.cancel();
}

/// The same for a user's states: a load that read the user's state in a channel before
/// the channel's delete does not bring that state back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_load_that_read_before_a_channel_delete_does_not_bring_the_state_back() {
    let storage = TestStorage::from_env();
    let (service, store, cache, cancel) = service_and_cache(&storage).await;
    let service = Arc::new(service);
    let user = UserId::new(7).unwrap();
    service.execute(&ack(7, 5, 100)).await.unwrap();
    service.flush().await.unwrap();
    cache.lock(cache.user_shard(7)).users.invalidate(7);

    let held = store.loaded_gate.acquire_many(LOAD_PERMITS).await.unwrap();
    let reads_before = store.loads_read.load(Ordering::SeqCst);
    let get = tokio::spawn({
        let service = service.clone();
        async move { service.read_states(user, None).await }
    });
    let read = wait_for(|| store.loads_read.load(Ordering::SeqCst) == reads_before + 1).await;
    service
        .execute(&Op::DeleteChannel {
            channel: ChannelId::new(5).unwrap(),
        })
        .await
        .unwrap();
    service.flush().await.unwrap();
    drop(held);
    let during = tokio::time::timeout(Duration::from_secs(10), get)
        .await
        .expect("the GET ends once loads go on")
        .unwrap()
        .unwrap();
    let after = service.read_states(user, None).await.unwrap();

    assert!(read, "the GET's load read the user before the delete");
    assert_eq!(during, vec![], "the held load's rows predate the delete");
    assert_eq!(after, vec![], "nothing stale was cached");
    cancel.cancel();
}

/// Polls `done` every 5 ms for at most 10 s; whether it came true.
async fn wait_for(done: impl Fn() -> bool) -> bool {
    for _ in 0..2_000 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
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
