//! NATS: the JetStream ingest (events from producers, applied and acknowledged only
//! once durable) and the change publisher (read-state changes out to gateways).
//!
//! Ingest: a durable pull consumer on `nats.stream` (created with `nats.subjects`
//! when missing). Each fetch loop takes the first message it is given plus whatever
//! else has already arrived (up to `nats.batch`), applies them in stream order,
//! waits for one commit covering all of them, and only then acknowledges them. A
//! crash before the ack means redelivery, and every write is idempotent, so nothing
//! is lost and nothing counts twice. A message that can never apply (not JSON, an
//! unknown `type`, a bad id) is terminated (`+TERM`), logged with the reason and
//! counted; one that failed for a passing reason (storage down, queue full) is
//! negatively acknowledged with a delay and comes back.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures_util::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::ops::{parse_event, value_from_slice};
use crate::backoff::Backoff;
use crate::config::NatsSettings;
use crate::domain::Op;
use crate::live::Item;
use crate::service::{Durable, Service, ServiceError};

/// Delay before a message that failed for a passing reason is redelivered.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// How often the consumer's backlog is read for the lag metric.
const LAG_INTERVAL: Duration = Duration::from_secs(1);

/// Starts NATS on `tracker` when `nats.url` is set: connects (retrying with backoff
/// while the server is unreachable, without holding up HTTP), then runs the ingest
/// loops (`nats.ingest`) and the change publisher (`nats.publish_changes`) until
/// `cancel` fires; the ingest finishes the batch in hand first.
pub fn spawn(
    settings: &NatsSettings,
    service: Arc<Service>,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) {
    if settings.url.is_none() {
        return;
    }
    let settings = settings.clone();
    let inner = tracker.clone();
    tracker.spawn(async move {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
        loop {
            match start(&settings, service.clone(), cancel.clone(), &inner).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        retry_ms = backoff.delay().as_millis() as u64,
                        "nats unavailable"
                    );
                }
            }
            if !backoff.wait_or_cancel(&cancel).await {
                return;
            }
        }
    });
}

/// Connects and starts the tasks the settings ask for.
async fn start(
    settings: &NatsSettings,
    service: Arc<Service>,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<()> {
    let Some(url) = settings.url.as_ref() else {
        return Ok(());
    };
    let client = async_nats::ConnectOptions::new()
        .name(concat!("readstate ", env!("CARGO_PKG_VERSION")))
        .connection_timeout(Duration::from_secs(5))
        // One server or a comma-separated list (the client fails over between them).
        .connect(url.expose().split(',').map(str::trim).collect::<Vec<_>>())
        .await
        .with_context(|| format!("while connecting to nats.url {url}"))?;
    if settings.ingest {
        let consumer = consumer(&client, settings).await?;
        tracing::info!(
            stream = %settings.stream,
            consumer = %settings.consumer,
            concurrency = settings.concurrency,
            batch = settings.batch,
            "nats ingest started"
        );
        for _ in 0..settings.concurrency {
            tracker.spawn(ingest_loop(
                consumer.clone(),
                service.clone(),
                settings.batch,
                cancel.clone(),
            ));
        }
        tracker.spawn(report_lag(consumer, cancel.clone()));
    }
    if settings.publish_changes {
        let subscription = service
            .subscribe_all()
            .context("while subscribing the change publisher")?;
        tracing::info!(prefix = %settings.changes_prefix, "publishing changes to nats");
        tracker.spawn(publish_changes(
            client,
            settings.changes_prefix.clone(),
            service,
            subscription,
            cancel,
        ));
    }
    Ok(())
}

/// The durable pull consumer, creating the stream and the consumer when missing.
async fn consumer(
    client: &async_nats::Client,
    settings: &NatsSettings,
) -> anyhow::Result<PullConsumer> {
    let js = jetstream::new(client.clone());
    let stream = js
        .get_or_create_stream(jetstream::stream::Config {
            name: settings.stream.clone(),
            subjects: settings.subjects.clone(),
            num_replicas: settings.replicas,
            ..Default::default()
        })
        .await
        .with_context(|| format!("while opening stream nats.stream {}", settings.stream))?;
    stream
        .get_or_create_consumer(
            &settings.consumer,
            jetstream::consumer::pull::Config {
                durable_name: Some(settings.consumer.clone()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: settings.ack_wait(),
                // Room for several batches per loop waiting for their commit.
                max_ack_pending: i64::try_from(settings.batch * settings.concurrency * 8)
                    .unwrap_or(i64::MAX),
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("while opening consumer nats.consumer {}", settings.consumer))
}

/// One fetch loop: takes what has arrived, applies it, and hands the batch to a task
/// that acknowledges it once its commit is done, while the loop applies the next one
/// (JetStream's `max_ack_pending` bounds how many batches wait at once).
async fn ingest_loop(
    consumer: PullConsumer,
    service: Arc<Service>,
    batch: usize,
    cancel: CancellationToken,
) {
    let mut settling = tokio::task::JoinSet::new();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    'pull: while !cancel.is_cancelled() {
        let messages = consumer
            .stream()
            .max_messages_per_batch(batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await;
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "nats consumer: cannot pull; retrying");
                if !backoff.wait_or_cancel(&cancel).await {
                    break 'pull;
                }
                continue;
            }
        };
        backoff.reset();
        loop {
            // Reap finished acknowledgements as we go.
            while settling.try_join_next().is_some() {}
            let first = tokio::select! {
                next = messages.next() => next,
                () = cancel.cancelled() => break 'pull,
            };
            let mut taken = match first {
                Some(Ok(message)) => vec![message],
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "nats consumer: pull failed");
                    // Missed heartbeats and the like: open a new pull.
                    break;
                }
                None => break,
            };
            // Whatever else has already arrived joins the same commit.
            while taken.len() < batch {
                match messages.next().now_or_never() {
                    Some(Some(Ok(message))) => taken.push(message),
                    _ => break,
                }
            }
            let ops = taken.iter().map(parse).collect();
            let (results, durable) = service.apply_then_barrier(ops).await;
            settling.spawn(settle_batch(taken, results, durable));
        }
    }
    // Shutting down: the batches in hand are acknowledged once committed.
    while settling.join_next().await.is_some() {}
}

fn parse(message: &jetstream::Message) -> Result<Op, ServiceError> {
    parse_payload(&message.payload)
}

/// Parses the payload of one ingest message: a JSON event (see [`parse_event`]).
/// Pure, so that it can be fuzzed (`fuzz/fuzz_targets/ops.rs`).
///
/// # Errors
/// [`ServiceError::Invalid`]: `event` when the payload is not JSON or not an object,
/// else the field [`parse_event`] names.
pub fn parse_payload(payload: &[u8]) -> Result<Op, ServiceError> {
    match value_from_slice(payload) {
        Ok(value) => parse_event(&value),
        Err(e) => Err(ServiceError::invalid("event", format!("not JSON: {e}"))),
    }
}

/// Settles a batch with JetStream once its commit is done: applied → ack, poison →
/// term, failed for a passing reason → nak (redelivered after a delay).
async fn settle_batch(
    messages: Vec<jetstream::Message>,
    results: Vec<Result<(), ServiceError>>,
    durable: Result<Durable, ServiceError>,
) {
    let committed = match durable {
        Ok(durable) => durable.wait().await,
        Err(e) => Err(e),
    };
    if let Err(e) = &committed {
        // Whether the ops are durable is unknown, so all come back (idempotent writes
        // make the second time harmless); poison stays poison.
        tracing::warn!(error = %e, events = messages.len(), "nats ingest: commit failed; redelivering");
    }
    let committed = committed.is_ok();
    let (mut applied, mut poison, mut retried) = (0, 0, 0);
    for (message, result) in messages.iter().zip(results) {
        let kind = match result {
            Ok(()) if committed => {
                applied += 1;
                AckKind::Ack
            }
            Err(ServiceError::Invalid { field, reason }) => {
                poison += 1;
                let info = message.info().ok();
                tracing::warn!(
                    subject = %message.subject,
                    stream_sequence = info.as_ref().map(|i| i.stream_sequence),
                    field = %field,
                    reason = %reason,
                    "nats ingest: poison event terminated"
                );
                AckKind::Term
            }
            Ok(()) | Err(_) => {
                retried += 1;
                AckKind::Nak(Some(RETRY_DELAY))
            }
        };
        settle(message, kind).await;
    }
    crate::metrics::nats_events("applied", applied);
    crate::metrics::nats_events("poison", poison);
    crate::metrics::nats_events("retried", retried);
}

async fn settle(message: &jetstream::Message, kind: AckKind) {
    if let Err(e) = message.ack_with(kind).await {
        // The server redelivers after ack_wait; applying again is harmless.
        tracing::debug!(error = %e, "nats ingest: acknowledgement failed");
    }
}

/// Reads the consumer's backlog every second into the lag gauges.
async fn report_lag(mut consumer: PullConsumer, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(LAG_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = cancel.cancelled() => return,
        }
        match consumer.info().await {
            Ok(info) => crate::metrics::nats_lag(info.num_pending, info.num_ack_pending),
            Err(e) => tracing::debug!(error = %e, "nats consumer info failed"),
        }
    }
}

/// Publishes every per-user change to `<prefix>.<user_id>` as JSON:
/// `{"type", "user_id", "channel_id", "read_state"}` (`read_state` null once gone), and
/// `{"type": "resync"}` to `<prefix>.all` when changes were dropped (NATS slower than
/// the writes).
async fn publish_changes(
    client: async_nats::Client,
    prefix: String,
    service: Arc<Service>,
    mut subscription: crate::live::Subscription,
    cancel: CancellationToken,
) {
    loop {
        let item = tokio::select! {
            item = subscription.next() => item,
            () = cancel.cancelled() => None,
        };
        let Some(item) = item else { break };
        let (subject, payload) = match item {
            Item::Ready { .. } => continue,
            Item::Resync { .. } => {
                crate::metrics::nats_published("dropped");
                (
                    format!("{prefix}.all"),
                    serde_json::to_vec(&crate::live::wire::ResyncBody::RESYNC),
                )
            }
            Item::Change(event) => {
                let body = match crate::live::wire::change(
                    &service,
                    event.user,
                    event.channel,
                    event.kind,
                )
                .await
                {
                    Ok(change) => crate::live::wire::ChangeBody::from(change),
                    Err(e) => {
                        tracing::debug!(error = %e, "change publisher: cannot read the state");
                        continue;
                    }
                };
                (
                    format!("{prefix}.{}", event.user),
                    serde_json::to_vec(&body),
                )
            }
        };
        // Serializing these plain structs of strings cannot fail.
        let bytes = payload.unwrap_or_default();
        match client.publish(subject, bytes.into()).await {
            Ok(()) => crate::metrics::nats_published("published"),
            Err(e) => {
                crate::metrics::nats_published("dropped");
                tracing::debug!(error = %e, "change publisher: publish failed");
            }
        }
    }
    let _ = client.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UserId;

    #[test]
    fn payloads_parse_as_events_and_anything_else_is_poison_naming_the_event() {
        assert_eq!(
            parse_payload(br#"{"type": "ack_all", "user_id": "7"}"#).ok(),
            Some(Op::AckAll {
                user: UserId::new(7).expect("a valid id")
            })
        );
        // Not the event inside the string of serde_json's raw-value member.
        let wrapped =
            br#"{"$serde_json::private::RawValue": "{\"type\": \"ack_all\", \"user_id\": 7}"}"#;
        match parse_payload(wrapped) {
            Err(ServiceError::Invalid { field, .. }) => {
                assert_eq!(field, "$serde_json::private::RawValue");
            }
            other => panic!("expected an unknown field, got {other:?}"),
        }
        for bad in [&b"{"[..], b"", b"\xff", b"[1]", b"null"] {
            match parse_payload(bad) {
                Err(ServiceError::Invalid { field, .. }) => assert_eq!(field, "event"),
                other => panic!("{bad:?}: expected invalid input, got {other:?}"),
            }
        }
    }
}
