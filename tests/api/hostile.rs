//! Hostile and broken requests, over raw TCP where a real client would refuse to send
//! them: every answer from 400 up is an `application/problem+json` problem, including
//! the ones hyper writes before any route sees the request (a request it cannot
//! parse, a request target or head over its limits), a body shorter than its
//! `Content-Length`, and the `field` of 413 and 415. And the OpenAPI document states
//! what the service accepts: a batch op valid by the document applies, one invalid by
//! it is refused naming its field.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    assert_problem, connect, invalid, problem, read_response, send, spawn_app, spawn_app_with,
};

const PATIENCE: Duration = Duration::from_secs(10);

/// The 400 of a request that is not HTTP/1.1.
fn unparsable() -> Value {
    invalid(
        "request",
        "not valid HTTP/1.1 (a malformed request line or header field, e.g. a byte that is not \
         ASCII in the path, or an invalid Content-Length)",
    )
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Sends `request` on a new connection and reads the one answer: status, headers, body.
async fn answer(
    app: &crate::helpers::TestApp,
    request: &[u8],
) -> (u16, Vec<(String, String)>, Value) {
    let mut stream = connect(app).await;
    send(&mut stream, request).await;
    read_response(&mut stream, PATIENCE).await
}

/// Asserts a problem answer read off the wire: status, content type, body, and (for
/// the answers hyper's parser triggers) `connection: close`.
#[track_caller]
fn assert_wire_problem(
    (status, headers, body): &(u16, Vec<(String, String)>, Value),
    expected: &Value,
    closes: bool,
) {
    assert_eq!(
        Some(u64::from(*status)),
        expected["status"].as_u64(),
        "{body}"
    );
    assert_eq!(
        header(headers, "content-type"),
        Some("application/problem+json"),
        "{headers:?}"
    );
    assert_eq!(body, expected);
    if closes {
        assert_eq!(header(headers, "connection"), Some("close"), "{headers:?}");
    }
}

#[tokio::test]
async fn a_request_hyper_cannot_parse_gets_a_400_problem() {
    let app = spawn_app().await;
    let cases: [(&str, &[u8]); 6] = [
        (
            "a byte that is not ASCII in the path",
            b"GET /v1/users/\xff/summary HTTP/1.1\r\nHost: readstate\r\n\r\n",
        ),
        ("a request line that is not one", b"GARBAGE\r\n\r\n"),
        (
            "a bad method token",
            b"G(T /healthz HTTP/1.1\r\nHost: readstate\r\n\r\n",
        ),
        (
            "an unknown version",
            b"GET /healthz HTTP/9.9\r\nHost: readstate\r\n\r\n",
        ),
        (
            "a header name with a space",
            b"GET /healthz HTTP/1.1\r\nHost: readstate\r\nBad Header: x\r\n\r\n",
        ),
        (
            "a Content-Length that is not a number",
            b"POST /v1/batch HTTP/1.1\r\nHost: readstate\r\nContent-Type: application/json\r\nContent-Length: ten\r\n\r\n",
        ),
    ];

    for (what, request) in cases {
        let reply = answer(&app, request).await;

        assert_eq!(reply.0, 400, "{what}: {reply:?}");
        assert_wire_problem(&reply, &unparsable(), true);
    }
}

#[tokio::test]
async fn the_content_length_of_a_rewritten_answer_is_its_body() {
    let app = spawn_app().await;
    let mut stream = connect(&app).await;
    send(&mut stream, b"GARBAGE\r\n\r\n").await;

    let raw = crate::helpers::read_until_closed(&mut stream, PATIENCE).await;

    let text = String::from_utf8(raw).expect("UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.parse().ok())
        .expect("a content-length");
    assert_eq!(body.len(), length, "{text}");
    assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
    assert!(head.contains("\r\ndate: "), "hyper's date is kept: {head}");
    assert_eq!(
        serde_json::from_str::<Value>(body).expect("JSON"),
        unparsable()
    );
}

#[tokio::test]
async fn an_unparsable_request_after_a_served_one_gets_its_problem_on_the_same_connection() {
    let app = spawn_app().await;
    let mut stream = connect(&app).await;
    send(
        &mut stream,
        b"GET /healthz HTTP/1.1\r\nHost: readstate\r\n\r\nGET /\x01 HTTP/1.1\r\n\r\n",
    )
    .await;

    let raw = crate::helpers::read_until_closed(&mut stream, PATIENCE).await;

    let text = String::from_utf8(raw).expect("UTF-8");
    let second = text.find("HTTP/1.1 400 ").expect("a second answer");
    let (first, second) = text.split_at(second);
    assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(first.ends_with("\r\n\r\n{\"status\":\"ok\"}\n"), "{text}");
    let (head, body) = second.split_once("\r\n\r\n").expect("a head");
    assert!(
        head.contains("\r\ncontent-type: application/problem+json\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
    assert_eq!(
        serde_json::from_str::<Value>(body).expect("JSON"),
        unparsable()
    );
}

#[tokio::test]
async fn a_request_target_over_the_limit_gets_a_414_problem() {
    let app = spawn_app().await;
    let path = format!("/v1/users/1/read-states?channels={}", "1,".repeat(33_000));
    assert!(path.len() > 65_534);

    let reply = answer(
        &app,
        format!("GET {path} HTTP/1.1\r\nHost: readstate\r\n\r\n").as_bytes(),
    )
    .await;

    assert_wire_problem(
        &reply,
        &problem(
            "uri-too-long",
            "the request target (path and query) is longer than 65534 bytes",
        ),
        true,
    );
}

#[tokio::test]
async fn a_request_head_over_the_limits_gets_a_431_problem() {
    let app = spawn_app().await;
    let expected = problem(
        "headers-too-large",
        "the request head is larger than 417792 bytes or has more than 100 header fields",
    );
    let many: String = (0..101).map(|i| format!("X-Field-{i}: x\r\n")).collect();
    let head = "GET /healthz HTTP/1.1\r\nHost: readstate\r\n";
    // Hyper checks the size between reads, so a head that the read crossing the limit
    // completes is served; this one never ends (no blank line), so it is refused once
    // 417792 bytes are in, however the bytes arrive.
    let endless = format!("{head}X-Large: {}", "a".repeat(500_000));

    for request in [format!("{head}{many}\r\n"), endless] {
        let reply = answer(&app, request.as_bytes()).await;

        assert_wire_problem(&reply, &expected, true);
    }
}

#[tokio::test]
async fn a_head_just_within_the_limits_is_served() {
    let app = spawn_app().await;
    // 100 fields in all, Host included.
    let fields: String = (0..99).map(|i| format!("X-Field-{i}: x\r\n")).collect();

    let reply = answer(
        &app,
        format!("GET /healthz HTTP/1.1\r\nHost: readstate\r\n{fields}\r\n").as_bytes(),
    )
    .await;

    assert_eq!(reply.0, 200, "{reply:?}");
}

#[tokio::test]
async fn http2_connections_pass_through_untouched() {
    use http_body_util::BodyExt;
    let app = spawn_app().await;
    let stream = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connected");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("an HTTP/2 (h2c) connection");
    tokio::spawn(connection);

    for (path, status) in [("/healthz", 200), ("/v1/nope", 404)] {
        let request = http::Request::get(format!("http://{}{path}", app.addr))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("a request");
        let response = tokio::time::timeout(PATIENCE, sender.send_request(request))
            .await
            .expect("answered")
            .expect("a response");
        assert_eq!(response.status().as_u16(), status, "{path}");
        let content_type = response.headers().get("content-type").cloned();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        let body: Value = serde_json::from_slice(&body).expect("JSON");
        if status == 404 {
            assert_eq!(
                content_type.as_ref().and_then(|v| v.to_str().ok()),
                Some("application/problem+json")
            );
            assert_eq!(body, problem("not-found", "no route for GET /v1/nope"));
        } else {
            assert_eq!(body, json!({"status": "ok"}));
        }
    }
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_gets_a_400_once_the_body_read_timeout_passes() {
    let app = spawn_app_with(|s| {
        s.http.body_read_timeout_ms = 300;
        s.http.request_timeout_ms = 10_000;
    })
    .await;
    let started = Instant::now();

    let reply = answer(
        &app,
        b"POST /v1/users/2/channels/10/ack HTTP/1.1\r\nHost: readstate\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"message_id\": \"1\"",
    )
    .await;

    let waited = started.elapsed();
    assert_wire_problem(
        &reply,
        &invalid(
            "body",
            "not received in full within 300 ms (fewer bytes than its Content-Length arrived)",
        ),
        false,
    );
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert_problem(
        &app.read_state(2, 10).await,
        &problem("not-found", "read state not found"),
    );
}

#[tokio::test]
async fn a_body_that_arrives_in_pieces_within_the_timeout_is_read() {
    let app = spawn_app_with(|s| s.http.body_read_timeout_ms = 2_000).await;
    let mut stream = connect(&app).await;
    let body = br#"{"message_id": "1"}"#;
    send(
        &mut stream,
        format!(
            "POST /v1/users/2/channels/10/ack HTTP/1.1\r\nHost: readstate\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    for piece in body.chunks(7) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        send(&mut stream, piece).await;
    }

    let (status, _, answer) = read_response(&mut stream, PATIENCE).await;

    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["last_read_message_id"], "1");
}

#[tokio::test]
async fn a_413_names_the_body_and_a_415_names_the_content_type() {
    let app = spawn_app_with(|s| s.http.max_body_bytes = readstate::config::ByteSize::kib(1)).await;
    let mut too_large = problem(
        "payload-too-large",
        "the request body is larger than the configured limit",
    );
    too_large["field"] = json!("body");
    let mut not_json = problem(
        "unsupported-media-type",
        "the request body must be JSON (Content-Type: application/json)",
    );
    not_json["field"] = json!("content-type");
    let big = json!({ "message_id": "1", "at": 1, "pad": "x".repeat(2048) }).to_string();

    let reply = app
        .raw(
            Method::POST,
            "/v1/users/2/channels/10/ack",
            &[("content-type", "application/json")],
            big,
        )
        .await;
    assert_problem(&reply, &too_large);

    let reply = app
        .raw(
            Method::POST,
            "/v1/users/2/channels/10/ack",
            &[("content-type", "text/plain")],
            r#"{"message_id": "1"}"#,
        )
        .await;
    assert_problem(&reply, &not_json);
}

// The OpenAPI document against the service.

async fn document(app: &crate::helpers::TestApp) -> Value {
    let (status, _, doc) = app.get("/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    doc
}

#[tokio::test]
async fn every_batch_op_the_document_describes_is_what_the_service_accepts() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let variants = doc["components"]["schemas"]["BatchOp"]["oneOf"]
        .as_array()
        .expect("one variant per op")
        .clone();
    assert_eq!(variants.len(), 11);
    let apply = |ops: Vec<Value>| {
        let app = &app;
        async move {
            // Over HTTP whatever the test transport: this is the HTTP document.
            let reply = app.post("/v1/batch", Some(json!({ "ops": ops }))).await;
            assert_eq!(reply.0, StatusCode::OK, "{}", reply.2);
            reply.2["results"][0].clone()
        }
    };

    for variant in variants {
        assert_eq!(variant["additionalProperties"], false, "{variant}");
        let kind = variant["properties"]["op"]["enum"][0]
            .as_str()
            .expect("the op name")
            .to_owned();
        let required: Vec<String> = variant["required"]
            .as_array()
            .expect("required")
            .iter()
            .filter_map(Value::as_str)
            .filter(|f| *f != "op")
            .map(str::to_owned)
            .collect();
        let null_only: Vec<String> = variant["properties"]
            .as_object()
            .expect("properties")
            .iter()
            .filter(|(_, schema)| schema == &&json!({"type": "null"}))
            .map(|(name, _)| name.clone())
            .collect();
        let mut minimal = json!({ "op": kind });
        for field in &required {
            minimal[field] = json!("7");
        }

        // Valid by the document: applied.
        assert_eq!(
            apply(vec![minimal.clone()]).await,
            json!({"ok": true}),
            "{kind}"
        );
        for field in &null_only {
            let mut op = minimal.clone();
            op[field] = Value::Null;
            assert_eq!(apply(vec![op]).await, json!({"ok": true}), "{kind} {field}");
        }
        // Invalid by the document: refused, naming the field.
        for field in &required {
            let mut op = minimal.clone();
            op.as_object_mut().expect("an object").remove(field);
            let result = apply(vec![op]).await;
            assert_eq!(
                result["error"]["field"],
                format!("ops[0].{field}"),
                "{kind}"
            );
        }
        for field in null_only.iter().map(String::as_str).chain(["colour"]) {
            let mut op = minimal.clone();
            op[field] = json!("7");
            let result = apply(vec![op]).await;
            assert_eq!(result["ok"], false, "{kind} {field}");
            assert_eq!(
                result["error"]["field"],
                format!("ops[0].{field}"),
                "{kind}"
            );
        }
    }
}

#[tokio::test]
async fn the_documented_size_limits_are_the_default_limits() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let schemas = &doc["components"]["schemas"];
    let limits = readstate::config::Settings::default().limits;
    let message_created = &schemas["BatchOp"]["oneOf"][0];
    let readers = doc["paths"]["/v1/channels/{channel_id}/messages/{message_id}/readers"]["get"]
        ["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .find(|p| p["name"] == "limit")
        .expect("limit")
        .clone();

    assert_eq!(
        schemas["BatchRequest"]["properties"]["ops"]["maxItems"],
        limits.max_batch_ops
    );
    assert_eq!(
        schemas["CreateMessageRequest"]["properties"]["mentions"]["maxItems"],
        limits.max_mentions
    );
    assert_eq!(
        message_created["properties"]["mentions"]["oneOf"][0]["maxItems"],
        limits.max_mentions
    );
    assert_eq!(
        schemas["SummariesRequest"]["properties"]["user_ids"]["maxItems"],
        limits.max_summary_users
    );
    assert_eq!(readers["schema"]["minimum"], 1);
    assert_eq!(readers["schema"]["maximum"], limits.max_page);
    let channels = doc["paths"]["/v1/users/{user_id}/read-states"]["get"]["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .find(|p| p["name"] == "channels")
        .expect("channels")["schema"]["pattern"]
        .as_str()
        .expect("a pattern")
        .to_owned();
    assert!(
        channels.ends_with(&format!("{{0,{}}})?$", limits.max_channels_filter - 1)),
        "{channels}"
    );
}

#[tokio::test]
async fn ids_and_timestamps_are_accepted_exactly_in_their_documented_ranges() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let at = &doc["components"]["schemas"]["AckRequest"]["properties"]["at"]["oneOf"][0];
    // Stamps are stored as SQL's signed 64-bit integers.
    assert_eq!(at["maximum"], json!(i64::MAX));

    let ack = |body: &'static str| {
        let app = &app;
        async move {
            app.raw(
                Method::POST,
                "/v1/users/2/channels/10/ack",
                &[("content-type", "application/json")],
                body,
            )
            .await
        }
    };
    assert_eq!(
        ack(r#"{"message_id": "9223372036854775807", "at": 9223372036854775807}"#)
            .await
            .0,
        StatusCode::OK
    );
    for too_large in [
        "9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
    ] {
        let body = format!(r#"{{"message_id": "1", "at": {too_large}}}"#);
        let (status, _, problem) = app
            .raw(
                Method::POST,
                "/v1/users/2/channels/10/ack",
                &[("content-type", "application/json")],
                body,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "at {too_large}");
        assert_eq!(problem["field"], "at", "at {too_large}");
    }
    assert_eq!(
        ack(r#"{"message_id": "9223372036854775808"}"#).await.2["field"],
        "message_id"
    );
    assert_eq!(
        ack(r#"{"message_id": 42.0}"#).await.2["field"],
        "message_id",
        "an integer is written without a fraction, as the document says"
    );
    assert_eq!(
        app.get("/v1/users/9223372036854775808/summary", None)
            .await
            .2["field"],
        "user_id"
    );
    assert_eq!(
        app.get("/v1/users/9223372036854775807/summary", None)
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_event_stream_sends_events_of_the_documented_shape() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let schema = &doc["components"]["schemas"]["StreamEvent"];
    assert_eq!(schema["required"], json!(["event", "id", "data"]));

    let mut stream = connect(&app).await;
    send(
        &mut stream,
        b"GET /v1/users/2/events HTTP/1.1\r\nHost: readstate\r\nAccept: text/event-stream\r\n\r\n",
    )
    .await;
    let raw = tokio::time::timeout(PATIENCE, async {
        let mut data = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&data).contains("data: ") {
            let n = tokio::io::AsyncReadExt::read(&mut stream, &mut buf)
                .await
                .expect("read");
            assert!(n > 0, "closed");
            data.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(data).expect("UTF-8")
    })
    .await
    .expect("the first event");

    let event: Vec<&str> = raw
        .lines()
        .skip_while(|l| !l.starts_with("event: "))
        .take(3)
        .collect();
    assert_eq!(event[0], "event: ready", "{raw}");
    assert!(event[1].starts_with("id: "), "{raw}");
    assert_eq!(event[2], r#"data: {"user_id":"2"}"#, "{raw}");
}

#[tokio::test]
async fn the_websocket_route_documents_the_handshake_it_requires() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let parameters = doc["paths"]["/v1/users/{user_id}/events/ws"]["get"]["parameters"]
        .as_array()
        .expect("parameters")
        .clone();
    for name in [
        "Connection",
        "Upgrade",
        "Sec-WebSocket-Version",
        "Sec-WebSocket-Key",
    ] {
        assert!(
            parameters
                .iter()
                .any(|p| p["name"] == name && p["in"] == "header" && p["required"] == true),
            "{name} is a required header: {parameters:?}"
        );
    }

    let plain = app.get("/v1/users/2/events/ws", None).await;

    assert_eq!(plain.0, StatusCode::BAD_REQUEST, "{}", plain.2);
    assert_eq!(plain.2["field"], "upgrade");
}
