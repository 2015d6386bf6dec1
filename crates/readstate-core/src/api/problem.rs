//! The problem table: every kind of error any transport answers, with its stable
//! slug, title and HTTP status (RFC 9457 `application/problem+json`), and the one
//! classification of service errors into kinds. HTTP renders these bodies, batch
//! results and NATS replies embed them.

use http::StatusCode;
use serde::Serialize;

use crate::service::ServiceError;

/// Prefix of every problem `type` URI; the slug of a [`ProblemKind`] follows it.
pub const TYPE_PREFIX: &str = "https://readstate.dev/problems/";

/// The media type of every error body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// Every kind of error the HTTP API answers, with its stable slug, title and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// 400: the request is malformed or a value is out of range; fix `field`.
    InvalidInput,
    /// 401 + `WWW-Authenticate: Bearer`: no credentials, or credentials that are not
    /// valid (unknown API key, bad signature, expired or malformed token).
    Unauthorized,
    /// 403: the caller may not do this (a scope it lacks, another user's data for an
    /// end-user token, or a browser page of an origin that is not allowed).
    Forbidden,
    /// 404: the resource (or route) does not exist.
    NotFound,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 413: the body is larger than `http.max_body_bytes`.
    PayloadTooLarge,
    /// 414: the request target (path and query) is longer than the server reads
    /// (answered by the connection layer, before routing).
    UriTooLong,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 429 + `Retry-After`: this caller (API key or token subject) sent more than
    /// `limits.per_caller_rps` requests per second; retry after the given time.
    TooManyRequests,
    /// 431: the request head (header fields) is larger, or has more fields, than the
    /// server reads (answered by the connection layer, before routing).
    HeadersTooLarge,
    /// 503 + `Retry-After`: too much work in flight or queued; retry shortly.
    Overloaded,
    /// 503 + `Retry-After`: storage is failing, or the service is starting or draining.
    Unavailable,
    /// 503 + `Retry-After`: the request did not finish within `http.request_timeout_ms`.
    Timeout,
    /// 500: a bug; the detail is generic and the cause is logged.
    Internal,
}

impl ProblemKind {
    /// Every kind, for tests and documentation.
    pub const ALL: [ProblemKind; 14] = [
        ProblemKind::InvalidInput,
        ProblemKind::Unauthorized,
        ProblemKind::Forbidden,
        ProblemKind::NotFound,
        ProblemKind::MethodNotAllowed,
        ProblemKind::PayloadTooLarge,
        ProblemKind::UriTooLong,
        ProblemKind::UnsupportedMediaType,
        ProblemKind::TooManyRequests,
        ProblemKind::HeadersTooLarge,
        ProblemKind::Overloaded,
        ProblemKind::Unavailable,
        ProblemKind::Timeout,
        ProblemKind::Internal,
    ];

    /// The stable slug that ends the problem `type` URI.
    pub fn slug(self) -> &'static str {
        match self {
            ProblemKind::InvalidInput => "invalid-input",
            ProblemKind::Unauthorized => "unauthorized",
            ProblemKind::Forbidden => "forbidden",
            ProblemKind::NotFound => "not-found",
            ProblemKind::MethodNotAllowed => "method-not-allowed",
            ProblemKind::PayloadTooLarge => "payload-too-large",
            ProblemKind::UriTooLong => "uri-too-long",
            ProblemKind::HeadersTooLarge => "headers-too-large",
            ProblemKind::UnsupportedMediaType => "unsupported-media-type",
            ProblemKind::TooManyRequests => "too-many-requests",
            ProblemKind::Overloaded => "overloaded",
            ProblemKind::Unavailable => "unavailable",
            ProblemKind::Timeout => "timeout",
            ProblemKind::Internal => "internal",
        }
    }

    /// The short, fixed, human-readable summary of the kind.
    pub fn title(self) -> &'static str {
        match self {
            ProblemKind::InvalidInput => "Invalid input",
            ProblemKind::Unauthorized => "Unauthorized",
            ProblemKind::Forbidden => "Forbidden",
            ProblemKind::NotFound => "Not found",
            ProblemKind::MethodNotAllowed => "Method not allowed",
            ProblemKind::PayloadTooLarge => "Payload too large",
            ProblemKind::UriTooLong => "URI too long",
            ProblemKind::HeadersTooLarge => "Request header fields too large",
            ProblemKind::UnsupportedMediaType => "Unsupported media type",
            ProblemKind::TooManyRequests => "Too many requests",
            ProblemKind::Overloaded => "Overloaded",
            ProblemKind::Unavailable => "Service unavailable",
            ProblemKind::Timeout => "Request timed out",
            ProblemKind::Internal => "Internal error",
        }
    }

    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            ProblemKind::InvalidInput => StatusCode::BAD_REQUEST,
            ProblemKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ProblemKind::Forbidden => StatusCode::FORBIDDEN,
            ProblemKind::NotFound => StatusCode::NOT_FOUND,
            ProblemKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProblemKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProblemKind::UriTooLong => StatusCode::URI_TOO_LONG,
            ProblemKind::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProblemKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProblemKind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ProblemKind::Overloaded | ProblemKind::Unavailable | ProblemKind::Timeout => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProblemKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether the client should retry after a moment (answered with `Retry-After: 1`).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ProblemKind::Overloaded | ProblemKind::Unavailable | ProblemKind::Timeout
        )
    }

    /// The gRPC status code of the kind: the same table, for the gRPC API.
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ProblemKind::InvalidInput | ProblemKind::UnsupportedMediaType => {
                tonic::Code::InvalidArgument
            }
            ProblemKind::Unauthorized => tonic::Code::Unauthenticated,
            ProblemKind::Forbidden => tonic::Code::PermissionDenied,
            ProblemKind::NotFound => tonic::Code::NotFound,
            ProblemKind::MethodNotAllowed => tonic::Code::Unimplemented,
            ProblemKind::PayloadTooLarge
            | ProblemKind::UriTooLong
            | ProblemKind::HeadersTooLarge
            | ProblemKind::TooManyRequests
            | ProblemKind::Overloaded => tonic::Code::ResourceExhausted,
            ProblemKind::Unavailable => tonic::Code::Unavailable,
            ProblemKind::Timeout => tonic::Code::DeadlineExceeded,
            ProblemKind::Internal => tonic::Code::Internal,
        }
    }

    /// The full `type` URI.
    pub fn type_uri(self) -> String {
        format!("{TYPE_PREFIX}{}", self.slug())
    }
}

/// An error on its way to the client: a kind, a detail and, where one applies, the
/// field (the input at fault: a body field, a parameter, `body`, a header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What went wrong, which fixes the status, type and title.
    pub kind: ProblemKind,
    /// The explanation of this occurrence (generic for internal errors).
    pub detail: String,
    /// The offending input: always for [`ProblemKind::InvalidInput`]
    /// (`ops[3].channel_id`), `body` for [`ProblemKind::PayloadTooLarge`],
    /// `content-type` for [`ProblemKind::UnsupportedMediaType`].
    pub field: Option<String>,
}

/// The JSON body of a problem, as serialized: `type`, `title`, `status`, `detail`, then
/// `field` where one applies, in this order. The examples show every kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub struct ProblemBody {
    /// A URI naming the kind of problem: `https://readstate.dev/problems/<slug>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// A short summary of the kind, the same for every occurrence.
    pub title: String,
    /// The HTTP status code.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// What happened in this occurrence.
    pub detail: String,
    /// The offending input, where one applies: a body field or parameter for
    /// `invalid-input` (e.g. `ops[3].channel_id`, always present there), `body` for
    /// `payload-too-large`, the `content-type` header for `unsupported-media-type`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Problem {
    /// A problem of `kind` with `detail` and no field.
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            field: None,
        }
    }

    /// The same problem naming `field` (the detail is kept as it is).
    #[must_use]
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Invalid input naming `field`; the detail reads `field: reason`.
    pub fn invalid(field: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        let field = field.into();
        Self {
            kind: ProblemKind::InvalidInput,
            detail: format!("{field}: {reason}"),
            field: Some(field),
        }
    }

    /// The request did not complete within `timeout`.
    pub fn timed_out(timeout: std::time::Duration) -> Self {
        Self::new(
            ProblemKind::Timeout,
            format!(
                "the request did not complete within {} ms; retry later",
                timeout.as_millis()
            ),
        )
    }

    /// A generic internal error. The caller logs the cause.
    pub fn internal() -> Self {
        Self::new(ProblemKind::Internal, "an internal error occurred")
    }

    /// The serializable body.
    pub fn body(&self) -> ProblemBody {
        ProblemBody {
            type_uri: self.kind.type_uri(),
            title: self.kind.title().to_owned(),
            status: self.kind.status().as_u16(),
            detail: self.detail.clone(),
            field: self.field.clone(),
        }
    }

    /// The body as a JSON value (for batch results).
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::with_capacity(5);
        map.insert("type".into(), self.kind.type_uri().into());
        map.insert("title".into(), self.kind.title().into());
        map.insert("status".into(), self.kind.status().as_u16().into());
        map.insert("detail".into(), self.detail.clone().into());
        if let Some(field) = &self.field {
            map.insert("field".into(), field.clone().into());
        }
        serde_json::Value::Object(map)
    }

    /// Classifies a service error without logging (see [`log_service_error`]).
    pub fn from_service_error(e: &ServiceError) -> Self {
        match e {
            ServiceError::Invalid { field, reason } => Problem::invalid(field.clone(), reason),
            ServiceError::NotFound { .. } => Problem::new(ProblemKind::NotFound, e.to_string()),
            ServiceError::Overloaded => Problem::new(ProblemKind::Overloaded, e.to_string()),
            // `reason` is a fixed sentence written for clients; the cause chain
            // (`source`) is never shown to them.
            ServiceError::Unavailable { reason, .. } => {
                Problem::new(ProblemKind::Unavailable, *reason)
            }
        }
    }
}

/// Logs a service error once, at the transport boundary. Storage failures carrying a
/// cause were already logged with their chain where they were classified
/// (`From<StoreError> for ServiceError`), so they go to DEBUG here; other unavailable
/// errors (commit failed or timed out, shutting down) go to WARN, at most once per
/// second so that an outage does not flood the log. Client errors go to DEBUG.
pub fn log_service_error(e: &ServiceError) {
    static UNAVAILABLE_LOG: crate::limits::RateLimit = crate::limits::RateLimit::new();
    match e {
        ServiceError::Unavailable { source: None, .. } if UNAVAILABLE_LOG.allow() => {
            tracing::warn!(error = %crate::error_chain(e), "request failed: service unavailable");
        }
        _ => tracing::debug!(error = %crate::error_chain(e), "request failed"),
    }
}

/// Logs the errors of a batch's results: a storage failure once per batch (not once
/// per op); invalid ops are the client's to see in the results.
pub fn log_batch_errors(results: &[Result<(), ServiceError>]) {
    if let Some(e) = results.iter().find_map(|r| {
        r.as_ref()
            .err()
            .filter(|e| !matches!(e, ServiceError::Invalid { .. }))
    }) {
        log_service_error(e);
    }
}

/// Renders a service error as a problem body (batch results reuse this).
pub fn problem_json(e: &ServiceError) -> serde_json::Value {
    Problem::from_service_error(e).to_json()
}
