//! The OpenAPI 3.1 document, generated from the handlers (`#[utoipa::path]`) and the
//! DTOs (`ToSchema`), plus the schemas and error responses shared by many routes.

use std::collections::BTreeMap;

use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, Modify, OpenApi};

use axum::http::Method;

use crate::auth::Operation;

use super::problem::{PROBLEM_CONTENT_TYPE, Problem, ProblemBody, ProblemKind};
use super::routes;
use crate::api::dto;
use crate::api::ids::{IdInput, PositionInput, id_reason};
use crate::config::HttpSettings;
use crate::service::ServiceError;

/// A typical occurrence of each kind, with the detail the service really writes
/// (the API tests compare these with real answers).
pub fn problem_example(kind: ProblemKind) -> Problem {
    match kind {
        ProblemKind::InvalidInput => Problem::invalid("user_id", id_reason()),
        ProblemKind::Unauthorized => crate::auth::Denied::Missing.problem(),
        ProblemKind::Forbidden => crate::http::browser::foreign_origin(),
        ProblemKind::NotFound => {
            Problem::from_service_error(&ServiceError::NotFound { what: "read state" })
        }
        ProblemKind::MethodNotAllowed => Problem::new(kind, "this route does not accept PATCH"),
        ProblemKind::PayloadTooLarge => crate::http::extract::payload_too_large(),
        ProblemKind::UriTooLong => crate::http::serve::uri_too_long(),
        ProblemKind::UnsupportedMediaType => crate::http::extract::unsupported_media_type(),
        ProblemKind::TooManyRequests => {
            crate::auth::Denied::RateLimited(std::time::Duration::from_secs(1)).problem()
        }
        ProblemKind::HeadersTooLarge => crate::http::serve::headers_too_large(),
        ProblemKind::Overloaded => Problem::new(kind, "too many requests in flight; retry later"),
        ProblemKind::Unavailable => Problem::from_service_error(&ServiceError::Unavailable {
            reason: "storage unavailable",
            source: None,
        }),
        ProblemKind::Timeout => Problem::new(
            kind,
            format!(
                "the request did not complete within {} ms; retry later",
                HttpSettings::default().request_timeout_ms
            ),
        ),
        ProblemKind::Internal => Problem::internal(),
    }
}

/// The answer to a route that does not exist (any method, any path).
pub fn unknown_route_example() -> Problem {
    Problem::new(ProblemKind::NotFound, "no route for GET /v1/nope")
}

/// An error response: `description`, a `Problem` body with one example per problem,
/// and `Retry-After` when the kinds are retryable.
fn problem_response(description: &str, problems: &[Problem]) -> RefOr<Response> {
    let mut content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem")));
    if let [only] = problems {
        content = content.example(Some(only.to_json()));
    } else {
        content = content.examples_from_iter(problems.iter().map(|p| {
            (
                p.kind.slug(),
                ExampleBuilder::new()
                    .summary(p.kind.title())
                    .value(Some(p.to_json())),
            )
        }));
    }
    let mut builder = ResponseBuilder::new()
        .description(description)
        .content(PROBLEM_CONTENT_TYPE, content.build());
    let rate_limited = problems
        .iter()
        .any(|p| p.kind == ProblemKind::TooManyRequests);
    if rate_limited || problems.iter().any(|p| p.kind.is_retryable()) {
        builder = builder.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::Integer)))
                .description(Some(match rate_limited {
                    true => "Seconds until this caller may send again",
                    false => "Seconds to wait before retrying (always 1)",
                }))
                .build(),
        );
    }
    if problems.iter().any(|p| p.kind == ProblemKind::Unauthorized) {
        builder = builder.header(
            "WWW-Authenticate",
            HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .description(Some(
                    "`Bearer realm=\"readstate\"`, with `error=\"invalid_token\"` when a token was sent",
                ))
                .build(),
        );
    }
    builder.build().into()
}

fn responses(list: &[(&str, &str, &[ProblemKind])]) -> BTreeMap<String, RefOr<Response>> {
    list.iter()
        .map(|(status, description, kinds)| {
            let problems: Vec<Problem> = kinds.iter().map(|k| problem_example(*k)).collect();
            (
                (*status).to_owned(),
                problem_response(description, &problems),
            )
        })
        .collect()
}

/// 400 `invalid-input`: a path parameter, query parameter or body field is invalid
/// (the problem's `field` names it). [`ProblemExamples`] fits the example to each route.
#[derive(Debug)]
pub struct InvalidInputResponse;

impl IntoResponses for InvalidInputResponse {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses(&[(
            "400",
            "`invalid-input`: a path parameter, query parameter or body field is invalid; `field` names it",
            &[ProblemKind::InvalidInput],
        )])
    }
}

/// 403 `forbidden`: a browser page of an origin that is neither this server's nor in
/// `http.cors_origins` (added to every `/v1` route by [`ProblemExamples`]).
#[derive(Debug)]
pub struct ForbiddenResponse;

impl IntoResponses for ForbiddenResponse {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses(&[(
            "403",
            "`forbidden`: the API key lacks the route's scope, a user token (JWT) acts on another user or on a route end users may not call, \
             or the request comes from a browser page of an origin that is neither this server's nor in `http.cors_origins`",
            &[ProblemKind::Forbidden],
        )])
    }
}

/// 401 `unauthorized` and 429 `too-many-requests`: every route behind access control
/// (added by [`ProblemExamples`]; only answered when auth is on).
#[derive(Debug)]
pub struct AccessResponses;

impl IntoResponses for AccessResponses {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses(&[
            (
                "401",
                "`unauthorized`: no credentials, or credentials that are not valid (unknown API key; a JWT that is malformed, \
                 expired, not yet valid, badly signed, of an algorithm not accepted, or of the wrong issuer or audience)",
                &[ProblemKind::Unauthorized],
            ),
            (
                "429",
                "`too-many-requests`: this caller (API key or user) sent more than `limits.per_caller_rps` requests per second; \
                 retry after `Retry-After` seconds",
                &[ProblemKind::TooManyRequests],
            ),
        ])
    }
}

/// 413 `payload-too-large` and 415 `unsupported-media-type`: routes that read a body.
#[derive(Debug)]
pub struct BodyResponses;

impl IntoResponses for BodyResponses {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses(&[
            (
                "413",
                "`payload-too-large`: the body exceeds `http.max_body_bytes`",
                &[ProblemKind::PayloadTooLarge],
            ),
            (
                "415",
                "`unsupported-media-type`: the body is not `application/json`",
                &[ProblemKind::UnsupportedMediaType],
            ),
        ])
    }
}

/// 404 `not-found`.
#[derive(Debug)]
pub struct NotFoundResponse;

impl IntoResponses for NotFoundResponse {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses(&[(
            "404",
            "`not-found`: the user has no read state in this channel",
            &[ProblemKind::NotFound],
        )])
    }
}

/// 404 `not-found` of a channel the service has never seen.
#[derive(Debug)]
pub struct ChannelNotFoundResponse;

impl IntoResponses for ChannelNotFoundResponse {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let problem = Problem::from_service_error(&ServiceError::NotFound { what: "channel" });
        BTreeMap::from([(
            "404".to_owned(),
            problem_response(
                "`not-found`: the service has never seen this channel (no message, no metadata)",
                &[problem],
            ),
        )])
    }
}

/// 503 `overloaded`, `unavailable` or `timeout`, with `Retry-After`.
#[derive(Debug)]
pub struct UnavailableResponse;

impl IntoResponses for UnavailableResponse {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses(&[(
            "503",
            "`overloaded` (too many requests in flight or unflushed writes), `unavailable` (storage failing, \
             starting or draining; a write's outcome may be unknown: retry, writes are idempotent) or `timeout`; \
             retry after `Retry-After` seconds",
            &[
                ProblemKind::Overloaded,
                ProblemKind::Unavailable,
                ProblemKind::Timeout,
            ],
        )])
    }
}

/// 503 `unavailable` of `/readyz` (not ready), or `timeout`, with `Retry-After`.
#[derive(Debug)]
pub struct NotReadyResponse;

impl IntoResponses for NotReadyResponse {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let problems = [
            Problem::new(ProblemKind::Unavailable, "not ready: starting or draining"),
            problem_example(ProblemKind::Timeout),
        ];
        BTreeMap::from([(
            "503".to_owned(),
            problem_response(
                "Not ready: `unavailable` (starting or draining, storage not answering, or the last \
                 commit failed; the detail says which) or `timeout`; retry after `Retry-After` seconds",
                &problems,
            ),
        )])
    }
}

/// Completes the document where the annotations cannot: the `Problem` schema gets an
/// example of every kind, and each route's 400 example names a field of that route.
#[derive(Debug)]
pub struct ProblemExamples;

impl Modify for ProblemExamples {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(RefOr::T(Schema::Object(problem))) = openapi
            .components
            .as_mut()
            .and_then(|c| c.schemas.get_mut("Problem"))
        {
            problem.example = None;
            problem.examples = ProblemKind::ALL
                .iter()
                .map(|kind| match kind {
                    ProblemKind::NotFound => unknown_route_example(),
                    _ => problem_example(*kind),
                })
                .map(|p| p.to_json())
                .collect();
        }
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(API_KEY_SCHEME, SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("API key")
                    .description(Some(
                        "A service's API key (`readstate api-key new`), sent as `Authorization: Bearer <key>`. \
                         The scopes listed by a route are the ones the key needs: read, write or admin.",
                    ))
                    .build(),
            ));
            components.add_security_scheme(USER_TOKEN_SCHEME, SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An end user's JWT (HS256, RS256 or ES256; `sub` is the user id), sent as `Authorization: Bearer <jwt>` \
                         (or `?access_token=` on the event streams). Accepted only by the routes that list it, for the path's own user.",
                    ))
                    .build(),
            ));
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                (Method::GET, &mut item.get),
                (Method::PUT, &mut item.put),
                (Method::POST, &mut item.post),
                (Method::DELETE, &mut item.delete),
                (Method::PATCH, &mut item.patch),
            ];
            for (method, operation) in operations
                .into_iter()
                .filter_map(|(method, operation)| operation.as_mut().map(|o| (method, o)))
            {
                // Every path parameter is an id, and so are the `after` cursor and
                // `group_id`, and `channels` is a list of them: say exactly which
                // text is one.
                for parameter in operation.parameters.iter_mut().flatten() {
                    let RefOr::T(parameter) = parameter else {
                        continue;
                    };
                    let pattern = match (&parameter.parameter_in, parameter.name.as_str()) {
                        (utoipa::openapi::path::ParameterIn::Path, _)
                        | (utoipa::openapi::path::ParameterIn::Query, "after" | "group_id") => {
                            crate::api::ids::ID_PATTERN
                        }
                        (utoipa::openapi::path::ParameterIn::Query, "channels") => {
                            crate::api::ids::ID_LIST_PATTERN
                        }
                        _ => continue,
                    };
                    parameter.schema = Some(RefOr::T(Schema::Object(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .pattern(Some(pattern))
                            .build(),
                    )));
                }
                // Every API route refuses a browser page of a foreign origin, and
                // every route behind access control says what it needs.
                if path.starts_with("/v1/") {
                    operation
                        .responses
                        .responses
                        .extend(ForbiddenResponse::responses());
                }
                if let Some(op) = crate::http::access::operation(&method, path) {
                    operation
                        .responses
                        .responses
                        .extend(AccessResponses::responses());
                    operation.security = Some(security_requirements(op));
                    let note = access_note(op);
                    operation.description = Some(match operation.description.take() {
                        Some(description) => format!("{description}\n\n{note}"),
                        None => note,
                    });
                }
                let Some(RefOr::T(response)) = operation.responses.responses.get_mut("400") else {
                    continue;
                };
                let example = invalid_input_example(path).to_json();
                for content in response.content.values_mut() {
                    if let RefOr::T(content) = content {
                        content.example = Some(example.clone());
                    }
                }
            }
        }
    }
}

/// The name of the API-key security scheme in the document.
pub const API_KEY_SCHEME: &str = "apiKey";
/// The name of the end-user JWT security scheme in the document.
pub const USER_TOKEN_SCHEME: &str = "userToken";

/// Who may call an operation: an API key with its scope, or for end-user operations
/// also a user token.
fn security_requirements(op: Operation) -> Vec<SecurityRequirement> {
    let mut list = vec![SecurityRequirement::new(
        API_KEY_SCHEME,
        [op.scope().as_str()],
    )];
    if op.for_end_users() {
        list.push(SecurityRequirement::new(
            USER_TOKEN_SCHEME,
            Vec::<String>::new(),
        ));
    }
    list
}

/// The sentence each route's description gets about who may call it.
fn access_note(op: Operation) -> String {
    let who = match op.for_end_users() {
        true => " or a user token (JWT) for the path's own user",
        false => "",
    };
    format!(
        "**Access** (when auth is on): an API key with the `{}` scope{who}.",
        op.scope().as_str()
    )
}

/// The 400 of a route: its first path parameter (every one is an id) out of range, or,
/// for a route without one, a body that is not a JSON object.
fn invalid_input_example(path: &str) -> Problem {
    let first_parameter = path
        .split_once('{')
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(name, _)| name);
    match first_parameter {
        Some(name) => Problem::invalid(name, id_reason()),
        None => Problem::invalid("body", "must be a JSON object"),
    }
}

/// The API document (`GET /openapi.json`).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "readstate",
        description = "Read states for chat: what every user has read in every channel, exact unread and mention counts, read receipts. \
            Ids are integers in 1..=2^63-1: responses write them as decimal strings, requests accept a string or a number. \
            Every answer from 400 up is an RFC 9457 `application/problem+json` body (`type`, `title`, `status`, `detail`, and `field` where one applies: \
            the input field for invalid input, `body` for a body too large, `content-type` for one that is not JSON): \
            the `Problem` schema shows an example of every kind. Besides the errors each route lists, any request may get \
            404 `not-found` (no such route), 405 `method-not-allowed` (with `Allow`), 500 `internal`, and, for an HTTP/1 request \
            the server cannot parse, 400 `invalid-input` (`field`: `request`), 414 `uri-too-long` or 431 `headers-too-large`."
    ),
    paths(
        routes::channels::create_message,
        routes::channels::delete_message,
        routes::channels::delete_channel,
        routes::channels::set_channel,
        routes::channels::get_channel,
        routes::channels::get_readers,
        routes::users::join_channel,
        routes::users::leave_channel,
        routes::users::get_read_state,
        routes::users::ack_channel,
        routes::users::unread_channel,
        routes::users::get_read_states,
        routes::users::get_summary,
        routes::users::get_groups,
        routes::users::get_threads,
        routes::users::put_settings,
        routes::users::ack_all,
        routes::users::delete_user,
        routes::users::export_user,
        routes::summaries::post_summaries,
        routes::events::get_events,
        routes::events::get_events_ws,
        routes::batch::post_batch,
        routes::ops::get_healthz,
        routes::ops::get_readyz,
        routes::ops::get_metrics,
    ),
    components(schemas(
        ProblemBody,
        IdInput,
        PositionInput,
        dto::CreateMessageRequest,
        dto::JoinRequest,
        dto::AckRequest,
        dto::UnreadRequest,
        dto::SetChannelRequest,
        dto::SettingsRequest,
        dto::SummariesRequest,
        dto::BatchRequest,
        dto::BatchOp,
        dto::BatchOpKind,
        dto::BatchResult,
        dto::BatchResponse,
        dto::ReadStateBody,
        dto::ReadStatesBody,
        dto::SummaryBody,
        dto::SummariesBody,
        dto::ReadersBody,
        dto::ChannelBody,
        dto::GroupsBody,
        dto::ThreadsBody,
        dto::ExportBody,
        dto::ExportedStateBody,
        dto::Status,
    )),
    tags(
        (name = "channels", description = "Message events, channel metadata (thread parent, group) and channel lifecycle"),
        (name = "read states", description = "One user's read states: join, ack, mark unread, leave, notification settings, read (overall, per group, threads); delete and export a user"),
        (name = "batch", description = "Many writes or reads in one request"),
        (name = "operations", description = "Health, readiness and metrics"),
    ),
    modifiers(&ProblemExamples)
)]
pub struct ApiDoc;

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use serde_json::Value;

    use crate::http::problem::{TYPE_PREFIX, problem_json};

    /// Every error response: (route, method, status, response, its examples).
    fn error_responses(doc: &Value) -> Vec<(String, String, String, Value, Vec<Value>)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("a path item") {
                for (status, response) in operation["responses"].as_object().expect("responses") {
                    if !(status.starts_with('4') || status.starts_with('5')) {
                        continue;
                    }
                    let media = &response["content"][PROBLEM_CONTENT_TYPE];
                    let examples = match media["examples"].as_object() {
                        Some(named) => named.values().map(|e| e["value"].clone()).collect(),
                        None => vec![media["example"].clone()],
                    };
                    out.push((
                        path.clone(),
                        method.clone(),
                        status.clone(),
                        response.clone(),
                        examples,
                    ));
                }
            }
        }
        out
    }

    fn kind_of(example: &Value) -> Option<ProblemKind> {
        let slug = example["type"].as_str()?.strip_prefix(TYPE_PREFIX)?;
        ProblemKind::ALL.into_iter().find(|k| k.slug() == slug)
    }

    #[test]
    fn every_error_response_shows_examples_of_its_own_status_and_kinds() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("serializable");
        let responses = error_responses(&doc);
        assert!(responses.len() > 40, "{}", responses.len());

        for (path, method, status, response, examples) in responses {
            let route = format!("{method} {path} {status}");
            assert_eq!(
                response["content"][PROBLEM_CONTENT_TYPE]["schema"]["$ref"],
                "#/components/schemas/Problem",
                "{route}"
            );
            let description = response["description"].as_str().unwrap_or_default();
            let mut retryable = false;
            for example in &examples {
                let kind = kind_of(example).unwrap_or_else(|| panic!("{route}: {example}"));
                assert_eq!(
                    example["status"].as_u64(),
                    status.parse::<u64>().ok(),
                    "{route}: {example}"
                );
                assert_eq!(kind.status().as_str(), status, "{route}: {example}");
                assert_eq!(example["title"], kind.title(), "{route}: {example}");
                assert!(
                    example["detail"].as_str().is_some_and(|d| !d.is_empty()),
                    "{route}: {example}"
                );
                // `field` where one applies: the input at fault.
                let field = match kind {
                    ProblemKind::PayloadTooLarge => Some("body"),
                    ProblemKind::UnsupportedMediaType => Some("content-type"),
                    _ => None,
                };
                if kind == ProblemKind::InvalidInput {
                    assert!(example["field"].is_string(), "{route}: {example}");
                } else {
                    assert_eq!(
                        example.get("field").and_then(Value::as_str),
                        field,
                        "{route}: {example}"
                    );
                }
                assert!(
                    description.contains(&format!("`{}`", kind.slug())),
                    "{route}: the description does not name {}",
                    kind.slug()
                );
                // 429 says when this caller may send again.
                retryable |= kind.is_retryable() || kind == ProblemKind::TooManyRequests;
            }
            assert_eq!(
                response["headers"].get("Retry-After").is_some(),
                retryable,
                "{route}"
            );
            assert_eq!(
                response["headers"].get("WWW-Authenticate").is_some(),
                status == "401",
                "{route}"
            );
        }
    }

    #[test]
    fn the_503_of_api_routes_shows_each_retryable_kind() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("serializable");
        for (path, method, status, _, examples) in error_responses(&doc) {
            if status != "503" || !path.starts_with("/v1/") {
                continue;
            }
            let kinds: Vec<_> = examples.iter().filter_map(kind_of).collect();
            for kind in [
                ProblemKind::Overloaded,
                ProblemKind::Unavailable,
                ProblemKind::Timeout,
            ] {
                assert!(kinds.contains(&kind), "{method} {path}: {kinds:?}");
            }
        }
    }

    #[test]
    fn a_400_example_names_a_field_of_its_route() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("serializable");
        for (path, method, status, _, examples) in error_responses(&doc) {
            if status != "400" {
                continue;
            }
            let field = examples[0]["field"].as_str().expect("a field");
            assert!(
                path.contains(&format!("{{{field}}}")) || field == "body",
                "{method} {path}: {field}"
            );
        }
    }

    #[test]
    fn the_problem_schema_lists_its_properties_in_the_order_they_are_written() {
        // The order a problem body is really serialized in.
        let body = serde_json::to_string(&Problem::invalid("user_id", "bad").body())
            .expect("serializable");
        let written: Vec<&str> = [
            "\"type\"",
            "\"title\"",
            "\"status\"",
            "\"detail\"",
            "\"field\"",
        ]
        .into_iter()
        .filter(|key| body.contains(*key))
        .collect();
        let mut by_position = written.clone();
        by_position.sort_by_key(|key| body.find(*key));
        assert_eq!(by_position, written, "{body}");
        assert_eq!(written.len(), 5);

        // The raw text of the document, as `/openapi.json` serves it.
        let text = ApiDoc::openapi().to_json().expect("serializable");
        let schema = &text[text.find("\"Problem\":{").expect("the Problem schema")..];
        let properties = &schema[schema.find("\"properties\":{").expect("properties")..];
        let positions: Vec<usize> = written
            .iter()
            .map(|key| {
                properties
                    .find(&format!("{key}:{{"))
                    .unwrap_or_else(|| panic!("{key} in {properties}"))
            })
            .collect();
        assert!(
            positions.is_sorted(),
            "Problem properties out of order: {written:?} at {positions:?}"
        );
    }

    #[test]
    fn the_problem_schema_has_an_example_of_every_kind() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("serializable");
        let problem = &doc["components"]["schemas"]["Problem"];
        let kinds: Vec<ProblemKind> = problem["examples"]
            .as_array()
            .expect("examples")
            .iter()
            .map(|e| kind_of(e).unwrap_or_else(|| panic!("{e}")))
            .collect();
        assert_eq!(kinds, ProblemKind::ALL);
        assert!(problem.get("example").is_none(), "{problem}");
    }

    #[test]
    fn the_id_maximum_is_written_as_an_exact_integer() {
        let text = ApiDoc::openapi().to_json().expect("serializable");
        assert!(text.contains("\"maximum\":9223372036854775807"), "{text}");
        assert!(!text.contains("9223372036854776000"));
    }

    async fn body_of(response: axum::response::Response) -> Value {
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("an in-memory body")
            .to_bytes();
        serde_json::from_slice(&bytes).expect("a JSON body")
    }

    #[tokio::test]
    async fn examples_are_what_the_code_that_answers_writes() {
        use axum::response::IntoResponse;

        assert_eq!(
            problem_example(ProblemKind::Overloaded).to_json(),
            body_of(crate::http::problem::shed_response()).await
        );
        assert_eq!(
            problem_example(ProblemKind::Internal).to_json(),
            body_of(Problem::internal().into_response()).await
        );
        assert_eq!(
            problem_example(ProblemKind::NotFound).to_json(),
            problem_json(&ServiceError::NotFound { what: "read state" })
        );
        for kind in ProblemKind::ALL {
            let example = problem_example(kind);
            assert_eq!(example.kind, kind);
            assert_eq!(
                example.to_json(),
                body_of(example.clone().into_response()).await
            );
        }
    }

    #[test]
    #[ignore = "writes the document for inspection: cargo test dump_openapi -- --ignored"]
    fn dump_openapi() {
        let json = ApiDoc::openapi().to_pretty_json().expect("serializable");
        std::fs::write(std::env::temp_dir().join("readstate-openapi.json"), json)
            .expect("writable temp dir");
    }

    #[test]
    fn the_document_is_openapi_3_1_and_lists_every_route_with_its_errors() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("serializable");

        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1")),
            "{}",
            doc["openapi"]
        );
        let paths = doc["paths"].as_object().expect("paths");
        assert_eq!(paths.len(), 22, "{:?}", paths.keys().collect::<Vec<_>>());
        let operations: usize = paths
            .values()
            .map(|p| p.as_object().map_or(0, |o| o.len()))
            .sum();
        assert_eq!(operations, 26);
        let ack = &paths["/v1/users/{user_id}/channels/{channel_id}/ack"]["post"];
        for status in ["200", "400", "413", "415", "503"] {
            assert!(ack["responses"].get(status).is_some(), "ack lacks {status}");
        }
        assert_eq!(
            ack["responses"]["400"]["content"]["application/problem+json"]["schema"]["$ref"],
            "#/components/schemas/Problem"
        );
        assert!(
            paths["/v1/users/{user_id}/channels/{channel_id}"]["get"]["responses"]
                .get("404")
                .is_some()
        );
        let events = &paths["/v1/users/{user_id}/events"]["get"];
        assert!(
            events["responses"]["200"]["content"]
                .get("text/event-stream")
                .is_some(),
            "{events}"
        );
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        assert!(
            paths["/v1/channels/{channel_id}"]["get"]["responses"]
                .get("404")
                .is_some()
        );
        for name in [
            "Problem",
            "ReadState",
            "IdInput",
            "BatchOp",
            "Summaries",
            "Channel",
            "Groups",
            "Threads",
            "Export",
            "ExportedState",
            "SettingsRequest",
            "SetChannelRequest",
        ] {
            assert!(schemas.contains_key(name), "missing schema {name}");
        }
    }
}
