//! Operations routes: liveness, readiness, Prometheus metrics, the OpenAPI document,
//! the docs page and the live dashboard. None of them counts against the in-flight
//! limits, so monitoring keeps working under overload.

use std::sync::OnceLock;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use metrics::gauge;
use utoipa::OpenApi;

use crate::http::HttpState;
use crate::http::dto::Status;
use crate::http::limits::RateLimit;
use crate::http::openapi::{ApiDoc, UnavailableResponse};
use crate::http::problem::{Problem, ProblemKind};
use crate::metrics::{BUILD_INFO, UPTIME};

/// The Prometheus text format served at `/metrics`.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Liveness.
///
/// The process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "Alive", body = Status, example = json!({"status": "ok"})))
)]
pub async fn get_healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// Readiness.
///
/// Ready when started and not draining, storage answers with every migration applied,
/// and the last group commit succeeded.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready to serve", body = Status, example = json!({"status": "ready"})),
        UnavailableResponse,
    )
)]
pub async fn get_readyz(State(state): State<HttpState>) -> Result<Json<Status>, Problem> {
    static NOT_READY_LOG: RateLimit = RateLimit::new();
    let not_ready = |detail: &'static str| Problem::new(ProblemKind::Unavailable, detail);
    if !state.ready.load(Ordering::Acquire) {
        return Err(not_ready("not ready: starting or draining"));
    }
    if let Err(e) = state.service.store().ready().await {
        if NOT_READY_LOG.allow() {
            tracing::warn!(error = %crate::error_chain(&e), "not ready: storage check failed");
        }
        return Err(not_ready("not ready: storage is not available"));
    }
    if !state.service.committer().is_healthy() {
        return Err(not_ready("not ready: the last storage commit failed"));
    }
    Ok(Json(Status { status: "ready" }))
}

/// Prometheus metrics.
///
/// The text exposition format, version 0.0.4.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Metrics in the Prometheus text format", body = String, content_type = "text/plain"))
)]
pub async fn get_metrics(State(state): State<HttpState>) -> Response {
    let service = &state.service;
    crate::metrics::sample(
        &service.cache().stats(),
        service.cache().max_bytes(),
        service.committer().queued(),
    );
    gauge!(UPTIME).set(state.started.elapsed().as_secs_f64());
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "durability" => state.durability)
        .set(1.0);
    // Histograms buffer samples until upkeep; scrapes are a natural, bounded cadence.
    state.metrics.run_upkeep();
    let body = state.metrics.render();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(METRICS_CONTENT_TYPE),
        )],
        body,
    )
        .into_response()
}

/// The OpenAPI 3.1 document of this API.
pub async fn get_openapi() -> Response {
    static DOCUMENT: OnceLock<Option<String>> = OnceLock::new();
    let document = DOCUMENT.get_or_init(|| match ApiDoc::openapi().to_json() {
        Ok(json) => Some(json),
        Err(e) => {
            tracing::error!(error = %e, "could not serialize the OpenAPI document");
            None
        }
    });
    match document {
        Some(json) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            json.clone(),
        )
            .into_response(),
        None => Problem::internal().into_response(),
    }
}

/// The API reference page: renders `/openapi.json` in the browser, with no external assets.
pub async fn get_docs() -> Html<&'static str> {
    Html(include_str!("../assets/docs.html"))
}

/// The live dashboard: polls `/metrics` every 2 s, with no external assets.
pub async fn get_dashboard() -> Html<&'static str> {
    Html(include_str!("../assets/dashboard.html"))
}
