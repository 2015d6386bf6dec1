//! How a commit batch is written: split into segments of merges at the
//! order-sensitive removals (leave, delete channel, delete user), each segment
//! combined in memory first (max of read positions, sticky tombstones, set of
//! mentions, settings and channel metadata merged as registers), so a backend
//! writes one statement per table per segment. Shared by every backend.

use std::collections::{BTreeMap, BTreeSet};

use super::Write;
use crate::domain::{ChannelMeta, ReadPos, Settings};

/// One step of a commit: a segment of merges, or one order-sensitive removal.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Merge(Segment),
    Remove(Write),
}

/// Merge writes between two removals, combined in memory first: the lexicographic
/// max of read positions per state, sticky tombstones per message, a set of mentions,
/// settings per state and metadata per channel merged as the domain merges them.
/// Sorted maps so rows reach the database in primary key order.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Segment {
    pub reads: BTreeMap<(u64, u64), ReadPos>,
    /// For the read positions in `reads` that an ack wrote: when it was made (see
    /// [`Write::ReadPos`]; the latest stamp when several wrote the same position).
    pub acks: BTreeMap<(u64, u64), u64>,
    pub messages: BTreeMap<(u64, u64), bool>,
    pub mentions: BTreeSet<(u64, u64, u64)>,
    /// Settings per `(user, channel)`, merged with [`Settings::merge`] (writes that
    /// set nothing are left out: they never win a merge).
    pub settings: BTreeMap<(u64, u64), Settings>,
    /// Metadata per channel, merged with [`ChannelMeta::merge`] (unset ones left out).
    pub metas: BTreeMap<u64, ChannelMeta>,
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
            Write::Settings {
                user,
                channel,
                settings,
            } => {
                if !settings.is_default() {
                    self.settings
                        .entry((user, channel))
                        .or_default()
                        .merge(&settings);
                }
            }
            Write::ChannelMeta { channel, meta } => {
                if !meta.is_default() {
                    self.metas.entry(channel).or_default().merge(&meta);
                }
            }
            Write::Leave { .. } | Write::DeleteChannel { .. } | Write::DeleteUser { .. } => {}
        }
    }

    pub fn is_empty(&self) -> bool {
        self.reads.is_empty()
            && self.messages.is_empty()
            && self.mentions.is_empty()
            && self.settings.is_empty()
            && self.metas.is_empty()
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
        if w.is_removal() {
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

    #[test]
    fn settings_and_metas_merge_as_the_domain_does_in_any_order() {
        use crate::domain::Level;
        let settings = [
            Settings::written(Some(100), None, 5),
            Settings::written(None, Some(Level::Nothing), 6),
            Settings::written(Some(0), Some(Level::Mentions), 7),
            Settings::written(Some(50), None, 7),
            Settings::default(),
        ];
        let metas = [
            ChannelMeta {
                parent: 3,
                group: 0,
                at: 4,
            },
            ChannelMeta {
                parent: 0,
                group: 9,
                at: 8,
            },
            ChannelMeta {
                parent: 2,
                group: 1,
                at: 8,
            },
            ChannelMeta::default(),
        ];
        let mut want_settings = Settings::default();
        settings.iter().for_each(|s| {
            want_settings.merge(s);
        });
        let mut want_meta = ChannelMeta::default();
        metas.iter().for_each(|m| {
            want_meta.merge(m);
        });
        let writes: Vec<Write> = settings
            .iter()
            .map(|&settings| Write::Settings {
                user: 1,
                channel: 2,
                settings,
            })
            .chain(
                metas
                    .iter()
                    .map(|&meta| Write::ChannelMeta { channel: 2, meta }),
            )
            .collect();
        // Every rotation, forwards and backwards, each write twice.
        for start in 0..writes.len() {
            for reverse in [false, true] {
                let mut order: Vec<Write> = writes[start..]
                    .iter()
                    .chain(&writes[..start])
                    .flat_map(|w| [*w, *w])
                    .collect();
                if reverse {
                    order.reverse();
                }
                let mut seg = Segment::default();
                order.iter().for_each(|w| seg.add(w));
                assert_eq!(seg.settings.len(), 1);
                assert_eq!(seg.settings[&(1, 2)], want_settings, "{order:?}");
                assert_eq!(seg.metas.len(), 1);
                assert_eq!(seg.metas[&2], want_meta, "{order:?}");
                assert!(seg.reads.is_empty() && seg.states().is_empty());
            }
        }
        assert_eq!(want_settings.muted_until, 50);
        assert_eq!(want_settings.level, Level::Mentions);
        assert_eq!((want_meta.parent, want_meta.group), (2, 1));
    }

    #[test]
    fn settings_and_metas_alone_make_a_segment_and_unset_ones_do_not() {
        let unset = [
            Write::Settings {
                user: 1,
                channel: 2,
                settings: Settings::default(),
            },
            Write::ChannelMeta {
                channel: 2,
                meta: ChannelMeta::default(),
            },
        ];
        assert!(steps(&unset).is_empty());
        let set = [
            Write::Settings {
                user: 1,
                channel: 2,
                settings: Settings::written(Some(9), None, 1),
            },
            Write::ChannelMeta {
                channel: 3,
                meta: ChannelMeta {
                    parent: 0,
                    group: 4,
                    at: 1,
                },
            },
        ];
        for w in &set {
            let steps = steps(std::slice::from_ref(w));
            assert!(matches!(&steps[..], [Step::Merge(seg)] if !seg.is_empty()));
        }
    }

    #[test]
    fn a_deleted_user_is_a_removal_step_between_segments() {
        let settings = |muted_until, at| Write::Settings {
            user: 1,
            channel: 2,
            settings: Settings::written(Some(muted_until), None, at),
        };
        let writes = [
            settings(10, 1),
            Write::DeleteUser { user: 1 },
            Write::DeleteUser { user: 2 },
            settings(20, 2),
            Write::Leave {
                user: 1,
                channel: 2,
            },
        ];
        assert!(writes[1].is_removal() && writes[4].is_removal());
        assert!(!writes[0].is_removal());
        assert!(
            !Write::ChannelMeta {
                channel: 1,
                meta: ChannelMeta::default()
            }
            .is_removal()
        );
        assert!(Write::DeleteChannel { channel: 1 }.is_removal());
        let steps = steps(&writes);
        assert_eq!(steps.len(), 5, "{steps:?}");
        assert!(matches!(&steps[0], Step::Merge(s) if s.settings[&(1, 2)].muted_until == 10));
        assert_eq!(steps[1], Step::Remove(writes[1]));
        assert_eq!(steps[2], Step::Remove(writes[2]));
        assert!(matches!(&steps[3], Step::Merge(s) if s.settings[&(1, 2)].muted_until == 20));
        assert_eq!(steps[4], Step::Remove(writes[4]));
    }
}
