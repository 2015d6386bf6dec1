//! The service (cache + SQLite + group commit) against the reference model: random
//! operation sequences, with caps so small that channel windows and mention sets
//! overflow and a cache so small that users and channels are evicted and reloaded,
//! give exactly the model's read states — live, and again after a restart on the
//! same database with an empty cache (so storage's merges, trims and floors are
//! checked too). On the storage `READSTATE_TEST_STORAGE` picks: a fresh SQLite file
//! or PostgreSQL database per case, in both commit modes: `direct` (every batch a
//! database transaction) and `log` (the commit log, with checkpoints small and often
//! enough that several happen per case; the restart replays the log).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use readstate::cache::Cache;
use readstate::commit::{self, CommitConfig};
use readstate::config::Durability;
use readstate::domain::{
    Caps, ChannelId, GroupId, Level, MUTED_FOREVER, MessageId, Model, Op, Settings, UserId,
};
use readstate::service::Service;
use readstate::store::Store;
use readstate::wal::WalOptions;
use support::TestStorage;
use support::store::open_store;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A read state as storage must keep it: channel, position, mention ids, settings.
type Projected = (u64, u64, Vec<(u64, u64)>, Settings);

const CAPS: Caps = Caps {
    unread: 1,
    mention: 1,
};

struct Running {
    service: Service,
    store: Arc<dyn Store>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

async fn start(
    storage: &TestStorage,
    durability: Durability,
    cache_bytes: u64,
    log: Option<&std::path::Path>,
) -> Running {
    let store = open_store(storage, CAPS).await;
    let cache = Arc::new(Cache::new(cache_bytes));
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let config = CommitConfig {
        durability,
        max_batch: 64,
        flush_interval: Duration::from_millis(5),
        max_unflushed: 10_000,
        checkpoint_interval: Duration::from_millis(3),
        checkpoint_writes: 20,
    };
    let committer = match log {
        None => commit::spawn(
            store.clone(),
            cache.clone(),
            config,
            cancel.clone(),
            &tracker,
        ),
        Some(dir) => {
            let options = WalOptions {
                segment_bytes: 4096,
            };
            let wal = commit::recover_log(store.as_ref(), dir, options)
                .await
                .unwrap();
            commit::spawn_with_log(
                store.clone(),
                cache.clone(),
                config,
                wal,
                cancel.clone(),
                &tracker,
            )
        }
    };
    let service = support::store::service(cache, store.clone(), committer, CAPS);
    Running {
        service,
        store,
        cancel,
        tracker,
    }
}

impl Running {
    async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        self.store.close().await;
    }
}

fn op() -> impl Strategy<Value = Op> {
    let user = (1..=4u64).prop_map(|u| UserId::new(u).unwrap());
    // Channel 3 may be a thread of 1 or 2; those two are never threads (no cycles).
    let channel = (1..=3u64).prop_map(|c| ChannelId::new(c).unwrap());
    let group = proptest::option::of((1..=2u64).prop_map(|g| GroupId::new(g).unwrap()));
    let level = proptest::option::of(prop_oneof![
        Just(Level::All),
        Just(Level::Mentions),
        Just(Level::Nothing)
    ]);
    // Past, never and forever: what a mute means does not depend on the clock.
    let muted = proptest::option::of(prop_oneof![Just(0u64), Just(1u64), Just(MUTED_FOREVER)]);
    let message = (1..=30u64).prop_map(|m| MessageId::new(m).unwrap());
    prop_oneof![
        6 => (channel.clone(), message.clone(), proptest::option::of(user.clone()), proptest::collection::vec(user.clone(), 0..3))
            .prop_map(|(channel, message, author, mentions)| Op::MessageCreated { channel, message, author, mentions }),
        2 => (channel.clone(), message.clone()).prop_map(|(channel, message)| Op::MessageDeleted { channel, message }),
        5 => (user.clone(), channel.clone(), message.clone()).prop_map(|(user, channel, message)| Op::Ack { user, channel, message, at: None }),
        1 => (user.clone(), channel.clone(), proptest::option::of(0..=30u64)).prop_map(|(user, channel, read)| Op::Join { user, channel, read }),
        1 => (user.clone(), channel.clone(), message).prop_map(|(user, channel, message)| Op::Unread { user, channel, message }),
        1 => user.clone().prop_map(|user| Op::AckAll { user }),
        1 => (user.clone(), channel.clone()).prop_map(|(user, channel)| Op::Leave { user, channel }),
        1 => channel.clone().prop_map(|channel| Op::DeleteChannel { channel }),
        1 => (1..=2u64, group.clone(), 0..10u64).prop_map(|(c, group, at)| Op::SetChannel {
            channel: ChannelId::new(c).unwrap(), parent: None, group, at: Some(at),
        }),
        1 => (proptest::option::of(1..=2u64), group, 0..10u64).prop_map(|(p, group, at)| Op::SetChannel {
            channel: ChannelId::new(3).unwrap(), parent: p.map(|p| ChannelId::new(p).unwrap()), group, at: Some(at),
        }),
        2 => (user.clone(), channel, muted, level, 0..10u64).prop_map(|(user, channel, muted_until, level, at)| Op::Settings {
            user, channel, muted_until, level, at: Some(at),
        }),
        1 => user.prop_map(|user| Op::DeleteUser { user }),
    ]
}

async fn check(service: &Service, model: &Model) -> Result<(), TestCaseError> {
    // Mutes in the cases run out at 1 ms or never: any `now` after that agrees.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for u in 1..=4 {
        let user = UserId::new(u).unwrap();
        let got = service.read_states(user, None).await.unwrap();
        prop_assert_eq!(got, model.read_states(user, now), "user {}", u);
        let summary = service.summary(user).await.unwrap();
        prop_assert_eq!(
            summary,
            model.summary(user, None, now),
            "summary of user {}",
            u
        );
        let groups = service.groups(user).await.unwrap();
        prop_assert_eq!(groups, model.groups(user, now), "groups of user {}", u);
        for g in 1..=2 {
            let group = GroupId::new(g).unwrap();
            let got = service.group_summary(user, group).await.unwrap();
            prop_assert_eq!(
                got,
                model.summary(user, Some(g), now),
                "user {} group {}",
                u,
                g
            );
        }
        for parent in 1..=2 {
            let threads = service
                .threads(user, ChannelId::new(parent).unwrap(), None, None)
                .await
                .unwrap();
            let (summary, views) = model.threads(user, parent, now);
            prop_assert_eq!(
                threads.summary,
                summary,
                "threads of user {} in {}",
                u,
                parent
            );
            prop_assert_eq!(
                threads.read_states,
                views,
                "threads of user {} in {}",
                u,
                parent
            );
        }
    }
    Ok(())
}

/// What storage itself holds equals the model's entities: channel windows with their
/// floors, and each state's position and mention ids (epochs are clock stamps, so only
/// their order is compared, through the positions they produced).
async fn check_storage(store: &dyn Store, model: &Model) -> Result<(), TestCaseError> {
    let windows = store
        .load_channels(&[1, 2, 3], CAPS.channel_window())
        .await
        .unwrap();
    for (c, window) in windows {
        let expected = model
            .channels
            .get(&ChannelId::new(c).unwrap())
            .cloned()
            .unwrap_or_default();
        prop_assert_eq!(window, expected, "channel {}", c);
    }
    for u in 1..=4 {
        let stored = store.load_user(u, CAPS.mention_window()).await.unwrap();
        let expected = model
            .users
            .get(&UserId::new(u).unwrap())
            .cloned()
            .unwrap_or_default();
        let project = |s: &readstate::domain::UserStates| -> Vec<Projected> {
            s.iter()
                .map(|st| (st.channel, st.read.pos, st.mentions.to_vec(), st.settings))
                .collect()
        };
        prop_assert_eq!(project(&stored), project(&expected), "user {}", u);
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Direct,
    Log,
}

fn run_case(
    ops: Vec<Op>,
    durability: Durability,
    cache_bytes: u64,
    mode: Mode,
) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let storage = TestStorage::from_env();
        let log_dir = tempfile::tempdir().unwrap();
        let log = (mode == Mode::Log).then(|| log_dir.path());
        let mut model = Model::new(CAPS);
        let running = start(&storage, durability, cache_bytes, log).await;
        for op in &ops {
            running.service.execute(op).await.unwrap();
            // The service stamps mark unread with the clock; only the order of epochs
            // matters to the result, and both stamp increasing epochs.
            model.apply(op, u64::MAX / 2);
        }
        check(&running.service, &model).await?;
        running.stop().await;
        let restarted = start(&storage, durability, cache_bytes, log).await;
        check_storage(restarted.store.as_ref(), &model).await?;
        check(&restarted.service, &model).await?;
        restarted.stop().await;
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn the_service_gives_the_model_states_live_and_after_a_restart(ops in proptest::collection::vec(op(), 1..100)) {
        run_case(ops, Durability::Sync, 64 << 20, Mode::Direct)?;
    }

    #[test]
    fn a_tiny_cache_that_evicts_constantly_still_gives_the_model_states(ops in proptest::collection::vec(op(), 1..100)) {
        // 64 shards x 160 bytes: hardly more than one entry per shard fits.
        run_case(ops, Durability::Async, 64 * 160, Mode::Direct)?;
    }

    #[test]
    fn with_the_commit_log_the_service_gives_the_model_states_live_and_after_a_restart(ops in proptest::collection::vec(op(), 1..100)) {
        run_case(ops, Durability::Sync, 64 << 20, Mode::Log)?;
    }

    #[test]
    fn with_the_commit_log_a_tiny_cache_still_gives_the_model_states(ops in proptest::collection::vec(op(), 1..100)) {
        // Evicted entries reload from the database: only checkpointed ones may go.
        run_case(ops, Durability::Async, 64 * 160, Mode::Log)?;
    }
}
