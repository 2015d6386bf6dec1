//! Operations routes: liveness, readiness, Prometheus metrics, the OpenAPI document,
//! the docs page and the live dashboard (with its history and its vendored chart
//! library). None of them counts against the in-flight limits, so monitoring keeps
//! working under overload.

use std::sync::OnceLock;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use metrics::gauge;
use parking_lot::Mutex;
use serde::Deserialize;
use utoipa::OpenApi;

use crate::api::dto::Status;
use crate::http::HttpState;
use crate::http::extract::ApiQuery;
use crate::http::json::Json;
use crate::http::openapi::{ApiDoc, NotReadyResponse};
use crate::http::problem::{Problem, ProblemKind};
use crate::limits::RateLimit;
use crate::metrics::{BUILD_INFO, HistoryBody, UPTIME};
use crate::service::ServiceError;

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
        NotReadyResponse,
    )
)]
pub async fn get_readyz(State(state): State<HttpState>) -> Result<Json<Status>, Problem> {
    static NOT_READY_LOG: RateLimit = RateLimit::new();
    let not_ready = |detail: &'static str| Problem::new(ProblemKind::Unavailable, detail);
    if !state.ready.load(Ordering::Acquire) {
        return Err(not_ready("not ready: starting or draining"));
    }
    if let Err(e) = state.service.ready().await {
        if let ServiceError::Unavailable {
            source: Some(cause),
            ..
        } = &e
            && NOT_READY_LOG.allow()
        {
            tracing::warn!(error = %crate::error_chain(cause), "not ready: storage check failed");
        }
        // (Logged above, rate-limited: probes repeat.)
        return Err(Problem::from_service_error(&e));
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
    // The recorder is per process and the sampled gauges are set from this app's
    // state: one scrape samples and renders at a time, so a scrape never shows
    // another one's sample (tests run several apps in one process).
    static SCRAPE: Mutex<()> = Mutex::new(());
    // What /readyz would answer, as a gauge (alerts need not probe /readyz).
    let ready = state.ready.load(Ordering::Acquire) && state.service.ready().await.is_ok();
    let body = {
        let _one_at_a_time = SCRAPE.lock();
        crate::metrics::sample(&state.service.stats());
        gauge!(crate::metrics::READY).set(if ready { 1.0 } else { 0.0 });
        gauge!(UPTIME).set(state.started.elapsed().as_secs_f64());
        gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "durability" => state.durability)
            .set(1.0);
        // Histograms buffer samples until upkeep; scrapes are a natural, bounded cadence.
        state.metrics.run_upkeep();
        state.metrics.render()
    };
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

/// The live dashboard: draws `/dashboard/history` on load, then polls `/metrics` and
/// the history every 2 s; its only assets are served by this binary.
pub async fn get_dashboard() -> Html<&'static str> {
    Html(include_str!("../assets/dashboard.html"))
}

/// The dashboard's own routes besides `/`: its history and the chart library.
pub fn dashboard() -> Router<HttpState> {
    Router::new()
        .route("/dashboard/history", get(get_dashboard_history))
        .route(UPLOT_JS_PATH, get(get_uplot_js))
        .route(UPLOT_CSS_PATH, get(get_uplot_css))
}

/// Query of `/dashboard/history`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// The `next` of an earlier answer: only samples taken since.
    pub after: Option<String>,
}

/// The last 10 minutes of the dashboard's samples (one per 2 s, oldest first): request
/// rates by status class, latency p50/p99, in-flight, cache bytes, RSS and commits per
/// second, plus totals since start. `?after=<next>` returns only newer samples.
pub async fn get_dashboard_history(
    State(state): State<HttpState>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<HistoryBody>, Problem> {
    let after = match query.after {
        None => None,
        Some(text) => Some(text.parse::<u64>().map_err(|_| {
            Problem::invalid("after", "must be a non-negative integer (a `next` value)")
        })?),
    };
    Ok(Json(state.history.body(after)))
}

/// The vendored uPlot (see `assets/vendor/README.md`); the page adds `?v=` with its
/// version, so a new version is a new URL and the old one may be cached for good.
pub const UPLOT_JS_PATH: &str = "/assets/uPlot.iife.min.js";
/// The vendored uPlot stylesheet.
pub const UPLOT_CSS_PATH: &str = "/assets/uPlot.min.css";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// uPlot's script.
pub async fn get_uplot_js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../assets/vendor/uPlot.iife.min.js"),
    )
}

/// uPlot's stylesheet.
pub async fn get_uplot_css() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../assets/vendor/uPlot.min.css"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE)),
        ],
        body,
    )
        .into_response()
}
