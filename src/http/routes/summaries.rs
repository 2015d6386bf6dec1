//! Summaries of many users in one call (push and e-mail digests).

use std::collections::HashSet;

use crate::http::json::Json;
use axum::extract::State;

use crate::domain::UserId;
use crate::http::HttpState;
use crate::http::dto::{SummariesBody, SummariesRequest, SummaryBody};
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
    let max = state.service.limits().max_summary_users;
    if body.user_ids.len() > max {
        return Err(Problem::invalid("user_ids", format!("at most {max} users")));
    }
    // A JSON object cannot repeat a key: answer each user once, in request order.
    let mut seen: HashSet<UserId> = HashSet::with_capacity(body.user_ids.len());
    let users: Vec<UserId> = body
        .user_ids
        .into_iter()
        .map(|u| u.get())
        .filter(|u| seen.insert(*u))
        .collect();
    let summaries = state.service.summaries(&users).await?;
    Ok(Json(SummariesBody {
        summaries: summaries
            .into_iter()
            .map(|(u, s)| (u.to_string(), SummaryBody::from(s)))
            .collect(),
    }))
}
