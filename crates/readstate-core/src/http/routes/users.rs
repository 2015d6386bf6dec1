//! A user's read states: join, leave, ack, mark unread, ack all, notification
//! settings, and the reads (overall, per group, threads); deleting and exporting
//! a user.

use crate::http::json::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use crate::api::dto::{
    AckRequest, ExportBody, GroupsBody, JoinRequest, ReadStateBody, ReadStatesBody,
    SettingsRequest, SummaryBody, ThreadsBody, UnreadRequest,
};
use crate::domain::{ChannelId, GroupId, Op};
use crate::http::HttpState;
use crate::http::extract::{
    ApiId, ApiJson, ApiJsonOrEmpty, ApiPath, ApiQuery, UserChannelPath, UserPath, id_reason,
    parse_id_list,
};
use crate::http::openapi::{
    BodyResponses, InvalidInputResponse, NotFoundResponse, UnavailableResponse,
};
use crate::http::problem::Problem;

/// Applies `op`, then answers the user's read state in the channel.
async fn execute_and_read(
    state: &HttpState,
    op: Op,
    path: UserChannelPath,
) -> Result<Json<ReadStateBody>, Problem> {
    state.service.execute(&op).await?;
    let view = state.service.read_state(path.user, path.channel).await?;
    Ok(Json(ReadStateBody::from(view)))
}

/// Join a channel.
///
/// Creates the read state, by default at the channel's newest message (nothing
/// unread), or at `last_read_message_id` (`0`: nothing read). A no-op when the read
/// state exists. The body is optional.
#[utoipa::path(
    put,
    path = "/v1/users/{user_id}/channels/{channel_id}",
    tag = "read states",
    params(
        ("user_id" = String, Path, description = "User id (1..=2^63-1)"),
        ("channel_id" = String, Path, description = "Channel id (1..=2^63-1)"),
    ),
    request_body(content = Option<JoinRequest>, description = "Optional; an empty body joins at the channel's head"),
    responses(
        (status = 200, description = "The read state", body = ReadStateBody),
        InvalidInputResponse,
        BodyResponses,
        UnavailableResponse,
    )
)]
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %path.user, channel_id = %path.channel))]
pub async fn join_channel(
    State(state): State<HttpState>,
    ApiPath(path): ApiPath<UserChannelPath>,
    ApiJsonOrEmpty(body): ApiJsonOrEmpty<JoinRequest>,
) -> Result<Json<ReadStateBody>, Problem> {
    let read = body.unwrap_or_default().last_read_message_id.map(|p| p.0);
    execute_and_read(
        &state,
        Op::Join {
            user: path.user,
            channel: path.channel,
            read,
        },
        path,
    )
    .await
}

/// Leave a channel.
///
/// Removes the read state (idempotent).
#[utoipa::path(
    delete,
    path = "/v1/users/{user_id}/channels/{channel_id}",
    tag = "read states",
    params(
        ("user_id" = String, Path, description = "User id (1..=2^63-1)"),
        ("channel_id" = String, Path, description = "Channel id (1..=2^63-1)"),
    ),
    responses(
        (status = 204, description = "Removed (or was absent)"),
        InvalidInputResponse,
        UnavailableResponse,
    )
)]
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %path.user, channel_id = %path.channel))]
pub async fn leave_channel(
    State(state): State<HttpState>,
    ApiPath(path): ApiPath<UserChannelPath>,
) -> Result<StatusCode, Problem> {
    state
        .service
        .execute(&Op::Leave {
            user: path.user,
            channel: path.channel,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Get one read state.
///
/// The read state with its derived fields; 404 when the user has none in the channel.
#[utoipa::path(
    get,
    path = "/v1/users/{user_id}/channels/{channel_id}",
    tag = "read states",
    params(
        ("user_id" = String, Path, description = "User id (1..=2^63-1)"),
        ("channel_id" = String, Path, description = "Channel id (1..=2^63-1)"),
    ),
    responses(
        (status = 200, description = "The read state", body = ReadStateBody),
        InvalidInputResponse,
        NotFoundResponse,
        UnavailableResponse,
    )
)]
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %path.user, channel_id = %path.channel))]
pub async fn get_read_state(
    State(state): State<HttpState>,
    ApiPath(path): ApiPath<UserChannelPath>,
) -> Result<Json<ReadStateBody>, Problem> {
    let view = state.service.read_state(path.user, path.channel).await?;
    Ok(Json(ReadStateBody::from(view)))
}

/// Ack.
///
/// The read position moves forward to the message, never backwards. Creates the read
/// state (at 0) when absent; the message may be one the service has not seen yet.
#[utoipa::path(
    post,
    path = "/v1/users/{user_id}/channels/{channel_id}/ack",
    tag = "read states",
    params(
        ("user_id" = String, Path, description = "User id (1..=2^63-1)"),
        ("channel_id" = String, Path, description = "Channel id (1..=2^63-1)"),
    ),
    request_body = AckRequest,
    responses(
        (status = 200, description = "The read state after the ack", body = ReadStateBody),
        InvalidInputResponse,
        BodyResponses,
        UnavailableResponse,
    )
)]
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %path.user, channel_id = %path.channel))]
pub async fn ack_channel(
    State(state): State<HttpState>,
    ApiPath(path): ApiPath<UserChannelPath>,
    ApiJson(body): ApiJson<AckRequest>,
) -> Result<Json<ReadStateBody>, Problem> {
    let op = Op::Ack {
        user: path.user,
        channel: path.channel,
        message: body.message_id.get(),
        at: body.at,
    };
    execute_and_read(&state, op, path).await
}

/// Mark unread.
///
/// The read position becomes `message_id - 1`, so that message and later ones
/// (mentions included) are unread again.
#[utoipa::path(
    post,
    path = "/v1/users/{user_id}/channels/{channel_id}/unread",
    tag = "read states",
    params(
        ("user_id" = String, Path, description = "User id (1..=2^63-1)"),
        ("channel_id" = String, Path, description = "Channel id (1..=2^63-1)"),
    ),
    request_body = UnreadRequest,
    responses(
        (status = 200, description = "The read state after marking unread", body = ReadStateBody),
        InvalidInputResponse,
        BodyResponses,
        UnavailableResponse,
    )
)]
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %path.user, channel_id = %path.channel))]
pub async fn unread_channel(
    State(state): State<HttpState>,
    ApiPath(path): ApiPath<UserChannelPath>,
    ApiJson(body): ApiJson<UnreadRequest>,
) -> Result<Json<ReadStateBody>, Problem> {
    let op = Op::Unread {
        user: path.user,
        channel: path.channel,
        message: body.message_id.get(),
    };
    execute_and_read(&state, op, path).await
}

/// Query of `read-states`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadStatesQuery {
    /// Comma-separated channel ids (`1,2,3`); absent = all.
    pub channels: Option<String>,
    /// Only the read states of channels in this group (own or inherited).
    pub group_id: Option<String>,
}

/// Query of `summary`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryQuery {
    /// Only the read states of channels in this group (own or inherited).
    pub group_id: Option<String>,
}

/// The `group_id` query parameter, when given.
fn group_param(text: Option<&str>) -> Result<Option<GroupId>, Problem> {
    text.map(|text| GroupId::from_text(text).map_err(|_| Problem::invalid("group_id", id_reason())))
        .transpose()
}

/// Get a user's read states.
///
/// All of them, those of the listed channels, or those of the channels of one group
/// (a thread without a group of its own is in its parent's), sorted by channel id;
/// with both filters, the listed channels that are in the group. A user with none
/// gets an empty list.
#[utoipa::path(
    get,
    path = "/v1/users/{user_id}/read-states",
    tag = "read states",
    params(
        ("user_id" = String, Path, description = "User id (1..=2^63-1)"),
        ("channels" = Option<String>, Query, description = "Comma-separated channel ids, e.g. `1,2,3` (at most limits.max_channels_filter); absent = all"),
        ("group_id" = Option<String>, Query, description = "Only the channels of this group (1..=2^63-1), own or inherited from a thread's parent; with `channels`, the listed channels in the group"),
    ),
    responses(
        (status = 200, description = "The read states", body = ReadStatesBody),
        InvalidInputResponse,
        UnavailableResponse,
    )
)]
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %path.user))]
pub async fn get_read_states(
    State(state): State<HttpState>,
    ApiPath(path): ApiPath<UserPath>,
    ApiQuery(query): ApiQuery<ReadStatesQuery>,
) -> Result<Json<ReadStatesBody>, Problem> {
    let channels: Option<Vec<ChannelId>> = match query.channels.as_deref() {
        None => None,
        Some(text) => {
            // The service checks how many.
            Some(parse_id_list("channels", text)?)
        }
    };
    let group = group_param(query.group_id.as_deref())?;
    let views = state
        .service
        .read_states_filtered(path.user, channels.as_deref(), group)
        .await?;
    Ok(Json(ReadStatesBody::from_views(views)))
}

/// Get a user's summary.
///
/// Unread channels, unread threads and the mention total, over all the user's read
/// states or those of one group (zero for a user with none). A read state counts as
/// unread when it has `has_unread`, is not muted and its level is `all`; its
/// mentions count unless its level is `nothing`, muted or not.
#[utoipa::path(
    get,
    path = "/v1/users/{user_id}/summary",
    tag = "read states",
    params(
        ("user_id" = String, Path, description = "User id (1..=2^63-1)"),
        ("group_id" = Option<String>, Query, description = "Only the channels of this group (1..=2^63-1), own or inherited from a thread's parent"),
    ),
    responses(
        (status = 200, description = "The summary", body = SummaryBody,
            example = json!({"unread_channels": 3, "unread_threads": 1, "mentions": 2})),
        InvalidInputResponse,
        UnavailableResponse,
    )
)]
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %path.user))]
pub async fn get_summary(
    State(state): State<HttpState>,
    ApiPath(path): ApiPath<UserPath>,
    ApiQuery(query): ApiQuery<SummaryQuery>,
) -> Result<Json<SummaryBody>, Problem> {
    let summary = match group_param(query.group_id.as_deref())? {
        Some(group) => state.service.group_summary(path.user, group).await?,
        None => state.service.summary(path.user).await?,
    };
    Ok(Json(SummaryBody::from(summary)))
}

/// Get a user's summary per group.
///
/// The summary of each group in which the user has a read state (the badges of a
/// guild or team list in one call), keyed by group id. Read states of channels in no
/// group are left out.
#[utoipa::path(
    get,
    path = "/v1/users/{user_id}/groups",
    tag = "read states",
    params(("user_id" = String, Path, description = "User id (1..=2^63-1)")),
    responses(
        (status = 200, description = "One summary per group", body = GroupsBody,
            example = json!({"groups": {"7": {"unread_channels": 2, "unread_threads": 1, "mentions": 1}}})),
        InvalidInputResponse,
        UnavailableResponse,
    )
)]
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %path.user))]
pub async fn get_groups(
    State(state): State<HttpState>,
    ApiPath(path): ApiPath<UserPath>,
) -> Result<Json<GroupsBody>, Problem> {
    let groups = state.service.groups(path.user).await?;
    Ok(Json(GroupsBody::from_summaries(groups)))
}

/// Query of `threads`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreadsQuery {
    /// Page size.
    pub limit: Option<String>,
    /// Cursor: the `next` of the previous page (a channel id).
    pub after: Option<String>,
}

/// Get a user's unread threads under a channel.
///
/// The counts over the user's read states of the channel's threads, and one page of
/// those that have `has_unread` or a mention, sorted by channel id: pass `next` as
/// `after` to get the following page.
#[utoipa::path(
    get,
    path = "/v1/users/{user_id}/channels/{channel_id}/threads",
    tag = "read states",
    params(
        ("user_id" = String, Path, description = "User id (1..=2^63-1)"),
        ("channel_id" = String, Path, description = "The parent channel's id (1..=2^63-1)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size, 1..=limits.max_page (1000 unless configured); 100 when absent"),
        ("after" = Option<String>, Query, description = "Cursor: the `next` of the previous page (a channel id)"),
    ),
    responses(
        (status = 200, description = "The counts and one page", body = ThreadsBody),
        InvalidInputResponse,
        UnavailableResponse,
    )
)]
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %path.user, channel_id = %path.channel))]
pub async fn get_threads(
    State(state): State<HttpState>,
    ApiPath(path): ApiPath<UserChannelPath>,
    ApiQuery(query): ApiQuery<ThreadsQuery>,
) -> Result<Json<ThreadsBody>, Problem> {
    // As readers: anything but an integer in range gets the service's range error.
    let limit = query
        .limit
        .as_deref()
        .map(|text| text.parse::<u32>().unwrap_or(0));
    let after = query
        .after
        .as_deref()
        .map(|text| ChannelId::from_text(text).map_err(|_| Problem::invalid("after", id_reason())))
        .transpose()?;
    let threads = state
        .service
        .threads(path.user, path.channel, after, limit)
        .await?;
    Ok(Json(ThreadsBody::from(threads)))
}

/// Set notification settings.
///
/// Mutes the read state (`muted_until`: ms since the Unix epoch; `0`: not muted;
/// `null`: until unmuted) and sets its level (`all`, `mentions`, `nothing`). A field
/// left out keeps its value. Per field, the write with the newest `at` wins, so a
/// redelivered old write changes nothing. Creates the read state (at the channel's
/// newest message) when absent.
#[utoipa::path(
    put,
    path = "/v1/users/{user_id}/channels/{channel_id}/settings",
    tag = "read states",
    params(
        ("user_id" = String, Path, description = "User id (1..=2^63-1)"),
        ("channel_id" = String, Path, description = "Channel id (1..=2^63-1)"),
    ),
    request_body(content = SettingsRequest, example = json!({"muted_until": null, "level": "mentions"})),
    responses(
        (status = 200, description = "The read state after the write", body = ReadStateBody),
        InvalidInputResponse,
        BodyResponses,
        UnavailableResponse,
    )
)]
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %path.user, channel_id = %path.channel))]
pub async fn put_settings(
    State(state): State<HttpState>,
    ApiPath(path): ApiPath<UserChannelPath>,
    ApiJson(body): ApiJson<SettingsRequest>,
) -> Result<Json<ReadStateBody>, Problem> {
    let op = Op::Settings {
        user: path.user,
        channel: path.channel,
        muted_until: body.muted_until,
        level: body.level,
        at: body.at,
    };
    execute_and_read(&state, op, path).await
}

/// Delete a user.
///
/// Removes every read state, mention and setting of the user, in memory and in
/// storage (idempotent). It takes effect in arrival order: a later write starts the
/// user afresh.
#[utoipa::path(
    delete,
    path = "/v1/users/{user_id}",
    tag = "read states",
    params(("user_id" = String, Path, description = "User id (1..=2^63-1)")),
    responses(
        (status = 204, description = "Deleted (or had nothing)"),
        InvalidInputResponse,
        UnavailableResponse,
    )
)]
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %path.user))]
pub async fn delete_user(
    State(state): State<HttpState>,
    ApiPath(path): ApiPath<UserPath>,
) -> Result<StatusCode, Problem> {
    state
        .service
        .execute(&Op::DeleteUser { user: path.user })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Export a user.
///
/// Everything stored about the user: each read state's position with its unread
/// epoch, the ids of the messages that mention the user, and the notification
/// settings with the time each was set. A user with nothing stored gets an empty list.
#[utoipa::path(
    get,
    path = "/v1/users/{user_id}/export",
    tag = "read states",
    params(("user_id" = String, Path, description = "User id (1..=2^63-1)")),
    responses(
        (status = 200, description = "Everything stored about the user", body = ExportBody,
            example = json!({"user_id": "42", "read_states": [{"channel_id": "2001", "epoch": "0",
                "last_read_message_id": "1500", "mention_ids": ["1502"], "muted_until": null,
                "muted_at": 1700000000000_u64, "level": "all", "level_at": 0}]})),
        InvalidInputResponse,
        UnavailableResponse,
    )
)]
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %path.user))]
pub async fn export_user(
    State(state): State<HttpState>,
    ApiPath(path): ApiPath<UserPath>,
) -> Result<Json<ExportBody>, Problem> {
    let states = state.service.export(path.user).await?;
    Ok(Json(ExportBody::new(path.user, states)))
}

/// Mark all as read.
///
/// Every read state of the user moves forward to its channel's newest message (never
/// backwards), in one operation.
#[utoipa::path(
    post,
    path = "/v1/users/{user_id}/ack-all",
    tag = "read states",
    params(("user_id" = String, Path, description = "User id (1..=2^63-1)")),
    responses(
        (status = 200, description = "All the user's read states afterwards, sorted by channel id", body = ReadStatesBody),
        InvalidInputResponse,
        UnavailableResponse,
    )
)]
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %path.user))]
pub async fn ack_all(
    State(state): State<HttpState>,
    ApiPath(path): ApiPath<UserPath>,
) -> Result<Json<ReadStatesBody>, Problem> {
    state
        .service
        .execute(&Op::AckAll { user: path.user })
        .await?;
    let views = state.service.read_states(path.user, None).await?;
    Ok(Json(ReadStatesBody::from_views(views)))
}
