//! `/healthz`, `/readyz`, `/metrics`, `/openapi.json`, `/docs` and `/`.

use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;

use serde_json::json;

use crate::helpers::{TestApp, assert_json, spawn_app};

#[tokio::test]
async fn healthz_answers_ok() {
    let app = spawn_app().await;

    let reply = app.get("/healthz", None).await;

    assert_json(&reply, StatusCode::OK, &json!({ "status": "ok" }));
}

#[tokio::test]
async fn readyz_answers_ready_as_json() {
    let app = spawn_app().await;

    let (status, headers, body) = app.get("/readyz", None).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        content_type(&headers).starts_with("application/json"),
        "{headers:?}"
    );
    assert_eq!(body, json!({ "status": "ready" }));
}

#[tokio::test]
async fn metrics_expose_http_cache_and_commit_series_after_a_write() {
    let app = spawn_app().await;
    app.message_ok(10, 1, Some(1), &[2]).await;
    app.read_state(2, 10).await;

    let text = app.metrics().await;

    for name in [
        "readstate_http_requests_total",
        "readstate_http_request_duration_seconds",
        "readstate_cache_bytes",
        "readstate_commit_batch_entries",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} missing from /metrics:\n{text}"
        );
    }
}

#[tokio::test]
async fn metrics_are_in_the_prometheus_text_format() {
    let app = spawn_app().await;

    let response = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("the server answers");

    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        content_type(response.headers()).starts_with("text/plain"),
        "{:?}",
        response.headers()
    );
}

/// Every `/v1` route of the spec, with its method.
const V1_ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/channels/{channel_id}/messages"),
    ("delete", "/v1/channels/{channel_id}/messages/{message_id}"),
    ("delete", "/v1/channels/{channel_id}"),
    (
        "get",
        "/v1/channels/{channel_id}/messages/{message_id}/readers",
    ),
    ("put", "/v1/users/{user_id}/channels/{channel_id}"),
    ("delete", "/v1/users/{user_id}/channels/{channel_id}"),
    ("get", "/v1/users/{user_id}/channels/{channel_id}"),
    ("post", "/v1/users/{user_id}/channels/{channel_id}/ack"),
    ("post", "/v1/users/{user_id}/channels/{channel_id}/unread"),
    ("get", "/v1/users/{user_id}/read-states"),
    ("get", "/v1/users/{user_id}/summary"),
    ("post", "/v1/users/{user_id}/ack-all"),
    ("post", "/v1/summaries"),
    ("post", "/v1/batch"),
];

#[tokio::test]
async fn openapi_json_is_openapi_3_1_with_every_v1_route() {
    let app = spawn_app().await;

    let (status, _, doc) = app.get("/openapi.json", None).await;

    assert_eq!(status, StatusCode::OK);
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1"), "openapi version {version:?}");
    let missing: Vec<String> = V1_ROUTES
        .iter()
        .filter(|(method, path)| doc["paths"][*path][*method].is_null())
        .map(|(method, path)| format!("{method} {path}"))
        .collect();
    assert!(
        missing.is_empty(),
        "routes missing from /openapi.json: {missing:?}"
    );
}

#[tokio::test]
async fn the_docs_page_is_html_that_loads_nothing_from_the_internet() {
    let app = spawn_app().await;

    let (status, html) = html(&app, "/docs").await;

    assert_eq!(status, StatusCode::OK);
    assert_no_remote_assets(&html);
}

#[tokio::test]
async fn the_dashboard_is_html_that_loads_nothing_from_the_internet() {
    let app = spawn_app().await;

    let (status, html) = html(&app, "/").await;

    assert_eq!(status, StatusCode::OK);
    assert_no_remote_assets(&html);
}

fn content_type(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// GETs `path`, checks it is `text/html`, and returns the status and the text.
async fn html(app: &TestApp, path: &str) -> (StatusCode, String) {
    let response = app
        .client
        .get(app.url(path))
        .send()
        .await
        .expect("the server answers");
    let status = response.status();
    let content_type = content_type(response.headers());
    let text = response.text().await.expect("the body is read");
    assert!(
        content_type.starts_with("text/html"),
        "{path}: content type {content_type:?}"
    );
    let lower = text.to_ascii_lowercase();
    assert!(
        lower.contains("<!doctype html") || lower.contains("<html"),
        "{path} is not an HTML page"
    );
    (status, text)
}

/// No `<script src>` or `<link href>` (nor a CSS `@import`) points at another host.
fn assert_no_remote_assets(html: &str) {
    let lower = html.to_ascii_lowercase();
    for tag in ["<script", "<link"] {
        let mut rest = lower.as_str();
        while let Some(at) = rest.find(tag) {
            let end = rest[at..].find('>').map_or(rest.len(), |e| at + e);
            let element = &rest[at..end];
            for remote in [
                "=\"http://",
                "=\"https://",
                "=\"//",
                "='http://",
                "='https://",
                "='//",
                "=http://",
                "=https://",
            ] {
                assert!(!element.contains(remote), "remote asset: {element}>");
            }
            rest = &rest[end..];
        }
    }
    for import in [
        "@import url(http",
        "@import url(\"http",
        "@import \"http",
        "@import url('http",
    ] {
        assert!(!lower.contains(import), "remote stylesheet import");
    }
}

#[test]
fn every_dashboard_field_the_script_sets_exists() {
    // `set(id, ...)` throws on a missing element and stops the whole update.
    let html = include_str!("../../src/http/assets/dashboard.html");
    let mut checked = 0;
    for part in html.split("set(\"").skip(1) {
        let id = &part[..part.find('"').expect("a closing quote")];
        assert!(
            html.contains(&format!("id=\"{id}\"")),
            "no element with id {id:?}"
        );
        checked += 1;
    }
    assert!(checked > 20, "{checked}");
}
