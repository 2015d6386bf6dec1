//! Every method of the client against a real readstate, with its answers.

mod support;

use std::time::{Duration, UNIX_EPOCH};

use readstate_client::proto::ReadState;
use readstate_client::{Client, Error, Op, ReadersPage, RetryPolicy, Summary};
use support::Server;

const U: u64 = 1; // a reader
const A: u64 = 2; // an author
const V: u64 = 3; // another reader
const C: u64 = 100;
const D: u64 = 200;

fn state(channel: u64, read: u64, last: u64, unread: u32, mentions: u32) -> ReadState {
    ReadState {
        channel_id: channel,
        last_read_message_id: read,
        last_message_id: last,
        has_unread: last > read,
        unread_count: unread,
        unread_capped: false,
        mention_count: mentions,
        mention_capped: false,
        // The messages of these tests have consecutive ids.
        first_unread_message_id: (unread > 0).then(|| last - u64::from(unread) + 1),
        muted: false,
        level: "all".to_owned(),
    }
}

/// Every page of the readers of a message.
async fn all_readers(client: &Client, channel: u64, message: u64, limit: u32) -> Vec<u64> {
    let mut readers = Vec::new();
    let mut after = None;
    loop {
        let page = client
            .readers(channel, message, after, Some(limit))
            .await
            .expect("readers");
        assert!(page.readers.len() <= limit as usize);
        readers.extend(page.readers);
        match page.next {
            Some(next) => after = Some(next),
            None => return readers,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_method_answers_what_the_server_holds() {
    let server = Server::start();
    let client = server.client().await;

    // Join having read nothing: an empty channel.
    assert_eq!(
        client.join(U, C, Some(0)).await.expect("join"),
        state(C, 0, 0, 0, 0)
    );
    // Joining again is a no-op.
    assert_eq!(
        client.join(U, C, None).await.expect("join"),
        state(C, 0, 0, 0, 0)
    );

    // Two messages by A, the second mentioning U.
    client
        .message_created(C, 10, Some(A), &[])
        .await
        .expect("message 10");
    client
        .message_created(C, 11, Some(A), &[U])
        .await
        .expect("message 11");
    // Idempotent: posting it again changes nothing.
    client
        .message_created(C, 11, Some(A), &[U])
        .await
        .expect("message 11 again");

    assert_eq!(
        client.read_state(U, C).await.expect("read"),
        Some(state(C, 0, 11, 2, 1))
    );
    // The author has read their own messages.
    assert_eq!(
        client.read_state(A, C).await.expect("read"),
        Some(state(C, 11, 11, 0, 0))
    );
    assert_eq!(
        client.summary(U).await.expect("summary"),
        Summary {
            unread_channels: 1,
            mentions: 1,
            unread_threads: 0
        }
    );

    // Read receipts of message 10: only A so far.
    assert_eq!(
        client.readers(C, 10, None, None).await.expect("readers"),
        ReadersPage {
            readers: vec![A],
            next: None
        }
    );

    // U reads message 10.
    assert_eq!(
        client.ack(U, C, 10).await.expect("ack"),
        state(C, 10, 11, 1, 1)
    );
    // An ack never moves back.
    assert_eq!(
        client.ack(U, C, 5).await.expect("ack"),
        state(C, 10, 11, 1, 1)
    );
    assert_eq!(all_readers(&client, C, 10, 100).await, vec![U, A]);
    let first = client.readers(C, 10, None, Some(1)).await.expect("page 1");
    assert_eq!(first.readers, vec![U]);
    assert_eq!(first.next, Some(U));
    assert_eq!(all_readers(&client, C, 10, 1).await, vec![U, A]);
    assert_eq!(all_readers(&client, C, 11, 1).await, vec![A]);

    // Mark unread from 10: the position moves to just before it.
    assert_eq!(
        client.mark_unread(U, C, 10).await.expect("unread"),
        state(C, 9, 11, 2, 1)
    );
    // An ack made before the mark unread (at 1 ms after the epoch) is ignored...
    let old = UNIX_EPOCH + Duration::from_millis(1);
    assert_eq!(
        client.ack_at(U, C, 11, old).await.expect("stale ack"),
        state(C, 9, 11, 2, 1)
    );
    // ... an ack made now is not.
    let now = std::time::SystemTime::now() + Duration::from_secs(1);
    assert_eq!(
        client.ack_at(U, C, 11, now).await.expect("ack"),
        state(C, 11, 11, 0, 0)
    );
    assert_eq!(
        client.summary(U).await.expect("summary"),
        Summary {
            unread_channels: 0,
            mentions: 0,
            unread_threads: 0
        }
    );

    // V joins having read nothing; message 11 is deleted.
    assert_eq!(
        client.join(V, C, Some(0)).await.expect("join"),
        state(C, 0, 11, 2, 0)
    );
    client.message_deleted(C, 11).await.expect("delete 11");
    client
        .message_deleted(C, 11)
        .await
        .expect("delete 11 again");
    assert_eq!(
        client.read_state(V, C).await.expect("read"),
        Some(state(C, 0, 10, 1, 0))
    );

    // V in a second channel, with one message; ack all reads both.
    client
        .message_created(D, 50, Some(A), &[V])
        .await
        .expect("message 50");
    assert_eq!(
        client.join(V, D, Some(0)).await.expect("join"),
        state(D, 0, 50, 1, 1)
    );
    assert_eq!(
        client.summary(V).await.expect("summary"),
        Summary {
            unread_channels: 2,
            mentions: 1,
            unread_threads: 0
        }
    );
    assert_eq!(
        client.ack_all(V).await.expect("ack all"),
        vec![state(C, 10, 10, 0, 0), state(D, 50, 50, 0, 0)]
    );

    // Read states: all (sorted by channel), or only some channels.
    assert_eq!(
        client.join(U, D, None).await.expect("join at head"),
        state(D, 50, 50, 0, 0)
    );
    assert_eq!(
        client.read_states(U, &[]).await.expect("read states"),
        vec![state(C, 11, 10, 0, 0), state(D, 50, 50, 0, 0)]
    );
    assert_eq!(
        client.read_states(U, &[D]).await.expect("read states"),
        vec![state(D, 50, 50, 0, 0)]
    );

    // Summaries: one per distinct user, in request order.
    client
        .message_created(D, 51, Some(A), &[U])
        .await
        .expect("message 51");
    assert_eq!(
        client.summaries(&[U, V, U]).await.expect("summaries"),
        vec![
            (
                U,
                Summary {
                    unread_channels: 1,
                    mentions: 1,
                    unread_threads: 0
                }
            ),
            (
                V,
                Summary {
                    unread_channels: 1,
                    mentions: 0,
                    unread_threads: 0
                }
            ),
        ]
    );

    // Leave: the read state is gone; leaving again is fine.
    client.leave(U, D).await.expect("leave");
    client.leave(U, D).await.expect("leave again");
    assert_eq!(client.read_state(U, D).await.expect("read"), None);

    // Delete the channel: every read state in it is gone.
    client.delete_channel(C).await.expect("delete channel");
    client
        .delete_channel(C)
        .await
        .expect("delete channel again");
    for user in [U, A, V] {
        assert_eq!(client.read_state(user, C).await.expect("read"), None);
    }
    assert_eq!(
        client.read_states(U, &[]).await.expect("read states"),
        vec![]
    );
    assert_eq!(
        client.read_states(V, &[]).await.expect("read states"),
        vec![state(D, 50, 51, 1, 0)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_name_the_field_and_not_found_is_none() {
    let server = Server::start();
    let client = server.client().await;

    match client.read_state(U, 0).await {
        Err(Error::InvalidArgument { field, message }) => {
            assert_eq!(field.as_deref(), Some("channel_id"), "{message}");
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    let e = client
        .message_created(0, 1, None, &[])
        .await
        .expect_err("channel 0");
    assert_eq!(e.field(), Some("channel_id"), "{e}");
    assert!(!e.is_retryable());
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = client.join(0, C, None).await.expect_err("user 0");
    assert_eq!(e.field(), Some("user_id"), "{e}");
    let e = client.summary(0).await.expect_err("user 0");
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");

    // No read state: None, not an error.
    assert_eq!(client.read_state(U, 999).await.expect("read"), None);
    assert_eq!(
        client.read_states(U, &[]).await.expect("read states"),
        vec![]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_op_of_a_batch_fails_alone() {
    let server = Server::start();
    let client = server.client().await;

    let results = client
        .batch(vec![
            Op::join(U, C, Some(0)),
            Op::ack(U, 0, 5),
            Op::message_created(C, 20, Some(A), &[U]),
            Op::message_created(C, 21, None, &[]),
            Op::ack(U, C, 20),
        ])
        .await
        .expect("batch");
    assert_eq!(results.len(), 5);
    assert!(results[0].is_ok(), "{results:?}");
    let problem = results[1].as_ref().expect_err("channel 0");
    assert_eq!(
        problem.field.as_deref(),
        Some("ops[1].channel_id"),
        "{problem}"
    );
    assert_eq!(problem.status, 400);
    assert!(!problem.is_retryable());
    assert!(results[2..].iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        client.read_state(U, C).await.expect("read"),
        Some(state(C, 20, 21, 1, 0))
    );

    // Every op kind goes through a batch.
    let results = client
        .batch(vec![
            Op::mark_unread(U, C, 20),
            Op::ack_at(U, C, 20, UNIX_EPOCH),
            Op::message_deleted(C, 21),
            Op::join(V, D, Some(0)),
            Op::ack_all(U),
            Op::leave(V, D),
        ])
        .await
        .expect("batch");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        client.read_state(U, C).await.expect("read"),
        Some(state(C, 20, 20, 0, 0))
    );
    assert_eq!(client.read_state(V, D).await.expect("read"), None);
    let results = client
        .batch(vec![Op::delete_channel(C)])
        .await
        .expect("batch");
    assert_eq!(results, vec![Ok(())]);
    assert_eq!(client.read_state(U, C).await.expect("read"), None);

    // An empty batch answers nothing.
    assert_eq!(client.batch(Vec::new()).await.expect("batch"), vec![]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_stream_applies_ops_as_they_come() {
    let server = Server::start();
    let client = server.client().await;

    // A producer sends ops through a channel while the stream is open.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Op>(4);
    let ops = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let writer = {
        let client = client.clone();
        tokio::spawn(async move { client.write(ops).await })
    };
    tx.send(Op::join(U, C, Some(0))).await.expect("send");
    for message in 1..=20 {
        tx.send(Op::message_created(C, message, Some(A), &[]))
            .await
            .expect("send");
    }
    tx.send(Op::ack(U, 0, 1)).await.expect("send"); // bad: op 21
    tx.send(Op::ack(U, C, 15)).await.expect("send");
    // Applied as they arrive, before the stream ends.
    let deadline = tokio::time::Instant::now() + support::PATIENCE;
    while client.read_state(U, C).await.expect("read") != Some(state(C, 15, 20, 5, 0)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ops are applied before the stream ends"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(tx);
    let results = writer.await.expect("the writer").expect("write");
    assert_eq!(results.len(), 23);
    for (i, result) in results.iter().enumerate() {
        if i == 21 {
            let problem = result.as_ref().expect_err("op 21 is bad");
            assert_eq!(
                problem.field.as_deref(),
                Some("ops[21].channel_id"),
                "{problem}"
            );
        } else {
            assert!(result.is_ok(), "op {i}: {result:?}");
        }
    }

    // From an iterator; an empty stream answers nothing.
    let results = client
        .write_iter(vec![Op::mark_unread(U, C, 11), Op::ack(V, C, 20)])
        .await
        .expect("write");
    assert_eq!(results, vec![Ok(()), Ok(())]);
    assert_eq!(
        client.read_state(U, C).await.expect("read"),
        Some(state(C, 10, 20, 10, 0))
    );
    assert_eq!(
        client.read_state(V, C).await.expect("read"),
        Some(state(C, 20, 20, 0, 0))
    );
    assert_eq!(client.write_iter(Vec::new()).await.expect("write"), vec![]);
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_are_cheap_to_clone_and_share_the_connection() {
    let server = Server::start();
    let client = server.client().await;
    let mut tasks = Vec::new();
    for user in 1..=16 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            client.ack(user, C, 100 + user).await.expect("ack")
        }));
    }
    for (user, task) in (1..=16).zip(tasks) {
        let state = task.await.expect("task");
        assert_eq!(state.last_read_message_id, 100 + user);
    }
    assert_eq!(
        all_readers(&client, C, 101, 5).await,
        (1..=16).collect::<Vec<_>>()
    );
    // The raw tonic client is there for anything else.
    let reply = client
        .grpc()
        .get_summary(readstate_client::proto::GetSummaryRequest {
            user_id: 1,
            group_id: None,
        })
        .await
        .expect("raw call");
    assert_eq!(reply.into_inner().unread_channels, 0);
    assert_eq!(client.retry_policy(), RetryPolicy::default());
}
