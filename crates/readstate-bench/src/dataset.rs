//! The bench's data set, a pure function of the preset and `--seed`: which channels
//! each user is in (Zipf-skewed, s = 1.0, so a few channels are huge and most are
//! small), each read state's starting position, and each channel's first messages.
//! Every target is populated from the same `Dataset`.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::zipf::Zipf;

/// The sizes of BENCH.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// 10 k users, 2 k channels, 100 k read states.
    Smoke,
    /// 1 M users, 200 k channels, 10 M read states.
    Medium,
    /// 10 M users, 1 M channels, 100 M read states.
    Large,
}

impl Preset {
    /// The preset's name as `--preset` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Smoke => "smoke",
            Preset::Medium => "medium",
            Preset::Large => "large",
        }
    }

    /// The preset's sizes.
    pub fn shape(self) -> Shape {
        let (users, channels, read_states) = match self {
            Preset::Smoke => (10_000, 2_000, 100_000),
            Preset::Medium => (1_000_000, 200_000, 10_000_000),
            Preset::Large => (10_000_000, 1_000_000, 100_000_000),
        };
        Shape {
            users,
            channels,
            read_states,
            messages_per_channel: 20,
        }
    }
}

/// How big a data set is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Shape {
    /// Users, ids `1..=users`.
    pub users: u32,
    /// Channels, ids `1..=channels`.
    pub channels: u32,
    /// Read states in all; each user is in `read_states / users` channels.
    pub read_states: u64,
    /// Messages each channel has at start, ids `1..=messages_per_channel`.
    pub messages_per_channel: u32,
}

impl Shape {
    /// Channels per user.
    pub fn per_user(&self) -> usize {
        usize::try_from(self.read_states / u64::from(self.users.max(1))).unwrap_or(usize::MAX)
    }
}

/// Memberships and starting positions, generated deterministically from a seed.
#[derive(Debug)]
pub struct Dataset {
    /// The sizes.
    pub shape: Shape,
    /// The seed everything was drawn from.
    pub seed: u64,
    per_user: usize,
    /// `per_user` channel indexes (0-based) per user, users in order.
    user_channels: Vec<u32>,
    /// The read position of each entry of `user_channels` at start (0..=messages).
    read_positions: Vec<u8>,
    /// `members[member_offsets[c]..member_offsets[c + 1]]` are channel `c`'s members.
    member_offsets: Vec<u64>,
    /// User indexes (0-based), grouped by channel.
    members: Vec<u32>,
}

/// SplitMix64: decorrelates the per-user seeds derived from one seed.
pub fn mix_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Dataset {
    /// Draws the data set of `shape` from `seed`; `progress(users_done)` is called
    /// now and then.
    ///
    /// # Errors
    /// A shape that cannot be drawn: no users, fewer channels than channels per
    /// user, more than 255 starting messages or ids that do not fit.
    pub fn generate(shape: Shape, seed: u64, progress: &dyn Fn(u64)) -> anyhow::Result<Self> {
        let per_user = shape.per_user();
        anyhow::ensure!(shape.users > 0, "the data set needs at least one user");
        anyhow::ensure!(
            per_user >= 1 && per_user <= shape.channels as usize,
            "each user must be in 1..={} channels, not {per_user}",
            shape.channels
        );
        let messages = u8::try_from(shape.messages_per_channel)
            .map_err(|_| anyhow::anyhow!("at most 255 messages per channel at start"))?;
        let channel_zipf = Zipf::new(shape.channels as usize, 1.0)?;
        let users = shape.users as usize;
        let mut user_channels = Vec::with_capacity(users * per_user);
        let mut read_positions = Vec::with_capacity(users * per_user);
        let mut counts = vec![0_u64; shape.channels as usize];
        for user in 0..users {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(mix_seed(seed, user as u64));
            let start = user_channels.len();
            while user_channels.len() - start < per_user {
                // The sampler returns a rank below `channels`, which is a u32.
                let c = channel_zipf.sample(&mut rng) as u32;
                if !user_channels[start..].contains(&c) {
                    user_channels.push(c);
                    counts[c as usize] += 1;
                }
            }
            // Half the states have read everything; the others are somewhere behind.
            for _ in 0..per_user {
                let position = if rng.random_bool(0.5) {
                    messages
                } else {
                    rng.random_range(0..=messages)
                };
                read_positions.push(position);
            }
            if user % 65_536 == 0 {
                progress(user as u64);
            }
        }
        let mut member_offsets = Vec::with_capacity(counts.len() + 1);
        let mut sum = 0_u64;
        member_offsets.push(0);
        for count in &counts {
            sum += count;
            member_offsets.push(sum);
        }
        let mut fill: Vec<u64> = member_offsets[..counts.len()].to_vec();
        let mut members = vec![0_u32; user_channels.len()];
        for (i, &c) in user_channels.iter().enumerate() {
            let slot = &mut fill[c as usize];
            // Users are visited in order, so each member list is sorted by user.
            members[*slot as usize] = (i / per_user) as u32;
            *slot += 1;
        }
        progress(users as u64);
        Ok(Self {
            shape,
            seed,
            per_user,
            user_channels,
            read_positions,
            member_offsets,
            members,
        })
    }

    /// Channels per user.
    pub fn per_user(&self) -> usize {
        self.per_user
    }

    /// Read states in all.
    pub fn read_states(&self) -> u64 {
        self.user_channels.len() as u64
    }

    /// The id of the user at index `user` (ids start at 1).
    pub fn user_id(user: usize) -> u64 {
        user as u64 + 1
    }

    /// The id of the channel at index `channel` (ids start at 1).
    pub fn channel_id(channel: usize) -> u64 {
        channel as u64 + 1
    }

    /// The channel indexes of user `user` (0-based).
    pub fn channels_of(&self, user: usize) -> &[u32] {
        &self.user_channels[user * self.per_user..(user + 1) * self.per_user]
    }

    /// The starting read positions of user `user`, aligned with [`Self::channels_of`].
    pub fn read_positions_of(&self, user: usize) -> &[u8] {
        &self.read_positions[user * self.per_user..(user + 1) * self.per_user]
    }

    /// The members (user indexes, sorted) of channel `channel`.
    pub fn members_of(&self, channel: usize) -> &[u32] {
        let from = self.member_offsets[channel] as usize;
        let to = self.member_offsets[channel + 1] as usize;
        &self.members[from..to]
    }

    /// Every read state as `(user id, channel id, read position)`, users in order.
    pub fn read_state_rows(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        (0..self.shape.users as usize).flat_map(move |u| {
            self.channels_of(u)
                .iter()
                .zip(self.read_positions_of(u))
                .map(move |(&c, &p)| (Self::user_id(u), Self::channel_id(c as usize), u64::from(p)))
        })
    }

    /// The message ids every channel starts with: `1..=messages_per_channel`.
    pub fn initial_message_ids(&self) -> std::ops::RangeInclusive<u64> {
        1..=u64::from(self.shape.messages_per_channel)
    }

    /// Bytes of memory the data set itself takes in the bench process.
    pub fn heap_bytes(&self) -> u64 {
        (self.user_channels.capacity() * 4
            + self.read_positions.capacity()
            + self.member_offsets.capacity() * 8
            + self.members.capacity() * 4) as u64
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn small() -> Shape {
        Shape {
            users: 2_000,
            channels: 300,
            read_states: 10_000,
            messages_per_channel: 20,
        }
    }

    #[test]
    fn presets_have_the_sizes_of_bench_md() {
        let medium = Preset::Medium.shape();

        assert_eq!(
            (medium.users, medium.channels, medium.read_states),
            (1_000_000, 200_000, 10_000_000)
        );
        assert_eq!(Preset::Smoke.shape().per_user(), 10);
        assert_eq!(Preset::Large.shape().read_states, 100_000_000);
    }

    #[test]
    fn each_user_is_in_distinct_channels_and_memberships_agree_both_ways() {
        let data = Dataset::generate(small(), 5, &|_| {}).unwrap();

        assert_eq!(data.read_states(), 10_000);
        let mut seen = 0;
        for user in 0..2_000 {
            let mut channels = data.channels_of(user).to_vec();
            channels.sort_unstable();
            channels.dedup();
            assert_eq!(channels.len(), 5);
            for &c in &channels {
                assert!(
                    data.members_of(c as usize)
                        .binary_search(&(user as u32))
                        .is_ok()
                );
            }
            assert!(data.read_positions_of(user).iter().all(|&p| p <= 20));
        }
        for c in 0..300 {
            seen += data.members_of(c).len();
        }
        assert_eq!(seen, 10_000);
        assert_eq!(data.read_state_rows().count(), 10_000);
    }

    #[test]
    fn the_same_seed_gives_the_same_data_set() {
        let a = Dataset::generate(small(), 11, &|_| {}).unwrap();
        let b = Dataset::generate(small(), 11, &|_| {}).unwrap();
        let c = Dataset::generate(small(), 12, &|_| {}).unwrap();

        assert_eq!(a.user_channels, b.user_channels);
        assert_eq!(a.read_positions, b.read_positions);
        assert_ne!(a.user_channels, c.user_channels);
    }

    #[test]
    fn membership_is_skewed_towards_the_first_channels() {
        let data = Dataset::generate(small(), 1, &|_| {}).unwrap();

        let first = data.members_of(0).len();
        let median = {
            let mut sizes: Vec<usize> = (0..300).map(|c| data.members_of(c).len()).collect();
            sizes.sort_unstable();
            sizes[150]
        };

        // Rank 1 has 1/H(300) ≈ 16 % of the draws: most users are in it.
        assert!(first > 1_000, "{first}");
        assert!(median < first / 10, "median {median}, first {first}");
    }

    #[test]
    fn rejects_shapes_that_cannot_be_drawn() {
        let mut shape = small();
        shape.channels = 3;
        assert!(Dataset::generate(shape, 1, &|_| {}).is_err());
        let mut shape = small();
        shape.messages_per_channel = 300;
        assert!(Dataset::generate(shape, 1, &|_| {}).is_err());
    }
}
