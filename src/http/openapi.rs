//! The OpenAPI 3.1 document, generated from the handlers (`#[utoipa::path]`) and the
//! DTOs (`ToSchema`), plus the schemas and error responses shared by many routes.

use std::borrow::Cow;
use std::collections::BTreeMap;

use utoipa::openapi::schema::{
    KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, OpenApi, PartialSchema, ToSchema};

use super::dto;
use super::extract::MAX_ID;
use super::problem::{PROBLEM_CONTENT_TYPE, ProblemBody};
use super::routes;

/// An id in a request: a JSON number or a decimal string, 1..=2^63-1.
#[derive(Debug)]
pub struct IdInput;

impl PartialSchema for IdInput {
    fn schema() -> RefOr<Schema> {
        integer_or_string(
            1,
            "An id: an integer between 1 and 9223372036854775807, as a JSON number or a decimal string",
        )
    }
}

impl ToSchema for IdInput {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("IdInput")
    }
}

/// A read position in a request: like [`IdInput`] but 0 (nothing read) is allowed.
#[derive(Debug)]
pub struct PositionInput;

impl PartialSchema for PositionInput {
    fn schema() -> RefOr<Schema> {
        integer_or_string(
            0,
            "A read position: an integer between 0 and 9223372036854775807, as a JSON number or a decimal string",
        )
    }
}

impl ToSchema for PositionInput {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("PositionInput")
    }
}

fn integer_or_string(minimum: u64, description: &str) -> RefOr<Schema> {
    let pattern = if minimum == 0 {
        "^[0-9]+$"
    } else {
        "^[0-9]*[1-9][0-9]*$"
    };
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(minimum))
                .maximum(Some(MAX_ID)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(pattern)),
        )
        .description(Some(description))
        .examples([serde_json::json!("1234567890123456789")])
        .into()
}

fn problem_response(description: &str, retry_after: bool) -> RefOr<Response> {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Problem")))
        .build();
    let mut builder = ResponseBuilder::new()
        .description(description)
        .content(PROBLEM_CONTENT_TYPE, content);
    if retry_after {
        builder = builder.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::Integer)))
                .description(Some("Seconds to wait before retrying (always 1)"))
                .build(),
        );
    }
    builder.build().into()
}

fn responses(list: &[(&str, &str, bool)]) -> BTreeMap<String, RefOr<Response>> {
    list.iter()
        .map(|(status, description, retry)| {
            ((*status).to_owned(), problem_response(description, *retry))
        })
        .collect()
}

/// 400 `invalid-input`: a path parameter, query parameter or body field is invalid
/// (the problem's `field` names it).
#[derive(Debug)]
pub struct InvalidInputResponse;

impl IntoResponses for InvalidInputResponse {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses(&[(
            "400",
            "`invalid-input`: a path parameter, query parameter or body field is invalid; `field` names it",
            false,
        )])
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
                false,
            ),
            (
                "415",
                "`unsupported-media-type`: the body is not `application/json`",
                false,
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
            false,
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
            true,
        )])
    }
}

/// The API document (`GET /openapi.json`).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "readstate",
        description = "Read states for chat: what every user has read in every channel, exact unread and mention counts, read receipts. \
            Ids are integers in 1..=2^63-1: responses write them as decimal strings, requests accept a string or a number. \
            Every error is an RFC 9457 `application/problem+json` body (`type`, `title`, `status`, `detail`, and `field` for invalid input)."
    ),
    paths(
        routes::channels::create_message,
        routes::channels::delete_message,
        routes::channels::delete_channel,
        routes::channels::get_readers,
        routes::users::join_channel,
        routes::users::leave_channel,
        routes::users::get_read_state,
        routes::users::ack_channel,
        routes::users::unread_channel,
        routes::users::get_read_states,
        routes::users::get_summary,
        routes::users::ack_all,
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
        dto::Status,
    )),
    tags(
        (name = "channels", description = "Message events and channel lifecycle"),
        (name = "read states", description = "One user's read states: join, ack, mark unread, leave, read"),
        (name = "batch", description = "Many writes or reads in one request"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(paths.len(), 17, "{:?}", paths.keys().collect::<Vec<_>>());
        let operations: usize = paths
            .values()
            .map(|p| p.as_object().map_or(0, |o| o.len()))
            .sum();
        assert_eq!(operations, 19);
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
        for name in ["Problem", "ReadState", "IdInput", "BatchOp", "Summaries"] {
            assert!(schemas.contains_key(name), "missing schema {name}");
        }
    }
}
