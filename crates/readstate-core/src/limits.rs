//! In-flight request limits (the soft/hard scheme of the spec), for every transport:
//! above the soft limit a metric and a rate-limited warning; at the hard limit an
//! immediate refusal instead of queueing (HTTP 503 with `Retry-After`, gRPC
//! `RESOURCE_EXHAUSTED`: each transport says how through [`Shed`]). One
//! [`InFlightLayer`] wraps both the HTTP API and the gRPC service, so the limits hold
//! for the process whatever way requests come in. It counts only what it wraps, so
//! health checks and scrapes keep working under overload.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use metrics::{counter, gauge};
use tower::{Layer, Service};

use crate::metrics::{HTTP_IN_FLIGHT, HTTP_SHED, HTTP_SOFT_LIMIT};

/// Lets an event through at most once per interval (one second by default), for
/// log lines that would otherwise repeat on every request. Lock-free; usable in a
/// `static`.
#[derive(Debug)]
pub struct RateLimit {
    /// Milliseconds since [`clock_base`] (plus one, so 0 means "never") of the last
    /// event let through.
    last_ms: AtomicU64,
    interval_ms: u64,
}

fn clock_base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

impl RateLimit {
    /// A limiter letting one event through per second.
    pub const fn new() -> Self {
        Self::every(Duration::from_secs(1))
    }

    /// A limiter letting one event through per `interval`.
    pub const fn every(interval: Duration) -> Self {
        // A u128 of milliseconds that does not fit a u64 is half a billion years.
        let ms = interval.as_millis();
        let interval_ms = if ms > u64::MAX as u128 {
            u64::MAX
        } else {
            ms as u64
        };
        Self {
            last_ms: AtomicU64::new(0),
            interval_ms,
        }
    }

    /// Whether this event may be logged (true at most once per interval).
    pub fn allow(&self) -> bool {
        let now = u64::try_from(clock_base().elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < self.interval_ms {
            return false;
        }
        self.last_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::new()
    }
}

/// The shared counter and thresholds of one [`InFlightLayer`].
#[derive(Debug)]
struct InFlight {
    /// Requests admitted and not yet answered: incremented on admission, decremented
    /// when the response future completes or is dropped (a [`Slot`] guard).
    count: AtomicUsize,
    soft: usize,
    hard: usize,
    soft_warning: RateLimit,
    shed_warning: RateLimit,
}

impl InFlight {
    /// A request arrived while `in_flight` requests (itself included) are in flight,
    /// above the soft limit: counts it and warns (rate-limited).
    fn soft_limit_exceeded(&self, in_flight: usize) {
        counter!(HTTP_SOFT_LIMIT).increment(1);
        if self.soft_warning.allow() {
            tracing::warn!(
                in_flight,
                soft_limit = self.soft,
                "in-flight requests above the soft limit"
            );
        }
    }

    /// A request was refused at the hard limit: counts it and warns (rate-limited).
    fn shed(&self) {
        counter!(HTTP_SHED).increment(1);
        if self.shed_warning.allow() {
            tracing::warn!(
                hard_limit = self.hard,
                "in-flight requests at the hard limit; shedding with 503"
            );
        }
    }
}

/// A tower layer enforcing the soft and hard in-flight limits on the services it wraps.
/// Clones share one counter.
#[derive(Debug, Clone)]
pub struct InFlightLayer {
    state: Arc<InFlight>,
}

impl InFlightLayer {
    /// Warns above `soft` requests in flight and sheds at `hard` (at most `hard`
    /// requests are ever admitted at once; `hard` is raised to at least 1).
    pub fn new(soft: usize, hard: usize) -> Self {
        Self {
            state: Arc::new(InFlight {
                count: AtomicUsize::new(0),
                soft,
                hard: hard.max(1),
                soft_warning: RateLimit::new(),
                shed_warning: RateLimit::new(),
            }),
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.state.count.load(Ordering::Relaxed)
    }
}

impl<S> Layer<S> for InFlightLayer {
    type Service = InFlightService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InFlightService {
            inner,
            state: Arc::clone(&self.state),
        }
    }
}

/// The service made by [`InFlightLayer`].
#[derive(Debug, Clone)]
pub struct InFlightService<S> {
    inner: S,
    state: Arc<InFlight>,
}

/// One admitted request; releases its place when dropped.
#[derive(Debug)]
struct Slot {
    state: Arc<InFlight>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.state.count.fetch_sub(1, Ordering::Relaxed);
        gauge!(HTTP_IN_FLIGHT).decrement(1.0);
    }
}

/// The answer to a request refused at the hard limit.
/// The answer a transport gives a request refused at the hard limit.
pub trait Shed {
    /// "Too many requests in flight; retry shortly", in the transport's words.
    fn shed() -> Self;
}

impl<S, B, R> Service<http::Request<B>> for InFlightService<S>
where
    S: Service<http::Request<B>, Response = R>,
    R: Shed,
{
    type Response = R;
    type Error = S::Error;
    type Future = InFlightFuture<S::Future, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let before = self.state.count.fetch_add(1, Ordering::Relaxed);
        if before >= self.state.hard {
            self.state.count.fetch_sub(1, Ordering::Relaxed);
            self.state.shed();
            return InFlightFuture::Shed {
                response: Some(R::shed()),
            };
        }
        gauge!(HTTP_IN_FLIGHT).increment(1.0);
        let slot = Slot {
            state: Arc::clone(&self.state),
        };
        let in_flight = before + 1;
        if in_flight > self.state.soft {
            self.state.soft_limit_exceeded(in_flight);
        }
        InFlightFuture::Admitted {
            future: self.inner.call(request),
            slot: Some(slot),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`InFlightService`].
    #[project = InFlightFutureProj]
    pub enum InFlightFuture<F, R> {
        /// Admitted: the inner future, holding a place until it completes or is dropped.
        Admitted { #[pin] future: F, slot: Option<Slot> },
        /// Refused at the hard limit.
        Shed { response: Option<R> },
    }
}

impl<F, R, E> Future for InFlightFuture<F, R>
where
    F: Future<Output = Result<R, E>>,
    R: Shed,
{
    type Output = Result<R, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            InFlightFutureProj::Admitted { future, slot } => {
                let output = std::task::ready!(future.poll(cx));
                // Release as soon as the handler is done, not when the body is sent.
                slot.take();
                Poll::Ready(output)
            }
            InFlightFutureProj::Shed { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                // Polled again after completion: a contract violation by the caller;
                // answer something well-formed rather than panic.
                None => Poll::Ready(Ok(R::shed())),
            },
        }
    }
}

/// Raises this process's soft limit on open files to its hard limit (Linux), so
/// that `limits.max_connections` connections fit; returns the limit now in force
/// (`None` where it cannot be read). A server holds a descriptor per connection,
/// and many systems start processes with a soft limit of 1024.
pub fn raise_open_files() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        if limit.current != limit.maximum {
            let raised = Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            };
            if setrlimit(Resource::Nofile, raised).is_ok() {
                return limit.maximum.or(Some(u64::MAX));
            }
        }
        limit.current.or(Some(u64::MAX))
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::extract::Request;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use tokio::sync::oneshot;
    use tower::ServiceExt;

    #[test]
    fn rate_limit_lets_one_event_through_per_interval() {
        let limit = RateLimit::every(Duration::from_secs(3600));

        let first = limit.allow();
        let second = limit.allow();

        assert!(first);
        assert!(!second);
    }

    #[tokio::test]
    async fn requests_at_the_hard_limit_are_shed_at_once_with_retry_after() {
        let layer = InFlightLayer::new(0, 1);
        let (release, wait) = oneshot::channel::<()>();
        let wait = Arc::new(tokio::sync::Mutex::new(Some(wait)));
        let service = layer.layer(tower::service_fn(move |_req: Request| {
            let wait = Arc::clone(&wait);
            async move {
                let rx = wait.lock().await.take();
                if let Some(rx) = rx {
                    let _ = rx.await;
                }
                Ok::<_, std::convert::Infallible>(StatusCode::NO_CONTENT.into_response())
            }
        }));
        let first = tokio::spawn(service.clone().oneshot(Request::new(Body::empty())));
        while layer.in_flight() == 0 {
            tokio::task::yield_now().await;
        }

        let shed = service
            .clone()
            .oneshot(Request::new(Body::empty()))
            .await
            .expect("infallible");
        release.send(()).expect("the first request is waiting");
        let admitted = first.await.expect("task ran").expect("infallible");

        assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            shed.headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
        assert_eq!(admitted.status(), StatusCode::NO_CONTENT);
        assert_eq!(layer.in_flight(), 0);
    }
}
