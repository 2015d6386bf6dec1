//! The README walkthrough, as data: the same requests and expected answers are run
//! here and rendered as curl commands in `walkthrough.md` (checked below), so the
//! README section copied from it cannot drift from the behaviour.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::spawn_app;

/// One step: (method, path, request body, status, expected JSON body).
pub type Step = (
    &'static str,
    &'static str,
    Option<&'static str>,
    u16,
    Option<&'static str>,
);

/// The walkthrough, in order.
pub const WALKTHROUGH: &[Step] = &[
    (
        "POST",
        "/v1/channels/10/messages",
        Some(r#"{"message_id": "100", "author_id": "1", "mentions": ["2"]}"#),
        204,
        None,
    ),
    (
        "POST",
        "/v1/channels/10/messages",
        Some(r#"{"message_id": "101", "author_id": "1"}"#),
        204,
        None,
    ),
    (
        "GET",
        "/v1/users/2/channels/10",
        None,
        200,
        Some(
            r#"{"channel_id":"10","last_read_message_id":"0","last_message_id":"101","has_unread":true,"unread_count":2,"unread_capped":false,"mention_count":1,"mention_capped":false,"first_unread_message_id":"100","muted":false,"level":"all"}"#,
        ),
    ),
    (
        "GET",
        "/v1/users/1/channels/10",
        None,
        200,
        Some(
            r#"{"channel_id":"10","last_read_message_id":"101","last_message_id":"101","has_unread":false,"unread_count":0,"unread_capped":false,"mention_count":0,"mention_capped":false,"first_unread_message_id":null,"muted":false,"level":"all"}"#,
        ),
    ),
    (
        "POST",
        "/v1/users/2/channels/10/ack",
        Some(r#"{"message_id": "100"}"#),
        200,
        Some(
            r#"{"channel_id":"10","last_read_message_id":"100","last_message_id":"101","has_unread":true,"unread_count":1,"unread_capped":false,"mention_count":0,"mention_capped":false,"first_unread_message_id":"101","muted":false,"level":"all"}"#,
        ),
    ),
    (
        "GET",
        "/v1/users/2/read-states",
        None,
        200,
        Some(
            r#"{"read_states":[{"channel_id":"10","last_read_message_id":"100","last_message_id":"101","has_unread":true,"unread_count":1,"unread_capped":false,"mention_count":0,"mention_capped":false,"first_unread_message_id":"101","muted":false,"level":"all"}]}"#,
        ),
    ),
    (
        "GET",
        "/v1/users/2/summary",
        None,
        200,
        Some(r#"{"unread_channels":1,"unread_threads":0,"mentions":0}"#),
    ),
    // Channel 10 belongs to group 7 (a guild, team or workspace); channel 11 is a
    // thread under it, so it is in group 7 too.
    (
        "PUT",
        "/v1/channels/10",
        Some(r#"{"group_id": "7"}"#),
        200,
        Some(r#"{"channel_id":"10","parent_id":null,"group_id":"7","last_message_id":"101"}"#),
    ),
    (
        "PUT",
        "/v1/channels/11",
        Some(r#"{"parent_id": "10"}"#),
        200,
        Some(r#"{"channel_id":"11","parent_id":"10","group_id":null,"last_message_id":"0"}"#),
    ),
    (
        "POST",
        "/v1/channels/11/messages",
        Some(r#"{"message_id": "102", "author_id": "1", "mentions": ["2"]}"#),
        204,
        None,
    ),
    (
        "GET",
        "/v1/users/2/channels/10/threads",
        None,
        200,
        Some(
            r#"{"unread_threads":1,"mentions":1,"read_states":[{"channel_id":"11","last_read_message_id":"0","last_message_id":"102","has_unread":true,"unread_count":1,"unread_capped":false,"mention_count":1,"mention_capped":false,"first_unread_message_id":"102","muted":false,"level":"all"}],"next":null}"#,
        ),
    ),
    // Channel 12, in group 8, mentions user 2, who mutes it: no longer unread, but
    // the mention still counts.
    (
        "PUT",
        "/v1/channels/12",
        Some(r#"{"group_id": "8"}"#),
        200,
        Some(r#"{"channel_id":"12","parent_id":null,"group_id":"8","last_message_id":"0"}"#),
    ),
    (
        "POST",
        "/v1/channels/12/messages",
        Some(r#"{"message_id": "103", "author_id": "1", "mentions": ["2"]}"#),
        204,
        None,
    ),
    (
        "PUT",
        "/v1/users/2/channels/12/settings",
        Some(r#"{"muted_until": null}"#),
        200,
        Some(
            r#"{"channel_id":"12","last_read_message_id":"0","last_message_id":"103","has_unread":true,"unread_count":1,"unread_capped":false,"mention_count":1,"mention_capped":false,"first_unread_message_id":"103","muted":true,"level":"all"}"#,
        ),
    ),
    (
        "GET",
        "/v1/users/2/summary",
        None,
        200,
        Some(r#"{"unread_channels":1,"unread_threads":1,"mentions":2}"#),
    ),
    (
        "GET",
        "/v1/users/2/summary?group_id=7",
        None,
        200,
        Some(r#"{"unread_channels":1,"unread_threads":1,"mentions":1}"#),
    ),
    (
        "GET",
        "/v1/users/2/groups",
        None,
        200,
        Some(
            r#"{"groups":{"7":{"unread_channels":1,"unread_threads":1,"mentions":1},"8":{"unread_channels":0,"unread_threads":0,"mentions":1}}}"#,
        ),
    ),
];

/// The walkthrough as the markdown of `walkthrough.md`: one curl command per step
/// with the expected answer.
pub fn render_markdown() -> String {
    let mut out = String::from(
        "# Walkthrough\n\n\
         Start the server with `readstate serve` (it listens on `127.0.0.1:8080` and keeps its data in\n\
         `./readstate-data/`), then run these requests in order. This file is generated from\n\
         `WALKTHROUGH` in `tests/api/walkthrough.rs`, and `cargo test --test api walkthrough` checks\n\
         that the two agree and that the server answers exactly this.\n",
    );
    for (method, path, body, status, expected) in WALKTHROUGH {
        out.push_str("\n```console\n$ curl -s");
        if *method != "GET" {
            out.push_str(&format!(" -X {method}"));
        }
        if expected.is_none() {
            out.push_str(" -o /dev/null -w '%{http_code}\\n'");
        }
        out.push_str(&format!(" localhost:8080{path}"));
        if let Some(body) = body {
            out.push_str(&format!(
                " \\\n    -H 'content-type: application/json' -d '{body}'"
            ));
        }
        out.push('\n');
        match expected {
            Some(json) => out.push_str(&format!("{json}\n")),
            None => out.push_str(&format!("{status}\n")),
        }
        out.push_str("```\n");
    }
    out
}

#[tokio::test]
async fn the_readme_walkthrough_answers_exactly_as_documented() {
    let app = spawn_app().await;

    for (step, (method, path, body, status, expected)) in WALKTHROUGH.iter().enumerate() {
        let method: Method = method.parse().expect("a method");
        let body: Option<Value> =
            body.map(|b| serde_json::from_str(b).expect("the request body is JSON"));

        let (actual_status, _, actual_body) = app.request(method.clone(), path, body).await;

        assert_eq!(
            actual_status,
            StatusCode::from_u16(*status).expect("a status"),
            "step {step}: {method} {path}: {actual_body}"
        );
        let expected: Value = expected.map_or(Value::Null, |e| {
            serde_json::from_str(e).expect("the expected body is JSON")
        });
        assert_eq!(actual_body, expected, "step {step}: {method} {path}");
    }
}

#[test]
fn walkthrough_md_is_the_rendered_walkthrough() {
    let committed = include_str!("walkthrough.md");

    let rendered = render_markdown();

    assert!(
        committed == rendered,
        "tests/api/walkthrough.md is stale (rewrite it with \
         `cargo test --test api write_walkthrough_md -- --ignored`); it should read:\n{rendered}"
    );
}

#[test]
#[ignore = "rewrites tests/api/walkthrough.md: cargo test --test api write_walkthrough_md -- --ignored"]
fn write_walkthrough_md() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/walkthrough.md");
    std::fs::write(&path, render_markdown()).expect("tests/api/walkthrough.md is writable");
}

#[test]
fn the_readme_shows_the_walkthrough_verbatim() {
    let readme = include_str!("../../README.md");
    let rendered = render_markdown();
    let steps = rendered.split("\n```console\n").skip(1);

    for step in steps {
        let block = format!("```console\n{}", step.trim_end());
        assert!(
            readme.contains(&block),
            "README.md lacks this walkthrough step:\n{block}"
        );
    }
}
