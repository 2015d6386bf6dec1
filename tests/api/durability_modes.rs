//! Both durability modes keep every acknowledged write across a graceful shutdown.

use readstate::config::Durability;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    TestApp, assert_json, assert_problem, problem, read_states, spawn_app_with, state, summary,
};

/// A little of everything: messages, a mention, an ack, a mark unread, a join, a
/// leave, a deleted message and a deleted channel.
async fn write_some(app: &TestApp) {
    app.message_ok(10, 1, Some(1), &[2, 3]).await;
    app.message_ok(10, 2, Some(1), &[2]).await;
    app.message_ok(10, 3, Some(1), &[]).await;
    app.message_ok(20, 7, Some(4), &[2]).await;
    app.message_ok(30, 9, Some(4), &[2]).await;
    app.ack(3, 10, 3).await;
    app.unread(3, 10, 2).await;
    app.join(5, 10, Some(json!({ "last_read_message_id": "1" })))
        .await;
    app.leave(4, 20).await;
    app.delete_message(10, 3).await;
    app.delete_channel(30).await;
}

async fn assert_written(app: &TestApp) {
    assert_json(
        &app.read_states(2, "").await,
        StatusCode::OK,
        &read_states(&[state(10, 0, 2, 2, 2), state(20, 0, 7, 1, 1)]),
    );
    assert_json(
        &app.read_state(3, 10).await,
        StatusCode::OK,
        &state(10, 1, 2, 1, 0),
    );
    assert_json(
        &app.read_state(5, 10).await,
        StatusCode::OK,
        &state(10, 1, 2, 1, 0),
    );
    assert_json(
        &app.read_state(1, 10).await,
        StatusCode::OK,
        &state(10, 3, 2, 0, 0),
    );
    assert_problem(
        &app.read_state(4, 20).await,
        &problem("not-found", "read state not found"),
    );
    assert_json(
        &app.read_states(4, "").await,
        StatusCode::OK,
        &read_states(&[]),
    );
    assert_json(&app.summary(2).await, StatusCode::OK, &summary(2, 3));
}

#[tokio::test]
async fn async_writes_are_visible_at_once_and_a_graceful_shutdown_flushes_them() {
    let mut app = spawn_app_with(|s| {
        s.storage.durability = Durability::Async;
        // Nothing would be flushed by the interval within the test: only the shutdown can.
        s.storage.flush_interval_ms = 600_000;
    })
    .await;
    write_some(&app).await;
    assert_written(&app).await;

    app.restart().await;

    assert_written(&app).await;
}

#[tokio::test]
async fn sync_writes_survive_a_graceful_shutdown() {
    let mut app = spawn_app_with(|s| s.storage.durability = Durability::Sync).await;
    write_some(&app).await;
    assert_written(&app).await;

    app.restart().await;

    assert_written(&app).await;
}
