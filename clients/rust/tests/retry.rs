//! Retries: calls and write streams wait for a server that comes back; without
//! retries the errors are answered at once, and say they are retryable.

mod support;

use std::time::Duration;

use readstate_client::{Client, Error, Op, RetryPolicy};
use support::{PATIENCE, Server, patient};

const U: u64 = 1;
const A: u64 = 2;
const C: u64 = 100;

#[tokio::test(flavor = "multi_thread")]
async fn a_call_waits_for_a_server_that_comes_back() {
    let mut server = Server::start();
    let client = server.client().await.with_retries(patient());
    client.join(U, C, Some(0)).await.expect("join");

    server.stop();
    // Sent while the server is down: retried until it is back.
    let ack = {
        let client = client.clone();
        tokio::spawn(async move { client.ack(U, C, 5).await })
    };
    server.restart();
    let state = tokio::time::timeout(PATIENCE, ack)
        .await
        .expect("the ack is answered")
        .expect("the task")
        .expect("the ack succeeds after the restart");
    assert_eq!(state.last_read_message_id, 5);
    let read = client
        .read_state(U, C)
        .await
        .expect("read")
        .expect("the read state");
    assert_eq!(read.last_read_message_id, 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_retries_errors_come_at_once_and_say_they_are_retryable() {
    let mut server = Server::start();
    let client = server.client().await.with_retries(RetryPolicy::none());
    client.join(U, C, Some(0)).await.expect("join");
    server.stop();

    let e = client.ack(U, C, 5).await.expect_err("the server is down");
    assert!(e.is_retryable(), "{e:?}");
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");

    // Connecting to nothing: a retryable transport error.
    let e = Client::connect(server.url())
        .await
        .expect_err("nothing listens");
    assert!(matches!(e, Error::Transport(_)), "{e:?}");
    assert!(e.is_retryable());
    // A lazy client fails on its first call instead.
    let lazy = Client::connect_lazy(server.url())
        .expect("a valid endpoint")
        .with_retries(RetryPolicy::none());
    let e = lazy.summary(U).await.expect_err("nothing listens");
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");

    // Not a URI: not retryable.
    let e = Client::connect("not a uri").await.expect_err("invalid");
    assert!(matches!(e, Error::InvalidEndpoint { .. }), "{e:?}");
    assert!(!e.is_retryable());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_never_answers_is_deadline_exceeded() {
    // Accepts connections and never answers anything.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("the address");
    let black_hole = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let policy = RetryPolicy {
        attempts: 2,
        first_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(10),
    };
    let client = Client::connect_lazy(format!("http://{addr}"))
        .expect("a valid endpoint")
        .with_retries(policy)
        .with_timeout(Duration::from_millis(200));
    let e = tokio::time::timeout(PATIENCE, client.summary(U))
        .await
        .expect("the deadline ends the call")
        .expect_err("no answer");
    assert!(matches!(e, Error::DeadlineExceeded { .. }), "{e:?}");
    assert!(e.is_retryable());
    black_hole.abort();

    // A reasonable deadline is no trouble for a real server.
    let server = Server::start();
    let summary = server
        .client()
        .await
        .with_timeout(PATIENCE)
        .summary(U)
        .await
        .expect("summary");
    assert_eq!(summary.unread_channels, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_stream_goes_on_across_a_server_restart() {
    let mut server = Server::start();
    let client = server.client().await.with_retries(patient());

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Op>(16);
    let ops = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let writer = {
        let client = client.clone();
        tokio::spawn(async move { client.write(ops).await })
    };
    tx.send(Op::join(U, C, Some(0))).await.expect("send");
    for message in 1..=5 {
        tx.send(Op::message_created(C, message, Some(A), &[U]))
            .await
            .expect("send");
    }
    // Wait until they are applied, then restart the server under the open stream.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let state = client.read_state(U, C).await.expect("read");
        if state.is_some_and(|s| s.last_message_id == 5) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first ops are applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop();
    server.restart();

    for message in 6..=10 {
        tx.send(Op::message_created(C, message, Some(A), &[]))
            .await
            .expect("send");
    }
    tx.send(Op::ack(U, C, 8)).await.expect("send");
    drop(tx);
    let results = tokio::time::timeout(PATIENCE, writer)
        .await
        .expect("the write is answered")
        .expect("the task")
        .expect("the write succeeds across the restart");
    assert_eq!(results.len(), 12, "one result per op: {results:?}");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let state = client
        .read_state(U, C)
        .await
        .expect("read")
        .expect("the read state");
    assert_eq!(
        (
            state.last_read_message_id,
            state.last_message_id,
            state.unread_count,
            state.mention_count
        ),
        (8, 10, 2, 0)
    );
}
