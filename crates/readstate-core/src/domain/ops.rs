//! The write operations of the spec and how each one breaks down into effects on
//! single entities (one channel, one user), which is the unit the cache locks and
//! the commit writer persists.

use smallvec::{SmallVec, smallvec};

use super::{
    ChannelId, ChannelMeta, GroupId, Level, MessageId, ReadPos, Settings, UserId, UserStates,
};

/// A write operation, as HTTP, batch, gRPC and NATS all express it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    MessageCreated {
        channel: ChannelId,
        message: MessageId,
        author: Option<UserId>,
        mentions: Vec<UserId>,
    },
    MessageDeleted {
        channel: ChannelId,
        message: MessageId,
    },
    /// `read`: the read position to start at (0 = nothing read); `None` = the channel head.
    Join {
        user: UserId,
        channel: ChannelId,
        read: Option<u64>,
    },
    /// `at`: when the ack was made (ms since the epoch); an ack older than the latest
    /// mark unread of the state is ignored.
    Ack {
        user: UserId,
        channel: ChannelId,
        message: MessageId,
        at: Option<u64>,
    },
    Unread {
        user: UserId,
        channel: ChannelId,
        message: MessageId,
    },
    AckAll {
        user: UserId,
    },
    Leave {
        user: UserId,
        channel: ChannelId,
    },
    DeleteChannel {
        channel: ChannelId,
    },
    /// Sets what a channel belongs to (replacing both fields), stamped `at` (ms;
    /// the time of arrival when `None`).
    SetChannel {
        channel: ChannelId,
        parent: Option<ChannelId>,
        group: Option<GroupId>,
        at: Option<u64>,
    },
    /// Sets a read state's notification settings; `None` keeps a field.
    /// `muted_until`: `Some(0)` unmutes, [`super::MUTED_FOREVER`] mutes until unmuted.
    Settings {
        user: UserId,
        channel: ChannelId,
        muted_until: Option<u64>,
        level: Option<Level>,
        at: Option<u64>,
    },
    /// Removes every read state, mention and setting of the user.
    DeleteUser {
        user: UserId,
    },
}

/// An effect on one channel's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelEffect {
    pub channel: ChannelId,
    pub message: MessageId,
    pub deleted: bool,
}

/// An effect on one user's read states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserEffect {
    Ack {
        user: UserId,
        channel: ChannelId,
        message: MessageId,
        at: Option<u64>,
    },
    Mention {
        user: UserId,
        channel: ChannelId,
        message: MessageId,
    },
    Unread {
        user: UserId,
        channel: ChannelId,
        message: MessageId,
    },
    Join {
        user: UserId,
        channel: ChannelId,
        read: Option<u64>,
    },
    AckAll {
        user: UserId,
    },
    Leave {
        user: UserId,
        channel: ChannelId,
    },
    /// `settings`: the fields written, stamped (see [`Settings::written`]).
    Settings {
        user: UserId,
        channel: ChannelId,
        settings: Settings,
    },
    DeleteUser {
        user: UserId,
    },
}

impl UserEffect {
    /// The user this effect touches.
    pub fn user(&self) -> UserId {
        match *self {
            UserEffect::Ack { user, .. }
            | UserEffect::Mention { user, .. }
            | UserEffect::Unread { user, .. }
            | UserEffect::Join { user, .. }
            | UserEffect::AckAll { user }
            | UserEffect::Leave { user, .. }
            | UserEffect::Settings { user, .. }
            | UserEffect::DeleteUser { user } => user,
        }
    }
}

/// The metadata a [`Op::SetChannel`] writes, stamped `now` when it has no `at`.
pub fn channel_meta(
    parent: Option<ChannelId>,
    group: Option<GroupId>,
    at: Option<u64>,
    now: u64,
) -> ChannelMeta {
    ChannelMeta {
        parent: parent.map_or(0, ChannelId::get),
        group: group.map_or(0, GroupId::get),
        at: at.unwrap_or(now),
    }
}

/// Breaks an operation into per-entity effects, applied in the order returned:
/// the channel first, then users. `now` (ms) stamps settings written without `at`.
/// `DeleteChannel` has no per-entity form (it touches every read state of the
/// channel) and `SetChannel` writes the channel's metadata, not its window: both
/// expand to nothing.
pub fn expand(op: &Op, now: u64) -> (Option<ChannelEffect>, Vec<UserEffect>) {
    match op {
        Op::MessageCreated {
            channel,
            message,
            author,
            mentions,
        } => {
            let mut users = Vec::with_capacity(mentions.len() + 1);
            if let Some(author) = author {
                users.push(UserEffect::Ack {
                    user: *author,
                    channel: *channel,
                    message: *message,
                    at: None,
                });
            }
            let mut seen: Vec<UserId> = Vec::with_capacity(mentions.len());
            for user in mentions {
                if Some(*user) == *author || seen.contains(user) {
                    continue;
                }
                seen.push(*user);
                users.push(UserEffect::Mention {
                    user: *user,
                    channel: *channel,
                    message: *message,
                });
            }
            (
                Some(ChannelEffect {
                    channel: *channel,
                    message: *message,
                    deleted: false,
                }),
                users,
            )
        }
        Op::MessageDeleted { channel, message } => (
            Some(ChannelEffect {
                channel: *channel,
                message: *message,
                deleted: true,
            }),
            Vec::new(),
        ),
        Op::Join {
            user,
            channel,
            read,
        } => (
            None,
            vec![UserEffect::Join {
                user: *user,
                channel: *channel,
                read: *read,
            }],
        ),
        Op::Ack {
            user,
            channel,
            message,
            at,
        } => (
            None,
            vec![UserEffect::Ack {
                user: *user,
                channel: *channel,
                message: *message,
                at: *at,
            }],
        ),
        Op::Unread {
            user,
            channel,
            message,
        } => (
            None,
            vec![UserEffect::Unread {
                user: *user,
                channel: *channel,
                message: *message,
            }],
        ),
        Op::AckAll { user } => (None, vec![UserEffect::AckAll { user: *user }]),
        Op::Leave { user, channel } => (
            None,
            vec![UserEffect::Leave {
                user: *user,
                channel: *channel,
            }],
        ),
        Op::Settings {
            user,
            channel,
            muted_until,
            level,
            at,
        } => (
            None,
            vec![UserEffect::Settings {
                user: *user,
                channel: *channel,
                settings: Settings::written(*muted_until, *level, at.unwrap_or(now)),
            }],
        ),
        Op::DeleteUser { user } => (None, vec![UserEffect::DeleteUser { user: *user }]),
        Op::DeleteChannel { .. } | Op::SetChannel { .. } => (None, Vec::new()),
    }
}

/// A change to one user's stored read states, for persisting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserChange {
    /// The read position of `channel` is now `read` (merge by lexicographic max).
    Read { channel: u64, read: ReadPos },
    /// `message` mentions the user in `channel` (the state exists).
    Mention { channel: u64, message: u64 },
    /// The read state of `channel` is gone.
    Removed { channel: u64 },
    /// The settings of `channel`'s state are now `settings` (merged register by
    /// register).
    Settings { channel: u64, settings: Settings },
}

/// What one user effect changed: at most two changes inline (an ack, a mention, a
/// join, settings that create the state), more (ack all, a user's deletion) on the
/// heap.
pub type UserChanges = SmallVec<[UserChange; 2]>;

impl UserChange {
    /// The channel of the changed read state.
    pub fn channel(&self) -> u64 {
        match *self {
            UserChange::Read { channel, .. }
            | UserChange::Mention { channel, .. }
            | UserChange::Removed { channel }
            | UserChange::Settings { channel, .. } => channel,
        }
    }
}

/// Applies one user effect to that user's states and returns what changed (held
/// inline: most effects change one state, and the hot path allocates nothing for it).
/// `head_of(channel)` gives a channel's head (for join without a position and for
/// ack all); `now` (ms) stamps a mark unread.
pub fn apply_user_effect(
    states: &mut UserStates,
    effect: &UserEffect,
    head_of: impl Fn(u64) -> u64,
    now: u64,
    mention_window: usize,
) -> UserChanges {
    match *effect {
        UserEffect::Ack {
            channel,
            message,
            at,
            ..
        } => match states.ack(channel.get(), message.get(), at) {
            Some(read) => smallvec![UserChange::Read {
                channel: channel.get(),
                read,
            }],
            None => UserChanges::new(),
        },
        UserEffect::Mention {
            channel, message, ..
        } => {
            if states
                .add_mention(channel.get(), message.get(), mention_window)
                .is_yes()
            {
                smallvec![UserChange::Mention {
                    channel: channel.get(),
                    message: message.get(),
                }]
            } else {
                UserChanges::new()
            }
        }
        UserEffect::Unread {
            channel, message, ..
        } => match states.mark_unread(channel.get(), message.get(), now) {
            Some(read) => smallvec![UserChange::Read {
                channel: channel.get(),
                read,
            }],
            None => UserChanges::new(),
        },
        UserEffect::Join { channel, read, .. } => {
            let read = ReadPos {
                epoch: 0,
                pos: read.unwrap_or_else(|| head_of(channel.get())),
            };
            if states.join(channel.get(), read).is_yes() {
                smallvec![UserChange::Read {
                    channel: channel.get(),
                    read,
                }]
            } else {
                UserChanges::new()
            }
        }
        UserEffect::AckAll { .. } => {
            let channels: Vec<u64> = states.channels().collect();
            channels
                .into_iter()
                .filter_map(|channel| {
                    let head = head_of(channel);
                    if head == 0 {
                        return None;
                    }
                    states
                        .ack(channel, head, None)
                        .map(|read| UserChange::Read { channel, read })
                })
                .collect()
        }
        UserEffect::Leave { channel, .. } => {
            if states.remove(channel.get()).is_yes() {
                smallvec![UserChange::Removed {
                    channel: channel.get(),
                }]
            } else {
                UserChanges::new()
            }
        }
        UserEffect::Settings {
            channel, settings, ..
        } => {
            // A missing state is created as a join without a position would be.
            let read = ReadPos {
                epoch: 0,
                pos: head_of(channel.get()),
            };
            match states.merge_settings(channel.get(), &settings, read) {
                None => UserChanges::new(),
                Some((settings, created)) => {
                    let mut out = UserChanges::new();
                    if created.is_yes() {
                        out.push(UserChange::Read {
                            channel: channel.get(),
                            read,
                        });
                    }
                    if !settings.is_default() {
                        out.push(UserChange::Settings {
                            channel: channel.get(),
                            settings,
                        });
                    }
                    out
                }
            }
        }
        UserEffect::DeleteUser { .. } => states
            .clear()
            .into_iter()
            .map(|channel| UserChange::Removed { channel })
            .collect(),
    }
}
