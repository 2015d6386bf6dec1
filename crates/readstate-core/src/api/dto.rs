//! The JSON shapes of the API (HTTP bodies, batch results, live event payloads): request bodies (strict: unknown fields are
//! rejected; ids accepted as strings or numbers) and response bodies (ids written as
//! decimal strings, because 64-bit integers do not survive JavaScript).

use serde::{Deserialize, Serialize, Serializer};
use utoipa::ToSchema;
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type,
};
use utoipa::openapi::{Ref, RefOr};

use super::ids::{BodyId, BodyPosition, IdInput, MAX_ID, PositionInput};
use super::problem::ProblemBody;
use crate::domain::{
    ChannelId, GroupId, Level, MUTED_FOREVER, MessageId, ReadStateView, Summary, UserId,
};
use crate::service::{ChannelInfo, StoredState, Threads};

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

/// `PUT /v1/channels/{channel_id}`: what a channel belongs to. Both fields are
/// replaced by each write (absent or null: unset); the write with the newest `at`
/// wins, so a redelivered old one changes nothing.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetChannelRequest {
    /// The parent channel when this channel is a thread; absent or null: not a
    /// thread. Not the channel itself, and not one of its own threads (no cycles).
    #[schema(value_type = Option<IdInput>)]
    pub parent_id: Option<BodyId<ChannelId>>,
    /// The group (guild, team, workspace, category); absent or null: none of its
    /// own (a thread then belongs to its parent's group).
    #[schema(value_type = Option<IdInput>)]
    pub group_id: Option<BodyId<GroupId>>,
    /// When the write was made (ms since the Unix epoch); the newest wins. Absent:
    /// the time it arrives.
    #[schema(schema_with = optional_stamp_schema)]
    pub at: Option<u64>,
}

/// `PUT .../settings`: a read state's notification settings. A field left out
/// keeps its value; per field, the write with the newest `at` wins.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsRequest {
    /// Muted until this time (ms since the Unix epoch); `0`: not muted; `null`:
    /// muted until unmuted. Absent: unchanged.
    #[serde(default, deserialize_with = "muted_until_field")]
    #[schema(schema_with = muted_until_schema)]
    pub muted_until: Option<u64>,
    /// `all` (unread and mentions count), `mentions` (only mentions) or `nothing`.
    /// Absent or null: unchanged.
    #[serde(default, deserialize_with = "level_field")]
    #[schema(schema_with = optional_level_schema)]
    pub level: Option<Level>,
    /// When the write was made (ms since the Unix epoch); the newest wins. Absent:
    /// the time it arrives.
    #[schema(schema_with = optional_stamp_schema)]
    pub at: Option<u64>,
}

/// Why a `muted_until` is refused, wherever it is read.
pub const MUTED_UNTIL_REASON: &str = "must be an integer between 0 and 9223372036854775807 (ms since the Unix epoch), or null (muted until unmuted)";

/// Why a `level` is refused, wherever it is read.
pub const LEVEL_REASON: &str = "must be one of all, mentions, nothing";

/// A `muted_until` value: an integer in 0..=2^63-1 as is, `null` as
/// [`MUTED_FOREVER`]. (Absent is the caller's business.)
///
/// # Errors
/// [`MUTED_UNTIL_REASON`] for anything else.
pub fn muted_until_from_value(value: &serde_json::Value) -> Result<u64, &'static str> {
    match value {
        serde_json::Value::Null => Ok(MUTED_FOREVER),
        serde_json::Value::Number(n) => n
            .as_u64()
            .filter(|v| *v <= MAX_ID)
            .ok_or(MUTED_UNTIL_REASON),
        _ => Err(MUTED_UNTIL_REASON),
    }
}

/// A `level` value: one of the names; null is `None` (unchanged).
///
/// # Errors
/// [`LEVEL_REASON`] for anything else.
pub fn level_from_value(value: &serde_json::Value) -> Result<Option<Level>, &'static str> {
    match value {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(name) => Level::parse(name).map(Some).ok_or(LEVEL_REASON),
        _ => Err(LEVEL_REASON),
    }
}

/// Called only for a present member, so absent stays `None` (by `default`). The
/// value is read literally: an object is never taken for the JSON text in a
/// serde_json raw-value member.
fn muted_until_field<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    let value = super::ops::literal_value(deserializer)?;
    muted_until_from_value(&value)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn level_field<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Level>, D::Error> {
    let value = super::ops::literal_value(deserializer)?;
    level_from_value(&value).map_err(serde::de::Error::custom)
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
    /// Needs `channel_id`; takes `parent_id`, `group_id`, `at`.
    SetChannel,
    /// Needs `user_id`, `channel_id`; takes `muted_until` (null: muted until
    /// unmuted; absent: unchanged), `level`, `at`.
    Settings,
    /// Needs `user_id`.
    DeleteUser,
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
        "at" => stamp_schema(
            "When the op was made, ms since the Unix epoch (`ack`: an ack older than the latest \
             mark unread is ignored; `set_channel`, `settings`: the newest write wins)",
        ),
        // Its null (muted until unmuted) is the null every optional field may be.
        "muted_until" => stamp_schema(
            "Muted until this time, ms since the Unix epoch (`0`: not muted); null: muted \
             until unmuted; absent: unchanged",
        ),
        "level" => level_schema(),
        _ => RefOr::Ref(Ref::from_schema_name("IdInput")),
    }
}

/// A timestamp (`at`, `muted_until`): ms since the Unix epoch, 0..=2^63-1 (stored
/// as SQL's signed 64-bit integers: `domain::MAX_STAMP`).
fn stamp_schema(description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(0_u64))
        .maximum(Some(crate::domain::MAX_STAMP))
        .description(Some(description))
        .into()
}

/// `item`, or null.
fn nullable(item: RefOr<Schema>) -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(item)
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .into()
}

/// `at` of an ack body: a timestamp, or null.
fn optional_timestamp_schema() -> RefOr<Schema> {
    nullable(stamp_schema(
        "When the ack was made, ms since the Unix epoch",
    ))
}

/// `at` of a settings or channel body: a timestamp, or null.
fn optional_stamp_schema() -> RefOr<Schema> {
    nullable(stamp_schema(
        "When the write was made, ms since the Unix epoch; the newest wins",
    ))
}

/// `muted_until` of a settings body: an integer, or null (muted until unmuted).
fn muted_until_schema() -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(stamp_schema(
            "Muted until this time, ms since the Unix epoch; `0`: not muted",
        ))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Null)
                .description(Some("Muted until unmuted")),
        )
        .description(Some(
            "ms since the Unix epoch (`0`: not muted), or null: muted until unmuted; absent: unchanged",
        ))
        .into()
}

/// A notification level name.
fn level_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["all", "mentions", "nothing"]))
        .description(Some(
            "Notification level: `all` (unread and mentions count), `mentions` (only mentions) or `nothing`",
        ))
        .into()
}

/// `level` of a settings body: a level, or null (unchanged).
fn optional_level_schema() -> RefOr<Schema> {
    nullable(level_schema())
}

/// `muted_until` of an export: an integer, or null (muted until unmuted).
fn exported_muted_until_schema() -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(stamp_schema(
            "Muted until this time, ms since the Unix epoch; `0`: not muted",
        ))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Null)
                .description(Some("Muted until unmuted")),
        )
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
    /// The oldest non-deleted message after the read position (where to jump to);
    /// null when nothing is unread or when `unread_capped` (it is older than the
    /// messages the service keeps).
    #[schema(example = "1501")]
    pub first_unread_message_id: Option<String>,
    /// Muted at the time of the answer (see the read state's settings).
    pub muted: bool,
    /// Notification level: `all`, `mentions` or `nothing`.
    #[schema(schema_with = level_schema)]
    pub level: &'static str,
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
            first_unread_message_id: v.first_unread_message_id.map(|m| m.to_string()),
            muted: v.muted,
            level: v.level.as_str(),
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

/// Unread channels and threads and the mention total of one user (over all read
/// states, or those of one group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = Summary)]
pub struct SummaryBody {
    /// Read states of channels that are not threads with `has_unread`, not muted,
    /// level `all`.
    pub unread_channels: u64,
    /// Read states of threads (channels with a parent) with `has_unread`, not
    /// muted, level `all`.
    pub unread_threads: u64,
    /// Sum of the (capped) mention counts of read states whose level is not
    /// `nothing`, muted or not.
    pub mentions: u64,
}

impl From<Summary> for SummaryBody {
    fn from(s: Summary) -> Self {
        Self {
            unread_channels: s.unread_channels,
            unread_threads: s.unread_threads,
            mentions: s.mentions,
        }
    }
}

/// Summaries keyed by user id (decimal string), in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = Summaries)]
pub struct SummariesBody {
    /// `{"<user_id>": {unread_channels, unread_threads, mentions}}`.
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

/// What a channel belongs to, and its newest message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = Channel)]
pub struct ChannelBody {
    /// The channel (decimal string).
    #[schema(example = "2001")]
    pub channel_id: String,
    /// The parent channel when this one is a thread; null: not a thread.
    #[schema(example = "2000")]
    pub parent_id: Option<String>,
    /// The channel's own group; null: none (a thread without one belongs to its
    /// parent's group).
    #[schema(example = json!(null))]
    pub group_id: Option<String>,
    /// The newest non-deleted message of the channel (`"0"`: none known).
    #[schema(example = "1502")]
    pub last_message_id: String,
}

impl From<ChannelInfo> for ChannelBody {
    fn from(c: ChannelInfo) -> Self {
        let id = |raw: u64| (raw != 0).then(|| raw.to_string());
        Self {
            channel_id: c.channel.to_string(),
            parent_id: id(c.parent),
            group_id: id(c.group),
            last_message_id: c.last_message_id.to_string(),
        }
    }
}

/// A summary per group in which the user has a read state, keyed by group id
/// (decimal string), in ascending order of id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = Groups)]
pub struct GroupsBody {
    /// `{"<group_id>": {unread_channels, unread_threads, mentions}}`.
    #[serde(serialize_with = "serialize_pairs")]
    #[schema(value_type = HashMap<String, SummaryBody>)]
    pub groups: Vec<(String, SummaryBody)>,
}

impl GroupsBody {
    /// Converts the service's summaries (already in ascending group id order).
    pub fn from_summaries(groups: impl IntoIterator<Item = (u64, Summary)>) -> Self {
        Self {
            groups: groups
                .into_iter()
                .map(|(g, s)| (g.to_string(), SummaryBody::from(s)))
                .collect(),
        }
    }
}

/// The user's unread threads under one channel: the counts over all of them and
/// one page of the read states that are unread or mention the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = Threads)]
pub struct ThreadsBody {
    /// Read states of threads of the channel with `has_unread`, not muted, level `all`.
    pub unread_threads: u64,
    /// Sum of their (capped) mention counts, level not `nothing`.
    pub mentions: u64,
    /// Read states of threads of the channel that have `has_unread` or a mention,
    /// sorted by channel id.
    pub read_states: Vec<ReadStateBody>,
    /// Pass as `after` for the next page; null when this page is the last.
    pub next: Option<String>,
}

impl From<Threads> for ThreadsBody {
    fn from(t: Threads) -> Self {
        Self {
            unread_threads: t.summary.unread_threads,
            mentions: t.summary.mentions,
            read_states: t.read_states.into_iter().map(ReadStateBody::from).collect(),
            next: t.next.map(|c| c.to_string()),
        }
    }
}

/// Everything stored about a user (`GET /v1/users/{user_id}/export`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = Export)]
pub struct ExportBody {
    /// The user (decimal string).
    #[schema(example = "42")]
    pub user_id: String,
    /// Each stored read state, sorted by channel id.
    pub read_states: Vec<ExportedStateBody>,
}

impl ExportBody {
    /// Converts the service's stored states.
    pub fn new(user: UserId, states: Vec<StoredState>) -> Self {
        Self {
            user_id: user.to_string(),
            read_states: states.into_iter().map(ExportedStateBody::from).collect(),
        }
    }
}

/// One read state as stored: position, mentions and settings, without the
/// derived fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = ExportedState)]
pub struct ExportedStateBody {
    /// The channel (decimal string).
    #[schema(example = "2001")]
    pub channel_id: String,
    /// The unread epoch: `"0"` until the state is first marked unread, then the
    /// time (ms since the Unix epoch) of its latest mark unread (decimal string).
    #[schema(example = "0")]
    pub epoch: String,
    /// The last message read in that epoch (`"0"`: nothing).
    #[schema(example = "1500")]
    pub last_read_message_id: String,
    /// The messages that mention the user and are kept (the newest ones, up to
    /// the mention window), ascending.
    #[schema(example = json!(["1502"]))]
    pub mention_ids: Vec<String>,
    /// Muted until this time (ms since the Unix epoch); `0`: not muted; null:
    /// muted until unmuted.
    #[schema(schema_with = exported_muted_until_schema)]
    pub muted_until: Option<u64>,
    /// When `muted_until` was set (ms since the Unix epoch; `0`: never).
    pub muted_at: u64,
    /// Notification level: `all`, `mentions` or `nothing`.
    #[schema(schema_with = level_schema)]
    pub level: &'static str,
    /// When `level` was set (ms since the Unix epoch; `0`: never).
    pub level_at: u64,
}

impl From<StoredState> for ExportedStateBody {
    fn from(s: StoredState) -> Self {
        Self {
            channel_id: s.channel.to_string(),
            epoch: s.read.epoch.to_string(),
            last_read_message_id: s.read.pos.to_string(),
            mention_ids: s.mentions.iter().map(u64::to_string).collect(),
            muted_until: (s.settings.muted_until != MUTED_FOREVER)
                .then_some(s.settings.muted_until),
            muted_at: s.settings.muted_at,
            level: s.settings.level.as_str(),
            level_at: s.settings.level_at,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(body: &str) -> Result<SettingsRequest, String> {
        let mut deserializer = serde_json::Deserializer::from_str(body);
        serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let path = e.path().to_string();
            format!("{path}: {}", e.into_inner())
        })
    }

    #[test]
    fn settings_tell_an_absent_muted_until_from_null() {
        let absent = settings(r#"{"level": "nothing"}"#).expect("valid");
        let null = settings(r#"{"muted_until": null}"#).expect("valid");
        let zero = settings(r#"{"muted_until": 0, "level": null}"#).expect("valid");

        assert_eq!(
            (absent.muted_until, absent.level),
            (None, Some(Level::Nothing))
        );
        assert_eq!((null.muted_until, null.level), (Some(MUTED_FOREVER), None));
        assert_eq!((zero.muted_until, zero.level), (Some(0), None));
    }

    #[test]
    fn bad_settings_name_their_field() {
        for (body, field) in [
            (r#"{"muted_until": -1}"#, "muted_until"),
            (r#"{"muted_until": 1.5}"#, "muted_until"),
            (r#"{"muted_until": "5"}"#, "muted_until"),
            (r#"{"muted_until": 9223372036854775808}"#, "muted_until"),
            // Read literally: not the text in serde_json's raw-value member.
            (
                r#"{"muted_until": {"$serde_json::private::RawValue": "5"}}"#,
                "muted_until",
            ),
            (r#"{"level": "loud"}"#, "level"),
            (
                r#"{"level": {"$serde_json::private::RawValue": "\"all\""}}"#,
                "level",
            ),
        ] {
            let error = settings(body).expect_err(body);
            assert!(error.starts_with(&format!("{field}: ")), "{body}: {error}");
        }
    }
}
