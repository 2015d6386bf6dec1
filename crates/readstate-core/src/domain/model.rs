//! The whole engine in one plain in-memory struct: every operation applied to
//! hash maps of channels and users. The service does the same through the cache
//! (with locking, loading and persistence around it); this is the reference the
//! property tests and the crash tests compare against.

use std::collections::BTreeMap;

use super::{
    Caps, ChannelEffect, ChannelId, ChannelMeta, ChannelWindow, GroupSummaries, Op, ReadStateView,
    Summary, UserEffect, UserId, UserStates, apply_user_effect, channel_meta, check_parent, derive,
    expand, group_of,
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

    /// Applies one operation; `now` (ms) stamps a mark unread and writes without
    /// `at`. A parent that would form a cycle is refused (nothing changes), as the
    /// service refuses it.
    pub fn apply(&mut self, op: &Op, now: u64) {
        if let Op::DeleteChannel { channel } = op {
            self.channels.remove(channel);
            for states in self.users.values_mut() {
                states.remove(channel.get());
            }
            return;
        }
        if let Op::SetChannel {
            channel,
            parent,
            group,
            at,
        } = op
        {
            let meta = channel_meta(*parent, *group, *at, now);
            if meta.parent != 0
                && check_parent(channel.get(), meta.parent, |c| self.meta(c).parent).is_err()
            {
                return;
            }
            self.channels.entry(*channel).or_default().merge_meta(&meta);
            return;
        }
        let (channel, users) = expand(op, now);
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

    /// The metadata of `channel` (default when unknown).
    pub fn meta(&self, channel: u64) -> ChannelMeta {
        ChannelId::new(channel)
            .ok()
            .and_then(|c| self.channels.get(&c))
            .map_or_else(ChannelMeta::default, ChannelWindow::meta)
    }

    /// Every read state of `user` with derived fields at `now`, ascending by channel.
    pub fn read_states(&self, user: UserId, now: u64) -> Vec<ReadStateView> {
        let empty = ChannelWindow::new();
        self.users.get(&user).map_or_else(Vec::new, |states| {
            states
                .iter()
                .map(|s| {
                    let channel = ChannelId::new(s.channel)
                        .ok()
                        .and_then(|c| self.channels.get(&c))
                        .unwrap_or(&empty);
                    derive(s, channel, self.caps, now)
                })
                .collect()
        })
    }

    /// The summary of `user` at `now`: over all read states, or those of `group`.
    pub fn summary(&self, user: UserId, group: Option<u64>, now: u64) -> Summary {
        let mut summary = Summary::default();
        for view in self.read_states(user, now) {
            if group.is_none_or(|g| group_of(view.channel_id, |c| self.meta(c)) == Some(g)) {
                summary.add(&view);
            }
        }
        summary
    }

    /// A summary per group in which `user` has a read state.
    pub fn groups(&self, user: UserId, now: u64) -> GroupSummaries {
        let mut out = GroupSummaries::new();
        for view in self.read_states(user, now) {
            if let Some(group) = group_of(view.channel_id, |c| self.meta(c)) {
                out.entry(group).or_default().add(&view);
            }
        }
        out
    }

    /// `user`'s read states of threads under `channel` that are unread or mention
    /// the user, ascending by channel, with their summary.
    pub fn threads(&self, user: UserId, channel: u64, now: u64) -> (Summary, Vec<ReadStateView>) {
        let mut summary = Summary::default();
        let views: Vec<ReadStateView> = self
            .read_states(user, now)
            .into_iter()
            .filter(|v| v.parent_id == channel)
            .inspect(|v| summary.add(v))
            .filter(|v| v.has_unread || v.mention_count > 0)
            .collect();
        (summary, views)
    }
}
