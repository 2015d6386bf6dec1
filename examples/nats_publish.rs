//! Publishes one event per line of stdin (JSON) to a JetStream subject and waits for
//! JetStream to store each: the smallest "chat backend" for readstate's NATS ingest.
//!
//! ```text
//! echo '{"type": "ack", "user_id": "2", "channel_id": "10", "message_id": "500"}' \
//!   | cargo run --example nats_publish -- readstate.events.chat [nats://127.0.0.1:4222]
//! ```

use std::io::BufRead;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let subject = args
        .next()
        .unwrap_or_else(|| "readstate.events.chat".to_owned());
    let url = args
        .next()
        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned());
    let js = async_nats::jetstream::new(async_nats::connect(&url).await?);
    let mut published = 0;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        // Checked here so that a typo is reported now, not terminated as poison later.
        serde_json::from_str::<serde_json::Value>(&line)?;
        js.publish(subject.clone(), line.into_bytes().into())
            .await?
            .await?;
        published += 1;
    }
    eprintln!("published {published} events to {subject}");
    Ok(())
}
