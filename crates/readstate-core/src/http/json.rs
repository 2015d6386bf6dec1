//! JSON answers: `application/json`, ending with a newline so that `curl` output
//! leaves the shell prompt on a line of its own (JSON parsers ignore it).

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A JSON answer (the newline-terminated counterpart of `axum::Json`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

/// `value` as JSON followed by a newline.
///
/// # Errors
/// When `value` cannot be serialized (a map with non-string keys, a failing
/// `Serialize` impl); the answer types here are plain structs, which cannot fail.
pub fn to_line<T: Serialize>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut body = Vec::with_capacity(128);
    serde_json::to_writer(&mut body, value)?;
    body.push(b'\n');
    Ok(body)
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        match to_line(&self.0) {
            Ok(body) => (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response(),
            Err(e) => {
                tracing::error!(error = %e, "cannot serialize an answer");
                crate::http::problem::Problem::new(
                    crate::http::problem::ProblemKind::Internal,
                    "cannot serialize the answer",
                )
                .into_response()
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn answers_are_json_lines() {
        let response = Json(serde_json::json!({"a": 1})).into_response();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            HeaderValue::from_static("application/json")
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"{\"a\":1}\n");
    }
}
