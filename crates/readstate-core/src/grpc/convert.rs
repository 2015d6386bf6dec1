//! Protobuf messages to and from the service's types. Ids are checked here with the
//! same range and the same words as every other transport ([`crate::api::ids`]);
//! errors name the field as the JSON API does (`channel_id`, `ops[2].message_id`).

use crate::api::dto::{LEVEL_REASON, MUTED_UNTIL_REASON};
use crate::api::ids::{ApiId, MAX_ID, POSITION_REASON, id_reason};
use crate::api::problem::Problem;
use crate::domain::{
    ChannelId, GroupId, GroupSummaries, Level, MUTED_FOREVER, MessageId, Op, ReadStateView,
    Summary, UserId,
};
use crate::live::wire::Change;
use crate::service::{ChannelInfo, ServiceError, StoredState, Threads};

use super::pb;

/// Names the fields of one request: bare (`channel_id`) or within a batch op
/// (`ops[2].channel_id`).
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    op: Option<usize>,
}

impl Fields {
    /// The fields of a request message.
    pub const BARE: Self = Self { op: None };

    /// The fields of op number `index` of a batch or `Write` stream.
    pub fn op(index: usize) -> Self {
        Self { op: Some(index) }
    }

    fn name(self, field: &str) -> String {
        match self.op {
            None => field.to_owned(),
            Some(i) => format!("ops[{i}].{field}"),
        }
    }

    /// An id in 1..=2^63-1 (0 is protobuf's "absent": invalid too).
    pub fn id<T: ApiId>(self, field: &str, raw: u64) -> Result<T, ServiceError> {
        T::from_u64(raw).map_err(|_| ServiceError::invalid(self.name(field), id_reason()))
    }

    fn optional_id<T: ApiId>(
        self,
        field: &str,
        raw: Option<u64>,
    ) -> Result<Option<T>, ServiceError> {
        raw.map(|raw| self.id(field, raw)).transpose()
    }

    fn ids<T: ApiId>(self, field: &str, raws: &[u64]) -> Result<Vec<T>, ServiceError> {
        raws.iter()
            .enumerate()
            .map(|(i, &raw)| self.id(&format!("{field}[{i}]"), raw))
            .collect()
    }

    fn position(self, field: &str, raw: Option<u64>) -> Result<Option<u64>, ServiceError> {
        match raw {
            Some(raw) if raw > MAX_ID => {
                Err(ServiceError::invalid(self.name(field), POSITION_REASON))
            }
            raw => Ok(raw),
        }
    }

    fn user(self, raw: u64) -> Result<UserId, ServiceError> {
        self.id("user_id", raw)
    }

    fn channel(self, raw: u64) -> Result<ChannelId, ServiceError> {
        self.id("channel_id", raw)
    }

    fn message(self, raw: u64) -> Result<MessageId, ServiceError> {
        self.id("message_id", raw)
    }

    /// An optional group id (`group_id`), in 1..=2^63-1 when present.
    pub fn group(self, raw: Option<u64>) -> Result<Option<GroupId>, ServiceError> {
        self.optional_id("group_id", raw)
    }

    /// A mute deadline: 0..=2^63-1, where 2^63-1 is "until unmuted" (JSON's null;
    /// the words of the error are the JSON API's).
    fn muted_until(self, raw: Option<u64>) -> Result<Option<u64>, ServiceError> {
        match raw {
            Some(raw) if raw > MUTED_FOREVER => Err(ServiceError::invalid(
                self.name("muted_until"),
                MUTED_UNTIL_REASON,
            )),
            raw => Ok(raw),
        }
    }

    /// A notification level by its API name.
    fn level(self, raw: Option<&str>) -> Result<Option<Level>, ServiceError> {
        raw.map(|text| {
            Level::parse(text)
                .ok_or_else(|| ServiceError::invalid(self.name("level"), LEVEL_REASON))
        })
        .transpose()
    }

    pub fn message_created(self, r: pb::MessageCreatedRequest) -> Result<Op, ServiceError> {
        Ok(Op::MessageCreated {
            channel: self.channel(r.channel_id)?,
            message: self.message(r.message_id)?,
            author: self.optional_id("author_id", r.author_id)?,
            mentions: self.ids("mentions", &r.mentions)?,
        })
    }

    pub fn message_deleted(self, r: pb::MessageDeletedRequest) -> Result<Op, ServiceError> {
        Ok(Op::MessageDeleted {
            channel: self.channel(r.channel_id)?,
            message: self.message(r.message_id)?,
        })
    }

    pub fn delete_channel(self, r: pb::DeleteChannelRequest) -> Result<Op, ServiceError> {
        Ok(Op::DeleteChannel {
            channel: self.channel(r.channel_id)?,
        })
    }

    pub fn join(self, r: &pb::JoinRequest) -> Result<Op, ServiceError> {
        Ok(Op::Join {
            user: self.user(r.user_id)?,
            channel: self.channel(r.channel_id)?,
            read: self.position("last_read_message_id", r.last_read_message_id)?,
        })
    }

    pub fn leave(self, r: &pb::LeaveRequest) -> Result<Op, ServiceError> {
        Ok(Op::Leave {
            user: self.user(r.user_id)?,
            channel: self.channel(r.channel_id)?,
        })
    }

    pub fn ack(self, r: &pb::AckRequest) -> Result<Op, ServiceError> {
        Ok(Op::Ack {
            user: self.user(r.user_id)?,
            channel: self.channel(r.channel_id)?,
            message: self.message(r.message_id)?,
            at: r.at,
        })
    }

    pub fn unread(self, r: &pb::MarkUnreadRequest) -> Result<Op, ServiceError> {
        Ok(Op::Unread {
            user: self.user(r.user_id)?,
            channel: self.channel(r.channel_id)?,
            message: self.message(r.message_id)?,
        })
    }

    pub fn ack_all(self, r: &pb::AckAllRequest) -> Result<Op, ServiceError> {
        Ok(Op::AckAll {
            user: self.user(r.user_id)?,
        })
    }

    pub fn set_channel(self, r: &pb::SetChannelRequest) -> Result<Op, ServiceError> {
        Ok(Op::SetChannel {
            channel: self.channel(r.channel_id)?,
            parent: self.optional_id("parent_id", r.parent_id)?,
            group: self.group(r.group_id)?,
            at: r.at,
        })
    }

    pub fn settings(self, r: &pb::UpdateSettingsRequest) -> Result<Op, ServiceError> {
        Ok(Op::Settings {
            user: self.user(r.user_id)?,
            channel: self.channel(r.channel_id)?,
            muted_until: self.muted_until(r.muted_until)?,
            level: self.level(r.level.as_deref())?,
            at: r.at,
        })
    }

    pub fn delete_user(self, r: &pb::DeleteUserRequest) -> Result<Op, ServiceError> {
        Ok(Op::DeleteUser {
            user: self.user(r.user_id)?,
        })
    }

    /// One op of a batch or `Write` stream.
    pub fn batch_op(self, op: pb::Op) -> Result<Op, ServiceError> {
        use pb::op::Op as Kind;
        match op.op {
            Some(Kind::MessageCreated(r)) => self.message_created(r),
            Some(Kind::MessageDeleted(r)) => self.message_deleted(r),
            Some(Kind::Join(r)) => self.join(&r),
            Some(Kind::Ack(r)) => self.ack(&r),
            Some(Kind::AckAll(r)) => self.ack_all(&r),
            Some(Kind::Unread(r)) => self.unread(&r),
            Some(Kind::Leave(r)) => self.leave(&r),
            Some(Kind::DeleteChannel(r)) => self.delete_channel(r),
            Some(Kind::SetChannel(r)) => self.set_channel(&r),
            Some(Kind::Settings(r)) => self.settings(&r),
            Some(Kind::DeleteUser(r)) => self.delete_user(&r),
            None => Err(ServiceError::invalid(
                self.name("op"),
                format!("required: one of {}", crate::api::ops::OP_NAMES.join(", ")),
            )),
        }
    }

    /// The user and channel of a request about one read state.
    pub fn user_channel(
        self,
        user: u64,
        channel: u64,
    ) -> Result<(UserId, ChannelId), ServiceError> {
        Ok((self.user(user)?, self.channel(channel)?))
    }

    /// The user of a request about one user.
    pub fn user_only(self, user: u64) -> Result<UserId, ServiceError> {
        self.user(user)
    }

    /// The channel filter of `GetReadStates` (empty = all).
    pub fn channels(self, raws: &[u64]) -> Result<Option<Vec<ChannelId>>, ServiceError> {
        if raws.is_empty() {
            return Ok(None);
        }
        self.ids("channels", raws).map(Some)
    }

    /// The users of `GetSummaries`.
    pub fn users(self, raws: &[u64]) -> Result<Vec<UserId>, ServiceError> {
        self.ids("user_ids", raws)
    }

    /// The channel of a request about one channel.
    pub fn channel_only(self, channel: u64) -> Result<ChannelId, ServiceError> {
        self.channel(channel)
    }

    /// The user, parent channel and cursor of `GetThreads`.
    pub fn threads(
        self,
        r: &pb::GetThreadsRequest,
    ) -> Result<(UserId, ChannelId, Option<ChannelId>), ServiceError> {
        Ok((
            self.user(r.user_id)?,
            self.channel(r.channel_id)?,
            self.optional_id("after", r.after)?,
        ))
    }

    /// The channel, message and cursor of `Readers`.
    pub fn readers(
        self,
        r: &pb::ReadersRequest,
    ) -> Result<(ChannelId, MessageId, Option<UserId>), ServiceError> {
        Ok((
            self.channel(r.channel_id)?,
            self.message(r.message_id)?,
            self.optional_id("after", r.after)?,
        ))
    }
}

impl From<ReadStateView> for pb::ReadState {
    fn from(v: ReadStateView) -> Self {
        Self {
            channel_id: v.channel_id,
            last_read_message_id: v.last_read_message_id,
            last_message_id: v.last_message_id,
            has_unread: v.has_unread,
            unread_count: v.unread_count,
            unread_capped: v.unread_capped,
            mention_count: v.mention_count,
            mention_capped: v.mention_capped,
            first_unread_message_id: v.first_unread_message_id,
            muted: v.muted,
            level: v.level.as_str().to_owned(),
        }
    }
}

/// The reply of `GetReadStates` and `AckAll`.
pub fn read_states(views: Vec<ReadStateView>) -> pb::ReadStatesReply {
    pb::ReadStatesReply {
        read_states: views.into_iter().map(pb::ReadState::from).collect(),
    }
}

impl From<Summary> for pb::Summary {
    fn from(s: Summary) -> Self {
        Self {
            unread_channels: s.unread_channels,
            mentions: s.mentions,
            unread_threads: s.unread_threads,
        }
    }
}

/// The reply of `GetGroups`.
pub fn groups(groups: GroupSummaries) -> pb::GroupsReply {
    pb::GroupsReply {
        groups: groups
            .into_iter()
            .map(|(group, s)| (group, s.into()))
            .collect(),
    }
}

impl From<Threads> for pb::ThreadsReply {
    fn from(t: Threads) -> Self {
        Self {
            unread_threads: t.summary.unread_threads,
            mentions: t.summary.mentions,
            read_states: t.read_states.into_iter().map(pb::ReadState::from).collect(),
            next: t.next.map(ChannelId::get),
        }
    }
}

/// 0 (unset) as an absent field.
fn non_zero(id: u64) -> Option<u64> {
    (id != 0).then_some(id)
}

impl From<ChannelInfo> for pb::Channel {
    fn from(c: ChannelInfo) -> Self {
        Self {
            channel_id: c.channel,
            parent_id: non_zero(c.parent),
            group_id: non_zero(c.group),
            last_message_id: c.last_message_id,
        }
    }
}

impl From<StoredState> for pb::StoredReadState {
    fn from(s: StoredState) -> Self {
        Self {
            channel_id: s.channel,
            last_read_message_id: s.read.pos,
            epoch: s.read.epoch,
            mention_ids: s.mentions,
            muted_until: s.settings.muted_until,
            muted_at: s.settings.muted_at,
            level: s.settings.level.as_str().to_owned(),
            level_at: s.settings.level_at,
        }
    }
}

/// The reply of `ExportUser`.
pub fn export(user: UserId, states: Vec<StoredState>) -> pb::ExportReply {
    pb::ExportReply {
        user_id: user.get(),
        read_states: states.into_iter().map(pb::StoredReadState::from).collect(),
    }
}

impl From<Change> for pb::Change {
    fn from(c: Change) -> Self {
        Self {
            r#type: c.kind.as_str().to_owned(),
            user_id: c.user,
            channel_id: c.channel,
            read_state: c.state.map(pb::ReadState::from),
        }
    }
}

impl From<&Problem> for pb::Problem {
    fn from(p: &Problem) -> Self {
        let body = p.body();
        Self {
            r#type: body.type_uri,
            title: body.title,
            status: u32::from(body.status),
            detail: body.detail,
            field: body.field,
        }
    }
}

/// One result of a batch or `Write` stream: ok, or the problem.
pub fn op_result(result: &Result<(), ServiceError>) -> pb::OpResult {
    match result {
        Ok(()) => pb::OpResult {
            ok: true,
            error: None,
        },
        Err(e) => pb::OpResult {
            ok: false,
            error: Some(pb::Problem::from(&Problem::from_service_error(e))),
        },
    }
}
