//! The one mapping from errors to RFC 9457 `application/problem+json` responses:
//! service errors, extractor rejections, timeouts and shedding all render here, and
//! batch results reuse the same body. Handlers never build error bodies themselves.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
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
    /// 404: the resource (or route) does not exist.
    NotFound,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 413: the body is larger than `http.max_body_bytes`.
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
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
    pub const ALL: [ProblemKind; 9] = [
        ProblemKind::InvalidInput,
        ProblemKind::NotFound,
        ProblemKind::MethodNotAllowed,
        ProblemKind::PayloadTooLarge,
        ProblemKind::UnsupportedMediaType,
        ProblemKind::Overloaded,
        ProblemKind::Unavailable,
        ProblemKind::Timeout,
        ProblemKind::Internal,
    ];

    /// The stable slug that ends the problem `type` URI.
    pub fn slug(self) -> &'static str {
        match self {
            ProblemKind::InvalidInput => "invalid-input",
            ProblemKind::NotFound => "not-found",
            ProblemKind::MethodNotAllowed => "method-not-allowed",
            ProblemKind::PayloadTooLarge => "payload-too-large",
            ProblemKind::UnsupportedMediaType => "unsupported-media-type",
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
            ProblemKind::NotFound => "Not found",
            ProblemKind::MethodNotAllowed => "Method not allowed",
            ProblemKind::PayloadTooLarge => "Payload too large",
            ProblemKind::UnsupportedMediaType => "Unsupported media type",
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
            ProblemKind::NotFound => StatusCode::NOT_FOUND,
            ProblemKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProblemKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProblemKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
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

    /// The full `type` URI.
    pub fn type_uri(self) -> String {
        format!("{TYPE_PREFIX}{}", self.slug())
    }
}

/// An error on its way to the client: a kind, a detail and, for invalid input, the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What went wrong, which fixes the status, type and title.
    pub kind: ProblemKind,
    /// The explanation of this occurrence (generic for internal errors).
    pub detail: String,
    /// The offending input, for [`ProblemKind::InvalidInput`] (`ops[3].channel_id`).
    pub field: Option<String>,
}

/// The JSON body of a problem, as serialized: `type`, `title`, `status`, `detail`, then
/// `field` for invalid input, in this order. The examples show every kind.
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
    /// The offending input field (only for `invalid-input`), e.g. `ops[3].channel_id`.
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

    /// Invalid input naming `field`; the detail reads `field: reason`.
    pub fn invalid(field: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        let field = field.into();
        Self {
            kind: ProblemKind::InvalidInput,
            detail: format!("{field}: {reason}"),
            field: Some(field),
        }
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

/// Renders a service error as a problem body (batch results reuse this).
pub fn problem_json(e: &ServiceError) -> serde_json::Value {
    Problem::from_service_error(e).to_json()
}

/// Logs a service error once, at the HTTP boundary. Storage failures carrying a
/// cause were already logged with their chain where they were classified
/// (`From<StoreError> for ServiceError`), so they go to DEBUG here; other unavailable
/// errors (commit failed or timed out, shutting down) go to WARN, at most once per
/// second so that an outage does not flood the log. Client errors go to DEBUG.
pub fn log_service_error(e: &ServiceError) {
    static UNAVAILABLE_LOG: super::limits::RateLimit = super::limits::RateLimit::new();
    match e {
        ServiceError::Unavailable { source: None, .. } if UNAVAILABLE_LOG.allow() => {
            tracing::warn!(error = %crate::error_chain(e), "request failed: service unavailable");
        }
        _ => tracing::debug!(error = %crate::error_chain(e), "request failed"),
    }
}

impl From<ServiceError> for Problem {
    fn from(e: ServiceError) -> Self {
        log_service_error(&e);
        Problem::from_service_error(&e)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.kind.status();
        let body = match crate::http::json::to_line(&self.body()) {
            Ok(body) => body,
            // Serializing a struct of strings and a number cannot fail; keep a
            // well-formed answer anyway rather than panic on the request path.
            Err(_) => b"{\"type\":\"https://readstate.dev/problems/internal\",\"title\":\"Internal error\",\"status\":500,\"detail\":\"an internal error occurred\"}\n".to_vec(),
        };
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        );
        if self.kind.is_retryable() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use serde_json::json;

    async fn render(
        problem: Problem,
    ) -> (
        StatusCode,
        Option<String>,
        Option<String>,
        serde_json::Value,
    ) {
        let response = problem.into_response();
        let status = response.status();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header(header::CONTENT_TYPE);
        let retry_after = header(header::RETRY_AFTER);
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("an in-memory body cannot fail")
            .to_bytes();
        let body = serde_json::from_slice(&bytes).expect("problem bodies are JSON");
        (status, content_type, retry_after, body)
    }

    #[test]
    fn every_kind_has_a_distinct_slug_and_a_matching_status() {
        let table: Vec<(ProblemKind, u16, &str, &str)> = ProblemKind::ALL
            .iter()
            .map(|k| (*k, k.status().as_u16(), k.slug(), k.title()))
            .collect();
        assert_eq!(
            table,
            vec![
                (
                    ProblemKind::InvalidInput,
                    400,
                    "invalid-input",
                    "Invalid input"
                ),
                (ProblemKind::NotFound, 404, "not-found", "Not found"),
                (
                    ProblemKind::MethodNotAllowed,
                    405,
                    "method-not-allowed",
                    "Method not allowed"
                ),
                (
                    ProblemKind::PayloadTooLarge,
                    413,
                    "payload-too-large",
                    "Payload too large"
                ),
                (
                    ProblemKind::UnsupportedMediaType,
                    415,
                    "unsupported-media-type",
                    "Unsupported media type"
                ),
                (ProblemKind::Overloaded, 503, "overloaded", "Overloaded"),
                (
                    ProblemKind::Unavailable,
                    503,
                    "unavailable",
                    "Service unavailable"
                ),
                (ProblemKind::Timeout, 503, "timeout", "Request timed out"),
                (ProblemKind::Internal, 500, "internal", "Internal error"),
            ]
        );
    }

    #[tokio::test]
    async fn invalid_input_names_the_field_in_the_body() {
        let e = ServiceError::invalid("ops[3].channel_id", "required");

        let (status, content_type, retry_after, body) = render(Problem::from(e)).await;

        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(content_type.as_deref(), Some("application/problem+json"));
        assert_eq!(retry_after, None);
        assert_eq!(
            body,
            json!({
                "type": "https://readstate.dev/problems/invalid-input",
                "title": "Invalid input",
                "status": 400,
                "detail": "ops[3].channel_id: required",
                "field": "ops[3].channel_id"
            })
        );
    }

    #[tokio::test]
    async fn not_found_is_a_404_without_a_field() {
        let (status, _, retry_after, body) =
            render(Problem::from(ServiceError::NotFound { what: "read state" })).await;

        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(retry_after, None);
        assert_eq!(
            body,
            json!({
                "type": "https://readstate.dev/problems/not-found",
                "title": "Not found",
                "status": 404,
                "detail": "read state not found"
            })
        );
    }

    #[tokio::test]
    async fn overloaded_is_a_503_with_retry_after() {
        let (status, _, retry_after, body) = render(Problem::from(ServiceError::Overloaded)).await;

        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(
            body,
            json!({
                "type": "https://readstate.dev/problems/overloaded",
                "title": "Overloaded",
                "status": 503,
                "detail": "too many unflushed writes; retry later"
            })
        );
    }

    #[tokio::test]
    async fn unavailable_is_a_503_with_retry_after_and_never_shows_the_cause() {
        let e = ServiceError::Unavailable {
            reason: "storage unavailable",
            source: Some(crate::store::StoreError::Corrupt(
                "secret row detail".into(),
            )),
        };

        let (status, _, retry_after, body) = render(Problem::from(e)).await;

        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(
            body,
            json!({
                "type": "https://readstate.dev/problems/unavailable",
                "title": "Service unavailable",
                "status": 503,
                "detail": "storage unavailable"
            })
        );
    }

    #[tokio::test]
    async fn timeout_and_internal_render_their_own_kinds() {
        let (status, _, retry_after, body) =
            render(Problem::new(ProblemKind::Timeout, "too slow")).await;
        assert_eq!(
            (status, retry_after.as_deref()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("1"))
        );
        assert_eq!(body["type"], "https://readstate.dev/problems/timeout");

        let (status, _, retry_after, body) = render(Problem::internal()).await;
        assert_eq!(
            (status, retry_after),
            (StatusCode::INTERNAL_SERVER_ERROR, None)
        );
        assert_eq!(
            body,
            json!({
                "type": "https://readstate.dev/problems/internal",
                "title": "Internal error",
                "status": 500,
                "detail": "an internal error occurred"
            })
        );
    }

    #[test]
    fn batch_results_reuse_the_same_problem_body() {
        let e = ServiceError::invalid("mentions", "at most 2 users");

        let value = problem_json(&e);

        assert_eq!(
            value,
            serde_json::to_value(Problem::from_service_error(&e).body()).expect("serializable")
        );
        assert_eq!(value["field"], "mentions");
    }
}
