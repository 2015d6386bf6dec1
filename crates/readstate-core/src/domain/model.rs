//! The whole engine in one plain in-memory struct: every operation applied to
//! hash maps of channels and users. The service does the same through the cache
//! (with locking, loading and persistence around it); this is the reference the
//! property tests and the crash tests compare against.

use std::collections::BTreeMap;

use super::{
    Caps, ChannelEffect, ChannelId, ChannelWindow, Op, ReadStateView, Summary, UserEffect, UserId,
    UserStates, apply_user_effect, derive, expand,
};

/// Channels and users, fully in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    caps: Caps,
    pub channels: BTreeMap<ChannelId, ChannelWindow>,
    pub users: BTreeMap<UserId, UserStates>,
}

impl Model {
    /// An empty engine with the given caps.
    pub fn new(caps: Caps) -> Self {
        Self {
            caps,
            channels: BTreeMap::new(),
            users: BTreeMap::new(),
        }
    }

    /// Applies one operation; `now` (ms) stamps a mark unread.
    pub fn apply(&mut self, op: &Op, now: u64) {
        if let Op::DeleteChannel { channel } = op {
            self.channels.remove(channel);
            for states in self.users.values_mut() {
                states.remove(channel.get());
            }
            return;
        }
        let (channel, users) = expand(op);
        if let Some(effect) = channel {
            self.apply_channel(effect);
        }
        for effect in users {
            self.apply_user(effect, now);
        }
    }

    fn apply_channel(&mut self, effect: ChannelEffect) {
        let window = self.caps.channel_window();
        self.channels.entry(effect.channel).or_default().observe(
            effect.message.get(),
            effect.deleted,
            window,
        );
    }

    fn apply_user(&mut self, effect: UserEffect, now: u64) {
        let heads: BTreeMap<u64, u64> = self
            .channels
            .iter()
            .map(|(c, w)| (c.get(), w.head()))
            .collect();
        let mention_window = self.caps.mention_window();
        let states = self.users.entry(effect.user()).or_default();
        apply_user_effect(
            states,
            &effect,
            |c| heads.get(&c).copied().unwrap_or(0),
            now,
            mention_window,
        );
    }

    /// Every read state of `user` with derived fields, ascending by channel.
    pub fn read_states(&self, user: UserId) -> Vec<ReadStateView> {
        let empty = ChannelWindow::new();
        self.users.get(&user).map_or_else(Vec::new, |states| {
            states
                .iter()
                .map(|s| {
                    let channel = ChannelId::new(s.channel)
                        .ok()
                        .and_then(|c| self.channels.get(&c))
                        .unwrap_or(&empty);
                    derive(s, channel, self.caps)
                })
                .collect()
        })
    }

    /// The summary of `user`.
    pub fn summary(&self, user: UserId) -> Summary {
        let mut summary = Summary::default();
        for view in self.read_states(user) {
            summary.add(&view);
        }
        summary
    }
}
