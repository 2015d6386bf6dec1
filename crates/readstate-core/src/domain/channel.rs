//! A channel's recent window: the newest `W` message ids it has seen, created or
//! deleted, with deletions kept as tombstones.
//!
//! The window is `top_W(created ∪ deleted)` with each id flagged if deleted, and
//! `floor` is the largest id that fell out of it. Both are functions of the set of
//! events, so the same events in any order, any number of times, give the same
//! window (the merge is commutative, associative and idempotent).

//!
//! A channel's metadata (parent, group) rides along on the side, with the floor:
//! a channel that never overflowed its window and has no metadata pays for neither.

use super::ChannelMeta;

/// Bit 63 marks a tombstone; ids never use it (they are at most 2^63-1).
const DELETED: u64 = 1 << 63;

/// The rare parts of a channel, allocated only when one of them is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Side {
    /// Largest id pushed out of the window (0: nothing was).
    floor: u64,
    meta: ChannelMeta,
}

/// The newest message ids of one channel, ascending, with tombstones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelWindow {
    /// Ascending by id (the flag bit masked off); bit 63 set = deleted.
    ids: Vec<u64>,
    /// The floor and the metadata; `None` while both are 0 / unset.
    side: Option<Box<Side>>,
}

impl ChannelWindow {
    /// An empty channel: no messages known.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a window from stored rows `(id, deleted)` in any order and the stored
    /// floor, keeping the newest `window` ids.
    pub fn from_rows(
        rows: impl IntoIterator<Item = (u64, bool)>,
        floor: u64,
        window: usize,
    ) -> Self {
        let mut ch = Self::default();
        ch.set_floor(floor);
        for (id, deleted) in rows {
            ch.observe(id, deleted, window);
        }
        ch.ids.shrink_to_fit();
        ch
    }

    /// Records that message `id` was created (`deleted = false`) or deleted.
    /// Returns whether the window or its floor changed.
    pub fn observe(&mut self, id: u64, deleted: bool, window: usize) -> bool {
        if id <= self.floor() {
            // Older than everything the window keeps: it cannot enter the top W.
            return false;
        }
        match self.ids.binary_search_by_key(&id, |raw| raw & !DELETED) {
            Ok(at) => {
                if deleted && self.ids[at] & DELETED == 0 {
                    self.ids[at] |= DELETED;
                    true
                } else {
                    false
                }
            }
            Err(at) => {
                if self.ids.len() >= window {
                    if at == 0 {
                        // Older than a full window: it falls out at once, but it is
                        // still the largest id outside the window (id > floor here),
                        // so the floor rises; storage must learn that too.
                        self.set_floor(id);
                        return true;
                    }
                    let oldest = self.ids.remove(0) & !DELETED;
                    self.set_floor(self.floor().max(oldest));
                    self.ids
                        .insert(at - 1, id | if deleted { DELETED } else { 0 });
                } else {
                    self.ids.insert(at, id | if deleted { DELETED } else { 0 });
                }
                true
            }
        }
    }

    /// The newest non-deleted message id, or 0 when none is known.
    pub fn head(&self) -> u64 {
        self.ids
            .iter()
            .rev()
            .find(|raw| *raw & DELETED == 0)
            .copied()
            .unwrap_or(0)
    }

    /// Whether `id` is known to be deleted.
    pub fn is_deleted(&self, id: u64) -> bool {
        self.ids
            .binary_search_by_key(&id, |raw| raw & !DELETED)
            .is_ok_and(|at| self.ids[at] & DELETED != 0)
    }

    /// Non-deleted messages with id > `read`, counted up to `limit` (stops early).
    pub fn count_after(&self, read: u64, limit: usize) -> usize {
        let start = self.ids.partition_point(|raw| raw & !DELETED <= read);
        self.ids[start..]
            .iter()
            .filter(|raw| *raw & DELETED == 0)
            .take(limit)
            .count()
    }

    /// Largest id pushed out of the window (0: none).
    pub fn floor(&self) -> u64 {
        self.side.as_ref().map_or(0, |s| s.floor)
    }

    fn set_floor(&mut self, floor: u64) {
        if floor != self.floor() {
            self.side.get_or_insert_with(Box::default).floor = floor;
        }
    }

    /// The channel's metadata (default when never set).
    pub fn meta(&self) -> ChannelMeta {
        self.side
            .as_ref()
            .map_or_else(ChannelMeta::default, |s| s.meta)
    }

    /// Merges metadata in (see [`ChannelMeta::merge`]); returns whether it changed.
    pub fn merge_meta(&mut self, meta: &ChannelMeta) -> bool {
        if meta.is_default() {
            return false;
        }
        self.side.get_or_insert_with(Box::default).meta.merge(meta)
    }

    /// Whether the service has seen the channel: a message or metadata.
    pub fn is_known(&self) -> bool {
        !self.ids.is_empty() || self.side.is_some()
    }

    /// The oldest non-deleted message newer than `read`, when the window can tell:
    /// `None` when there is none, or when `read` is older than the window (the
    /// message may have fallen out of it).
    pub fn first_after(&self, read: u64) -> Option<u64> {
        if read < self.floor() {
            return None;
        }
        let start = self.ids.partition_point(|raw| raw & !DELETED <= read);
        self.ids[start..]
            .iter()
            .find(|raw| *raw & DELETED == 0)
            .copied()
    }

    /// Every `(id, deleted)` in the window, ascending.
    pub fn rows(&self) -> impl Iterator<Item = (u64, bool)> + '_ {
        self.ids
            .iter()
            .map(|raw| (raw & !DELETED, raw & DELETED != 0))
    }

    /// Number of ids kept (created and deleted).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when the channel knows no message.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Heap bytes this window owns (for the cache's byte budget).
    pub fn heap_bytes(&self) -> usize {
        self.ids.capacity() * std::mem::size_of::<u64>()
            + self
                .side
                .as_ref()
                .map_or(0, |_| std::mem::size_of::<Side>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_create_does_not_bring_a_deleted_message_back() {
        let mut ch = ChannelWindow::new();
        ch.observe(5, true, 10);
        ch.observe(5, false, 10);
        assert!(ch.is_deleted(5));
        assert_eq!(ch.head(), 0);
        assert_eq!(ch.count_after(0, 100), 0);
    }

    #[test]
    fn the_window_keeps_the_newest_ids_and_remembers_the_floor() {
        let mut ch = ChannelWindow::new();
        for id in 1..=10 {
            ch.observe(id, false, 4);
        }
        assert_eq!(
            ch.rows().map(|(id, _)| id).collect::<Vec<_>>(),
            vec![7, 8, 9, 10]
        );
        assert_eq!(ch.floor(), 6);
        assert!(!ch.observe(3, false, 4));
        assert_eq!(ch.head(), 10);
        assert_eq!(ch.count_after(8, 100), 2);
    }

    #[test]
    fn an_old_id_arriving_at_a_full_window_raises_the_floor_as_if_it_came_first() {
        let mut late = ChannelWindow::new();
        for id in [10, 9, 8, 7, 6] {
            late.observe(id, false, 4);
        }
        let mut early = ChannelWindow::new();
        for id in [6, 7, 8, 9, 10] {
            early.observe(id, false, 4);
        }
        assert_eq!(late, early);
    }
}
