//! Live changes: a subscription sees the changes other calls make, resumes after
//! the last event it saw, and reconnects by itself across a server restart.

mod support;

use readstate_client::{Error, Event};
use support::{Server, next_event, process_of, wait_for};

const U: u64 = 1;
const A: u64 = 2;
const C: u64 = 100;

fn is_change(kind: &'static str, channel: u64) -> impl Fn(&Event) -> bool {
    move |e| matches!(e, Event::Change { kind: k, channel: c, .. } if k == kind && *c == channel)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscription_receives_the_changes_of_other_calls() {
    let server = Server::start();
    let client = server.client().await;
    let writer = server.client().await; // another connection

    let mut events = client.subscribe(U);
    let ready = next_event(&mut events).await.expect("ready");
    assert!(matches!(ready, Event::Ready { .. }), "{ready:?}");
    assert!(!ready.id().is_empty());

    writer.join(U, C, Some(0)).await.expect("join");
    let Event::Change { id, read_state, .. } = wait_for(&mut events, is_change("join", C)).await
    else {
        unreachable!()
    };
    assert_ne!(id, ready.id());
    assert_eq!(read_state.expect("the read state").last_read_message_id, 0);

    writer
        .message_created(C, 7, Some(A), &[U])
        .await
        .expect("message");
    let Event::Change { read_state, .. } = wait_for(&mut events, is_change("mention", C)).await
    else {
        unreachable!()
    };
    let read_state = read_state.expect("the read state");
    assert_eq!((read_state.unread_count, read_state.mention_count), (1, 1));

    writer.ack(U, C, 7).await.expect("ack");
    let Event::Change { read_state, .. } = wait_for(&mut events, is_change("ack", C)).await else {
        unreachable!()
    };
    assert_eq!(read_state.expect("the read state").last_read_message_id, 7);

    writer.leave(U, C).await.expect("leave");
    let Event::Change { read_state, .. } = wait_for(&mut events, is_change("leave", C)).await
    else {
        unreachable!()
    };
    assert_eq!(read_state, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribe_from_resumes_after_an_event_id() {
    let server = Server::start();
    let client = server.client().await;

    let mut events = client.subscribe(U);
    next_event(&mut events).await.expect("ready");
    client.join(U, C, Some(0)).await.expect("join");
    let joined = wait_for(&mut events, is_change("join", C)).await;
    drop(events);

    // Missed while nobody listened.
    client.ack(U, C, 3).await.expect("ack");

    // Resuming after the join: ready, then the missed ack.
    let mut events = client.subscribe_from(U, joined.id());
    let first = next_event(&mut events).await.expect("first event");
    assert!(matches!(first, Event::Ready { .. }), "{first:?}");
    let Event::Change { read_state, .. } = wait_for(&mut events, is_change("ack", C)).await else {
        unreachable!()
    };
    assert_eq!(read_state.expect("the read state").last_read_message_id, 3);

    // An id the server cannot resume from: resync.
    let mut events = client.subscribe_from(U, "nonsense");
    let first = next_event(&mut events).await.expect("first event");
    assert!(matches!(first, Event::Resync { .. }), "{first:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_retryable_error_ends_the_subscription() {
    let server = Server::start();
    let client = server.client().await;
    let mut events = client.subscribe(0);
    match next_event(&mut events).await {
        Err(Error::InvalidArgument { field, .. }) => assert_eq!(field.as_deref(), Some("user_id")),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    assert!(
        events.next().await.is_none(),
        "the stream ends after its error"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscription_reconnects_across_a_server_restart() {
    let mut server = Server::start();
    let client = server.client().await.with_retries(support::patient());

    let mut events = client.subscribe(U);
    let ready = next_event(&mut events).await.expect("ready");
    assert!(matches!(ready, Event::Ready { .. }), "{ready:?}");
    client.join(U, C, Some(0)).await.expect("join");
    let joined = wait_for(&mut events, is_change("join", C)).await;

    // The server goes away (gracefully) and comes back on the same port and data.
    server.stop();
    server.restart();

    // The subscription reconnected with the last id it saw; the new process
    // cannot resume it: resync. (A `Ready` of the old process, had it been
    // reconnected to while draining, would be no error.)
    let first = loop {
        let event = next_event(&mut events)
            .await
            .expect("an event after the restart");
        let old_ready = matches!(event, Event::Ready { .. })
            && process_of(event.id()) == process_of(joined.id());
        if !old_ready {
            break event;
        }
    };
    let Event::Resync { id } = &first else {
        panic!("expected Resync after the restart, got {first:?}");
    };
    assert_ne!(
        process_of(id),
        process_of(joined.id()),
        "the resync comes from the new process"
    );

    // The caller refetches: the data survived the restart.
    let states = client.read_states(U, &[]).await.expect("refetch");
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].channel_id, C);

    // Later changes arrive on the same subscription.
    client
        .message_created(C, 9, Some(A), &[U])
        .await
        .expect("message");
    client.ack(U, C, 9).await.expect("ack");
    let Event::Change { id, read_state, .. } = wait_for(&mut events, is_change("ack", C)).await
    else {
        unreachable!()
    };
    assert_eq!(process_of(&id), process_of(first.id()));
    assert_eq!(read_state.expect("the read state").last_read_message_id, 9);
}
