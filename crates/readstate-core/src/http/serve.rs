//! The accept loop every HTTP listener of the binary runs: hyper-util's auto
//! (HTTP/1.1 + h2c) connection builder with a header-read timeout, `TCP_NODELAY`,
//! upgrades (WebSocket) and graceful shutdown. `readstate serve` and the bench's
//! `floor` target both serve through it, so the floor measures the same stack.

use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Accepts connections on `listener` and serves `router` on each until `shutdown` is
/// cancelled; then stops accepting and returns the handle that waits for the open
/// connections to finish (`GracefulShutdown::shutdown`).
pub async fn accept_until(
    listener: TcpListener,
    router: axum::Router,
    header_read_timeout: Duration,
    shutdown: &CancellationToken,
) -> GracefulShutdown {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // Without a timer hyper's header-read timeout is inert and a client that never
    // finishes its request head holds the connection forever (slowloris).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful
}
