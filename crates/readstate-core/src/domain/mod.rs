//! The read-state engine: ids, channels, users' read states, the operations of the
//! spec and the derived fields. Pure: no I/O, no async, no clocks (timestamps come in
//! as arguments), so every rule here is property-tested in isolation.
//!
//! The model, in one paragraph: a channel is the set of message ids it has seen
//! (created or deleted), of which it keeps the newest `W` with a tombstone flag;
//! a read state is a read position `(epoch, pos)` merged by lexicographic max plus
//! the newest `K` mention ids. Every piece is a function of the *set* of events
//! received, which is what makes message events and acks order-insensitive and
//! idempotent, and what lets storage rows be merged instead of overwritten.

mod channel;
mod ids;
mod model;
mod ops;
mod packed;
mod settings;
mod user;
mod view;

pub use channel::{ChannelWindow, Unread};
pub use ids::{ChannelId, GroupId, IdError, MessageId, UserId, is_canonical_decimal};
pub use model::Model;
pub use ops::{ChannelEffect, Op, UserChange, UserEffect, apply_user_effect, channel_meta, expand};
pub use settings::{
    ChannelMeta, Level, MAX_PARENT_DEPTH, MAX_STAMP, MUTED_FOREVER, ParentError, Settings,
    check_parent, group_of,
};
pub use user::{Changed, ReadPos, StateRef, UserStates};
pub use view::{GroupSummaries, ReadStateView, Summary, derive};

/// Caps of the derived counts and the window sizes that follow from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// `unread_count` is exact up to this value; above it `unread_capped` is set.
    pub unread: u32,
    /// `mention_count` is exact up to this value; above it `mention_capped` is set.
    pub mention: u32,
}

impl Default for Caps {
    fn default() -> Self {
        Self {
            unread: 99,
            mention: 99,
        }
    }
}

impl Caps {
    /// Message ids a channel keeps: twice what counting to the cap needs, so that
    /// deletions among the newest messages still leave enough to count exactly.
    pub fn channel_window(&self) -> usize {
        2 * (self.unread as usize + 1)
    }

    /// Mention ids a read state keeps (the newest ones), with the same slack.
    pub fn mention_window(&self) -> usize {
        2 * (self.mention as usize + 1)
    }
}
