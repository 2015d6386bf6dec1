//! Quick start: post messages, join, ack, and print the read state and the
//! summary.
//!
//! ```text
//! READSTATE_GRPC_URL=http://127.0.0.1:50051 cargo run -p readstate-client --example quickstart
//! ```
//!
//! `READSTATE_GRPC_URL` is the server's `grpc.addr` as a URL (default
//! `http://127.0.0.1:50051`). `tests/quickstart.rs` runs [`run`] against a real
//! server started by the test.

use readstate_client::{Client, Error, ReadState, Summary};

/// The example: user 42 joins channel 1000, author 7 posts messages 1 and 2
/// (mentioning 42 in the second), 42 reads message 1. Answers (and prints) 42's
/// read state and summary.
pub async fn run(url: &str) -> Result<(ReadState, Summary), Error> {
    let client = Client::connect(url).await?;
    let (user, author, channel) = (42, 7, 1000);

    // A message is posted: its author's read position moves to it.
    client
        .message_created(channel, 1, Some(author), &[])
        .await?;
    // The user joins having read nothing.
    let joined = client.join(user, channel, Some(0)).await?;
    println!("joined: {} unread", joined.unread_count);
    // Another message, mentioning the user.
    client
        .message_created(channel, 2, Some(author), &[user])
        .await?;

    // The user reads the first message.
    let state = client.ack(user, channel, 1).await?;
    println!(
        "read state of user {user} in channel {channel}: last read {}, {} unread, {} mention(s)",
        state.last_read_message_id, state.unread_count, state.mention_count
    );
    let summary = client.summary(user).await?;
    println!(
        "summary of user {user}: {} unread channel(s), {} mention(s)",
        summary.unread_channels, summary.mentions
    );
    Ok((state, summary))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url =
        std::env::var("READSTATE_GRPC_URL").unwrap_or_else(|_| "http://127.0.0.1:50051".to_owned());
    run(&url).await?;
    Ok(())
}
