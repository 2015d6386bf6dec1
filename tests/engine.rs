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
                .read_states(user(u), 0)
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
            for v in model.read_states(user(u), 0) {
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
    let v = model.read_states(user(1), 0)[0];
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
    assert_eq!(model.read_states(user(1), 0)[0].last_read_message_id, 9);
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
    assert_eq!(model.read_states(user(1), 0)[0].last_read_message_id, 7);
    model.apply(
        &Op::Join {
            user: user(1),
            channel: channel(1),
            read: Some(0),
        },
        0,
    );
    assert_eq!(model.read_states(user(1), 0)[0].last_read_message_id, 7);
}

// ---- Threads, groups, settings and deleting a user (issue 14) ----

use readstate::domain::{GroupId, Level, MUTED_FOREVER, Summary};

/// Channels 1..=3 are top-level (a group at most); 4..=6 are threads whose parent
/// is one of 1..=3 (so no order of arrival forms a cycle). Every write is stamped.
fn metadata_op() -> impl Strategy<Value = Op> {
    let top = (1..=3u64, proptest::option::of(1..=2u64), 0..20u64).prop_map(|(c, g, at)| {
        Op::SetChannel {
            channel: channel(c),
            parent: None,
            group: g.map(|g| GroupId::new(g).expect("1..=2")),
            at: Some(at),
        }
    });
    let thread = (
        4..=6u64,
        proptest::option::of(1..=3u64),
        proptest::option::of(1..=2u64),
        0..20u64,
    )
        .prop_map(|(c, p, g, at)| Op::SetChannel {
            channel: ChannelId::new(c).expect("4..=6"),
            parent: p.map(channel),
            group: g.map(|g| GroupId::new(g).expect("1..=2")),
            at: Some(at),
        });
    prop_oneof![top, thread]
}

fn level() -> impl Strategy<Value = Level> {
    prop_oneof![
        Just(Level::All),
        Just(Level::Mentions),
        Just(Level::Nothing)
    ]
}

fn settings_op() -> impl Strategy<Value = Op> {
    (
        1..=5u64,
        1..=6u64,
        proptest::option::of(prop_oneof![Just(0u64), Just(MUTED_FOREVER), Just(1)]),
        proptest::option::of(level()),
        0..20u64,
    )
        .prop_map(|(u, c, muted_until, level, at)| Op::Settings {
            user: user(u),
            channel: ChannelId::new(c).expect("1..=6"),
            muted_until,
            level,
            at: Some(at),
        })
}

/// Message events and acks over channels 1..=6 (threads included).
fn thread_message_op(max_msg: u64) -> impl Strategy<Value = Op> {
    let created = (
        1..=6u64,
        1..=max_msg,
        proptest::option::of(1..=5u64),
        proptest::collection::vec(1..=5u64, 0..3),
    )
        .prop_map(|(c, m, a, ms)| Op::MessageCreated {
            channel: ChannelId::new(c).expect("1..=6"),
            message: message(m),
            author: a.map(user),
            mentions: ms.into_iter().map(user).collect(),
        });
    let ack = (1..=5u64, 1..=6u64, 1..=max_msg).prop_map(|(u, c, m)| Op::Ack {
        user: user(u),
        channel: ChannelId::new(c).expect("1..=6"),
        message: message(m),
        at: None,
    });
    prop_oneof![3 => created, 2 => ack]
}

/// Every read state of users 1..=5 in channels 1..=6, created up front, so that the
/// writes after them commute.
fn joined_everywhere() -> Vec<Op> {
    let mut out = Vec::new();
    for u in 1..=5 {
        for c in 1..=6 {
            out.push(Op::Join {
                user: user(u),
                channel: ChannelId::new(c).expect("1..=6"),
                read: Some(0),
            });
        }
    }
    out
}

/// The metadata each channel ends with, recomputed from the stamped writes alone:
/// the write with the largest `(at, parent, group)`.
fn final_metadata(ops: &[Op]) -> BTreeMap<u64, (u64, u64)> {
    let mut best: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
    for op in ops {
        if let Op::SetChannel {
            channel,
            parent,
            group,
            at,
        } = op
        {
            let candidate = (
                at.expect("stamped"),
                parent.map_or(0, |p| p.get()),
                group.map_or(0, |g| g.get()),
            );
            let slot = best.entry(channel.get()).or_default();
            *slot = (*slot).max(candidate);
        }
    }
    best.into_iter().map(|(c, (_, p, g))| (c, (p, g))).collect()
}

/// A brute-force group lookup over [`final_metadata`].
fn brute_group(meta: &BTreeMap<u64, (u64, u64)>, channel: u64) -> Option<u64> {
    let (parent, group) = meta.get(&channel).copied().unwrap_or_default();
    if group != 0 {
        return Some(group);
    }
    if parent == 0 {
        return None;
    }
    let (_, parent_group) = meta.get(&parent).copied().unwrap_or_default();
    (parent_group != 0).then_some(parent_group)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn settings_and_metadata_with_stamps_converge_in_any_order_and_multiplicity(
        ops in proptest::collection::vec(
            prop_oneof![3 => thread_message_op(20), 2 => settings_op(), 1 => metadata_op()],
            0..100,
        ),
        seed in proptest::collection::vec(0usize..1000, 0..80),
    ) {
        let caps = Caps { unread: 3, mention: 2 };
        let mut first = joined_everywhere();
        first.extend(ops.iter().cloned());
        let mut second = joined_everywhere();
        second.extend(shuffled_with_duplicates(&ops, &seed));
        prop_assert_eq!(run(caps, &first), run(caps, &second));
    }

    #[test]
    fn aggregates_equal_a_brute_force_computation(
        ops in proptest::collection::vec(
            prop_oneof![
                6 => thread_message_op(20),
                2 => settings_op(),
                2 => metadata_op(),
                1 => (1..=5u64).prop_map(|u| Op::DeleteUser { user: user(u) }),
                1 => (1..=5u64, 1..=6u64).prop_map(|(u, c)| Op::Leave { user: user(u), channel: ChannelId::new(c).expect("1..=6") }),
            ],
            0..120,
        ),
        now in prop_oneof![Just(0u64), Just(5u64)],
    ) {
        let caps = Caps { unread: 3, mention: 2 };
        let model = run(caps, &ops);
        let meta = final_metadata(&ops);
        for u in 1..=5 {
            let views = model.read_states(user(u), now);
            // The summary, by hand.
            let mut all = Summary::default();
            let mut groups: BTreeMap<u64, Summary> = BTreeMap::new();
            let mut threads: BTreeMap<u64, (Summary, Vec<u64>)> = BTreeMap::new();
            for v in &views {
                let parent = meta.get(&v.channel_id).map_or(0, |m| m.0);
                prop_assert_eq!(v.parent_id, parent);
                let counted = v.has_unread && !v.muted && v.level == Level::All;
                let mentions = if v.level == Level::Nothing { 0 } else { u64::from(v.mention_count) };
                let add = |s: &mut Summary| {
                    if counted && parent == 0 { s.unread_channels += 1; }
                    if counted && parent != 0 { s.unread_threads += 1; }
                    s.mentions += mentions;
                };
                add(&mut all);
                if let Some(g) = brute_group(&meta, v.channel_id) {
                    add(groups.entry(g).or_default());
                }
                if parent != 0 {
                    let entry = threads.entry(parent).or_default();
                    add(&mut entry.0);
                    if v.has_unread || v.mention_count > 0 {
                        entry.1.push(v.channel_id);
                    }
                }
            }
            prop_assert_eq!(model.summary(user(u), None, now), all);
            prop_assert_eq!(model.groups(user(u), now), groups.clone());
            for g in 1..=2 {
                prop_assert_eq!(
                    model.summary(user(u), Some(g), now),
                    groups.get(&g).copied().unwrap_or_default()
                );
            }
            for parent in 1..=3 {
                let (summary, listed) = model.threads(user(u), parent, now);
                let (want_summary, want_listed) = threads.get(&parent).cloned().unwrap_or_default();
                prop_assert_eq!(summary, want_summary);
                prop_assert_eq!(listed.iter().map(|v| v.channel_id).collect::<Vec<_>>(), want_listed);
            }
        }
    }
}

#[test]
fn deleting_a_user_removes_every_state_and_a_later_ack_starts_afresh() {
    let caps = Caps::default();
    let mut model = Model::new(caps);
    let ops = [
        Op::MessageCreated {
            channel: channel(1),
            message: message(5),
            author: None,
            mentions: vec![user(1)],
        },
        Op::Settings {
            user: user(1),
            channel: channel(2),
            muted_until: Some(MUTED_FOREVER),
            level: None,
            at: Some(1),
        },
        Op::DeleteUser { user: user(1) },
    ];
    for (i, op) in ops.iter().enumerate() {
        model.apply(op, 10 + i as u64);
    }
    assert!(model.read_states(user(1), 0).is_empty());
    model.apply(
        &Op::Ack {
            user: user(1),
            channel: channel(1),
            message: message(3),
            at: None,
        },
        20,
    );
    let views = model.read_states(user(1), 0);
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].last_read_message_id, 3);
    assert_eq!(views[0].mention_count, 0, "the mention went with the user");
    assert!(!views[0].muted);
}

#[test]
fn first_unread_is_the_oldest_live_message_after_the_read_position_and_null_when_capped() {
    let caps = Caps {
        unread: 2,
        mention: 2,
    };
    let mut model = Model::new(caps);
    for m in [3, 4, 6] {
        model.apply(
            &Op::MessageCreated {
                channel: channel(1),
                message: message(m),
                author: None,
                mentions: vec![],
            },
            0,
        );
    }
    model.apply(
        &Op::MessageDeleted {
            channel: channel(1),
            message: message(4),
        },
        0,
    );
    let ack = |m| Op::Ack {
        user: user(1),
        channel: channel(1),
        message: message(m),
        at: None,
    };
    model.apply(&ack(3), 0);
    assert_eq!(
        model.read_states(user(1), 0)[0].first_unread_message_id,
        Some(6)
    );
    model.apply(&ack(6), 0);
    assert_eq!(
        model.read_states(user(1), 0)[0].first_unread_message_id,
        None
    );
    for m in 7..=9 {
        model.apply(
            &Op::MessageCreated {
                channel: channel(1),
                message: message(m),
                author: None,
                mentions: vec![],
            },
            0,
        );
    }
    let v = model.read_states(user(1), 0)[0];
    assert!(v.unread_capped);
    assert_eq!(v.first_unread_message_id, None);
}
