//! Channel routes: message created and deleted, channel deleted, a channel's
//! metadata (parent and group), read receipts.

use crate::http::json::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use crate::api::dto::{ChannelBody, CreateMessageRequest, ReadersBody, SetChannelRequest};
use crate::domain::{Op, UserId};
use crate::http::HttpState;
use crate::http::extract::{ApiId, ApiJson, ApiPath, ApiQuery, ChannelPath, MessagePath};
use crate::http::openapi::{
    BodyResponses, ChannelNotFoundResponse, InvalidInputResponse, UnavailableResponse,
};
use crate::http::problem::Problem;

/// Message created.
///
/// The channel learns the message, the author's read position moves to it (you have
/// read what you wrote) and each mentioned user other than the author gets the mention.
/// Idempotent and order-insensitive.
#[utoipa::path(
    post,
    path = "/v1/channels/{channel_id}/messages",
    tag = "channels",
    params(("channel_id" = String, Path, description = "Channel id (1..=2^63-1)")),
    request_body = CreateMessageRequest,
    responses(
        (status = 204, description = "Applied (idempotent: a repeat changes nothing)"),
        InvalidInputResponse,
        BodyResponses,
        UnavailableResponse,
    )
)]
#[tracing::instrument(level = "debug", skip_all, fields(channel_id = %path.channel, message_id = %body.message_id.get()))]
pub async fn create_message(
    State(state): State<HttpState>,
    ApiPath(path): ApiPath<ChannelPath>,
    ApiJson(body): ApiJson<CreateMessageRequest>,
) -> Result<StatusCode, Problem> {
    let op = Op::MessageCreated {
        channel: path.channel,
        message: body.message_id.get(),
        author: body.author_id.map(|a| a.get()),
        mentions: body
            .mentions
            .unwrap_or_default()
            .into_iter()
            .map(|m| m.get())
            .collect(),
    };
    state.service.execute(&op).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Message deleted.
///
/// The message stops counting as unread and as a mention everywhere. The deletion is
/// remembered, so a late create does not bring the message back.
#[utoipa::path(
    delete,
    path = "/v1/channels/{channel_id}/messages/{message_id}",
    tag = "channels",
    params(
        ("channel_id" = String, Path, description = "Channel id (1..=2^63-1)"),
        ("message_id" = String, Path, description = "Message id (1..=2^63-1)"),
    ),
    responses(
        (status = 204, description = "Applied (idempotent)"),
        InvalidInputResponse,
        UnavailableResponse,
    )
)]
#[tracing::instrument(level = "debug", skip_all, fields(channel_id = %path.channel, message_id = %path.message))]
pub async fn delete_message(
    State(state): State<HttpState>,
    ApiPath(path): ApiPath<MessagePath>,
) -> Result<StatusCode, Problem> {
    state
        .service
        .execute(&Op::MessageDeleted {
            channel: path.channel,
            message: path.message,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Delete a channel.
///
/// Removes the channel and every read state in it. A message arriving afterwards
/// starts the channel afresh.
#[utoipa::path(
    delete,
    path = "/v1/channels/{channel_id}",
    tag = "channels",
    params(("channel_id" = String, Path, description = "Channel id (1..=2^63-1)")),
    responses(
        (status = 204, description = "Deleted (idempotent)"),
        InvalidInputResponse,
        UnavailableResponse,
    )
)]
#[tracing::instrument(level = "debug", skip_all, fields(channel_id = %path.channel))]
pub async fn delete_channel(
    State(state): State<HttpState>,
    ApiPath(path): ApiPath<ChannelPath>,
) -> Result<StatusCode, Problem> {
    state
        .service
        .execute(&Op::DeleteChannel {
            channel: path.channel,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Set what a channel belongs to.
///
/// `parent_id` makes the channel a thread of that channel; `group_id` puts it in a
/// group (guild, team, workspace, category). A thread without a group of its own
/// belongs to its parent's. Each write replaces both fields (absent or null:
/// unset) and is idempotent; the write with the newest `at` wins, so a redelivered
/// old one changes nothing. A parent that is the channel itself, or one of its own
/// threads (a cycle), is refused naming `parent_id`.
#[utoipa::path(
    put,
    path = "/v1/channels/{channel_id}",
    tag = "channels",
    params(("channel_id" = String, Path, description = "Channel id (1..=2^63-1)")),
    request_body(content = SetChannelRequest, example = json!({"parent_id": "2000", "group_id": null})),
    responses(
        (status = 200, description = "The channel after the write", body = ChannelBody,
            example = json!({"channel_id": "2001", "parent_id": "2000", "group_id": null, "last_message_id": "0"})),
        InvalidInputResponse,
        BodyResponses,
        UnavailableResponse,
    )
)]
#[tracing::instrument(level = "debug", skip_all, fields(channel_id = %path.channel))]
pub async fn set_channel(
    State(state): State<HttpState>,
    ApiPath(path): ApiPath<ChannelPath>,
    ApiJson(body): ApiJson<SetChannelRequest>,
) -> Result<Json<ChannelBody>, Problem> {
    let op = Op::SetChannel {
        channel: path.channel,
        parent: body.parent_id.map(|p| p.get()),
        group: body.group_id.map(|g| g.get()),
        at: body.at,
    };
    state.service.execute(&op).await?;
    let info = state.service.channel_after_write(path.channel).await?;
    Ok(Json(ChannelBody::from(info)))
}

/// Get a channel.
///
/// What the channel belongs to and its newest message; 404 for a channel the
/// service has never seen (no message, no metadata).
#[utoipa::path(
    get,
    path = "/v1/channels/{channel_id}",
    tag = "channels",
    params(("channel_id" = String, Path, description = "Channel id (1..=2^63-1)")),
    responses(
        (status = 200, description = "The channel", body = ChannelBody),
        InvalidInputResponse,
        ChannelNotFoundResponse,
        UnavailableResponse,
    )
)]
#[tracing::instrument(level = "debug", skip_all, fields(channel_id = %path.channel))]
pub async fn get_channel(
    State(state): State<HttpState>,
    ApiPath(path): ApiPath<ChannelPath>,
) -> Result<Json<ChannelBody>, Problem> {
    let info = state.service.channel(path.channel).await?;
    Ok(Json(ChannelBody::from(info)))
}

/// Query of `readers`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadersQuery {
    /// Page size.
    pub limit: Option<String>,
    /// Cursor: the `next` of the previous page (a user id).
    pub after: Option<String>,
}

/// Read receipts.
///
/// The users whose read position is at or past the message, sorted by user id, one
/// page at a time: pass `next` as `after` to get the following page.
#[utoipa::path(
    get,
    path = "/v1/channels/{channel_id}/messages/{message_id}/readers",
    tag = "channels",
    params(
        ("channel_id" = String, Path, description = "Channel id (1..=2^63-1)"),
        ("message_id" = String, Path, description = "Message id (1..=2^63-1)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size, 1..=limits.max_page (1000 unless configured); 100 when absent"),
        ("after" = Option<String>, Query, description = "Cursor: the `next` of the previous page (a user id)"),
    ),
    responses(
        (status = 200, description = "One page", body = ReadersBody),
        InvalidInputResponse,
        UnavailableResponse,
    )
)]
#[tracing::instrument(level = "debug", skip_all, fields(channel_id = %path.channel, message_id = %path.message))]
pub async fn get_readers(
    State(state): State<HttpState>,
    ApiPath(path): ApiPath<MessagePath>,
    ApiQuery(query): ApiQuery<ReadersQuery>,
) -> Result<Json<ReadersBody>, Problem> {
    // Anything but an integer in range gets the service's range error (0 is out of
    // range), so the limit is checked in one place.
    let limit = query
        .limit
        .as_deref()
        .map(|text| text.parse::<u32>().unwrap_or(0));
    let after = match query.after.as_deref() {
        None => None,
        Some(text) => Some(
            UserId::from_text(text)
                .map_err(|_| Problem::invalid("after", crate::http::extract::id_reason()))?,
        ),
    };
    let (readers, next) = state
        .service
        .readers(path.channel, path.message, after, limit)
        .await?;
    Ok(Json(ReadersBody {
        readers: readers.into_iter().map(|u| u.to_string()).collect(),
        next: next.map(|u| u.to_string()),
    }))
}
