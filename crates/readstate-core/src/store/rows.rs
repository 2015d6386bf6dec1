//! What both backends do with the rows they read: ids between SQL's signed
//! integers and ours, and a user's or channels' rows gathered into the domain's
//! values. Each backend only takes its own column types apart.

use std::collections::BTreeMap;

use super::StoreError;
use crate::domain::{ChannelMeta, ChannelWindow, Level, ReadPos, Settings, UserStates};

/// An id or epoch as SQL stores it. Ids and epochs are at most 2^63-1 (checked at
/// the API boundary).
pub(super) fn id(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A stored id back; a negative one means the database was changed by hand.
pub(super) fn uid(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative id {v}")))
}

/// A user's read states, gathered row by row and encoded once at the end.
pub(super) struct UserRows {
    reads: Vec<(u64, ReadPos)>,
    mentions: Vec<(u64, u64)>,
    settings: Vec<(u64, Settings, ReadPos)>,
    mention_window: usize,
}

impl UserRows {
    pub(super) fn new(mention_window: usize) -> Self {
        Self {
            reads: Vec::new(),
            mentions: Vec::new(),
            settings: Vec::new(),
            mention_window,
        }
    }

    /// A read state's position (a row of `read_states`; repeats merge).
    pub(super) fn read(&mut self, channel: i64, epoch: i64, pos: i64) -> Result<(), StoreError> {
        let read = ReadPos {
            epoch: uid(epoch)?,
            pos: uid(pos)?,
        };
        self.reads.push((uid(channel)?, read));
        Ok(())
    }

    /// One of a read state's mention ids.
    pub(super) fn mention(&mut self, channel: i64, message: u64) -> Result<(), StoreError> {
        self.mentions.push((uid(channel)?, message));
        Ok(())
    }

    /// A read state's settings: a row of `settings` joined to the state's
    /// `read_states` row, whose position is `read` (the state is there already, so
    /// nothing is created at it). Repeats merge.
    pub(super) fn settings(
        &mut self,
        channel: i64,
        read: (i64, i64),
        [muted_until, muted_at, level, level_at]: [i64; 4],
    ) -> Result<(), StoreError> {
        let settings = Settings {
            muted_until: uid(muted_until)?,
            muted_at: uid(muted_at)?,
            level: u8::try_from(level)
                .ok()
                .and_then(Level::from_code)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown level {level}")))?,
            level_at: uid(level_at)?,
        };
        let read = ReadPos {
            epoch: uid(read.0)?,
            pos: uid(read.1)?,
        };
        self.settings.push((uid(channel)?, settings, read));
        Ok(())
    }

    /// The user's states: the positions first (one allocation), then the mentions
    /// and settings, which create a state only where no position row made one.
    pub(super) fn finish(self) -> UserStates {
        let mut states = UserStates::from_reads(self.reads);
        for (channel, message) in self.mentions {
            states.add_mention(channel, message, self.mention_window);
        }
        for (channel, settings, read) in self.settings {
            states.merge_settings(channel, &settings, read);
        }
        states.shrink();
        states
    }
}

/// A channel's metadata as stored (`parent_id`, `group_id`, `at`).
fn channel_meta([parent, group, at]: [i64; 3]) -> Result<ChannelMeta, StoreError> {
    Ok(ChannelMeta {
        parent: uid(parent)?,
        group: uid(group)?,
        at: uid(at)?,
    })
}

/// One channel's rows gathered: its floor, metadata and `(id, deleted)` messages.
#[derive(Default)]
struct Gathered {
    floor: u64,
    meta: ChannelMeta,
    messages: Vec<(u64, bool)>,
}

/// Channels' windows, gathered row by row: each row names a channel, its floor, its
/// metadata (all 0 when never set), and one of its message ids with its tombstone
/// bit (no id for a channel with no rows).
#[derive(Default)]
pub(super) struct ChannelRows {
    grouped: BTreeMap<u64, Gathered>,
}

impl ChannelRows {
    pub(super) fn row(
        &mut self,
        channel: i64,
        floor: i64,
        meta: [i64; 3],
        message: Option<i64>,
        deleted: bool,
    ) -> Result<(), StoreError> {
        let channel = uid(channel)?;
        let entry = match self.grouped.entry(channel) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(Gathered {
                floor: uid(floor)?,
                meta: channel_meta(meta)?,
                messages: Vec::new(),
            }),
        };
        if let Some(message) = message {
            entry.messages.push((uid(message)?, deleted));
        }
        Ok(())
    }

    /// The window of each of `channels`, in their order, with its metadata (empty
    /// for a channel never seen).
    pub(super) fn finish(mut self, channels: &[u64], window: usize) -> Vec<(u64, ChannelWindow)> {
        channels
            .iter()
            .map(|c| {
                let g = self.grouped.remove(c).unwrap_or_default();
                let mut ch = ChannelWindow::from_rows(g.messages, g.floor, window);
                ch.merge_meta(&g.meta);
                (*c, ch)
            })
            .collect()
    }
}
