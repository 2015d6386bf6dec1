//! Runs the code of `examples/quickstart.rs` (compiled into this test as a
//! module) against a real server, and checks what it answers.

mod support;

#[allow(dead_code)] // the example's `main`
#[path = "../examples/quickstart.rs"]
mod quickstart;

use readstate_client::Summary;
use support::Server;

#[tokio::test(flavor = "multi_thread")]
async fn the_quickstart_example_runs_against_a_real_server() {
    let server = Server::start();
    let (state, summary) = quickstart::run(&server.url())
        .await
        .expect("the example runs");
    assert_eq!(state.channel_id, 1000);
    assert_eq!(state.last_read_message_id, 1);
    assert_eq!(state.last_message_id, 2);
    assert!(state.has_unread);
    assert_eq!((state.unread_count, state.mention_count), (1, 1));
    assert_eq!(
        summary,
        Summary {
            unread_channels: 1,
            mentions: 1,
            unread_threads: 0
        }
    );
}
