//! The one mapping from errors to RFC 9457 `application/problem+json` responses:
//! service errors, extractor rejections, timeouts and shedding all render here (the
//! kinds themselves are in [`crate::api::problem`]). Handlers never build error
//! bodies themselves.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

pub use crate::api::problem::{
    PROBLEM_CONTENT_TYPE, Problem, ProblemBody, ProblemKind, TYPE_PREFIX, log_service_error,
    problem_json,
};
use crate::service::ServiceError;

impl From<ServiceError> for Problem {
    fn from(e: ServiceError) -> Self {
        log_service_error(&e);
        Problem::from_service_error(&e)
    }
}

/// The HTTP answer at the hard in-flight limit: 503 `overloaded` + `Retry-After`.
pub fn shed_response() -> Response {
    Problem::new(
        ProblemKind::Overloaded,
        "too many requests in flight; retry later",
    )
    .into_response()
}

impl crate::limits::Shed for Response {
    fn shed() -> Self {
        shed_response()
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
    use axum::http::StatusCode;
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
                (
                    ProblemKind::Unauthorized,
                    401,
                    "unauthorized",
                    "Unauthorized"
                ),
                (ProblemKind::Forbidden, 403, "forbidden", "Forbidden"),
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
                (ProblemKind::UriTooLong, 414, "uri-too-long", "URI too long"),
                (
                    ProblemKind::UnsupportedMediaType,
                    415,
                    "unsupported-media-type",
                    "Unsupported media type"
                ),
                (
                    ProblemKind::TooManyRequests,
                    429,
                    "too-many-requests",
                    "Too many requests"
                ),
                (
                    ProblemKind::HeadersTooLarge,
                    431,
                    "headers-too-large",
                    "Request header fields too large"
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
