//! `POST /v1/batch`: many writes in one request, applied in order, each with its own result.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    ID_REASON, assert_json, assert_problem, invalid, problem, read_states, spawn_app,
    spawn_app_with, state,
};

fn ok() -> Value {
    json!({ "ok": true })
}

fn failed(error: Value) -> Value {
    json!({ "ok": false, "error": error })
}

fn results(entries: &[Value]) -> Value {
    json!({ "results": entries })
}

#[tokio::test]
async fn a_batch_applies_its_ops_in_order_each_with_its_own_result() {
    let app = spawn_app().await;

    let reply = app
        .batch(json!({ "ops": [
            { "op": "message_created", "channel_id": "10", "message_id": "1", "author_id": "1", "mentions": ["2"] },
            { "op": "ack", "user_id": "2", "channel_id": "10", "message_id": "1" },
            { "op": "message_created", "channel_id": "10", "message_id": "2", "author_id": "1" },
            { "op": "join", "user_id": "3", "channel_id": "10" },
            { "op": "unread", "user_id": "2", "channel_id": "10", "message_id": "1" },
            { "op": "join", "user_id": "4", "channel_id": "10", "last_read_message_id": "1" },
        ] }))
        .await;

    assert_json(
        &reply,
        StatusCode::OK,
        &results(&[ok(), ok(), ok(), ok(), ok(), ok()]),
    );
    assert_json(
        &app.read_state(2, 10).await,
        StatusCode::OK,
        &state(10, 0, 2, 2, 1),
    );
    assert_json(
        &app.read_state(3, 10).await,
        StatusCode::OK,
        &state(10, 2, 2, 0, 0),
    );
    assert_json(
        &app.read_state(4, 10).await,
        StatusCode::OK,
        &state(10, 1, 2, 1, 0),
    );
}

#[tokio::test]
async fn every_kind_of_op_can_be_batched() {
    let app = spawn_app().await;
    app.message_ok(10, 1, Some(1), &[2]).await;
    app.message_ok(10, 2, Some(1), &[2]).await;
    app.message_ok(20, 3, Some(1), &[2]).await;
    app.message_ok(30, 4, Some(1), &[2]).await;

    let reply = app
        .batch(json!({ "ops": [
            { "op": "message_deleted", "channel_id": 10, "message_id": 2 },
            { "op": "ack_all", "user_id": 1 },
            { "op": "leave", "user_id": 2, "channel_id": 20 },
            { "op": "delete_channel", "channel_id": 30 },
            { "op": "ack_all", "user_id": 3 },
        ] }))
        .await;

    assert_json(
        &reply,
        StatusCode::OK,
        &results(&[ok(), ok(), ok(), ok(), ok()]),
    );
    assert_json(
        &app.read_states(2, "").await,
        StatusCode::OK,
        &read_states(&[state(10, 0, 1, 1, 1)]),
    );
    assert_json(
        &app.read_states(1, "").await,
        StatusCode::OK,
        &read_states(&[state(10, 2, 1, 0, 0), state(20, 3, 3, 0, 0)]),
    );
}

#[tokio::test]
async fn a_bad_op_fails_alone_naming_its_field_and_the_others_apply() {
    let app = spawn_app().await;

    let reply = app
        .batch(json!({ "ops": [
            { "op": "message_created", "channel_id": "10", "message_id": "1", "mentions": ["2"] },
            { "op": "ack", "user_id": "2", "channel_id": "0", "message_id": "1" },
            { "op": "message_created", "channel_id": "10", "message_id": "2", "mentions": ["2"] },
        ] }))
        .await;

    assert_json(
        &reply,
        StatusCode::OK,
        &results(&[ok(), failed(invalid("ops[1].channel_id", ID_REASON)), ok()]),
    );
    assert_json(
        &app.read_states(2, "").await,
        StatusCode::OK,
        &read_states(&[state(10, 0, 2, 2, 2)]),
    );
}

#[tokio::test]
async fn an_op_missing_a_field_fails_alone_naming_it() {
    let app = spawn_app().await;

    let reply = app
        .batch(json!({ "ops": [
            { "op": "ack", "user_id": "2", "message_id": "1" },
            { "op": "join", "user_id": "2", "channel_id": "10" },
        ] }))
        .await;

    assert_json(
        &reply,
        StatusCode::OK,
        &results(&[failed(invalid("ops[0].channel_id", "required")), ok()]),
    );
    assert_json(
        &app.read_states(2, "").await,
        StatusCode::OK,
        &read_states(&[state(10, 0, 0, 0, 0)]),
    );
}

#[tokio::test]
async fn an_op_with_too_many_mentions_fails_alone_naming_mentions() {
    let app = spawn_app_with(|s| s.limits.max_mentions = 1).await;

    let reply = app
        .batch(json!({ "ops": [
            { "op": "message_created", "channel_id": "10", "message_id": "1", "mentions": ["2", "3"] },
            { "op": "message_created", "channel_id": "10", "message_id": "2", "mentions": ["2"] },
        ] }))
        .await;

    assert_json(
        &reply,
        StatusCode::OK,
        &results(&[failed(invalid("ops[0].mentions", "at most 1 users")), ok()]),
    );
    assert_json(
        &app.read_states(2, "").await,
        StatusCode::OK,
        &read_states(&[state(10, 0, 2, 1, 1)]),
    );
    assert_problem(
        &app.read_state(3, 10).await,
        &problem("not-found", "read state not found"),
    );
}

#[tokio::test]
async fn a_body_that_is_not_a_batch_is_rejected() {
    let app = spawn_app().await;

    let not_a_list = app.batch(json!({ "ops": 5 })).await;
    let no_ops = app.batch(json!({})).await;

    assert_eq!(not_a_list.0, StatusCode::BAD_REQUEST, "{}", not_a_list.2);
    assert_eq!(
        not_a_list.2["type"],
        "https://readstate.dev/problems/invalid-input"
    );
    assert_eq!(not_a_list.2["field"], "ops");
    assert_problem(&no_ops, &invalid("ops", "required"));
}

#[tokio::test]
async fn a_batch_over_the_op_limit_is_rejected_and_applies_nothing() {
    let app = spawn_app_with(|s| s.limits.max_batch_ops = 2).await;
    let op = |m: u64| json!({ "op": "message_created", "channel_id": "10", "message_id": m.to_string(), "mentions": ["2"] });

    let reply = app.batch(json!({ "ops": [op(1), op(2), op(3)] })).await;

    assert_problem(&reply, &invalid("ops", "at most 2 ops"));
    assert_json(
        &app.read_states(2, "").await,
        StatusCode::OK,
        &read_states(&[]),
    );
}

#[tokio::test]
async fn an_empty_batch_answers_no_results() {
    let app = spawn_app().await;

    let reply = app.batch(json!({ "ops": [] })).await;

    assert_json(&reply, StatusCode::OK, &results(&[]));
}
