//! `POST /v1/users/{user_id}/channels/{channel_id}/unread` (mark unread).

use reqwest::StatusCode;

use crate::helpers::{TestApp, assert_json, spawn_app, state, summary};

/// Channel 10 with messages 1 (mentioning user 2), 2 and 3, all read by user 2.
async fn all_read() -> TestApp {
    let app = spawn_app().await;
    app.message_ok(10, 1, Some(1), &[2]).await;
    app.message_ok(10, 2, Some(1), &[]).await;
    app.message_ok(10, 3, Some(1), &[]).await;
    assert_json(
        &app.ack(2, 10, 3).await,
        StatusCode::OK,
        &state(10, 3, 3, 0, 0),
    );
    app
}

#[tokio::test]
async fn mark_unread_brings_back_the_message_and_its_mention() {
    let app = all_read().await;

    let reply = app.unread(2, 10, 1).await;

    assert_json(&reply, StatusCode::OK, &state(10, 0, 3, 3, 1));
    assert_json(
        &app.read_state(2, 10).await,
        StatusCode::OK,
        &state(10, 0, 3, 3, 1),
    );
    assert_json(&app.summary(2).await, StatusCode::OK, &summary(1, 1));
}

#[tokio::test]
async fn mark_unread_leaves_earlier_messages_read() {
    let app = all_read().await;

    let reply = app.unread(2, 10, 3).await;

    assert_json(&reply, StatusCode::OK, &state(10, 2, 3, 1, 0));
}

#[tokio::test]
async fn marking_the_same_message_unread_twice_is_a_no_op() {
    let app = all_read().await;
    app.unread(2, 10, 2).await;

    let reply = app.unread(2, 10, 2).await;

    assert_json(&reply, StatusCode::OK, &state(10, 1, 3, 2, 0));
}

#[tokio::test]
async fn an_ack_after_a_mark_unread_reads_again() {
    let app = all_read().await;
    app.unread(2, 10, 1).await;

    let reply = app.ack(2, 10, 3).await;

    assert_json(&reply, StatusCode::OK, &state(10, 3, 3, 0, 0));
}

#[tokio::test]
async fn mark_unread_creates_a_missing_read_state() {
    let app = all_read().await;

    let reply = app.unread(5, 10, 3).await;

    assert_json(&reply, StatusCode::OK, &state(10, 2, 3, 1, 0));
}
