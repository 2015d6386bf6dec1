//! Property tests of the pure engine: message events and acks applied in any order,
//! any number of times, give identical read states, and the derived counts equal a
//! naive recomputation from the raw sets of events.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use readstate::domain::{Caps, ChannelId, MessageId, Model, Op, UserId};

fn user(raw: u64) -> UserId {
    UserId::new(raw).expect("test ids are in 1..=5")
}
fn channel(raw: u64) -> ChannelId {
    ChannelId::new(raw).expect("test ids are in 1..=3")
}
fn message(raw: u64) -> MessageId {
    MessageId::new(raw).expect("test ids are in 1..=max")
}

/// Order-insensitive events over 3 channels, 5 users and `max_msg` messages.
fn commutative_op(max_msg: u64) -> impl Strategy<Value = Op> {
    let created = (
        1..=3u64,
        1..=max_msg,
        proptest::option::of(1..=5u64),
        proptest::collection::vec(1..=5u64, 0..3),
    )
        .prop_map(|(c, m, a, ms)| Op::MessageCreated {
            channel: channel(c),
            message: message(m),
            author: a.map(user),
            mentions: ms.into_iter().map(user).collect(),
        });
    let deleted = (1..=3u64, 1..=max_msg).prop_map(|(c, m)| Op::MessageDeleted {
        channel: channel(c),
        message: message(m),
    });
    let ack = (1..=5u64, 1..=3u64, 1..=max_msg).prop_map(|(u, c, m)| Op::Ack {
        user: user(u),
        channel: channel(c),
        message: message(m),
        at: None,
    });
    prop_oneof![4 => created, 1 => deleted, 3 => ack]
}

/// Every kind of operation, including the ones that take effect in arrival order.
fn any_op(max_msg: u64) -> impl Strategy<Value = Op> {
    let join =
        (1..=5u64, 1..=3u64, proptest::option::of(0..=max_msg)).prop_map(|(u, c, r)| Op::Join {
            user: user(u),
            channel: channel(c),
            read: r,
        });
    let unread = (1..=5u64, 1..=3u64, 1..=max_msg).prop_map(|(u, c, m)| Op::Unread {
        user: user(u),
        channel: channel(c),
        message: message(m),
    });
    let ack_all = (1..=5u64).prop_map(|u| Op::AckAll { user: user(u) });
    let leave = (1..=5u64, 1..=3u64).prop_map(|(u, c)| Op::Leave {
        user: user(u),
        channel: channel(c),
    });
    let delete = (1..=3u64).prop_map(|c| Op::DeleteChannel {
        channel: channel(c),
    });
    prop_oneof![8 => commutative_op(max_msg), 1 => join, 1 => unread, 1 => ack_all, 1 => leave, 1 => delete]
}

fn run(caps: Caps, ops: &[Op]) -> Model {
    let mut model = Model::new(caps);
    for (i, op) in ops.iter().enumerate() {
        model.apply(op, 1_000 + i as u64);
    }
    model
}

/// Shuffles `ops` and repeats some of them, driven by `seed`.
fn shuffled_with_duplicates(ops: &[Op], seed: &[usize]) -> Vec<Op> {
    let mut out: Vec<Op> = ops.to_vec();
    for (i, s) in seed.iter().enumerate() {
        if !ops.is_empty() && i % 2 == 0 {
            out.push(ops[s % ops.len()].clone());
        }
    }
    let n = out.len();
    for (i, s) in seed.iter().enumerate() {
        if n > 1 {
            out.swap(i % n, s % n);
        }
    }
    out
}

/// Naive recomputation of one user's read states from the raw sets of events.
fn reference(caps: Caps, ops: &[Op], u: UserId) -> Vec<(u64, u64, u64, u32, bool, u32, bool)> {
    let mut created: BTreeMap<ChannelId, BTreeSet<u64>> = BTreeMap::new();
    let mut deleted: BTreeMap<ChannelId, BTreeSet<u64>> = BTreeMap::new();
    let mut read: BTreeMap<ChannelId, u64> = BTreeMap::new();
    let mut mentions: BTreeMap<ChannelId, BTreeSet<u64>> = BTreeMap::new();
    for op in ops {
        match op {
            Op::MessageCreated {
                channel,
                message,
                author,
                mentions: ms,
            } => {
                created.entry(*channel).or_default().insert(message.get());
                if *author == Some(u) {
                    let r = read.entry(*channel).or_default();
                    *r = (*r).max(message.get());
                } else if ms.contains(&u) {
                    read.entry(*channel).or_default();
                    mentions.entry(*channel).or_default().insert(message.get());
                }
            }
            Op::MessageDeleted { channel, message } => {
                deleted.entry(*channel).or_default().insert(message.get());
            }
            Op::Ack {
                user,
                channel,
                message,
                ..
            } if *user == u => {
                let r = read.entry(*channel).or_default();
                *r = (*r).max(message.get());
            }
            _ => {}
        }
    }
    let empty = BTreeSet::new();
    read.iter()
        .map(|(c, r)| {
            let dead = deleted.get(c).unwrap_or(&empty);
            let live: Vec<u64> = created
                .get(c)
                .unwrap_or(&empty)
                .iter()
                .copied()
                .filter(|m| !dead.contains(m))
                .collect();
            let head = live.last().copied().unwrap_or(0);
            let unread = live.iter().filter(|m| **m > *r).count() as u32;
            let mention = mentions
                .get(c)
                .unwrap_or(&empty)
                .iter()
                .filter(|m| **m > *r && !dead.contains(m))
                .count() as u32;
            (
                c.get(),
                *r,
                head,
                unread.min(caps.unread),
                unread > caps.unread,
                mention.min(caps.mention),
                mention > caps.mention,
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn message_events_and_acks_give_the_same_state_in_any_order_and_multiplicity(
        ops in proptest::collection::vec(commutative_op(40), 0..80),
        seed in proptest::collection::vec(0usize..1000, 0..60),
    ) {
        let caps = Caps { unread: 5, mention: 2 };
        let once = run(caps, &ops);
        let again = run(caps, &shuffled_with_duplicates(&ops, &seed));
        prop_assert_eq!(once, again);
    }

    #[test]
    fn order_insensitivity_holds_past_the_window_too(
        ops in proptest::collection::vec(commutative_op(60), 0..150),
        seed in proptest::collection::vec(0usize..1000, 0..100),
    ) {
        // Caps of 1 make windows of 4 ids, far fewer than the 60 message ids in play.
        let caps = Caps { unread: 1, mention: 1 };
        prop_assert_eq!(run(caps, &ops), run(caps, &shuffled_with_duplicates(&ops, &seed)));
    }

    #[test]
    fn derived_counts_match_a_naive_recomputation(
        ops in proptest::collection::vec(commutative_op(12), 0..80),
        seed in proptest::collection::vec(0usize..1000, 0..60),
    ) {
        // 12 message ids per channel fit the windows of caps 5 (12 ids), so counts are exact.
        let caps = Caps { unread: 5, mention: 5 };
        let shuffled = shuffled_with_duplicates(&ops, &seed);
        let model = run(caps, &shuffled);
        for u in 1..=5 {
            let got: Vec<_> = model
                .read_states(user(u))
                .iter()
                .map(|v| (v.channel_id, v.last_read_message_id, v.last_message_id, v.unread_count, v.unread_capped, v.mention_count, v.mention_capped))
                .collect();
            prop_assert_eq!(got, reference(caps, &ops, user(u)));
        }
    }

    #[test]
    fn caps_hold_and_has_unread_follows_the_head(ops in proptest::collection::vec(any_op(30), 0..120)) {
        let caps = Caps { unread: 3, mention: 2 };
        let model = run(caps, &ops);
        for u in 1..=5 {
            for v in model.read_states(user(u)) {
                prop_assert!(v.unread_count <= caps.unread);
                prop_assert!(v.mention_count <= caps.mention);
                prop_assert_eq!(v.has_unread, v.last_message_id > v.last_read_message_id);
                prop_assert!(!v.unread_capped || v.unread_count == caps.unread);
                prop_assert!(v.mention_count <= v.unread_count || v.unread_capped);
            }
        }
    }

    #[test]
    fn every_operation_is_idempotent(ops in proptest::collection::vec(any_op(30), 0..80)) {
        let caps = Caps::default();
        let mut once = Model::new(caps);
        let mut twice = Model::new(caps);
        for (i, op) in ops.iter().enumerate() {
            once.apply(op, 1_000 + i as u64);
            twice.apply(op, 1_000 + i as u64);
            twice.apply(op, 1_000 + i as u64);
        }
        prop_assert_eq!(once, twice);
    }
}

#[test]
fn mark_unread_brings_back_the_message_and_its_mentions() {
    let caps = Caps::default();
    let mut model = Model::new(caps);
    let ops = [
        Op::MessageCreated {
            channel: channel(1),
            message: message(10),
            author: Some(user(2)),
            mentions: vec![user(1)],
        },
        Op::MessageCreated {
            channel: channel(1),
            message: message(11),
            author: Some(user(2)),
            mentions: vec![],
        },
        Op::Ack {
            user: user(1),
            channel: channel(1),
            message: message(11),
            at: None,
        },
        Op::Unread {
            user: user(1),
            channel: channel(1),
            message: message(10),
        },
    ];
    for (i, op) in ops.iter().enumerate() {
        model.apply(op, 100 + i as u64);
    }
    let v = model.read_states(user(1))[0];
    assert_eq!(
        (
            v.last_read_message_id,
            v.unread_count,
            v.mention_count,
            v.has_unread
        ),
        (9, 2, 1, true)
    );
    // A redelivered ack stamped before the mark unread does not undo it.
    model.apply(
        &Op::Ack {
            user: user(1),
            channel: channel(1),
            message: message(11),
            at: Some(50),
        },
        200,
    );
    assert_eq!(model.read_states(user(1))[0].last_read_message_id, 9);
}

#[test]
fn join_starts_at_the_head_and_is_a_no_op_when_the_state_exists() {
    let mut model = Model::new(Caps::default());
    model.apply(
        &Op::MessageCreated {
            channel: channel(1),
            message: message(7),
            author: None,
            mentions: vec![],
        },
        0,
    );
    model.apply(
        &Op::Join {
            user: user(1),
            channel: channel(1),
            read: None,
        },
        0,
    );
    assert_eq!(model.read_states(user(1))[0].last_read_message_id, 7);
    model.apply(
        &Op::Join {
            user: user(1),
            channel: channel(1),
            read: Some(0),
        },
        0,
    );
    assert_eq!(model.read_states(user(1))[0].last_read_message_id, 7);
}
