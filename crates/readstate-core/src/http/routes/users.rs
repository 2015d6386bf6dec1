//! A user's read states: join, leave, ack, mark unread, ack all, and the reads.

use crate::http::json::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use crate::api::dto::{
    AckRequest, JoinRequest, ReadStateBody, ReadStatesBody, SummaryBody, UnreadRequest,
};
use crate::domain::{ChannelId, Op};
use crate::http::HttpState;
use crate::http::extract::{
    ApiJson, ApiJsonOrEmpty, ApiPath, ApiQuery, UserChannelPath, UserPath, parse_id_list,
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
}

/// Get a user's read states.
///
/// All of them, or those of the listed channels, sorted by channel id. A user with
/// none gets an empty list.
#[utoipa::path(
    get,
    path = "/v1/users/{user_id}/read-states",
    tag = "read states",
    params(
        ("user_id" = String, Path, description = "User id (1..=2^63-1)"),
        ("channels" = Option<String>, Query, description = "Comma-separated channel ids, e.g. `1,2,3` (at most limits.max_channels_filter); absent = all"),
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
    let views = state
        .service
        .read_states(path.user, channels.as_deref())
        .await?;
    Ok(Json(ReadStatesBody::from_views(views)))
}

/// Get a user's summary.
///
/// Unread channel count and mention total (zero for a user with no read states).
#[utoipa::path(
    get,
    path = "/v1/users/{user_id}/summary",
    tag = "read states",
    params(("user_id" = String, Path, description = "User id (1..=2^63-1)")),
    responses(
        (status = 200, description = "The summary", body = SummaryBody),
        InvalidInputResponse,
        UnavailableResponse,
    )
)]
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %path.user))]
pub async fn get_summary(
    State(state): State<HttpState>,
    ApiPath(path): ApiPath<UserPath>,
) -> Result<Json<SummaryBody>, Problem> {
    Ok(Json(SummaryBody::from(
        state.service.summary(path.user).await?,
    )))
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
