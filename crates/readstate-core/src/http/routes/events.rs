//! Live changes of one user's read states: Server-Sent Events on
//! `GET /v1/users/{user_id}/events` and the same events as WebSocket text messages on
//! `GET /v1/users/{user_id}/events/ws`.
//!
//! Every event has an id (`<process>-<sequence>`). A client resumes with the
//! `Last-Event-ID` header (browsers' `EventSource` sends it on reconnect) or the
//! `last_event_id` query parameter; when the changes since then are no longer known,
//! or the client fell behind, it gets a `resync` event and refetches its read states.

use std::convert::Infallible;

use axum::extract::State;
use axum::extract::ws::{
    Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::domain::UserId;
use crate::http::HttpState;
use crate::http::extract::{ApiPath, ApiQuery, UserPath};
use crate::http::openapi::{InvalidInputResponse, UnavailableResponse};
use crate::http::problem::Problem;
use crate::live::wire::{ChangeBody, LiveEvent, UserBody, live_event};
use crate::live::{EventId, Item, Subscription};
use crate::service::Service;

/// One event of `GET /v1/users/{user_id}/events` as Server-Sent Events carry it
/// (the OpenAPI schema of each event of the stream; heartbeats are comments).
#[derive(Debug, utoipa::ToSchema)]
#[schema(as = StreamEvent)]
#[allow(dead_code)] // a documentation shape only: events are written by `Frame::sse`
pub struct StreamEventDoc {
    /// `ready` (first, when nothing was missed), `read_state` (a change), or `resync`
    /// (changes were missed: refetch the read states).
    #[schema(pattern = "^(ready|read_state|resync)$")]
    pub event: String,
    /// The event id, to resume after (`Last-Event-ID`).
    #[schema(example = "187a3f0c9d2e4b10-42")]
    pub id: String,
    /// JSON: `{"user_id"}` for `ready` and `resync`; for `read_state`, `type`,
    /// `user_id`, `channel_id` and the `read_state` as it is now (`null` once gone).
    pub data: String,
}

/// Query of the event streams.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Resume after this event id (the `Last-Event-ID` header wins when both are set).
    pub last_event_id: Option<String>,
    /// The bearer token, for browsers' `EventSource` (which cannot set headers);
    /// read by the access guard, never logged.
    #[serde(rename = "access_token")]
    pub _access_token: Option<crate::secret::Secret>,
}

/// One event as both transports send it; `data` is already JSON, so its keys keep
/// the order of the struct that wrote it.
struct Frame {
    event: &'static str,
    id: EventId,
    data: String,
}

/// The WebSocket message: `{"event": ..., "id": ..., "data": {...}}`, in that order.
#[derive(Serialize)]
struct WsMessage<'a> {
    event: &'static str,
    id: String,
    data: &'a RawValue,
}

impl Frame {
    fn new(event: &'static str, id: EventId, data: &impl Serialize) -> Self {
        Self {
            event,
            id,
            // Serializing these plain structs of strings cannot fail.
            data: serde_json::to_string(data).unwrap_or_default(),
        }
    }

    fn sse(&self) -> SseEvent {
        SseEvent::default()
            .event(self.event)
            .id(self.id.to_string())
            .data(&self.data)
    }

    fn ws(&self) -> String {
        let message = RawValue::from_string(self.data.clone()).map(|data| {
            serde_json::to_string(&WsMessage {
                event: self.event,
                id: self.id.to_string(),
                data: &data,
            })
        });
        match message {
            Ok(Ok(text)) => text,
            // `data` was written by serde_json above, so it is valid JSON.
            _ => String::new(),
        }
    }
}

/// Turns a subscription item into what is sent, reading the read state as it is now;
/// `None` for a channel-wide change that does not concern this user.
async fn frame(service: &Service, user: u64, item: Item) -> Option<Frame> {
    let user_body = || UserBody {
        user_id: user.to_string(),
    };
    Some(match live_event(service, user, item).await? {
        LiveEvent::Ready { id } => Frame::new("ready", id, &user_body()),
        LiveEvent::Resync { id } => Frame::new("resync", id, &user_body()),
        LiveEvent::Change { id, change } => Frame::new("read_state", id, &ChangeBody::from(change)),
    })
}

fn subscribe(
    state: &HttpState,
    user: UserId,
    headers: &HeaderMap,
    query: EventsQuery,
) -> Result<Subscription, Problem> {
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(query.last_event_id);
    Ok(state.service.subscribe(user, last.as_deref())?)
}

/// Stream of a user's changes (SSE).
///
/// A `text/event-stream` of the user's read-state changes: an ack from another device,
/// a mention, mark unread, join, leave, a deleted message or channel. Events:
/// `ready` (first, when nothing was missed), `read_state` (data: `type`, `user_id`,
/// `channel_id` and the `read_state` as it is now, `null` once gone), `resync`
/// (refetch the read states: changes were missed). Heartbeat comments keep idle
/// connections open. Resume with `Last-Event-ID`. New messages in a channel are not
/// streamed (the chat gateway delivers them).
#[utoipa::path(
    get,
    path = "/v1/users/{user_id}/events",
    tag = "read states",
    params(
        ("user_id" = String, Path, description = "User id (1..=2^63-1)"),
        ("last_event_id" = Option<String>, Query, description = "Resume after this event id (or send the Last-Event-ID header)"),
        ("access_token" = Option<String>, Query, description = "The bearer token, for clients that cannot send `Authorization` (a browser's EventSource); the header wins when both are sent"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id"),
    ),
    responses(
        (status = 200, description = "An endless event stream; the schema is that of each event", content_type = "text/event-stream", body = StreamEventDoc,
            example = json!({"event": "read_state", "id": "187a3f0c9d2e4b10-42", "data": "{\"type\":\"ack\",\"user_id\":\"1\",\"channel_id\":\"10\",\"read_state\":{\"channel_id\":\"10\",\"last_read_message_id\":\"500\",\"last_message_id\":\"500\",\"has_unread\":false,\"unread_count\":0,\"unread_capped\":false,\"mention_count\":0,\"mention_capped\":false}}"})),
        InvalidInputResponse,
        UnavailableResponse,
    )
)]
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %path.user))]
pub async fn get_events(
    State(state): State<HttpState>,
    ApiPath(path): ApiPath<UserPath>,
    ApiQuery(query): ApiQuery<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, Problem> {
    let user = path.user.get();
    let subscription = subscribe(&state, path.user, &headers, query)?;
    let heartbeat = state.service.heartbeat();
    let stream = futures_util::stream::unfold(
        (subscription, state.service),
        move |(mut subscription, service)| async move {
            loop {
                let item = subscription.next().await?;
                if let Some(frame) = frame(&service, user, item).await {
                    return Some((Ok(frame.sse()), (subscription, service)));
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat")))
}

/// Stream of a user's changes (WebSocket).
///
/// The events of `GET /v1/users/{user_id}/events`, one JSON text message each:
/// `{"event": "ready"|"read_state"|"resync", "id": "...", "data": {...}}`. Pings keep
/// idle connections open; messages from the client are ignored. Resume with the
/// `last_event_id` query parameter.
#[utoipa::path(
    get,
    path = "/v1/users/{user_id}/events/ws",
    tag = "read states",
    params(
        ("user_id" = String, Path, description = "User id (1..=2^63-1)"),
        ("last_event_id" = Option<String>, Query, description = "Resume after this event id"),
        ("access_token" = Option<String>, Query, description = "The bearer token, for clients that cannot send `Authorization` (browsers' WebSocket); the header wins when both are sent"),
        ("Connection" = String, Header, description = "The WebSocket handshake (RFC 6455): a token list that includes `upgrade`; without it, 400 naming `upgrade`"),
        ("Upgrade" = String, Header, description = "`websocket`"),
        ("Sec-WebSocket-Version" = String, Header, description = "`13`"),
        ("Sec-WebSocket-Key" = String, Header, description = "The client's handshake nonce (16 random bytes, base64)"),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        InvalidInputResponse,
        UnavailableResponse,
    )
)]
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %path.user))]
pub async fn get_events_ws(
    State(state): State<HttpState>,
    ApiPath(path): ApiPath<UserPath>,
    ApiQuery(query): ApiQuery<EventsQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, Problem> {
    let upgrade = upgrade.map_err(|e| Problem::invalid("upgrade", e.body_text()))?;
    let user = path.user.get();
    let subscription = subscribe(&state, path.user, &headers, query)?;
    let service = state.service;
    Ok(upgrade
        .on_upgrade(move |socket| websocket(socket, subscription, service, user))
        .into_response())
}

async fn websocket(
    mut socket: WebSocket,
    mut subscription: Subscription,
    service: std::sync::Arc<Service>,
    user: u64,
) {
    let mut heartbeat = tokio::time::interval(service.heartbeat());
    heartbeat.tick().await;
    loop {
        tokio::select! {
            item = subscription.next() => {
                let Some(item) = item else {
                    // Shutting down.
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                };
                if let Some(frame) = frame(&service, user, item).await
                    && socket.send(Message::Text(frame.ws().into())).await.is_err()
                {
                    return;
                }
            }
            _ = heartbeat.tick() => {
                if socket.send(Message::Ping(bytes::Bytes::new())).await.is_err() {
                    return;
                }
            }
            received = socket.recv() => match received {
                None | Some(Err(_) | Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
