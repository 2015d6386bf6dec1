//! What keeps browsers safe (issue-12 item 5): a page of a foreign origin cannot
//! act on the API, and the pages this server serves cannot be framed or fed
//! foreign code.
//!
//! - **Origin.** A request to `/v1` that carries an `Origin` header (browsers send
//!   one on cross-site requests, form posts and WebSocket upgrades) is refused with
//!   403 `forbidden` unless the origin is this server's own (it names the `Host`
//!   the request was sent to) or listed in `http.cors_origins`. Requests without
//!   `Origin` (servers, curl) are not affected. This stops cross-site form posts,
//!   which CORS alone does not (a "simple" request is sent before any preflight),
//!   and WebSocket or SSE streams of another user's events opened from a foreign
//!   page.
//! - **CORS.** Only `http.cors_origins` (none by default) get
//!   `Access-Control-Allow-Origin`, for the methods and headers the API uses.
//! - **Pages.** `/` and `/docs` carry a Content-Security-Policy that allows only
//!   the page's own assets (no other host, no framing), `X-Content-Type-Options:
//!   nosniff` and `Referrer-Policy: no-referrer`.
//! - **Caching.** Every `/v1` answer carries `Cache-Control: no-store`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::problem::{Problem, ProblemKind};

/// The answer to a browser page of a foreign origin.
pub fn foreign_origin() -> Problem {
    Problem::new(
        ProblemKind::Forbidden,
        "requests from this page's origin are not allowed (http.cors_origins)",
    )
}

/// The origins allowed besides the server's own (`http.cors_origins`), normalised.
#[derive(Debug, Clone, Default)]
pub struct AllowedOrigins(Arc<[String]>);

impl AllowedOrigins {
    /// From `http.cors_origins` (`https://app.example`, no path).
    pub fn new(origins: &[String]) -> Self {
        Self(
            origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        )
    }

    /// Whether a request with `origin`, sent to `host`, may go on.
    fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        // Same origin: the page was served by the host it now talks to.
        let own = host.is_some_and(|host| {
            origin
                .split_once("://")
                .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
        });
        own || self.0.contains(&origin)
    }

    /// The list, for the CORS layer.
    pub fn list(&self) -> Vec<HeaderValue> {
        self.0
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect()
    }
}

/// Refuses a `/v1` request from a browser page of a foreign origin, and marks every
/// `/v1` answer `Cache-Control: no-store`.
pub async fn guard_api(
    State(allowed): State<AllowedOrigins>,
    request: Request,
    next: Next,
) -> Response {
    // Borrowed from the request: most API calls carry no Origin and cost nothing here.
    let foreign = request.headers().get(header::ORIGIN).is_some_and(|origin| {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| request.uri().authority().map(|a| a.as_str()));
        let origin = origin.to_str().unwrap_or("");
        let foreign = !allowed.allows(origin, host);
        if foreign {
            tracing::debug!(origin, "refused a request from a foreign origin");
        }
        foreign
    });
    let mut response = if foreign {
        foreign_origin().into_response()
    } else {
        next.run(request).await
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The Content-Security-Policy of the pages: their own scripts, styles and data
/// only; nothing from another host; never framed.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self' 'unsafe-inline'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
    connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Adds the pages' security headers.
pub async fn page_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_origin_and_listed_ones_are_allowed_and_nothing_else() {
        let allowed = AllowedOrigins::new(&["https://App.example/".to_owned()]);

        assert!(allowed.allows("http://127.0.0.1:8080", Some("127.0.0.1:8080")));
        assert!(allowed.allows("https://app.example", Some("api.example")));
        assert!(!allowed.allows("https://evil.example", Some("127.0.0.1:8080")));
        assert!(!allowed.allows("http://127.0.0.1:9999", Some("127.0.0.1:8080")));
        assert!(!allowed.allows("null", Some("127.0.0.1:8080")));
        assert!(!allowed.allows("https://app.example.evil", None));
    }
}
