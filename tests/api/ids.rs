//! Ids: accepted as a JSON number or a decimal string, written as strings, and the
//! whole range 1..=2^63-1 works.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    ID_REASON, assert_done, assert_json, assert_problem, invalid, read_states, spawn_app, state,
};

const MAX: u64 = 9_223_372_036_854_775_807;

#[tokio::test]
async fn ids_in_bodies_may_be_numbers_or_strings() {
    let app = spawn_app().await;

    let created = app
        .post(
            "/v1/channels/10/messages",
            Some(json!({ "message_id": 100, "author_id": "1", "mentions": [2, "3"] })),
        )
        .await;
    let acked = app
        .post(
            "/v1/users/3/channels/10/ack",
            Some(json!({ "message_id": 100 })),
        )
        .await;

    assert_done(&created);
    assert_json(&acked, StatusCode::OK, &state(10, 100, 100, 0, 0));
    assert_json(
        &app.read_state(2, 10).await,
        StatusCode::OK,
        &state(10, 0, 100, 1, 1),
    );
    assert_json(
        &app.read_state(1, 10).await,
        StatusCode::OK,
        &state(10, 100, 100, 0, 0),
    );
}

#[tokio::test]
async fn ids_are_written_as_strings_in_responses() {
    let app = spawn_app().await;
    app.message_ok(10, 100, Some(1), &[2]).await;

    let (_, _, body) = app.read_state(2, 10).await;

    for field in ["channel_id", "last_read_message_id", "last_message_id"] {
        assert!(body[field].is_string(), "{field} in {body}");
    }
}

#[tokio::test]
async fn the_largest_id_works_in_paths_and_bodies() {
    let app = spawn_app().await;

    let created = app
        .post(
            &format!("/v1/channels/{MAX}/messages"),
            Some(json!({ "message_id": MAX, "mentions": [MAX] })),
        )
        .await;
    let mentioned = app.read_state(MAX, MAX).await;
    let acked = app
        .post(
            &format!("/v1/users/{MAX}/channels/{MAX}/ack"),
            Some(json!({ "message_id": MAX.to_string() })),
        )
        .await;
    let listed = app.read_states(MAX, &format!("channels={MAX}")).await;
    let readers = app.readers(MAX, MAX, &format!("after={}", MAX - 1)).await;

    assert_done(&created);
    assert_json(&mentioned, StatusCode::OK, &state(MAX, 0, MAX, 1, 1));
    assert_json(&acked, StatusCode::OK, &state(MAX, MAX, MAX, 0, 0));
    assert_json(
        &listed,
        StatusCode::OK,
        &read_states(&[state(MAX, MAX, MAX, 0, 0)]),
    );
    assert_json(
        &readers,
        StatusCode::OK,
        &json!({ "readers": [MAX.to_string()], "next": null }),
    );
}

#[tokio::test]
async fn an_id_one_above_the_largest_is_rejected_as_a_number_or_a_string() {
    let app = spawn_app().await;

    let number = app
        .post(
            "/v1/users/1/channels/10/ack",
            Some(json!({ "message_id": MAX + 1 })),
        )
        .await;
    let string = app
        .post(
            "/v1/users/1/channels/10/ack",
            Some(json!({ "message_id": (MAX + 1).to_string() })),
        )
        .await;

    assert_problem(&number, &invalid("message_id", ID_REASON));
    assert_problem(&string, &invalid("message_id", ID_REASON));
    assert_json(
        &app.read_states(1, "").await,
        StatusCode::OK,
        &read_states(&[]),
    );
}

#[tokio::test]
async fn ids_have_one_spelling_leading_zeros_and_fractions_are_refused() {
    let app = spawn_app().await;
    app.message_ok(10, 100, None, &[]).await;

    let padded_path = app.get("/v1/users/007/summary", None).await;
    let padded_body = app
        .post(
            "/v1/users/7/channels/10/ack",
            Some(json!({ "message_id": "0100" })),
        )
        .await;
    let fraction = app
        .post(
            "/v1/users/7/channels/10/ack",
            Some(json!({ "message_id": 100.0 })),
        )
        .await;
    let padded_position = app
        .join(7, 10, Some(json!({ "last_read_message_id": "00" })))
        .await;
    let zero_position = app
        .join(7, 10, Some(json!({ "last_read_message_id": "0" })))
        .await;

    assert_eq!(padded_path.0, StatusCode::BAD_REQUEST, "{}", padded_path.2);
    assert_eq!(padded_path.2["field"], "user_id");
    assert_eq!(padded_body.0, StatusCode::BAD_REQUEST, "{}", padded_body.2);
    assert_eq!(padded_body.2["field"], "message_id");
    assert_eq!(fraction.0, StatusCode::BAD_REQUEST, "{}", fraction.2);
    assert_eq!(
        padded_position.0,
        StatusCode::BAD_REQUEST,
        "{}",
        padded_position.2
    );
    assert_eq!(padded_position.2["field"], "last_read_message_id");
    assert_eq!(zero_position.0, StatusCode::OK, "{}", zero_position.2);
}

#[tokio::test]
async fn the_openapi_document_gives_path_ids_their_exact_pattern() {
    let app = spawn_app().await;
    let (_, _, doc) = app.get("/openapi.json", None).await;
    let mut seen = 0;

    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                if parameter["in"] == "path" {
                    seen += 1;
                    // Exactly the canonical decimals of 1..=2^63-1 (the library's
                    // unit tests check the pattern against that range).
                    assert_eq!(
                        parameter["schema"],
                        json!({ "type": "string", "pattern": readstate::api::ids::ID_PATTERN }),
                        "{method} {path}"
                    );
                }
            }
        }
    }

    assert!(seen > 10, "{seen} path parameters");
}
