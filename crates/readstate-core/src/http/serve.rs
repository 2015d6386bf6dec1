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
//!
//! Every answer from 400 up is `application/problem+json`, including the ones hyper
//! writes on its own for a request it cannot parse: see [`ProblemIo`].

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use metrics::{counter, gauge};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::api::problem::{PROBLEM_CONTENT_TYPE, Problem, ProblemKind};
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

/// The most of an HTTP/1 request head hyper buffers (its read buffer, hyper's
/// default): a head still incomplete once this much is read gets 431
/// `headers-too-large` (one that the read crossing the limit completes is served).
pub const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;

/// The most header fields an HTTP/1 request may have (hyper's default): more get 431
/// `headers-too-large`.
pub const MAX_HEADER_FIELDS: usize = 100;

/// The longest HTTP/1 request target hyper reads (fixed in hyper): a longer one gets
/// 414 `uri-too-long`.
pub const MAX_URI_BYTES: usize = u16::MAX as usize - 1;

/// The 400 of a request hyper cannot parse as HTTP/1.1 (a malformed request line or
/// header field), as [`ProblemIo`] writes it.
pub fn unparsable_request() -> Problem {
    Problem::invalid(
        "request",
        "not valid HTTP/1.1 (a malformed request line or header field, e.g. a byte that \
         is not ASCII in the path, or an invalid Content-Length)",
    )
}

/// The 414 of a request target longer than [`MAX_URI_BYTES`], as [`ProblemIo`] writes it.
pub fn uri_too_long() -> Problem {
    Problem::new(
        ProblemKind::UriTooLong,
        format!("the request target (path and query) is longer than {MAX_URI_BYTES} bytes"),
    )
}

/// The 431 of a request head over [`MAX_HEAD_BYTES`] or [`MAX_HEADER_FIELDS`], as
/// [`ProblemIo`] writes it.
pub fn headers_too_large() -> Problem {
    Problem::new(
        ProblemKind::HeadersTooLarge,
        format!(
            "the request head is larger than {MAX_HEAD_BYTES} bytes or has more than \
             {MAX_HEADER_FIELDS} header fields"
        ),
    )
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
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADER_FIELDS);
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
                    .serve_connection_with_upgrades(TokioIo::new(ProblemIo::new(stream)), service)
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

/// A connection's IO that turns the answers hyper writes on its own into problems.
///
/// hyper answers an HTTP/1 request it cannot parse before any service sees it, and
/// has no hook for that answer: a bad request line, method, version or header field
/// (a byte that is not ASCII in the path, an invalid `Content-Length`) gets `400`,
/// a request target over [`MAX_URI_BYTES`] gets `414`, a head over
/// [`MAX_HEAD_BYTES`] or with more than [`MAX_HEADER_FIELDS`] fields gets `431`,
/// each with an empty body, `connection: close` and `date`, and then the connection
/// closes. This wrapper recognises exactly that head in what hyper writes and writes
/// the same status with a problem body instead (`content-type:
/// application/problem+json`, the right `content-length`, `connection: close`,
/// hyper's `date`).
///
/// Why rewrite instead of raising hyper's limits and enforcing ours in a middleware:
/// limits only cover 414 and 431 (and hyper's URI limit cannot be raised at all),
/// while a request that does not parse never becomes a request a middleware could
/// see; rewriting covers every case hyper answers itself, at any size, and costs a
/// suffix comparison per write. The match is strict, so nothing else is touched:
/// the head must end what hyper writes (it is the last thing written before the
/// close), have status 400, 414 or 431, and carry only `connection: close`,
/// `content-length: 0` and `date`; every error this service answers itself has a
/// problem body and a `content-type`, and no body it writes contains a raw CRLF.
/// HTTP/2 connections (whose first write is not an HTTP/1 status line) and upgraded
/// ones (after a `101`) pass through untouched. HTTP/2's own refusal of a header
/// list over its limit (a bodiless `431` in an HPACK-coded frame, then a stream
/// reset) cannot be rewritten on the wire and stays as h2 sends it (raising that
/// limit instead would let a few bytes of HPACK references cost unbounded memory).
#[derive(Debug)]
pub struct ProblemIo<T> {
    inner: T,
    mode: Mode,
    /// Bytes hyper handed over that are still to be written to `inner` (a rewritten
    /// answer and whatever preceded it in the same write).
    pending: Vec<u8>,
    /// How much of `pending` is written.
    written: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Nothing written yet.
    Start,
    /// HTTP/1 answers: hyper's own error heads are rewritten.
    Http1,
    /// HTTP/2, or an upgraded connection: bytes pass through.
    Passthrough,
}

impl<T> ProblemIo<T> {
    /// Wraps a connection.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            mode: Mode::Start,
            pending: Vec::new(),
            written: 0,
        }
    }

    /// Follows the protocol from the first bytes of a write.
    fn observe(&mut self, first: &[u8]) {
        if first.is_empty() || self.mode == Mode::Passthrough {
            return;
        }
        if first.starts_with(b"HTTP/1.1 101 ") || first.starts_with(b"HTTP/1.0 101 ") {
            self.mode = Mode::Passthrough;
        } else if self.mode == Mode::Start {
            self.mode = if first.starts_with(b"HTTP/1.") {
                Mode::Http1
            } else {
                Mode::Passthrough
            };
        }
    }
}

impl<T: AsyncWrite + Unpin> ProblemIo<T> {
    /// Writes what is pending; ready once nothing is.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// When `bufs` end with one of hyper's own error heads, takes them all (with the
    /// head rewritten) into `pending` and answers how many bytes were taken.
    fn take_rewritten(&mut self, bufs: &[io::IoSlice<'_>]) -> Option<usize> {
        if self.mode != Mode::Http1 {
            return None;
        }
        let last = bufs.iter().rposition(|b| !b.is_empty())?;
        let (start, problem) = automatic_error_head(&bufs[last])?;
        let head = std::str::from_utf8(&bufs[last][start..]).ok()?;
        let mut out: Vec<u8> = bufs[..last]
            .iter()
            .flat_map(|b| b.iter().copied())
            .collect();
        out.extend_from_slice(&bufs[last][..start]);
        out.extend_from_slice(&problem_answer(head, &problem));
        tracing::debug!(
            status = problem.kind.status().as_u16(),
            "answered a request hyper could not parse with a problem"
        );
        self.pending = out;
        self.written = 0;
        Some(bufs.iter().map(|b| b.len()).sum())
    }
}

/// Where one of hyper's automatic error heads starts at the end of `bytes`, and the
/// problem it stands for: `HTTP/1.1 400|414|431 <reason>`, then only `connection:
/// close`, `content-length: 0` and `date` (hyper writes these, lower-case), then the
/// blank line that ends `bytes`.
fn automatic_error_head(bytes: &[u8]) -> Option<(usize, Problem)> {
    const LONGEST: usize = 192;
    if !bytes.ends_with(b"\r\n\r\n") {
        return None;
    }
    let window = bytes.len().saturating_sub(LONGEST);
    let start = window
        + bytes[window..]
            .windows(9)
            .rposition(|w| w == b"HTTP/1.1 ")?;
    let head = std::str::from_utf8(&bytes[start..]).ok()?;
    let mut lines = head.strip_suffix("\r\n\r\n")?.split("\r\n");
    let problem = match lines.next()? {
        "HTTP/1.1 400 Bad Request" => unparsable_request(),
        "HTTP/1.1 414 URI Too Long" => uri_too_long(),
        "HTTP/1.1 431 Request Header Fields Too Large" => headers_too_large(),
        _ => return None,
    };
    let mut empty = false;
    for line in lines {
        let (name, value) = line.split_once(": ")?;
        match name {
            "content-length" if value == "0" => empty = true,
            "connection" if value == "close" => {}
            "date" => {}
            _ => return None,
        }
    }
    empty.then_some((start, problem))
}

/// The answer replacing hyper's `head`: the same status line and `date`, the problem
/// as the body, `connection: close`.
fn problem_answer(head: &str, problem: &Problem) -> Vec<u8> {
    let body = crate::http::json::to_line(&problem.body()).unwrap_or_default();
    let mut lines = head.trim_end().split("\r\n");
    let status_line = lines.next().unwrap_or("HTTP/1.1 400 Bad Request");
    let mut out = format!(
        "{status_line}\r\ncontent-type: {PROBLEM_CONTENT_TYPE}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for line in lines.filter(|l| l.starts_with("date: ")) {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    out
}

impl<T: AsyncRead + Unpin> AsyncRead for ProblemIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ProblemIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        this.observe(buf);
        if let Some(taken) = this.take_rewritten(&[io::IoSlice::new(buf)]) {
            return Poll::Ready(Ok(taken));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            this.observe(first);
        }
        if let Some(taken) = this.take_rewritten(bufs) {
            return Poll::Ready(Ok(taken));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const DATE: &str = "date: Mon, 30 Nov 2026 01:34:27 GMT";

    async fn written(writes: &[&[u8]]) -> String {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let mut io = ProblemIo::new(client);
        for w in writes {
            io.write_all(w).await.unwrap();
        }
        io.shutdown().await.unwrap();
        drop(io);
        let mut out = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut server, &mut out)
            .await
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    fn automatic(status_line: &str) -> String {
        format!("{status_line}\r\nconnection: close\r\ncontent-length: 0\r\n{DATE}\r\n\r\n")
    }

    fn split(answer: &str) -> (&str, serde_json::Value) {
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        (head, serde_json::from_str(body).unwrap())
    }

    #[tokio::test]
    async fn hypers_own_400_414_and_431_become_problems() {
        for (line, problem) in [
            ("HTTP/1.1 400 Bad Request", unparsable_request()),
            ("HTTP/1.1 414 URI Too Long", uri_too_long()),
            (
                "HTTP/1.1 431 Request Header Fields Too Large",
                headers_too_large(),
            ),
        ] {
            let answer = written(&[automatic(line).as_bytes()]).await;

            let (head, body) = split(&answer);
            let body_len = answer.len() - head.len() - 4;
            assert_eq!(
                head,
                format!(
                    "{line}\r\ncontent-type: application/problem+json\r\ncontent-length: {body_len}\r\nconnection: close\r\n{DATE}"
                )
            );
            assert_eq!(body, problem.to_json());
        }
    }

    #[tokio::test]
    async fn the_answer_after_a_served_response_is_rewritten_too() {
        let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 16\r\n\r\n{\"status\":\"ok\"}\n";
        let answer =
            written(&[format!("{ok}{}", automatic("HTTP/1.1 400 Bad Request")).as_bytes()]).await;

        let rest = answer.strip_prefix(ok).unwrap();
        assert_eq!(split(rest).1, unparsable_request().to_json());
    }

    #[tokio::test]
    async fn everything_else_passes_through_untouched() {
        let cases: Vec<Vec<Vec<u8>>> = vec![
            // A problem the service wrote itself.
            vec![b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 2\r\n\r\n{}".to_vec()],
            // An empty answer that is not an error.
            vec![b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n".to_vec()],
            // An empty 400 with another header.
            vec![b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nx-other: 1\r\n\r\n".to_vec()],
            // HTTP/2 (the first write is not an HTTP/1 status line).
            vec![b"\x00\x00\x00\x04\x00\x00\x00\x00\x00".to_vec(), automatic("HTTP/1.1 400 Bad Request").into_bytes()],
            // After an upgrade.
            vec![b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n".to_vec(), automatic("HTTP/1.1 431 Request Header Fields Too Large").into_bytes()],
        ];
        for writes in cases {
            let slices: Vec<&[u8]> = writes.iter().map(Vec::as_slice).collect();
            let answer = written(&slices).await;
            assert_eq!(answer.as_bytes(), writes.concat(), "{answer}");
        }
    }
}
