//! Connections that never speak, and more connections than allowed, against the
//! real binary: silent sockets are closed within `http.header_read_timeout_ms`
//! while other clients are served, and beyond `limits.max_connections` new
//! connections are closed at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use support::TestStorage;
use support::binary::start;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A bound on hangs only, never a timing assertion.
const PATIENCE: Duration = Duration::from_secs(60);

/// `GET path` on a fresh connection: the status code and the answer, or `None`
/// when the connection was closed or reset instead.
async fn try_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: readstate\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("answered within the patience bound")
        .ok()?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok())?;
    Some((status, text))
}

/// `GET path` on a fresh connection, which must be answered.
async fn get(addr: &str, path: &str) -> (u16, String) {
    try_get(addr, path).await.expect("an answer")
}

/// Waits until the server closes `stream` (end of stream or reset).
async fn closed_by_server(mut stream: TcpStream) {
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await {
            Err(_) => panic!("the server kept a silent connection open"),
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(_)) => {}
        }
    }
}

/// The value of the series `line_start` (`name{labels}`) in a Prometheus text.
fn sample(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_silent_connections_are_closed_and_other_clients_are_served() {
    const SILENT: usize = 10_000;
    // Ours and the server's descriptors: 10,000 each.
    readstate::limits::raise_open_files();
    let storage = TestStorage::sqlite();
    let server = start(
        storage.url(),
        &[
            ("READSTATE_HTTP__HEADER_READ_TIMEOUT_MS", "3000"),
            ("READSTATE_LIMITS__MAX_CONNECTIONS", "12000"),
        ],
    );
    let addr = server.addr.clone();

    let silent: Vec<TcpStream> = futures_util::stream::iter(0..SILENT)
        .map(|_| {
            let addr = addr.clone();
            async move { TcpStream::connect(addr).await.expect("connected") }
        })
        // Paced, so that the kernel's accept queue never overflows (a connect whose
        // handshake the kernel dropped would look open to us and never reach the
        // server).
        .buffer_unordered(32)
        .collect()
        .await;
    let (health, _) = get(&addr, "/healthz").await;
    futures_util::stream::iter(silent)
        .for_each_concurrent(None, closed_by_server)
        .await;
    let (_, metrics) = get(&addr, "/metrics").await;

    assert_eq!(
        health, 200,
        "/healthz while {SILENT} silent connections are open"
    );
    assert!(
        sample(
            &metrics,
            "readstate_http_connections_closed_total{reason=\"silent\"}"
        ) >= SILENT as f64,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_connections_new_connections_are_closed_at_once_and_counted() {
    let storage = TestStorage::sqlite();
    let server = start(
        storage.url(),
        &[
            ("READSTATE_HTTP__HEADER_READ_TIMEOUT_MS", "60000"),
            ("READSTATE_LIMITS__MAX_CONNECTIONS", "3"),
        ],
    );
    let addr = server.addr.clone();
    let mut holding = Vec::new();
    for _ in 0..3 {
        holding.push(TcpStream::connect(&addr).await.expect("connected"));
    }
    // The server may not have accepted all three yet: a fourth is closed once it has.
    let mut refused = false;
    for _ in 0..10 {
        let extra = TcpStream::connect(&addr)
            .await
            .expect("accepted by the kernel");
        let mut buf = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_secs(2), {
            let mut extra = extra;
            async move { extra.read(&mut buf).await }
        })
        .await
        {
            refused = true;
            break;
        }
    }
    drop(holding);
    // Served again once the server has seen the three close (until then a new
    // connection is still beyond the limit and closed).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let health = loop {
        match try_get(&addr, "/healthz").await {
            Some((200, _)) => break 200,
            other if tokio::time::Instant::now() >= deadline => {
                panic!("/healthz not served again: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let (_, metrics) = get(&addr, "/metrics").await;

    assert!(refused, "a connection beyond the limit was kept open");
    assert_eq!(health, 200, "served again once the places are free");
    assert!(
        sample(
            &metrics,
            "readstate_http_connections_closed_total{reason=\"limit\"}"
        ) >= 1.0,
        "{metrics}"
    );
}
