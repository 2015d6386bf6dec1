//! Every error path answers a problem body naming what is wrong and changes nothing
//! (RELIABILITY.md E1/E4): after each bad request, a GET shows the state unchanged.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    ID_REASON, TestApp, assert_json, assert_problem, connect, invalid, problem, read_response,
    send, spawn_app, spawn_app_with, state,
};

/// Channel 10 with message 1 by user 1 mentioning user 2: user 2 at (0, 1 unread, 1 mention).
async fn one_mention() -> TestApp {
    let app = spawn_app().await;
    app.message_ok(10, 1, Some(1), &[2]).await;
    app
}

/// User 2's read state in channel 10 is still the one `one_mention` made.
async fn assert_unchanged(app: &TestApp) {
    assert_json(
        &app.read_state(2, 10).await,
        StatusCode::OK,
        &state(10, 0, 1, 1, 1),
    );
    assert_json(
        &app.read_state(1, 10).await,
        StatusCode::OK,
        &state(10, 1, 1, 0, 0),
    );
}

const BAD_IDS: [&str; 5] = ["0", "-1", "9223372036854775808", "abc", "1.5"];

#[tokio::test]
async fn a_bad_user_id_in_the_path_is_rejected_naming_user_id() {
    let app = one_mention().await;

    for bad in BAD_IDS {
        let reply = app
            .post(
                &format!("/v1/users/{bad}/channels/10/ack"),
                Some(json!({ "message_id": "1" })),
            )
            .await;

        assert_problem(&reply, &invalid("user_id", ID_REASON));
    }
    assert_unchanged(&app).await;
}

#[tokio::test]
async fn a_bad_channel_id_in_the_path_is_rejected_naming_channel_id() {
    let app = one_mention().await;

    for bad in BAD_IDS {
        let reply = app
            .post(
                &format!("/v1/channels/{bad}/messages"),
                Some(json!({ "message_id": "2", "mentions": ["2"] })),
            )
            .await;

        assert_problem(&reply, &invalid("channel_id", ID_REASON));
    }
    assert_unchanged(&app).await;
}

#[tokio::test]
async fn a_bad_message_id_in_the_path_is_rejected_naming_message_id() {
    let app = one_mention().await;

    for bad in BAD_IDS {
        let reply = app
            .delete(&format!("/v1/channels/10/messages/{bad}"), None)
            .await;

        assert_problem(&reply, &invalid("message_id", ID_REASON));
    }
    assert_unchanged(&app).await;
}

#[tokio::test]
async fn a_bad_id_in_a_get_path_is_rejected_naming_it() {
    let app = one_mention().await;

    let user = app.get("/v1/users/0/channels/10", None).await;
    let channel = app.get("/v1/users/2/channels/abc", None).await;
    let summary = app.get("/v1/users/9223372036854775808/summary", None).await;
    let message = app.get("/v1/channels/10/messages/-1/readers", None).await;

    assert_problem(&user, &invalid("user_id", ID_REASON));
    assert_problem(&channel, &invalid("channel_id", ID_REASON));
    assert_problem(&summary, &invalid("user_id", ID_REASON));
    assert_problem(&message, &invalid("message_id", ID_REASON));
}

#[tokio::test]
async fn a_bad_id_in_a_body_is_rejected_naming_the_field() {
    let app = one_mention().await;

    let message = app
        .post(
            "/v1/channels/10/messages",
            Some(json!({ "message_id": 0, "mentions": ["2"] })),
        )
        .await;
    let mention = app
        .post(
            "/v1/channels/10/messages",
            Some(json!({ "message_id": 2, "mentions": ["2", "x"] })),
        )
        .await;
    let author = app
        .post(
            "/v1/channels/10/messages",
            Some(json!({ "message_id": 2, "author_id": -4 })),
        )
        .await;
    let ack = app
        .post(
            "/v1/users/2/channels/10/ack",
            Some(json!({ "message_id": 1.5 })),
        )
        .await;

    assert_problem(&message, &invalid("message_id", ID_REASON));
    assert_problem(&mention, &invalid("mentions[1]", ID_REASON));
    assert_problem(&author, &invalid("author_id", ID_REASON));
    assert_problem(&ack, &invalid("message_id", ID_REASON));
    assert_unchanged(&app).await;
}

#[tokio::test]
async fn a_missing_body_field_is_rejected_naming_it() {
    let app = one_mention().await;

    let reply = app
        .post("/v1/users/2/channels/10/ack", Some(json!({})))
        .await;

    assert_problem(&reply, &invalid("message_id", "required"));
    assert_unchanged(&app).await;
}

#[tokio::test]
async fn malformed_json_is_rejected_naming_the_body() {
    let app = one_mention().await;

    let reply = app
        .raw(
            Method::POST,
            "/v1/users/2/channels/10/ack",
            &[("content-type", "application/json")],
            r#"{"message_id": "#,
        )
        .await;

    assert_problem(
        &reply,
        &invalid(
            "body",
            "malformed JSON: EOF while parsing a value at line 1 column 15",
        ),
    );
    assert_unchanged(&app).await;
}

#[tokio::test]
async fn json_nested_deeper_than_the_parser_allows_is_rejected_naming_the_body() {
    let app = one_mention().await;
    let deep = format!(r#"{{"ops": {}{}}}"#, "[".repeat(10_000), "]".repeat(10_000));

    let reply = app
        .raw(
            Method::POST,
            "/v1/batch",
            &[("content-type", "application/json")],
            deep,
        )
        .await;

    assert_problem(
        &reply,
        &invalid(
            "body",
            "malformed JSON: recursion limit exceeded at line 1 column 135",
        ),
    );
    assert_unchanged(&app).await;
}

#[tokio::test]
async fn a_deeply_nested_array_as_the_body_is_rejected_naming_the_body() {
    let app = one_mention().await;
    let deep = "[".repeat(10_000);

    let reply = app
        .raw(
            Method::POST,
            "/v1/channels/10/messages",
            &[("content-type", "application/json")],
            deep,
        )
        .await;

    assert_problem(
        &reply,
        &invalid(
            "body",
            "malformed JSON: recursion limit exceeded at line 1 column 128",
        ),
    );
    assert_unchanged(&app).await;
}

#[tokio::test]
async fn a_body_that_is_not_a_json_object_is_rejected_naming_the_body() {
    let app = one_mention().await;

    let array = app
        .post("/v1/channels/10/messages", Some(json!(["2", "1", ["2"]])))
        .await;
    let number = app
        .post("/v1/users/2/channels/10/ack", Some(json!(1)))
        .await;

    assert_problem(&array, &invalid("body", "must be a JSON object"));
    assert_problem(&number, &invalid("body", "must be a JSON object"));
    assert_unchanged(&app).await;
}

#[tokio::test]
async fn a_body_without_a_json_content_type_is_unsupported() {
    let app = one_mention().await;
    let mut expected = problem(
        "unsupported-media-type",
        "the request body must be JSON (Content-Type: application/json)",
    );
    expected["field"] = json!("content-type");

    let missing = app
        .raw(
            Method::POST,
            "/v1/users/2/channels/10/ack",
            &[],
            r#"{"message_id": "1"}"#,
        )
        .await;
    let text = app
        .raw(
            Method::POST,
            "/v1/users/2/channels/10/ack",
            &[("content-type", "text/plain")],
            r#"{"message_id": "1"}"#,
        )
        .await;

    assert_problem(&missing, &expected);
    assert_problem(&text, &expected);
    assert_unchanged(&app).await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_too_large() {
    let app = spawn_app_with(|s| s.http.max_body_bytes = readstate::config::ByteSize::kib(1)).await;
    app.message_ok(10, 1, Some(1), &[2]).await;
    let mentions: Vec<String> = (1000..1300).map(|u| u.to_string()).collect();
    let body = json!({ "message_id": "2", "mentions": mentions });
    assert!(body.to_string().len() > 1024);

    let reply = app.post("/v1/channels/10/messages", Some(body)).await;

    let mut expected = problem(
        "payload-too-large",
        "the request body is larger than the configured limit",
    );
    expected["field"] = json!("body");
    assert_problem(&reply, &expected);
    assert_unchanged(&app).await;
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_too_large() {
    let app = spawn_app_with(|s| s.http.max_body_bytes = readstate::config::ByteSize::kib(1)).await;
    app.message_ok(10, 1, Some(1), &[2]).await;
    let mentions: Vec<String> = (1000..1300).map(|u| format!("\"{u}\"")).collect();
    let body = format!(
        r#"{{"message_id": "2", "mentions": [{}]}}"#,
        mentions.join(",")
    );
    let mut stream = connect(&app).await;

    send(
        &mut stream,
        format!(
            "POST /v1/channels/10/messages HTTP/1.1\r\nHost: readstate\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    let (status, _, answer) = read_response(&mut stream, Duration::from_secs(10)).await;

    assert_eq!(status, 413, "{answer}");
    let mut expected = problem(
        "payload-too-large",
        "the request body is larger than the configured limit",
    );
    expected["field"] = json!("body");
    assert_eq!(answer, expected);
    assert_unchanged(&app).await;
}

#[tokio::test]
async fn a_bad_join_position_is_rejected_naming_it() {
    let app = one_mention().await;

    let negative = app
        .join(2, 10, Some(json!({ "last_read_message_id": -1 })))
        .await;
    let too_big = app
        .join(
            3,
            10,
            Some(json!({ "last_read_message_id": "9223372036854775808" })),
        )
        .await;

    let reason = "must be an integer between 0 and 9223372036854775807";
    assert_problem(&negative, &invalid("last_read_message_id", reason));
    assert_problem(&too_big, &invalid("last_read_message_id", reason));
    assert_unchanged(&app).await;
    assert_problem(
        &app.read_state(3, 10).await,
        &problem("not-found", "read state not found"),
    );
}

#[tokio::test]
async fn a_bad_id_in_a_summaries_list_is_rejected_naming_its_index() {
    let app = one_mention().await;

    let reply = app.summaries(json!({ "user_ids": ["2", "0"] })).await;

    assert_problem(&reply, &invalid("user_ids[1]", ID_REASON));
}

#[tokio::test]
async fn an_unknown_field_is_rejected_naming_it() {
    let app = one_mention().await;

    let reply = app
        .post(
            "/v1/users/2/channels/10/ack",
            Some(json!({ "message_id": "1", "unread_count": 0 })),
        )
        .await;

    assert_problem(
        &reply,
        &invalid(
            "unread_count",
            "unknown field; expected `message_id` or `at`",
        ),
    );
    assert_unchanged(&app).await;
}

#[tokio::test]
async fn too_many_mentions_are_rejected_naming_mentions() {
    let app = spawn_app_with(|s| s.limits.max_mentions = 2).await;
    app.message_ok(10, 1, Some(1), &[2]).await;

    let reply = app.message(10, 2, Some(1), &[2, 3, 4]).await;

    assert_problem(&reply, &invalid("mentions", "at most 2 users"));
    assert_unchanged(&app).await;
    assert_problem(
        &app.read_state(3, 10).await,
        &problem("not-found", "read state not found"),
    );
}

#[tokio::test]
async fn a_readers_limit_out_of_range_is_rejected_naming_limit() {
    let app = spawn_app_with(|s| s.limits.max_page = 5).await;

    let zero = app.readers(10, 1, "limit=0").await;
    let above = app.readers(10, 1, "limit=6").await;
    let text = app.readers(10, 1, "limit=many").await;

    assert_problem(
        &zero,
        &invalid("limit", "must be an integer between 1 and 5"),
    );
    assert_problem(
        &above,
        &invalid("limit", "must be an integer between 1 and 5"),
    );
    assert_problem(
        &text,
        &invalid("limit", "must be an integer between 1 and 5"),
    );
}

#[tokio::test]
async fn a_bad_readers_cursor_is_rejected_naming_after() {
    let app = spawn_app().await;

    let reply = app.readers(10, 1, "after=x").await;

    assert_problem(&reply, &invalid("after", ID_REASON));
}

#[tokio::test]
async fn an_unknown_query_parameter_is_rejected_naming_it() {
    let app = spawn_app().await;

    let reply = app.readers(10, 1, "limt=5").await;

    assert_eq!(reply.0, StatusCode::BAD_REQUEST, "{}", reply.2);
    assert_eq!(reply.2["field"], "limt");
}

#[tokio::test]
async fn a_read_state_that_does_not_exist_is_not_found() {
    let app = one_mention().await;

    let reply = app.read_state(3, 10).await;

    assert_problem(&reply, &problem("not-found", "read state not found"));
}

#[tokio::test]
async fn an_unknown_route_is_not_found() {
    let app = spawn_app().await;

    let reply = app.get("/v1/nothing/here", None).await;

    assert_problem(
        &reply,
        &problem("not-found", "no route for GET /v1/nothing/here"),
    );
}

#[tokio::test]
async fn a_known_route_with_the_wrong_method_is_not_allowed() {
    let app = one_mention().await;

    let reply = app
        .request(Method::PATCH, "/v1/users/2/channels/10", Some(json!({})))
        .await;

    assert_eq!(reply.0, StatusCode::METHOD_NOT_ALLOWED, "{}", reply.2);
    assert_eq!(
        reply.2["type"],
        Value::from("https://readstate.dev/problems/method-not-allowed")
    );
    assert_unchanged(&app).await;
}
