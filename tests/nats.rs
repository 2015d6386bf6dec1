//! The NATS JetStream ingest and change publishing, against the real NATS server
//! (`READSTATE_TEST_NATS_URL`, default `nats://127.0.0.1:4222`; a missing server
//! fails the tests): events applied as the reference model says, duplicated and
//! shuffled; poison events terminated; kill -9 mid-stream loses nothing and counts
//! nothing twice; a mention made through NATS reaches SSE subscribers; changes are
//! published back to NATS.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use readstate::app::App;
use readstate::config::Settings;
use readstate::domain::{Caps, Op, UserId};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use support::TestStorage;
use support::binary::{self, client};
use support::nats::{Rng, TestStream, commuting_events, model_states, view_json};
use support::sse::SseStream;

const CAPS: Caps = Caps {
    unread: 3,
    mention: 2,
};

/// An in-process app consuming `stream`, with small caps.
async fn spawn(
    storage: &TestStorage,
    stream: &TestStream,
    configure: impl FnOnce(&mut Settings),
) -> (App, SocketAddr) {
    let mut settings = Settings::default();
    settings.http.addr = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.storage.url = storage.url().into();
    settings.state.unread_cap = CAPS.unread;
    settings.state.mention_cap = CAPS.mention;
    settings.nats.url = Some(support::nats::nats_url().into());
    settings.nats.stream = stream.stream.clone();
    settings.nats.subjects = vec![format!("{}.>", stream.prefix)];
    settings.nats.consumer = stream.consumer.clone();
    configure(&mut settings);
    let app = App::build(settings).await.expect("the app builds");
    let addr = app.http_addr();
    (app, addr)
}

/// `n` commuting events (the ops, for the model) and each of them twice, shuffled
/// (what is published).
fn duplicated_and_shuffled(
    seed: u64,
    n: usize,
    users: u64,
    channels: u64,
) -> (Vec<Op>, Vec<Value>) {
    let mut rng = Rng::new(seed);
    let generated = commuting_events(&mut rng, n, users, channels);
    let ops = generated.iter().map(|(_, op)| op.clone()).collect();
    let mut events: Vec<Value> = generated
        .iter()
        .flat_map(|(e, _)| [e.clone(), e.clone()])
        .collect();
    rng.shuffle(&mut events);
    (ops, events)
}

#[tokio::test]
async fn events_duplicated_and_shuffled_give_the_models_read_states() {
    let storage = TestStorage::from_env();
    let stream = TestStream::new().await;
    // The service creates the stream: it does not exist yet.
    let (app, _) = spawn(&storage, &stream, |s| s.nats.batch = 64).await;
    let service = app.service().clone();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run(shutdown.clone()));
    support::wait_for(
        "the service's consumer",
        Duration::from_secs(10),
        || async { stream.consumer().await.map(|_| ()) },
    )
    .await;

    let users = 12;
    let (ops, events) = duplicated_and_shuffled(0x5eed_0001, 600, users, 5);
    stream.publish_all(&events).await;
    stream.wait_drained(Duration::from_secs(60)).await;

    for (user, expected) in model_states(CAPS, &ops, users) {
        let got = service
            .read_states(UserId::new(user).expect("id"), None)
            .await
            .expect("read states");
        assert_eq!(got, expected, "user {user}");
    }
    shutdown.cancel();
    server.await.expect("no panic").expect("clean shutdown");
    stream.delete().await;
}

#[tokio::test]
async fn a_mention_through_nats_reaches_sse_subscribers_and_changes_are_published() {
    let storage = TestStorage::from_env();
    let stream = TestStream::new().await;
    stream.create().await;
    let changes_prefix = format!("{}_changes", stream.prefix);
    let (app, addr) = spawn(&storage, &stream, |s| {
        s.nats.publish_changes = true;
        s.nats.changes_prefix.clone_from(&changes_prefix);
    })
    .await;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run(shutdown.clone()));
    let mut published = stream
        .client
        .subscribe(format!("{changes_prefix}.>"))
        .await
        .expect("subscribe");
    stream.client.flush().await.expect("flush");

    let http = client();
    let url = format!("http://{addr}/v1/users/2/events");
    let mut phone = SseStream::open(&http, &url, None).await;
    let mut laptop = SseStream::open(&http, &url, None).await;
    assert_eq!(phone.next().await.event, "ready");
    assert_eq!(laptop.next().await.event, "ready");

    stream
        .publish(
            &json!({"type": "message_created", "channel_id": "10", "message_id": "500",
                         "author_id": "1", "mentions": ["2"]}),
        )
        .await;
    for sse in [&mut phone, &mut laptop] {
        let frame = sse.next().await;
        assert_eq!(frame.event, "read_state");
        assert_eq!(frame.data["type"], "mention");
        assert_eq!(frame.data["read_state"]["mention_count"], 1);
        assert_eq!(frame.data["read_state"]["unread_count"], 1);
    }
    // An ack over HTTP reaches them too, and NATS gets every change.
    let reply = http
        .post(format!("http://{addr}/v1/users/2/channels/10/ack"))
        .json(&json!({"message_id": "500"}))
        .send()
        .await
        .expect("ack");
    assert_eq!(reply.status(), 200);
    assert_eq!(phone.next().await.data["type"], "ack");

    let mut seen = Vec::new();
    while seen.len() < 3 {
        let message = tokio::time::timeout(Duration::from_secs(10), published.next())
            .await
            .expect("a change is published")
            .expect("the subscription is open");
        let body: Value = serde_json::from_slice(&message.payload).expect("JSON");
        seen.push((
            message.subject.to_string(),
            body["type"].as_str().unwrap_or("").to_owned(),
        ));
    }
    assert_eq!(
        seen,
        [
            (format!("{changes_prefix}.1"), "ack".to_owned()),
            (format!("{changes_prefix}.2"), "mention".to_owned()),
            (format!("{changes_prefix}.2"), "ack".to_owned()),
        ]
    );
    shutdown.cancel();
    server.await.expect("no panic").expect("clean shutdown");
    stream.delete().await;
}

/// The sum of the samples of `name` with `label` in a Prometheus text exposition.
fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

fn env_of(stream: &TestStream, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = stream.env();
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    env
}

fn start(storage: &TestStorage, env: &[(String, String)]) -> binary::Server {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    binary::start(storage.url(), &pairs)
}

#[tokio::test]
async fn poison_events_are_terminated_and_counted_and_the_consumer_goes_on() {
    let storage = TestStorage::from_env();
    let stream = TestStream::new().await;
    stream.create().await;
    let poison: [&[u8]; 6] = [
        b"{not json",
        br#"{"type": "explode", "channel_id": "1"}"#,
        br#"{"type": "ack", "user_id": "0", "channel_id": "10", "message_id": "5"}"#,
        br#"{"type": "ack", "user_id": "1", "channel_id": "10"}"#,
        br#"["ack"]"#,
        br#"{"type": "leave", "user_id": "1", "channel_id": "10", "message_id": "5"}"#,
    ];
    stream
        .publish(&json!({"type": "message_created", "channel_id": "10", "message_id": "5"}))
        .await;
    for p in poison {
        stream.publish_raw(p.to_vec()).await;
    }
    stream
        .publish(&json!({"type": "ack", "user_id": "1", "channel_id": "10", "message_id": "5"}))
        .await;
    let server = start(&storage, &env_of(&stream, &[]));
    let info = stream.wait_drained(Duration::from_secs(30)).await;
    assert_eq!(info.delivered.stream_sequence, 8);

    let http = client();
    let state: Value = http
        .get(server.url("/v1/users/1/channels/10"))
        .send()
        .await
        .expect("read")
        .json()
        .await
        .expect("JSON");
    assert_eq!(state["last_read_message_id"], "5");
    // The lag gauge is read every second.
    let metrics = support::wait_for("the lag gauge", Duration::from_secs(10), || async {
        let text = http
            .get(server.url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.contains("readstate_nats_consumer_pending")
            .then_some(text)
    })
    .await;
    assert_eq!(
        metric(
            &metrics,
            "readstate_nats_events_total",
            "outcome=\"poison\""
        ),
        6.0
    );
    assert_eq!(
        metric(
            &metrics,
            "readstate_nats_events_total",
            "outcome=\"applied\""
        ),
        2.0
    );
    assert_eq!(
        metric(
            &metrics,
            "readstate_nats_events_total",
            "outcome=\"retried\""
        ),
        0.0
    );
    drop(server);
    stream.delete().await;
}

#[tokio::test]
async fn kill_9_while_consuming_loses_nothing_and_counts_nothing_twice() {
    let storage = TestStorage::from_env();
    let stream = TestStream::new().await;
    stream.create().await;
    let users = 40;
    let (ops, events) = duplicated_and_shuffled(0x5eed_0009, 3000, users, 8);
    stream.publish_all(&events).await;

    // Async durability with a long flush interval: acking before the commit would lose
    // the events of the last interval on kill -9; the ingest must wait for the commit.
    let env = env_of(
        &stream,
        &[
            ("READSTATE_STORAGE__DURABILITY", "async"),
            ("READSTATE_STORAGE__FLUSH_INTERVAL_MS", "300"),
            ("READSTATE_NATS__BATCH", "50"),
            ("READSTATE_NATS__ACK_WAIT_MS", "2000"),
            ("READSTATE_STATE__UNREAD_CAP", "3"),
            ("READSTATE_STATE__MENTION_CAP", "2"),
        ],
    );
    let mut server = start(&storage, &env);
    // Kill it mid-stream: some events acknowledged, most not.
    support::wait_for("an ack floor of 1000", Duration::from_secs(60), || async {
        let mut consumer = stream.consumer().await?;
        let info = consumer.info().await.ok()?;
        (info.ack_floor.stream_sequence >= 1000).then_some(())
    })
    .await;
    server.kill_9();
    let mut consumer = stream.consumer().await.expect("the consumer exists");
    let floor = consumer
        .info()
        .await
        .expect("info")
        .ack_floor
        .stream_sequence;
    assert!(
        floor < events.len() as u64,
        "killed after the end ({floor})"
    );

    let server = start(&storage, &env);
    stream.wait_drained(Duration::from_secs(120)).await;
    let http = client();
    for (user, expected) in model_states(CAPS, &ops, users) {
        let got: Value = http
            .get(server.url(&format!("/v1/users/{user}/read-states")))
            .send()
            .await
            .expect("read")
            .json()
            .await
            .expect("JSON");
        let expected: Vec<Value> = expected.into_iter().map(view_json).collect();
        assert_eq!(got["read_states"], json!(expected), "user {user}");
    }
    drop(server);
    stream.delete().await;
}

/// The events of the README's NATS example and the answer it shows.
fn readme_example() -> (Vec<Value>, Value) {
    let readme = include_str!("../README.md");
    let section = &readme[readme.find("## NATS").expect("a NATS section")..];
    let start = section.find("cat <<'EOF'").expect("the heredoc");
    let body = &section[start..];
    let body = &body[body.find('\n').expect("a newline") + 1..];
    let events: Vec<Value> = body[..body.find("\nEOF").expect("the heredoc's end")]
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let answer = &body[body.find("```json\n").expect("the answer block") + 8..];
    let answer = serde_json::from_str(&answer[..answer.find("```").expect("its end")])
        .expect("the answer is JSON");
    (events, answer)
}

#[tokio::test]
async fn the_readme_nats_example_answers_as_documented() {
    let (events, answer) = readme_example();
    assert_eq!(events.len(), 4);
    let storage = TestStorage::from_env();
    let stream = TestStream::new().await;
    stream.create().await;
    let (app, addr) = spawn(&storage, &stream, |s| {
        s.state = readstate::config::StateSettings::default();
    })
    .await;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run(shutdown.clone()));
    // What `examples/nats_publish.rs` does with each line.
    for event in &events {
        stream.publish_raw(event.to_string().into_bytes()).await;
    }
    stream.wait_drained(Duration::from_secs(30)).await;
    let got: Value = client()
        .get(format!("http://{addr}/v1/users/2/read-states"))
        .send()
        .await
        .expect("read")
        .json()
        .await
        .expect("JSON");
    assert_eq!(got, answer);
    shutdown.cancel();
    server.await.expect("no panic").expect("clean shutdown");
    stream.delete().await;
}

/// Issue 14: `settings`, `set_channel` and `delete_user` are event types too.
/// Stamped settings and channel metadata, published twice each and shuffled, give
/// what the model gives applying them once in order (their registers merge by
/// stamp); a `delete_user` event then removes everything of that user.
#[tokio::test]
async fn settings_metadata_and_delete_user_events_converge_duplicated_and_shuffled() {
    use readstate::domain::{ChannelId, GroupId, Level, MUTED_FOREVER, MessageId};
    let storage = TestStorage::from_env();
    let stream = TestStream::new().await;
    let (app, _) = spawn(&storage, &stream, |s| s.nats.batch = 32).await;
    let service = app.service().clone();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run(shutdown.clone()));
    support::wait_for(
        "the service's consumer",
        Duration::from_secs(10),
        || async { stream.consumer().await.map(|_| ()) },
    )
    .await;
    let id = |v: u64| ChannelId::new(v).expect("id");
    let mut rng = Rng::new(0x5eed_0014);

    // Every (user, channel) state first, in order: later writes then commute.
    let mut first: Vec<(Value, Op)> = Vec::new();
    for c in 1..=6u64 {
        first.push((
            json!({"type": "message_created", "channel_id": c.to_string(), "message_id": "9", "mentions": ["1", "2"]}),
            Op::MessageCreated {
                channel: id(c),
                message: MessageId::new(9).expect("id"),
                author: None,
                mentions: vec![UserId::new(1).expect("id"), UserId::new(2).expect("id")],
            },
        ));
    }
    let mut later: Vec<(Value, Op)> = Vec::new();
    for _ in 0..150 {
        let at = rng.below(50);
        let c = 1 + rng.below(6);
        let user = 1 + rng.below(3);
        if rng.below(3) == 0 {
            // Channels 4..=6 are threads of 1..=3; 1..=3 are in groups 1..=2.
            let (parent, group) = if c > 3 {
                (Some(1 + rng.below(3)), None)
            } else {
                (None, Some(1 + rng.below(2)))
            };
            later.push((
                json!({"type": "set_channel", "channel_id": c.to_string(),
                       "parent_id": parent.map(|p| p.to_string()), "group_id": group.map(|g| g.to_string()), "at": at}),
                Op::SetChannel {
                    channel: id(c),
                    parent: parent.map(id),
                    group: group.map(|g| GroupId::new(g).expect("id")),
                    at: Some(at),
                },
            ));
        } else {
            let level = [Level::All, Level::Mentions, Level::Nothing][rng.below(3) as usize];
            let muted = [0, MUTED_FOREVER][rng.below(2) as usize];
            let muted_json = if muted == MUTED_FOREVER {
                Value::Null
            } else {
                json!(0)
            };
            later.push((
                json!({"type": "settings", "user_id": user.to_string(), "channel_id": c.to_string(),
                       "muted_until": muted_json, "level": level.as_str(), "at": at}),
                Op::Settings {
                    user: UserId::new(user).expect("id"),
                    channel: id(c),
                    muted_until: Some(muted),
                    level: Some(level),
                    at: Some(at),
                },
            ));
        }
    }
    // Users 1 and 2 have every state (mentioned); user 3 joins through settings.
    let join3: Vec<(Value, Op)> = (1..=6u64)
        .map(|c| {
            (
                json!({"type": "join", "user_id": "3", "channel_id": c.to_string()}),
                Op::Join {
                    user: UserId::new(3).expect("id"),
                    channel: id(c),
                    read: None,
                },
            )
        })
        .collect();
    first.extend(join3);
    stream
        .publish_all(&first.iter().map(|(e, _)| e.clone()).collect::<Vec<_>>())
        .await;
    stream.wait_drained(Duration::from_secs(60)).await;
    let mut events: Vec<Value> = later
        .iter()
        .flat_map(|(e, _)| [e.clone(), e.clone()])
        .collect();
    rng.shuffle(&mut events);
    stream.publish_all(&events).await;
    stream.wait_drained(Duration::from_secs(60)).await;

    let ops: Vec<Op> = first
        .iter()
        .chain(&later)
        .map(|(_, op)| op.clone())
        .collect();
    let mut model = readstate::domain::Model::new(CAPS);
    for op in &ops {
        model.apply(op, 0);
    }
    for u in 1..=3 {
        let user = UserId::new(u).expect("id");
        let got = service.read_states(user, None).await.expect("read states");
        assert_eq!(got, model.read_states(user, 0), "user {u}");
        assert_eq!(
            service.groups(user).await.expect("groups"),
            model.groups(user, 0),
            "groups of user {u}"
        );
        assert_eq!(
            service.summary(user).await.expect("summary"),
            model.summary(user, None, 0),
            "summary of user {u}"
        );
    }

    stream
        .publish_all(&[json!({"type": "delete_user", "user_id": "2"})])
        .await;
    stream.wait_drained(Duration::from_secs(60)).await;
    let user = UserId::new(2).expect("id");
    assert_eq!(
        service.read_states(user, None).await.expect("states"),
        vec![]
    );
    assert_eq!(service.export(user).await.expect("export"), vec![]);
    shutdown.cancel();
    server.await.expect("no panic").expect("clean shutdown");
    stream.delete().await;
}
