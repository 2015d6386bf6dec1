//! `POST /v1/channels/{channel_id}/messages` and what it does to read states.

use reqwest::StatusCode;

use crate::helpers::{assert_done, assert_json, assert_problem, problem, spawn_app, state};

#[tokio::test]
async fn creating_a_message_answers_no_content() {
    let app = spawn_app().await;

    let reply = app.message(10, 100, Some(1), &[2]).await;

    assert_eq!(reply.0, StatusCode::NO_CONTENT, "{}", reply.2);
    assert_eq!(reply.2, serde_json::Value::Null);
}

#[tokio::test]
async fn the_author_has_read_the_message_they_wrote() {
    let app = spawn_app().await;

    app.message_ok(10, 100, Some(1), &[]).await;

    assert_json(
        &app.read_state(1, 10).await,
        StatusCode::OK,
        &state(10, 100, 100, 0, 0),
    );
}

#[tokio::test]
async fn a_mentioned_user_gets_the_message_unread_and_mentioned() {
    let app = spawn_app().await;

    app.message_ok(10, 100, Some(1), &[2, 3]).await;

    assert_json(
        &app.read_state(2, 10).await,
        StatusCode::OK,
        &state(10, 0, 100, 1, 1),
    );
    assert_json(
        &app.read_state(3, 10).await,
        StatusCode::OK,
        &state(10, 0, 100, 1, 1),
    );
}

#[tokio::test]
async fn a_message_without_an_author_only_moves_the_channel_head() {
    let app = spawn_app().await;
    assert_json(
        &app.join(5, 10, None).await,
        StatusCode::OK,
        &state(10, 0, 0, 0, 0),
    );

    app.message_ok(10, 100, None, &[]).await;

    assert_json(
        &app.read_state(5, 10).await,
        StatusCode::OK,
        &state(10, 0, 100, 1, 0),
    );
    assert_problem(
        &app.read_state(1, 10).await,
        &problem("not-found", "read state not found"),
    );
}

#[tokio::test]
async fn an_author_mentioning_themselves_gets_no_mention() {
    let app = spawn_app().await;

    app.message_ok(10, 100, Some(1), &[1]).await;

    assert_json(
        &app.read_state(1, 10).await,
        StatusCode::OK,
        &state(10, 100, 100, 0, 0),
    );
}

#[tokio::test]
async fn a_user_mentioned_twice_in_one_message_has_one_mention() {
    let app = spawn_app().await;

    app.message_ok(10, 100, Some(1), &[2, 2]).await;

    assert_json(
        &app.read_state(2, 10).await,
        StatusCode::OK,
        &state(10, 0, 100, 1, 1),
    );
}

#[tokio::test]
async fn the_same_message_created_twice_counts_once() {
    let app = spawn_app().await;
    app.message_ok(10, 100, Some(1), &[2]).await;

    let again = app.message(10, 100, Some(1), &[2]).await;

    assert_done(&again);
    assert_json(
        &app.read_state(2, 10).await,
        StatusCode::OK,
        &state(10, 0, 100, 1, 1),
    );
}

#[tokio::test]
async fn messages_arriving_out_of_order_count_the_same() {
    let app = spawn_app().await;

    for message in [103, 101, 102] {
        app.message_ok(10, message, None, &[2]).await;
    }

    assert_json(
        &app.read_state(2, 10).await,
        StatusCode::OK,
        &state(10, 0, 103, 3, 3),
    );
}

#[tokio::test]
async fn a_late_create_of_a_deleted_message_does_not_bring_it_back() {
    let app = spawn_app().await;
    app.message_ok(10, 100, Some(1), &[2]).await;
    assert_done(&app.delete_message(10, 101).await);

    app.message_ok(10, 101, Some(1), &[2]).await;

    assert_json(
        &app.read_state(2, 10).await,
        StatusCode::OK,
        &state(10, 0, 100, 1, 1),
    );
}
