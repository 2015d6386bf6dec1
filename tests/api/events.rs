//! `GET /v1/users/{id}/events` (SSE) and `/events/ws` (WebSocket): who gets which
//! event, resume with `Last-Event-ID`, `resync`, bounded buffers, shutdown.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;
use crate::support::sse::{Frame, SseStream};

async fn subscribe(app: &TestApp, user: u64, last: Option<&str>) -> SseStream {
    SseStream::open(
        &app.client,
        &app.url(&format!("/v1/users/{user}/events")),
        last,
    )
    .await
}

/// Opens a stream and consumes its first event, which must be `event`.
async fn subscribed(
    app: &TestApp,
    user: u64,
    last: Option<&str>,
    event: &str,
) -> (SseStream, Frame) {
    let mut stream = subscribe(app, user, last).await;
    let first = stream.next().await;
    assert_eq!(first.event, event, "{first:?}");
    assert_eq!(first.data["user_id"], json!(user.to_string()));
    (stream, first)
}

fn change(kind: &str, user: u64, channel: u64, state: Value) -> Value {
    json!({"type": kind, "user_id": user.to_string(), "channel_id": channel.to_string(), "read_state": state})
}

async fn expect_change(stream: &mut SseStream, expected: &Value) -> Frame {
    let frame = stream.next().await;
    assert_eq!(frame.event, "read_state", "{frame:?}");
    assert_eq!(&frame.data, expected);
    frame
}

#[tokio::test]
async fn two_subscribers_both_get_an_ack_made_over_http() {
    let app = spawn_app().await;
    let (mut phone, _) = subscribed(&app, 1, None, "ready").await;
    let (mut laptop, _) = subscribed(&app, 1, None, "ready").await;
    let (mut other, _) = subscribed(&app, 2, None, "ready").await;

    app.message_ok(10, 100, None, &[]).await;
    assert_eq!(
        app.join(1, 10, Some(json!({"last_read_message_id": "0"})))
            .await
            .0,
        StatusCode::OK
    );
    for stream in [&mut phone, &mut laptop] {
        expect_change(stream, &change("join", 1, 10, state(10, 0, 100, 1, 0))).await;
    }
    assert_eq!(app.ack(1, 10, 100).await.0, StatusCode::OK);
    for stream in [&mut phone, &mut laptop] {
        expect_change(stream, &change("ack", 1, 10, state(10, 100, 100, 0, 0))).await;
    }
    // User 2 saw nothing of user 1; its first event is its own.
    app.message_ok(10, 101, Some(2), &[1]).await;
    expect_change(&mut other, &change("ack", 2, 10, state(10, 101, 101, 0, 0))).await;
    expect_change(
        &mut phone,
        &change("mention", 1, 10, state(10, 100, 101, 1, 1)),
    )
    .await;
    let metrics = app.metrics().await;
    assert_eq!(metric(&metrics, "readstate_events_subscribers"), Some(3.0));
    assert!(metric(&metrics, "readstate_events_sent_total").unwrap_or(0.0) >= 6.0);
}

#[tokio::test]
async fn every_kind_of_change_is_streamed_with_the_new_state() {
    let app = spawn_app().await;
    let (mut stream, _) = subscribed(&app, 1, None, "ready").await;
    app.message_ok(10, 100, None, &[]).await;
    app.message_ok(10, 101, None, &[]).await;
    app.join(1, 10, Some(json!({"last_read_message_id": "0"})))
        .await;
    expect_change(&mut stream, &change("join", 1, 10, state(10, 0, 101, 2, 0))).await;
    app.unread(1, 10, 101).await;
    expect_change(
        &mut stream,
        &change("unread", 1, 10, state(10, 100, 101, 1, 0)),
    )
    .await;
    app.delete_message(10, 101).await;
    expect_change(
        &mut stream,
        &change("message_deleted", 1, 10, state(10, 100, 100, 0, 0)),
    )
    .await;
    // A deletion in a channel the user is not in is not sent.
    app.message_ok(20, 200, None, &[]).await;
    app.delete_message(20, 200).await;
    app.ack_all(1).await;
    app.leave(1, 10).await;
    expect_change(&mut stream, &change("leave", 1, 10, Value::Null)).await;
    app.join(1, 30, None).await;
    expect_change(&mut stream, &change("join", 1, 30, state(30, 0, 0, 0, 0))).await;
    app.delete_channel(30).await;
    expect_change(&mut stream, &change("channel_deleted", 1, 30, Value::Null)).await;
}

#[tokio::test]
async fn resume_with_last_event_id_delivers_exactly_what_was_missed() {
    let app = spawn_app().await;
    app.message_ok(10, 100, None, &[]).await;
    app.join(1, 10, Some(json!({"last_read_message_id": "0"})))
        .await;
    let (mut stream, _) = subscribed(&app, 1, None, "ready").await;
    app.message_ok(10, 101, None, &[]).await;
    app.ack(1, 10, 100).await;
    let seen = expect_change(
        &mut stream,
        &change("ack", 1, 10, state(10, 100, 101, 1, 0)),
    )
    .await;
    drop(stream);

    // Offline: two changes of user 1, one of user 2.
    app.ack(1, 10, 101).await;
    app.join(2, 10, None).await;
    app.message_ok(10, 102, Some(3), &[1]).await;

    let (mut resumed, ready) = subscribed(&app, 1, Some(&seen.id), "ready").await;
    assert_eq!(ready.id, seen.id, "resumes where the client was");
    // Each event carries the state as it is now.
    expect_change(
        &mut resumed,
        &change("ack", 1, 10, state(10, 101, 102, 1, 1)),
    )
    .await;
    expect_change(
        &mut resumed,
        &change("mention", 1, 10, state(10, 101, 102, 1, 1)),
    )
    .await;
    // Then live.
    app.ack(1, 10, 102).await;
    expect_change(
        &mut resumed,
        &change("ack", 1, 10, state(10, 102, 102, 0, 0)),
    )
    .await;

    // The query parameter works as the header does (for clients that cannot set headers).
    let url = app.url(&format!("/v1/users/1/events?last_event_id={}", seen.id));
    let mut by_query = SseStream::open(&app.client, &url, None).await;
    assert_eq!(by_query.next().await.event, "ready");
    assert_eq!(by_query.next().await.data["type"], "ack");
}

#[tokio::test]
async fn an_unresumable_id_gets_a_resync() {
    let app = spawn_app_with(|s| s.events.replay_window = 2).await;
    app.message_ok(10, 100, None, &[]).await;
    let (stream, ready) = subscribed(&app, 1, None, "ready").await;
    drop(stream);
    for m in 101..=105 {
        app.message_ok(10, m, Some(1), &[]).await;
    }
    // Five changes since, a window of two: the gap is not known.
    let (mut stream, resync) = subscribed(&app, 1, Some(&ready.id), "resync").await;
    app.ack(1, 10, 100).await; // behind the position: no change, no event
    app.unread(1, 10, 105).await;
    let next = stream.next().await;
    assert_eq!(next.data["type"], "unread");
    assert_ne!(next.id, resync.id);
    // An id from another process (or garbage) also gets a resync.
    for bad in ["1-1", "nonsense"] {
        subscribed(&app, 1, Some(bad), "resync").await;
    }
    assert!(metric(&app.metrics().await, "readstate_events_resyncs_total").unwrap_or(0.0) >= 3.0);
}

#[tokio::test]
async fn a_stalled_subscriber_gets_a_resync_and_memory_stays_bounded() {
    let app = spawn_app_with(|s| s.events.subscriber_buffer = 16).await;
    app.message_ok(10, 1, None, &[]).await;
    app.join(1, 10, Some(json!({"last_read_message_id": "0"})))
        .await;
    let (mut stalled, _) = subscribed(&app, 1, None, "ready").await;
    let rss_before = rss_bytes();
    // 60,000 changes while the subscriber reads nothing: ack and mark-unread in turn.
    let mut sent = 0;
    for round in 0..60 {
        let ops: Vec<Value> = (0..1000)
            .map(|i| {
                let op = if i % 2 == 0 { "unread" } else { "ack" };
                json!({"op": op, "user_id": "1", "channel_id": "10", "message_id": "1"})
            })
            .collect();
        let reply = app.batch(json!({ "ops": ops })).await;
        assert_eq!(reply.0, StatusCode::OK, "round {round}: {:?}", reply.2);
        sent += 1000;
    }
    let grown = rss_bytes().saturating_sub(rss_before);
    // Now read everything: what was queued (at most the buffer, plus what the socket
    // held) and a resync for each time the queue overflowed.
    let mut changes = 0;
    let mut resyncs = 0;
    let mut last = None;
    while let Some(frame) = stalled.next_unless_idle(Duration::from_millis(500)).await {
        match frame.event.as_str() {
            "read_state" => changes += 1,
            "resync" => resyncs += 1,
            other => panic!("unexpected {other}"),
        }
        last = Some(frame);
    }
    assert!(resyncs >= 1, "no resync");
    assert_eq!(
        last.map(|f| f.event).as_deref(),
        Some("resync"),
        "the gap at the end is reported"
    );
    assert!(
        changes < sent / 2,
        "{changes} of {sent} changes were queued for a stalled client"
    );
    app.message_ok(10, 2, None, &[]).await;
    app.ack(1, 10, 2).await;
    // Everything queued before the resync was dropped; the next event is the new ack.
    let next = stalled.next().await;
    assert_eq!(next.data["type"], "ack", "{next:?}");
    assert_eq!(next.data["read_state"]["last_read_message_id"], "2");
    // Holding 60,000 changes (their JSON is ~330 bytes each) would take ~20 MB.
    assert!(
        grown < 48 << 20,
        "RSS grew by {grown} bytes while the subscriber stalled"
    );
}

/// Resident set size of this process (server and client both live here).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test]
async fn heartbeats_keep_an_idle_stream_open() {
    let app = spawn_app_with(|s| s.events.heartbeat_ms = 50).await;
    let (mut stream, _) = subscribed(&app, 1, None, "ready").await;
    // Nothing happens for a while: the next event still arrives, after heartbeats.
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.join(1, 10, None).await;
    assert_eq!(stream.next().await.data["type"], "join");
    assert!(stream.heartbeats >= 2, "{} heartbeats", stream.heartbeats);
}

#[tokio::test]
async fn subscriber_limit_answers_503_and_bad_requests_400() {
    let app = spawn_app_with(|s| s.events.max_subscribers = 1).await;
    let _first = subscribed(&app, 1, None, "ready").await;
    let reply = app.get("/v1/users/2/events", None).await;
    assert_eq!(reply.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.2["type"], "https://readstate.dev/problems/overloaded");
    assert!(reply.1.contains_key("retry-after"));
    assert_problem(
        &app.get("/v1/users/0/events", None).await,
        &invalid(
            "user_id",
            "must be an integer between 1 and 9223372036854775807",
        ),
    );
    assert_eq!(
        app.get("/v1/users/1/events?since=3", None).await.0,
        StatusCode::BAD_REQUEST
    );
    // A plain GET of the WebSocket route is not an upgrade.
    let reply = app.get("/v1/users/1/events/ws", None).await;
    assert_eq!(reply.0, StatusCode::BAD_REQUEST);
    assert_eq!(reply.2["field"], "upgrade");
}

#[tokio::test]
async fn shutdown_ends_open_streams_instead_of_waiting_for_them() {
    let mut app = spawn_app().await;
    let (mut stream, _) = subscribed(&app, 1, None, "ready").await;
    app.join(1, 10, None).await;
    assert_eq!(stream.next().await.data["type"], "join");
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("the drain does not wait for the stream")
        .expect("a clean shutdown");
    assert_eq!(
        stream.next_within(Duration::from_secs(5)).await,
        None,
        "the stream ended"
    );
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text message as JSON (within 10 s).
async fn next(ws: &mut Ws) -> Value {
    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str(&text).expect("JSON"),
        other => panic!("expected a text message, got {other:?}"),
    }
}

#[tokio::test]
async fn websocket_carries_the_same_events() {
    let app = spawn_app().await;
    let url = format!("ws://{}/v1/users/1/events/ws", app.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("upgrade");
    let ready = next(&mut ws).await;
    assert_eq!(ready["event"], "ready");
    app.message_ok(10, 100, None, &[]).await;
    app.join(1, 10, Some(json!({"last_read_message_id": "0"})))
        .await;
    let joined = next(&mut ws).await;
    assert_eq!(joined["event"], "read_state");
    assert_eq!(
        joined["data"],
        change("join", 1, 10, state(10, 0, 100, 1, 0))
    );
    // Client messages are ignored; the stream goes on.
    ws.send(Message::Text("hello".into())).await.unwrap();
    app.ack(1, 10, 100).await;
    let acked = next(&mut ws).await;
    assert_eq!(
        acked["data"],
        change("ack", 1, 10, state(10, 100, 100, 0, 0))
    );
    ws.close(None).await.unwrap();

    // Resume over WebSocket with the query parameter.
    app.unread(1, 10, 100).await;
    let resume = format!("{url}?last_event_id={}", acked["id"].as_str().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(&resume)
        .await
        .expect("upgrade");
    assert_eq!(next(&mut ws).await["event"], "ready");
    assert_eq!(next(&mut ws).await["data"]["type"], "unread");
}

/// The raw text of the next WebSocket message (within 10 s).
async fn next_text(ws: &mut Ws) -> String {
    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => text.to_string(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// Keys come out in the documented order (the README's and every HTTP answer's), not
/// sorted: `type, user_id, channel_id, read_state`, and over WebSocket
/// `event, id, data`.
#[tokio::test]
async fn event_payloads_keep_the_documented_key_order() {
    let app = spawn_app().await;
    let url = format!("ws://{}/v1/users/2/events/ws", app.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("upgrade");
    let ready = next_text(&mut ws).await;
    assert!(ready.starts_with(r#"{"event":"ready","id":""#), "{ready}");
    assert!(ready.ends_with(r#","data":{"user_id":"2"}}"#), "{ready}");

    let mut response = app
        .client
        .get(app.url("/v1/users/2/events"))
        .send()
        .await
        .expect("subscribe");
    app.message_ok(10, 500, None, &[]).await;
    app.ack(2, 10, 500).await;

    let expected = r#"{"type":"ack","user_id":"2","channel_id":"10","read_state":{"channel_id":"10","last_read_message_id":"500","last_message_id":"500","has_unread":false,"unread_count":0,"unread_capped":false,"mention_count":0,"mention_capped":false,"first_unread_message_id":null,"muted":false,"level":"all"}}"#;
    let mut text = String::new();
    while !text.contains("event: read_state") || !text.ends_with("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("an event within 10 s")
            .expect("the stream reads")
            .expect("the stream is open");
        text.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
    }
    assert!(text.contains(&format!("\ndata: {expected}\n")), "{text}");

    let acked = next_text(&mut ws).await;
    assert!(
        acked.starts_with(r#"{"event":"read_state","id":""#),
        "{acked}"
    );
    assert!(
        acked.ends_with(&format!(r#","data":{expected}}}"#)),
        "{acked}"
    );
}
