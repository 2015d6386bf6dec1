//! Micro-benchmarks of the engine's hot operations, pure and I/O-free: the same
//! functions the service runs under a shard lock for an ack, a message created with
//! mentions and a connect (all read states of a user), plus the cache lookup that
//! precedes each of them. `cargo bench --bench engine` (add `-- --quick` for a
//! short run).
//!
//! With `ENGINE_STEPS=<workload>=<count>` (say `ack/10=100000`) the binary runs that
//! workload's step `count` times and exits instead, which is what
//! `scripts/engine-instructions` counts instructions of under callgrind: a figure
//! that does not move with the machine's load, unlike criterion's times.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use readstate::cache::{Cache, Lookup, Shard};
use readstate::domain::{
    Caps, ChannelId, ChannelWindow, MessageId, Op, ReadPos, ReadStateView, UserEffect, UserId,
    UserStates, apply_user_effect, derive, expand,
};

const NOW_MS: u64 = 1_700_000_000_000;
/// Messages each channel has seen before a benchmark starts (BENCH.md's datasets).
const MESSAGES_PER_CHANNEL: u64 = 20;

fn id<T: TryFrom<u64>>(raw: u64) -> T
where
    T::Error: std::fmt::Debug,
{
    T::try_from(raw).expect("benchmark ids are at least 1")
}

/// A user in `channels` channels (ids 1..=channels), having read half of each.
fn user_states(channels: u64) -> UserStates {
    let mut states = UserStates::new();
    for c in 1..=channels {
        states.merge_read(
            c,
            ReadPos {
                epoch: 0,
                pos: MESSAGES_PER_CHANNEL / 2,
            },
        );
    }
    states.shrink();
    states
}

/// A channel that has seen messages 1..=MESSAGES_PER_CHANNEL.
fn channel_window(caps: Caps) -> ChannelWindow {
    ChannelWindow::from_rows(
        (1..=MESSAGES_PER_CHANNEL).map(|m| (m, false)),
        0,
        caps.channel_window(),
    )
}

/// One benchmarked operation: where criterion files it, how many elements one step
/// handles, and the step itself (which owns its state).
struct Workload {
    group: &'static str,
    param: String,
    elements: u64,
    step: Box<dyn FnMut()>,
}

impl Workload {
    fn new(
        group: &'static str,
        param: String,
        elements: u64,
        step: impl FnMut() + 'static,
    ) -> Self {
        Self {
            group,
            param,
            elements,
            step: Box::new(step),
        }
    }

    /// `group/param`, as criterion names it and `ENGINE_STEPS` selects it.
    fn id(&self) -> String {
        format!("{}/{}", self.group, self.param)
    }
}

fn ack() -> Vec<Workload> {
    let caps = Caps::default();
    [10u64, 100]
        .into_iter()
        .map(|channels| {
            let mut states = user_states(channels);
            let mut message = MESSAGES_PER_CHANNEL;
            Workload::new("ack", channels.to_string(), 1, move || {
                // A new, later message each time, so every ack moves the position.
                message += 1;
                let effect = UserEffect::Ack {
                    user: id::<UserId>(1),
                    channel: id::<ChannelId>(message % channels + 1),
                    message: id::<MessageId>(message),
                    at: None,
                };
                black_box(apply_user_effect(
                    &mut states,
                    black_box(&effect),
                    |_| 0,
                    NOW_MS,
                    caps.mention_window(),
                ));
            })
        })
        .collect()
}

fn message_created() -> Vec<Workload> {
    let caps = Caps::default();
    [0u64, 3]
        .into_iter()
        .map(|mentions| {
            let mut window = channel_window(caps);
            // Author and mentioned users, each in 10 channels (the bench's dataset).
            let mut users: HashMap<u64, UserStates> =
                (1..=4).map(|u| (u, user_states(10))).collect();
            let mut message = MESSAGES_PER_CHANNEL;
            Workload::new(
                "message_created",
                format!("mentions/{mentions}"),
                1,
                move || {
                    message += 1;
                    let op = Op::MessageCreated {
                        channel: id(1),
                        message: id(message),
                        author: Some(id(1)),
                        mentions: (2..2 + mentions).map(id).collect(),
                    };
                    // What `Service::apply` does with the cached entries: expand, observe
                    // the channel, apply each user effect.
                    let (channel_effect, user_effects) = expand(black_box(&op), 0);
                    if let Some(e) = channel_effect {
                        black_box(window.observe(
                            e.message.get(),
                            e.deleted,
                            caps.channel_window(),
                        ));
                    }
                    for effect in &user_effects {
                        let Some(states) = users.get_mut(&effect.user().get()) else {
                            continue;
                        };
                        black_box(apply_user_effect(
                            states,
                            effect,
                            |_| 0,
                            NOW_MS,
                            caps.mention_window(),
                        ));
                    }
                },
            )
        })
        .collect()
}

fn read_states() -> Vec<Workload> {
    let caps = Caps::default();
    [10u64, 100]
        .into_iter()
        .map(|channels| {
            let mut states = user_states(channels);
            // A few mentions, as a real user has.
            for ch in (1..=channels).step_by(3) {
                states.add_mention(ch, MESSAGES_PER_CHANNEL, caps.mention_window());
            }
            let windows: HashMap<u64, ChannelWindow> = (1..=channels)
                .map(|ch| (ch, channel_window(caps)))
                .collect();
            let empty = ChannelWindow::new();
            Workload::new("read_states", channels.to_string(), channels, move || {
                let views: Vec<ReadStateView> = black_box(&states)
                    .iter()
                    .map(|s| derive(s, windows.get(&s.channel).unwrap_or(&empty), caps, 0))
                    .collect();
                black_box(views);
            })
        })
        .collect()
}

/// A cache of 100,000 users of 10 states each.
fn cached_users() -> (Cache, u64) {
    const USERS: u64 = 100_000;
    let cache = Cache::new(256 * 1024 * 1024);
    for user in 1..=USERS {
        let mut shard = cache.lock(cache.user_shard(user));
        if let Lookup::Miss = shard.lookup_user(user) {
            shard.finish_user_load(user, user_states(10));
        }
    }
    (cache, USERS)
}

/// A cache hit as the service's reads make it (`Shard::read_user`), and as its writes
/// do (`Shard::update_user`, which keeps the byte count exact and the budget).
fn cache_lookup() -> Vec<Workload> {
    vec![
        cache_workload("user_hit", |shard, user| {
            shard.read_user(user, |states| states.len())
        }),
        cache_workload("user_update", |shard, user| {
            shard.update_user(user, |states| states.len())
        }),
    ]
}

/// `lookup` of each cached user in turn, with a stride so that lookups do not stay in
/// one cache line. Generic rather than a function pointer, so that the lookup is
/// inlined into the step as it is into the service's code.
fn cache_workload(
    param: &str,
    lookup: impl Fn(&mut Shard, u64) -> Option<usize> + 'static,
) -> Workload {
    let (cache, users) = cached_users();
    let mut user = 0u64;
    Workload::new("cache", param.to_string(), 1, move || {
        user = (user + 7_919) % users + 1;
        let found = lookup(&mut cache.lock(cache.user_shard(black_box(user))), user);
        black_box(found);
    })
}

fn workloads() -> Vec<Workload> {
    let mut all = ack();
    all.extend(message_created());
    all.extend(read_states());
    all.extend(cache_lookup());
    all
}

fn main() {
    if let Ok(spec) = std::env::var("ENGINE_STEPS") {
        let (name, count) = spec
            .rsplit_once('=')
            .expect("ENGINE_STEPS is <workload>=<count>, say ack/10=100000");
        let count: u64 = count.parse().expect("ENGINE_STEPS's count is a number");
        let mut workload = workloads()
            .into_iter()
            .find(|w| w.id() == name)
            .unwrap_or_else(|| panic!("no workload {name}: ack/10, ack/100, message_created/mentions/0, message_created/mentions/3, read_states/10, read_states/100, cache/user_hit, cache/user_update"));
        for _ in 0..count {
            (workload.step)();
        }
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    for mut workload in workloads() {
        let mut group = criterion.benchmark_group(workload.group);
        group.throughput(Throughput::Elements(workload.elements));
        group.bench_function(BenchmarkId::from_parameter(&workload.param), |b| {
            b.iter(&mut workload.step);
        });
        group.finish();
    }
    criterion.final_summary();
}
