//! `DELETE /v1/channels/{channel_id}/messages/{message_id}` and `DELETE /v1/channels/{channel_id}`.

use reqwest::StatusCode;

use crate::helpers::{
    assert_done, assert_json, assert_problem, problem, read_states, spawn_app, state, summary,
};

#[tokio::test]
async fn a_deleted_message_stops_counting_as_unread_and_as_a_mention_for_everyone() {
    let app = spawn_app().await;
    app.message_ok(10, 1, Some(1), &[2, 3]).await;
    app.message_ok(10, 2, Some(1), &[3]).await;

    let reply = app.delete_message(10, 1).await;

    assert_done(&reply);
    assert_json(
        &app.read_state(2, 10).await,
        StatusCode::OK,
        &state(10, 0, 2, 1, 0),
    );
    assert_json(
        &app.read_state(3, 10).await,
        StatusCode::OK,
        &state(10, 0, 2, 1, 1),
    );
    assert_json(
        &app.read_state(1, 10).await,
        StatusCode::OK,
        &state(10, 2, 2, 0, 0),
    );
    assert_json(&app.summary(3).await, StatusCode::OK, &summary(1, 1));
}

#[tokio::test]
async fn deleting_the_newest_message_moves_the_head_back() {
    let app = spawn_app().await;
    app.message_ok(10, 1, Some(1), &[2]).await;
    app.message_ok(10, 2, Some(1), &[2]).await;

    app.delete_message(10, 2).await;

    assert_json(
        &app.read_state(2, 10).await,
        StatusCode::OK,
        &state(10, 0, 1, 1, 1),
    );
}

#[tokio::test]
async fn deleting_a_message_twice_is_harmless() {
    let app = spawn_app().await;
    app.message_ok(10, 1, Some(1), &[2]).await;
    app.message_ok(10, 2, Some(1), &[]).await;
    app.delete_message(10, 1).await;

    let reply = app.delete_message(10, 1).await;

    assert_done(&reply);
    assert_json(
        &app.read_state(2, 10).await,
        StatusCode::OK,
        &state(10, 0, 2, 1, 0),
    );
}

#[tokio::test]
async fn deleting_a_message_never_seen_is_harmless() {
    let app = spawn_app().await;
    app.message_ok(10, 1, Some(1), &[2]).await;

    let reply = app.delete_message(10, 7).await;

    assert_done(&reply);
    assert_json(
        &app.read_state(2, 10).await,
        StatusCode::OK,
        &state(10, 0, 1, 1, 1),
    );
}

#[tokio::test]
async fn deleting_a_channel_removes_every_read_state_in_it() {
    let app = spawn_app().await;
    app.message_ok(10, 1, Some(1), &[2, 3]).await;
    app.message_ok(20, 5, Some(4), &[2]).await;

    let reply = app.delete_channel(10).await;

    assert_done(&reply);
    for user in [1, 2, 3] {
        assert_problem(
            &app.read_state(user, 10).await,
            &problem("not-found", "read state not found"),
        );
    }
    assert_json(
        &app.read_states(2, "").await,
        StatusCode::OK,
        &read_states(&[state(20, 0, 5, 1, 1)]),
    );
    assert_json(
        &app.read_states(1, "").await,
        StatusCode::OK,
        &read_states(&[]),
    );
}

#[tokio::test]
async fn a_message_after_a_channel_delete_starts_the_channel_afresh() {
    let app = spawn_app().await;
    app.message_ok(10, 1, Some(1), &[2]).await;
    app.message_ok(10, 2, Some(1), &[2]).await;
    app.delete_channel(10).await;

    app.message_ok(10, 3, Some(1), &[2]).await;

    assert_json(
        &app.read_state(2, 10).await,
        StatusCode::OK,
        &state(10, 0, 3, 1, 1),
    );
    assert_json(
        &app.read_state(1, 10).await,
        StatusCode::OK,
        &state(10, 3, 3, 0, 0),
    );
}

#[tokio::test]
async fn deleting_a_channel_twice_is_harmless() {
    let app = spawn_app().await;
    app.message_ok(10, 1, Some(1), &[2]).await;
    app.delete_channel(10).await;

    let reply = app.delete_channel(10).await;

    assert_done(&reply);
    assert_problem(
        &app.read_state(2, 10).await,
        &problem("not-found", "read state not found"),
    );
}
