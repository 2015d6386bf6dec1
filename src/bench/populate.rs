//! Bulk population of a readstate server over its own API: `POST /v1/batch` with
//! `message_created` ops (each channel's first messages) and then `join` ops (every
//! read state at its starting position), several batches in flight at once. Also
//! the read-through that loads every user into a restarted server's cache.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use futures_util::future::try_join_all;
use hyper::{Method, StatusCode};
use indicatif::{ProgressBar, ProgressStyle};

use super::client::{HttpClient, check_status};
use super::dataset::Dataset;

/// Ops per batch request (readstate's default `limits.max_batch_ops`).
pub const BATCH_OPS: u64 = 1_000;
/// Retries of a batch answered 503 (back pressure) before giving up.
const RETRIES: u32 = 20;

/// A progress bar on stderr (drawn only on a terminal).
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(
        "{prefix:<40} [{bar:30}] {human_pos}/{human_len} ({per_sec}, {eta} left)",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(what.to_owned());
    bar
}

/// Which ops a batch job writes.
#[derive(Clone, Copy)]
enum Stage {
    /// Op `i`: message `i % m + 1` of channel `i / m`.
    Messages,
    /// Op `i`: the `i % k`-th read state of user `i / k`.
    Joins,
}

fn batch_body(data: &Dataset, stage: Stage, from: u64, to: u64, body: &mut String) {
    body.clear();
    body.push_str("{\"ops\":[");
    for i in from..to {
        if i > from {
            body.push(',');
        }
        match stage {
            Stage::Messages => {
                let m = u64::from(data.shape.messages_per_channel);
                let channel = Dataset::channel_id((i / m) as usize);
                let _ = write!(
                    body,
                    r#"{{"op":"message_created","channel_id":{channel},"message_id":{}}}"#,
                    i % m + 1
                );
            }
            Stage::Joins => {
                let k = data.per_user() as u64;
                let user = (i / k) as usize;
                let j = (i % k) as usize;
                let channel = Dataset::channel_id(data.channels_of(user)[j] as usize);
                let position = data.read_positions_of(user)[j];
                let _ = write!(
                    body,
                    r#"{{"op":"join","user_id":{},"channel_id":{channel},"last_read_message_id":{position}}}"#,
                    Dataset::user_id(user)
                );
            }
        }
    }
    body.push_str("]}");
}

async fn send_batch(client: &mut HttpClient, body: Bytes) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        let (status, answer) = client
            .send(Method::POST, "/v1/batch", Some(body.clone()))
            .await?;
        if status == StatusCode::SERVICE_UNAVAILABLE && attempt < RETRIES {
            // Back pressure: the commit queue is full; every op is idempotent.
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            continue;
        }
        check_status(status, &answer)?;
        let text = String::from_utf8_lossy(&answer);
        if text.contains("\"ok\":false") {
            let at = text.find("\"ok\":false").unwrap_or(0);
            bail!("a batch op failed: {}", &text[at..text.len().min(at + 300)]);
        }
        return Ok(());
    }
}

async fn run_stage(
    addr: SocketAddr,
    data: &Arc<Dataset>,
    stage: Stage,
    total: u64,
    connections: usize,
    label: &str,
) -> anyhow::Result<()> {
    let progress = bar(total, label);
    let next = Arc::new(AtomicU64::new(0));
    let workers = (0..connections.max(1)).map(|_| {
        let data = Arc::clone(data);
        let next = Arc::clone(&next);
        let progress = progress.clone();
        async move {
            let mut client = HttpClient::connect(addr).await?;
            let mut body = String::with_capacity(BATCH_OPS as usize * 96);
            loop {
                let from = next.fetch_add(BATCH_OPS, Ordering::Relaxed);
                if from >= total {
                    return anyhow::Ok(());
                }
                let to = (from + BATCH_OPS).min(total);
                batch_body(&data, stage, from, to, &mut body);
                send_batch(&mut client, Bytes::from(body.clone()))
                    .await
                    .with_context(|| format!("while sending ops {from}..{to}"))?;
                progress.inc(to - from);
            }
        }
    });
    let result = try_join_all(workers).await.map(|_| ());
    progress.finish_and_clear();
    result
}

/// Loads the data set into the readstate server at `addr` over `connections`
/// concurrent batch requests.
///
/// # Errors
/// A failed request or op.
pub async fn populate_http(
    addr: SocketAddr,
    data: &Arc<Dataset>,
    connections: usize,
    target: &str,
) -> anyhow::Result<()> {
    let messages = u64::from(data.shape.channels) * u64::from(data.shape.messages_per_channel);
    run_stage(
        addr,
        data,
        Stage::Messages,
        messages,
        connections,
        &format!("{target}: populate messages"),
    )
    .await
    .context("while creating the channels' first messages")?;
    run_stage(
        addr,
        data,
        Stage::Joins,
        data.read_states(),
        connections,
        &format!("{target}: populate read states"),
    )
    .await
    .context("while joining users to their channels")
}

/// Reads every user's read states once (`GET /v1/users/{id}/read-states`), which
/// loads them all into a freshly started server's cache.
///
/// # Errors
/// A failed request.
pub async fn read_every_user(
    addr: SocketAddr,
    users: u32,
    connections: usize,
    target: &str,
) -> anyhow::Result<()> {
    let progress = bar(u64::from(users), &format!("{target}: load every user"));
    let next = Arc::new(AtomicU64::new(1));
    let workers = (0..connections.max(1)).map(|_| {
        let next = Arc::clone(&next);
        let progress = progress.clone();
        async move {
            let mut client = HttpClient::connect(addr).await?;
            loop {
                let user = next.fetch_add(1, Ordering::Relaxed);
                if user > u64::from(users) {
                    return anyhow::Ok(());
                }
                let (status, body) = client
                    .send(Method::GET, &format!("/v1/users/{user}/read-states"), None)
                    .await?;
                check_status(status, &body)?;
                progress.inc(1);
            }
        }
    });
    let result = try_join_all(workers).await.map(|_| ());
    progress.finish_and_clear();
    result
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::bench::dataset::Shape;

    #[test]
    fn batch_bodies_are_valid_batches_covering_the_data_set() {
        let shape = Shape {
            users: 50,
            channels: 10,
            read_states: 150,
            messages_per_channel: 4,
        };
        let data = Dataset::generate(shape, 2, &|_| {}).unwrap();
        let mut body = String::new();

        batch_body(&data, Stage::Messages, 0, 40, &mut body);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let ops = v["ops"].as_array().unwrap();
        assert_eq!(ops.len(), 40);
        assert_eq!(ops[5]["channel_id"], 2);
        assert_eq!(ops[5]["message_id"], 2);

        batch_body(&data, Stage::Joins, 3, 6, &mut body);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let ops = v["ops"].as_array().unwrap();
        assert_eq!(ops.len(), 3);
        let rows: Vec<(u64, u64, u64)> = data.read_state_rows().skip(3).take(3).collect();
        for (op, (user, channel, position)) in ops.iter().zip(rows) {
            assert_eq!(op["op"], "join");
            assert_eq!(op["user_id"], user);
            assert_eq!(op["channel_id"], channel);
            assert_eq!(op["last_read_message_id"], position);
        }
    }
}
