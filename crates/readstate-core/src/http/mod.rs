//! The HTTP/JSON transport: [`router`] builds the axum app (the `/v1` API, health,
//! readiness, metrics, OpenAPI, docs and dashboard) with its layers: request metrics,
//! body limit, request timeout and the in-flight limits. Handlers only parse, call the
//! service and render; errors render through [`problem`].

pub mod access;
pub mod browser;
pub mod extract;
pub mod json;
pub mod openapi;
pub mod problem;
pub mod routes;
pub mod serve;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use metrics::{counter, histogram};

pub use crate::limits::InFlightLayer;
use crate::metrics::{HTTP_DURATION, HTTP_REQUESTS};
use crate::service::Service;
pub use problem::{Problem, ProblemKind, problem_json};

/// What every handler shares.
#[derive(Clone)]
pub struct HttpState {
    /// The read-state service all routes call.
    pub service: Arc<Service>,
    /// Renders `/metrics`.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// False while starting or draining: `/readyz` answers 503. Written by the app
    /// (set once serving, cleared when the drain starts), read by `/readyz`.
    pub ready: Arc<AtomicBool>,
    /// When the process started (uptime on the dashboard).
    pub started: Instant,
    /// Who may call what (API keys, JWTs, per-caller limits).
    pub access: Arc<crate::auth::Access>,
    /// The durability mode (`sync` or `async`), shown on `/metrics` and the dashboard.
    pub durability: &'static str,
    /// The last minutes of request rates, latency and gauges, for the dashboard's
    /// charts (`/dashboard/history`), filled by [`crate::metrics::spawn_history`].
    pub history: Arc<crate::metrics::History>,
}

/// Limits of the HTTP layer (from the `http` and `limits` config sections).
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// The in-flight limits (`limits.soft_in_flight`, `limits.hard_in_flight`),
    /// shared with the gRPC server: at the hard limit, 503 + `Retry-After` at once.
    pub in_flight: InFlightLayer,
    /// A request not answered within this gets 503 `timeout`.
    pub request_timeout: Duration,
    /// Larger request bodies get 413.
    pub max_body_bytes: usize,
    /// A body not received in full within this (shorter than its `Content-Length`)
    /// gets 400 `invalid-input` naming `body` (`http.body_read_timeout_ms`).
    pub body_read_timeout: Duration,
    /// Origins besides the server's own that browsers may call the API from
    /// (`http.cors_origins`).
    pub allowed_origins: browser::AllowedOrigins,
}

/// Builds the HTTP app: every route of the API plus `/healthz`, `/readyz`,
/// `/metrics`, `/openapi.json`, `/docs`, `/` and the dashboard's `/dashboard/history`
/// and `/assets/*`.
///
/// Layers, outermost first: request metrics (by route template), body limit (413),
/// request timeout (503 `timeout`), then, on the `/v1` routes only, CORS for
/// `http.cors_origins`, the origin guard (403 for a foreign browser page, and
/// `Cache-Control: no-store`, see [`browser`]) and the in-flight limits (503
/// `overloaded` at the hard limit); the other pages get their security headers.
/// Unknown routes get a 404 problem and known routes with another method a 405
/// problem (with `Allow`).
pub fn router(state: HttpState, limits: HttpLimits) -> Router {
    init_route_metrics();
    let mut api = routes::api()
        .method_not_allowed_fallback(method_not_allowed)
        .layer(limits.in_flight)
        .layer(middleware::from_fn_with_state(
            state.access.clone(),
            access::guard,
        ))
        .layer(middleware::from_fn_with_state(
            limits.allowed_origins.clone(),
            browser::guard_api,
        ));
    let origins = limits.allowed_origins.list();
    if !origins.is_empty() {
        api = api.layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(tower_http::cors::AllowOrigin::list(origins))
                .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
                .allow_headers([
                    axum::http::header::AUTHORIZATION,
                    axum::http::header::CONTENT_TYPE,
                    axum::http::HeaderName::from_static("last-event-id"),
                ])
                .max_age(Duration::from_secs(600)),
        );
    }
    let ops = routes::ops()
        .merge(routes::ops::dashboard())
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.access.clone(),
            access::guard,
        ))
        .layer(middleware::from_fn(browser::page_headers));
    Router::new()
        .merge(api)
        .merge(ops)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            limits.request_timeout,
            enforce_timeout,
        ))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(axum::Extension(extract::BodyReadTimeout(
            limits.body_read_timeout,
        )))
        .layer(middleware::from_fn(record_metrics))
        .with_state(state)
}

/// Exports the request counter at 0 for every route, method and status the OpenAPI
/// document lists, and the latency histogram for every route and method, so that
/// `/metrics` has them before the first request (the undocumented pages get theirs
/// when first requested).
fn init_route_metrics() {
    // The typed document: no JSON round trip at start-up.
    let doc = <openapi::ApiDoc as utoipa::OpenApi>::openapi();
    let routes = doc.paths.paths.iter().flat_map(|(route, item)| {
        [
            ("get", &item.get),
            ("put", &item.put),
            ("post", &item.post),
            ("delete", &item.delete),
            ("patch", &item.patch),
            ("head", &item.head),
            ("options", &item.options),
        ]
        .into_iter()
        .filter_map(move |(method, operation)| {
            let statuses = operation
                .as_ref()?
                .responses
                .responses
                .keys()
                .filter(|status| status.len() == 3 && status.bytes().all(|b| b.is_ascii_digit()))
                .cloned()
                .collect();
            Some((route.as_str(), method, statuses))
        })
    });
    crate::metrics::init_route_series(routes);
}

/// Answers routes that do not exist.
async fn not_found(method: Method, request: Request) -> Problem {
    Problem::new(
        ProblemKind::NotFound,
        format!("no route for {method} {}", request.uri().path()),
    )
}

/// Answers known routes called with a method they do not take (axum adds `Allow`).
async fn method_not_allowed(method: Method) -> Problem {
    Problem::new(
        ProblemKind::MethodNotAllowed,
        format!("this route does not accept {method}"),
    )
}

/// Answers 503 `timeout` when the inner service takes longer than `timeout`; the
/// handler's future is dropped (writes are idempotent, so a retry is safe).
pub async fn enforce_timeout(
    State(timeout): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::debug!(timeout_ms = timeout.as_millis(), "request timed out");
            Problem::timed_out(timeout).into_response()
        }
    }
}

/// A bounded label for the method.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}

/// Records `readstate_http_requests_total{route,method,status}` and
/// `readstate_http_request_duration_seconds{route,method}`, labelled by the route
/// template (`/v1/users/{user_id}/summary`), never the raw path.
pub async fn record_metrics(request: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = match request.extensions().get::<MatchedPath>() {
        Some(path) => path.as_str().to_owned(),
        None => "unmatched".to_owned(),
    };
    let method = method_label(request.method());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    histogram!(HTTP_DURATION, "route" => route.clone(), "method" => method)
        .record(start.elapsed().as_secs_f64());
    counter!(HTTP_REQUESTS, "route" => route, "method" => method, "status" => status).increment(1);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn call(
        router: Router,
        method: Method,
        uri: &str,
    ) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .expect("valid request");
        let response = router.oneshot(request).await.expect("infallible");
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("in-memory body").to_bytes();
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    /// The same fallbacks and timeout layer as [`router`], around stub routes (no service needed).
    fn stub_router(timeout: Duration) -> Router {
        Router::new()
            .route(
                "/v1/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    "late"
                }),
            )
            .route("/v1/fast", get(|| async { "ok" }))
            .method_not_allowed_fallback(method_not_allowed)
            .fallback(not_found)
            .layer(middleware::from_fn_with_state(timeout, enforce_timeout))
            .layer(middleware::from_fn(record_metrics))
    }

    #[tokio::test]
    async fn unknown_routes_get_a_404_problem() {
        let (status, headers, body) = call(
            stub_router(Duration::from_secs(5)),
            Method::GET,
            "/v2/nothing",
        )
        .await;

        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/problem+json")
        );
        assert_eq!(
            body,
            serde_json::json!({
                "type": "https://readstate.dev/problems/not-found",
                "title": "Not found",
                "status": 404,
                "detail": "no route for GET /v2/nothing"
            })
        );
    }

    #[tokio::test]
    async fn a_wrong_method_gets_a_405_problem_with_allow() {
        let (status, headers, body) = call(
            stub_router(Duration::from_secs(5)),
            Method::POST,
            "/v1/fast",
        )
        .await;

        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            body["type"],
            "https://readstate.dev/problems/method-not-allowed"
        );
        assert!(
            headers
                .get("allow")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("GET"))
        );
    }

    #[tokio::test]
    async fn slow_requests_get_a_503_timeout_problem() {
        let (status, headers, body) = call(
            stub_router(Duration::from_millis(50)),
            Method::GET,
            "/v1/slow",
        )
        .await;

        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            headers.get("retry-after").and_then(|v| v.to_str().ok()),
            Some("1")
        );
        assert_eq!(body["type"], "https://readstate.dev/problems/timeout");
    }
}
