//! What only the gRPC transport has: health and reflection, `Subscribe` (resume and
//! resync), the client-streaming `Write`, deadlines, the hard in-flight limit as
//! `RESOURCE_EXHAUSTED`, the message size limit and the error details. Everything
//! else runs over gRPC through the whole suite (`READSTATE_TEST_TRANSPORT=grpc`).

use std::time::Duration;

use futures_util::StreamExt;
use readstate::grpc::pb;
use tonic::Code;
use tonic_types::StatusExt;

use crate::grpc_transport::Grpc;
use crate::helpers::{TestApp, eventually, spawn_app, spawn_app_with};
use crate::limits::{PATIENCE, start_slow_ack};

fn client(app: &TestApp) -> pb::read_states_client::ReadStatesClient<tonic::transport::Channel> {
    Grpc::new(app.grpc_addr).client()
}

async fn channel(app: &TestApp) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(format!("http://{}", app.grpc_addr))
        .expect("a URI")
        .connect()
        .await
        .expect("the gRPC server accepts")
}

type Events = tonic::Streaming<pb::Event>;

async fn subscribe(app: &TestApp, user: u64, last: Option<String>) -> Events {
    client(app)
        .subscribe(pb::SubscribeRequest {
            user_id: user,
            last_event_id: last,
        })
        .await
        .expect("subscribed")
        .into_inner()
}

async fn next_event(events: &mut Events) -> pb::Event {
    tokio::time::timeout(PATIENCE, events.next())
        .await
        .expect("an event within the patience bound")
        .expect("the stream goes on")
        .expect("an event, not an error")
}

fn change_of(event: &pb::Event) -> (&str, u64, Option<(u64, u32)>) {
    match &event.event {
        Some(pb::event::Event::ReadState(c)) => (
            c.r#type.as_str(),
            c.channel_id,
            c.read_state
                .as_ref()
                .map(|s| (s.last_read_message_id, s.unread_count)),
        ),
        other => panic!("expected a read_state event, got {other:?}"),
    }
}

fn ack(user: u64, channel: u64, message: u64) -> pb::Op {
    pb::Op {
        op: Some(pb::op::Op::Ack(pb::AckRequest {
            user_id: user,
            channel_id: channel,
            message_id: message,
            at: None,
        })),
    }
}

fn created(channel: u64, message: u64, mentions: Vec<u64>) -> pb::Op {
    pb::Op {
        op: Some(pb::op::Op::MessageCreated(pb::MessageCreatedRequest {
            channel_id: channel,
            message_id: message,
            author_id: None,
            mentions,
        })),
    }
}

#[tokio::test]
async fn health_says_serving_and_reflection_lists_the_service() {
    let app = spawn_app().await;
    let channel = channel(&app).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(channel);

    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "readstate.v1.ReadStates".into(),
        })
        .await
        .expect("a health answer")
        .into_inner()
        .status;
    let overall = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("a health answer")
        .into_inner()
        .status;
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut answers = reflection
        .server_reflection_info(futures_util::stream::iter([request]))
        .await
        .expect("a reflection stream")
        .into_inner();
    let answer = answers
        .next()
        .await
        .expect("one answer")
        .expect("not an error");
    let services: Vec<String> = match answer.message_response {
        Some(
            tonic_reflection::pb::v1::server_reflection_response::MessageResponse::ListServicesResponse(
                list,
            ),
        ) => list.service.into_iter().map(|s| s.name).collect(),
        other => panic!("expected a service list, got {other:?}"),
    };

    let serving_status = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    assert_eq!(serving, serving_status);
    assert_eq!(overall, serving_status);
    assert!(
        services.iter().any(|s| s == "readstate.v1.ReadStates"),
        "{services:?}"
    );
}

#[tokio::test]
async fn subscribe_streams_changes_from_either_transport_and_resumes_after_the_last_id() {
    let app = spawn_app().await;
    let mut grpc = client(&app);
    let mut events = subscribe(&app, 1, None).await;
    let ready = next_event(&mut events).await;
    assert!(
        matches!(
            ready.event,
            Some(pb::event::Event::Ready(pb::Ready { user_id: 1 }))
        ),
        "{ready:?}"
    );

    grpc.message_created(pb::MessageCreatedRequest {
        channel_id: 10,
        message_id: 100,
        author_id: Some(2),
        mentions: vec![],
    })
    .await
    .expect("created");
    grpc.join(pb::JoinRequest {
        user_id: 1,
        channel_id: 10,
        last_read_message_id: Some(0),
    })
    .await
    .expect("joined");
    let joined = next_event(&mut events).await;
    // An ack over HTTP reaches the gRPC subscriber too.
    let (status, _, _) = app
        .post(
            "/v1/users/1/channels/10/ack",
            Some(serde_json::json!({"message_id": "100"})),
        )
        .await;
    let acked = next_event(&mut events).await;
    drop(events);
    // Missed while disconnected.
    grpc.mark_unread(pb::MarkUnreadRequest {
        user_id: 1,
        channel_id: 10,
        message_id: 100,
    })
    .await
    .expect("marked unread");
    let mut resumed = subscribe(&app, 1, Some(acked.id.clone())).await;
    let first = next_event(&mut resumed).await;
    let missed = next_event(&mut resumed).await;
    let mut unknown = subscribe(&app, 1, Some("ffff-1".into())).await;
    let resync = next_event(&mut unknown).await;

    assert_eq!(change_of(&joined), ("join", 10, Some((0, 1))));
    assert_eq!(status, 200);
    assert_eq!(change_of(&acked), ("ack", 10, Some((100, 0))));
    assert!(
        matches!(first.event, Some(pb::event::Event::Ready(_))),
        "a resumable id gives ready first: {first:?}"
    );
    assert_eq!(change_of(&missed), ("unread", 10, Some((99, 1))));
    assert!(
        matches!(
            resync.event,
            Some(pb::event::Event::Resync(pb::Resync { user_id: 1 }))
        ),
        "an unknown id gives resync: {resync:?}"
    );
    assert_ne!(acked.id, missed.id);
}

#[tokio::test]
async fn subscribe_with_a_bad_user_is_invalid_and_streams_end_on_shutdown() {
    let mut app = spawn_app().await;
    let refused = client(&app)
        .subscribe(pb::SubscribeRequest {
            user_id: 0,
            last_event_id: None,
        })
        .await
        .expect_err("user 0 is refused");
    let mut events = subscribe(&app, 1, None).await;
    next_event(&mut events).await;

    app.stop()
        .await
        .expect("a clean shutdown while a stream is open");
    let end = tokio::time::timeout(PATIENCE, events.next())
        .await
        .expect("the stream ends on shutdown");

    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        matches!(end, None | Some(Err(_))),
        "no more events after shutdown: {end:?}"
    );
}

#[tokio::test]
async fn a_write_stream_with_bad_ops_in_the_middle_answers_one_result_per_op_in_order() {
    // Groups of at most two ops: the indexes in errors count from the stream's start.
    let app = spawn_app_with(|s| {
        s.limits.max_batch_ops = 2;
        s.limits.max_mentions = 1;
    })
    .await;
    let ops = vec![
        created(10, 100, vec![]),
        ack(0, 10, 100),
        pb::Op { op: None },
        created(10, 101, vec![2, 3]),
        ack(1, 10, 100),
        created(10, 102, vec![]),
    ];

    let reply = client(&app)
        .write(futures_util::stream::iter(ops))
        .await
        .expect("a reply")
        .into_inner();
    let states = client(&app)
        .get_read_states(pb::GetReadStatesRequest {
            user_id: 1,
            channels: vec![],
        })
        .await
        .expect("read states")
        .into_inner();

    let outcome: Vec<(bool, Option<String>)> = reply
        .results
        .iter()
        .map(|r| (r.ok, r.error.as_ref().and_then(|p| p.field.clone())))
        .collect();
    assert_eq!(
        outcome,
        vec![
            (true, None),
            (false, Some("ops[1].user_id".into())),
            (false, Some("ops[2].op".into())),
            (false, Some("ops[3].mentions".into())),
            (true, None),
            (true, None),
        ]
    );
    let problem = reply.results[1].error.as_ref().expect("a problem");
    assert_eq!(
        (problem.r#type.as_str(), problem.status),
        ("https://readstate.dev/problems/invalid-input", 400)
    );
    let state = &states.read_states[0];
    assert_eq!(
        (
            state.channel_id,
            state.last_read_message_id,
            state.last_message_id,
            state.unread_count
        ),
        (10, 100, 102, 1)
    );
}

#[tokio::test]
async fn a_write_stream_kept_open_past_its_deadline_gets_deadline_exceeded() {
    use http_body_util::BodyExt;
    let app = spawn_app().await;
    // A raw HTTP/2 call, so that only the server enforces the deadline (tonic's
    // client enforces it too, and would race the server's answer).
    let stream = tokio::net::TcpStream::connect(app.grpc_addr)
        .await
        .expect("connected");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("an HTTP/2 connection");
    tokio::spawn(connection);
    // A body that never sends an op and never ends.
    let body = http_body_util::StreamBody::new(futures_util::stream::pending::<
        Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>,
    >());
    let request = http::Request::post(format!(
        "http://{}/readstate.v1.ReadStates/Write",
        app.grpc_addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("grpc-timeout", "1S")
    .body(body)
    .expect("a request");

    let response = tokio::time::timeout(PATIENCE, sender.send_request(request))
        .await
        .expect("answered within the patience bound")
        .expect("a response");
    let headers = response.headers().clone();
    let trailers = response
        .into_body()
        .collect()
        .await
        .ok()
        .and_then(|b| b.trailers().cloned());
    let status = headers
        .get("grpc-status")
        .or_else(|| trailers.as_ref().and_then(|t| t.get("grpc-status")))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);

    assert_eq!(
        status.as_deref(),
        Some("4"),
        "DEADLINE_EXCEEDED; headers {headers:?}"
    );
}

#[tokio::test]
async fn at_the_hard_limit_grpc_calls_get_resource_exhausted_at_once_with_retry_info() {
    let app = spawn_app_with(|s| {
        s.limits.soft_in_flight = 1;
        s.limits.hard_in_flight = 1;
        s.http.request_timeout_ms = 120_000;
    })
    .await;
    let mut grpc = client(&app);
    grpc.message_created(pb::MessageCreatedRequest {
        channel_id: 10,
        message_id: 1,
        author_id: Some(1),
        mentions: vec![],
    })
    .await
    .expect("created");
    // An HTTP ack waiting for the rest of its body holds the one place: the count
    // is shared by both transports.
    let (mut slow, rest) = start_slow_ack(&app, 2).await;
    let refused = eventually(PATIENCE, || {
        let mut grpc = grpc.clone();
        async move {
            match grpc.get_summary(pb::GetSummaryRequest { user_id: 1 }).await {
                Err(status) if status.code() == Code::ResourceExhausted => Ok(status),
                other => Err(format!("not refused yet: {other:?}")),
            }
        }
    })
    .await;
    crate::helpers::send(&mut slow, rest.as_bytes()).await;
    crate::helpers::read_response(&mut slow, PATIENCE).await;
    let after = grpc.get_summary(pb::GetSummaryRequest { user_id: 1 }).await;

    assert_eq!(
        refused.message(),
        "too many requests in flight; retry later"
    );
    assert_eq!(
        refused.get_details_retry_info().and_then(|r| r.retry_delay),
        Some(Duration::from_secs(1))
    );
    assert!(after.is_ok(), "served once the slot is free: {after:?}");
}

#[tokio::test]
async fn invalid_ids_name_the_field_and_a_missing_state_is_not_found() {
    let app = spawn_app().await;
    let mut grpc = client(&app);

    let invalid = grpc
        .get_read_state(pb::GetReadStateRequest {
            user_id: 1,
            channel_id: 0,
        })
        .await
        .expect_err("channel 0 is invalid");
    let missing = grpc
        .get_read_state(pb::GetReadStateRequest {
            user_id: 1,
            channel_id: 10,
        })
        .await
        .expect_err("no read state");

    assert_eq!(invalid.code(), Code::InvalidArgument);
    let fields: Vec<String> = invalid
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default();
    assert_eq!(fields, vec!["channel_id".to_owned()]);
    assert!(invalid.get_details_retry_info().is_none());
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test]
async fn a_message_larger_than_the_body_limit_is_refused_and_nothing_applies() {
    let app = spawn_app_with(|s| s.http.max_body_bytes = readstate::config::ByteSize(1024)).await;
    let mut grpc = client(&app);

    let refused = grpc
        .message_created(pb::MessageCreatedRequest {
            channel_id: 10,
            message_id: 100,
            author_id: None,
            mentions: (1..=1000).collect(),
        })
        .await
        .expect_err("too large");
    let summary = grpc
        .get_summary(pb::GetSummaryRequest { user_id: 1 })
        .await
        .expect("a summary")
        .into_inner();

    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    assert_eq!((summary.unread_channels, summary.mentions), (0, 0));
}

/// The `(method, request)` of each `grpc_call` line of the README's gRPC block,
/// and the lines its output block shows.
fn readme_grpc_example() -> (Vec<(String, String)>, Vec<String>) {
    const README: &str = include_str!("../../README.md");
    let section = &README[README.find("## gRPC").expect("a gRPC section")..];
    let fenced = |text: &'static str, fence: &str| -> (&'static str, &'static str) {
        let start = text.find(fence).expect("a fenced block") + fence.len();
        let body = &text[start..];
        let end = body.find("\n```").expect("a closing fence");
        (&body[..end], &body[end + 4..])
    };
    let (commands, rest) = fenced(section, "```sh\n");
    let (output, _) = fenced(rest, "```json\n");
    let prefix = "cargo run --example grpc_call -- 127.0.0.1:50051 ";
    let calls = commands
        .lines()
        .filter_map(|line| line.strip_prefix(prefix))
        .map(|rest| {
            let (method, json) = rest.split_once(' ').expect("METHOD 'JSON'");
            (method.to_owned(), json.trim_matches('\'').to_owned())
        })
        .collect();
    (calls, output.lines().map(str::to_owned).collect())
}

#[tokio::test]
async fn the_readme_grpc_example_answers_as_documented() {
    let (calls, expected) = readme_grpc_example();
    assert_eq!(calls.len(), 4);
    let app = spawn_app().await;
    let addr = app.grpc_addr.to_string();
    // The server runs on this test's runtime: the example runs on a blocking thread.
    let printed = tokio::task::spawn_blocking(move || {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let build = std::process::Command::new("cargo")
            .current_dir(root)
            .args(["build", "--quiet", "--example", "grpc_call"])
            .status()
            .expect("cargo runs");
        assert!(build.success(), "the example builds");
        let example = root.join("target/debug/examples/grpc_call");
        calls
            .iter()
            .map(|(method, json)| {
                let output = std::process::Command::new(&example)
                    .args([addr.as_str(), method, json])
                    .output()
                    .expect("the example runs");
                assert!(
                    output.status.success(),
                    "{method}: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                String::from_utf8(output.stdout)
                    .expect("UTF-8")
                    .trim_end()
                    .to_owned()
            })
            .collect::<Vec<_>>()
    })
    .await
    .expect("the example calls ran");

    assert_eq!(printed, expected);
}
