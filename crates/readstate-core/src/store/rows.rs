//! What both backends do with the rows they read: ids between SQL's signed
//! integers and ours, and a user's or channels' rows gathered into the domain's
//! values. Each backend only takes its own column types apart.

use std::collections::BTreeMap;

use super::StoreError;
use crate::domain::{ChannelWindow, ReadPos, UserStates};

/// An id or epoch as SQL stores it. Ids and epochs are at most 2^63-1 (checked at
/// the API boundary).
pub(super) fn id(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A stored id back; a negative one means the database was changed by hand.
pub(super) fn uid(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative id {v}")))
}

/// A user's read states, gathered row by row.
pub(super) struct UserRows {
    states: UserStates,
    mention_window: usize,
}

impl UserRows {
    pub(super) fn new(mention_window: usize) -> Self {
        Self {
            states: UserStates::new(),
            mention_window,
        }
    }

    /// A read state's position (a row of `read_states`; repeats merge).
    pub(super) fn read(&mut self, channel: i64, epoch: i64, pos: i64) -> Result<(), StoreError> {
        let read = ReadPos {
            epoch: uid(epoch)?,
            pos: uid(pos)?,
        };
        self.states.merge_read(uid(channel)?, read);
        Ok(())
    }

    /// One of a read state's mention ids.
    pub(super) fn mention(&mut self, channel: i64, message: u64) -> Result<(), StoreError> {
        self.states
            .add_mention(uid(channel)?, message, self.mention_window);
        Ok(())
    }

    pub(super) fn finish(self) -> UserStates {
        self.states
    }
}

/// Channels' windows, gathered row by row: each row names a channel, its floor,
/// and one of its message ids with its tombstone bit (no id for a channel with no
/// rows).
#[derive(Default)]
pub(super) struct ChannelRows {
    grouped: BTreeMap<u64, (u64, Vec<(u64, bool)>)>,
}

impl ChannelRows {
    pub(super) fn row(
        &mut self,
        channel: i64,
        floor: i64,
        message: Option<i64>,
        deleted: bool,
    ) -> Result<(), StoreError> {
        let entry = self
            .grouped
            .entry(uid(channel)?)
            .or_insert((uid(floor)?, Vec::new()));
        if let Some(message) = message {
            entry.1.push((uid(message)?, deleted));
        }
        Ok(())
    }

    /// The window of each of `channels`, in their order (empty for a channel never
    /// seen).
    pub(super) fn finish(mut self, channels: &[u64], window: usize) -> Vec<(u64, ChannelWindow)> {
        channels
            .iter()
            .map(|c| {
                let (floor, rows) = self.grouped.remove(c).unwrap_or_default();
                (*c, ChannelWindow::from_rows(rows, floor, window))
            })
            .collect()
    }
}
