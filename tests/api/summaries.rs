//! `GET /v1/users/{user_id}/summary` and `POST /v1/summaries`.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_json, assert_problem, invalid, spawn_app, spawn_app_with, summary};

#[tokio::test]
async fn a_summary_counts_unread_channels_and_sums_mentions() {
    let app = spawn_app().await;
    app.message_ok(10, 1, Some(1), &[2]).await;
    app.message_ok(10, 2, Some(1), &[2]).await;
    app.message_ok(20, 3, Some(1), &[]).await;
    app.join(2, 20, Some(json!({ "last_read_message_id": "0" })))
        .await;
    app.message_ok(30, 4, Some(1), &[2]).await;
    app.ack(2, 30, 4).await;

    let reply = app.summary(2).await;

    assert_json(&reply, StatusCode::OK, &summary(2, 2));
}

#[tokio::test]
async fn the_summary_of_a_user_without_read_states_is_zero() {
    let app = spawn_app().await;

    let reply = app.summary(9).await;

    assert_json(&reply, StatusCode::OK, &summary(0, 0));
}

#[tokio::test]
async fn a_summary_sums_the_capped_mention_counts() {
    let app = spawn_app_with(|s| s.state.mention_cap = 2).await;
    for message in 1..=3 {
        app.message_ok(10, message, Some(1), &[2]).await;
    }
    app.message_ok(20, 1, Some(1), &[2]).await;

    let reply = app.summary(2).await;

    assert_json(&reply, StatusCode::OK, &summary(2, 3));
}

#[tokio::test]
async fn summaries_answers_each_listed_user_keyed_by_id() {
    let app = spawn_app().await;
    app.message_ok(10, 1, Some(1), &[2]).await;
    app.message_ok(20, 2, Some(1), &[2, 3]).await;

    let reply = app
        .summaries(json!({ "user_ids": ["1", 2, "3", 99] }))
        .await;

    assert_json(
        &reply,
        StatusCode::OK,
        &json!({
            "summaries": {
                "1": { "unread_channels": 0, "unread_threads": 0, "mentions": 0 },
                "2": { "unread_channels": 2, "unread_threads": 0, "mentions": 2 },
                "3": { "unread_channels": 1, "unread_threads": 0, "mentions": 1 },
                "99": { "unread_channels": 0, "unread_threads": 0, "mentions": 0 },
            }
        }),
    );
}

#[tokio::test]
async fn summaries_of_no_users_is_an_empty_object() {
    let app = spawn_app().await;

    let reply = app.summaries(json!({ "user_ids": [] })).await;

    assert_json(&reply, StatusCode::OK, &json!({ "summaries": {} }));
}

#[tokio::test]
async fn summaries_of_too_many_users_is_rejected_naming_user_ids() {
    let app = spawn_app_with(|s| s.limits.max_summary_users = 2).await;

    let reply = app.summaries(json!({ "user_ids": [1, 2, 3] })).await;

    assert_problem(&reply, &invalid("user_ids", "at most 2 users"));
}
