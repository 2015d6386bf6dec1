//! All read states of one user, stored compactly: 16 bytes per read state in the
//! common case (channel id + read position), with the rare parts (a non-zero unread
//! epoch, mention ids, notification settings) in a side allocation that most users
//! never have.

use super::Settings;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    channel: u64,
    pos: u64,
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

/// Every read state of one user, sorted by channel id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserStates {
    entries: Vec<Entry>,
    extras: Option<Box<Extras>>,
}

impl UserStates {
    /// A user with no read states.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of read states.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the user has no read state.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn find(&self, channel: u64) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&channel, |e| e.channel)
    }

    fn epoch_of(&self, channel: u64) -> u64 {
        let Some(extras) = &self.extras else { return 0 };
        extras
            .epochs
            .binary_search_by_key(&channel, |(c, _)| *c)
            .map_or(0, |at| extras.epochs[at].1)
    }

    fn set_epoch(&mut self, channel: u64, epoch: u64) {
        let extras = self.extras.get_or_insert_with(Box::default);
        match extras.epochs.binary_search_by_key(&channel, |(c, _)| *c) {
            Ok(at) => extras.epochs[at].1 = epoch,
            Err(at) => extras.epochs.insert(at, (channel, epoch)),
        }
    }

    fn settings_of(&self, channel: u64) -> Settings {
        let Some(extras) = &self.extras else {
            return Settings::default();
        };
        extras
            .settings
            .binary_search_by_key(&channel, |(c, _)| *c)
            .map_or_else(|_| Settings::default(), |at| extras.settings[at].1)
    }

    fn mention_range(&self, channel: u64) -> &[(u64, u64)] {
        let Some(extras) = &self.extras else {
            return &[];
        };
        let lo = extras.mentions.partition_point(|(c, _)| *c < channel);
        let hi = extras.mentions.partition_point(|(c, _)| *c <= channel);
        &extras.mentions[lo..hi]
    }

    /// The read state of `channel`, if the user has one.
    pub fn get(&self, channel: u64) -> Option<StateRef<'_>> {
        let at = self.find(channel).ok()?;
        Some(self.state_at(at))
    }

    fn state_at(&self, at: usize) -> StateRef<'_> {
        let e = self.entries[at];
        StateRef {
            channel: e.channel,
            read: ReadPos {
                epoch: self.epoch_of(e.channel),
                pos: e.pos,
            },
            mentions: self.mention_range(e.channel),
            settings: self.settings_of(e.channel),
        }
    }

    /// Every read state, ascending by channel.
    pub fn iter(&self) -> impl Iterator<Item = StateRef<'_>> + '_ {
        (0..self.entries.len()).map(|at| self.state_at(at))
    }

    /// Channel ids of every read state, ascending.
    pub fn channels(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries.iter().map(|e| e.channel)
    }

    /// Creates the state at `read` if missing. Returns the index and whether it was created.
    fn ensure(&mut self, channel: u64, read: ReadPos) -> (usize, Changed) {
        match self.find(channel) {
            Ok(at) => (at, Changed::No),
            Err(at) => {
                self.entries.insert(
                    at,
                    Entry {
                        channel,
                        pos: read.pos,
                    },
                );
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
        let (at, created) = self.ensure(channel, read);
        if created.is_yes() {
            return Changed::Yes;
        }
        let current = ReadPos {
            epoch: self.epoch_of(channel),
            pos: self.entries[at].pos,
        };
        if read <= current {
            return Changed::No;
        }
        self.entries[at].pos = read.pos;
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
        let extras = self.extras.get_or_insert_with(Box::default);
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
        if extras.is_empty() {
            self.extras = None;
        }
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
        self.entries.remove(at);
        if let Some(extras) = &mut self.extras {
            extras.epochs.retain(|(c, _)| *c != channel);
            extras.mentions.retain(|(c, _)| *c != channel);
            extras.settings.retain(|(c, _)| *c != channel);
            if extras.is_empty() {
                self.extras = None;
            }
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
            let extras = self.extras.get_or_insert_with(Box::default);
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

    /// Drops spare capacity (after a load or many removals).
    pub fn shrink(&mut self) {
        self.entries.shrink_to_fit();
        if let Some(extras) = &mut self.extras {
            extras.epochs.shrink_to_fit();
            extras.mentions.shrink_to_fit();
            extras.settings.shrink_to_fit();
        }
    }

    /// Heap bytes this value owns (for the cache's byte budget).
    pub fn heap_bytes(&self) -> usize {
        let entries = self.entries.capacity() * std::mem::size_of::<Entry>();
        let extras = self.extras.as_ref().map_or(0, |x| {
            std::mem::size_of::<Extras>()
                + x.epochs.capacity() * std::mem::size_of::<(u64, u64)>()
                + x.mentions.capacity() * std::mem::size_of::<(u64, u64)>()
                + x.settings.capacity() * std::mem::size_of::<(u64, Settings)>()
        });
        entries + extras
    }
}

#[cfg(test)]
mod tests {
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
}
