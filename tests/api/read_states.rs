//! `GET /v1/users/{user_id}/channels/{channel_id}` and `GET /v1/users/{user_id}/read-states`.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    assert_json, assert_problem, invalid, problem, read_states, spawn_app, spawn_app_with, state,
};

#[tokio::test]
async fn read_states_lists_every_channel_of_the_user_sorted_by_channel_id() {
    let app = spawn_app().await;
    app.message_ok(30, 3, Some(1), &[2]).await;
    app.message_ok(10, 1, Some(1), &[2]).await;
    app.message_ok(20, 2, Some(1), &[]).await;
    app.ack(2, 20, 1).await;

    let reply = app.read_states(2, "").await;

    assert_json(
        &reply,
        StatusCode::OK,
        &read_states(&[
            state(10, 0, 1, 1, 1),
            state(20, 1, 2, 1, 0),
            state(30, 0, 3, 1, 1),
        ]),
    );
}

#[tokio::test]
async fn read_states_filtered_by_channels_lists_only_those_the_user_has() {
    let app = spawn_app().await;
    for channel in [10, 20, 30] {
        app.message_ok(channel, 5, Some(1), &[2]).await;
    }

    let reply = app.read_states(2, "channels=30,10,40").await;

    assert_json(
        &reply,
        StatusCode::OK,
        &read_states(&[state(10, 0, 5, 1, 1), state(30, 0, 5, 1, 1)]),
    );
}

#[tokio::test]
async fn a_user_with_no_read_states_gets_an_empty_list() {
    let app = spawn_app().await;

    let reply = app.read_states(7, "").await;

    assert_json(&reply, StatusCode::OK, &read_states(&[]));
}

#[tokio::test]
async fn a_read_state_that_does_not_exist_is_not_found() {
    let app = spawn_app().await;
    app.message_ok(10, 1, Some(1), &[]).await;

    let reply = app.read_state(2, 10).await;

    assert_problem(&reply, &problem("not-found", "read state not found"));
}

#[tokio::test]
async fn a_channel_with_no_known_message_has_last_message_id_zero() {
    let app = spawn_app().await;
    app.join(2, 10, None).await;

    let reply = app.read_state(2, 10).await;

    assert_json(&reply, StatusCode::OK, &state(10, 0, 0, 0, 0));
}

#[tokio::test]
async fn counts_above_the_caps_are_capped_and_flagged() {
    let app = spawn_app_with(|s| {
        s.state.unread_cap = 3;
        s.state.mention_cap = 2;
    })
    .await;
    for message in 1..=3 {
        app.message_ok(10, message, Some(1), &[2]).await;
    }
    app.message_ok(10, 4, Some(1), &[]).await;

    let reply = app.read_state(2, 10).await;

    assert_json(
        &reply,
        StatusCode::OK,
        &json!({
            "channel_id": "10",
            "last_read_message_id": "0",
            "last_message_id": "4",
            "has_unread": true,
            "unread_count": 3,
            "unread_capped": true,
            "mention_count": 2,
            "mention_capped": true,
            // Older than the window the service keeps: not known.
            "first_unread_message_id": null,
            "muted": false,
            "level": "all",
        }),
    );
}

#[tokio::test]
async fn counts_exactly_at_the_caps_are_not_flagged() {
    let app = spawn_app_with(|s| {
        s.state.unread_cap = 3;
        s.state.mention_cap = 2;
    })
    .await;
    app.message_ok(10, 1, Some(1), &[2]).await;
    app.message_ok(10, 2, Some(1), &[2]).await;
    app.message_ok(10, 3, Some(1), &[]).await;

    let reply = app.read_state(2, 10).await;

    assert_json(&reply, StatusCode::OK, &state(10, 0, 3, 3, 2));
}

#[tokio::test]
async fn a_bad_channel_in_the_filter_is_rejected_naming_channels() {
    let app = spawn_app().await;
    app.message_ok(10, 1, Some(1), &[2]).await;

    let reply = app.read_states(2, "channels=10,x").await;

    assert_problem(
        &reply,
        &invalid(
            "channels",
            "`x` is not an id: must be an integer between 1 and 9223372036854775807",
        ),
    );
}

#[tokio::test]
async fn too_many_channels_in_the_filter_is_rejected_naming_channels() {
    let app = spawn_app_with(|s| s.limits.max_channels_filter = 2).await;

    let reply = app.read_states(2, "channels=1,2,3").await;

    assert_problem(&reply, &invalid("channels", "at most 2 channels"));
}
