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
