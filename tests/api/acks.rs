//! `POST /v1/users/{user_id}/channels/{channel_id}/ack`.

use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, assert_json, spawn_app, state};

/// Channel 10 with messages 1, 2 and 3 by user 1, message 1 mentioning user 2.
async fn channel_with_three_messages() -> TestApp {
    let app = spawn_app().await;
    app.message_ok(10, 1, Some(1), &[2]).await;
    app.message_ok(10, 2, Some(1), &[]).await;
    app.message_ok(10, 3, Some(1), &[]).await;
    app
}

#[tokio::test]
async fn an_ack_moves_the_read_position_and_answers_the_read_state() {
    let app = channel_with_three_messages().await;

    let reply = app.ack(2, 10, 2).await;

    assert_json(&reply, StatusCode::OK, &state(10, 2, 3, 1, 0));
    assert_json(
        &app.read_state(2, 10).await,
        StatusCode::OK,
        &state(10, 2, 3, 1, 0),
    );
}

#[tokio::test]
async fn an_ack_never_moves_the_read_position_backwards() {
    let app = channel_with_three_messages().await;
    app.ack(2, 10, 3).await;

    let reply = app.ack(2, 10, 1).await;

    assert_json(&reply, StatusCode::OK, &state(10, 3, 3, 0, 0));
}

#[tokio::test]
async fn an_ack_of_a_message_not_seen_yet_moves_there() {
    let app = channel_with_three_messages().await;

    let reply = app.ack(2, 10, 50).await;

    assert_json(&reply, StatusCode::OK, &state(10, 50, 3, 0, 0));
}

#[tokio::test]
async fn a_message_arriving_after_an_ack_past_it_is_already_read() {
    let app = channel_with_three_messages().await;
    app.ack(2, 10, 50).await;

    app.message_ok(10, 40, Some(1), &[2]).await;

    assert_json(
        &app.read_state(2, 10).await,
        StatusCode::OK,
        &state(10, 50, 40, 0, 0),
    );
}

#[tokio::test]
async fn an_ack_creates_a_missing_read_state() {
    let app = channel_with_three_messages().await;

    let reply = app.ack(5, 10, 1).await;

    assert_json(&reply, StatusCode::OK, &state(10, 1, 3, 2, 0));
}

#[tokio::test]
async fn the_same_ack_twice_changes_nothing() {
    let app = channel_with_three_messages().await;
    app.ack(2, 10, 2).await;

    let reply = app.ack(2, 10, 2).await;

    assert_json(&reply, StatusCode::OK, &state(10, 2, 3, 1, 0));
}

#[tokio::test]
async fn an_ack_stamped_before_a_mark_unread_is_ignored() {
    let app = channel_with_three_messages().await;
    app.ack(2, 10, 3).await;
    app.unread(2, 10, 2).await;
    let an_hour_ago = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
        - 3_600_000;

    let reply = app
        .post(
            "/v1/users/2/channels/10/ack",
            Some(json!({ "message_id": "3", "at": an_hour_ago })),
        )
        .await;

    assert_json(&reply, StatusCode::OK, &state(10, 1, 3, 2, 0));
    assert_json(
        &app.read_state(2, 10).await,
        StatusCode::OK,
        &state(10, 1, 3, 2, 0),
    );
}

#[tokio::test]
async fn an_ack_stamped_after_a_mark_unread_applies() {
    let app = channel_with_three_messages().await;
    app.ack(2, 10, 3).await;
    app.unread(2, 10, 2).await;
    let in_an_hour = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
        + 3_600_000;

    let reply = app
        .post(
            "/v1/users/2/channels/10/ack",
            Some(json!({ "message_id": "3", "at": in_an_hour })),
        )
        .await;

    assert_json(&reply, StatusCode::OK, &state(10, 3, 3, 0, 0));
}
