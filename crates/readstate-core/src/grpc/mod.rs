//! The gRPC transport (package `readstate.v1`, service `ReadStates`, see
//! `proto/readstate/v1/readstate.proto`): a thin adapter over [`crate::service`],
//! like HTTP and NATS. Requests become service calls through [`convert`]; errors
//! become statuses through the one problem table ([`crate::api::problem`]), with a
//! `google.rpc.BadRequest` detail naming the field and a `google.rpc.RetryInfo` on
//! what is worth retrying. The server shares the HTTP API's in-flight limits
//! (one counter for the process), serves `grpc.health.v1` and server reflection
//! next to `ReadStates`, and ends its streams on shutdown.

pub mod convert;
mod server;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::server::NamedService;
use tonic_types::{ErrorDetails, StatusExt};

use crate::api::problem::Problem;
use crate::limits::{InFlightLayer, InFlightService, Shed};
use crate::service::{Service, ServiceError};

pub use server::GrpcService;

/// The code generated from the proto, and its encoded descriptors (for reflection).
#[allow(
    clippy::doc_lazy_continuation,
    clippy::doc_markdown,
    clippy::too_long_first_doc_paragraph,
    missing_docs
)]
pub mod pb {
    tonic::include_proto!("readstate.v1");

    /// The encoded `FileDescriptorSet` of `readstate/v1/readstate.proto`.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/readstate_descriptor.bin"));
}

/// The fully qualified name of the service, as health checks and reflection know it.
pub const SERVICE_NAME: &str = "readstate.v1.ReadStates";

/// What a retryable status asks the client to wait (as HTTP's `Retry-After: 1`).
pub const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Limits of the gRPC server.
#[derive(Debug, Clone)]
pub struct GrpcLimits {
    /// Who may call what (the same rules as the HTTP API).
    pub access: std::sync::Arc<crate::auth::Access>,
    /// The in-flight limits, shared with the HTTP API.
    pub in_flight: InFlightLayer,
    /// A unary call not answered within this (or the client's deadline, when
    /// shorter) gets `DEADLINE_EXCEEDED`.
    pub request_timeout: Duration,
    /// Larger request messages are refused (`http.max_body_bytes`).
    pub max_message_bytes: usize,
    /// HTTP/2 keep-alive pings on idle connections (the live streams' heartbeat).
    pub keepalive: Duration,
}

/// The status of a problem: the code from the problem table, the detail as the
/// message, the field as a `BadRequest` violation and a `RetryInfo` when retrying
/// after [`RETRY_DELAY`] is what the client should do.
pub fn problem_status(problem: &Problem) -> Status {
    let mut details = ErrorDetails::new();
    if let Some(field) = &problem.field {
        details.add_bad_request_violation(field.clone(), problem.detail.clone());
    }
    if problem.kind.is_retryable() {
        details.set_retry_info(Some(RETRY_DELAY));
    }
    Status::with_error_details(problem.kind.grpc_code(), problem.detail.clone(), details)
}

/// The status of an access refusal: UNAUTHENTICATED, PERMISSION_DENIED, or
/// RESOURCE_EXHAUSTED with a `RetryInfo` of the caller's wait.
pub fn denied_status(problem: &Problem, denied: &crate::auth::Denied) -> Status {
    let mut details = ErrorDetails::new();
    if let Some(field) = &problem.field {
        details.add_bad_request_violation(field.clone(), problem.detail.clone());
    }
    if let Some(seconds) = denied.retry_after() {
        details.set_retry_info(Some(Duration::from_secs(seconds)));
    }
    Status::with_error_details(problem.kind.grpc_code(), problem.detail.clone(), details)
}

/// The status of a service error (logged once, here at the boundary).
pub fn status(e: &ServiceError) -> Status {
    crate::api::problem::log_service_error(e);
    problem_status(&Problem::from_service_error(e))
}

/// The gRPC answer at the hard in-flight limit: `RESOURCE_EXHAUSTED` at once, with
/// a `RetryInfo`.
impl Shed for http::Response<tonic::body::Body> {
    fn shed() -> Self {
        problem_status(&Problem::new(
            crate::api::problem::ProblemKind::Overloaded,
            "too many requests in flight; retry later",
        ))
        .into_http()
    }
}

impl<S: NamedService> NamedService for InFlightService<S> {
    const NAME: &'static str = S::NAME;
}

/// Parses a `grpc-timeout` header value (`<at most 8 digits><H|M|S|m|u|n>`).
pub fn parse_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A bound gRPC listener, served by [`GrpcServer::run`].
pub struct GrpcServer {
    listener: TcpListener,
    addr: SocketAddr,
}

impl GrpcServer {
    /// Binds `addr` (port 0 picks a free port).
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = crate::http::serve::bind(addr)
            .with_context(|| format!("while binding grpc.addr {addr}"))?;
        let addr = listener
            .local_addr()
            .context("while reading the bound gRPC address")?;
        Ok(Self { listener, addr })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `ReadStates`, health and reflection until `shutdown`, then reports
    /// not serving, stops accepting and waits for the calls in flight (the live
    /// streams end when the service closes them).
    ///
    /// # Errors
    /// The server failed (accepting connections).
    pub async fn run(
        self,
        service: std::sync::Arc<Service>,
        limits: GrpcLimits,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status(SERVICE_NAME, tonic_health::ServingStatus::Serving)
            .await;
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("while building gRPC reflection")?;
        let api = pb::read_states_server::ReadStatesServer::new(GrpcService::new(
            service,
            limits.access.clone(),
            limits.request_timeout,
        ))
        .max_decoding_message_size(limits.max_message_bytes);
        let incoming =
            tonic::transport::server::TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let signal = async move {
            shutdown.cancelled().await;
            health
                .set_service_status(SERVICE_NAME, tonic_health::ServingStatus::NotServing)
                .await;
            health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
        };
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(limits.keepalive))
            .add_service(tower::Layer::layer(&limits.in_flight, api))
            .add_service(health_service)
            .add_service(reflection)
            .serve_with_incoming_shutdown(incoming, signal)
            .await
            .context("gRPC server failed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit_and_nothing_else_does() {
        assert_eq!(parse_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(
            parse_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "S", "123456789S", "10x", "-1S", "1.5S"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn statuses_carry_the_field_and_the_retry_delay() {
        let invalid = status(&ServiceError::invalid("ops[2].channel_id", "required"));
        let overloaded = status(&ServiceError::Overloaded);

        assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
        assert_eq!(invalid.message(), "ops[2].channel_id: required");
        let violations = invalid
            .get_details_bad_request()
            .map(|b| b.field_violations);
        assert_eq!(
            violations.map(|v| v.into_iter().map(|f| f.field).collect::<Vec<_>>()),
            Some(vec!["ops[2].channel_id".to_owned()])
        );
        assert!(invalid.get_details_retry_info().is_none());
        assert_eq!(overloaded.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            overloaded
                .get_details_retry_info()
                .and_then(|r| r.retry_delay),
            Some(RETRY_DELAY)
        );
    }
}
