//! `PUT` (join) and `DELETE` (leave) `/v1/users/{user_id}/channels/{channel_id}`.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    TestApp, assert_done, assert_json, assert_problem, problem, read_states, spawn_app, state,
};

/// Channel 10 with messages 1 (mentioning user 2), 2 and 3, without authors.
async fn channel_with_three_messages() -> TestApp {
    let app = spawn_app().await;
    app.message_ok(10, 1, None, &[2]).await;
    app.message_ok(10, 2, None, &[]).await;
    app.message_ok(10, 3, None, &[]).await;
    app
}

#[tokio::test]
async fn join_starts_at_the_channel_head() {
    let app = channel_with_three_messages().await;

    let reply = app.join(5, 10, None).await;

    assert_json(&reply, StatusCode::OK, &state(10, 3, 3, 0, 0));
    assert_json(
        &app.read_state(5, 10).await,
        StatusCode::OK,
        &state(10, 3, 3, 0, 0),
    );
}

#[tokio::test]
async fn join_with_a_read_position_starts_there() {
    let app = channel_with_three_messages().await;

    let reply = app
        .join(5, 10, Some(json!({ "last_read_message_id": "1" })))
        .await;

    assert_json(&reply, StatusCode::OK, &state(10, 1, 3, 2, 0));
}

#[tokio::test]
async fn join_at_read_position_zero_has_everything_unread() {
    let app = channel_with_three_messages().await;

    let reply = app
        .join(5, 10, Some(json!({ "last_read_message_id": 0 })))
        .await;

    assert_json(&reply, StatusCode::OK, &state(10, 0, 3, 3, 0));
}

#[tokio::test]
async fn join_with_an_empty_object_starts_at_the_channel_head() {
    let app = channel_with_three_messages().await;

    let reply = app.join(5, 10, Some(json!({}))).await;

    assert_json(&reply, StatusCode::OK, &state(10, 3, 3, 0, 0));
}

#[tokio::test]
async fn join_with_a_json_null_body_starts_at_the_channel_head() {
    // The OpenAPI document says the body is nullable: `null` is no body.
    let app = channel_with_three_messages().await;

    let reply = app.join(5, 10, Some(serde_json::Value::Null)).await;

    assert_json(&reply, StatusCode::OK, &state(10, 3, 3, 0, 0));
}

#[tokio::test]
async fn join_is_a_no_op_when_the_read_state_exists() {
    let app = channel_with_three_messages().await;

    let reply = app
        .join(2, 10, Some(json!({ "last_read_message_id": "3" })))
        .await;

    assert_json(&reply, StatusCode::OK, &state(10, 0, 3, 3, 1));
}

#[tokio::test]
async fn join_of_a_channel_without_messages_starts_at_zero() {
    let app = spawn_app().await;

    let reply = app.join(5, 99, None).await;

    assert_json(&reply, StatusCode::OK, &state(99, 0, 0, 0, 0));
}

#[tokio::test]
async fn leave_removes_the_read_state() {
    let app = channel_with_three_messages().await;

    let reply = app.leave(2, 10).await;

    assert_done(&reply);
    assert_problem(
        &app.read_state(2, 10).await,
        &problem("not-found", "read state not found"),
    );
    assert_json(
        &app.read_states(2, "").await,
        StatusCode::OK,
        &read_states(&[]),
    );
}

#[tokio::test]
async fn leave_of_a_missing_read_state_is_not_an_error() {
    let app = channel_with_three_messages().await;

    let reply = app.leave(5, 10).await;

    assert_done(&reply);
    assert_problem(
        &app.read_state(5, 10).await,
        &problem("not-found", "read state not found"),
    );
}

#[tokio::test]
async fn join_after_leave_starts_at_the_head_again() {
    let app = channel_with_three_messages().await;
    app.leave(2, 10).await;

    let reply = app.join(2, 10, None).await;

    assert_json(&reply, StatusCode::OK, &state(10, 3, 3, 0, 0));
}
