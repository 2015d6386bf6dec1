//! The `floor` target (`readstate bench-floor`, hidden): the routes the bench calls,
//! answered with constant bodies of the same shape and size as readstate's, on the
//! same HTTP stack: the same accept loop ([`readstate::http::serve::accept_until`]),
//! request metrics into the same Prometheus recorder, body limit, request timeout
//! and in-flight limits. What it serves per second is the ceiling that request
//! handling alone allows on this machine.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use readstate::http::InFlightLayer;

/// readstate's defaults for the limits the floor applies as well.
const SOFT_IN_FLIGHT: usize = 512;
const HARD_IN_FLIGHT: usize = 1024;
const MAX_BODY_BYTES: usize = 1 << 20;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The same connection cap as readstate's default (`limits.max_connections`).
const MAX_CONNECTIONS: usize = 10_000;

/// One read state as readstate renders it (a typical one: one unread message).
const READ_STATE: &str = r#"{"channel_id":"104729","last_read_message_id":"1750000000000019","last_message_id":"1750000000000020","has_unread":true,"unread_count":1,"unread_capped":false,"mention_count":0,"mention_capped":false}"#;
const SUMMARY: &str = r#"{"unread_channels":3,"mentions":1}"#;

/// The floor's router: constant answers for the bench's routes, `states_per_user`
/// read states in a read-states answer (as many as the data set gives each user).
pub fn router(states_per_user: usize) -> Router {
    let one = Bytes::from_static(READ_STATE.as_bytes());
    let mut all = String::from(r#"{"read_states":["#);
    for i in 0..states_per_user {
        if i > 0 {
            all.push(',');
        }
        all.push_str(READ_STATE);
    }
    all.push_str("]}");
    let all = Bytes::from(all);
    let summary = Bytes::from_static(SUMMARY.as_bytes());
    let json = move |body: Bytes| {
        move |_request: Bytes| {
            let body = body.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )],
                    body,
                )
                    .into_response()
            }
        }
    };
    let api = Router::new()
        .route(
            "/v1/users/{user_id}/channels/{channel_id}/ack",
            post(json(one.clone())),
        )
        .route(
            "/v1/users/{user_id}/channels/{channel_id}/unread",
            post(json(one)),
        )
        .route(
            "/v1/channels/{channel_id}/messages",
            post(|_request: Bytes| async { StatusCode::NO_CONTENT }),
        )
        .route("/v1/users/{user_id}/read-states", get(json(all)))
        .route("/v1/users/{user_id}/summary", get(json(summary)))
        .layer(InFlightLayer::new(SOFT_IN_FLIGHT, HARD_IN_FLIGHT));
    Router::new()
        .merge(api)
        .route("/healthz", get(|| async { "ok" }))
        // readstate's own timeout and request-metrics layers, in the same order.
        .layer(middleware::from_fn_with_state(
            REQUEST_TIMEOUT,
            readstate::http::enforce_timeout,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(readstate::http::record_metrics))
}

/// Serves the floor on `addr` until SIGTERM or SIGINT, logging
/// `listening addr=...` on stderr once bound.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(addr: SocketAddr, states_per_user: usize) -> anyhow::Result<()> {
    // The same recorder readstate installs, so recording a request costs the same,
    // with the same upkeep: the exporter's histogram buffers only drain on upkeep,
    // and without it they grow with every request.
    let handle = readstate::metrics::install()
        .map_err(|e| anyhow::anyhow!(e))
        .context("while installing the metrics recorder")?;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    });
    let listener =
        readstate::http::serve::bind(addr).with_context(|| format!("while binding {addr}"))?;
    let bound = listener
        .local_addr()
        .context("while reading the bound address")?;
    eprintln!(
        "{}",
        serde_json::json!({"message": "listening", "addr": bound.to_string(), "protocol": "http"})
    );
    let shutdown = readstate::app::shutdown_on_signals();
    let graceful = readstate::http::serve::accept_until(
        listener,
        router(states_per_user),
        readstate::http::serve::ConnectionLimits {
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        },
        &shutdown,
    )
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::extract::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn call(method: &str, uri: &str) -> (StatusCode, String) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from("{\"message_id\":1}"))
            .unwrap();
        let response = router(3).oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn answers_the_bench_routes_with_bodies_shaped_like_readstate() {
        let (status, body) = call("GET", "/v1/users/1/read-states").await;
        assert_eq!(status, StatusCode::OK);
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["read_states"].as_array().unwrap().len(), 3);

        let (status, body) = call("POST", "/v1/users/1/channels/2/ack").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("\"unread_count\":1"));

        let (status, _) = call("POST", "/v1/channels/2/messages").await;
        assert_eq!(status, StatusCode::NO_CONTENT);

        let (status, body) = call("GET", "/v1/users/1/summary").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, SUMMARY));
    }
}
