//! The derived fields: computed from a read state and its channel on every read,
//! never stored, so they cannot drift.

use std::collections::BTreeMap;

use super::{Caps, ChannelWindow, Level, StateRef};

/// A read state with its derived fields, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadStateView {
    pub channel_id: u64,
    pub last_read_message_id: u64,
    pub last_message_id: u64,
    pub has_unread: bool,
    pub unread_count: u32,
    pub unread_capped: bool,
    pub mention_count: u32,
    pub mention_capped: bool,
    /// Muted at the time of the answer.
    pub muted: bool,
    pub level: Level,
    /// The oldest non-deleted message newer than the read position, when the
    /// window holds it (never when the count is capped).
    pub first_unread_message_id: Option<u64>,
    /// The channel's parent (0: none): a read state of a thread when set.
    pub parent_id: u64,
}

impl ReadStateView {
    /// Whether the state counts as unread in a summary: unread, not muted, level `all`.
    pub fn counts_unread(&self) -> bool {
        self.has_unread && !self.muted && self.level == Level::All
    }

    /// The mentions it adds to a summary: none at level `nothing`, muted or not.
    pub fn counted_mentions(&self) -> u32 {
        if self.level == Level::Nothing {
            0
        } else {
            self.mention_count
        }
    }
}

/// Unread channels and threads, and the sum of (capped) mention counts, over a
/// user's read states (all, or those of one group).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Unread read states of channels that are not threads (not muted, level `all`).
    pub unread_channels: u64,
    /// Unread read states of threads (not muted, level `all`).
    pub unread_threads: u64,
    /// Mention counts of states whose level is not `nothing`, muted or not.
    pub mentions: u64,
}

impl Summary {
    /// Adds one read state.
    pub fn add(&mut self, view: &ReadStateView) {
        if view.counts_unread() {
            if view.parent_id == 0 {
                self.unread_channels += 1;
            } else {
                self.unread_threads += 1;
            }
        }
        self.mentions += u64::from(view.counted_mentions());
    }
}

/// A summary per group, by group id.
pub type GroupSummaries = BTreeMap<u64, Summary>;

/// Computes the derived fields of `state` against its channel, at `now` (ms).
pub fn derive(state: StateRef<'_>, channel: &ChannelWindow, caps: Caps, now: u64) -> ReadStateView {
    let read = state.read.pos;
    let seen = channel.unread(read, caps.unread as usize + 1);
    let (head, unread) = (seen.head, seen.count);
    let mentions = state
        .mentions
        .iter()
        .filter(|(_, m)| *m > read && !channel.is_deleted(*m))
        .take(caps.mention as usize + 1)
        .count();
    ReadStateView {
        channel_id: state.channel,
        last_read_message_id: read,
        last_message_id: head,
        has_unread: head > read,
        unread_count: clamp(unread, caps.unread),
        unread_capped: unread > caps.unread as usize,
        mention_count: clamp(mentions, caps.mention),
        mention_capped: mentions > caps.mention as usize,
        muted: state.settings.muted(now),
        level: state.settings.level,
        first_unread_message_id: if unread > caps.unread as usize {
            None
        } else {
            seen.first
        },
        parent_id: channel.meta().parent,
    }
}

fn clamp(count: usize, cap: u32) -> u32 {
    u32::try_from(count).unwrap_or(u32::MAX).min(cap)
}
