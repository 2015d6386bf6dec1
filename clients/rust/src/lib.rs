//! Rust client of [readstate]'s gRPC API (`readstate.v1.ReadStates`): read
//! states of users in chat channels — what each user has read, exact unread and
//! mention counts, and read receipts.
//!
//! [readstate]: https://readstate.dev
//!
//! # Quick start
//!
//! ```no_run
//! use readstate_client::{Client, Event, Op};
//!
//! # async fn demo() -> Result<(), readstate_client::Error> {
//! // The server's grpc.addr.
//! let client = Client::connect("http://127.0.0.1:50051").await?;
//!
//! // User 7 joins channel 100 having read nothing; user 8 posts message 1000
//! // mentioning 7.
//! client.join(7, 100, Some(0)).await?;
//! client.message_created(100, 1000, Some(8), &[7]).await?;
//!
//! let state = client.read_state(7, 100).await?.expect("7 is in 100");
//! assert_eq!((state.unread_count, state.mention_count), (1, 1));
//!
//! // 7 reads it.
//! let state = client.ack(7, 100, 1000).await?;
//! assert!(!state.has_unread);
//! let summary = client.summary(7).await?;
//! assert_eq!(summary.unread_channels, 0);
//!
//! // Many writes in one call: one result per op, a bad op fails alone.
//! let results = client
//!     .batch(vec![Op::message_created(100, 1001, None, &[]), Op::ack(7, 100, 1001)])
//!     .await?;
//! assert!(results.iter().all(Result::is_ok));
//!
//! // Live changes of user 7's read states (reconnects by itself). A
//! // `Subscription` is a `futures` `Stream`; `next` needs no import.
//! let mut events = client.subscribe(7);
//! while let Some(event) = events.next().await {
//!     match event? {
//!         Event::Ready { .. } => {}
//!         Event::Resync { .. } => {
//!             let _states = client.read_states(7, &[]).await?; // missed changes: refetch
//!         }
//!         Event::Change { kind, channel, read_state, .. } => {
//!             println!("{kind} in {channel}: {read_state:?}");
//!         }
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # The API
//!
//! [`Client`] has one method per RPC (see `proto/readstate/v1/readstate.proto`,
//! whose comments are the reference): writes [`Client::message_created`],
//! [`Client::message_deleted`], [`Client::delete_channel`], [`Client::join`],
//! [`Client::leave`], [`Client::ack`] / [`Client::ack_at`],
//! [`Client::mark_unread`], [`Client::ack_all`], [`Client::set_channel`] /
//! [`Client::set_channel_at`], [`Client::update_settings`],
//! [`Client::delete_user`], [`Client::batch`] and [`Client::write`] (client
//! streaming); reads [`Client::read_state`], [`Client::read_states`] /
//! [`Client::read_states_in_group`], [`Client::readers`], [`Client::summary`] /
//! [`Client::group_summary`], [`Client::summaries`], [`Client::groups`],
//! [`Client::threads`], [`Client::channel`], [`Client::export_user`]; and
//! [`Client::subscribe`] for live changes. The messages are the generated ones,
//! re-exported in [`proto`] (and the common ones at the root: [`ReadState`],
//! [`Summary`], [`Channel`] — the proto's, not tonic's transport channel —,
//! [`ExportReply`], [`StoredReadState`], [`Op`], [`Problem`]). [`Op`] has a
//! constructor per write (`Op::ack(user, channel, message)`, ...).
//!
//! # Threads, groups and notification settings
//!
//! [`Client::set_channel`] makes a channel a thread (a `parent`) and puts it in
//! a group (a guild, team or category; a thread without its own group is in its
//! parent's). [`Client::update_settings`] mutes a read state or sets its
//! [`Level`] ([`Settings`], [`Mute`]). A [`Summary`] counts unread channels and
//! unread threads apart, leaves out muted read states and those of level
//! `mentions` or `nothing` (muted ones keep their mentions), and
//! [`Client::groups`] answers one per group.
//!
//! ```no_run
//! use readstate_client::{Client, Level, Mute, Settings};
//!
//! # async fn demo(client: Client) -> Result<(), readstate_client::Error> {
//! // Channel 100 is in guild 7; channel 101 is a thread under it.
//! client.set_channel(100, None, Some(7)).await?;
//! client.set_channel(101, Some(100), None).await?;
//! // User 42 mutes channel 100 and hears only mentions in the thread.
//! let state = client
//!     .update_settings(42, 100, Settings::new().mute(Mute::Forever))
//!     .await?;
//! assert!(state.muted);
//! let state = client
//!     .update_settings(42, 101, Settings::new().level(Level::Mentions))
//!     .await?;
//! assert_eq!(state.level(), Level::Mentions);
//! // Guild badges, the thread list of channel 100, where to jump to.
//! for (group, summary) in client.groups(42).await? {
//!     println!("guild {group}: {} unread, {} mentions", summary.unread_channels, summary.mentions);
//! }
//! let threads = client.threads(42, 100, None, None).await?;
//! println!("{} unread threads", threads.unread_threads);
//! if let Some(state) = client.read_state(42, 100).await? {
//!     println!("first unread: {:?}", state.first_unread_message_id);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Ids are `u64` in `1..=2^63-1`; 0 means absent and is rejected where an id is
//! required ([`Error::InvalidArgument`] with the field, e.g. `channel_id`).
//!
//! # Access
//!
//! A server with credentials configured needs a token on every call: an API key
//! for a service (`readstate api-key new`), or a user's JWT (`sub` = the user id),
//! which may only read, ack, mark unread and subscribe for that user.
//! [`Client::with_token`] sends it as the `authorization` metadata
//! (`Bearer <token>`) on every call, `Write` streams and every (re)connection of a
//! subscription included; [`Client::set_token`] replaces it for the client and its
//! clones (a fresh JWT before the old one expires). The token never appears in
//! `Debug` output or in errors.
//!
//! ```no_run
//! # async fn demo(key: String) -> Result<(), readstate_client::Error> {
//! use readstate_client::Client;
//!
//! let client = Client::connect("http://127.0.0.1:50051").await?.with_token(key)?;
//! match client.ack(42, 1000, 1).await {
//!     Ok(state) => println!("{} unread", state.unread_count),
//!     // No token, or a bad one: UNAUTHENTICATED (HTTP's 401).
//!     Err(e) if e.is_unauthenticated() => eprintln!("check the API key: {e}"),
//!     // A valid token without the right: PERMISSION_DENIED (HTTP's 403).
//!     Err(e) if e.is_permission_denied() => eprintln!("this key may not ack: {e}"),
//!     Err(e) => return Err(e),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Errors and retries
//!
//! Statuses become [`Error`]s: `INVALID_ARGUMENT` → [`Error::InvalidArgument`]
//! (with the field of the server's `google.rpc.BadRequest`), `NOT_FOUND` →
//! [`Error::NotFound`] (but [`Client::read_state`] and [`Client::channel`]
//! answer `None`),
//! `UNAUTHENTICATED` → [`Error::Unauthenticated`], `PERMISSION_DENIED` →
//! [`Error::PermissionDenied`] (with the refused op of a batch, `ops[i]`),
//! `UNAVAILABLE` and `RESOURCE_EXHAUSTED` → [`Error::Unavailable`] (with the
//! `google.rpc.RetryInfo` delay; also the per-caller rate limit, HTTP's 429),
//! `DEADLINE_EXCEEDED` → [`Error::DeadlineExceeded`].
//!
//! Every write of readstate is idempotent, so every call — read or write — that
//! fails with a retryable error ([`Error::is_retryable`]: unavailable,
//! overloaded, deadline exceeded, a refused or broken connection) is tried again
//! with exponential backoff, never sooner than the server's `RetryInfo` delay, up
//! to [`RetryPolicy::attempts`] tries in all (default 3; see
//! [`Client::with_retries`]). Other errors, `UNAUTHENTICATED` and
//! `PERMISSION_DENIED` among them, are answered at once. A
//! [`Client::batch`] is resent whole; a [`Client::write`] resends the ops not
//! answered yet; a [`Subscription`] reconnects without a limit on tries and
//! resumes after the last event it saw.
//!
//! # Example against a server
//!
//! `examples/quickstart.rs` (`READSTATE_GRPC_URL=http://127.0.0.1:50051 cargo run
//! -p readstate-client --example quickstart`) is also run by the test suite
//! against a real server (`tests/quickstart.rs`).

mod client;
mod error;
mod ops;
mod retry;
mod settings;
mod subscribe;
mod write;

/// The messages and the tonic client generated from `readstate/v1/readstate.proto`
/// (package `readstate.v1`).
#[allow(
    missing_docs,
    clippy::doc_lazy_continuation,
    clippy::doc_markdown,
    clippy::too_long_first_doc_paragraph,
    clippy::large_enum_variant,
    rustdoc::bare_urls,
    rustdoc::invalid_html_tags,
    rustdoc::broken_intra_doc_links
)]
pub mod proto {
    tonic::include_proto!("readstate.v1");
}

pub use client::{Client, Credentials, Grpc, ReadersPage, Threads};
pub use error::Error;
pub use proto::{Channel, ExportReply, Op, Problem, ReadState, StoredReadState, Summary};
pub use retry::RetryPolicy;
pub use settings::{Level, Mute, Settings};
pub use subscribe::{Event, Subscription};

/// The examples of the README compile (`cargo test --doc`).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
