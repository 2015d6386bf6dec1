//! Browsers: a page of a foreign origin cannot act on the API (form posts,
//! WebSocket and SSE streams), `http.cors_origins` are let in with CORS headers,
//! the pages carry their security headers and API answers are not cached.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{assert_problem, problem, spawn_app, spawn_app_with, state};

const EVIL: &str = "https://evil.example";
const APP: &str = "https://app.example";

fn forbidden() -> serde_json::Value {
    problem(
        "forbidden",
        "requests from this page's origin are not allowed (http.cors_origins)",
    )
}

#[tokio::test]
async fn a_cross_site_form_post_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    app.message_ok(10, 100, None, &[]).await;
    app.join(2, 10, Some(json!({"last_read_message_id": "0"})))
        .await;

    let refused = app
        .raw(
            Method::POST,
            "/v1/users/2/ack-all",
            &[
                ("origin", EVIL),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            "a=1",
        )
        .await;
    let after = app.read_state(2, 10).await;

    assert_problem(&refused, &forbidden());
    assert_eq!(after.2, state(10, 0, 100, 1, 0), "nothing was acked");
}

#[tokio::test]
async fn the_servers_own_pages_and_clients_without_origin_are_served() {
    let app = spawn_app().await;
    let own = format!("http://{}", app.addr);

    let same_origin = app
        .raw(
            Method::GET,
            "/v1/users/1/summary",
            &[("origin", own.as_str())],
            "",
        )
        .await;
    let no_origin = app.raw(Method::GET, "/v1/users/1/summary", &[], "").await;

    assert_eq!(same_origin.0, StatusCode::OK, "{}", same_origin.2);
    assert_eq!(no_origin.0, StatusCode::OK);
    for reply in [&same_origin, &no_origin] {
        assert_eq!(
            reply.1.get("cache-control").and_then(|v| v.to_str().ok()),
            Some("no-store")
        );
    }
}

#[tokio::test]
async fn event_streams_refuse_a_foreign_origin() {
    let app = spawn_app().await;

    let sse = app
        .raw(Method::GET, "/v1/users/2/events", &[("origin", EVIL)], "")
        .await;
    let ws = app
        .raw(
            Method::GET,
            "/v1/users/2/events/ws",
            &[
                ("origin", EVIL),
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-version", "13"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ],
            "",
        )
        .await;

    assert_problem(&sse, &forbidden());
    assert_problem(&ws, &forbidden());
}

#[tokio::test]
async fn listed_origins_get_cors_headers_and_others_none() {
    let app = spawn_app_with(|s| s.http.cors_origins = vec![APP.to_owned()]).await;
    let preflight = async |origin: &'static str| {
        app.raw(
            Method::OPTIONS,
            "/v1/users/1/channels/10/ack",
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "content-type,authorization",
                ),
            ],
            "",
        )
        .await
    };

    let allowed = preflight(APP).await;
    let other = preflight(EVIL).await;
    let read = app
        .raw(Method::GET, "/v1/users/1/summary", &[("origin", APP)], "")
        .await;
    let refused = app
        .raw(Method::GET, "/v1/users/1/summary", &[("origin", EVIL)], "")
        .await;

    let acao = |reply: &crate::helpers::Reply| {
        reply
            .1
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(acao(&allowed).as_deref(), Some(APP), "{:?}", allowed.1);
    assert_eq!(acao(&other), None);
    assert_eq!(read.0, StatusCode::OK);
    assert_eq!(acao(&read).as_deref(), Some(APP));
    assert_problem(&refused, &forbidden());
}

#[tokio::test]
async fn the_pages_carry_security_headers() {
    let app = spawn_app().await;

    for path in ["/", "/docs"] {
        let (status, headers, _) = app.get(path, None).await;
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };

        assert_eq!(status, StatusCode::OK, "{path}");
        let csp = header("content-security-policy");
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("http"), "{path}: no other host: {csp}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
    }
}
