//! Our own extractors, so that every malformed request gets the same problem body as
//! any other error: JSON bodies (content type, size, syntax, the field serde names),
//! ids in paths (naming the path parameter), strict query strings, and the id
//! wrappers that accept a JSON string or number.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::problem::{Problem, ProblemKind};
pub use crate::api::ids::{ApiId, id_reason};
use crate::domain::{ChannelId, MessageId, UserId};

/// A JSON request body, parsed with errors naming the field.
///
/// Rejections: 415 without a JSON content type, 413 over `http.max_body_bytes`,
/// 400 for malformed JSON or a bad field.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

/// An optional JSON request body: an empty body gives `None` (whatever the content
/// type), and so does a JSON `null`; anything else is parsed as [`ApiJson`] would.
#[derive(Debug, Clone)]
pub struct ApiJsonOrEmpty<T>(pub Option<T>);

/// Whether the request says its body is JSON (`application/json` or `application/*+json`).
pub fn has_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype.ends_with("+json"))
}

/// The 415 of a body that is not JSON; `field` names the `content-type` header.
pub fn unsupported_media_type() -> Problem {
    Problem::new(
        ProblemKind::UnsupportedMediaType,
        "the request body must be JSON (Content-Type: application/json)",
    )
    .with_field("content-type")
}

/// The 413 of a body over `http.max_body_bytes`; `field` is `body`.
pub fn payload_too_large() -> Problem {
    Problem::new(
        ProblemKind::PayloadTooLarge,
        "the request body is larger than the configured limit",
    )
    .with_field("body")
}

/// How long a request has to deliver its whole body once an extractor starts reading
/// it (`http.body_read_timeout_ms`), a request extension set by [`super::router`];
/// without it, the default of the setting.
#[derive(Debug, Clone, Copy)]
pub struct BodyReadTimeout(pub std::time::Duration);

/// The 400 of a body not received in full within `timeout`: the client sent fewer
/// bytes than its `Content-Length` (or sent them too slowly).
pub fn body_timed_out(timeout: std::time::Duration) -> Problem {
    Problem::invalid(
        "body",
        format!(
            "not received in full within {} ms (fewer bytes than its Content-Length arrived)",
            timeout.as_millis()
        ),
    )
}

async fn read_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, Problem> {
    let timeout = request.extensions().get::<BodyReadTimeout>().map_or_else(
        || crate::config::HttpSettings::default().body_read_timeout(),
        |t| t.0,
    );
    let Ok(read) = tokio::time::timeout(timeout, Bytes::from_request(request, state)).await else {
        tracing::debug!(timeout_ms = timeout.as_millis(), "request body timed out");
        return Err(body_timed_out(timeout));
    };
    read.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            payload_too_large()
        } else {
            Problem::invalid("body", "could not be read")
        }
    })
}

/// Parses a JSON object (every request body is one), naming the offending field on
/// error.
///
/// # Errors
/// [`ProblemKind::InvalidInput`] naming the field serde pointed at (`mentions[2]`),
/// or `body` for malformed JSON or a document that is not an object.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    // serde lets a struct be read from an array too; a body must be an object, and
    // anything else is reported as malformed or as the wrong kind of document.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        let parsed =
            serde_json::Value::deserialize(&mut deserializer).and_then(|_| deserializer.end());
        return Err(match parsed {
            Err(e) => Problem::invalid("body", format!("malformed JSON: {e}")),
            Ok(()) => Problem::invalid("body", "must be a JSON object"),
        });
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(json_problem)?;
    deserializer
        .end()
        .map_err(|e| Problem::invalid("body", format!("malformed JSON: {e}")))?;
    Ok(value)
}

fn json_problem(error: serde_path_to_error::Error<serde_json::Error>) -> Problem {
    let path = error.path().to_string();
    let inner = error.into_inner();
    match inner.classify() {
        serde_json::error::Category::Data => {
            let message = inner.to_string();
            // serde_json appends the position; the field name says more.
            let message = match message.rfind(" at line ") {
                Some(at) => message[..at].to_owned(),
                None => message,
            };
            let (field, reason) = name_field(&path, &message);
            Problem::invalid(field, reason)
        }
        serde_json::error::Category::Syntax
        | serde_json::error::Category::Eof
        | serde_json::error::Category::Io => {
            Problem::invalid("body", format!("malformed JSON: {inner}"))
        }
    }
}

/// Joins a serde path (`.` for the root) and a field name.
fn join_path(path: &str, name: &str) -> String {
    if path.is_empty() || path == "." {
        name.to_owned()
    } else if path == name || path.ends_with(&format!(".{name}")) {
        path.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// The first name between backticks in a serde message.
fn backticked(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

/// Turns serde's message into (field, reason): `missing field `x`` becomes (`x`,
/// `required`), `unknown field `x`, expected ...` becomes (`x`, `unknown field; expected
/// ...`), anything else keeps the path (`body` at the root).
fn name_field(path: &str, message: &str) -> (String, String) {
    if let Some(rest) = message.strip_prefix("missing field ")
        && let Some(name) = backticked(rest)
    {
        return (join_path(path, name), "required".to_owned());
    }
    for (prefix, what) in [
        ("unknown field ", "unknown field"),
        ("duplicate field ", "given more than once"),
    ] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some(name) = backticked(rest)
        {
            let expected = rest
                .split_once(", ")
                .map(|(_, e)| format!("; {e}"))
                .unwrap_or_default();
            return (join_path(path, name), format!("{what}{expected}"));
        }
    }
    let field = if path.is_empty() || path == "." {
        "body".to_owned()
    } else {
        path.to_owned()
    };
    (field, message.to_owned())
}

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        if !has_json_content_type(request.headers()) {
            return Err(unsupported_media_type());
        }
        let bytes = read_body(request, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

impl<T, S> FromRequest<S> for ApiJsonOrEmpty<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let is_json = has_json_content_type(request.headers());
        let bytes = read_body(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(ApiJsonOrEmpty(None));
        }
        if !is_json {
            return Err(unsupported_media_type());
        }
        // JSON `null` is no body too (the OpenAPI document says the body is nullable).
        if bytes.trim_ascii() == b"null" {
            return Ok(ApiJsonOrEmpty(None));
        }
        parse_json(&bytes).map(|v| ApiJsonOrEmpty(Some(v)))
    }
}

/// Path parameters parsed into typed ids, each error naming its parameter.
#[derive(Debug, Clone, Copy)]
pub struct ApiPath<T>(pub T);

/// A set of path parameters (see [`ApiPath`]).
pub trait FromPathParams: Sized {
    /// Parses the parameters of the matched route.
    ///
    /// # Errors
    /// [`ProblemKind::InvalidInput`] naming the parameter.
    fn from_params(params: &RawPathParams) -> Result<Self, Problem>;
}

/// Parses the path parameter `name` as an id.
///
/// # Errors
/// [`ProblemKind::InvalidInput`] naming `name`, or an internal error when the route
/// has no such parameter (a routing bug).
pub fn path_id<T: ApiId>(params: &RawPathParams, name: &'static str) -> Result<T, Problem> {
    let Some((_, raw)) = params.iter().find(|(key, _)| *key == name) else {
        tracing::error!(parameter = name, "route has no such path parameter");
        return Err(Problem::internal());
    };
    T::from_text(raw).map_err(|_| Problem::invalid(name, id_reason()))
}

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: FromPathParams,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| Problem::invalid("path", "path parameters must be valid UTF-8"))?;
        T::from_params(&params).map(ApiPath)
    }
}

/// `/v1/users/{user_id}/...`
#[derive(Debug, Clone, Copy)]
pub struct UserPath {
    /// `user_id`.
    pub user: UserId,
}

/// `/v1/channels/{channel_id}`
#[derive(Debug, Clone, Copy)]
pub struct ChannelPath {
    /// `channel_id`.
    pub channel: ChannelId,
}

/// `/v1/channels/{channel_id}/messages/{message_id}`
#[derive(Debug, Clone, Copy)]
pub struct MessagePath {
    /// `channel_id`.
    pub channel: ChannelId,
    /// `message_id`.
    pub message: MessageId,
}

/// `/v1/users/{user_id}/channels/{channel_id}`
#[derive(Debug, Clone, Copy)]
pub struct UserChannelPath {
    /// `user_id`.
    pub user: UserId,
    /// `channel_id`.
    pub channel: ChannelId,
}

impl FromPathParams for UserPath {
    fn from_params(params: &RawPathParams) -> Result<Self, Problem> {
        Ok(Self {
            user: path_id(params, "user_id")?,
        })
    }
}

impl FromPathParams for ChannelPath {
    fn from_params(params: &RawPathParams) -> Result<Self, Problem> {
        Ok(Self {
            channel: path_id(params, "channel_id")?,
        })
    }
}

impl FromPathParams for MessagePath {
    fn from_params(params: &RawPathParams) -> Result<Self, Problem> {
        Ok(Self {
            channel: path_id(params, "channel_id")?,
            message: path_id(params, "message_id")?,
        })
    }
}

impl FromPathParams for UserChannelPath {
    fn from_params(params: &RawPathParams) -> Result<Self, Problem> {
        Ok(Self {
            user: path_id(params, "user_id")?,
            channel: path_id(params, "channel_id")?,
        })
    }
}

/// A query string parsed strictly: unknown or repeated parameters are a 400 naming
/// them. `T` should hold `Option<String>` fields and parse values itself, so that
/// each value error names its parameter.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

/// Parses a query string (without the `?`).
///
/// # Errors
/// [`ProblemKind::InvalidInput`] naming the parameter.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, Problem> {
    serde_urlencoded::from_str(query).map_err(|e| {
        let (field, reason) = name_field(".", &e.to_string());
        let field = if field == "body" {
            "query".to_owned()
        } else {
            field
        };
        Problem::invalid(field, reason)
    })
}

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        parse_query(parts.uri.query().unwrap_or_default()).map(ApiQuery)
    }
}

/// Parses a comma-separated id list (`1,2,3`; empty text is an empty list).
///
/// # Errors
/// [`ProblemKind::InvalidInput`] naming `field` and quoting the bad element.
pub fn parse_id_list<T: ApiId>(field: &str, text: &str) -> Result<Vec<T>, Problem> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|element| {
            T::from_text(element).map_err(|_| {
                let shown: String = element.chars().take(40).collect();
                Problem::invalid(field, format!("`{shown}` is not an id: {}", id_reason()))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ids::{BodyId, BodyPosition, MAX_ID, POSITION_REASON};
    use axum::Router;
    use axum::body::Body;
    use axum::http::{Method, Request as HttpRequest};
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    use http_body_util::BodyExt;
    use serde_json::{Value, json};
    use tower::ServiceExt;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // fields are read through Debug in the tests
    struct Sample {
        message_id: BodyId<MessageId>,
        #[serde(default)]
        mentions: Vec<BodyId<UserId>>,
        last_read_message_id: Option<BodyPosition>,
    }

    fn problem_of<T: std::fmt::Debug>(result: Result<T, Problem>) -> (Option<String>, String) {
        let problem = result.expect_err("should be rejected");
        assert_eq!(problem.kind, ProblemKind::InvalidInput);
        (problem.field, problem.detail)
    }

    async fn call(router: Router, request: HttpRequest<Body>) -> (StatusCode, Value) {
        let response = router.oneshot(request).await.expect("infallible");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("in-memory body")
            .to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[test]
    fn body_ids_accept_a_string_or_a_number() {
        let sample: Sample =
            parse_json(br#"{"message_id": "12", "mentions": [3, "4"], "last_read_message_id": 0}"#)
                .expect("valid");

        assert_eq!(sample.message_id.get().get(), 12);
        assert_eq!(
            sample
                .mentions
                .iter()
                .map(|m| m.get().get())
                .collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert_eq!(sample.last_read_message_id, Some(BodyPosition(0)));
    }

    #[test]
    fn a_bad_id_in_a_list_names_its_index() {
        let (field, detail) = problem_of(parse_json::<Sample>(
            br#"{"message_id": 1, "mentions": [3, 0]}"#,
        ));

        assert_eq!(field.as_deref(), Some("mentions[1]"));
        assert_eq!(
            detail,
            "mentions[1]: must be an integer between 1 and 9223372036854775807"
        );
    }

    #[test]
    fn ids_out_of_range_negative_fractional_or_not_numeric_are_rejected() {
        for bad in [
            r#""0""#,
            "0",
            "-1",
            "1.5",
            r#""abc""#,
            "9223372036854775808",
            "18446744073709551616",
            r#""""#,
        ] {
            let body = format!(r#"{{"message_id": {bad}}}"#);

            let (field, _) = problem_of(parse_json::<Sample>(body.as_bytes()));

            assert_eq!(field.as_deref(), Some("message_id"), "{bad}");
        }
    }

    #[test]
    fn a_missing_field_is_named() {
        let (field, detail) = problem_of(parse_json::<Sample>(b"{}"));

        assert_eq!(field.as_deref(), Some("message_id"));
        assert_eq!(detail, "message_id: required");
    }

    #[test]
    fn an_unknown_field_is_named() {
        let (field, detail) =
            problem_of(parse_json::<Sample>(br#"{"message_id": 1, "mention": []}"#));

        assert_eq!(field.as_deref(), Some("mention"));
        assert!(
            detail.starts_with("mention: unknown field; expected one of"),
            "{detail}"
        );
    }

    #[test]
    fn malformed_json_names_the_body() {
        let (field, detail) = problem_of(parse_json::<Sample>(br#"{"message_id": "#));
        assert_eq!(field.as_deref(), Some("body"));
        assert!(detail.starts_with("body: malformed JSON"), "{detail}");

        let (field, _) = problem_of(parse_json::<Sample>(br#"{"message_id": 1} x"#));
        assert_eq!(field.as_deref(), Some("body"));
    }

    #[test]
    fn a_body_that_is_not_an_object_is_rejected_naming_the_body() {
        let (field, detail) = problem_of(parse_json::<Sample>(br#"[1]"#));
        assert_eq!(field.as_deref(), Some("body"));
        assert_eq!(detail, "body: must be a JSON object");

        let deep = "[".repeat(10_000);
        let (field, detail) = problem_of(parse_json::<Sample>(deep.as_bytes()));
        assert_eq!(field.as_deref(), Some("body"));
        assert!(
            detail.starts_with("body: malformed JSON: recursion limit exceeded"),
            "{detail}"
        );
    }

    #[test]
    fn read_positions_allow_zero_but_not_more_than_the_largest_id() {
        let ok: Sample =
            parse_json(br#"{"message_id": 1, "last_read_message_id": "9223372036854775807"}"#)
                .expect("valid");
        assert_eq!(ok.last_read_message_id, Some(BodyPosition(MAX_ID)));

        let (field, detail) = problem_of(parse_json::<Sample>(
            br#"{"message_id": 1, "last_read_message_id": 9223372036854775808}"#,
        ));
        assert_eq!(field.as_deref(), Some("last_read_message_id"));
        assert_eq!(detail, format!("last_read_message_id: {POSITION_REASON}"));
    }

    #[test]
    fn id_lists_parse_strictly() {
        assert_eq!(
            parse_id_list::<ChannelId>("channels", "1,2,3").map(|v| v.len()),
            Ok(3)
        );
        assert_eq!(
            parse_id_list::<ChannelId>("channels", "").map(|v| v.len()),
            Ok(0)
        );
        for bad in ["1,,2", "1, 2", "x", "1,0", ",", "1,2,"] {
            let (field, _) = problem_of(parse_id_list::<ChannelId>("channels", bad));
            assert_eq!(field.as_deref(), Some("channels"), "{bad}");
        }
    }

    #[test]
    fn query_strings_reject_unknown_and_repeated_parameters() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Q {
            limit: Option<String>,
        }

        assert_eq!(
            parse_query::<Q>("limit=5").map(|q| q.limit),
            Ok(Some("5".to_owned()))
        );
        let (field, _) = problem_of(parse_query::<Q>("limt=5"));
        assert_eq!(field.as_deref(), Some("limt"));
        let (field, _) = problem_of(parse_query::<Q>("limit=5&limit=6"));
        assert_eq!(field.as_deref(), Some("limit"));
    }

    fn path_router() -> Router {
        Router::new().route(
            "/v1/users/{user_id}/channels/{channel_id}",
            get(|ApiPath(p): ApiPath<UserChannelPath>| async move {
                format!("{}/{}", p.user, p.channel)
            }),
        )
    }

    #[tokio::test]
    async fn path_ids_are_parsed_and_errors_name_the_parameter() {
        let request = |uri: &str| {
            HttpRequest::get(uri)
                .body(Body::empty())
                .expect("valid request")
        };

        let ok = path_router()
            .oneshot(request("/v1/users/1/channels/2"))
            .await
            .expect("infallible");
        let (status, body) = call(path_router(), request("/v1/users/0/channels/2")).await;
        let (_, body2) = call(path_router(), request("/v1/users/1/channels/abc")).await;

        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            json!({
                "type": "https://readstate.dev/problems/invalid-input",
                "title": "Invalid input",
                "status": 400,
                "detail": "user_id: must be an integer between 1 and 9223372036854775807",
                "field": "user_id"
            })
        );
        assert_eq!(body2["field"], "channel_id");
    }

    fn json_router() -> Router {
        Router::new()
            .route(
                "/json",
                post(|ApiJson(s): ApiJson<Sample>| async move { s.message_id.get().to_string() }),
            )
            .route(
                "/optional",
                post(|ApiJsonOrEmpty(s): ApiJsonOrEmpty<Sample>| async move {
                    s.map_or_else(|| "none".to_owned(), |s| s.message_id.get().to_string())
                        .into_response()
                }),
            )
            .layer(axum::extract::DefaultBodyLimit::max(64))
    }

    fn post_request(uri: &str, content_type: Option<&str>, body: &str) -> HttpRequest<Body> {
        let mut builder = HttpRequest::builder().method(Method::POST).uri(uri);
        if let Some(ct) = content_type {
            builder = builder.header(CONTENT_TYPE, ct);
        }
        builder
            .body(Body::from(body.to_owned()))
            .expect("valid request")
    }

    #[tokio::test]
    async fn json_bodies_need_a_json_content_type() {
        let (status, body) = call(
            json_router(),
            post_request("/json", Some("text/plain"), r#"{"message_id":1}"#),
        )
        .await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(
            body["type"],
            "https://readstate.dev/problems/unsupported-media-type"
        );
        assert_eq!(body["field"], "content-type");

        let (status, _) = call(
            json_router(),
            post_request("/json", None, r#"{"message_id":1}"#),
        )
        .await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

        let ok = json_router()
            .oneshot(post_request(
                "/json",
                Some("application/json; charset=utf-8"),
                r#"{"message_id":1}"#,
            ))
            .await
            .expect("infallible");
        assert_eq!(ok.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_a_413_problem() {
        let big = format!(
            r#"{{"message_id": 1, "mentions": [{}1]}}"#,
            "1,".repeat(100)
        );

        let (status, body) = call(
            json_router(),
            post_request("/json", Some("application/json"), &big),
        )
        .await;

        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            body["type"],
            "https://readstate.dev/problems/payload-too-large"
        );
        assert_eq!(body["status"], 413);
        assert_eq!(body["field"], "body");
    }

    #[tokio::test]
    async fn an_optional_body_may_be_empty_without_a_content_type() {
        let response = json_router()
            .oneshot(post_request("/optional", None, ""))
            .await
            .expect("infallible");
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("in-memory body")
            .to_bytes();
        assert_eq!(&bytes[..], b"none");

        let (status, _) = call(
            json_router(),
            post_request("/optional", None, r#"{"message_id":1}"#),
        )
        .await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
