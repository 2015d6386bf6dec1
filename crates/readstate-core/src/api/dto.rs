//! The JSON shapes of the API (HTTP bodies, batch results, live event payloads): request bodies (strict: unknown fields are
//! rejected; ids accepted as strings or numbers) and response bodies (ids written as
//! decimal strings, because 64-bit integers do not survive JavaScript).

use serde::{Deserialize, Serialize, Serializer};
use utoipa::ToSchema;

use super::ids::{BodyId, BodyPosition, IdInput, PositionInput};
use super::problem::ProblemBody;
use crate::domain::{MessageId, ReadStateView, Summary, UserId};

/// `POST /v1/channels/{channel_id}/messages`: a message was created.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMessageRequest {
    /// The new message.
    #[schema(value_type = IdInput)]
    pub message_id: BodyId<MessageId>,
    /// Its author, whose read position advances to it (you have read what you wrote).
    #[schema(value_type = Option<IdInput>)]
    pub author_id: Option<BodyId<UserId>>,
    /// Users the message mentions (the author is skipped; duplicates count once).
    #[schema(value_type = Option<Vec<IdInput>>)]
    pub mentions: Option<Vec<BodyId<UserId>>>,
}

/// `PUT /v1/users/{user_id}/channels/{channel_id}`: join (the body is optional).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// Where the read position starts (`0` = nothing read); absent = the channel's
    /// newest message (nothing unread).
    #[schema(value_type = Option<PositionInput>)]
    pub last_read_message_id: Option<BodyPosition>,
}

/// `POST .../ack`: the user read up to `message_id`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// The newest message read; the position never moves backwards.
    #[schema(value_type = IdInput)]
    pub message_id: BodyId<MessageId>,
    /// When the ack was made (ms since the Unix epoch). An ack older than the latest
    /// mark-unread of the state is ignored, so a redelivered old ack cannot undo it.
    pub at: Option<u64>,
}

/// `POST .../unread`: mark `message_id` and everything after it unread.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnreadRequest {
    /// The first message to become unread (the position becomes `message_id - 1`).
    #[schema(value_type = IdInput)]
    pub message_id: BodyId<MessageId>,
}

/// `POST /v1/summaries`: summaries of many users at once.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SummariesRequest {
    /// The users (duplicates are answered once).
    #[schema(value_type = Vec<IdInput>)]
    pub user_ids: Vec<BodyId<UserId>>,
}

/// `POST /v1/batch`: write operations applied in order, each with its own result.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The operations; each is parsed on its own, so a bad one fails alone.
    #[schema(value_type = Vec<BatchOp>)]
    pub ops: Vec<serde_json::Value>,
}

/// The kind of a batch operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchOpKind {
    /// Needs `channel_id`, `message_id`; takes `author_id`, `mentions`.
    MessageCreated,
    /// Needs `channel_id`, `message_id`.
    MessageDeleted,
    /// Needs `user_id`, `channel_id`; takes `last_read_message_id`.
    Join,
    /// Needs `user_id`, `channel_id`, `message_id`; takes `at`.
    Ack,
    /// Needs `user_id`.
    AckAll,
    /// Needs `user_id`, `channel_id`, `message_id`.
    Unread,
    /// Needs `user_id`, `channel_id`.
    Leave,
    /// Needs `channel_id`.
    DeleteChannel,
}

/// One batch operation (documentation of the shape; parsed field by field so that
/// errors name `ops[i].field`). Fields that do not apply to `op` must be absent or null.
#[derive(Debug, Clone, ToSchema)]
#[allow(dead_code)] // a documentation shape only: batch ops are parsed from JSON values
pub struct BatchOp {
    /// What to do.
    pub op: BatchOpKind,
    /// The user (join, ack, ack_all, unread, leave).
    #[schema(value_type = Option<IdInput>)]
    pub user_id: Option<String>,
    /// The channel (all but ack_all).
    #[schema(value_type = Option<IdInput>)]
    pub channel_id: Option<String>,
    /// The message (message_created, message_deleted, ack, unread).
    #[schema(value_type = Option<IdInput>)]
    pub message_id: Option<String>,
    /// The author (message_created).
    #[schema(value_type = Option<IdInput>)]
    pub author_id: Option<String>,
    /// Mentioned users (message_created).
    #[schema(value_type = Option<Vec<IdInput>>)]
    pub mentions: Option<Vec<String>>,
    /// Starting read position (join; 0 = nothing read).
    #[schema(value_type = Option<PositionInput>)]
    pub last_read_message_id: Option<String>,
    /// When the ack was made, ms since the Unix epoch (ack).
    pub at: Option<u64>,
}

/// A read state with its derived fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = ReadState)]
pub struct ReadStateBody {
    /// The channel (decimal string).
    #[schema(example = "2001")]
    pub channel_id: String,
    /// The last message the user has read (`"0"`: nothing).
    #[schema(example = "1500")]
    pub last_read_message_id: String,
    /// The newest non-deleted message of the channel (`"0"`: none known).
    #[schema(example = "1502")]
    pub last_message_id: String,
    /// `last_message_id > last_read_message_id`.
    pub has_unread: bool,
    /// Non-deleted messages after the read position, up to the cap.
    pub unread_count: u32,
    /// True exactly when the real count exceeds the cap ("99+").
    pub unread_capped: bool,
    /// Non-deleted mentioning messages after the read position, up to the cap.
    pub mention_count: u32,
    /// True exactly when the real mention count exceeds the cap.
    pub mention_capped: bool,
}

impl From<ReadStateView> for ReadStateBody {
    fn from(v: ReadStateView) -> Self {
        Self {
            channel_id: v.channel_id.to_string(),
            last_read_message_id: v.last_read_message_id.to_string(),
            last_message_id: v.last_message_id.to_string(),
            has_unread: v.has_unread,
            unread_count: v.unread_count,
            unread_capped: v.unread_capped,
            mention_count: v.mention_count,
            mention_capped: v.mention_capped,
        }
    }
}

/// A user's read states, sorted by channel id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = ReadStates)]
pub struct ReadStatesBody {
    /// One entry per channel the user has a read state in.
    pub read_states: Vec<ReadStateBody>,
}

impl ReadStatesBody {
    /// Converts the service's views.
    pub fn from_views(views: Vec<ReadStateView>) -> Self {
        Self {
            read_states: views.into_iter().map(ReadStateBody::from).collect(),
        }
    }
}

/// Unread channel count and mention total of one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = Summary)]
pub struct SummaryBody {
    /// Channels with `has_unread`.
    pub unread_channels: u64,
    /// Sum of the channels' (capped) mention counts.
    pub mentions: u64,
}

impl From<Summary> for SummaryBody {
    fn from(s: Summary) -> Self {
        Self {
            unread_channels: s.unread_channels,
            mentions: s.mentions,
        }
    }
}

/// Summaries keyed by user id (decimal string), in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = Summaries)]
pub struct SummariesBody {
    /// `{"<user_id>": {unread_channels, mentions}}`.
    #[serde(serialize_with = "serialize_pairs")]
    #[schema(value_type = HashMap<String, SummaryBody>)]
    pub summaries: Vec<(String, SummaryBody)>,
}

fn serialize_pairs<S: Serializer>(
    pairs: &[(String, SummaryBody)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(pairs.iter().map(|(k, v)| (k, v)))
}

/// One page of read receipts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = Readers)]
pub struct ReadersBody {
    /// Users whose read position is at or past the message, sorted by id.
    pub readers: Vec<String>,
    /// Pass as `after` for the next page; null when this page is the last.
    pub next: Option<String>,
}

/// The outcome of one batch operation: `{"ok": true}` or `{"ok": false, "error": {problem}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct BatchResult {
    /// Whether the operation was applied.
    pub ok: bool,
    /// Why it was not (absent when `ok`): the same problem body as a failed request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ProblemBody>,
}

/// One result per operation, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = BatchResults)]
pub struct BatchResponse {
    /// The results.
    pub results: Vec<BatchResult>,
}

/// A health or readiness answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Status {
    /// `ok` (healthz) or `ready` (readyz).
    #[schema(example = "ok")]
    pub status: &'static str,
}
