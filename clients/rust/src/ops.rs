//! Constructors of the [`Op`]s that [`Client::batch`](crate::Client::batch) and
//! [`Client::write`](crate::Client::write) send.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::proto::{self, Op, op};
use crate::settings::Settings;

/// Milliseconds since the Unix epoch (0 before it), the unit of `AckRequest.at`.
pub(crate) fn epoch_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Op {
    fn of(op: op::Op) -> Op {
        Op { op: Some(op) }
    }

    /// A message was posted ([`Client::message_created`](crate::Client::message_created)).
    pub fn message_created(
        channel: u64,
        message: u64,
        author: Option<u64>,
        mentions: &[u64],
    ) -> Op {
        Op::of(op::Op::MessageCreated(proto::MessageCreatedRequest {
            channel_id: channel,
            message_id: message,
            author_id: author,
            mentions: mentions.to_vec(),
        }))
    }

    /// A message was deleted ([`Client::message_deleted`](crate::Client::message_deleted)).
    pub fn message_deleted(channel: u64, message: u64) -> Op {
        Op::of(op::Op::MessageDeleted(proto::MessageDeletedRequest {
            channel_id: channel,
            message_id: message,
        }))
    }

    /// The channel is gone ([`Client::delete_channel`](crate::Client::delete_channel)).
    pub fn delete_channel(channel: u64) -> Op {
        Op::of(op::Op::DeleteChannel(proto::DeleteChannelRequest {
            channel_id: channel,
        }))
    }

    /// The user joins the channel ([`Client::join`](crate::Client::join)).
    pub fn join(user: u64, channel: u64, last_read: Option<u64>) -> Op {
        Op::of(op::Op::Join(proto::JoinRequest {
            user_id: user,
            channel_id: channel,
            last_read_message_id: last_read,
        }))
    }

    /// The user leaves the channel ([`Client::leave`](crate::Client::leave)).
    pub fn leave(user: u64, channel: u64) -> Op {
        Op::of(op::Op::Leave(proto::LeaveRequest {
            user_id: user,
            channel_id: channel,
        }))
    }

    /// The user has read up to `message` ([`Client::ack`](crate::Client::ack)).
    pub fn ack(user: u64, channel: u64, message: u64) -> Op {
        Op::of(op::Op::Ack(proto::AckRequest {
            user_id: user,
            channel_id: channel,
            message_id: message,
            at: None,
        }))
    }

    /// An ack made at `at` ([`Client::ack_at`](crate::Client::ack_at)): ignored
    /// when older than the read state's latest mark unread.
    pub fn ack_at(user: u64, channel: u64, message: u64, at: SystemTime) -> Op {
        Op::of(op::Op::Ack(proto::AckRequest {
            user_id: user,
            channel_id: channel,
            message_id: message,
            at: Some(epoch_ms(at)),
        }))
    }

    /// Every read state of the user is read ([`Client::ack_all`](crate::Client::ack_all)).
    pub fn ack_all(user: u64) -> Op {
        Op::of(op::Op::AckAll(proto::AckAllRequest { user_id: user }))
    }

    /// Unread from `message` on ([`Client::mark_unread`](crate::Client::mark_unread)).
    pub fn mark_unread(user: u64, channel: u64, message: u64) -> Op {
        Op::of(op::Op::Unread(proto::MarkUnreadRequest {
            user_id: user,
            channel_id: channel,
            message_id: message,
        }))
    }

    /// What the channel belongs to: a thread's `parent` channel and a `group`
    /// ([`Client::set_channel`](crate::Client::set_channel)).
    pub fn set_channel(channel: u64, parent: Option<u64>, group: Option<u64>) -> Op {
        Op::of(op::Op::SetChannel(proto::SetChannelRequest {
            channel_id: channel,
            parent_id: parent,
            group_id: group,
            at: None,
        }))
    }

    /// [`Op::set_channel`] made at `at`
    /// ([`Client::set_channel_at`](crate::Client::set_channel_at)): ignored when
    /// older than the channel's metadata in place.
    pub fn set_channel_at(
        channel: u64,
        parent: Option<u64>,
        group: Option<u64>,
        at: SystemTime,
    ) -> Op {
        Op::of(op::Op::SetChannel(proto::SetChannelRequest {
            channel_id: channel,
            parent_id: parent,
            group_id: group,
            at: Some(epoch_ms(at)),
        }))
    }

    /// The notification settings of the user's read state in the channel
    /// ([`Client::update_settings`](crate::Client::update_settings)); the
    /// `settings` op of a batch.
    pub fn update_settings(user: u64, channel: u64, settings: Settings) -> Op {
        Op::of(op::Op::Settings(settings.request(user, channel)))
    }

    /// Every read state, mention and setting of the user is gone
    /// ([`Client::delete_user`](crate::Client::delete_user)).
    pub fn delete_user(user: u64) -> Op {
        Op::of(op::Op::DeleteUser(proto::DeleteUserRequest {
            user_id: user,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_fill_the_oneof() {
        let op = Op::message_created(1, 2, Some(3), &[4, 5]);
        assert_eq!(
            op.op,
            Some(op::Op::MessageCreated(proto::MessageCreatedRequest {
                channel_id: 1,
                message_id: 2,
                author_id: Some(3),
                mentions: vec![4, 5],
            }))
        );
        assert!(matches!(
            Op::mark_unread(1, 2, 3).op,
            Some(op::Op::Unread(_))
        ));
        assert!(matches!(
            Op::delete_channel(1).op,
            Some(op::Op::DeleteChannel(_))
        ));
        let at = UNIX_EPOCH + std::time::Duration::from_millis(1234);
        assert!(matches!(
            Op::ack_at(1, 2, 3, at).op,
            Some(op::Op::Ack(proto::AckRequest { at: Some(1234), .. }))
        ));
        assert_eq!(epoch_ms(UNIX_EPOCH - std::time::Duration::from_secs(1)), 0);
        assert_eq!(
            Op::set_channel(1, Some(2), None).op,
            Some(op::Op::SetChannel(proto::SetChannelRequest {
                channel_id: 1,
                parent_id: Some(2),
                group_id: None,
                at: None,
            }))
        );
        assert!(matches!(
            Op::set_channel_at(1, None, Some(3), at).op,
            Some(op::Op::SetChannel(proto::SetChannelRequest {
                group_id: Some(3),
                at: Some(1234),
                ..
            }))
        ));
        let settings = Settings::new().mute(crate::Mute::Forever);
        assert_eq!(
            Op::update_settings(1, 2, settings).op,
            Some(op::Op::Settings(settings.request(1, 2)))
        );
        assert_eq!(
            Op::delete_user(7).op,
            Some(op::Op::DeleteUser(proto::DeleteUserRequest { user_id: 7 }))
        );
    }
}
