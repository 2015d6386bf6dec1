//! The load generator's HTTP/1.1 client: one keep-alive connection per worker over
//! hyper's low-level `client::conn::http1` (no pool, no extra tasks per request), so
//! the generator costs little of the CPU it shares with the server. Used for the
//! `readstate` and `floor` targets alike.

use std::fmt::Write as _;
use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::workload::Op;

/// A whole response.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    /// The `Retry-After` header, as sent.
    pub retry_after: Option<String>,
    pub body: Bytes,
}

/// One keep-alive HTTP/1.1 connection to `addr`; reconnects after an error.
#[derive(Debug)]
pub struct HttpClient {
    addr: SocketAddr,
    host: HeaderValue,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// Reused to build request paths and bodies.
    buf: String,
}

impl HttpClient {
    /// Connects to `addr`.
    ///
    /// # Errors
    /// When the connection cannot be made.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let host =
            HeaderValue::from_str(&addr.to_string()).context("while building the Host header")?;
        let mut client = Self {
            addr,
            host,
            sender: None,
            buf: String::with_capacity(256),
        };
        client.ensure_connected().await?;
        Ok(client)
    }

    async fn ensure_connected(&mut self) -> anyhow::Result<&mut SendRequest<Full<Bytes>>> {
        if self.sender.as_ref().is_some_and(SendRequest::is_closed) {
            self.sender = None;
        }
        if self.sender.is_none() {
            let stream = TcpStream::connect(self.addr)
                .await
                .with_context(|| format!("while connecting to {}", self.addr))?;
            stream
                .set_nodelay(true)
                .context("while setting TCP_NODELAY")?;
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .context("while starting HTTP/1.1")?;
            tokio::spawn(async move {
                // Ends when the sender is dropped or the server closes; errors show
                // up on the next request.
                let _ = connection.await;
            });
            self.sender = Some(sender);
        }
        self.sender.as_mut().context("the connection was just made")
    }

    /// Sends one request and reads the whole response.
    ///
    /// # Errors
    /// Connection or protocol errors (the connection is dropped and remade on the
    /// next call).
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        self.send_full(method, path, body)
            .await
            .map(|answer| (answer.status, answer.body))
    }

    /// Sends one request and reads the whole response, keeping the `Retry-After`
    /// header (what a bulk loader needs to back off as the server asks).
    ///
    /// # Errors
    /// Connection or protocol errors (the connection is dropped and remade on the
    /// next call).
    pub async fn send_full(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<Answer> {
        let host = self.host.clone();
        let result = async {
            let sender = self.ensure_connected().await?;
            sender
                .ready()
                .await
                .context("while waiting for the connection")?;
            let mut request = Request::builder()
                .method(method)
                .uri(path)
                .header(HOST, host);
            if body.is_some() {
                request =
                    request.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            let request = request
                .body(Full::new(body.unwrap_or_default()))
                .context("while building the request")?;
            let response = sender
                .send_request(request)
                .await
                .context("while sending the request")?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let bytes = response
                .into_body()
                .collect()
                .await
                .context("while reading the response body")?
                .to_bytes();
            anyhow::Ok(Answer {
                status,
                retry_after,
                body: bytes,
            })
        }
        .await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    /// Sends `op` as the HTTP API defines it and checks for a 2xx answer.
    ///
    /// # Errors
    /// A transport error, or a non-2xx status (with the start of the body).
    pub async fn execute(&mut self, op: &Op) -> anyhow::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let (method, body) = match *op {
            Op::Ack {
                user,
                channel,
                message,
            } => {
                let _ = write!(buf, "/v1/users/{user}/channels/{channel}/ack");
                (Method::POST, Some(format!("{{\"message_id\":{message}}}")))
            }
            Op::Unread {
                user,
                channel,
                message,
            } => {
                let _ = write!(buf, "/v1/users/{user}/channels/{channel}/unread");
                (Method::POST, Some(format!("{{\"message_id\":{message}}}")))
            }
            Op::Message {
                channel,
                message,
                author,
                ..
            } => {
                let _ = write!(buf, "/v1/channels/{channel}/messages");
                let mut body = format!("{{\"message_id\":{message},\"author_id\":{author}");
                let mentions = op.mentions();
                if !mentions.is_empty() {
                    body.push_str(",\"mentions\":[");
                    for (i, m) in mentions.iter().enumerate() {
                        if i > 0 {
                            body.push(',');
                        }
                        let _ = write!(body, "{m}");
                    }
                    body.push(']');
                }
                body.push('}');
                (Method::POST, Some(body))
            }
            Op::ReadStates { user } => {
                let _ = write!(buf, "/v1/users/{user}/read-states");
                (Method::GET, None)
            }
            Op::Summary { user } => {
                let _ = write!(buf, "/v1/users/{user}/summary");
                (Method::GET, None)
            }
        };
        let result = self.send(method, &buf, body.map(Bytes::from)).await;
        self.buf = buf;
        let (status, bytes) = result?;
        check_status(status, &bytes)
    }
}

/// Ok for 2xx; otherwise an error naming the status and the start of the body.
///
/// # Errors
/// A status outside 200..=299.
pub fn check_status(status: StatusCode, body: &[u8]) -> anyhow::Result<()> {
    if status.is_success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    bail!("HTTP {status}: {text}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_status_names_the_status_and_body() {
        assert!(check_status(StatusCode::NO_CONTENT, b"").is_ok());

        let err = check_status(
            StatusCode::SERVICE_UNAVAILABLE,
            b"{\"type\":\"overloaded\"}",
        )
        .unwrap_err()
        .to_string();

        assert!(err.contains("503") && err.contains("overloaded"), "{err}");
    }
}
