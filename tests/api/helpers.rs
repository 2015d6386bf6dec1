//! `spawn_app()` and friends: the real `App`, built exactly as `readstate serve` builds
//! it, on port 0 with fresh storage of the backend `READSTATE_TEST_STORAGE` picks (a
//! SQLite file in its own temp dir by default, or a PostgreSQL database of its own),
//! plus a client with one method per endpoint and builders for the expected JSON.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Once;
use std::time::Duration;

use readstate::app::App;
use readstate::config::{LogFormat, Settings};
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::grpc_transport::{self, Grpc};
use crate::support::TestStorage;

/// Status, headers and body of one answer. The body is the parsed JSON, `Null` when
/// empty, or the text as a JSON string when it is not JSON.
pub type Reply = (StatusCode, HeaderMap, Value);

/// A running app and a client for it. Dropping it cancels the server.
pub struct TestApp {
    pub addr: SocketAddr,
    /// The gRPC server (every test app serves one, on a port of its own).
    pub grpc_addr: SocketAddr,
    /// Set when the suites run over gRPC (`READSTATE_TEST_TRANSPORT=grpc`): the typed
    /// methods then call it (see [`grpc_transport`]).
    pub grpc: Option<Grpc>,
    pub client: reqwest::Client,
    pub shutdown: CancellationToken,
    pub handle: Option<JoinHandle<anyhow::Result<()>>>,
    pub settings: Settings,
    /// The app's database for as long as the app lives (removed on drop, after the
    /// server was cancelled).
    #[allow(dead_code)]
    pub storage: TestStorage,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Logs are silent unless `TEST_LOG` is set.
fn init_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some_and(|v| !v.is_empty() && v != "0") {
            readstate::telemetry::init(LogFormat::Pretty, "info,readstate=debug");
        }
    });
}

/// The app with test settings: port 0 and fresh storage.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// The app with test settings changed by `configure` first.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    init_logs();
    let storage = TestStorage::from_env();
    let mut settings = Settings::default();
    settings.http.addr = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.grpc.addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    settings.storage.url = storage.url().into();
    configure(&mut settings);
    let (addr, grpc_addr, shutdown, handle) = start(&settings).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("a client");
    TestApp {
        addr,
        grpc_addr,
        grpc: grpc_transport::enabled().then(|| Grpc::new(grpc_addr)),
        client,
        shutdown,
        handle: Some(handle),
        settings,
        storage,
    }
}

async fn start(
    settings: &Settings,
) -> (
    SocketAddr,
    SocketAddr,
    CancellationToken,
    JoinHandle<anyhow::Result<()>>,
) {
    let app = App::build(settings.clone())
        .await
        .expect("the app builds with test settings");
    let addr = app.http_addr();
    let grpc_addr = app.grpc_addr().expect("test apps serve gRPC");
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(app.run(shutdown.clone()));
    (addr, grpc_addr, shutdown, handle)
}

/// Retries `check` until it returns `Ok`, for at most `deadline`; panics with the last
/// error otherwise. For asynchronous effects only: never a timing assertion.
pub async fn eventually<T, F, Fut>(deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if tokio::time::Instant::now() >= until => {
                panic!("not reached within {deadline:?}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

fn parse_body(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

impl TestApp {
    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the server gracefully (cancel, then wait for `run` to drain and return).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.handle.take() {
            Some(handle) => handle.await.expect("the server task does not panic"),
            None => Ok(()),
        }
    }

    /// Stops the server gracefully and starts a new one on the same data dir.
    pub async fn restart(&mut self) {
        self.stop().await.expect("a clean shutdown");
        let (addr, grpc_addr, shutdown, handle) = start(&self.settings).await;
        self.addr = addr;
        self.grpc_addr = grpc_addr;
        if self.grpc.is_some() {
            self.grpc = Some(Grpc::new(grpc_addr));
        }
        self.shutdown = shutdown;
        self.handle = Some(handle);
    }

    /// Sends a request with an optional JSON body.
    pub async fn request(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut request = self.client.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("the body is read");
        (status, headers, parse_body(&bytes))
    }

    /// Sends a request with a raw body and exactly the given headers.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        let mut request = self.client.request(method, self.url(path)).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("the body is read");
        (status, headers, parse_body(&bytes))
    }

    /// `GET path` with an optional JSON body.
    pub async fn get(&self, path: &str, body: Option<Value>) -> Reply {
        self.request(Method::GET, path, body).await
    }

    /// `POST path` with an optional JSON body.
    pub async fn post(&self, path: &str, body: Option<Value>) -> Reply {
        self.request(Method::POST, path, body).await
    }

    /// `PUT path` with an optional JSON body.
    pub async fn put(&self, path: &str, body: Option<Value>) -> Reply {
        self.request(Method::PUT, path, body).await
    }

    /// `DELETE path` with an optional JSON body.
    pub async fn delete(&self, path: &str, body: Option<Value>) -> Reply {
        self.request(Method::DELETE, path, body).await
    }

    // One method per endpoint.

    /// `POST /v1/channels/{c}/messages`.
    pub async fn message(
        &self,
        channel: u64,
        message: u64,
        author: Option<u64>,
        mentions: &[u64],
    ) -> Reply {
        if let Some(grpc) = &self.grpc {
            return grpc.message(channel, message, author, mentions).await;
        }
        let mut body = json!({ "message_id": message.to_string() });
        if let Some(author) = author {
            body["author_id"] = json!(author.to_string());
        }
        if !mentions.is_empty() {
            body["mentions"] = json!(mentions.iter().map(u64::to_string).collect::<Vec<_>>());
        }
        self.post(&format!("/v1/channels/{channel}/messages"), Some(body))
            .await
    }

    /// `POST /v1/channels/{c}/messages`, asserting success.
    pub async fn message_ok(
        &self,
        channel: u64,
        message: u64,
        author: Option<u64>,
        mentions: &[u64],
    ) {
        let (status, _, body) = self.message(channel, message, author, mentions).await;
        assert!(
            status.is_success(),
            "message {message} in channel {channel}: {status} {body}"
        );
    }

    /// `DELETE /v1/channels/{c}/messages/{m}`.
    pub async fn delete_message(&self, channel: u64, message: u64) -> Reply {
        if let Some(grpc) = &self.grpc {
            return grpc.delete_message(channel, message).await;
        }
        self.delete(&format!("/v1/channels/{channel}/messages/{message}"), None)
            .await
    }

    /// `DELETE /v1/channels/{c}`.
    pub async fn delete_channel(&self, channel: u64) -> Reply {
        if let Some(grpc) = &self.grpc {
            return grpc.delete_channel(channel).await;
        }
        self.delete(&format!("/v1/channels/{channel}"), None).await
    }

    /// `GET /v1/channels/{c}/messages/{m}/readers?{query}`.
    pub async fn readers(&self, channel: u64, message: u64, query: &str) -> Reply {
        if let Some(grpc) = &self.grpc
            && let Some(reply) = grpc.readers(channel, message, query).await
        {
            return reply;
        }
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        self.get(
            &format!("/v1/channels/{channel}/messages/{message}/readers{query}"),
            None,
        )
        .await
    }

    /// `PUT /v1/users/{u}/channels/{c}` (join).
    pub async fn join(&self, user: u64, channel: u64, body: Option<Value>) -> Reply {
        if let Some(grpc) = &self.grpc
            && let Some(reply) = grpc.join(user, channel, body.as_ref()).await
        {
            return reply;
        }
        self.put(&format!("/v1/users/{user}/channels/{channel}"), body)
            .await
    }

    /// `DELETE /v1/users/{u}/channels/{c}` (leave).
    pub async fn leave(&self, user: u64, channel: u64) -> Reply {
        if let Some(grpc) = &self.grpc {
            return grpc.leave(user, channel).await;
        }
        self.delete(&format!("/v1/users/{user}/channels/{channel}"), None)
            .await
    }

    /// `GET /v1/users/{u}/channels/{c}`.
    pub async fn read_state(&self, user: u64, channel: u64) -> Reply {
        if let Some(grpc) = &self.grpc {
            return grpc.read_state(user, channel).await;
        }
        self.get(&format!("/v1/users/{user}/channels/{channel}"), None)
            .await
    }

    /// `POST /v1/users/{u}/channels/{c}/ack`.
    pub async fn ack(&self, user: u64, channel: u64, message: u64) -> Reply {
        if let Some(grpc) = &self.grpc {
            return grpc.ack(user, channel, message).await;
        }
        self.post(
            &format!("/v1/users/{user}/channels/{channel}/ack"),
            Some(json!({ "message_id": message.to_string() })),
        )
        .await
    }

    /// `POST /v1/users/{u}/channels/{c}/unread`.
    pub async fn unread(&self, user: u64, channel: u64, message: u64) -> Reply {
        if let Some(grpc) = &self.grpc {
            return grpc.unread(user, channel, message).await;
        }
        self.post(
            &format!("/v1/users/{user}/channels/{channel}/unread"),
            Some(json!({ "message_id": message.to_string() })),
        )
        .await
    }

    /// `GET /v1/users/{u}/read-states` (with `?{query}` when not empty).
    pub async fn read_states(&self, user: u64, query: &str) -> Reply {
        if let Some(grpc) = &self.grpc
            && let Some(reply) = grpc.read_states(user, query).await
        {
            return reply;
        }
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        self.get(&format!("/v1/users/{user}/read-states{query}"), None)
            .await
    }

    /// `GET /v1/users/{u}/summary`.
    pub async fn summary(&self, user: u64) -> Reply {
        if let Some(grpc) = &self.grpc {
            return grpc.summary(user).await;
        }
        self.get(&format!("/v1/users/{user}/summary"), None).await
    }

    /// `POST /v1/users/{u}/ack-all`.
    pub async fn ack_all(&self, user: u64) -> Reply {
        if let Some(grpc) = &self.grpc {
            return grpc.ack_all(user).await;
        }
        self.post(&format!("/v1/users/{user}/ack-all"), None).await
    }

    /// `POST /v1/summaries`.
    pub async fn summaries(&self, body: Value) -> Reply {
        if let Some(grpc) = &self.grpc
            && let Some(reply) = grpc.summaries(&body).await
        {
            return reply;
        }
        self.post("/v1/summaries", Some(body)).await
    }

    /// `POST /v1/batch`.
    pub async fn batch(&self, body: Value) -> Reply {
        if let Some(grpc) = &self.grpc
            && let Some(reply) = grpc.batch(&body).await
        {
            return reply;
        }
        self.post("/v1/batch", Some(body)).await
    }

    /// The text of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        let response = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("the server answers");
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.expect("the body is read")
    }
}

// Expected bodies.

/// A read state as the API writes it, with `has_unread` derived, nothing capped, not
/// muted, level `all`, and `first_unread_message_id` = `last_message - unread + 1`
/// when something is unread (the unread messages numbered without gaps up to the
/// newest; see [`first_unread`] otherwise).
pub fn state(channel: u64, last_read: u64, last_message: u64, unread: u32, mentions: u32) -> Value {
    json!({
        "channel_id": channel.to_string(),
        "last_read_message_id": last_read.to_string(),
        "last_message_id": last_message.to_string(),
        "has_unread": last_message > last_read,
        "unread_count": unread,
        "unread_capped": false,
        "mention_count": mentions,
        "mention_capped": false,
        "first_unread_message_id": (unread > 0).then(|| (last_message + 1 - u64::from(unread)).to_string()),
        "muted": false,
        "level": "all",
    })
}

/// `state` with another `first_unread_message_id`.
pub fn first_unread(mut state: Value, message: Option<u64>) -> Value {
    state["first_unread_message_id"] = json!(message.map(|m| m.to_string()));
    state
}

/// `state` with its settings as the API shows them.
pub fn with_settings(mut state: Value, muted: bool, level: &str) -> Value {
    state["muted"] = json!(muted);
    state["level"] = json!(level);
    state
}

/// `{"read_states": [...]}`.
pub fn read_states(states: &[Value]) -> Value {
    json!({ "read_states": states })
}

/// `{"unread_channels": n, "unread_threads": 0, "mentions": n}`.
pub fn summary(unread_channels: u64, mentions: u64) -> Value {
    threads_summary(unread_channels, 0, mentions)
}

/// `{"unread_channels": n, "unread_threads": n, "mentions": n}`.
pub fn threads_summary(unread_channels: u64, unread_threads: u64, mentions: u64) -> Value {
    json!({
        "unread_channels": unread_channels,
        "unread_threads": unread_threads,
        "mentions": mentions,
    })
}

/// A problem body of the kind named by `slug`.
pub fn problem(slug: &str, detail: &str) -> Value {
    let (status, title) = match slug {
        "invalid-input" => (400, "Invalid input"),
        "unauthorized" => (401, "Unauthorized"),
        "forbidden" => (403, "Forbidden"),
        "not-found" => (404, "Not found"),
        "method-not-allowed" => (405, "Method not allowed"),
        "payload-too-large" => (413, "Payload too large"),
        "uri-too-long" => (414, "URI too long"),
        "headers-too-large" => (431, "Request header fields too large"),
        "unsupported-media-type" => (415, "Unsupported media type"),
        "too-many-requests" => (429, "Too many requests"),
        "overloaded" => (503, "Overloaded"),
        "unavailable" => (503, "Service unavailable"),
        "timeout" => (503, "Request timed out"),
        "internal" => (500, "Internal error"),
        other => panic!("unknown problem slug {other}"),
    };
    json!({
        "type": format!("https://readstate.dev/problems/{slug}"),
        "title": title,
        "status": status,
        "detail": detail,
    })
}

/// An invalid-input problem naming `field`.
pub fn invalid(field: &str, reason: &str) -> Value {
    let mut body = problem("invalid-input", &format!("{field}: {reason}"));
    body["field"] = json!(field);
    body
}

/// The reason every id error gives.
pub const ID_REASON: &str = "must be an integer between 1 and 9223372036854775807";

/// Asserts an error answer: the status, the problem content type, `Retry-After`
/// exactly on 503, and the whole body.
#[track_caller]
pub fn assert_problem(reply: &Reply, expected: &Value) {
    let (status, headers, body) = reply;
    let expected_status = expected["status"].as_u64().expect("a problem has a status");
    assert_eq!(
        u64::from(status.as_u16()),
        expected_status,
        "status; body: {body}"
    );
    assert_eq!(
        headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "content type; body: {body}"
    );
    assert_eq!(
        headers.contains_key("retry-after"),
        expected_status == 503,
        "Retry-After on 503 only"
    );
    assert_eq!(body, expected);
}

/// Asserts a successful JSON answer: status and the whole body.
#[track_caller]
pub fn assert_json(reply: &Reply, status: StatusCode, expected: &Value) {
    assert_eq!(reply.0, status, "status; body: {}", reply.2);
    assert_eq!(&reply.2, expected);
}

/// Asserts a write answered 200 or 204 (the spec allows either), ignoring its body.
#[track_caller]
pub fn assert_done(reply: &Reply) {
    assert!(
        reply.0 == StatusCode::OK || reply.0 == StatusCode::NO_CONTENT,
        "expected 200 or 204, got {} {}",
        reply.0,
        reply.2
    );
}

// Metrics.

/// The sum of the samples of `name` (any labels) in a Prometheus text exposition.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok())?;
        found = Some(found.unwrap_or(0.0) + value);
    }
    found
}

// Raw connections (for requests a normal client cannot send).

/// A raw TCP connection to the app.
pub async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.addr)
        .await
        .expect("the server accepts")
}

/// Writes `bytes` to `stream`.
pub async fn send(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).await.expect("the server reads");
    stream.flush().await.expect("flushed");
}

/// Reads until the peer closes or errors, for at most `deadline` (a generous bound:
/// exceeding it fails the test as a hang, it measures nothing).
pub async fn read_until_closed(stream: &mut TcpStream, deadline: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(deadline, read_all)
        .await
        .expect("the server closes the connection");
    out
}

/// Reads one HTTP/1.1 response (head and `Content-Length` body) from `stream`.
pub async fn read_response(
    stream: &mut TcpStream,
    deadline: Duration,
) -> (u16, Vec<(String, String)>, Value) {
    let read = async {
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).into_owned();
                let mut lines = head.split("\r\n");
                let status: u16 = lines
                    .next()
                    .and_then(|l| l.split(' ').nth(1))
                    .and_then(|s| s.parse().ok())
                    .expect("a status line");
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    .collect();
                let length: usize = headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                while data.len() < end + 4 + length {
                    let n = stream.read(&mut buf).await.expect("the body is read");
                    assert!(n > 0, "the connection closed mid-body");
                    data.extend_from_slice(&buf[..n]);
                }
                return (
                    status,
                    headers,
                    parse_body(&data[end + 4..end + 4 + length]),
                );
            }
            let n = stream.read(&mut buf).await.expect("the response is read");
            assert!(n > 0, "the connection closed before a response");
            data.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(deadline, read)
        .await
        .expect("the server answers")
}
