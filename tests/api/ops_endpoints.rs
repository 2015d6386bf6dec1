//! `/healthz`, `/readyz`, `/metrics`, `/openapi.json`, `/docs` and `/`.

use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};

use serde_json::{Value, json};

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

/// `path` with its first parameter set to `first` and the others to `1`.
fn fill(path: &str, first: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    let mut value = first;
    while let Some((head, tail)) = rest.split_once('{') {
        out.push_str(head);
        out.push_str(value);
        value = "1";
        rest = tail.split_once('}').map_or("", |(_, after)| after);
    }
    out.push_str(rest);
    out
}

/// The one example of an error response (those with several are not checked here).
fn single_example(response: &Value) -> Option<&Value> {
    let example = &response["content"]["application/problem+json"]["example"];
    (!example.is_null()).then_some(example)
}

#[tokio::test]
async fn every_documented_error_example_is_what_the_service_answers() {
    let app = spawn_app().await;
    let (_, _, doc) = app.get("/openapi.json", None).await;
    let too_large = " ".repeat(app.settings.http.max_body_bytes.as_usize() + 1);
    let json_type = [("content-type", "application/json")];
    let mut checked = Vec::new();

    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            let verb =
                Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("a method");
            let has_params = path.contains('{');
            for (status, response) in operation["responses"].as_object().expect("responses") {
                let Some(example) = single_example(response) else {
                    continue;
                };
                let reply = match status.as_str() {
                    // A bad id in the first path parameter, or a body that is no object.
                    "400" if has_params => app.raw(verb.clone(), &fill(path, "0"), &[], "").await,
                    "400" => app.raw(verb.clone(), path, &json_type, "[]").await,
                    "403" => {
                        app.raw(
                            verb.clone(),
                            &fill(path, "1"),
                            &[("origin", "https://evil.example")],
                            "",
                        )
                        .await
                    }
                    "404" => app.raw(verb.clone(), &fill(path, "1"), &[], "").await,
                    "413" => {
                        app.raw(
                            verb.clone(),
                            &fill(path, "1"),
                            &json_type,
                            too_large.clone(),
                        )
                        .await
                    }
                    "415" => {
                        app.raw(
                            verb.clone(),
                            &fill(path, "1"),
                            &[("content-type", "text/plain")],
                            "x",
                        )
                        .await
                    }
                    // Only answered with auth on: tests/api/access.rs compares these
                    // examples with real answers.
                    "401" | "429" => continue,
                    other => panic!("{method} {path}: no check for a single {other} example"),
                };
                assert_eq!(reply.0.as_str(), status, "{method} {path}: {}", reply.2);
                assert_eq!(&reply.2, example, "{method} {path} {status}");
                checked.push(format!("{method} {path} {status}"));
            }
        }
    }
    for expected in [
        "post /v1/batch 400",
        "get /v1/users/{user_id}/summary 400",
        "get /v1/users/{user_id}/channels/{channel_id} 404",
        "post /v1/users/{user_id}/ack-all 403",
        "post /v1/users/{user_id}/channels/{channel_id}/ack 413",
        "put /v1/users/{user_id}/channels/{channel_id} 415",
    ] {
        assert!(
            checked.iter().any(|c| c == expected),
            "{expected} not checked: {checked:?}"
        );
    }
}

#[tokio::test]
async fn the_problem_schema_examples_of_unknown_routes_and_methods_are_real_answers() {
    let app = spawn_app().await;
    let (_, _, doc) = app.get("/openapi.json", None).await;
    let examples = doc["components"]["schemas"]["Problem"]["examples"]
        .as_array()
        .expect("Problem examples")
        .clone();
    let by_status = |status: u64| {
        examples
            .iter()
            .find(|e| e["status"] == status)
            .unwrap_or_else(|| panic!("no {status} example"))
            .clone()
    };

    let not_found = app.get("/v1/nope", None).await;
    assert_eq!(not_found.0, StatusCode::NOT_FOUND);
    assert_eq!(not_found.2, by_status(404));

    let not_allowed = app.raw(Method::PATCH, "/v1/batch", &[], "").await;
    assert_eq!(not_allowed.0, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(not_allowed.2, by_status(405));
}

#[tokio::test]
async fn every_error_example_has_its_status_and_a_problem_type_of_that_status() {
    let app = spawn_app().await;
    let (_, _, doc) = app.get("/openapi.json", None).await;
    let kinds: &[(&str, u64, &str)] = &[
        ("invalid-input", 400, "Invalid input"),
        ("unauthorized", 401, "Unauthorized"),
        ("forbidden", 403, "Forbidden"),
        ("not-found", 404, "Not found"),
        ("method-not-allowed", 405, "Method not allowed"),
        ("payload-too-large", 413, "Payload too large"),
        ("uri-too-long", 414, "URI too long"),
        ("headers-too-large", 431, "Request header fields too large"),
        ("unsupported-media-type", 415, "Unsupported media type"),
        ("too-many-requests", 429, "Too many requests"),
        ("overloaded", 503, "Overloaded"),
        ("unavailable", 503, "Service unavailable"),
        ("timeout", 503, "Request timed out"),
        ("internal", 500, "Internal error"),
    ];
    let mut count = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            for (status, response) in operation["responses"].as_object().expect("responses") {
                if !status.starts_with('4') && !status.starts_with('5') {
                    continue;
                }
                let media = &response["content"]["application/problem+json"];
                let examples: Vec<&Value> = match media["examples"].as_object() {
                    Some(named) => named.values().map(|e| &e["value"]).collect(),
                    None => vec![&media["example"]],
                };
                for example in examples {
                    let slug = example["type"]
                        .as_str()
                        .and_then(|t| t.strip_prefix("https://readstate.dev/problems/"))
                        .unwrap_or_else(|| panic!("{method} {path} {status}: {example}"));
                    let (_, kind_status, title) = kinds
                        .iter()
                        .find(|(s, _, _)| *s == slug)
                        .unwrap_or_else(|| panic!("unknown kind {slug}"));
                    assert_eq!(
                        status.parse::<u64>().ok(),
                        Some(*kind_status),
                        "{method} {path}: {example}"
                    );
                    assert_eq!(
                        example["status"], *kind_status,
                        "{method} {path}: {example}"
                    );
                    assert_eq!(example["title"], *title, "{method} {path}: {example}");
                    count += 1;
                }
            }
        }
    }
    assert!(count > 50, "{count}");
}

#[tokio::test]
async fn openapi_json_writes_ids_and_the_problem_fields_as_documented() {
    let app = spawn_app().await;

    let text = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("the server answers")
        .text()
        .await
        .expect("the body is read");

    assert!(text.contains("\"maximum\":9223372036854775807"));
    let problem = &text[text.find("\"Problem\":{").expect("the Problem schema")..];
    let properties = &problem[problem.find("\"properties\":{").expect("its properties")..];
    let positions: Vec<usize> = ["type", "title", "status", "detail", "field"]
        .iter()
        .map(|key| {
            properties
                .find(&format!("\"{key}\":{{"))
                .unwrap_or_else(|| panic!("no property {key}"))
        })
        .collect();
    assert!(
        positions.is_sorted(),
        "Problem properties out of order: {positions:?}"
    );
}

#[test]
fn the_docs_page_names_no_other_host_and_keeps_integers_exact() {
    let html =
        include_str!("../../crates/readstate-core/src/http/assets/docs.html").to_ascii_lowercase();
    for scheme in ["http://", "https://"] {
        for (at, _) in html.match_indices(scheme) {
            assert!(
                html[at..].starts_with("https://readstate.dev/problems/"),
                "the docs page names another host: {}",
                &html[at..(at + 60).min(html.len())]
            );
        }
    }
    for remote in [
        "src=\"//",
        "href=\"//",
        "url(",
        "@import",
        "<iframe",
        "<object",
        "<embed",
    ] {
        assert!(!html.contains(remote), "{remote}");
    }
    for call in html.match_indices("fetch(").map(|(at, _)| &html[at..]) {
        assert!(
            call.starts_with("fetch(\"/"),
            "a fetch off this server: {}",
            &call[..40]
        );
    }
    // `response.json()` would round ids above 2^53 (9223372036854775807 → …776000).
    assert!(
        !html.contains(".json()"),
        "the page parses /openapi.json with rounding"
    );
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
    let html = include_str!("../../crates/readstate-core/src/http/assets/dashboard.html");
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

/// Every metric the README documents, in full (the README abbreviates families:
/// `readstate_cache_bytes` / `_budget_bytes`). Each must be on `/metrics` from
/// start-up, at 0 when nothing was counted yet.
const DOCUMENTED_METRICS: &[&str] = &[
    "readstate_http_requests_total",
    "readstate_http_request_duration_seconds",
    "readstate_http_in_flight_requests",
    "readstate_http_shed_total",
    "readstate_http_connections",
    "readstate_http_connections_closed_total",
    "readstate_http_soft_limit_exceeded_total",
    "readstate_auth_denied_total",
    "readstate_rate_limited_total",
    "readstate_ready",
    "readstate_cache_bytes",
    "readstate_cache_budget_bytes",
    "readstate_cache_users",
    "readstate_cache_read_states",
    "readstate_cache_channels",
    "readstate_cache_dirty_entries",
    "readstate_cache_evictions_total",
    "readstate_commit_batch_entries",
    "readstate_commit_batch_writes",
    "readstate_commit_duration_seconds",
    "readstate_commit_queue_entries",
    "readstate_commit_backpressure_total",
    "readstate_storage_errors_total",
    "readstate_process_resident_bytes",
    "readstate_events_subscribers",
    "readstate_events_sent_total",
    "readstate_events_resyncs_total",
    "readstate_nats_events_total",
    "readstate_nats_consumer_pending",
    "readstate_nats_consumer_ack_pending",
    "readstate_nats_changes_published_total",
    "readstate_log_appends_total",
    "readstate_log_appended_bytes_total",
    "readstate_log_fsync_duration_seconds",
    "readstate_log_bytes",
    "readstate_log_replay_seconds",
    "readstate_log_replayed_records",
    "readstate_checkpoint_duration_seconds",
    "readstate_checkpoint_writes",
    "readstate_checkpoints_urgent_total",
    "readstate_checkpoint_paced_sleep_seconds",
    "readstate_checkpoints_pacing_given_up_total",
];

/// The metric names in README.md's backticked spans (outside code blocks), with
/// the shorthand `_suffix` that follows a full name expanded to its family
/// (`readstate_cache_bytes` / `_budget_bytes` is `readstate_cache_budget_bytes`).
fn readme_metric_names() -> Vec<String> {
    let readme = include_str!("../../README.md");
    let mut prose = String::new();
    let mut fenced = false;
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            prose.push_str(line);
            prose.push('\n');
        }
    }
    let is_name = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    let mut names: Vec<String> = Vec::new();
    let mut family: Option<String> = None;
    for span in prose.split('`').skip(1).step_by(2) {
        if let Some(rest) = span.strip_prefix("readstate_") {
            let end = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(rest.len());
            // `readstate_t_*` (test databases) and the like are not metrics.
            if end == 0 || !(end == rest.len() || rest[end..].starts_with('{')) {
                family = None;
                continue;
            }
            let name = format!("readstate_{}", &rest[..end]);
            family = rest[..end]
                .split('_')
                .next()
                .map(|first| format!("readstate_{first}"));
            names.push(name);
        } else if let (Some(family), true) = (&family, span.starts_with('_') && is_name(span)) {
            names.push(format!("{family}{span}"));
        } else {
            family = None;
        }
    }
    names.sort();
    names.dedup();
    names
}

#[test]
fn the_metric_list_of_these_tests_is_the_readmes() {
    let readme = readme_metric_names();
    assert!(
        readme.contains(&"readstate_cache_budget_bytes".to_owned())
            && readme.contains(&"readstate_commit_batch_writes".to_owned()),
        "the README's shorthand was not expanded: {readme:?}"
    );
    let undocumented: Vec<&str> = DOCUMENTED_METRICS
        .iter()
        .copied()
        .filter(|name| !readme.iter().any(|r| r == name))
        .collect();
    assert!(
        undocumented.is_empty(),
        "no longer in README.md: {undocumented:?}"
    );
    let unlisted: Vec<&String> = readme
        .iter()
        .filter(|name| !DOCUMENTED_METRICS.contains(&name.as_str()))
        .collect();
    assert!(
        unlisted.is_empty(),
        "README.md documents {unlisted:?}: export each at 0 from start-up (src/metrics.rs) \
         and add it to DOCUMENTED_METRICS"
    );
}

#[tokio::test]
async fn every_documented_metric_is_exported_before_the_first_request() {
    // A process of its own: in this test binary other tests' apps count into the same
    // (global) recorder, which would hide a series that is only exported once counted.
    let storage = crate::support::TestStorage::from_env();
    let server = crate::support::binary::start(storage.url(), &[]);
    let text = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a client")
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("the server answers")
        .text()
        .await
        .expect("the body is read");

    let mut names: Vec<String> = DOCUMENTED_METRICS.iter().map(|n| (*n).to_owned()).collect();
    names.extend(readme_metric_names());
    names.sort();
    names.dedup();
    let missing: Vec<&String> = names
        .iter()
        .filter(|name| {
            !text.lines().any(|line| {
                line.strip_prefix(name.as_str()).is_some_and(|rest| {
                    [" ", "{", "_bucket{", "_count", "_sum"]
                        .iter()
                        .any(|s| rest.starts_with(s))
                })
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "not on /metrics before the first request: {missing:?}\n{text}"
    );
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let counted = line.starts_with("readstate_http_requests_total")
            || line.starts_with("readstate_events_sent_total")
            || line.starts_with("readstate_http_shed_total")
            || line.starts_with("readstate_storage_errors_total");
        if counted {
            assert!(line.ends_with(" 0"), "counted before any request: {line}");
        }
    }
}

/// The fields of every sample of `/dashboard/history`.
const HISTORY_FIELDS: &[&str] = &[
    "t",
    "rps",
    "rps_2xx",
    "rps_4xx",
    "rps_5xx",
    "p50_ms",
    "p99_ms",
    "in_flight",
    "cache_bytes",
    "rss_bytes",
    "commits_per_s",
];

#[tokio::test]
async fn the_dashboard_history_fills_in_as_the_sampler_ticks() {
    let app = spawn_app().await;

    let (status, headers, first) = app.get("/dashboard/history", None).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert!(
        content_type(&headers).starts_with("application/json"),
        "{headers:?}"
    );
    assert_eq!(first["interval_ms"], 2000);
    assert_eq!(first["capacity"], 300);
    assert!(first["samples"].is_array(), "{first}");
    let before = first["totals"]["requests"]
        .as_u64()
        .expect("totals.requests");
    for key in ["commits", "commit_entries", "commit_writes"] {
        assert!(first["totals"][key].is_u64(), "totals.{key}: {first}");
    }

    // Requests of all three classes (the counters are the process's, so other tests'
    // requests may add to them: only "at least" is checked).
    app.message_ok(10, 1, Some(1), &[2]).await;
    for _ in 0..3 {
        app.get("/healthz", None).await;
    }
    let (status, _, _) = app.get("/v1/nowhere", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let body = crate::helpers::eventually(std::time::Duration::from_secs(30), || async {
        let (_, _, body) = app.get("/dashboard/history", None).await;
        let requests = body["totals"]["requests"].as_u64().unwrap_or(0);
        let samples = body["samples"].as_array().map_or(0, Vec::len);
        if requests >= before + 5 && samples > 0 {
            Ok(body)
        } else {
            Err(format!(
                "requests {requests} (from {before}), {samples} samples"
            ))
        }
    })
    .await;
    let samples = body["samples"].as_array().expect("samples");
    for sample in samples {
        for field in HISTORY_FIELDS {
            assert!(sample.get(*field).is_some(), "no {field} in {sample}");
        }
        assert!(sample["t"].as_f64().is_some_and(|t| t > 1.0e9), "{sample}");
        assert!(sample["rps"].as_f64().is_some_and(|r| r >= 0.0), "{sample}");
    }
    assert!(
        body["totals"]["commits"].as_u64().is_some_and(|c| c >= 1),
        "{body}"
    );
    let next = body["next"].as_u64().expect("next");
    assert!(next >= samples.len() as u64);

    // `after` returns only newer samples; bad parameters are problems.
    let (status, _, newer) = app
        .get(&format!("/dashboard/history?after={next}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let newer_count = newer["samples"].as_array().map_or(usize::MAX, Vec::len);
    let advanced = newer["next"].as_u64().unwrap_or(0) - next;
    assert_eq!(newer_count as u64, advanced, "{newer}");
    for bad in ["?after=soon", "?since=1"] {
        let (status, headers, problem) = app.get(&format!("/dashboard/history{bad}"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {problem}");
        assert_eq!(content_type(&headers), "application/problem+json");
    }
}

#[tokio::test]
async fn the_chart_library_is_served_from_the_binary_and_cached() {
    let app = spawn_app().await;
    let (_, page) = html(&app, "/").await;

    for (path, expected_type, marker) in [
        ("/assets/uPlot.iife.min.js", "text/javascript", "uPlot"),
        ("/assets/uPlot.min.css", "text/css", ".uplot"),
    ] {
        assert!(
            page.contains(&format!("\"{path}?v=")),
            "the dashboard does not load {path}"
        );
        let response = app
            .client
            .get(app.url(path))
            .send()
            .await
            .expect("the server answers");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers().clone();
        assert!(
            content_type(&headers).starts_with(expected_type),
            "{path}: {headers:?}"
        );
        let cache = headers
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(cache.contains("max-age=31536000"), "{path}: {cache:?}");
        let body = response.text().await.expect("the body is read");
        assert!(body.len() > 1000 && body.contains(marker), "{path}");
    }
}

#[test]
fn the_dashboard_loads_the_vendored_uplot_version_it_names() {
    // The `?v=` makes a new version a new URL (the assets are cached for a year).
    let html = include_str!("../../crates/readstate-core/src/http/assets/dashboard.html");
    let script =
        include_str!("../../crates/readstate-core/src/http/assets/vendor/uPlot.iife.min.js");
    let banner = script.lines().next().unwrap_or_default();
    let version = banner
        .split("(v")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("the banner names the version");
    let vendor_readme =
        include_str!("../../crates/readstate-core/src/http/assets/vendor/README.md");
    assert!(
        vendor_readme.contains(&format!("`uplot` {version}")),
        "vendor/README.md does not name {version}"
    );
    let license = include_str!("../../crates/readstate-core/src/http/assets/vendor/uPlot.LICENSE");
    assert!(license.contains("MIT License"));
    for asset in ["uPlot.iife.min.js", "uPlot.min.css"] {
        assert!(
            html.contains(&format!("/assets/{asset}?v={version}\"")),
            "{asset} is not loaded with ?v={version}"
        );
    }
}

#[test]
fn every_element_the_dashboard_script_looks_up_exists() {
    // Extends `every_dashboard_field_the_script_sets_exists` to direct lookups and
    // the chart containers, and pins the fields added for issue 9.
    let html = include_str!("../../crates/readstate-core/src/http/assets/dashboard.html");
    let mut ids: Vec<&str> = Vec::new();
    for marker in ["getElementById(\"", "set(\"", "{ id: \""] {
        for part in html.split(marker).skip(1) {
            ids.push(&part[..part.find('"').expect("a closing quote")]);
        }
    }
    for id in [
        "ok2xx",
        "err4xx",
        "err5xx",
        "p50",
        "p99",
        "commits",
        "entriestotal",
        "writestotal",
        "evictionstotal",
        "cpsunit",
        "chart-rate",
        "chart-latency",
    ] {
        assert!(ids.contains(&id), "the script no longer uses {id:?}");
    }
    for id in &ids {
        assert!(
            html.contains(&format!("id=\"{id}\"")),
            "no element with id {id:?}"
        );
    }
    assert!(
        html.contains("\"idle\""),
        "an idle group commit shows \"idle\""
    );
    assert!(
        html.contains("fetch(\"/dashboard/history\"") || html.contains("\"/dashboard/history\""),
        "the dashboard draws the server's history"
    );
}
