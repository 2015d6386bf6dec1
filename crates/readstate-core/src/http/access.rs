//! The HTTP side of [`crate::auth`]: which [`Operation`] each route is, where the
//! bearer token is read from, and how a refusal is answered (problem+json, with
//! `WWW-Authenticate` on 401 and on a missing scope, `Retry-After` on 429).
//!
//! Tokens come from `Authorization: Bearer <token>`; the event streams (SSE and
//! WebSocket) also take `?access_token=`, because a browser's `EventSource` cannot
//! set headers. That query parameter is never logged (no request URI is).

use std::sync::Arc;

use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::{Access, Denied, Invalid, Operation};
use crate::domain::UserId;

use super::problem::Problem;

/// The operation of a route (its template as axum matched it) and method; `None`
/// for a route without an access rule (refused: every `/v1` route must have one,
/// which a test checks against the OpenAPI document).
pub fn operation(method: &Method, route: &str) -> Option<Operation> {
    let op = match (method.as_str(), route) {
        ("DELETE", "/v1/channels/{channel_id}") => Operation::DeleteChannel,
        ("PUT", "/v1/channels/{channel_id}") => Operation::SetChannel,
        ("GET", "/v1/channels/{channel_id}") => Operation::GetChannel,
        ("POST", "/v1/channels/{channel_id}/messages") => Operation::MessageCreated,
        ("DELETE", "/v1/channels/{channel_id}/messages/{message_id}") => Operation::MessageDeleted,
        ("GET", "/v1/channels/{channel_id}/messages/{message_id}/readers") => Operation::Readers,
        ("PUT", "/v1/users/{user_id}/channels/{channel_id}") => Operation::Join,
        ("DELETE", "/v1/users/{user_id}/channels/{channel_id}") => Operation::Leave,
        ("GET", "/v1/users/{user_id}/channels/{channel_id}") => Operation::GetReadState,
        ("POST", "/v1/users/{user_id}/channels/{channel_id}/ack") => Operation::Ack,
        ("POST", "/v1/users/{user_id}/channels/{channel_id}/unread") => Operation::MarkUnread,
        ("PUT", "/v1/users/{user_id}/channels/{channel_id}/settings") => Operation::Settings,
        ("GET", "/v1/users/{user_id}/channels/{channel_id}/threads") => Operation::GetThreads,
        ("DELETE", "/v1/users/{user_id}") => Operation::DeleteUser,
        ("GET", "/v1/users/{user_id}/export") => Operation::ExportUser,
        ("GET", "/v1/users/{user_id}/groups") => Operation::GetGroups,
        ("GET", "/v1/users/{user_id}/read-states") => Operation::GetReadStates,
        ("GET", "/v1/users/{user_id}/summary") => Operation::GetSummary,
        ("GET", "/v1/users/{user_id}/events") => Operation::Subscribe,
        ("GET", "/v1/users/{user_id}/events/ws") => Operation::Subscribe,
        ("POST", "/v1/users/{user_id}/ack-all") => Operation::AckAll,
        ("POST", "/v1/summaries") => Operation::GetSummaries,
        ("POST", "/v1/batch") => Operation::Batch,
        ("GET", "/metrics" | "/dashboard/history") => Operation::Monitor,
        _ => return None,
    };
    Some(op)
}

/// The bearer token of a request: `Authorization: Bearer <token>`, or for the event
/// streams `?access_token=` when no header is sent. `Err` for an `Authorization`
/// header that is not a bearer token.
pub fn bearer<'a>(
    headers: &'a HeaderMap,
    query: Option<&'a str>,
    op: Operation,
) -> Result<Option<std::borrow::Cow<'a, str>>, Denied> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| Denied::Invalid(Invalid::Malformed))?;
        return crate::auth::bearer_value(value).map(|t| Some(std::borrow::Cow::Borrowed(t)));
    }
    if op != Operation::Subscribe {
        return Ok(None);
    }
    let pairs: Vec<(String, String)> = query
        .and_then(|query| serde_urlencoded::from_str(query).ok())
        .unwrap_or_default();
    Ok(pairs
        .into_iter()
        .find(|(name, _)| name == "access_token")
        .map(|(_, token)| std::borrow::Cow::Owned(token)))
}

/// The answer to a refused request.
pub fn refusal(denied: &Denied) -> Response {
    let mut response = denied.problem().into_response();
    let headers = response.headers_mut();
    if let Some(challenge) = denied.challenge()
        && let Ok(value) = HeaderValue::from_str(&challenge)
    {
        headers.insert(header::WWW_AUTHENTICATE, value);
    }
    if let Some(seconds) = denied.retry_after() {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// Checks every request of the routes it wraps against [`Access`]: the route's
/// operation, the `{user_id}` of its path and the caller's token. With auth on, the
/// [`crate::auth::Caller`] is put in the request's extensions for handlers that check more (a
/// batch checks each op).
pub async fn guard(State(access): State<Arc<Access>>, request: Request, next: Next) -> Response {
    // Auth off: nothing to check and nothing to record (a handler that finds no
    // caller treats it as anonymous), so the hot path costs one branch.
    if !access.is_on() {
        return next.run(request).await;
    }
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let Some(op) = route.and_then(|route| operation(request.method(), route)) else {
        // Unmatched requests fall through to the 404/405 answers, and pages without
        // a rule (health, readiness, the API document, the page shells) are public;
        // an API route without a rule is refused.
        if route.is_some_and(|route| route.starts_with("/v1/")) {
            return Problem::new(
                crate::api::problem::ProblemKind::Forbidden,
                "this route has no access rule",
            )
            .into_response();
        }
        return next.run(request).await;
    };
    let (mut parts, body) = request.into_parts();
    let params =
        <RawPathParams as axum::extract::FromRequestParts<()>>::from_request_parts(&mut parts, &())
            .await;
    let user = params.ok().and_then(|params| user_param(&params));
    let checked = bearer(&parts.headers, parts.uri.query(), op)
        .and_then(|token| access.check(token.as_deref(), op, user));
    match checked {
        Ok(caller) => {
            parts.extensions.insert(caller);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(denied) => refusal(&denied),
    }
}

/// The `{user_id}` of the path, when it is a valid id.
fn user_param(params: &RawPathParams) -> Option<UserId> {
    params
        .iter()
        .find(|(name, _)| *name == "user_id")
        .and_then(|(_, value)| UserId::parse(value).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_route_has_an_access_rule() {
        let doc = <super::super::openapi::ApiDoc as utoipa::OpenApi>::openapi();
        let mut missing = Vec::new();
        for (path, item) in &doc.paths.paths {
            for (method, operation_) in [
                (Method::GET, &item.get),
                (Method::PUT, &item.put),
                (Method::POST, &item.post),
                (Method::DELETE, &item.delete),
                (Method::PATCH, &item.patch),
            ] {
                if operation_.is_some()
                    && path.starts_with("/v1/")
                    && operation(&method, path).is_none()
                {
                    missing.push(format!("{method} {path}"));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "routes without an access rule: {missing:?}"
        );
    }

    #[test]
    fn bearer_tokens_come_from_the_header_or_for_streams_the_query() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            bearer(&headers, Some("access_token=abc"), Operation::Ack),
            Ok(None)
        );
        assert_eq!(
            bearer(
                &headers,
                Some("last_event_id=1&access_token=a%2Bb"),
                Operation::Subscribe
            )
            .map(|t| t.map(|t| t.into_owned())),
            Ok(Some("a+b".to_owned()))
        );
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer xyz"),
        );
        assert_eq!(
            bearer(&headers, Some("access_token=abc"), Operation::Subscribe)
                .map(|t| t.map(|t| t.into_owned())),
            Ok(Some("xyz".to_owned()))
        );
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcg=="),
        );
        assert_eq!(
            bearer(&headers, None, Operation::Ack),
            Err(Denied::Invalid(Invalid::Malformed))
        );
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(
            bearer(&headers, None, Operation::Ack),
            Err(Denied::Invalid(Invalid::Malformed))
        );
    }
}
