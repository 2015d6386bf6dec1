//! What a read state's notification settings and a channel's metadata are, and how
//! they merge: each is a register written with a stamp (`at`, ms), where the newest
//! stamp wins and equal stamps fall back to comparing the values, so any set of
//! writes, in any order, any number of times, gives one result.

/// `muted_until` of a state muted until it is unmuted (the API's `null`).
pub const MUTED_FOREVER: u64 = i64::MAX as u64;

/// The largest `at` stamp (and `muted_until`) a write may carry: SQL stores them as
/// signed 64-bit integers.
pub const MAX_STAMP: u64 = i64::MAX as u64;

/// How far [`group_of`] follows parents (a cycle is refused when set, so this only
/// bounds the walk should two nodes race to form one).
pub const MAX_PARENT_DEPTH: usize = 16;

/// Which messages count for a read state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Unread messages and mentions count.
    #[default]
    All = 0,
    /// Only mentions count (no unread dot).
    Mentions = 1,
    /// Nothing counts.
    Nothing = 2,
}

impl Level {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::All => "all",
            Level::Mentions => "mentions",
            Level::Nothing => "nothing",
        }
    }

    /// Parses the API name.
    pub fn parse(text: &str) -> Option<Level> {
        match text {
            "all" => Some(Level::All),
            "mentions" => Some(Level::Mentions),
            "nothing" => Some(Level::Nothing),
            _ => None,
        }
    }

    /// The stored number.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// From the stored number.
    pub fn from_code(code: u8) -> Option<Level> {
        match code {
            0 => Some(Level::All),
            1 => Some(Level::Mentions),
            2 => Some(Level::Nothing),
            _ => None,
        }
    }
}

/// A read state's notification settings: two registers (mute, level), each with
/// the stamp of the write that set it. The default (not muted, level `all`, never
/// set) is what a state without stored settings has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Settings {
    /// ms since the Unix epoch; 0 = not muted; [`MUTED_FOREVER`] = until unmuted.
    pub muted_until: u64,
    pub muted_at: u64,
    pub level: Level,
    pub level_at: u64,
}

impl Settings {
    /// True for the settings of a state that never had any.
    pub fn is_default(&self) -> bool {
        *self == Settings::default()
    }

    /// Whether the state is muted at `now` (ms).
    pub fn muted(&self, now: u64) -> bool {
        self.muted_until == MUTED_FOREVER || self.muted_until > now
    }

    /// Merges `other` in, register by register (newest stamp, then larger value).
    /// Returns whether anything changed.
    pub fn merge(&mut self, other: &Settings) -> bool {
        let mut changed = false;
        if (other.muted_at, other.muted_until) > (self.muted_at, self.muted_until) {
            self.muted_at = other.muted_at;
            self.muted_until = other.muted_until;
            changed = true;
        }
        if (other.level_at, other.level) > (self.level_at, self.level) {
            self.level_at = other.level_at;
            self.level = other.level;
            changed = true;
        }
        changed
    }

    /// The settings a write of the given fields stamped `at` stands for: the
    /// fields not given stay at the default with stamp 0, which never wins a merge.
    pub fn written(muted_until: Option<u64>, level: Option<Level>, at: u64) -> Settings {
        let mut out = Settings::default();
        if let Some(until) = muted_until {
            out.muted_until = until;
            out.muted_at = at;
        }
        if let Some(level) = level {
            out.level = level;
            out.level_at = at;
        }
        out
    }
}

/// What a channel belongs to: a thread's parent channel and a group (0 = unset),
/// one register stamped `at`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ChannelMeta {
    pub parent: u64,
    pub group: u64,
    pub at: u64,
}

impl ChannelMeta {
    /// True for a channel whose metadata was never set.
    pub fn is_default(&self) -> bool {
        *self == ChannelMeta::default()
    }

    /// Merges `other` in (newest stamp, then larger parent and group). Returns
    /// whether anything changed.
    pub fn merge(&mut self, other: &ChannelMeta) -> bool {
        if (other.at, other.parent, other.group) > (self.at, self.parent, self.group) {
            *self = *other;
            true
        } else {
            false
        }
    }
}

/// The group `channel` belongs to: its own, else its parent's, and so on up the
/// chain (at most [`MAX_PARENT_DEPTH`] steps). `meta_of` gives a channel's
/// metadata (default when unknown).
pub fn group_of(channel: u64, meta_of: impl Fn(u64) -> ChannelMeta) -> Option<u64> {
    let mut at = channel;
    for _ in 0..=MAX_PARENT_DEPTH {
        let meta = meta_of(at);
        if meta.group != 0 {
            return Some(meta.group);
        }
        if meta.parent == 0 {
            return None;
        }
        at = meta.parent;
    }
    None
}

/// Why a parent cannot be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParentError {
    /// The parent is the channel itself.
    SelfParent,
    /// The channel is an ancestor of the parent: a cycle.
    Cycle,
    /// The chain above the parent is longer than [`MAX_PARENT_DEPTH`].
    TooDeep,
}

/// Checks that making `parent` the parent of `channel` forms no cycle and keeps
/// the chain within [`MAX_PARENT_DEPTH`]. `parent_of` gives a channel's current
/// parent (0 = none).
///
/// # Errors
/// The [`ParentError`] that applies.
pub fn check_parent(
    channel: u64,
    parent: u64,
    parent_of: impl Fn(u64) -> u64,
) -> Result<(), ParentError> {
    if parent == channel {
        return Err(ParentError::SelfParent);
    }
    let mut at = parent;
    for _ in 0..MAX_PARENT_DEPTH {
        at = parent_of(at);
        if at == 0 {
            return Ok(());
        }
        if at == channel {
            return Err(ParentError::Cycle);
        }
    }
    Err(ParentError::TooDeep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_registers_converge_whatever_the_order() {
        let writes = [
            Settings::written(Some(MUTED_FOREVER), None, 5),
            Settings::written(Some(0), Some(Level::Mentions), 7),
            Settings::written(None, Some(Level::Nothing), 6),
            Settings::written(Some(100), None, 7),
        ];
        let mut forward = Settings::default();
        writes.iter().for_each(|w| {
            forward.merge(w);
        });
        let mut backward = Settings::default();
        writes.iter().rev().for_each(|w| {
            backward.merge(w);
            backward.merge(w);
        });
        assert_eq!(forward, backward);
        assert_eq!(forward.muted_until, 100);
        assert_eq!(forward.level, Level::Mentions);
        assert!(forward.muted(99) && !forward.muted(100));
        // An old write redelivered changes nothing.
        assert!(!forward.merge(&writes[0]));
    }

    #[test]
    fn a_group_comes_from_the_nearest_ancestor_that_has_one() {
        let meta = |c: u64| match c {
            3 => ChannelMeta {
                parent: 2,
                group: 0,
                at: 1,
            },
            2 => ChannelMeta {
                parent: 1,
                group: 0,
                at: 1,
            },
            1 => ChannelMeta {
                parent: 0,
                group: 9,
                at: 1,
            },
            _ => ChannelMeta::default(),
        };
        assert_eq!(group_of(3, meta), Some(9));
        assert_eq!(group_of(4, meta), None);
        let parent = |c: u64| meta(c).parent;
        assert_eq!(check_parent(1, 1, parent), Err(ParentError::SelfParent));
        assert_eq!(check_parent(1, 3, parent), Err(ParentError::Cycle));
        assert_eq!(check_parent(4, 3, parent), Ok(()));
        // A cycle formed anyway (two nodes racing) still ends the walk.
        let looped = |c: u64| ChannelMeta {
            parent: 3 - c,
            group: 0,
            at: 1,
        };
        assert_eq!(group_of(1, looped), None);
    }
}
