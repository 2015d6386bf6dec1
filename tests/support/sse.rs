//! A small Server-Sent Events reader for the event-stream tests: frames are split on
//! blank lines, `: comment` lines (heartbeats) are counted and skipped.

use std::time::Duration;

use serde_json::Value;

/// One event.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub event: String,
    pub id: String,
    pub data: Value,
}

/// An open event stream.
pub struct SseStream {
    response: reqwest::Response,
    buffer: String,
    pub heartbeats: usize,
}

impl SseStream {
    /// `GET url` with `Accept: text/event-stream` (and `Last-Event-ID` when given);
    /// panics unless the answer is a 200 event stream.
    pub async fn open(client: &reqwest::Client, url: &str, last_event_id: Option<&str>) -> Self {
        let mut request = client.get(url).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("the server answers");
        assert_eq!(response.status(), 200, "subscribe to {url}");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Self {
            response,
            buffer: String::new(),
            heartbeats: 0,
        }
    }

    /// A complete event already buffered (heartbeats are counted and skipped).
    fn buffered(&mut self) -> Option<Frame> {
        while let Some(end) = self.buffer.find("\n\n") {
            let block: String = self.buffer.drain(..end + 2).collect();
            match parse(&block) {
                Some(frame) => return Some(frame),
                None => self.heartbeats += 1,
            }
        }
        None
    }

    /// The next event, or `None` when nothing more arrives within `idle` (the stream
    /// stays open). Panics when the stream ended.
    pub async fn next_unless_idle(&mut self, idle: Duration) -> Option<Frame> {
        loop {
            if let Some(frame) = self.buffered() {
                return Some(frame);
            }
            let Ok(chunk) = tokio::time::timeout(idle, self.response.chunk()).await else {
                return None;
            };
            match chunk.expect("the stream reads") {
                Some(bytes) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                None => panic!("the stream ended"),
            }
        }
    }

    /// The next event, or `None` when the stream ended. Panics after `wait` without one.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(frame) = self.buffered() {
                return Some(frame);
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .expect("an event arrives in time")
                .expect("the stream reads");
            match chunk {
                Some(bytes) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                None => return None,
            }
        }
    }

    /// The next event (within 10 s); panics when the stream ended.
    pub async fn next(&mut self) -> Frame {
        self.next_within(Duration::from_secs(10))
            .await
            .expect("the stream is still open")
    }
}

/// Parses one block; `None` for a comment-only block (a heartbeat).
fn parse(block: &str) -> Option<Frame> {
    let mut event = String::from("message");
    let mut id = String::new();
    let mut data = String::new();
    let mut any = false;
    for line in block.lines() {
        if line.starts_with(':') || line.is_empty() {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        any = true;
        match field {
            "event" => event = value.to_owned(),
            "id" => id = value.to_owned(),
            "data" => {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value);
            }
            _ => {}
        }
    }
    any.then(|| Frame {
        event,
        id,
        data: serde_json::from_str(&data).unwrap_or(Value::String(data)),
    })
}
