//! What only the gRPC transport has: health and reflection, `Subscribe` (resume and
//! resync), the client-streaming `Write`, deadlines, the hard in-flight limit as
//! `RESOURCE_EXHAUSTED`, the message size limit and the error details. Everything
//! else runs over gRPC through the whole suite (`READSTATE_TEST_TRANSPORT=grpc`).

use std::time::Duration;

use futures_util::StreamExt;
use readstate::domain::MUTED_FOREVER;
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
            group_id: None,
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
            match grpc
                .get_summary(pb::GetSummaryRequest {
                    user_id: 1,
                    group_id: None,
                })
                .await
            {
                Err(status) if status.code() == Code::ResourceExhausted => Ok(status),
                other => Err(format!("not refused yet: {other:?}")),
            }
        }
    })
    .await;
    crate::helpers::send(&mut slow, rest.as_bytes()).await;
    crate::helpers::read_response(&mut slow, PATIENCE).await;
    let after = grpc
        .get_summary(pb::GetSummaryRequest {
            user_id: 1,
            group_id: None,
        })
        .await;

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
        .get_summary(pb::GetSummaryRequest {
            user_id: 1,
            group_id: None,
        })
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
            // The workspace's features, as the test build's: one package alone
            // would build dependencies again with other features.
            .args(["build", "--quiet", "--workspace", "--example", "grpc_call"])
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

// Threads, groups, settings, deleting and exporting a user (issue 14).

type Client = pb::read_states_client::ReadStatesClient<tonic::transport::Channel>;

/// The fields a status's `BadRequest` detail names.
fn bad_fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

fn set_channel_request(
    channel: u64,
    parent: Option<u64>,
    group: Option<u64>,
) -> pb::SetChannelRequest {
    pb::SetChannelRequest {
        channel_id: channel,
        parent_id: parent,
        group_id: group,
        at: None,
    }
}

fn settings_request(
    user: u64,
    channel: u64,
    muted_until: Option<u64>,
    level: Option<&str>,
    at: u64,
) -> pb::UpdateSettingsRequest {
    pb::UpdateSettingsRequest {
        user_id: user,
        channel_id: channel,
        muted_until,
        level: level.map(str::to_owned),
        at: Some(at),
    }
}

async fn post(grpc: &mut Client, channel: u64, message: u64, mentions: Vec<u64>) {
    grpc.message_created(pb::MessageCreatedRequest {
        channel_id: channel,
        message_id: message,
        author_id: None,
        mentions,
    })
    .await
    .expect("created");
}

async fn join_at(grpc: &mut Client, user: u64, channel: u64, read: u64) -> pb::ReadState {
    grpc.join(pb::JoinRequest {
        user_id: user,
        channel_id: channel,
        last_read_message_id: Some(read),
    })
    .await
    .expect("joined")
    .into_inner()
}

async fn summary_of(grpc: &mut Client, user: u64, group: Option<u64>) -> (u64, u64, u64) {
    let s = grpc
        .get_summary(pb::GetSummaryRequest {
            user_id: user,
            group_id: group,
        })
        .await
        .expect("a summary")
        .into_inner();
    (s.unread_channels, s.unread_threads, s.mentions)
}

async fn channels_of(
    grpc: &mut Client,
    user: u64,
    channels: Vec<u64>,
    group: Option<u64>,
) -> Vec<u64> {
    grpc.get_read_states(pb::GetReadStatesRequest {
        user_id: user,
        channels,
        group_id: group,
    })
    .await
    .expect("read states")
    .into_inner()
    .read_states
    .iter()
    .map(|s| s.channel_id)
    .collect()
}

#[tokio::test]
async fn set_channel_answers_the_channel_and_get_channel_shows_it_or_not_found() {
    let app = spawn_app().await;
    let mut grpc = client(&app);
    post(&mut grpc, 10, 100, vec![]).await;

    let set = grpc
        .set_channel(set_channel_request(20, Some(10), None))
        .await
        .expect("set")
        .into_inner();
    // Setting it again replaces both fields.
    let grouped = grpc
        .set_channel(set_channel_request(10, None, Some(7)))
        .await
        .expect("set")
        .into_inner();
    let again = grpc
        .set_channel(set_channel_request(10, None, Some(7)))
        .await
        .expect("idempotent")
        .into_inner();
    let got = grpc
        .get_channel(pb::GetChannelRequest { channel_id: 10 })
        .await
        .expect("a channel")
        .into_inner();
    let missing = grpc
        .get_channel(pb::GetChannelRequest { channel_id: 999 })
        .await
        .expect_err("never seen");
    let bad = grpc
        .get_channel(pb::GetChannelRequest { channel_id: 0 })
        .await
        .expect_err("channel 0");
    let bad_group = grpc
        .set_channel(set_channel_request(10, None, Some(0)))
        .await
        .expect_err("group 0");

    assert_eq!(
        set,
        pb::Channel {
            channel_id: 20,
            parent_id: Some(10),
            group_id: None,
            last_message_id: 0,
        }
    );
    let expected = pb::Channel {
        channel_id: 10,
        parent_id: None,
        group_id: Some(7),
        last_message_id: 100,
    };
    assert_eq!((grouped, again, got), (expected, expected, expected));
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&bad), vec!["channel_id".to_owned()]);
    assert_eq!(bad_fields(&bad_group), vec!["group_id".to_owned()]);

    // Empty metadata stamped 0 stores nothing, and answers an empty channel.
    let empty = grpc
        .set_channel(pb::SetChannelRequest {
            at: Some(0),
            ..set_channel_request(30, None, None)
        })
        .await
        .expect("set")
        .into_inner();
    assert_eq!(
        empty,
        pb::Channel {
            channel_id: 30,
            parent_id: None,
            group_id: None,
            last_message_id: 0,
        }
    );
}

#[tokio::test]
async fn a_parent_equal_to_the_channel_or_forming_a_cycle_is_invalid_naming_parent_id() {
    let app = spawn_app().await;
    let mut grpc = client(&app);
    // 30 under 20 under 10.
    grpc.set_channel(set_channel_request(20, Some(10), None))
        .await
        .expect("set");
    grpc.set_channel(set_channel_request(30, Some(20), None))
        .await
        .expect("set");

    let itself = grpc
        .set_channel(set_channel_request(10, Some(10), None))
        .await
        .expect_err("its own parent");
    let cycle = grpc
        .set_channel(set_channel_request(10, Some(30), None))
        .await
        .expect_err("a cycle");
    let unchanged = grpc
        .get_channel(pb::GetChannelRequest { channel_id: 10 })
        .await;

    for refused in [&itself, &cycle] {
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert_eq!(bad_fields(refused), vec!["parent_id".to_owned()]);
    }
    assert!(cycle.message().contains("cycle"), "{cycle:?}");
    // Nothing was set on 10 (it has no messages): still never seen.
    assert_eq!(unchanged.expect_err("not set").code(), Code::NotFound);
}

#[tokio::test]
async fn settings_answer_the_read_state_and_muting_hides_the_unread_channel_but_not_mentions() {
    let app = spawn_app().await;
    let mut grpc = client(&app);
    post(&mut grpc, 10, 100, vec![1]).await;
    post(&mut grpc, 10, 101, vec![]).await;
    post(&mut grpc, 11, 200, vec![1]).await;
    let joined = join_at(&mut grpc, 1, 10, 0).await;
    join_at(&mut grpc, 1, 11, 0).await;
    let before = summary_of(&mut grpc, 1, None).await;

    let muted = grpc
        .update_settings(settings_request(1, 10, Some(MUTED_FOREVER), None, 5))
        .await
        .expect("muted")
        .into_inner();
    let muted_summary = summary_of(&mut grpc, 1, None).await;
    // An older write redelivered changes nothing.
    grpc.update_settings(settings_request(1, 10, Some(0), None, 4))
        .await
        .expect("an old unmute");
    let nothing = grpc
        .update_settings(settings_request(1, 11, None, Some("nothing"), 5))
        .await
        .expect("level nothing")
        .into_inner();
    let after = summary_of(&mut grpc, 1, None).await;
    let unmuted = grpc
        .update_settings(settings_request(1, 10, Some(0), Some("mentions"), 6))
        .await
        .expect("unmuted")
        .into_inner();
    let mentions_only = summary_of(&mut grpc, 1, None).await;

    assert_eq!(
        (
            joined.first_unread_message_id,
            joined.muted,
            joined.level.as_str()
        ),
        (Some(100), false, "all")
    );
    assert_eq!(before, (2, 0, 2));
    assert_eq!(
        (muted.muted, muted.level.as_str(), muted.unread_count),
        (true, "all", 2)
    );
    // Muted: no unread dot, the mention badge stays.
    assert_eq!(muted_summary, (1, 0, 2));
    assert_eq!((nothing.muted, nothing.level.as_str()), (false, "nothing"));
    // Level nothing: neither.
    assert_eq!(after, (0, 0, 1));
    assert_eq!((unmuted.muted, unmuted.level.as_str()), (false, "mentions"));
    // Level mentions: the mention only.
    assert_eq!(mentions_only, (0, 0, 1));
}

#[tokio::test]
async fn settings_create_the_read_state_and_bad_values_name_their_field() {
    let app = spawn_app().await;
    let mut grpc = client(&app);
    post(&mut grpc, 10, 100, vec![]).await;

    let created = grpc
        .update_settings(settings_request(1, 10, None, Some("mentions"), 1))
        .await
        .expect("created like a join")
        .into_inner();
    let level = grpc
        .update_settings(settings_request(1, 10, None, Some("loud"), 2))
        .await
        .expect_err("unknown level");
    let until = grpc
        .update_settings(settings_request(1, 10, Some(u64::MAX), None, 2))
        .await
        .expect_err("past 2^63-1");
    let user = grpc
        .update_settings(settings_request(0, 10, None, None, 2))
        .await
        .expect_err("user 0");
    let state = grpc
        .get_read_state(pb::GetReadStateRequest {
            user_id: 1,
            channel_id: 10,
        })
        .await
        .expect("a read state")
        .into_inner();

    assert_eq!(
        (
            created.last_read_message_id,
            created.has_unread,
            created.level.as_str()
        ),
        (100, false, "mentions")
    );
    assert_eq!(created.first_unread_message_id, None);
    for (refused, field) in [
        (&level, "level"),
        (&until, "muted_until"),
        (&user, "user_id"),
    ] {
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert_eq!(bad_fields(refused), vec![field.to_owned()]);
    }
    assert_eq!(state, created, "the refused writes changed nothing");
}

#[tokio::test]
async fn threads_count_in_unread_threads_and_get_threads_pages_them() {
    let app = spawn_app().await;
    let mut grpc = client(&app);
    post(&mut grpc, 10, 100, vec![]).await;
    for thread in [21, 22, 23] {
        grpc.set_channel(set_channel_request(thread, Some(10), None))
            .await
            .expect("a thread");
    }
    post(&mut grpc, 21, 1000, vec![1]).await;
    post(&mut grpc, 22, 2000, vec![]).await;
    post(&mut grpc, 23, 3000, vec![]).await;
    join_at(&mut grpc, 1, 10, 100).await;
    for thread in [21, 22, 23] {
        join_at(&mut grpc, 1, thread, 0).await;
    }
    // 23 is read: neither unread nor mentioned, so not listed.
    grpc.ack(pb::AckRequest {
        user_id: 1,
        channel_id: 23,
        message_id: 3000,
        at: None,
    })
    .await
    .expect("acked");
    let threads = |after: Option<u64>, limit: Option<u32>| pb::GetThreadsRequest {
        user_id: 1,
        channel_id: 10,
        after,
        limit,
    };

    let summary = summary_of(&mut grpc, 1, None).await;
    let first = grpc
        .get_threads(threads(None, Some(1)))
        .await
        .expect("a page")
        .into_inner();
    let second = grpc
        .get_threads(threads(first.next, Some(1)))
        .await
        .expect("a page")
        .into_inner();
    let all = grpc
        .get_threads(threads(None, None))
        .await
        .expect("a page")
        .into_inner();
    let none = grpc
        .get_threads(pb::GetThreadsRequest {
            channel_id: 21,
            ..threads(None, None)
        })
        .await
        .expect("a page")
        .into_inner();
    let bad = grpc
        .get_threads(threads(None, Some(0)))
        .await
        .expect_err("limit 0");

    // The channel is read; two threads are unread.
    assert_eq!(summary, (0, 2, 1));
    let ids = |r: &pb::ThreadsReply| {
        r.read_states
            .iter()
            .map(|s| s.channel_id)
            .collect::<Vec<_>>()
    };
    assert_eq!((first.unread_threads, first.mentions), (2, 1));
    assert_eq!((ids(&first), first.next), (vec![21], Some(21)));
    assert_eq!(ids(&second), vec![22]);
    assert_eq!((ids(&all), all.next), (vec![21, 22], None));
    assert_eq!(all.read_states[0].first_unread_message_id, Some(1000));
    assert_eq!((none.unread_threads, ids(&none)), (0, vec![]));
    assert_eq!(bad_fields(&bad), vec!["limit".to_owned()]);
}

#[tokio::test]
async fn group_summaries_read_states_and_groups_follow_the_channels_groups() {
    let app = spawn_app().await;
    let mut grpc = client(&app);
    // Group 7: channel 10 and its thread 20 (inherited); group 8: channel 30;
    // channel 40 has none.
    grpc.set_channel(set_channel_request(10, None, Some(7)))
        .await
        .expect("set");
    grpc.set_channel(set_channel_request(20, Some(10), None))
        .await
        .expect("set");
    grpc.set_channel(set_channel_request(30, None, Some(8)))
        .await
        .expect("set");
    post(&mut grpc, 10, 100, vec![1]).await;
    post(&mut grpc, 20, 200, vec![]).await;
    post(&mut grpc, 30, 300, vec![1]).await;
    post(&mut grpc, 40, 400, vec![]).await;
    for channel in [10, 20, 30, 40] {
        join_at(&mut grpc, 1, channel, 0).await;
    }
    grpc.update_settings(settings_request(1, 30, Some(MUTED_FOREVER), None, 1))
        .await
        .expect("muted");

    let group7 = summary_of(&mut grpc, 1, Some(7)).await;
    let group8 = summary_of(&mut grpc, 1, Some(8)).await;
    let empty = summary_of(&mut grpc, 1, Some(9)).await;
    let overall = summary_of(&mut grpc, 1, None).await;
    let in7 = channels_of(&mut grpc, 1, vec![], Some(7)).await;
    let in7_listed = channels_of(&mut grpc, 1, vec![20, 30], Some(7)).await;
    let groups = grpc
        .get_groups(pb::GetGroupsRequest { user_id: 1 })
        .await
        .expect("groups")
        .into_inner()
        .groups;
    let bad = grpc
        .get_summary(pb::GetSummaryRequest {
            user_id: 1,
            group_id: Some(0),
        })
        .await
        .expect_err("group 0");

    assert_eq!(group7, (1, 1, 1));
    assert_eq!(group8, (0, 0, 1));
    assert_eq!(empty, (0, 0, 0));
    assert_eq!(overall, (2, 1, 2));
    assert_eq!(in7, vec![10, 20]);
    assert_eq!(
        in7_listed,
        vec![20],
        "both filters: the listed channels in the group"
    );
    let summary = |unread_channels, unread_threads, mentions| pb::Summary {
        unread_channels,
        mentions,
        unread_threads,
    };
    assert_eq!(
        groups
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>(),
        std::collections::BTreeMap::from([(7, summary(1, 1, 1)), (8, summary(0, 0, 1))])
    );
    assert_eq!(bad_fields(&bad), vec!["group_id".to_owned()]);
}

#[tokio::test]
async fn export_holds_positions_epochs_mentions_and_settings_and_delete_user_removes_them() {
    let app = spawn_app().await;
    let mut grpc = client(&app);
    post(&mut grpc, 10, 100, vec![1]).await;
    post(&mut grpc, 10, 101, vec![1, 2]).await;
    post(&mut grpc, 11, 200, vec![]).await;
    join_at(&mut grpc, 1, 10, 0).await;
    join_at(&mut grpc, 1, 11, 200).await;
    join_at(&mut grpc, 2, 10, 0).await;
    grpc.mark_unread(pb::MarkUnreadRequest {
        user_id: 1,
        channel_id: 11,
        message_id: 200,
    })
    .await
    .expect("marked unread");
    grpc.update_settings(settings_request(
        1,
        10,
        Some(MUTED_FOREVER),
        Some("mentions"),
        42,
    ))
    .await
    .expect("settings");

    let export = |user| pb::ExportUserRequest { user_id: user };
    let before = grpc
        .export_user(export(1))
        .await
        .expect("an export")
        .into_inner();
    grpc.delete_user(pb::DeleteUserRequest { user_id: 1 })
        .await
        .expect("deleted");
    grpc.delete_user(pb::DeleteUserRequest { user_id: 1 })
        .await
        .expect("idempotent");
    let after = grpc
        .export_user(export(1))
        .await
        .expect("an export")
        .into_inner();
    let states = channels_of(&mut grpc, 1, vec![], None).await;
    let gone = grpc
        .get_read_state(pb::GetReadStateRequest {
            user_id: 1,
            channel_id: 10,
        })
        .await
        .expect_err("gone");
    let summary = summary_of(&mut grpc, 1, None).await;
    let other = channels_of(&mut grpc, 2, vec![], None).await;
    let bad = grpc
        .delete_user(pb::DeleteUserRequest { user_id: 0 })
        .await
        .expect_err("user 0");
    // A later write starts the user afresh: no mentions, default settings.
    let fresh = join_at(&mut grpc, 1, 10, 100).await;

    assert_eq!(before.user_id, 1);
    assert_eq!(before.read_states.len(), 2, "{before:?}");
    let (ten, eleven) = (&before.read_states[0], &before.read_states[1]);
    assert_eq!(
        (ten.channel_id, ten.last_read_message_id, ten.epoch),
        (10, 0, 0)
    );
    assert_eq!(ten.mention_ids, vec![100, 101]);
    assert_eq!(
        (
            ten.muted_until,
            ten.muted_at,
            ten.level.as_str(),
            ten.level_at
        ),
        (MUTED_FOREVER, 42, "mentions", 42)
    );
    assert_eq!((eleven.channel_id, eleven.last_read_message_id), (11, 199));
    assert!(eleven.epoch > 0, "marked unread: {eleven:?}");
    assert_eq!(
        (
            eleven.muted_until,
            eleven.muted_at,
            eleven.level.as_str(),
            eleven.level_at
        ),
        (0, 0, "all", 0)
    );
    assert!(eleven.mention_ids.is_empty());
    assert_eq!((after.user_id, after.read_states.len()), (1, 0));
    assert!(states.is_empty());
    assert_eq!(gone.code(), Code::NotFound);
    assert_eq!(summary, (0, 0, 0));
    assert_eq!(other, vec![10], "another user's state stays");
    assert_eq!(bad_fields(&bad), vec!["user_id".to_owned()]);
    assert_eq!(
        (
            fresh.last_read_message_id,
            fresh.muted,
            fresh.level.as_str(),
            fresh.mention_count
        ),
        (100, false, "all", 0)
    );
}

#[tokio::test]
async fn the_new_ops_go_through_batch_and_write_naming_their_fields() {
    let app = spawn_app().await;
    let mut grpc = client(&app);
    let op = |op| pb::Op { op: Some(op) };
    use pb::op::Op as Kind;
    let ops = vec![
        op(Kind::SetChannel(set_channel_request(20, Some(10), Some(7)))),
        created(20, 200, vec![]),
        op(Kind::Settings(settings_request(
            1,
            20,
            None,
            Some("all"),
            1,
        ))),
        op(Kind::Settings(settings_request(
            1,
            20,
            None,
            Some("some"),
            2,
        ))),
        op(Kind::SetChannel(set_channel_request(30, Some(30), None))),
        op(Kind::DeleteUser(pb::DeleteUserRequest { user_id: 0 })),
        op(Kind::Settings(settings_request(
            2,
            20,
            Some(MUTED_FOREVER),
            None,
            1,
        ))),
    ];

    let reply = grpc
        .batch(pb::BatchRequest { ops })
        .await
        .expect("a reply")
        .into_inner();
    let channel = grpc
        .get_channel(pb::GetChannelRequest { channel_id: 20 })
        .await
        .expect("set by the batch")
        .into_inner();
    let summary = summary_of(&mut grpc, 1, Some(7)).await;
    let written = grpc
        .write(futures_util::stream::iter(vec![
            op(Kind::DeleteUser(pb::DeleteUserRequest { user_id: 2 })),
            op(Kind::Settings(settings_request(3, 0, None, None, 1))),
        ]))
        .await
        .expect("a reply")
        .into_inner();
    let deleted = channels_of(&mut grpc, 2, vec![], None).await;

    let outcome = |r: &pb::BatchReply| -> Vec<(bool, Option<String>)> {
        r.results
            .iter()
            .map(|r| (r.ok, r.error.as_ref().and_then(|p| p.field.clone())))
            .collect()
    };
    assert_eq!(
        outcome(&reply),
        vec![
            (true, None),
            (true, None),
            (true, None),
            (false, Some("ops[3].level".into())),
            (false, Some("ops[4].parent_id".into())),
            (false, Some("ops[5].user_id".into())),
            (true, None),
        ]
    );
    assert_eq!((channel.parent_id, channel.group_id), (Some(10), Some(7)));
    // The thread's read state was created (at its head, 200) by the settings op.
    assert_eq!(summary, (0, 0, 0));
    assert_eq!(
        outcome(&written),
        vec![(true, None), (false, Some("ops[1].channel_id".into()))]
    );
    assert!(deleted.is_empty());
}

#[tokio::test]
async fn subscribe_streams_settings_and_user_deleted_events() {
    let app = spawn_app().await;
    let mut grpc = client(&app);
    post(&mut grpc, 10, 100, vec![]).await;
    join_at(&mut grpc, 1, 10, 0).await;
    let mut events = subscribe(&app, 1, None).await;
    next_event(&mut events).await;

    grpc.update_settings(settings_request(1, 10, Some(MUTED_FOREVER), None, 1))
        .await
        .expect("muted");
    let settings = next_event(&mut events).await;
    grpc.delete_user(pb::DeleteUserRequest { user_id: 1 })
        .await
        .expect("deleted");
    let deleted = next_event(&mut events).await;

    assert_eq!(change_of(&settings), ("settings", 10, Some((0, 1))));
    match &settings.event {
        Some(pb::event::Event::ReadState(c)) => {
            assert_eq!(c.read_state.as_ref().map(|s| s.muted), Some(true));
        }
        other => panic!("expected a read_state event, got {other:?}"),
    }
    assert_eq!(change_of(&deleted), ("user_deleted", 10, None));
}
