//! The bench's `redis` peer against the engine's reference: random operation
//! sequences run on the real Redis at 127.0.0.1:6379 and on `Model` with the same
//! caps must give the same read states and summaries after every step, and the
//! order-insensitive operations (acks, message creates) must give the same state
//! when duplicated and shuffled. A missing Redis fails these tests; it never skips.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use readstate::domain::{Caps, ChannelId, MessageId, Model, Op, UserId};
use readstate_bench::redis::{RedisReadState, RedisSummary, RedisTarget};

const REDIS_URL: &str = "redis://127.0.0.1:6379";
const USERS: u64 = 4;
const CHANNELS: u64 = 3;
const MAX_MESSAGE: u64 = 30;

/// One step of a generated sequence.
#[derive(Debug, Clone)]
enum Step {
    Ack {
        user: u64,
        channel: u64,
        message: u64,
    },
    Created {
        channel: u64,
        message: u64,
        author: u64,
        mentions: Vec<u64>,
    },
    Unread {
        user: u64,
        channel: u64,
        message: u64,
    },
    ReadStates {
        user: u64,
    },
    Summary {
        user: u64,
    },
}

/// The population of a run: channels' initial messages and read states at a
/// position (unique per user and channel, as a bulk load of an empty prefix is).
#[derive(Debug, Clone)]
struct Population {
    channels: Vec<(u64, Vec<u64>)>,
    states: Vec<(u64, u64, u64)>,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A key prefix no other test (or test process) uses.
fn unique_prefix(test: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "readstate-test:{test}:{}:{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn connect(prefix: &str, caps: Caps) -> RedisTarget {
    RedisTarget::connect(REDIS_URL, prefix, caps.unread, caps.mention)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "Redis is required at {REDIS_URL} (start it with `redis-server --daemonize yes`): {e:#}"
            )
        })
}

fn user(raw: u64) -> UserId {
    UserId::new(raw).expect("generated user ids are at least 1")
}
fn channel(raw: u64) -> ChannelId {
    ChannelId::new(raw).expect("generated channel ids are at least 1")
}
fn message(raw: u64) -> MessageId {
    MessageId::new(raw).expect("generated message ids are at least 1")
}

/// What the engine answers, in the Redis target's shape.
fn expected_states(model: &Model, u: u64) -> Vec<RedisReadState> {
    model
        .read_states(user(u), 0)
        .into_iter()
        .map(|v| RedisReadState {
            channel_id: v.channel_id,
            last_read_message_id: v.last_read_message_id,
            last_message_id: v.last_message_id,
            unread_count: v.unread_count,
            unread_capped: v.unread_capped,
            mention_count: v.mention_count,
            mention_capped: v.mention_capped,
        })
        .collect()
}

fn expected_summary(model: &Model, u: u64) -> RedisSummary {
    let s = model.summary(user(u), None, 0);
    RedisSummary {
        unread_channels: s.unread_channels + s.unread_threads,
        mentions: s.mentions,
    }
}

fn populate_model(model: &mut Model, population: &Population) {
    for (c, ids) in &population.channels {
        for &m in ids {
            model.apply(
                &Op::MessageCreated {
                    channel: channel(*c),
                    message: message(m),
                    author: None,
                    mentions: Vec::new(),
                },
                0,
            );
        }
    }
    for &(u, c, read) in &population.states {
        model.apply(
            &Op::Join {
                user: user(u),
                channel: channel(c),
                read: Some(read),
            },
            0,
        );
    }
}

/// The model's form of a write step (`None` for reads).
fn as_op(step: &Step) -> Option<Op> {
    match step {
        Step::Ack {
            user: u,
            channel: c,
            message: m,
        } => Some(Op::Ack {
            user: user(*u),
            channel: channel(*c),
            message: message(*m),
            at: None,
        }),
        Step::Created {
            channel: c,
            message: m,
            author,
            mentions,
        } => Some(Op::MessageCreated {
            channel: channel(*c),
            message: message(*m),
            author: Some(user(*author)),
            mentions: mentions.iter().map(|u| user(*u)).collect(),
        }),
        Step::Unread {
            user: u,
            channel: c,
            message: m,
        } => Some(Op::Unread {
            user: user(*u),
            channel: channel(*c),
            message: message(*m),
        }),
        Step::ReadStates { .. } | Step::Summary { .. } => None,
    }
}

async fn apply_write(target: &RedisTarget, step: &Step) {
    match step {
        Step::Ack {
            user,
            channel,
            message,
        } => target.ack(*user, *channel, *message).await,
        Step::Created {
            channel,
            message,
            author,
            mentions,
        } => {
            target
                .message_created(*channel, *message, *author, mentions)
                .await
        }
        Step::Unread {
            user,
            channel,
            message,
        } => target.mark_unread(*user, *channel, *message).await,
        Step::ReadStates { .. } | Step::Summary { .. } => Ok(()),
    }
    .expect("a Redis write");
}

fn caps_strategy() -> impl Strategy<Value = Caps> {
    (1..=3u32, 1..=3u32).prop_map(|(unread, mention)| Caps { unread, mention })
}

fn population_strategy() -> impl Strategy<Value = Population> {
    let channels = proptest::collection::btree_map(
        1..=CHANNELS,
        proptest::collection::vec(1..=MAX_MESSAGE, 0..8),
        0..=CHANNELS as usize,
    );
    let states = proptest::collection::btree_map((1..=USERS, 1..=CHANNELS), 0..=MAX_MESSAGE, 0..6);
    (channels, states).prop_map(|(channels, states)| Population {
        channels: channels.into_iter().collect(),
        states: states.into_iter().map(|((u, c), r)| (u, c, r)).collect(),
    })
}

fn write_step() -> impl Strategy<Value = Step> {
    let ack =
        (1..=USERS, 1..=CHANNELS, 1..=MAX_MESSAGE).prop_map(|(user, channel, message)| Step::Ack {
            user,
            channel,
            message,
        });
    let created = (
        1..=CHANNELS,
        1..=MAX_MESSAGE,
        1..=USERS,
        proptest::collection::vec(1..=USERS, 0..4),
    )
        .prop_map(|(channel, message, author, mentions)| Step::Created {
            channel,
            message,
            author,
            mentions,
        });
    prop_oneof![3 => ack, 4 => created]
}

fn step() -> impl Strategy<Value = Step> {
    let unread = (1..=USERS, 1..=CHANNELS, 1..=MAX_MESSAGE).prop_map(|(user, channel, message)| {
        Step::Unread {
            user,
            channel,
            message,
        }
    });
    let read_states = (1..=USERS).prop_map(|user| Step::ReadStates { user });
    let summary = (1..=USERS).prop_map(|user| Step::Summary { user });
    prop_oneof![7 => write_step(), 1 => unread, 2 => read_states, 1 => summary]
}

/// Every user's read states and summary, from Redis and from the model.
async fn assert_all_users_match(target: &RedisTarget, model: &Model) {
    for u in 1..=USERS {
        let states = target.read_states(u).await.expect("read states");
        assert_eq!(states, expected_states(model, u), "read states of user {u}");
        let summary = target.summary(u).await.expect("summary");
        assert_eq!(summary, expected_summary(model, u), "summary of user {u}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn redis_scripts_answer_what_the_engine_answers(
        caps in caps_strategy(),
        population in population_strategy(),
        steps in proptest::collection::vec(step(), 1..40),
    ) {
        let rt = runtime();
        rt.block_on(async {
            let prefix = unique_prefix("model");
            let target = connect(&prefix, caps).await;
            let mut model = Model::new(caps);
            populate_model(&mut model, &population);

            target.load_channels(&population.channels).await.expect("load channels");
            target.load_read_states(&population.states).await.expect("load read states");
            for (i, step) in steps.iter().enumerate() {
                match step {
                    Step::ReadStates { user } => {
                        let states = target.read_states(*user).await.expect("read states");
                        assert_eq!(states, expected_states(&model, *user), "step {i}: {step:?}");
                    }
                    Step::Summary { user } => {
                        let summary = target.summary(*user).await.expect("summary");
                        assert_eq!(summary, expected_summary(&model, *user), "step {i}: {step:?}");
                    }
                    write => {
                        apply_write(&target, write).await;
                        let op = as_op(write).expect("a write step has an op");
                        model.apply(&op, 1_000 + i as u64);
                    }
                }
            }

            assert_all_users_match(&target, &model).await;
            target.clear().await.expect("clear");
        });
    }

    #[test]
    fn acks_and_message_creates_give_the_same_state_duplicated_and_shuffled(
        caps in caps_strategy(),
        steps in proptest::collection::vec(write_step(), 1..40),
        order in proptest::collection::vec(any::<prop::sample::Index>(), 1..80),
    ) {
        // Every step at least once, some twice, in an order driven by `order`.
        let mut shuffled: Vec<Step> = steps.clone();
        shuffled.extend(order.iter().take(steps.len()).map(|i| i.get(&steps).clone()));
        for (at, index) in order.iter().enumerate() {
            let len = shuffled.len();
            shuffled.swap(at % len, index.index(len));
        }
        let rt = runtime();
        rt.block_on(async {
            let in_order = connect(&unique_prefix("in-order"), caps).await;
            let reordered = connect(&unique_prefix("shuffled"), caps).await;
            let mut model = Model::new(caps);
            for (i, step) in steps.iter().enumerate() {
                model.apply(&as_op(step).expect("write steps only"), i as u64);
            }

            for step in &steps {
                apply_write(&in_order, step).await;
            }
            for step in &shuffled {
                apply_write(&reordered, step).await;
            }

            assert_all_users_match(&in_order, &model).await;
            assert_all_users_match(&reordered, &model).await;
            in_order.clear().await.expect("clear");
            reordered.clear().await.expect("clear");
        });
    }
}

#[test]
fn mentions_count_until_read_and_caps_set_the_flags() {
    let rt = runtime();
    rt.block_on(async {
        let caps = Caps {
            unread: 2,
            mention: 1,
        };
        let target = connect(&unique_prefix("walkthrough"), caps).await;
        for (m, mentions) in [(10, vec![2]), (11, vec![2, 2, 1]), (12, vec![])] {
            target
                .message_created(7, m, 1, &mentions)
                .await
                .expect("message created");
        }

        let states = target.read_states(2).await.expect("read states");
        let summary = target.summary(2).await.expect("summary");
        target.mark_unread(1, 7, 12).await.expect("mark unread");
        let author = target.read_states(1).await.expect("read states");
        target.ack(1, 7, 5).await.expect("ack");
        let after_old_ack = target.read_states(1).await.expect("read states");

        assert_eq!(
            states,
            vec![RedisReadState {
                channel_id: 7,
                last_read_message_id: 0,
                last_message_id: 12,
                unread_count: 2,
                unread_capped: true,
                mention_count: 1,
                mention_capped: true,
            }]
        );
        assert_eq!(
            summary,
            RedisSummary {
                unread_channels: 1,
                mentions: 1,
            }
        );
        assert_eq!(author[0].last_read_message_id, 11);
        assert_eq!((author[0].unread_count, author[0].mention_count), (1, 0));
        assert_eq!(
            after_old_ack, author,
            "an ack never moves the position back"
        );
        target.clear().await.expect("clear");
    });
}

#[test]
fn clear_removes_every_key_of_the_prefix_and_nothing_else() {
    let rt = runtime();
    rt.block_on(async {
        let caps = Caps::default();
        let mine = connect(&unique_prefix("clear-a"), caps).await;
        let other = connect(&unique_prefix("clear-b"), caps).await;
        let many: Vec<(u64, u64, u64)> = (1..=2_500).map(|u| (u, 1, 5)).collect();
        mine.load_channels(&[(1, (1..=30).collect())])
            .await
            .expect("load channels");
        mine.load_read_states(&many)
            .await
            .expect("load read states");
        other.ack(1, 1, 3).await.expect("ack");

        mine.clear().await.expect("clear");

        assert_eq!(mine.read_states(1).await.expect("read states"), vec![]);
        assert_eq!(mine.read_states(2_500).await.expect("read states"), vec![]);
        assert_eq!(
            other.read_states(1).await.expect("read states").len(),
            1,
            "another prefix is untouched"
        );
        assert!(mine.used_memory().await.expect("used memory") > 0);
        other.clear().await.expect("clear");
    });
}

#[test]
fn bulk_loads_keep_the_newest_window_of_each_channel() {
    let rt = runtime();
    rt.block_on(async {
        let caps = Caps {
            unread: 2,
            mention: 2,
        };
        let target = connect(&unique_prefix("window"), caps).await;
        let channels: Vec<(u64, Vec<u64>)> = vec![(1, (1..=20).rev().collect()), (2, vec![3])];
        let states: Vec<(u64, u64, u64)> = vec![(1, 1, 15), (1, 2, 0), (2, 1, 20)];
        let mut model = Model::new(caps);
        populate_model(
            &mut model,
            &Population {
                channels: channels.clone(),
                states: states.clone(),
            },
        );

        target
            .load_channels(&channels)
            .await
            .expect("load channels");
        target
            .load_read_states(&states)
            .await
            .expect("load read states");
        target
            .load_channels(&[(1, vec![2, 4])])
            .await
            .expect("old ids");

        let by_user: BTreeMap<u64, Vec<RedisReadState>> = BTreeMap::from([
            (1, target.read_states(1).await.expect("read states")),
            (2, target.read_states(2).await.expect("read states")),
        ]);
        assert_eq!(by_user[&1], expected_states(&model, 1));
        assert_eq!(by_user[&2], expected_states(&model, 2));
        assert_eq!(by_user[&1][0].unread_count, 2);
        assert!(by_user[&1][0].unread_capped);
        target.clear().await.expect("clear");
    });
}
