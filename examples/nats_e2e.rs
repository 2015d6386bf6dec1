//! Measures the NATS side of a running readstate: ingest throughput (events applied
//! durably per second) and end-to-end latency from a JetStream publish to the SSE
//! event a subscribed device receives.
//!
//! Start readstate with the ingest on, then run this:
//!
//! ```text
//! READSTATE_NATS__URL=nats://127.0.0.1:4222 target/release/readstate serve &
//! cargo run --release --example nats_e2e -- http://127.0.0.1:8080 nats://127.0.0.1:4222 20000 1000
//! ```
//!
//! Arguments: readstate URL, NATS URL, events for the throughput run, samples for the
//! latency run. The stream and consumer are readstate's defaults (`READSTATE`,
//! `readstate`) and events go to `readstate.events.e2e`. Users 9e15+ are used so the
//! run does not touch real data.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde_json::json;

const BASE_USER: u64 = 9_000_000_000_000_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let http = args
        .first()
        .map_or("http://127.0.0.1:8080", String::as_str)
        .to_owned();
    let nats = args
        .get(1)
        .map_or("nats://127.0.0.1:4222", String::as_str)
        .to_owned();
    let events: u64 = args.get(2).map_or(Ok(20_000), |s| s.parse())?;
    let samples: usize = args.get(3).map_or(Ok(1000), |s| s.parse())?;

    let client = async_nats::connect(&nats).await?;
    let js = jetstream::new(client);
    let mut consumer: jetstream::consumer::PullConsumer = js
        .get_stream("READSTATE")
        .await?
        .get_consumer("readstate")
        .await
        .map_err(|e| anyhow::anyhow!("consumer readstate: {e}"))?;
    let subject = "readstate.events.e2e";
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64
        % 1_000_000;

    // Throughput: from the first publish until every event is applied, committed and
    // acknowledged (readstate consumes while the events are being published).
    println!("publishing {events} events ...");
    let started = Instant::now();
    let channel = BASE_USER + run;
    for chunk in (0..events).collect::<Vec<_>>().chunks(512) {
        let mut acks = Vec::with_capacity(chunk.len());
        for i in chunk {
            let user = BASE_USER + run * 100_000 + i % 50_000;
            let event = if i % 3 == 0 {
                json!({"type": "message_created", "channel_id": channel.to_string(),
                       "message_id": (i + 1).to_string(), "author_id": user.to_string()})
            } else {
                json!({"type": "ack", "user_id": user.to_string(), "channel_id": channel.to_string(),
                       "message_id": (i + 1).to_string()})
            };
            acks.push(
                js.publish(subject, serde_json::to_vec(&event)?.into())
                    .await?,
            );
        }
        for ack in acks {
            ack.await?;
        }
    }
    let published = started.elapsed();
    loop {
        let info = consumer.info().await?;
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    println!(
        "ingest: {events} events published in {:.2} s, all applied durably {:.2} s after the first publish = {:.0} events/s",
        published.as_secs_f64(),
        took.as_secs_f64(),
        events as f64 / took.as_secs_f64()
    );

    // Latency: one subscribed device; each sample publishes an ack and waits for the
    // SSE event it causes.
    let user = BASE_USER + run * 100_000 + 99_999;
    let http_client = reqwest::Client::builder().no_proxy().build()?;
    let mut stream = http_client
        .get(format!("{http}/v1/users/{user}/events"))
        .send()
        .await?;
    anyhow::ensure!(stream.status() == 200, "subscribe: {}", stream.status());
    let mut buffer = String::new();
    next_event(&mut stream, &mut buffer).await?; // ready
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples as u64 {
        let event = json!({"type": "ack", "user_id": user.to_string(),
                           "channel_id": channel.to_string(), "message_id": (i + 1).to_string()});
        let sent = Instant::now();
        js.publish(subject, serde_json::to_vec(&event)?.into())
            .await?;
        let frame = next_event(&mut stream, &mut buffer).await?;
        latencies.push(sent.elapsed());
        anyhow::ensure!(frame.contains("\"ack\""), "unexpected event {frame}");
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "NATS publish -> SSE event, {samples} samples: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies[latencies.len() - 1].as_secs_f64() * 1e3,
    );
    Ok(())
}

/// The next non-heartbeat SSE block.
async fn next_event(
    response: &mut reqwest::Response,
    buffer: &mut String,
) -> anyhow::Result<String> {
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if block.lines().any(|l| l.starts_with("event:")) {
                return Ok(block);
            }
            continue;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await??
            .ok_or_else(|| anyhow::anyhow!("the stream ended"))?;
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}
