//! The read-state engine: ids, channels, users' read states, the operations of the
//! spec and the derived fields. Pure: no I/O, no async, no clocks (timestamps come in
//! as arguments), so every rule here is property-tested in isolation.
//!
//! The model, in one paragraph: a channel is the set of message ids it has seen
//! (created or deleted), of which it keeps the newest `W` with a tombstone flag;
//! a read state is a read position `(epoch, pos)` merged by lexicographic max plus
//! the newest `K` mention ids. Every piece is a function of the *set* of events
//! received, which is what makes message events and acks order-insensitive and
//! idempotent, and what lets storage rows be merged instead of overwritten.

mod channel;
mod ids;
mod model;
mod ops;
mod packed;
mod settings;
mod user;
mod view;

pub use channel::{ChannelWindow, Unread};
pub use ids::{ChannelId, GroupId, IdError, MessageId, UserId, is_canonical_decimal};
pub use model::Model;
pub use ops::{
    ChannelEffect, Op, UserChange, UserChanges, UserEffect, apply_user_effect, channel_meta, expand,
};
pub use settings::{
    ChannelMeta, Level, MAX_PARENT_DEPTH, MAX_STAMP, MUTED_FOREVER, ParentError, Settings,
    check_parent, group_of,
};
pub use user::{Changed, ReadPos, StateRef, UserStates};
pub use view::{GroupSummaries, ReadStateView, Summary, derive};

/// The bytes an allocation of `bytes` takes: what jemalloc (the service's
/// allocator) rounds it up to, so that the cache's byte budget counts what is
/// allocated, not what was asked for. 0 for 0 (nothing is allocated). Small size
/// classes: 8, then multiples of 16 up to 128, then four per doubling (160, 192,
/// 224, 256, 320, …) up to 16 KiB; above that whole 4 KiB pages (checked against
/// jemalloc's own usable size for every size up to 4 KiB and a sample up to 4 MiB).
/// Under another allocator this is an estimate of the same kind.
pub fn allocated(bytes: usize) -> usize {
    match bytes {
        0 => 0,
        1..=8 => 8,
        9..=128 => bytes.next_multiple_of(16),
        LARGE.. => bytes.next_multiple_of(PAGE),
        _ => {
            // 2^k < bytes <= 2^(k+1); the class spacing in that doubling is 2^(k-2).
            let k = usize::BITS - 1 - (bytes - 1).leading_zeros();
            bytes.next_multiple_of(1 << (k - 2))
        }
    }
}

/// jemalloc's page, and the size above which it allocates whole pages.
const PAGE: usize = 4 << 10;
const LARGE: usize = (16 << 10) + 1;

/// Caps of the derived counts and the window sizes that follow from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// `unread_count` is exact up to this value; above it `unread_capped` is set.
    pub unread: u32,
    /// `mention_count` is exact up to this value; above it `mention_capped` is set.
    pub mention: u32,
}

impl Default for Caps {
    fn default() -> Self {
        Self {
            unread: 99,
            mention: 99,
        }
    }
}

impl Caps {
    /// Message ids a channel keeps: twice what counting to the cap needs, so that
    /// deletions among the newest messages still leave enough to count exactly.
    pub fn channel_window(&self) -> usize {
        2 * (self.unread as usize + 1)
    }

    /// Mention ids a read state keeps (the newest ones), with the same slack.
    pub fn mention_window(&self) -> usize {
        2 * (self.mention as usize + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::allocated;
    use proptest::prelude::*;

    #[test]
    fn allocations_round_up_to_jemallocs_size_classes() {
        let classes = [
            (1, 8),
            (8, 8),
            (9, 16),
            (17, 32),
            (57, 64),
            (128, 128),
            (129, 160),
            (200, 224),
            (257, 320),
            (1_000, 1_024),
            (1_025, 1_280),
            (16_384, 16_384),
            (16_385, 20_480),
            (32_846, 36_864),
            (600_000, 602_112),
        ];
        for (asked, got) in classes {
            assert_eq!(allocated(asked), got, "{asked}");
        }
        assert_eq!(allocated(0), 0);
    }

    proptest! {
        #[test]
        fn a_class_holds_the_request_wastes_at_most_a_quarter_and_is_its_own_class(
            n in 1usize..(1 << 40)
        ) {
            let class = allocated(n);
            prop_assert!(class >= n);
            prop_assert_eq!(allocated(class), class);
            prop_assert!(allocated(n + 1) >= class);
            if n > 128 {
                prop_assert!(class - n < n / 4 + 1, "{} -> {}", n, class);
            }
            if n > 16 << 10 {
                prop_assert!(class - n < 4 << 10, "{} -> {}", n, class);
            }
        }
    }
}
