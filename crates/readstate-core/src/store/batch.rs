//! How a commit batch is written: split into segments of merges at the
//! order-sensitive removals (leave, delete channel), each segment combined in memory
//! first (max of read positions, sticky tombstones, set of mentions), so a backend
//! writes one statement per table per segment. Shared by every backend.

use std::collections::{BTreeMap, BTreeSet};

use super::Write;
use crate::domain::ReadPos;

/// One step of a commit: a segment of merges, or one order-sensitive removal.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Merge(Segment),
    Remove(Write),
}

/// Merge writes between two removals, combined in memory first: the lexicographic
/// max of read positions per state, sticky tombstones per message, a set of mentions.
/// Sorted maps so rows reach the database in primary key order.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Segment {
    pub reads: BTreeMap<(u64, u64), ReadPos>,
    pub messages: BTreeMap<(u64, u64), bool>,
    pub mentions: BTreeSet<(u64, u64, u64)>,
}

impl Segment {
    pub fn add(&mut self, w: &Write) {
        match *w {
            Write::ReadPos {
                user,
                channel,
                epoch,
                pos,
            } => {
                let read = ReadPos { epoch, pos };
                let e = self.reads.entry((user, channel)).or_insert(read);
                *e = (*e).max(read);
            }
            Write::Mention {
                user,
                channel,
                message,
            } => {
                self.mentions.insert((user, channel, message));
            }
            Write::Message {
                channel,
                message,
                deleted,
            } => {
                *self.messages.entry((channel, message)).or_insert(deleted) |= deleted;
            }
            Write::Leave { .. } | Write::DeleteChannel { .. } => {}
        }
    }

    pub fn is_empty(&self) -> bool {
        self.reads.is_empty() && self.messages.is_empty() && self.mentions.is_empty()
    }

    /// Channels with message rows, ascending, once each.
    pub fn channels(&self) -> Vec<u64> {
        let mut out: Vec<u64> = self.messages.keys().map(|&(c, _)| c).collect();
        out.dedup();
        out
    }

    /// Read states with mentions, ascending, once each.
    pub fn mentioned_states(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = self.mentions.iter().map(|&(u, c, _)| (u, c)).collect();
        out.dedup();
        out
    }

    /// Every read state the segment creates or raises: the read positions, plus the
    /// mentioned states at position (0, 0) (which creates them and never lowers one).
    pub fn states(&self) -> BTreeMap<(u64, u64), ReadPos> {
        let mut out = self.reads.clone();
        for key in self.mentioned_states() {
            out.entry(key).or_default();
        }
        out
    }
}

/// Splits `writes` into segments of merges separated by removals, in order.
pub(crate) fn steps(writes: &[Write]) -> Vec<Step> {
    let mut out = Vec::new();
    let mut segment = Segment::default();
    for w in writes {
        if matches!(w, Write::Leave { .. } | Write::DeleteChannel { .. }) {
            // A removal orders against everything before and after it.
            if !segment.is_empty() {
                out.push(Step::Merge(std::mem::take(&mut segment)));
            }
            out.push(Step::Remove(*w));
        } else {
            segment.add(w);
        }
    }
    if !segment.is_empty() {
        out.push(Step::Merge(segment));
    }
    out
}

impl Segment {
    /// Rows this segment writes (read positions, message ids, mention ids).
    pub fn rows(&self) -> usize {
        self.reads.len() + self.messages.len() + self.mentions.len()
    }

    /// Splits the segment into pieces of at most `max_rows` rows, in key order. The
    /// pieces hold merges only, so applying them one after another (in any order)
    /// equals applying the whole segment.
    fn split(self, max_rows: usize) -> Vec<Segment> {
        let max_rows = max_rows.max(1);
        let mut out = vec![Segment::default()];
        fn room(out: &mut Vec<Segment>, max_rows: usize) -> &mut Segment {
            if out.last().is_some_and(|s| s.rows() >= max_rows) {
                out.push(Segment::default());
            }
            out.last_mut()
                .expect("out is never empty: it starts with one segment")
        }
        for (k, v) in self.reads {
            room(&mut out, max_rows).reads.insert(k, v);
        }
        for (k, v) in self.messages {
            room(&mut out, max_rows).messages.insert(k, v);
        }
        for k in self.mentions {
            room(&mut out, max_rows).mentions.insert(k);
        }
        out.retain(|s| !s.is_empty());
        out
    }
}

/// The steps of `writes` (see [`steps`]) grouped into transactions of at most about
/// `max_rows` rows each, in order: a segment larger than that is split, a removal
/// counts as one row. Applying the chunks one after another, each in its own
/// transaction, leaves the database as one transaction of all of them would, and a
/// prefix of them is what a crash between two chunks leaves behind: applying every
/// chunk again from the start over it still gives that same result (merges are
/// idempotent, and each removal comes again after whatever it removed).
pub(crate) fn chunks(writes: &[Write], max_rows: usize) -> Vec<Vec<Step>> {
    let max_rows = max_rows.max(1);
    let mut out: Vec<Vec<Step>> = Vec::new();
    let mut current: Vec<Step> = Vec::new();
    let mut rows = 0;
    let mut push = |step: Step, n: usize, current: &mut Vec<Step>, rows: &mut usize| {
        if *rows > 0 && *rows + n > max_rows {
            out.push(std::mem::take(current));
            *rows = 0;
        }
        *rows += n;
        current.push(step);
    };
    for step in steps(writes) {
        match step {
            Step::Merge(segment) => {
                for piece in segment.split(max_rows) {
                    let n = piece.rows();
                    push(Step::Merge(piece), n, &mut current, &mut rows);
                }
            }
            Step::Remove(w) => push(Step::Remove(w), 1, &mut current, &mut rows),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn read(user: u64, channel: u64, pos: u64) -> Write {
        Write::ReadPos {
            user,
            channel,
            epoch: 0,
            pos,
        }
    }

    /// Every row of `steps`' merges, and its removals in order.
    fn flatten(chunks: &[Vec<Step>]) -> (Segment, Vec<Write>) {
        let mut all = Segment::default();
        let mut removals = Vec::new();
        for step in chunks.iter().flatten() {
            match step {
                Step::Merge(s) => {
                    all.reads.extend(s.reads.iter().map(|(k, v)| (*k, *v)));
                    all.messages
                        .extend(s.messages.iter().map(|(k, v)| (*k, *v)));
                    all.mentions.extend(s.mentions.iter().copied());
                }
                Step::Remove(w) => removals.push(*w),
            }
        }
        (all, removals)
    }

    #[test]
    fn chunks_hold_at_most_max_rows_and_keep_every_row_once_in_order() {
        let mut writes: Vec<Write> = (0..25).map(|i| read(i, 1, i + 1)).collect();
        writes.push(read(3, 1, 100)); // merged with (3, 1) in memory first
        writes.push(Write::Leave {
            user: 9,
            channel: 1,
        });
        writes.extend((0..7).map(|i| Write::Message {
            channel: 2,
            message: i,
            deleted: false,
        }));
        writes.extend((0..4).map(|i| Write::Mention {
            user: 1,
            channel: 2,
            message: i,
        }));
        let chunks = chunks(&writes, 10);
        for chunk in &chunks {
            let rows: usize = chunk
                .iter()
                .map(|s| match s {
                    Step::Merge(seg) => seg.rows(),
                    Step::Remove(_) => 1,
                })
                .sum();
            assert!((1..=10).contains(&rows), "{chunk:?}");
        }
        let (all, removals) = flatten(&chunks);
        assert_eq!(all.reads.len(), 25);
        assert_eq!(all.reads[&(3, 1)].pos, 100);
        assert_eq!(all.messages.len(), 7);
        assert_eq!(all.mentions.len(), 4);
        assert_eq!(
            removals,
            [Write::Leave {
                user: 9,
                channel: 1
            }]
        );
        // The removal comes after every read before it and before every message after it.
        let order: Vec<&Step> = chunks.iter().flatten().collect();
        let leave = order
            .iter()
            .position(|s| matches!(s, Step::Remove(_)))
            .unwrap();
        assert!(order[..leave].iter().all(|s| match s {
            Step::Merge(seg) => seg.messages.is_empty() && seg.mentions.is_empty(),
            Step::Remove(_) => false,
        }));
        assert!(order[leave + 1..].iter().all(|s| match s {
            Step::Merge(seg) => seg.reads.is_empty(),
            Step::Remove(_) => false,
        }));
    }

    #[test]
    fn a_small_batch_is_one_chunk_and_nothing_is_no_chunk() {
        let writes: Vec<Write> = (0..5).map(|i| read(1, i, 2)).collect();
        assert_eq!(chunks(&writes, 1_000).len(), 1);
        assert_eq!(chunks(&writes, 1_000), vec![steps(&writes)]);
        assert!(chunks(&[], 1_000).is_empty());
        assert_eq!(chunks(&writes, 0).len(), 5, "at least one row per chunk");
    }
}
