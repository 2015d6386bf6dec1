//! The JSON shapes of the API (HTTP bodies, batch results, live event payloads): request bodies (strict: unknown fields are
//! rejected; ids accepted as strings or numbers) and response bodies (ids written as
//! decimal strings, because 64-bit integers do not survive JavaScript).

use serde::{Deserialize, Serialize, Serializer};
use utoipa::ToSchema;
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type,
};
use utoipa::openapi::{Ref, RefOr};

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
    #[schema(value_type = Option<Vec<IdInput>>, max_items = 100)]
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
    #[schema(schema_with = optional_timestamp_schema)]
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
    #[schema(value_type = Vec<IdInput>, max_items = 1000)]
    pub user_ids: Vec<BodyId<UserId>>,
}

/// `POST /v1/batch`: write operations applied in order, each with its own result.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The operations; each is parsed on its own, so a bad one fails alone.
    #[schema(value_type = Vec<BatchOp>, max_items = 1000)]
    #[serde(deserialize_with = "super::ops::literal_values")]
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

/// One batch operation, as the batch parser accepts it (see [`super::ops`]): an
/// object with `op` and the fields of that op, ids required or optional as the op
/// needs them; a field of another op may only be absent or null, and any other key
/// is refused. The document has one variant per op (`oneOf`, told apart by `op`).
#[derive(Debug)]
pub struct BatchOp;

impl utoipa::PartialSchema for BatchOp {
    fn schema() -> RefOr<Schema> {
        let variants = super::ops::OP_NAMES.iter().map(|&kind| {
            let (required, optional) = super::ops::op_fields(kind).unwrap_or_default();
            let mut variant = ObjectBuilder::new()
                .schema_type(Type::Object)
                .title(Some(kind))
                .description(Some(op_description(kind, required, optional)))
                .property(
                    "op",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some([kind])),
                )
                .required("op")
                .additional_properties(Some(AdditionalProperties::FreeForm(false)));
            for &field in &super::ops::OP_FIELDS[1..] {
                let schema = if required.contains(&field) {
                    variant = variant.required(field);
                    op_field_schema(field)
                } else if optional.contains(&field) {
                    OneOfBuilder::new()
                        .item(op_field_schema(field))
                        .item(ObjectBuilder::new().schema_type(Type::Null))
                        .into()
                } else {
                    // Another op's field: absent or null only.
                    ObjectBuilder::new().schema_type(Type::Null).into()
                };
                variant = variant.property(field, schema);
            }
            variant
        });
        variants
            .fold(OneOfBuilder::new(), OneOfBuilder::item)
            .description(Some(
                "One write operation: `op` and its fields (ids as numbers or decimal strings). \
                 Fields of other ops may be present only as null; other keys are refused.",
            ))
            .into()
    }
}

impl ToSchema for BatchOp {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("BatchOp")
    }
}

fn op_description(kind: &str, required: &[&str], optional: &[&str]) -> String {
    let list = |fields: &[&str]| {
        fields
            .iter()
            .map(|f| format!("`{f}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = format!("`{kind}`: needs {}", list(required));
    if !optional.is_empty() {
        text.push_str(&format!("; takes {}", list(optional)));
    }
    text
}

/// The schema of a batch op's field when it is given.
fn op_field_schema(field: &str) -> RefOr<Schema> {
    match field {
        "mentions" => ArrayBuilder::new()
            .items(RefOr::Ref(Ref::from_schema_name("IdInput")))
            .max_items(Some(crate::config::LimitsSettings::default().max_mentions))
            .description(Some(
                "Mentioned users (at most `limits.max_mentions`, 100 by default)",
            ))
            .into(),
        "last_read_message_id" => RefOr::Ref(Ref::from_schema_name("PositionInput")),
        "at" => timestamp_schema(),
        _ => RefOr::Ref(Ref::from_schema_name("IdInput")),
    }
}

/// `at` of an ack: ms since the Unix epoch, any unsigned 64-bit integer.
fn timestamp_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(0_u64))
        .maximum(Some(u64::MAX))
        .description(Some("When the ack was made, ms since the Unix epoch"))
        .into()
}

/// `at` of an ack body: a timestamp, or null.
fn optional_timestamp_schema() -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(timestamp_schema())
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .into()
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
