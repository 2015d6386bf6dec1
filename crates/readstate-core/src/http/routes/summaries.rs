//! Summaries of many users in one call (push and e-mail digests).

use crate::http::json::Json;
use axum::extract::State;

use crate::api::dto::{SummariesBody, SummariesRequest, SummaryBody};
use crate::domain::UserId;
use crate::http::HttpState;
use crate::http::extract::ApiJson;
use crate::http::openapi::{BodyResponses, InvalidInputResponse, UnavailableResponse};
use crate::http::problem::Problem;

/// Summaries of many users.
///
/// The summary of each listed user, keyed by user id (duplicates answered once), for
/// push and e-mail digests.
#[utoipa::path(
    post,
    path = "/v1/summaries",
    tag = "batch",
    request_body = SummariesRequest,
    responses(
        (status = 200, description = "One summary per distinct user", body = SummariesBody,
            example = json!({"summaries": {"42": {"unread_channels": 3, "mentions": 1}}})),
        InvalidInputResponse,
        BodyResponses,
        UnavailableResponse,
    )
)]
#[tracing::instrument(level = "debug", skip_all, fields(users = body.user_ids.len()))]
pub async fn post_summaries(
    State(state): State<HttpState>,
    ApiJson(body): ApiJson<SummariesRequest>,
) -> Result<Json<SummariesBody>, Problem> {
    // The service checks the count and answers each user once, in request order (a
    // JSON object cannot repeat a key).
    let users: Vec<UserId> = body.user_ids.into_iter().map(|u| u.get()).collect();
    let summaries = state.service.summaries(&users).await?;
    Ok(Json(SummariesBody {
        summaries: summaries
            .into_iter()
            .map(|(u, s)| (u.to_string(), SummaryBody::from(s)))
            .collect(),
    }))
}
