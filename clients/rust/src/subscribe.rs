//! [`Subscription`]: the live changes of one user's read states, reconnecting by
//! itself.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{self, BoxStream};
use futures_util::{Stream, StreamExt};

use crate::client::Client;
use crate::error::Error;
use crate::proto::{self, ReadState};

/// One event of a [`Subscription`]. Every event has an id, the resume token
/// (`<process>-<sequence>`): pass the last one seen to
/// [`Client::subscribe_from`] to resume after it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The stream is open and nothing was missed. Sent on every (re)connection
    /// that resumed without a gap, so it may come more than once.
    Ready {
        /// The event id.
        id: String,
    },
    /// Changes were missed (the server restarted, the resume point is too old, or
    /// the subscriber fell behind): refetch the read states
    /// ([`Client::read_states`]); the stream goes on.
    Resync {
        /// The event id.
        id: String,
    },
    /// A read state changed.
    Change {
        /// The event id.
        id: String,
        /// What changed: `ack`, `mention`, `unread`, `join`, `leave`,
        /// `message_deleted`, `channel_deleted`, `settings` (mute or level,
        /// [`Client::update_settings`]), `user_deleted`
        /// ([`Client::delete_user`]).
        kind: String,
        /// The channel of the read state.
        channel: u64,
        /// The read state when the event was sent; `None` once it is gone
        /// (`leave`, `channel_deleted`, `user_deleted`).
        read_state: Option<ReadState>,
    },
}

impl Event {
    /// The event id (the resume token).
    pub fn id(&self) -> &str {
        match self {
            Event::Ready { id } | Event::Resync { id } | Event::Change { id, .. } => id,
        }
    }

    /// The event of a message; `None` for a kind this client does not know.
    fn from_message(event: proto::Event) -> Option<Event> {
        let id = event.id;
        Some(match event.event? {
            proto::event::Event::Ready(_) => Event::Ready { id },
            proto::event::Event::Resync(_) => Event::Resync { id },
            proto::event::Event::ReadState(change) => Event::Change {
                id,
                kind: change.r#type,
                channel: change.channel_id,
                read_state: change.read_state,
            },
        })
    }
}

/// The live changes of one user's read states ([`Client::subscribe`]): a
/// `Stream` of `Result<Event, Error>` that never ends by itself.
///
/// The first event is [`Event::Ready`] (or [`Event::Resync`] when resuming from
/// an id the server can no longer resume); then one [`Event::Change`] per change.
///
/// **Reconnection.** When the stream breaks or the server ends it (a restart, a
/// deploy, a network cut), the subscription reconnects by itself, with the
/// [`RetryPolicy`](crate::RetryPolicy)'s backoff (at least the server's
/// `RetryInfo` delay) and without a limit on the number of tries, resuming
/// after the last event id it saw. A server that still knows that id answers
/// [`Event::Ready`] and what was missed follows; otherwise (a new process) it
/// answers [`Event::Resync`]: refetch the read states, the changes follow. Only
/// a non-retryable error (e.g. [`Error::InvalidArgument`] for user id 0, or
/// [`Error::Unauthenticated`] when the client's token is refused, say a JWT that
/// expired) is yielded, as the last item: the stream then ends. Retryable errors
/// (a rate limit's `RESOURCE_EXHAUSTED` among them) are not yielded.
///
/// Every (re)connection sends the client's current token
/// ([`Client::with_token`]); replace it with [`Client::set_token`] before it
/// expires and the next reconnection uses the new one.
///
/// Dropping the subscription closes it.
pub struct Subscription {
    inner: BoxStream<'static, Result<Event, Error>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

enum State {
    /// (Re)connect, after a backoff when `failures > 0`.
    Connect,
    /// Read the open stream.
    Open(Box<tonic::Streaming<proto::Event>>),
    /// A non-retryable error was yielded.
    Done,
}

struct Machine {
    client: Client,
    user: u64,
    last_event_id: Option<String>,
    /// Consecutive failures to get an event (0 once one arrives).
    failures: u32,
    retry_after: Option<Duration>,
    state: State,
}

impl Machine {
    /// Records a retryable failure and schedules a reconnection, or answers the
    /// error that ends the stream.
    fn failed(&mut self, e: Error) -> Option<Error> {
        if e.is_retryable() {
            self.failures = self.failures.saturating_add(1);
            self.retry_after = e.retry_after();
            self.state = State::Connect;
            None
        } else {
            self.state = State::Done;
            Some(e)
        }
    }

    async fn next(&mut self) -> Option<Result<Event, Error>> {
        loop {
            match std::mem::replace(&mut self.state, State::Done) {
                State::Done => return None,
                State::Connect => {
                    if self.failures > 0 {
                        let wait = self
                            .client
                            .retry
                            .backoff(self.failures, self.retry_after.take());
                        tokio::time::sleep(wait).await;
                    }
                    let request = proto::SubscribeRequest {
                        user_id: self.user,
                        last_event_id: self.last_event_id.clone(),
                    };
                    match self.client.grpc.clone().subscribe(request).await {
                        Ok(reply) => self.state = State::Open(Box::new(reply.into_inner())),
                        Err(status) => {
                            if let Some(e) = self.failed(Error::from(status)) {
                                return Some(Err(e));
                            }
                        }
                    }
                }
                State::Open(mut events) => match events.message().await {
                    Ok(Some(message)) => {
                        self.failures = 0;
                        self.last_event_id = Some(message.id.clone());
                        self.state = State::Open(events);
                        if let Some(event) = Event::from_message(message) {
                            return Some(Ok(event));
                        }
                    }
                    // The server ended the stream (it is shutting down): reconnect.
                    Ok(None) => {
                        self.failures = self.failures.saturating_add(1);
                        self.state = State::Connect;
                    }
                    Err(status) => {
                        if let Some(e) = self.failed(Error::from(status)) {
                            return Some(Err(e));
                        }
                    }
                },
            }
        }
    }
}

impl Subscription {
    pub(crate) fn new(client: Client, user: u64, last_event_id: Option<String>) -> Subscription {
        let machine = Machine {
            client,
            user,
            last_event_id,
            failures: 0,
            retry_after: None,
            state: State::Connect,
        };
        let inner = stream::unfold(machine, |mut machine| async move {
            let item = machine.next().await?;
            Some((item, machine))
        })
        .boxed();
        Subscription { inner }
    }
}

impl Subscription {
    /// The next event: `futures_util::StreamExt::next` without the import.
    /// `None` only after a non-retryable error was answered.
    pub async fn next(&mut self) -> Option<Result<Event, Error>> {
        self.inner.next().await
    }
}

impl Stream for Subscription {
    type Item = Result<Event, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}
