//! Access control against a real readstate with credentials configured: no token
//! or a bad one is `UNAUTHENTICATED`, a key without the scope or a user's JWT on
//! another user is `PERMISSION_DENIED` (neither is retried), a valid token works
//! for unary calls, write streams and subscriptions (also after a reconnection,
//! with a token replaced in the meantime), and a rate-limited call waits the
//! server's `RetryInfo` delay and succeeds.

mod support;

use std::time::{Duration, Instant};

use readstate_client::{Client, Error, Event, Level, Mute, Op, RetryPolicy, Settings};
use support::{PATIENCE, Server, api_keys_env, jwt, next_event, process_of, wait_for};

/// Every scope.
const ALL_KEY: &str = "rsk_client_test_all_0f1e2d3c4b5a69788796a5b4c3d2e1f0";
/// `read` only.
const READ_KEY: &str = "rsk_client_test_read_00112233445566778899aabbccddeeff";
/// `read` and `write`, no `admin`.
const WRITE_KEY: &str = "rsk_client_test_write_ffeeddccbbaa99887766554433221100";
const SECRET: &str = "readstate-client-tests-hs256-secret-of-48-bytes!";

const USER: u64 = 7;
const OTHER: u64 = 8;
const AUTHOR: u64 = 9;
const C: u64 = 100;

/// A server with the three keys and HS256 user tokens (no clock leeway).
fn server_with_auth(extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        api_keys_env(&[
            ("all", ALL_KEY, &["read", "write", "admin"]),
            ("reader", READ_KEY, &["read"]),
            ("writer", WRITE_KEY, &["read", "write"]),
        ]),
        (
            "READSTATE_AUTH__JWT__HS256_SECRET".to_owned(),
            SECRET.to_owned(),
        ),
        ("READSTATE_AUTH__JWT__LEEWAY_S".to_owned(), "0".to_owned()),
    ];
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Server::start_with(env)
}

/// A policy that would make any retry obvious: the first one waits 5–10 s.
fn slow_retries() -> RetryPolicy {
    RetryPolicy {
        attempts: 5,
        first_backoff: Duration::from_secs(10),
        max_backoff: Duration::from_secs(10),
    }
}

/// A client of `server` sending `token`, with `policy`.
async fn client_with(server: &Server, token: &str, policy: RetryPolicy) -> Client {
    server
        .client()
        .await
        .with_token(token)
        .expect("a valid token")
        .with_retries(policy)
}

/// Runs `call`, checks it failed at once (not retried) and answers the error.
async fn fails_at_once<T: std::fmt::Debug>(call: impl Future<Output = Result<T, Error>>) -> Error {
    let started = Instant::now();
    let e = tokio::time::timeout(PATIENCE, call)
        .await
        .expect("an answer")
        .expect_err("a refusal");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered at once, not retried: {e:?} after {:?}",
        started.elapsed()
    );
    assert!(!e.is_retryable(), "{e:?}");
    e
}

fn assert_unauthenticated(e: &Error) {
    assert!(e.is_unauthenticated(), "{e:?}");
    assert!(!e.is_permission_denied(), "{e:?}");
    assert!(matches!(e, Error::Unauthenticated { .. }), "{e:?}");
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
}

fn assert_permission_denied(e: &Error) {
    assert!(e.is_permission_denied(), "{e:?}");
    assert!(!e.is_unauthenticated(), "{e:?}");
    assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
}

/// The last item of a subscription that is refused: the error, then the end.
async fn refused_subscription(mut events: readstate_client::Subscription) -> Error {
    let e = tokio::time::timeout(PATIENCE, events.next())
        .await
        .expect("an answer")
        .expect("an item")
        .expect_err("a refusal");
    assert!(
        tokio::time::timeout(PATIENCE, events.next())
            .await
            .expect("the end")
            .is_none(),
        "the subscription ends after a refusal"
    );
    e
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_valid_token_every_call_is_unauthenticated() {
    let server = server_with_auth(&[]);

    // No token at all.
    let anonymous = server.client().await.with_retries(slow_retries());
    assert!(!anonymous.has_token());
    assert_unauthenticated(&fails_at_once(anonymous.summary(USER)).await);
    assert_unauthenticated(&fails_at_once(anonymous.ack(USER, C, 1)).await);
    assert_unauthenticated(
        &fails_at_once(anonymous.write_iter(vec![Op::message_created(C, 1, None, &[])])).await,
    );
    assert_unauthenticated(&refused_subscription(anonymous.subscribe(USER)).await);

    // Tokens the server does not accept: an unknown key, a JWT signed with another
    // secret, an expired JWT.
    let unknown_key = "rsk_not_a_configured_key_0123456789abcdef0123456789abcdef";
    let forged = jwt("another-secret-that-is-long-enough-for-hs256!", USER, 600);
    let expired = jwt(SECRET, USER, -60);
    for token in [unknown_key, &forged, &expired] {
        let client = client_with(&server, token, slow_retries()).await;
        let e = fails_at_once(client.summary(USER)).await;
        assert_unauthenticated(&e);
        // The token is in neither the error nor the client's Debug output.
        for shown in [e.to_string(), format!("{e:?}"), format!("{client:?}")] {
            assert!(!shown.contains(token), "the token leaks: {shown}");
        }
        assert_unauthenticated(&fails_at_once(client.write_iter(vec![Op::ack(USER, C, 1)])).await);
        assert_unauthenticated(&refused_subscription(client.subscribe(USER)).await);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_key_works_for_calls_write_streams_and_subscriptions() {
    let server = server_with_auth(&[]);
    let client = client_with(&server, ALL_KEY, RetryPolicy::default()).await;
    assert!(client.has_token());
    let shown = format!("{client:?}");
    assert!(!shown.contains(ALL_KEY), "{shown}");
    assert!(shown.contains("***"), "{shown}");

    let mut events = client.subscribe(USER);
    assert!(matches!(
        next_event(&mut events).await.expect("ready"),
        Event::Ready { .. }
    ));

    // Unary calls.
    client.join(USER, C, Some(0)).await.expect("join");
    client
        .message_created(C, 1, Some(AUTHOR), &[USER])
        .await
        .expect("message");
    let state = client
        .read_state(USER, C)
        .await
        .expect("read")
        .expect("a state");
    assert_eq!((state.unread_count, state.mention_count), (1, 1));

    // A write stream.
    let results = client
        .write_iter(vec![
            Op::message_created(C, 2, Some(AUTHOR), &[]),
            Op::ack(USER, C, 1),
        ])
        .await
        .expect("write");
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    // The subscription saw them.
    let change = wait_for(
        &mut events,
        |e| matches!(e, Event::Change { kind, .. } if kind == "ack"),
    )
    .await;
    let Event::Change { read_state, .. } = change else {
        unreachable!()
    };
    assert_eq!(read_state.expect("a state").last_read_message_id, 1);

    // The admin scope, and the raw tonic client, which sends the token too.
    client.delete_channel(C).await.expect("delete channel");
    let reply = client
        .grpc()
        .get_summary(readstate_client::proto::GetSummaryRequest {
            user_id: USER,
            group_id: None,
        })
        .await
        .expect("a raw call with the token");
    assert_eq!(reply.into_inner().unread_channels, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_without_the_scope_is_permission_denied() {
    let server = server_with_auth(&[]);
    let admin = client_with(&server, ALL_KEY, RetryPolicy::default()).await;
    admin.join(USER, C, Some(0)).await.expect("join");

    // Read only: reads work, writes are refused.
    let reader = client_with(&server, READ_KEY, slow_retries()).await;
    assert_eq!(
        reader.summary(USER).await.expect("summary").unread_channels,
        0
    );
    let mut events = reader.subscribe(USER);
    assert!(matches!(
        next_event(&mut events).await.expect("ready"),
        Event::Ready { .. }
    ));
    let e = fails_at_once(reader.ack(USER, C, 1)).await;
    assert_permission_denied(&e);
    assert!(e.to_string().contains("write"), "names the scope: {e}");
    assert_permission_denied(&fails_at_once(reader.message_created(C, 1, None, &[])).await);
    assert_permission_denied(&fails_at_once(reader.batch(vec![Op::ack(USER, C, 1)])).await);
    assert_permission_denied(&fails_at_once(reader.write_iter(vec![Op::ack(USER, C, 1)])).await);

    // Read and write, no admin: a batch or a write stream holding a channel
    // deletion is refused, naming the op.
    let writer = client_with(&server, WRITE_KEY, slow_retries()).await;
    assert_permission_denied(&fails_at_once(writer.delete_channel(C)).await);
    let e = fails_at_once(writer.batch(vec![
        Op::message_created(C, 1, Some(AUTHOR), &[]),
        Op::delete_channel(C),
    ]))
    .await;
    assert_permission_denied(&e);
    assert_eq!(e.field(), Some("ops[1]"));
    // Nothing of the refused batch was applied.
    let state = admin
        .read_state(USER, C)
        .await
        .expect("read")
        .expect("a state");
    assert_eq!(state.last_message_id, 0);
    let e = fails_at_once(writer.write_iter(vec![
        Op::message_created(C, 1, Some(AUTHOR), &[]),
        Op::ack(USER, C, 1),
        Op::delete_channel(C),
    ]))
    .await;
    assert_permission_denied(&e);
    assert_eq!(e.field(), Some("ops[2]"));
    // What it may do, it does.
    writer.ack(USER, C, 1).await.expect("ack");

    // Deleting and exporting a user need `admin` too, alone or in a batch.
    assert_permission_denied(&fails_at_once(writer.delete_user(USER)).await);
    assert_permission_denied(&fails_at_once(writer.export_user(USER)).await);
    let e = fails_at_once(writer.batch(vec![Op::ack(USER, C, 1), Op::delete_user(USER)])).await;
    assert_permission_denied(&e);
    assert_eq!(e.field(), Some("ops[1]"));
    // Channel metadata and settings are writes; groups, threads and a channel
    // are reads.
    assert_permission_denied(&fails_at_once(reader.set_channel(C, None, Some(1))).await);
    assert_permission_denied(
        &fails_at_once(reader.update_settings(USER, C, Settings::new())).await,
    );
    writer
        .set_channel(C, None, Some(1))
        .await
        .expect("set channel");
    writer
        .update_settings(USER, C, Settings::new().mute(Mute::Forever))
        .await
        .expect("settings");
    assert_eq!(
        reader
            .channel(C)
            .await
            .expect("channel")
            .map(|c| c.group_id),
        Some(Some(1))
    );
    assert_eq!(reader.groups(USER).await.expect("groups").len(), 1);
    reader.threads(USER, C, None, None).await.expect("threads");
    // The admin key may.
    let export = admin.export_user(USER).await.expect("export");
    assert_eq!(export.read_states[0].mute(), Mute::Forever);
    admin.delete_user(USER).await.expect("delete user");
    assert_eq!(admin.read_state(USER, C).await.expect("read"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_token_acts_for_its_own_user_only() {
    let server = server_with_auth(&[]);
    let admin = client_with(&server, ALL_KEY, RetryPolicy::default()).await;
    for user in [USER, OTHER] {
        admin.join(user, C, Some(0)).await.expect("join");
    }
    admin
        .message_created(C, 1, Some(AUTHOR), &[USER, OTHER])
        .await
        .expect("message");

    let user = client_with(&server, &jwt(SECRET, USER, 600), slow_retries()).await;
    let mut events = user.subscribe(USER);
    assert!(matches!(
        next_event(&mut events).await.expect("ready"),
        Event::Ready { .. }
    ));

    // Its own read states: read, ack, mark unread.
    let summary = user.summary(USER).await.expect("own summary");
    assert_eq!((summary.unread_channels, summary.mentions), (1, 1));
    let state = user.ack(USER, C, 1).await.expect("own ack");
    assert!(!state.has_unread);
    wait_for(
        &mut events,
        |e| matches!(e, Event::Change { kind, .. } if kind == "ack"),
    )
    .await;
    user.mark_unread(USER, C, 1).await.expect("own mark unread");
    // Its own settings, groups and threads.
    let state = user
        .update_settings(USER, C, Settings::new().level(Level::Mentions))
        .await
        .expect("own settings");
    assert_eq!(state.level(), Level::Mentions);
    assert!(user.groups(USER).await.expect("own groups").is_empty());
    user.threads(USER, C, None, None)
        .await
        .expect("own threads");

    // Another user's: refused, unary or subscription.
    assert_permission_denied(&fails_at_once(user.ack(OTHER, C, 1)).await);
    assert_permission_denied(&fails_at_once(user.summary(OTHER)).await);
    assert_permission_denied(&refused_subscription(user.subscribe(OTHER)).await);
    // What only services may do, even for itself.
    assert_permission_denied(&fails_at_once(user.join(USER, C, None)).await);
    assert_permission_denied(&fails_at_once(user.message_created(C, 2, Some(USER), &[])).await);
    assert_permission_denied(&fails_at_once(user.update_settings(OTHER, C, Settings::new())).await);
    assert_permission_denied(&fails_at_once(user.set_channel(C, None, None)).await);
    assert_permission_denied(&fails_at_once(user.export_user(USER)).await);
    assert_permission_denied(&fails_at_once(user.delete_user(USER)).await);

    // User 8's state is untouched; user 8's own token may ack it.
    let other = admin
        .read_state(OTHER, C)
        .await
        .expect("read")
        .expect("a state");
    assert_eq!(other.last_read_message_id, 0);
    let other_user = client_with(&server, &jwt(SECRET, OTHER, 600), slow_retries()).await;
    assert_eq!(
        other_user
            .ack(OTHER, C, 1)
            .await
            .expect("8 acks its own")
            .last_read_message_id,
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_checked_here_and_replaced_for_every_clone() {
    let server = server_with_auth(&[]);

    // Tokens that cannot be sent are refused here, without showing them.
    let base = server.client().await;
    for bad in [
        "",
        "  \n",
        "Bearer rsk_abc",
        "two words",
        "caf\u{e9}",
        "a\u{7}b",
    ] {
        let e = base.clone().with_token(bad).expect_err("an invalid token");
        assert!(matches!(e, Error::InvalidToken { .. }), "{bad:?}: {e:?}");
        assert!(!e.is_retryable());
        if !bad.trim().is_empty() {
            assert!(!e.to_string().contains(bad.trim()), "{e}");
        }
        assert!(base.set_token(bad).is_err());
    }
    // Surrounding whitespace (a key read from a file) is trimmed.
    let trimmed = base
        .clone()
        .with_token(format!("{ALL_KEY}\n"))
        .expect("a key with a newline");
    trimmed.summary(USER).await.expect("summary");

    // with_token makes a client of its own: the one it was made from stays
    // without a token.
    let with = base.clone().with_token(ALL_KEY).expect("a valid token");
    with.summary(USER).await.expect("with the token");
    assert_unauthenticated(
        &base
            .clone()
            .with_retries(RetryPolicy::none())
            .summary(USER)
            .await
            .expect_err("without"),
    );

    // set_token: every clone sends the new token.
    let clone = base.clone().with_retries(RetryPolicy::none());
    base.set_token(READ_KEY).expect("a valid token");
    clone.summary(USER).await.expect("the clone sends the key");
    assert_permission_denied(&clone.ack(USER, C, 1).await.expect_err("read only"));
    base.set_token(WRITE_KEY).expect("a valid token");
    clone.ack(USER, C, 1).await.expect("now with write");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscription_reconnects_with_the_current_token() {
    let mut server = server_with_auth(&[]);
    let admin = client_with(&server, ALL_KEY, support::patient()).await;
    admin.join(USER, C, Some(0)).await.expect("join");

    // Two subscriptions of user 7 with a token that expires in 3 s: one on a
    // client whose token is refreshed while the server is away, one not.
    let short = jwt(SECRET, USER, 3);
    let refreshed = client_with(&server, &short, support::patient()).await;
    let stale = client_with(&server, &short, support::patient()).await;
    let mut events = refreshed.subscribe(USER);
    let mut stale_events = stale.subscribe(USER);
    let Event::Ready { id: first } = next_event(&mut events).await.expect("ready") else {
        panic!("ready first")
    };
    assert!(matches!(
        next_event(&mut stale_events).await.expect("ready"),
        Event::Ready { .. }
    ));

    server.stop();
    // The short token expires (no leeway) while the server is down.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    refreshed
        .set_token(jwt(SECRET, USER, 600))
        .expect("a fresh token");
    server.restart();

    // The refreshed one reconnects with the new token: a new process, so Resync,
    // then the changes.
    let Event::Resync { id } = next_event(&mut events).await.expect("resync") else {
        panic!("resync after the restart")
    };
    assert_ne!(process_of(&id), process_of(&first));
    admin
        .message_created(C, 1, Some(AUTHOR), &[USER])
        .await
        .expect("message");
    wait_for(
        &mut events,
        |e| matches!(e, Event::Change { kind, .. } if kind == "mention"),
    )
    .await;

    // The other one is refused on reconnecting, and ends with the error.
    let e = tokio::time::timeout(PATIENCE, stale_events.next())
        .await
        .expect("an answer")
        .expect("an item")
        .expect_err("the expired token is refused");
    assert_unauthenticated(&e);
    assert!(stale_events.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limited_call_is_retried_after_the_servers_delay() {
    // One request per second per caller, no burst above it.
    let server = server_with_auth(&[
        ("READSTATE_LIMITS__PER_CALLER_RPS", "1"),
        ("READSTATE_LIMITS__PER_CALLER_BURST", "1"),
    ]);
    let once = client_with(&server, ALL_KEY, RetryPolicy::none()).await;
    once.summary(USER).await.expect("the first request");
    let e = once.summary(USER).await.expect_err("over the rate");
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    assert!(e.is_retryable(), "{e:?}");
    let delay = e.retry_after().expect("a RetryInfo delay");
    assert!(delay >= Duration::from_secs(1), "{delay:?}");

    // With retries (3 tries by default), the same calls wait the delay and succeed:
    // unary, a write stream, a subscription.
    let client = client_with(&server, ALL_KEY, RetryPolicy::default()).await;
    let started = Instant::now();
    client.summary(USER).await.expect("summary after waiting");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited the server's delay: {:?}",
        started.elapsed()
    );
    let results = client
        .write_iter(vec![Op::join(USER, C, Some(0))])
        .await
        .expect("a write after waiting");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let mut events = client.subscribe(USER);
    assert!(matches!(
        next_event(&mut events).await.expect("ready after waiting"),
        Event::Ready { .. }
    ));
}
