//! The route table. Handlers parse the request, call the service and render the
//! result; no business rule lives here.

pub mod batch;
pub mod channels;
pub mod events;
pub mod ops;
pub mod summaries;
pub mod users;

use axum::Router;
use axum::routing::{delete, get, post, put};

use super::HttpState;

/// The `/v1` API routes (counted against the in-flight limits by the caller).
pub fn api() -> Router<HttpState> {
    Router::new()
        .route(
            "/v1/channels/{channel_id}",
            delete(channels::delete_channel)
                .put(channels::set_channel)
                .get(channels::get_channel),
        )
        .route(
            "/v1/channels/{channel_id}/messages",
            post(channels::create_message),
        )
        .route(
            "/v1/channels/{channel_id}/messages/{message_id}",
            delete(channels::delete_message),
        )
        .route(
            "/v1/channels/{channel_id}/messages/{message_id}/readers",
            get(channels::get_readers),
        )
        .route(
            "/v1/users/{user_id}/channels/{channel_id}",
            put(users::join_channel)
                .delete(users::leave_channel)
                .get(users::get_read_state),
        )
        .route(
            "/v1/users/{user_id}/channels/{channel_id}/ack",
            post(users::ack_channel),
        )
        .route(
            "/v1/users/{user_id}/channels/{channel_id}/unread",
            post(users::unread_channel),
        )
        .route(
            "/v1/users/{user_id}/channels/{channel_id}/settings",
            put(users::put_settings),
        )
        .route(
            "/v1/users/{user_id}/channels/{channel_id}/threads",
            get(users::get_threads),
        )
        .route("/v1/users/{user_id}", delete(users::delete_user))
        .route("/v1/users/{user_id}/export", get(users::export_user))
        .route("/v1/users/{user_id}/groups", get(users::get_groups))
        .route(
            "/v1/users/{user_id}/read-states",
            get(users::get_read_states),
        )
        .route("/v1/users/{user_id}/summary", get(users::get_summary))
        .route("/v1/users/{user_id}/events", get(events::get_events))
        .route("/v1/users/{user_id}/events/ws", get(events::get_events_ws))
        .route("/v1/users/{user_id}/ack-all", post(users::ack_all))
        .route("/v1/summaries", post(summaries::post_summaries))
        .route("/v1/batch", post(batch::post_batch))
}

/// Health, readiness, metrics, the API document and the HTML pages (never limited,
/// so monitoring keeps working under overload).
pub fn ops() -> Router<HttpState> {
    Router::new()
        .route("/healthz", get(ops::get_healthz))
        .route("/readyz", get(ops::get_readyz))
        .route("/metrics", get(ops::get_metrics))
        .route("/openapi.json", get(ops::get_openapi))
        .route("/docs", get(ops::get_docs))
        .route("/", get(ops::get_dashboard))
}
