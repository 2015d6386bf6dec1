//! The stream of operations the load generator sends: kinds from the [`Mix`], users
//! drawn Zipf-skewed (hot users exist), a channel among the user's own, and message
//! ids that keep increasing per channel. Every target gets the same stream for the
//! same seed and worker.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::{Rng, RngExt};

use super::dataset::Dataset;
use super::mix::{Mix, OpKind};
use super::zipf::Zipf;

/// The share of created messages that mention somebody (BENCH.md: 10 %).
pub const MENTION_SHARE: f64 = 0.10;
/// How far behind the channel head an ack may land (0 = the head itself).
const ACK_SPREAD: u64 = 2;
/// How far behind the head a mark unread lands ("a recent message").
const UNREAD_SPREAD: u64 = 9;

/// One operation, with its ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `user` acks `message` in `channel`.
    Ack {
        user: u64,
        channel: u64,
        message: u64,
    },
    /// `author` writes `message` in `channel`, mentioning `mentions[..mention_count]`.
    Message {
        channel: u64,
        message: u64,
        author: u64,
        mentions: [u64; 3],
        mention_count: u8,
    },
    /// All of `user`'s read states.
    ReadStates { user: u64 },
    /// `user`'s summary.
    Summary { user: u64 },
    /// `user` marks `channel` unread from `message`.
    Unread {
        user: u64,
        channel: u64,
        message: u64,
    },
}

impl Op {
    /// The kind of this operation.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Ack { .. } => OpKind::Ack,
            Op::Message { .. } => OpKind::Message,
            Op::ReadStates { .. } => OpKind::ReadStates,
            Op::Summary { .. } => OpKind::Summary,
            Op::Unread { .. } => OpKind::Unread,
        }
    }

    /// The mentioned users of a message (empty for other operations).
    pub fn mentions(&self) -> &[u64] {
        match self {
            Op::Message {
                mentions,
                mention_count,
                ..
            } => &mentions[..usize::from(*mention_count)],
            _ => &[],
        }
    }
}

/// Draws operations over a data set. Shared by all workers of one target: the
/// channel heads and the message id counter are atomics.
#[derive(Debug)]
pub struct Workload {
    dataset: Arc<Dataset>,
    mix: Mix,
    users: Zipf,
    /// The newest message id sent to each channel (index = channel index).
    heads: Vec<AtomicU64>,
    /// The next message id to create; ids are unique across channels, so each
    /// channel's ids increase.
    next_message: AtomicU64,
}

impl Workload {
    /// A workload over `dataset` whose created messages start at `first_message_id`
    /// (it must exceed every id already stored, or creates turn into duplicates).
    ///
    /// # Errors
    /// An empty data set.
    pub fn new(dataset: Arc<Dataset>, mix: Mix, first_message_id: u64) -> anyhow::Result<Self> {
        let users = Zipf::new(dataset.shape.users as usize, 1.0)?;
        let head = dataset.initial_message_ids().end().to_owned();
        let heads = (0..dataset.shape.channels)
            .map(|_| AtomicU64::new(head))
            .collect();
        Ok(Self {
            dataset,
            mix,
            users,
            heads,
            next_message: AtomicU64::new(first_message_id.max(head + 1)),
        })
    }

    /// The data set this workload draws from.
    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// Draws the next operation.
    pub fn next_op<R: Rng + ?Sized>(&self, rng: &mut R) -> Op {
        let kind = self.mix.sample(rng);
        let user = self.users.sample(rng);
        let user_id = Dataset::user_id(user);
        let pick_channel = |rng: &mut R| -> usize {
            let channels = self.dataset.channels_of(user);
            channels[rng.random_range(0..channels.len())] as usize
        };
        match kind {
            OpKind::Ack => {
                let channel = pick_channel(rng);
                let head = self.heads[channel].load(Ordering::Relaxed);
                Op::Ack {
                    user: user_id,
                    channel: Dataset::channel_id(channel),
                    message: head.saturating_sub(rng.random_range(0..=ACK_SPREAD)).max(1),
                }
            }
            OpKind::Unread => {
                let channel = pick_channel(rng);
                let head = self.heads[channel].load(Ordering::Relaxed);
                Op::Unread {
                    user: user_id,
                    channel: Dataset::channel_id(channel),
                    message: head
                        .saturating_sub(rng.random_range(0..=UNREAD_SPREAD))
                        .max(1),
                }
            }
            OpKind::Message => {
                let channel = pick_channel(rng);
                let message = self.next_message.fetch_add(1, Ordering::Relaxed);
                self.heads[channel].fetch_max(message, Ordering::Relaxed);
                let mut mentions = [0_u64; 3];
                let mut mention_count = 0_u8;
                if rng.random_bool(MENTION_SHARE) {
                    let members = self.dataset.members_of(channel);
                    let wanted = rng.random_range(1..=3_usize);
                    // A few tries per mention: small channels may not have 3 others.
                    for _ in 0..wanted * 4 {
                        if usize::from(mention_count) == wanted {
                            break;
                        }
                        let member =
                            Dataset::user_id(members[rng.random_range(0..members.len())] as usize);
                        let taken = &mentions[..usize::from(mention_count)];
                        if member != user_id && !taken.contains(&member) {
                            mentions[usize::from(mention_count)] = member;
                            mention_count += 1;
                        }
                    }
                }
                Op::Message {
                    channel: Dataset::channel_id(channel),
                    message,
                    author: user_id,
                    mentions,
                    mention_count,
                }
            }
            OpKind::ReadStates => Op::ReadStates { user: user_id },
            OpKind::Summary => Op::Summary { user: user_id },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::dataset::Shape;
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    fn workload() -> Workload {
        let shape = Shape {
            users: 1_000,
            channels: 100,
            read_states: 5_000,
            messages_per_channel: 20,
        };
        let data = Arc::new(Dataset::generate(shape, 3, &|_| {}).unwrap());
        Workload::new(data, Mix::default(), 1_000).unwrap()
    }

    #[test]
    fn users_act_only_in_their_own_channels_and_mention_other_members() {
        let w = workload();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);

        for _ in 0..20_000 {
            let op = w.next_op(&mut rng);
            let (user, channel) = match op {
                Op::Ack { user, channel, .. } | Op::Unread { user, channel, .. } => (user, channel),
                Op::Message {
                    author, channel, ..
                } => (author, channel),
                _ => continue,
            };
            let u = (user - 1) as usize;
            let c = (channel - 1) as u32;
            assert!(w.dataset().channels_of(u).contains(&c));
            for &m in op.mentions() {
                assert_ne!(m, user);
                let members = w.dataset().members_of(c as usize);
                assert!(members.binary_search(&((m - 1) as u32)).is_ok());
            }
        }
    }

    #[test]
    fn message_ids_increase_and_acks_land_near_the_head() {
        let w = workload();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
        let mut last = 0;
        let mut mentioning = 0;
        let mut messages = 0;

        for _ in 0..20_000 {
            match w.next_op(&mut rng) {
                Op::Message {
                    message,
                    channel,
                    mention_count,
                    ..
                } => {
                    assert!(message > last && message >= 1_000);
                    last = message;
                    messages += 1;
                    mentioning += usize::from(mention_count > 0);
                    assert_eq!(
                        w.heads[(channel - 1) as usize].load(Ordering::Relaxed),
                        message
                    );
                }
                Op::Ack {
                    channel, message, ..
                } => {
                    let head = w.heads[(channel - 1) as usize].load(Ordering::Relaxed);
                    assert!(message <= head && message + ACK_SPREAD >= head);
                }
                _ => {}
            }
        }

        // About 10 % of ~6,000 messages mention somebody.
        let share = mentioning as f64 / f64::from(messages);
        assert!((0.07..0.13).contains(&share), "{share}");
    }

    #[test]
    fn the_same_seed_gives_the_same_operations() {
        let a = workload();
        let b = workload();
        let mut ra = Xoshiro256PlusPlus::seed_from_u64(8);
        let mut rb = Xoshiro256PlusPlus::seed_from_u64(8);

        let xs: Vec<Op> = (0..1_000).map(|_| a.next_op(&mut ra)).collect();
        let ys: Vec<Op> = (0..1_000).map(|_| b.next_op(&mut rb)).collect();

        assert_eq!(xs, ys);
    }
}
