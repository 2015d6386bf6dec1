//! A channel's recent window: the newest `W` message ids it has seen, created or
//! deleted, with deletions kept as tombstones.
//!
//! The window is `top_W(created ∪ deleted)` with each id flagged if deleted, and
//! `floor` is the largest id that fell out of it. Both are functions of the set of
//! events, so the same events in any order, any number of times, give the same
//! window (the merge is commutative, associative and idempotent).
//!
//! **Encoding** (frame of reference, as a user's read states): one byte holding the
//! record width (1..=8) in its low nibble and the width of `base` (0..=8) in its
//! high nibble, `base` in that many little-endian bytes (a fixed-size load to
//! parse, where a varint takes a loop of up to 9 steps for a snowflake), then one
//! record per id, ascending:
//! `(id - base) << 1 | deleted` in `width` little-endian bytes. Ids that span less
//! than 2^7 take 1 byte each, less than 2^15 2 bytes; snowflakes a day apart take
//! 7, against 8 for a `u64`. A new id that fits is written in place (the oldest shifted out of a full
//! window); one below the base or wider than the records re-encodes the window with
//! the smallest base and the narrowest width.
//!
//! A channel's metadata (parent, group) rides along on the side, with the floor:
//! a channel that never overflowed its window and has no metadata pays for neither.

use super::packed::{count_at_most, push_le, read_le, width_of, write_le};
use super::{ChannelMeta, allocated};

/// The rare parts of a channel, allocated only when one of them is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Side {
    /// Largest id pushed out of the window (0: nothing was).
    floor: u64,
    meta: ChannelMeta,
}

/// The header of an encoded window, parsed.
#[derive(Debug, Clone, Copy)]
struct Layout {
    base: u64,
    width: usize,
    /// Offset of the first record.
    start: usize,
    len: usize,
}

impl Layout {
    #[inline]
    fn of(data: &[u8]) -> Option<Layout> {
        let widths = *data.first()?;
        let width = usize::from(widths & 0x0f);
        let start = 1 + usize::from(widths >> 4);
        Some(Layout {
            base: read_le(&data[1..start]),
            width,
            start,
            len: (data.len() - start) / width,
        })
    }

    #[inline]
    fn raw(&self, data: &[u8], i: usize) -> u64 {
        let at = self.start + i * self.width;
        read_le(&data[at..at + self.width])
    }

    #[inline]
    fn id(&self, data: &[u8], i: usize) -> u64 {
        self.base + (self.raw(data, i) >> 1)
    }

    /// Whether the record at `i` is a tombstone: bit 0 of its first byte (records
    /// are little-endian), read without decoding the id.
    #[inline]
    fn tombstone(&self, data: &[u8], i: usize) -> bool {
        data[self.start + i * self.width] & 1 != 0
    }

    /// The index of the newest id not deleted (the head): almost always the last.
    fn newest_live(&self, data: &[u8]) -> Option<usize> {
        (0..self.len).rev().find(|&i| !self.tombstone(data, i))
    }

    /// The first byte of every record from `from` on, in order.
    #[inline]
    fn first_bytes<'d>(&self, data: &'d [u8], from: usize) -> impl Iterator<Item = u8> + 'd {
        let start = (self.start + from * self.width).min(data.len());
        data[start..].iter().step_by(self.width).copied()
    }

    /// The record of `id`, when it fits this layout.
    fn record(&self, id: u64, deleted: bool) -> Option<u64> {
        let raw = id.checked_sub(self.base)? << 1 | u64::from(deleted);
        (width_of(raw | 1) <= self.width).then_some(raw)
    }

    /// Records with an id at most `id`: the index of the first one above it.
    fn partition(&self, data: &[u8], id: u64) -> usize {
        let Some(key) = id.checked_sub(self.base) else {
            return 0;
        };
        if key > u64::MAX >> 1 {
            // Above any id a record holds (ids are below 2^63).
            return self.len;
        }
        count_at_most(
            data,
            self.start,
            self.width,
            self.width,
            self.len,
            key << 1 | 1,
        )
    }
}

/// Encodes `rows` (ascending, distinct ids) with the smallest base and narrowest width.
fn encode(rows: &[(u64, bool)]) -> Vec<u8> {
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Vec::new();
    };
    let base = first.0;
    let width = width_of((last.0 - base) << 1 | 1);
    let base_width = width_of(base);
    let mut out = Vec::with_capacity(1 + base_width + rows.len() * width);
    // Both widths are at most 8, so each fits its nibble.
    out.push(width as u8 | (base_width as u8) << 4);
    push_le(&mut out, base, base_width);
    for &(id, deleted) in rows {
        push_le(&mut out, (id - base) << 1 | u64::from(deleted), width);
    }
    out
}

/// What a read state sees of its channel: see [`ChannelWindow::unread`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unread {
    /// The newest non-deleted message id, 0 when none is known.
    pub head: u64,
    /// Non-deleted messages after the read position, up to the limit asked for.
    pub count: usize,
    /// The oldest non-deleted message after the read position, when the window
    /// can tell: `None` when there is none, or when the read position is older than
    /// the window (the message may have fallen out of it).
    pub first: Option<u64>,
}

/// The newest message ids of one channel, ascending, with tombstones.
#[derive(Clone, Default)]
pub struct ChannelWindow {
    /// The header and the records (see the module's encoding); empty when no id is.
    ids: Vec<u8>,
    /// The floor and the metadata; `None` while both are 0 / unset.
    side: Option<Box<Side>>,
}

/// Equal when the ids, tombstones, floor and metadata are, however encoded.
impl PartialEq for ChannelWindow {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.rows().eq(other.rows()) && self.side == other.side
    }
}

impl Eq for ChannelWindow {}

impl std::fmt::Debug for ChannelWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelWindow")
            .field("rows", &self.rows().collect::<Vec<_>>())
            .field("side", &self.side)
            .finish()
    }
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

    #[inline]
    fn layout(&self) -> Option<Layout> {
        Layout::of(&self.ids)
    }

    /// Records that message `id` was created (`deleted = false`) or deleted.
    /// Returns whether the window or its floor changed.
    pub fn observe(&mut self, id: u64, deleted: bool, window: usize) -> bool {
        if id <= self.floor() {
            // Older than everything the window keeps: it cannot enter the top W.
            return false;
        }
        let Some(layout) = self.layout() else {
            self.ids = encode(&[(id, deleted)]);
            return true;
        };
        // A new message is almost always newer than every id the window holds: it
        // goes at the end, without a search.
        let at = match layout.len.checked_sub(1) {
            Some(last) if layout.id(&self.ids, last) < id => layout.len,
            _ => layout.partition(&self.ids, id),
        };
        if at > 0 && layout.id(&self.ids, at - 1) == id {
            let off = layout.start + (at - 1) * layout.width;
            if deleted && !layout.tombstone(&self.ids, at - 1) {
                self.ids[off] |= 1;
                return true;
            }
            return false;
        }
        let full = layout.len >= window;
        if full {
            if at == 0 {
                // Older than a full window: it falls out at once, but it is still the
                // largest id outside the window (id > floor here), so the floor rises;
                // storage must learn that too.
                self.set_floor(id);
                return true;
            }
            let oldest = layout.id(&self.ids, 0);
            self.set_floor(self.floor().max(oldest));
        }
        match layout.record(id, deleted) {
            Some(raw) if full => {
                // The oldest goes, the ones below `id` move down one, `id` goes in.
                let (start, w) = (layout.start, layout.width);
                self.ids.copy_within(start + w..start + at * w, start);
                let off = start + (at - 1) * w;
                write_le(&mut self.ids[off..off + w], raw);
            }
            Some(raw) => {
                let (off, w) = (layout.start + at * layout.width, layout.width);
                let end = self.ids.len();
                self.ids.resize(end + w, 0);
                self.ids.copy_within(off..end, off + w);
                write_le(&mut self.ids[off..off + w], raw);
            }
            None => {
                let mut rows: Vec<(u64, bool)> = self.rows().collect();
                if full {
                    rows.remove(0);
                    rows.insert(at - 1, (id, deleted));
                } else {
                    rows.insert(at, (id, deleted));
                }
                self.ids = encode(&rows);
            }
        }
        true
    }

    /// The newest non-deleted message id, or 0 when none is known.
    pub fn head(&self) -> u64 {
        let Some(layout) = self.layout() else {
            return 0;
        };
        layout
            .newest_live(&self.ids)
            .map_or(0, |i| layout.id(&self.ids, i))
    }

    /// Whether `id` is known to be deleted.
    pub fn is_deleted(&self, id: u64) -> bool {
        let Some(layout) = self.layout() else {
            return false;
        };
        let at = layout.partition(&self.ids, id);
        at > 0 && layout.id(&self.ids, at - 1) == id && layout.tombstone(&self.ids, at - 1)
    }

    /// Non-deleted messages with id > `read`, counted up to `limit` (stops early):
    /// [`Self::unread`]'s count, computed on its own as the property test's reference.
    #[cfg(test)]
    pub fn count_after(&self, read: u64, limit: usize) -> usize {
        let Some(layout) = self.layout() else {
            return 0;
        };
        let start = layout.partition(&self.ids, read);
        layout
            .first_bytes(&self.ids, start)
            .filter(|b| b & 1 == 0)
            .take(limit)
            .count()
    }

    /// What a read state at `read` sees of this channel, in one binary search and
    /// one pass over the ids after `read`: the head, the live ids after `read` counted
    /// up to `limit`, and the first of them (what every derived view needs).
    pub fn unread(&self, read: u64, limit: usize) -> Unread {
        let Some(layout) = self.layout() else {
            return Unread::default();
        };
        let data = &self.ids;
        let mut seen = Unread::default();
        let Some(newest) = layout.newest_live(data) else {
            return seen;
        };
        seen.head = layout.id(data, newest);
        if seen.head <= read {
            return seen;
        }
        let start = layout.partition(data, read);
        let live = |b: &u8| b & 1 == 0;
        if let Some(skipped) = layout.first_bytes(data, start).position(|b| live(&b)) {
            let first = start + skipped;
            if read >= self.floor() {
                seen.first = Some(layout.id(data, first));
            }
            // The live ids after the first, counted up to `limit - 1` by a plain loop
            // over their first bytes (a few instructions an id, where the iterator
            // chain of `first_bytes` took about 25).
            let wanted = limit.saturating_sub(1);
            let (mut counted, mut at) = (0, layout.start + (first + 1) * layout.width);
            while counted < wanted && at < data.len() {
                counted += usize::from(live(&data[at]));
                at += layout.width;
            }
            seen.count = (1 + counted).min(limit);
        }
        seen
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
    /// message may have fallen out of it). [`Self::unread`]'s first id, computed on
    /// its own as the property test's reference.
    #[cfg(test)]
    pub fn first_after(&self, read: u64) -> Option<u64> {
        if read < self.floor() {
            return None;
        }
        let layout = self.layout()?;
        let start = layout.partition(&self.ids, read);
        (start..layout.len)
            .find(|&i| !layout.tombstone(&self.ids, i))
            .map(|i| layout.id(&self.ids, i))
    }

    /// Every `(id, deleted)` in the window, ascending.
    pub fn rows(&self) -> impl Iterator<Item = (u64, bool)> + '_ {
        self.layout().into_iter().flat_map(move |l| {
            (0..l.len).map(move |i| {
                let raw = l.raw(&self.ids, i);
                (l.base + (raw >> 1), raw & 1 != 0)
            })
        })
    }

    /// Number of ids kept (created and deleted).
    pub fn len(&self) -> usize {
        self.layout().map_or(0, |l| l.len)
    }

    /// True when the channel knows no message.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Heap bytes this window owns (for the cache's byte budget).
    pub fn heap_bytes(&self) -> usize {
        // Each allocation as its allocator size class (`allocated`).
        allocated(self.ids.capacity())
            + self
                .side
                .as_ref()
                .map_or(0, |_| allocated(std::mem::size_of::<Side>()))
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

    /// Ids that exercise every width: small ones, ones near 2^63, and anything between.
    fn an_id() -> impl proptest::strategy::Strategy<Value = u64> {
        use proptest::prelude::*;
        prop_oneof![
            3 => 1..60u64,
            1 => (super::super::ids::MAX_ID - 60)..=super::super::ids::MAX_ID,
            1 => 1..=super::super::ids::MAX_ID,
            1 => (1u64 << 40)..(1u64 << 40) + 100,
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// The compact window is the set definition: the newest `W` ids seen, each
        /// deleted if any event deleted it, and the floor the largest id outside;
        /// rebuilt from its rows and floor, it is the same window.
        #[test]
        fn the_compact_window_is_the_top_w_of_the_ids_seen(
            events in proptest::collection::vec((an_id(), proptest::bool::weighted(0.2)), 0..80),
            window in 1..8usize,
        ) {
            let mut ch = ChannelWindow::new();
            let mut seen = std::collections::BTreeMap::<u64, bool>::new();
            for (id, deleted) in events {
                ch.observe(id, deleted, window);
                *seen.entry(id).or_default() |= deleted;
                let kept: Vec<(u64, bool)> =
                    seen.iter().rev().take(window).rev().map(|(i, d)| (*i, *d)).collect();
                let floor = seen.keys().rev().nth(window).copied().unwrap_or(0);
                proptest::prop_assert_eq!(ch.rows().collect::<Vec<_>>(), kept.clone());
                proptest::prop_assert_eq!(ch.floor(), floor);
                proptest::prop_assert_eq!(ch.len(), kept.len());
                let head = kept.iter().rev().find(|(_, d)| !d).map_or(0, |(i, _)| *i);
                proptest::prop_assert_eq!(ch.head(), head);
                for read in [0, 1, id, id.saturating_sub(1), head, floor, floor.saturating_sub(1)] {
                    for limit in [0, 1, 3, usize::MAX] {
                        proptest::prop_assert_eq!(
                            ch.unread(read, limit),
                            Unread {
                                head,
                                count: ch.count_after(read, limit),
                                first: ch.first_after(read),
                            }
                        );
                    }
                }
            }
            let rebuilt = ChannelWindow::from_rows(ch.rows().collect::<Vec<_>>().into_iter().rev(), ch.floor(), window);
            proptest::prop_assert_eq!(&rebuilt, &ch);
        }
    }

    #[test]
    fn ids_take_the_bytes_their_span_needs() {
        // The width byte, the base (1, one byte), 20 records of 1 byte (a span of 19).
        let ch = ChannelWindow::from_rows((1..=20).map(|id| (id, false)), 0, 200);
        assert_eq!(ch.heap_bytes(), allocated(2 + 20));
        assert_eq!(ch.head(), 20);
        assert_eq!(ch.count_after(10, 100), 10);
        // Ids 1,000 apart span 19,000: 2 bytes each, with a 2-byte base.
        let mut ch = ChannelWindow::from_rows((1..=20).map(|i| (i * 1_000, false)), 0, 200);
        assert_eq!(ch.heap_bytes(), allocated(3 + 20 * 2));
        // A snowflake re-encodes it wider; the rows stay what they were.
        assert!(ch.observe(1 << 60, false, 200));
        assert_eq!(ch.len(), 21);
        assert_eq!(ch.head(), 1 << 60);
        assert_eq!(ch.first_after(20_000), Some(1 << 60));
        assert_eq!(ch.first_after(999), Some(1_000));
    }
}
