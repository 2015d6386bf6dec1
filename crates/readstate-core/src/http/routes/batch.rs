//! `POST /v1/batch`: many writes in one request, applied in order, each with its own
//! result. Ops are parsed one by one from JSON values, so a bad op fails alone with
//! an error naming `ops[i].field` while the others still apply.

use crate::http::json::Json;
use axum::extract::{Extension, State};

use crate::api::dto::{BatchRequest, BatchResponse, BatchResult};
use crate::api::ops::parse_op;
use crate::api::problem::log_batch_errors;
use crate::auth::{Caller, Denied};
use crate::http::HttpState;
use crate::http::extract::ApiJson;
use crate::http::openapi::{BodyResponses, InvalidInputResponse, UnavailableResponse};
use crate::http::problem::Problem;

/// Batch of writes.
///
/// Applies many write operations in order, each with its own result. A bad op fails
/// alone (`ok: false`, with the problem naming `ops[i].field`) and the others still
/// apply; a body that is not a batch at all is a 400.
#[utoipa::path(
    post,
    path = "/v1/batch",
    tag = "batch",
    request_body(content = BatchRequest, example = json!({"ops": [
        {"op": "message_created", "channel_id": "10", "message_id": "500", "author_id": "1", "mentions": ["2"]},
        {"op": "ack", "user_id": "2", "channel_id": "10", "message_id": "500"}
    ]})),
    responses(
        (status = 200, description = "One result per op, in order", body = BatchResponse,
            example = json!({"results": [{"ok": true}, {"ok": false, "error": {
                "type": "https://readstate.dev/problems/invalid-input", "title": "Invalid input", "status": 400,
                "detail": "ops[1].channel_id: required", "field": "ops[1].channel_id"}}]})),
        InvalidInputResponse,
        BodyResponses,
        UnavailableResponse,
    )
)]
#[tracing::instrument(level = "debug", skip_all, fields(ops = body.ops.len()))]
pub async fn post_batch(
    State(state): State<HttpState>,
    caller: Option<Extension<Caller>>,
    ApiJson(body): ApiJson<BatchRequest>,
) -> Result<Json<BatchResponse>, Problem> {
    let ops: Vec<_> = body
        .ops
        .iter()
        .enumerate()
        .map(|(i, v)| parse_op(i, v))
        .collect();
    // The access guard put the caller here; each op needs its own scope too (a
    // `channel_deleted` op needs `admin`).
    let caller = match caller {
        Some(Extension(caller)) => caller,
        None if !state.access.is_on() => Caller::Anonymous,
        None => return Err(Denied::Missing.problem()),
    };
    let parsed = ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| op.as_ref().ok().map(|op| (i, op)));
    if let Err((i, denied)) = state.access.authorize_ops(&caller, parsed) {
        return Err(denied.problem_at(i));
    }
    let results = state.service.execute_batch(ops).await?;
    log_batch_errors(&results);
    let results = results
        .iter()
        .map(|r| match r {
            Ok(()) => BatchResult {
                ok: true,
                error: None,
            },
            Err(e) => BatchResult {
                ok: false,
                error: Some(Problem::from_service_error(e).body()),
            },
        })
        .collect();
    Ok(Json(BatchResponse { results }))
}
