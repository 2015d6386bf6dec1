//! All read states of one user, stored compactly in one allocation: a header, then
//! one fixed-width record per state (channel id, read position), sorted by channel.
//!
//! **Encoding** (frame of reference). The header is one byte holding the two widths
//! (`channel_width` in 1..=8 in the low nibble, `pos_width` in 0..=8 in the high one),
//! a byte holding the widths of the two bases the same way (1..=8 each), then
//! `base_channel` and `base_pos` in that many little-endian bytes each (fixed-size loads to parse,
//! where varints take a loop of up to 9 steps for a snowflake). A record is `channel - base_channel`
//! in `channel_width` little-endian bytes, then `pos - base_pos` in `pos_width` bytes.
//! Records keep a fixed width so that a lookup is a search of fixed-size fields and an ack that
//! still fits is written in place; anything that does not fit (a channel or position
//! below its base, a difference wider than its field) re-encodes the user with the
//! narrowest widths and the smallest bases (in place when only the positions'
//! base changes). A removal keeps the widths and bases. A user in 10 channels whose
//! ids span less than 2^24 and whose positions are within 255 of each other takes 4 bytes per state
//! plus a header of a few bytes; 63-bit snowflakes (channels years apart, positions
//! days apart) take 13 to 15 bytes per state, still less than the 16 of two `u64`s.
//!
//! The rare parts (a non-zero unread epoch, mention ids, notification settings) live
//! in a side allocation that most users never have.

use super::packed::{count_at_most, read_le, read_le_at, width_of, write_le};
use super::{Settings, allocated};

/// A read position: `(epoch, pos)`, merged by lexicographic max. Acks raise `pos`
/// within the current epoch; marking unread starts a newer epoch (a timestamp), so a
/// redelivered old ack cannot undo a mark unread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadPos {
    /// Unread epoch: 0 until the state is first marked unread, then the
    /// millisecond timestamp of the latest mark unread.
    pub epoch: u64,
    /// Last read message id within the epoch (0: nothing read).
    pub pos: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Extras {
    /// `(channel, epoch)` for states whose epoch is not 0, ascending by channel.
    epochs: Vec<(u64, u64)>,
    /// `(channel, message)` mention ids, ascending; at most the window per channel.
    mentions: Vec<(u64, u64)>,
    /// Settings of states whose settings are not the default, ascending by channel.
    settings: Vec<(u64, Settings)>,
}

impl Extras {
    fn is_empty(&self) -> bool {
        self.epochs.is_empty() && self.mentions.is_empty() && self.settings.is_empty()
    }
}

/// The iterator of [`UserStates::iter`]: the records in order, with the side lists
/// (ascending by channel too) walked alongside rather than searched per state.
struct States<'a> {
    data: &'a [u8],
    layout: Option<Layout>,
    /// Index of the next record.
    next: usize,
    /// The side lists' entries from the next record's channel on.
    epochs: &'a [(u64, u64)],
    mentions: &'a [(u64, u64)],
    settings: &'a [(u64, Settings)],
}

/// Moves `list` past the entries of channels below `channel` and returns the prefix
/// of entries of `channel` (moving past them too).
fn entries_of<'a, T>(list: &mut &'a [(u64, T)], channel: u64) -> &'a [(u64, T)] {
    let below = list.iter().take_while(|(c, _)| *c < channel).count();
    let rest = &list[below..];
    let of = rest.iter().take_while(|(c, _)| *c == channel).count();
    let (mine, after) = rest.split_at(of);
    *list = after;
    mine
}

impl<'a> Iterator for States<'a> {
    type Item = StateRef<'a>;

    fn next(&mut self) -> Option<StateRef<'a>> {
        let layout = self.layout.as_ref()?;
        if self.next >= layout.len {
            return None;
        }
        let channel = layout.channel(self.data, self.next);
        let pos = layout.pos(self.data, self.next);
        self.next += 1;
        let epoch = entries_of(&mut self.epochs, channel)
            .first()
            .map_or(0, |e| e.1);
        let settings = entries_of(&mut self.settings, channel)
            .first()
            .map_or_else(Settings::default, |s| s.1);
        Some(StateRef {
            channel,
            read: ReadPos { epoch, pos },
            mentions: entries_of(&mut self.mentions, channel),
            settings,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.layout.map_or(0, |l| l.len - self.next);
        (left, Some(left))
    }
}

impl ExactSizeIterator for States<'_> {}

/// Whether an operation changed the stored state (and so needs a storage write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    Yes,
    No,
}

impl Changed {
    /// True for [`Changed::Yes`].
    pub fn is_yes(self) -> bool {
        self == Changed::Yes
    }
}

/// One read state, borrowed from [`UserStates`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateRef<'a> {
    pub channel: u64,
    pub read: ReadPos,
    /// Mention ids of this state, ascending.
    pub mentions: &'a [(u64, u64)],
    /// Notification settings.
    pub settings: Settings,
}

/// The header of an encoded user, parsed.
#[derive(Debug, Clone, Copy)]
struct Layout {
    base_channel: u64,
    base_pos: u64,
    channel_width: usize,
    pos_width: usize,
    /// Offset of the first record.
    start: usize,
    /// Number of records.
    len: usize,
}

/// The two widths a header byte holds: (low nibble, high nibble).
#[inline]
fn nibbles(byte: u8) -> (usize, usize) {
    (usize::from(byte & 0x0f), usize::from(byte >> 4))
}

impl Layout {
    /// The layout of `data`, `None` when it is empty (no state). Always inlined, as
    /// are `find_in` and `count_at_most`: as calls, the lookup of an ack passed this
    /// struct through memory and spilled registers three times (ack/10 402.6 -> 351.5
    /// instructions, ack/100 490.0 -> 447.0, for the three together).
    #[inline(always)]
    fn of(data: &[u8]) -> Option<Layout> {
        // An encoded user has both header bytes; an empty one has no state.
        let &[widths, bases, ..] = data else {
            return None;
        };
        let (channel_width, pos_width) = nibbles(widths);
        let (base_channel_width, base_pos_width) = nibbles(bases);
        let pos_at = 2 + base_channel_width;
        let start = pos_at + base_pos_width;
        Some(Layout {
            base_channel: read_le_at(data, 2, base_channel_width),
            base_pos: read_le_at(data, pos_at, base_pos_width),
            channel_width,
            pos_width,
            start,
            len: (data.len() - start) / (channel_width + pos_width),
        })
    }

    fn record(&self) -> usize {
        self.channel_width + self.pos_width
    }

    #[inline]
    fn channel(&self, data: &[u8], i: usize) -> u64 {
        let at = self.start + i * self.record();
        self.base_channel + read_le(&data[at..at + self.channel_width])
    }

    #[inline]
    fn pos(&self, data: &[u8], i: usize) -> u64 {
        self.base_pos + read_le(&data[self.pos_field(i)])
    }

    /// Where the position field of record `i` is in the data.
    #[inline]
    fn pos_field(&self, i: usize) -> std::ops::Range<usize> {
        let at = self.start + i * self.record() + self.channel_width;
        at..at + self.pos_width
    }

    /// Whether `(channel, pos)` can be stored without re-encoding.
    fn fits(&self, channel: u64, pos: u64) -> bool {
        channel >= self.base_channel
            && width_of(channel - self.base_channel) <= self.channel_width
            && self.fits_pos(pos)
    }

    fn fits_pos(&self, pos: u64) -> bool {
        pos >= self.base_pos && width_of(pos - self.base_pos) <= self.pos_width
    }

    /// Writes the record of `(channel, pos)` into `record` (a record's bytes); it
    /// must fit.
    fn write(&self, record: &mut [u8], channel: u64, pos: u64) {
        let (channel_field, pos_field) = record.split_at_mut(self.channel_width);
        write_le(channel_field, channel - self.base_channel);
        write_le(pos_field, pos - self.base_pos);
    }
}

/// Encodes `records` (ascending by channel, distinct) with the narrowest widths.
fn encode(records: &[(u64, u64)]) -> Box<[u8]> {
    encode_with(records.len(), |i| records[i])
}

/// Encodes the `len` records `record(0..len)` (ascending by channel, distinct) with
/// the narrowest widths. A re-encode reads the records from the old encoding through
/// `record` (twice each, and the first and last once more for the channel span), so
/// it allocates only the result rather than collecting the records first.
#[inline]
fn encode_with(len: usize, record: impl Fn(usize) -> (u64, u64)) -> Box<[u8]> {
    let Some(last) = len.checked_sub(1) else {
        return Box::default();
    };
    let (first_channel, last_channel) = (record(0).0, record(last).0);
    let (min_pos, max_pos) = (0..len).fold((u64::MAX, 0), |(lo, hi), i| {
        let pos = record(i).1;
        (lo.min(pos), hi.max(pos))
    });
    let layout = Layout {
        base_channel: first_channel,
        base_pos: min_pos,
        channel_width: width_of(last_channel - first_channel).max(1),
        pos_width: width_of(max_pos - min_pos),
        start: 0,
        len: 0,
    };
    // At least a byte each (channel ids are at least 1 anyway), so that reading a
    // base is a load and a shift.
    let (base_channel_width, base_pos_width) = (
        width_of(layout.base_channel).max(1),
        width_of(layout.base_pos).max(1),
    );
    let pos_at = 2 + base_channel_width;
    let header = pos_at + base_pos_width;
    // Written in place into a buffer of the exact length (one allocation, no growth).
    let mut out = vec![0u8; header + len * layout.record()].into_boxed_slice();
    // All four widths are at most 8, so each fits its nibble.
    out[0] = layout.channel_width as u8 | (layout.pos_width as u8) << 4;
    out[1] = base_channel_width as u8 | (base_pos_width as u8) << 4;
    write_le(&mut out[2..pos_at], layout.base_channel);
    write_le(&mut out[pos_at..header], layout.base_pos);
    for (i, field) in out[header..].chunks_exact_mut(layout.record()).enumerate() {
        let (channel, pos) = record(i);
        layout.write(field, channel, pos);
    }
    out
}

/// Re-encodes `data` (encoded as `layout` says) with the position of record `at`
/// set to `pos`, which does not fit `layout`'s position fields, as [`encode`] would
/// encode it. The common case is rewritten in place: the positions moved up together
/// and a new base brings them back into fields of the same width, while the channels,
/// which do not change, are already the narrowest (the first is the base and the span
/// needs the whole width; a removal keeps both, so after one they may not be). With
/// small ids, the positions of an active user outgrow their field every few hundred
/// acks. Anything else encodes the user afresh.
#[cold]
#[inline(never)]
fn with_pos(data: &mut Box<[u8]>, layout: &Layout, at: usize, pos: u64) {
    let pos_of = |data: &[u8], i: usize| if i == at { pos } else { layout.pos(data, i) };
    let (min_pos, max_pos) = (0..layout.len).fold((pos, pos), |(lo, hi), i| {
        let p = pos_of(data, i);
        (lo.min(p), hi.max(p))
    });
    // `at` exists, so there is a first and a last record.
    let span = layout.channel(data, layout.len - 1) - layout.base_channel;
    let channels_narrowest = layout.channel(data, 0) == layout.base_channel
        && width_of(span).max(1) == layout.channel_width;
    let (_, base_pos_width) = nibbles(data[1]);
    if channels_narrowest
        && width_of(max_pos - min_pos) == layout.pos_width
        && width_of(min_pos).max(1) == base_pos_width
    {
        // Each position is read under the old base (kept in `layout`) and written
        // under the new one.
        for i in 0..layout.len {
            let p = pos_of(data, i);
            write_le(&mut data[layout.pos_field(i)], p - min_pos);
        }
        write_le(
            &mut data[layout.start - base_pos_width..layout.start],
            min_pos,
        );
        return;
    }
    let old: &[u8] = data;
    let fresh = encode_with(layout.len, |i| (layout.channel(old, i), pos_of(old, i)));
    *data = fresh;
}

/// Every read state of one user, sorted by channel id (see the module's encoding).
///
/// Two words: the encoding's boxed slice, or, for the few users with rare parts, one
/// box holding both (the enum keeps its tag in the slice pointer's niche). A cache
/// entry of every user pays for that size, so the side allocation's pointer is not a
/// third word that almost every user would carry as null.
#[derive(Clone)]
pub struct UserStates(Repr);

#[derive(Clone)]
enum Repr {
    /// The header and the records; empty (no allocation) when the user has no state.
    Plain(Box<[u8]>),
    /// The encoding and the rare parts, which are never empty here.
    Rare(Box<Rare>),
}

#[derive(Clone, Default)]
struct Rare {
    data: Box<[u8]>,
    extras: Extras,
}

impl Default for UserStates {
    fn default() -> Self {
        UserStates(Repr::Plain(Box::default()))
    }
}

const _: () = assert!(
    std::mem::size_of::<UserStates>() == 16,
    "a user's states are two words"
);

/// Equal when the states are: two encodings of the same states (say one written in
/// place, the other re-encoded) are equal.
impl PartialEq for UserStates {
    fn eq(&self, other: &Self) -> bool {
        let extras = |u: &Self| u.extras().filter(|x| !x.is_empty()).cloned();
        self.len() == other.len()
            && self.records().eq(other.records())
            && extras(self) == extras(other)
    }
}

impl Eq for UserStates {}

impl std::fmt::Debug for UserStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl UserStates {
    /// A user with no read states.
    pub fn new() -> Self {
        Self::default()
    }

    /// The states of `reads` (in any order; repeats merge by maximum), built with one
    /// allocation: how a user is loaded from storage.
    pub fn from_reads(mut reads: Vec<(u64, ReadPos)>) -> Self {
        reads.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        reads.dedup_by_key(|(channel, _)| *channel);
        let records: Vec<(u64, u64)> = reads.iter().map(|(c, r)| (*c, r.pos)).collect();
        let epochs: Vec<(u64, u64)> = reads
            .iter()
            .filter(|(_, r)| r.epoch != 0)
            .map(|(c, r)| (*c, r.epoch))
            .collect();
        let data = encode(&records);
        if epochs.is_empty() {
            return UserStates(Repr::Plain(data));
        }
        UserStates(Repr::Rare(Box::new(Rare {
            data,
            extras: Extras {
                epochs,
                ..Extras::default()
            },
        })))
    }

    /// The encoding (header and records).
    #[inline(always)]
    fn data(&self) -> &[u8] {
        match &self.0 {
            Repr::Plain(data) => data,
            Repr::Rare(rare) => &rare.data,
        }
    }

    /// The encoding, to write or replace.
    #[inline(always)]
    fn data_mut(&mut self) -> &mut Box<[u8]> {
        match &mut self.0 {
            Repr::Plain(data) => data,
            Repr::Rare(rare) => &mut rare.data,
        }
    }

    /// The rare parts, if the user has any.
    fn extras(&self) -> Option<&Extras> {
        match &self.0 {
            Repr::Plain(_) => None,
            Repr::Rare(rare) => Some(&rare.extras),
        }
    }

    /// The rare parts, to change, if the user has any.
    fn extras_if_any_mut(&mut self) -> Option<&mut Extras> {
        match &mut self.0 {
            Repr::Plain(_) => None,
            Repr::Rare(rare) => Some(&mut rare.extras),
        }
    }

    /// The rare parts, allocated when the user has none; call
    /// [`UserStates::drop_empty_extras`] after anything that may empty them.
    fn extras_mut(&mut self) -> &mut Extras {
        if let Repr::Plain(data) = &mut self.0 {
            let data = std::mem::take(data);
            self.0 = Repr::Rare(Box::new(Rare {
                data,
                extras: Extras::default(),
            }));
        }
        match &mut self.0 {
            Repr::Rare(rare) => &mut rare.extras,
            Repr::Plain(_) => unreachable!("a plain user was made rare just above"),
        }
    }

    /// Goes back to the plain form when the rare parts became empty.
    fn drop_empty_extras(&mut self) {
        if let Repr::Rare(rare) = &mut self.0
            && rare.extras.is_empty()
        {
            let data = std::mem::take(&mut rare.data);
            self.0 = Repr::Plain(data);
        }
    }

    /// Number of read states.
    pub fn len(&self) -> usize {
        // From the two header bytes alone, without reading the bases.
        let data = self.data();
        let &[widths, bases, ..] = data else {
            return 0;
        };
        let ((channel_width, pos_width), (base_channel_width, base_pos_width)) =
            (nibbles(widths), nibbles(bases));
        let start = 2 + base_channel_width + base_pos_width;
        (data.len() - start) / (channel_width + pos_width)
    }

    /// True when the user has no read state.
    pub fn is_empty(&self) -> bool {
        self.data().is_empty()
    }

    /// `(channel, pos)` of every state, ascending by channel.
    fn records(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let data = self.data();
        Layout::of(data)
            .into_iter()
            .flat_map(move |l| (0..l.len).map(move |i| (l.channel(data, i), l.pos(data, i))))
    }

    /// Where `channel` is (`Ok`) or would go (`Err`) among the states `layout`
    /// describes, in `data` (this user's encoding, read once by the caller). Always
    /// inlined (see [`Layout::of`]).
    #[inline(always)]
    fn find_in(data: &[u8], layout: &Layout, channel: u64) -> Result<usize, usize> {
        if channel < layout.base_channel {
            return Err(0);
        }
        let key = channel - layout.base_channel;
        if width_of(key) > layout.channel_width {
            return Err(layout.len);
        }
        let at_most = count_at_most(
            data,
            layout.start,
            layout.record(),
            layout.channel_width,
            layout.len,
            key,
        );
        match at_most.checked_sub(1) {
            Some(last) if layout.channel(data, last) == channel => Ok(last),
            _ => Err(at_most),
        }
    }

    fn find(&self, channel: u64) -> Result<usize, usize> {
        let data = self.data();
        match Layout::of(data) {
            Some(layout) => Self::find_in(data, &layout, channel),
            None => Err(0),
        }
    }

    /// Sets the position of the state at `at` (which exists) of `layout` (this user's):
    /// in place when it fits, by re-encoding otherwise.
    fn set_pos(&mut self, layout: &Layout, at: usize, pos: u64) {
        if layout.fits_pos(pos) {
            write_le(
                &mut self.data_mut()[layout.pos_field(at)],
                pos - layout.base_pos,
            );
        } else {
            with_pos(self.data_mut(), layout, at, pos);
        }
    }

    /// Inserts the state `(channel, pos)` at index `at` (where `find` said it goes).
    fn insert_at(&mut self, at: usize, channel: u64, pos: u64) {
        let data = self.data();
        match Layout::of(data) {
            Some(layout) if layout.fits(channel, pos) => {
                let split = layout.start + at * layout.record();
                let end = split + layout.record();
                let mut out = vec![0u8; data.len() + layout.record()].into_boxed_slice();
                out[..split].copy_from_slice(&data[..split]);
                layout.write(&mut out[split..end], channel, pos);
                out[end..].copy_from_slice(&data[split..]);
                *self.data_mut() = out;
            }
            Some(layout) => {
                let old = |i: usize| (layout.channel(data, i), layout.pos(data, i));
                *self.data_mut() = encode_with(layout.len + 1, |i| match i.cmp(&at) {
                    std::cmp::Ordering::Less => old(i),
                    std::cmp::Ordering::Equal => (channel, pos),
                    std::cmp::Ordering::Greater => old(i - 1),
                });
            }
            None => *self.data_mut() = encode(&[(channel, pos)]),
        }
    }

    /// Removes the record at `at` (which exists), keeping the widths.
    fn remove_at(&mut self, at: usize) {
        let data = self.data();
        let Some(layout) = Layout::of(data) else {
            return;
        };
        if layout.len == 1 {
            *self.data_mut() = Box::default();
            return;
        }
        let split = layout.start + at * layout.record();
        let mut out = Vec::with_capacity(data.len() - layout.record());
        out.extend_from_slice(&data[..split]);
        out.extend_from_slice(&data[split + layout.record()..]);
        *self.data_mut() = out.into_boxed_slice();
    }

    fn epoch_of(&self, channel: u64) -> u64 {
        let Some(extras) = self.extras() else {
            return 0;
        };
        extras
            .epochs
            .binary_search_by_key(&channel, |(c, _)| *c)
            .map_or(0, |at| extras.epochs[at].1)
    }

    fn set_epoch(&mut self, channel: u64, epoch: u64) {
        let extras = self.extras_mut();
        match extras.epochs.binary_search_by_key(&channel, |(c, _)| *c) {
            Ok(at) => extras.epochs[at].1 = epoch,
            Err(at) => extras.epochs.insert(at, (channel, epoch)),
        }
    }

    fn settings_of(&self, channel: u64) -> Settings {
        let Some(extras) = self.extras() else {
            return Settings::default();
        };
        extras
            .settings
            .binary_search_by_key(&channel, |(c, _)| *c)
            .map_or_else(|_| Settings::default(), |at| extras.settings[at].1)
    }

    fn mention_range(&self, channel: u64) -> &[(u64, u64)] {
        let Some(extras) = self.extras() else {
            return &[];
        };
        let lo = extras.mentions.partition_point(|(c, _)| *c < channel);
        let hi = extras.mentions.partition_point(|(c, _)| *c <= channel);
        &extras.mentions[lo..hi]
    }

    /// The read state of `channel`, if the user has one.
    pub fn get(&self, channel: u64) -> Option<StateRef<'_>> {
        let data = self.data();
        let layout = Layout::of(data)?;
        let at = Self::find_in(data, &layout, channel).ok()?;
        Some(self.state(channel, layout.pos(data, at)))
    }

    fn state(&self, channel: u64, pos: u64) -> StateRef<'_> {
        StateRef {
            channel,
            read: ReadPos {
                epoch: self.epoch_of(channel),
                pos,
            },
            mentions: self.mention_range(channel),
            settings: self.settings_of(channel),
        }
    }

    /// Every read state, ascending by channel.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = StateRef<'_>> + '_ {
        let (data, extras) = (self.data(), self.extras());
        States {
            data,
            layout: Layout::of(data),
            next: 0,
            epochs: extras.map_or(&[], |x| &x.epochs),
            mentions: extras.map_or(&[], |x| &x.mentions),
            settings: extras.map_or(&[], |x| &x.settings),
        }
    }

    /// Channel ids of every read state, ascending.
    pub fn channels(&self) -> impl Iterator<Item = u64> + '_ {
        self.records().map(|(channel, _)| channel)
    }

    /// Creates the state at `read` if missing. Returns the index and whether it was created.
    fn ensure(&mut self, channel: u64, read: ReadPos) -> (usize, Changed) {
        match self.find(channel) {
            Ok(at) => (at, Changed::No),
            Err(at) => {
                self.insert_at(at, channel, read.pos);
                if read.epoch != 0 {
                    self.set_epoch(channel, read.epoch);
                }
                (at, Changed::Yes)
            }
        }
    }

    /// Merges a read position in: the state becomes the lexicographic max of the
    /// two (created at `read` when missing). This is also how storage merges rows.
    pub fn merge_read(&mut self, channel: u64, read: ReadPos) -> Changed {
        // The encoding is read and its header parsed once for the lookup, the
        // comparison and the write.
        let data = self.data();
        let found = Layout::of(data)
            .and_then(|layout| Some((layout, Self::find_in(data, &layout, channel).ok()?)));
        let Some((layout, at)) = found else {
            return self.ensure(channel, read).1;
        };
        let pos = layout.pos(data, at);
        let current = ReadPos {
            epoch: self.epoch_of(channel),
            pos,
        };
        if read <= current {
            return Changed::No;
        }
        self.set_pos(&layout, at, read.pos);
        if read.epoch != current.epoch {
            self.set_epoch(channel, read.epoch);
        }
        Changed::Yes
    }

    /// Ack: the read position moves forward to `message` within the current epoch,
    /// never backward. An ack stamped `at` before the current epoch is stale (it was
    /// sent before the latest mark unread) and is ignored. Returns the merged position
    /// to persist, if anything changed.
    pub fn ack(&mut self, channel: u64, message: u64, at: Option<u64>) -> Option<ReadPos> {
        let epoch = self.epoch_of(channel);
        if at.is_some_and(|at| at < epoch) {
            // Creation still applies: a state that did not exist has epoch 0.
            return None;
        }
        let read = ReadPos {
            epoch,
            pos: message,
        };
        self.merge_read(channel, read).is_yes().then_some(read)
    }

    /// Mark unread: the position becomes `message - 1` in a new epoch after `now`
    /// and after the current epoch. Marking the same message unread again is a no-op.
    pub fn mark_unread(&mut self, channel: u64, message: u64, now: u64) -> Option<ReadPos> {
        let target = message - 1;
        let current = self.get(channel).map(|s| s.read);
        if current.is_some_and(|c| c.pos == target && c.epoch != 0) {
            return None;
        }
        let epoch = now.max(current.map_or(0, |c| c.epoch + 1)).max(1);
        let read = ReadPos { epoch, pos: target };
        self.merge_read(channel, read);
        Some(read)
    }

    /// Join: creates the state at `read` unless one exists.
    pub fn join(&mut self, channel: u64, read: ReadPos) -> Changed {
        self.ensure(channel, read).1
    }

    /// Adds a mention (creating the state at position 0 when missing), keeping the
    /// newest `window` mention ids of the state. Returns whether anything changed.
    pub fn add_mention(&mut self, channel: u64, message: u64, window: usize) -> Changed {
        let created = self.ensure(channel, ReadPos::default()).1;
        let extras = self.extras_mut();
        let lo = extras.mentions.partition_point(|(c, _)| *c < channel);
        let hi = extras.mentions.partition_point(|(c, _)| *c <= channel);
        let ids = &extras.mentions[lo..hi];
        let inserted = match ids.binary_search_by_key(&message, |(_, m)| *m) {
            Ok(_) => false,
            Err(_) if ids.len() >= window && message < ids[0].1 => false,
            Err(at) => {
                extras.mentions.insert(lo + at, (channel, message));
                if hi + 1 - lo > window {
                    extras.mentions.remove(lo);
                }
                true
            }
        };
        self.drop_empty_extras();
        if inserted || created.is_yes() {
            Changed::Yes
        } else {
            Changed::No
        }
    }

    /// Leave: removes the state and its mentions.
    pub fn remove(&mut self, channel: u64) -> Changed {
        let Ok(at) = self.find(channel) else {
            return Changed::No;
        };
        self.remove_at(at);
        if let Some(extras) = self.extras_if_any_mut() {
            extras.epochs.retain(|(c, _)| *c != channel);
            extras.mentions.retain(|(c, _)| *c != channel);
            extras.settings.retain(|(c, _)| *c != channel);
            self.drop_empty_extras();
        }
        Changed::Yes
    }

    /// Merges settings into the state of `channel`, creating the state at `read` when
    /// missing. Returns the merged settings and whether the state was created, when
    /// anything changed.
    pub fn merge_settings(
        &mut self,
        channel: u64,
        settings: &Settings,
        read: ReadPos,
    ) -> Option<(Settings, Changed)> {
        let created = self.ensure(channel, read).1;
        let mut merged = self.settings_of(channel);
        let changed = merged.merge(settings);
        if changed {
            let extras = self.extras_mut();
            match extras.settings.binary_search_by_key(&channel, |(c, _)| *c) {
                Ok(at) => extras.settings[at].1 = merged,
                Err(at) => extras.settings.insert(at, (channel, merged)),
            }
        }
        (changed || created.is_yes()).then_some((merged, created))
    }

    /// Removes every read state (deleting the user). Returns the channels that had one.
    pub fn clear(&mut self) -> Vec<u64> {
        let channels = self.channels().collect();
        *self = UserStates::new();
        channels
    }

    /// Drops spare capacity of the side allocation (the records never have any).
    pub fn shrink(&mut self) {
        if let Some(extras) = self.extras_if_any_mut() {
            extras.epochs.shrink_to_fit();
            extras.mentions.shrink_to_fit();
            extras.settings.shrink_to_fit();
        }
    }

    /// Heap bytes this value owns (for the cache's byte budget).
    pub fn heap_bytes(&self) -> usize {
        // Each allocation as its allocator size class (`allocated`).
        let rare = self.extras().map_or(0, |x| {
            allocated(std::mem::size_of::<Rare>())
                + allocated(x.epochs.capacity() * std::mem::size_of::<(u64, u64)>())
                + allocated(x.mentions.capacity() * std::mem::size_of::<(u64, u64)>())
                + allocated(x.settings.capacity() * std::mem::size_of::<(u64, Settings)>())
        });
        allocated(self.data().len()) + rare
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn ack_never_moves_the_read_position_backwards() {
        let mut u = UserStates::new();
        assert!(u.ack(1, 100, None).is_some());
        assert!(u.ack(1, 90, None).is_none());
        assert_eq!(u.get(1).map(|s| s.read.pos), Some(100));
    }

    #[test]
    fn an_ack_stamped_before_a_mark_unread_is_ignored() {
        let mut u = UserStates::new();
        u.ack(1, 100, Some(10));
        let read = u.mark_unread(1, 50, 20);
        assert_eq!(read, Some(ReadPos { epoch: 20, pos: 49 }));
        assert!(u.ack(1, 100, Some(15)).is_none());
        assert_eq!(u.get(1).map(|s| s.read.pos), Some(49));
        assert!(u.ack(1, 100, Some(25)).is_some());
        assert_eq!(
            u.get(1).map(|s| s.read),
            Some(ReadPos {
                epoch: 20,
                pos: 100
            })
        );
    }

    #[test]
    fn mentions_keep_the_newest_window_per_channel() {
        let mut u = UserStates::new();
        for m in [5, 1, 9, 3, 7] {
            u.add_mention(2, m, 3);
        }
        u.add_mention(1, 4, 3);
        let ids: Vec<u64> = u
            .get(2)
            .map(|s| s.mentions.iter().map(|(_, m)| *m).collect())
            .unwrap_or_default();
        assert_eq!(ids, vec![5, 7, 9]);
        assert_eq!(u.add_mention(2, 2, 3), Changed::No);
        assert_eq!(u.remove(2), Changed::Yes);
        assert_eq!(u.get(1).map(|s| s.mentions.len()), Some(1));
    }

    /// What a user's states must be, kept the plain way: a map of channel to
    /// position, mention ids and settings.
    #[derive(Debug, Default)]
    struct Plain(std::collections::BTreeMap<u64, (ReadPos, Vec<u64>, Settings)>);

    impl Plain {
        fn merge_read(&mut self, channel: u64, read: ReadPos) -> Changed {
            match self.0.get_mut(&channel) {
                None => {
                    self.0
                        .insert(channel, (read, Vec::new(), Settings::default()));
                    Changed::Yes
                }
                Some(state) if read > state.0 => {
                    state.0 = read;
                    Changed::Yes
                }
                Some(_) => Changed::No,
            }
        }

        fn epoch(&self, channel: u64) -> u64 {
            self.0.get(&channel).map_or(0, |s| s.0.epoch)
        }

        fn states(&self) -> Vec<(u64, ReadPos, Vec<u64>, Settings)> {
            self.0
                .iter()
                .map(|(c, (r, m, s))| (*c, *r, m.clone(), *s))
                .collect()
        }
    }

    fn compact(u: &UserStates) -> Vec<(u64, ReadPos, Vec<u64>, Settings)> {
        u.iter()
            .map(|s| {
                let mentions = s.mentions.iter().map(|(_, m)| *m).collect();
                (s.channel, s.read, mentions, s.settings)
            })
            .collect()
    }

    #[derive(Debug, Clone)]
    enum Step {
        Read(u64, ReadPos),
        Ack(u64, u64, Option<u64>),
        Unread(u64, u64, u64),
        Join(u64, ReadPos),
        Mention(u64, u64),
        Remove(u64),
        Settings(u64, u64, ReadPos),
    }

    /// Ids that exercise every width: small ones, ones near 2^63, and anything between.
    fn an_id() -> impl Strategy<Value = u64> {
        prop_oneof![
            3 => 1..40u64,
            1 => (super::super::ids::MAX_ID - 40)..=super::super::ids::MAX_ID,
            1 => 1..=super::super::ids::MAX_ID,
            1 => (1u64 << 20)..(1u64 << 20) + 300,
        ]
    }

    fn a_pos() -> impl Strategy<Value = u64> {
        prop_oneof![3 => 0..300u64, 1 => an_id()]
    }

    fn a_read() -> impl Strategy<Value = ReadPos> {
        (prop_oneof![3 => Just(0u64), 1 => 1..1_000u64], a_pos())
            .prop_map(|(epoch, pos)| ReadPos { epoch, pos })
    }

    fn a_step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (an_id(), a_read()).prop_map(|(c, r)| Step::Read(c, r)),
            4 => (an_id(), a_pos(), proptest::option::of(0..1_000u64))
                .prop_map(|(c, m, at)| Step::Ack(c, m, at)),
            1 => (an_id(), 1..=super::super::ids::MAX_ID, 0..1_000u64)
                .prop_map(|(c, m, now)| Step::Unread(c, m, now)),
            2 => (an_id(), a_read()).prop_map(|(c, r)| Step::Join(c, r)),
            2 => (an_id(), an_id()).prop_map(|(c, m)| Step::Mention(c, m)),
            2 => an_id().prop_map(Step::Remove),
            1 => (an_id(), 0..1_000u64, a_read()).prop_map(|(c, at, r)| Step::Settings(c, at, r)),
        ]
    }

    const WINDOW: usize = 3;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// The compact encoding holds exactly what a plain map holds, whatever the
        /// ids and positions (each re-encoding, in-place write and removal is hit),
        /// and a user rebuilt from its positions equals the original.
        #[test]
        fn the_compact_encoding_behaves_as_a_plain_map(steps in proptest::collection::vec(a_step(), 0..60)) {
            let mut u = UserStates::new();
            let mut plain = Plain::default();
            for step in steps {
                match step {
                    Step::Read(c, r) => {
                        prop_assert_eq!(u.merge_read(c, r), plain.merge_read(c, r));
                    }
                    Step::Ack(c, m, at) => {
                        let epoch = plain.epoch(c);
                        let expected = if at.is_some_and(|at| at < epoch) {
                            None
                        } else {
                            let read = ReadPos { epoch, pos: m };
                            plain.merge_read(c, read).is_yes().then_some(read)
                        };
                        prop_assert_eq!(u.ack(c, m, at), expected);
                    }
                    Step::Unread(c, m, now) => {
                        let current = plain.0.get(&c).map(|s| s.0);
                        let expected = if current.is_some_and(|r| r.pos == m - 1 && r.epoch != 0) {
                            None
                        } else {
                            let epoch = now.max(current.map_or(0, |r| r.epoch + 1)).max(1);
                            let read = ReadPos { epoch, pos: m - 1 };
                            plain.merge_read(c, read);
                            Some(read)
                        };
                        prop_assert_eq!(u.mark_unread(c, m, now), expected);
                    }
                    Step::Join(c, r) => {
                        let expected = if plain.0.contains_key(&c) {
                            Changed::No
                        } else {
                            plain.merge_read(c, r)
                        };
                        prop_assert_eq!(u.join(c, r), expected);
                    }
                    Step::Mention(c, m) => {
                        let created = !plain.0.contains_key(&c);
                        let ids = &mut plain.0.entry(c).or_default().1;
                        let full_and_older = ids.len() >= WINDOW && m < ids[0];
                        let inserted = !(ids.contains(&m) || full_and_older);
                        if inserted {
                            ids.push(m);
                            ids.sort_unstable();
                            if ids.len() > WINDOW {
                                ids.remove(0);
                            }
                        }
                        let expected = if inserted || created { Changed::Yes } else { Changed::No };
                        prop_assert_eq!(u.add_mention(c, m, WINDOW), expected);
                    }
                    Step::Remove(c) => {
                        let expected = if plain.0.remove(&c).is_some() { Changed::Yes } else { Changed::No };
                        prop_assert_eq!(u.remove(c), expected);
                    }
                    Step::Settings(c, at, r) => {
                        let settings = Settings { muted_until: at + 1, muted_at: at, ..Settings::default() };
                        let created = !plain.0.contains_key(&c);
                        let state = plain.0.entry(c).or_insert((r, Vec::new(), Settings::default()));
                        let changed = state.2.merge(&settings);
                        let expected = (changed || created)
                            .then_some((state.2, if created { Changed::Yes } else { Changed::No }));
                        prop_assert_eq!(u.merge_settings(c, &settings, r), expected);
                    }
                }
                prop_assert_eq!(compact(&u), plain.states());
                // The iterator walks the side lists; `get` searches them.
                prop_assert_eq!(u.iter().len(), plain.0.len());
                for s in u.iter() {
                    prop_assert_eq!(u.get(s.channel), Some(s));
                }
                prop_assert_eq!(u.len(), plain.0.len());
                prop_assert_eq!(u.is_empty(), plain.0.is_empty());
            }
            let reads: Vec<(u64, ReadPos)> = u.iter().map(|s| (s.channel, s.read)).collect();
            let mut reloaded = UserStates::from_reads(reads.iter().rev().copied().collect());
            for s in u.iter() {
                for (_, m) in s.mentions {
                    reloaded.add_mention(s.channel, *m, WINDOW);
                }
                reloaded.merge_settings(s.channel, &s.settings, s.read);
            }
            prop_assert_eq!(&reloaded, &u);
            prop_assert_eq!(compact(&reloaded), compact(&u));
        }
    }

    #[test]
    fn ten_small_states_take_four_bytes_each_and_a_short_header() {
        let mut u = UserStates::new();
        for c in 0..10u64 {
            u.merge_read(
                1_000 + c * 20_000,
                ReadPos {
                    epoch: 0,
                    pos: c * 2,
                },
            );
        }
        // Channels span 180,000 (3 bytes), positions 18 (1 byte); header: the
        // widths, base channel 1,000 (2 bytes), base position 0 (1 byte).
        assert_eq!(u.heap_bytes(), allocated(4 + 10 * 4));
        // An ack past what one byte holds widens every record by one byte.
        assert!(u.ack(1_000, 1_000, None).is_some());
        assert_eq!(u.heap_bytes(), allocated(4 + 10 * 5));
        assert_eq!(u.get(1_000).map(|s| s.read.pos), Some(1_000));
        assert_eq!(u.get(21_000).map(|s| s.read.pos), Some(2));
    }

    /// A position that outgrows its field re-encodes the user as `encode` would, also
    /// after a removal left the channels' base or width wider than they need.
    #[test]
    fn rare_parts_move_the_user_to_the_boxed_form_and_back_when_they_go() {
        let read = |pos| ReadPos { epoch: 0, pos };
        let mut u = UserStates::from_reads(vec![(5, read(10)), (9, read(12))]);
        let plain = u.heap_bytes();
        assert!(matches!(u.0, Repr::Plain(_)));
        assert!(u.add_mention(9, 20, 8).is_yes());
        assert!(matches!(u.0, Repr::Rare(_)), "a mention is a rare part");
        assert!(u.heap_bytes() > plain, "the box and the list are counted");
        assert_eq!(u.get(5).map(|s| s.read.pos), Some(10), "records kept");
        assert!(u.ack(9, 30, None).is_some());
        assert_eq!(u.get(9).map(|s| s.mentions), Some(&[(9, 20)][..]));
        assert!(u.mark_unread(5, 8, 1_000).is_some());
        assert!(u.remove(9).is_yes());
        assert!(matches!(u.0, Repr::Rare(_)), "channel 5's epoch is left");
        assert_eq!(
            u.get(5).map(|s| s.read),
            Some(ReadPos {
                epoch: 1_000,
                pos: 7
            })
        );
        assert!(u.remove(5).is_yes());
        assert!(matches!(u.0, Repr::Plain(_)), "nothing rare is left");
        assert!(u.is_empty());
        assert_eq!(u.heap_bytes(), 0);
        // Loading a user with an epoch builds the boxed form directly.
        let loaded = UserStates::from_reads(vec![(5, ReadPos { epoch: 3, pos: 1 })]);
        assert!(matches!(loaded.0, Repr::Rare(_)));
        assert_eq!(loaded.get(5).map(|s| s.read.epoch), Some(3));
    }

    #[test]
    fn a_position_that_outgrows_its_field_re_encodes_as_encode_would() {
        let read = |pos| ReadPos { epoch: 0, pos };
        // Channels as narrow as can be: only the positions are rewritten.
        let mut u = UserStates::from_reads(vec![(5, read(10)), (9, read(12))]);
        assert!(u.ack(9, 10_000, None).is_some());
        let fresh = UserStates::from_reads(vec![(5, read(10)), (9, read(10_000))]);
        assert_eq!(u.data(), fresh.data());
        // Positions that a new base brings back into their fields: rewritten in place.
        let mut u = UserStates::from_reads(vec![(5, read(1_000)), (9, read(1_200))]);
        let before = u.data().as_ptr();
        assert!(u.ack(5, 1_400, None).is_some());
        let moved = UserStates::from_reads(vec![(5, read(1_400)), (9, read(1_200))]);
        assert_eq!(u.data(), moved.data());
        assert_eq!(u.data().as_ptr(), before, "rewritten in place");
        // A removal keeps the widths: channel 70,000 took the channel fields to 3
        // bytes and its removal leaves them so; the next re-encode narrows them.
        let mut u = UserStates::from_reads(vec![(5, read(10)), (9, read(12)), (70_000, read(11))]);
        assert!(u.remove(70_000).is_yes());
        assert_eq!(
            u.data().len(),
            4 + 2 * 4,
            "3-byte channel fields after the removal"
        );
        assert!(u.ack(9, 10_000, None).is_some());
        assert_eq!(u.data(), fresh.data());
        // And when the first channel, the base, is the one removed.
        let mut u = UserStates::from_reads(vec![(2, read(10)), (5, read(10)), (9, read(12))]);
        assert!(u.remove(2).is_yes());
        assert!(u.ack(9, 10_000, None).is_some());
        assert_eq!(u.data(), fresh.data());
        assert_eq!(u.get(5).map(|s| s.read.pos), Some(10));
    }
}
