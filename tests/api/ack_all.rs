//! `POST /v1/users/{user_id}/ack-all` ("mark all as read").

use reqwest::StatusCode;

use crate::helpers::{assert_json, read_states, spawn_app, state, summary};

#[tokio::test]
async fn ack_all_moves_every_read_state_to_its_channel_head_sorted_by_channel_id() {
    let app = spawn_app().await;
    for channel in [30, 10, 20] {
        app.message_ok(channel, 1, Some(1), &[2]).await;
        app.message_ok(channel, channel, Some(1), &[]).await;
    }

    let reply = app.ack_all(2).await;

    assert_json(
        &reply,
        StatusCode::OK,
        &read_states(&[
            state(10, 10, 10, 0, 0),
            state(20, 20, 20, 0, 0),
            state(30, 30, 30, 0, 0),
        ]),
    );
    assert_json(&app.summary(2).await, StatusCode::OK, &summary(0, 0));
}

#[tokio::test]
async fn ack_all_never_moves_a_read_position_backwards() {
    let app = spawn_app().await;
    app.message_ok(10, 1, Some(1), &[2]).await;
    app.message_ok(20, 2, Some(1), &[2]).await;
    app.ack(2, 10, 50).await;

    let reply = app.ack_all(2).await;

    assert_json(
        &reply,
        StatusCode::OK,
        &read_states(&[state(10, 50, 1, 0, 0), state(20, 2, 2, 0, 0)]),
    );
}

#[tokio::test]
async fn ack_all_leaves_a_channel_without_messages_where_it_is() {
    let app = spawn_app().await;
    app.join(2, 40, None).await;
    app.message_ok(10, 3, Some(1), &[2]).await;

    let reply = app.ack_all(2).await;

    assert_json(
        &reply,
        StatusCode::OK,
        &read_states(&[state(10, 3, 3, 0, 0), state(40, 0, 0, 0, 0)]),
    );
}

#[tokio::test]
async fn ack_all_of_a_user_without_read_states_answers_an_empty_list() {
    let app = spawn_app().await;

    let reply = app.ack_all(9).await;

    assert_json(&reply, StatusCode::OK, &read_states(&[]));
}

#[tokio::test]
async fn ack_all_touches_only_that_user() {
    let app = spawn_app().await;
    app.message_ok(10, 1, Some(1), &[2, 3]).await;

    app.ack_all(2).await;

    assert_json(
        &app.read_state(3, 10).await,
        StatusCode::OK,
        &state(10, 0, 1, 1, 1),
    );
}
