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
    /// For the read positions in `reads` that an ack wrote: when it was made (see
    /// [`Write::ReadPos`]; the latest stamp when several wrote the same position).
    pub acks: BTreeMap<(u64, u64), u64>,
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
                at,
            } => {
                let key = (user, channel);
                let read = ReadPos { epoch, pos };
                let current = self.reads.entry(key).or_insert(read);
                if read > *current {
                    // A new winner: its stamp, or none.
                    *current = read;
                    self.acks.remove(&key);
                }
                if read == *current && at != 0 {
                    let stamp = self.acks.entry(key).or_insert(at);
                    *stamp = (*stamp).max(at);
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_stamp_follows_the_position_that_wins() {
        let ack = |pos, epoch, at| Write::ReadPos {
            user: 1,
            channel: 2,
            epoch,
            pos,
            at,
        };
        let merged = |writes: &[Write]| {
            let mut seg = Segment::default();
            writes.iter().for_each(|w| seg.add(w));
            (seg.reads[&(1, 2)], seg.acks.get(&(1, 2)).copied())
        };
        let at = |epoch, pos| ReadPos { epoch, pos };
        // A later mark unread (a newer epoch, no stamp) wins over the ack before it.
        assert_eq!(merged(&[ack(9, 0, 5), ack(3, 7, 0)]), (at(7, 3), None));
        // An ack that raises the position carries its stamp.
        assert_eq!(merged(&[ack(3, 7, 0), ack(9, 7, 8)]), (at(7, 9), Some(8)));
        // An ack of the same position keeps the latest stamp; a lower one changes nothing.
        assert_eq!(
            merged(&[ack(9, 7, 8), ack(9, 7, 0), ack(9, 7, 12), ack(4, 7, 99)]),
            (at(7, 9), Some(12))
        );
    }
}
