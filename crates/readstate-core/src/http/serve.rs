//! The accept loop every HTTP listener of the binary runs: hyper-util's auto
//! (HTTP/1.1 + h2c) connection builder with a header-read timeout, `TCP_NODELAY`,
//! upgrades (WebSocket) and graceful shutdown. `readstate serve` and the bench's
//! `floor` target both serve through it, so the floor measures the same stack.
//!
//! Hostile or broken clients cannot hold the server: a connection must send its
//! first byte within the header-read timeout of being accepted (hyper's own timeout
//! only starts at the first byte), at most `max_connections` are open at once (more
//! are accepted and closed at once, so they do not queue in the kernel either), and
//! accept errors (out of file descriptors) back off instead of spinning.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use metrics::{counter, gauge};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::limits::RateLimit;
use crate::metrics::{HTTP_CONNECTIONS, HTTP_CONNECTIONS_CLOSED};

/// How connections are admitted.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A connection that sends nothing for this long after being accepted (and a
    /// request head not complete within it) is closed.
    pub header_read_timeout: Duration,
    /// Most open connections (`limits.max_connections`).
    pub max_connections: usize,
}

/// Connections the kernel queues for `accept` (Linux caps it at
/// `net.core.somaxconn`): a burst of connects is queued, not dropped.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener on `addr` (port 0 picks a free port) with [`LISTEN_BACKLOG`].
///
/// # Errors
/// The address cannot be bound.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Whether the client sent a first byte (or closed) within `timeout`.
async fn speaks_within(stream: &TcpStream, timeout: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(timeout, stream.peek(&mut byte)).await,
        Ok(Ok(_))
    )
}

/// Accepts connections on `listener` and serves `router` on each until `shutdown` is
/// cancelled; then stops accepting and returns the handle that waits for the open
/// connections to finish (`GracefulShutdown::shutdown`).
pub async fn accept_until(
    listener: TcpListener,
    router: axum::Router,
    limits: ConnectionLimits,
    shutdown: &CancellationToken,
) -> GracefulShutdown {
    static ACCEPT_ERROR_LOG: RateLimit = RateLimit::new();
    static LIMIT_LOG: RateLimit = RateLimit::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // Without a timer hyper's header-read timeout is inert and a client that never
    // finishes its request head holds the connection forever (slowloris).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let places = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => {
                    backoff.reset();
                    conn
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off (doubling, up to
                    // a second), keep serving the open connections.
                    if ACCEPT_ERROR_LOG.allow() {
                        tracing::warn!(error = %e, retry_in_ms = backoff.delay().as_millis() as u64, "accept failed");
                    }
                    if !backoff.wait_or_cancel(shutdown).await {
                        break;
                    }
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let Ok(place) = Arc::clone(&places).try_acquire_owned() else {
            // Closed at once: the client sees the connection end instead of waiting
            // in the kernel's backlog.
            counter!(HTTP_CONNECTIONS_CLOSED, "reason" => "limit").increment(1);
            if LIMIT_LOG.allow() {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "too many open connections; closing new ones"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let timeout = limits.header_read_timeout;
        let builder = builder.clone();
        let watcher = graceful.watcher();
        gauge!(HTTP_CONNECTIONS).increment(1.0);
        tokio::spawn(async move {
            if speaks_within(&stream, timeout).await {
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            } else {
                counter!(HTTP_CONNECTIONS_CLOSED, "reason" => "silent").increment(1);
            }
            gauge!(HTTP_CONNECTIONS).decrement(1.0);
            drop(place);
        });
    }
    drop(listener);
    graceful
}
