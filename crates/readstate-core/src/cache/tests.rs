//! Model-based tests of the cache: random operations against a plain map.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::domain::ReadPos;

#[derive(Debug, Clone)]
enum Action {
    Load { user: u64, states: u8 },
    Ack { user: u64, channel: u64 },
    Dirty { user: u64 },
    Commit { user: u64 },
    Read { user: u64 },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        (1..300u64, 0..20u8).prop_map(|(user, states)| Action::Load { user, states }),
        (1..300u64, 1..50u64).prop_map(|(user, channel)| Action::Ack { user, channel }),
        (1..300u64).prop_map(|user| Action::Dirty { user }),
        (1..300u64).prop_map(|user| Action::Commit { user }),
        (1..300u64).prop_map(|user| Action::Read { user }),
    ]
}

fn states(n: u8) -> UserStates {
    let mut s = UserStates::new();
    for c in 0..u64::from(n) {
        s.merge_read(c + 1, ReadPos { epoch: 0, pos: c });
    }
    s
}

proptest! {
    #[test]
    fn the_cache_stays_within_budget_and_never_loses_a_dirty_entry(actions in proptest::collection::vec(action(), 1..400)) {
        let cache = Cache::new(64 * 1024);
        // What storage plus the write queue hold: the truth a reload must give back.
        let mut truth: HashMap<u64, UserStates> = HashMap::new();
        let mut pending: HashMap<u64, u32> = HashMap::new();
        for a in actions {
            match a {
                Action::Load { user, states: n } => {
                    let mut shard = cache.lock(cache.user_shard(user));
                    if let Lookup::Miss = shard.lookup_user(user) {
                        let value = truth.entry(user).or_insert_with(|| states(n)).clone();
                        shard.finish_user_load(user, value);
                    }
                }
                Action::Ack { user, channel } => {
                    let mut shard = cache.lock(cache.user_shard(user));
                    let applied = shard.update_user(user, |s| s.ack(channel, 1_000, None));
                    if let Some(read) = applied {
                        shard.users.add_pending(user);
                        *pending.entry(user).or_default() += 1;
                        if read.is_some() {
                            truth.entry(user).or_default().ack(channel, 1_000, None);
                        }
                    }
                }
                Action::Read { user } => {
                    let mut shard = cache.lock(cache.user_shard(user));
                    let bytes = shard.bytes();
                    let cached = shard.has_user(user);
                    let read = shard.read_user(user, Clone::clone);
                    prop_assert_eq!(read.is_some(), cached);
                    if let Some(read) = read {
                        prop_assert_eq!(Some(&read), truth.get(&user));
                    }
                    prop_assert_eq!(shard.bytes(), bytes, "a read changes no byte count");
                }
                Action::Dirty { user } | Action::Commit { user } => {
                    let mut shard = cache.lock(cache.user_shard(user));
                    if pending.get(&user).copied().unwrap_or(0) > 0 {
                        shard.users.done_pending(user);
                        *pending.entry(user).or_default() -= 1;
                    }
                }
            }
            // A dirty user is never evicted, and a cached user equals the truth.
            for (user, n) in &pending {
                if *n > 0 {
                    let shard = cache.lock(cache.user_shard(*user));
                    prop_assert!(shard.has_user(*user), "dirty user {} was evicted", user);
                }
            }
            for shard in 0..SHARDS {
                let shard = cache.lock(shard);
                for (user, value) in shard.users.iter() {
                    prop_assert_eq!(Some(value), truth.get(&user));
                }
            }
        }
        let stats = cache.stats();
        if stats.dirty_entries == 0 {
            prop_assert!(stats.bytes <= cache.max_bytes(), "{} > {}", stats.bytes, cache.max_bytes());
        }
    }
}

#[test]
fn a_second_lookup_of_a_loading_user_waits_instead_of_loading_again() {
    let cache = Cache::new(1 << 20);
    let mut shard = cache.lock(cache.user_shard(7));
    assert!(matches!(shard.lookup_user(7), Lookup::Miss));
    assert!(matches!(shard.lookup_user(7), Lookup::Loading));
    shard.finish_user_load(7, UserStates::new());
    assert!(matches!(shard.lookup_user(7), Lookup::Hit(())));
}

#[test]
fn eviction_makes_room_and_counts() {
    let cache = Cache::new(SHARDS as u64 * 4096);
    for user in 1..10_000u64 {
        let mut shard = cache.lock(cache.user_shard(user));
        if let Lookup::Miss = shard.lookup_user(user) {
            shard.finish_user_load(user, states(4));
        }
    }
    let stats = cache.stats();
    assert!(stats.bytes <= cache.max_bytes(), "{stats:?}");
    assert!(stats.evictions > 0);
    assert!(stats.users > 0 && stats.users < 10_000);
}

#[test]
fn a_remote_change_drops_a_clean_entry_at_once() {
    let cache = Cache::new(1 << 20);
    let mut shard = cache.lock(cache.user_shard(3));
    assert!(matches!(shard.lookup_user(3), Lookup::Miss));
    assert!(shard.finish_user_load(3, states(2)));

    shard.invalidate_user(3);

    assert!(!shard.has_user(3));
}

#[test]
fn a_remote_change_to_a_dirty_entry_drops_it_once_its_own_writes_commit() {
    let cache = Cache::new(1 << 20);
    let mut shard = cache.lock(cache.user_shard(3));
    assert!(matches!(shard.lookup_user(3), Lookup::Miss));
    shard.finish_user_load(3, states(2));
    shard.users.add_pending(3);

    shard.invalidate_user(3);
    let kept_while_dirty = shard.has_user(3);
    shard.users.done_pending(3);

    assert!(
        kept_while_dirty,
        "a dirty entry holds writes storage does not have yet"
    );
    assert!(!shard.has_user(3), "once clean, the stale entry goes");
}

#[test]
fn a_load_overtaken_by_a_remote_change_is_discarded() {
    let cache = Cache::new(1 << 20);
    let mut shard = cache.lock(cache.user_shard(3));
    assert!(matches!(shard.lookup_user(3), Lookup::Miss));

    shard.invalidate_user(3);
    let inserted = shard.finish_user_load(3, states(2));

    assert!(!inserted);
    assert!(!shard.has_user(3));
    assert!(
        matches!(shard.lookup_user(3), Lookup::Miss),
        "the next caller loads again"
    );
}

#[test]
fn a_remote_channel_delete_drops_every_cached_holder_of_a_state_in_it() {
    let cache = Cache::new(1 << 20);
    let mut shard = cache.lock(0);
    let users: Vec<u64> = (1..10_000u64)
        .filter(|u| cache.user_shard(*u) == 0)
        .take(3)
        .collect();
    for (i, &user) in users.iter().enumerate() {
        assert!(matches!(shard.lookup_user(user), Lookup::Miss));
        // The first two hold a state in channel 1; the third does not.
        shard.finish_user_load(user, states(if i < 2 { 2 } else { 0 }));
    }

    shard.invalidate_deleted_channel(1);

    assert!(!shard.has_user(users[0]) && !shard.has_user(users[1]));
    assert!(
        shard.has_user(users[2]),
        "users without a state in the channel stay"
    );
}

#[test]
fn a_burst_of_dirty_entries_does_not_leave_the_slab_over_budget() {
    const SHARD_BUDGET: usize = 4096;
    let cache = Cache::new((SHARDS * SHARD_BUDGET) as u64);
    let users: Vec<u64> = (1..)
        .filter(|&u| cache.user_shard(u) == 0)
        .take(400)
        .collect();
    let mut shard = cache.lock(0);
    for &user in &users {
        assert!(matches!(shard.lookup_user(user), Lookup::Miss));
        shard.finish_user_load(user, states(4));
        // Written and not yet committed: it cannot be evicted.
        shard.users.add_pending(user);
    }
    assert!(shard.bytes() > 4 * SHARD_BUDGET, "{}", shard.bytes());
    for &user in &users {
        shard.users.done_pending(user);
    }
    shard.trim();
    assert!(
        shard.bytes() <= SHARD_BUDGET,
        "{} bytes after the commits",
        shard.bytes()
    );
    let kept: Vec<u64> = users
        .iter()
        .copied()
        .filter(|&u| shard.has_user(u))
        .collect();
    assert!(!kept.is_empty());
    for user in kept {
        assert_eq!(shard.users.get(user), Some(&states(4)));
    }
}
