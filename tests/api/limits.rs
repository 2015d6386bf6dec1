//! Admission control and slow clients (RELIABILITY.md E5): the hard in-flight limit
//! answers 503 at once, the soft limit only counts, and the header-read and request
//! timeouts reap clients that stall. Slow requests are written by hand on a raw TCP
//! connection, since a normal client cannot stop halfway.

use std::time::Duration;

use reqwest::StatusCode;
use tokio::net::TcpStream;

use crate::helpers::{
    TestApp, assert_json, assert_problem, connect, eventually, metric, problem, read_response,
    read_until_closed, send, spawn_app_with, state,
};

/// A generous bound for the server to react; exceeding it is a hang, not slowness.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The ack of message 1 for user `user` in channel 10, padded with JSON whitespace to
/// exactly 50 bytes.
fn ack_body(user: u64) -> (String, String) {
    let head = format!(
        "POST /v1/users/{user}/channels/10/ack HTTP/1.1\r\nHost: readstate\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n"
    );
    let body = format!("{:<50}", r#"{"message_id": "1"}"#);
    assert_eq!(body.len(), 50);
    (head, body)
}

/// Sends the head of an ack and the first 10 bytes of its 50-byte body: the request is
/// admitted and then waits for the rest of its body.
pub async fn start_slow_ack(app: &TestApp, user: u64) -> (TcpStream, String) {
    let (head, body) = ack_body(user);
    let mut stream = connect(app).await;
    send(&mut stream, head.as_bytes()).await;
    send(&mut stream, &body.as_bytes()[..10]).await;
    (stream, body[10..].to_owned())
}

async fn in_flight_at_least_one(app: &TestApp) -> Result<(), String> {
    let text = app.metrics().await;
    match metric(&text, "readstate_http_in_flight_requests") {
        // The gauge is process-wide (other tests run in this process too), so at
        // least one, ours, is in flight.
        Some(n) if n >= 1.0 => Ok(()),
        other => Err(format!("readstate_http_in_flight_requests = {other:?}")),
    }
}

#[tokio::test]
async fn at_the_hard_limit_a_request_is_refused_at_once_with_retry_after_until_one_finishes() {
    let app = spawn_app_with(|s| {
        s.limits.soft_in_flight = 1;
        s.limits.hard_in_flight = 1;
        s.http.request_timeout_ms = 120_000;
    })
    .await;
    app.message_ok(10, 1, Some(1), &[2]).await;
    let (mut slow, rest) = start_slow_ack(&app, 2).await;
    eventually(PATIENCE, || async {
        in_flight_at_least_one(&app).await?;
        // Our app's own view: a harmless read is refused while the ack holds the slot.
        match app.read_state(1, 10).await.0 {
            StatusCode::SERVICE_UNAVAILABLE => Ok(()),
            other => Err(format!(
                "a read was answered {other} while the ack was in flight"
            )),
        }
    })
    .await;

    let refused = app.ack(3, 10, 1).await;
    send(&mut slow, rest.as_bytes()).await;
    let (status, _, body) = read_response(&mut slow, PATIENCE).await;
    let after = app.ack(3, 10, 1).await;

    assert_problem(
        &refused,
        &problem("overloaded", "too many requests in flight; retry later"),
    );
    assert_eq!(
        refused.1.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!((status, body), (200, state(10, 1, 1, 0, 0)));
    assert_json(&after, StatusCode::OK, &state(10, 1, 1, 0, 0));
}

#[tokio::test]
async fn above_the_soft_limit_requests_are_still_served_and_counted() {
    let app = spawn_app_with(|s| {
        s.limits.soft_in_flight = 1;
        s.limits.hard_in_flight = 2;
        s.http.request_timeout_ms = 120_000;
    })
    .await;
    app.message_ok(10, 1, Some(1), &[2]).await;
    let (mut slow, rest) = start_slow_ack(&app, 2).await;
    eventually(PATIENCE, || in_flight_at_least_one(&app)).await;
    let before = metric(
        &app.metrics().await,
        "readstate_http_soft_limit_exceeded_total",
    )
    .unwrap_or(0.0);

    let served = eventually(PATIENCE, || async {
        let reply = app.read_state(1, 10).await;
        let counted = metric(
            &app.metrics().await,
            "readstate_http_soft_limit_exceeded_total",
        )
        .unwrap_or(0.0);
        if counted > before {
            Ok(reply)
        } else {
            Err(format!("soft limit counter still {counted}"))
        }
    })
    .await;
    send(&mut slow, rest.as_bytes()).await;
    let (status, _, body) = read_response(&mut slow, PATIENCE).await;

    assert_json(&served, StatusCode::OK, &state(10, 1, 1, 0, 0));
    assert_eq!((status, body), (200, state(10, 1, 1, 0, 0)));
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_head_is_disconnected() {
    let app = spawn_app_with(|s| s.http.header_read_timeout_ms = 300).await;
    let mut stream = connect(&app).await;

    send(&mut stream, b"GET /healthz HTTP/1.1\r\nHost: readst").await;
    let answer = read_until_closed(&mut stream, PATIENCE).await;

    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "unexpected answer: {answer}"
    );
    assert_eq!(app.get("/healthz", None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_request_whose_body_stalls_times_out_with_a_problem() {
    let app = spawn_app_with(|s| s.http.request_timeout_ms = 300).await;
    app.message_ok(10, 1, Some(1), &[2]).await;

    let (mut slow, _rest) = start_slow_ack(&app, 2).await;
    let (status, headers, body) = read_response(&mut slow, PATIENCE).await;

    assert!(status == 503 || status == 408, "status {status}: {body}");
    let content_type = headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.as_str());
    assert_eq!(content_type, Some("application/problem+json"));
    let mut expected = problem(
        "timeout",
        "the request did not complete within 300 ms; retry later",
    );
    expected["status"] = status.into();
    assert_eq!(body, expected);
    assert_json(
        &app.read_state(2, 10).await,
        StatusCode::OK,
        &state(10, 0, 1, 1, 1),
    );
}

#[tokio::test]
async fn a_request_with_too_many_headers_is_refused_and_the_server_keeps_serving() {
    let app = spawn_app_with(|_| {}).await;
    let headers: String = (0..200).map(|i| format!("X-Filler-{i}: {i}\r\n")).collect();
    let mut stream = connect(&app).await;

    send(
        &mut stream,
        format!("GET /healthz HTTP/1.1\r\nHost: readstate\r\n{headers}\r\n").as_bytes(),
    )
    .await;
    let answer = read_until_closed(&mut stream, PATIENCE).await;

    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 431") || answer.starts_with("HTTP/1.1 400"),
        "unexpected answer: {answer}"
    );
    assert_eq!(app.get("/healthz", None).await.0, StatusCode::OK);
}
