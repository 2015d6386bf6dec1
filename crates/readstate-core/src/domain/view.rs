//! The derived fields: computed from a read state and its channel on every read,
//! never stored, so they cannot drift.

use super::{Caps, ChannelWindow, StateRef};

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
}

/// Unread channels and the sum of (capped) mention counts of one user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub unread_channels: u64,
    pub mentions: u64,
}

impl Summary {
    /// Adds one read state.
    pub fn add(&mut self, view: &ReadStateView) {
        self.unread_channels += u64::from(view.has_unread);
        self.mentions += u64::from(view.mention_count);
    }
}

/// Computes the derived fields of `state` against its channel.
pub fn derive(state: StateRef<'_>, channel: &ChannelWindow, caps: Caps) -> ReadStateView {
    let read = state.read.pos;
    let head = channel.head();
    let unread = channel.count_after(read, caps.unread as usize + 1);
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
    }
}

fn clamp(count: usize, cap: u32) -> u32 {
    u32::try_from(count).unwrap_or(u32::MAX).min(cap)
}
