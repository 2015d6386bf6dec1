//! A JetStream stream of its own for one test on the NATS server at
//! `READSTATE_TEST_NATS_URL` (default `nats://127.0.0.1:4222`), and an event
//! generator whose events commute (message created/deleted, ack), checked against
//! the engine's reference model.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer};
use readstate::domain::{Caps, ChannelId, MessageId, Model, Op, ReadStateView, UserId};
use serde_json::{Value, json};

/// The environment variable naming the NATS server.
pub const NATS_URL_ENV: &str = "READSTATE_TEST_NATS_URL";

/// The NATS server of the tests.
pub fn nats_url() -> String {
    std::env::var(NATS_URL_ENV)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned())
}

/// A stream `RS_T_<hex>` on subjects `rs_t_<hex>.>`, deleted by [`TestStream::delete`].
pub struct TestStream {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub stream: String,
    pub prefix: String,
    pub consumer: String,
}

impl TestStream {
    /// A name of its own; the stream is created by [`TestStream::create`] (or by the
    /// service, when a test checks that).
    pub async fn new() -> Self {
        let url = nats_url();
        let client = async_nats::connect(&url).await.unwrap_or_else(|e| {
            panic!(
                "cannot reach NATS at {url} ({e}): start nats-server -js (Debian: apt-get install nats-server), or set {NATS_URL_ENV}"
            )
        });
        let id = super::random_hex();
        Self {
            js: jetstream::new(client.clone()),
            client,
            stream: format!("RS_T_{id}"),
            prefix: format!("rs_t_{id}"),
            consumer: "readstate".to_owned(),
        }
    }

    /// Creates the stream (as the service would: its subjects, file storage).
    ///
    /// Retried a few times: nats-server 2.9 removes an account's storage directory
    /// when its last stream is deleted, and a stream created at that moment by a test
    /// running alongside fails with "error creating store for stream" (10049; the
    /// server logs `mkdir .../jetstream/$G/streams/...: no such file or directory`).
    pub async fn create(&self) {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let created = self
                .js
                .get_or_create_stream(jetstream::stream::Config {
                    name: self.stream.clone(),
                    subjects: vec![format!("{}.>", self.prefix)],
                    ..Default::default()
                })
                .await;
            match created {
                Ok(_) => return,
                Err(e) if attempt < 5 => {
                    eprintln!("creating stream {} failed ({e}); again", self.stream);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("the stream is created: {e:?}"),
            }
        }
    }

    /// `READSTATE_NATS__*` settings pointing a server at this stream.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("READSTATE_NATS__URL".into(), nats_url()),
            ("READSTATE_NATS__STREAM".into(), self.stream.clone()),
            (
                "READSTATE_NATS__SUBJECTS".into(),
                format!("[\"{}.>\"]", self.prefix),
            ),
            ("READSTATE_NATS__CONSUMER".into(), self.consumer.clone()),
        ]
    }

    /// Publishes raw bytes to `<prefix>.events` and waits for JetStream's ack.
    pub async fn publish_raw(&self, payload: Vec<u8>) {
        self.js
            .publish(format!("{}.events", self.prefix), payload.into())
            .await
            .expect("publish")
            .await
            .expect("JetStream stores the event");
    }

    /// Publishes one event.
    pub async fn publish(&self, event: &Value) {
        self.publish_raw(serde_json::to_vec(event).expect("JSON"))
            .await;
    }

    /// Publishes many events, waiting for the acks in chunks (the client bounds the
    /// acks in flight).
    pub async fn publish_all(&self, events: &[Value]) {
        for chunk in events.chunks(256) {
            let mut acks = Vec::with_capacity(chunk.len());
            for event in chunk {
                let bytes = serde_json::to_vec(event).expect("JSON");
                acks.push(
                    self.js
                        .publish(format!("{}.events", self.prefix), bytes.into())
                        .await
                        .expect("publish"),
                );
            }
            for ack in acks {
                ack.await.expect("JetStream stores the event");
            }
        }
    }

    /// The service's consumer (once it exists).
    pub async fn consumer(&self) -> Option<PullConsumer> {
        let stream = self.js.get_stream(&self.stream).await.ok()?;
        stream.get_consumer(&self.consumer).await.ok()
    }

    /// Waits until the consumer has every message of the stream acknowledged or
    /// terminated: nothing pending, nothing awaiting an ack.
    pub async fn wait_drained(&self, deadline: Duration) -> jetstream::consumer::Info {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            if let Some(mut consumer) = self.consumer().await
                && let Ok(info) = consumer.info().await
                && info.num_pending == 0
                && info.num_ack_pending == 0
                && info.delivered.stream_sequence > 0
            {
                return info.clone();
            }
            assert!(
                tokio::time::Instant::now() < until,
                "the consumer did not drain within {deadline:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Deletes the stream.
    pub async fn delete(&self) {
        let _ = self.js.delete_stream(&self.stream).await;
    }
}

/// A small deterministic generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }

    /// Shuffles in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// `n` random commuting events over `users` users and `channels` channels, as
/// `(event JSON, op)`: messages created (with an author and mentions), deleted, acks.
pub fn commuting_events(rng: &mut Rng, n: usize, users: u64, channels: u64) -> Vec<(Value, Op)> {
    let mut out = Vec::with_capacity(n);
    let mut next_message = 1u64;
    let mut created: Vec<(u64, u64)> = Vec::new();
    for _ in 0..n {
        let channel = 1 + rng.below(channels);
        let user = 1 + rng.below(users);
        let roll = rng.below(100);
        let (event, op) = if roll < 45 || created.is_empty() {
            let message = next_message;
            next_message += 1 + rng.below(3);
            created.push((channel, message));
            let mentions: Vec<u64> = (0..rng.below(3)).map(|_| 1 + rng.below(users)).collect();
            let author = (rng.below(4) > 0).then_some(user);
            (
                json!({"type": "message_created", "channel_id": channel.to_string(), "message_id": message.to_string(),
                       "author_id": author.map(|a| a.to_string()), "mentions": mentions.iter().map(u64::to_string).collect::<Vec<_>>()}),
                Op::MessageCreated {
                    channel: ChannelId::new(channel).expect("id"),
                    message: MessageId::new(message).expect("id"),
                    author: author.map(|a| UserId::new(a).expect("id")),
                    mentions: mentions
                        .iter()
                        .map(|&m| UserId::new(m).expect("id"))
                        .collect(),
                },
            )
        } else if roll < 55 {
            let (channel, message) = created[rng.below(created.len() as u64) as usize];
            (
                json!({"type": "message_deleted", "channel_id": channel.to_string(), "message_id": message}),
                Op::MessageDeleted {
                    channel: ChannelId::new(channel).expect("id"),
                    message: MessageId::new(message).expect("id"),
                },
            )
        } else {
            let (channel, message) = created[rng.below(created.len() as u64) as usize];
            (
                json!({"type": "ack", "user_id": user, "channel_id": channel.to_string(), "message_id": message.to_string()}),
                Op::Ack {
                    user: UserId::new(user).expect("id"),
                    channel: ChannelId::new(channel).expect("id"),
                    message: MessageId::new(message).expect("id"),
                    at: None,
                },
            )
        };
        out.push((event, op));
    }
    out
}

/// What the model says each user's read states are after `ops` (applied once).
pub fn model_states(caps: Caps, ops: &[Op], users: u64) -> Vec<(u64, Vec<ReadStateView>)> {
    let mut model = Model::new(caps);
    for op in ops {
        model.apply(op, 0);
    }
    (1..=users)
        .map(|u| (u, model.read_states(UserId::new(u).expect("id"), 0)))
        .collect()
}

/// A view as the HTTP API renders it.
pub fn view_json(view: ReadStateView) -> Value {
    serde_json::to_value(readstate::api::dto::ReadStateBody::from(view)).expect("JSON")
}
