//! `GET /v1/channels/{channel_id}/messages/{message_id}/readers` (read receipts).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_json, spawn_app};

fn readers(users: &[u64], next: Option<u64>) -> Value {
    json!({
        "readers": users.iter().map(u64::to_string).collect::<Vec<_>>(),
        "next": next.map(|n| n.to_string()),
    })
}

/// Channel 10 with messages 1..=5 and users 1..=5 who read up to message 5.
async fn five_readers() -> TestApp {
    let app = spawn_app().await;
    for message in 1..=5 {
        app.message_ok(10, message, None, &[]).await;
    }
    for user in [4, 2, 5, 1, 3] {
        app.ack(user, 10, 5).await;
    }
    app
}

#[tokio::test]
async fn readers_are_the_users_at_or_past_the_message_sorted_by_user_id() {
    let app = spawn_app().await;
    for message in 1..=5 {
        app.message_ok(10, message, None, &[]).await;
    }
    for (user, message) in [(5, 2), (9, 5), (3, 3), (7, 4)] {
        app.ack(user, 10, message).await;
    }

    let reply = app.readers(10, 3, "").await;

    assert_json(&reply, StatusCode::OK, &readers(&[3, 7, 9], None));
}

#[tokio::test]
async fn readers_page_with_limit_and_after_until_next_is_null() {
    let app = five_readers().await;

    let first = app.readers(10, 3, "limit=2").await;
    let second = app.readers(10, 3, "limit=2&after=2").await;
    let last = app.readers(10, 3, "limit=2&after=4").await;

    assert_json(&first, StatusCode::OK, &readers(&[1, 2], Some(2)));
    assert_json(&second, StatusCode::OK, &readers(&[3, 4], Some(4)));
    assert_json(&last, StatusCode::OK, &readers(&[5], None));
}

#[tokio::test]
async fn a_message_nobody_has_read_has_no_readers() {
    let app = spawn_app().await;
    app.message_ok(10, 1, Some(1), &[2]).await;
    app.message_ok(10, 2, None, &[]).await;

    let reply = app.readers(10, 2, "").await;

    assert_json(&reply, StatusCode::OK, &readers(&[], None));
}

#[tokio::test]
async fn a_user_who_left_is_no_longer_a_reader() {
    let app = five_readers().await;

    app.leave(3, 10).await;

    assert_json(
        &app.readers(10, 5, "").await,
        StatusCode::OK,
        &readers(&[1, 2, 4, 5], None),
    );
}

#[tokio::test]
async fn a_mark_unread_before_the_message_removes_the_reader() {
    let app = five_readers().await;

    app.unread(2, 10, 4).await;

    assert_json(
        &app.readers(10, 4, "").await,
        StatusCode::OK,
        &readers(&[1, 3, 4, 5], None),
    );
}
