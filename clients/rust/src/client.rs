//! [`Client`]: one typed method per RPC of `readstate.v1.ReadStates`, with retries.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::error::Error;
use crate::ops::epoch_ms;
use crate::proto::{
    self, ExportReply, Op, Problem, ReadState, Summary, read_states_client::ReadStatesClient,
};
use crate::retry::RetryPolicy;
use crate::settings::Settings;
use crate::subscribe::Subscription;

/// The generated tonic client the [`Client`] wraps: over the channel, through the
/// [`Credentials`] interceptor that adds the client's token to every call.
pub type Grpc = ReadStatesClient<InterceptedService<Channel, Credentials>>;

/// The bearer token of a [`Client`] ([`Client::with_token`]), as the tonic
/// interceptor that sends it: the `authorization` metadata `Bearer <token>` on every
/// call (unary, `Write` streams, `Subscribe` and its reconnections), unless the
/// request already carries one. Shared by the clones of a client, so that
/// [`Client::set_token`] replaces it for all of them.
///
/// Its `Debug` output never shows the token (`Credentials("***")`).
#[derive(Clone, Default)]
pub struct Credentials {
    /// `Bearer <token>`, marked sensitive (never indexed by HPACK); `None`: no
    /// token, calls go out without `authorization`.
    value: Arc<RwLock<Option<AsciiMetadataValue>>>,
}

impl Credentials {
    /// Credentials sending `token`.
    fn new(token: &str) -> Result<Credentials, Error> {
        Ok(Credentials {
            value: Arc::new(RwLock::new(Some(bearer(token)?))),
        })
    }

    fn get(&self) -> Option<AsciiMetadataValue> {
        self.value
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, value: Option<AsciiMetadataValue>) {
        *self.value.write().unwrap_or_else(PoisonError::into_inner) = value;
    }

    fn is_set(&self) -> bool {
        self.value
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = if self.is_set() { "\"***\"" } else { "None" };
        write!(f, "Credentials({shown})")
    }
}

impl Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = self.get() {
            let metadata = request.metadata_mut();
            if !metadata.contains_key("authorization") {
                metadata.insert("authorization", value);
            }
        }
        Ok(request)
    }
}

/// The `authorization` value of `token`: `Bearer <token>`, the token trimmed of
/// surrounding whitespace (a key read from a file ends with a newline).
fn bearer(token: &str) -> Result<AsciiMetadataValue, Error> {
    let token = token.trim();
    if token.is_empty() {
        return Err(Error::InvalidToken {
            reason: "it is empty",
        });
    }
    if token.starts_with("Bearer ") || token.starts_with("bearer ") {
        return Err(Error::InvalidToken {
            reason: "give the token alone, without the `Bearer ` prefix",
        });
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::InvalidToken {
            reason: "it may only hold visible ASCII characters (no spaces)",
        });
    }
    let mut value: AsciiMetadataValue = MetadataValue::try_from(format!("Bearer {token}"))
        .map_err(|_| Error::InvalidToken {
            reason: "it is not a valid metadata value",
        })?;
    value.set_sensitive(true);
    Ok(value)
}

/// One page of read receipts ([`Client::readers`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadersPage {
    /// Users whose read position is at or past the message, sorted by id.
    pub readers: Vec<u64>,
    /// Pass as `after` for the next page; `None` when this page is the last.
    pub next: Option<u64>,
}

/// A user's threads under a channel ([`Client::threads`]): their summary, and one
/// page of those unread or with a mention.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Threads {
    /// Over all the user's read states of threads under the channel: those with
    /// `has_unread`, not muted, level `all`.
    pub unread_threads: u64,
    /// Over the same: the sum of the (capped) mention counts of those whose
    /// level is not `nothing`.
    pub mentions: u64,
    /// The read states of this page, unread or with a mention, sorted by
    /// channel id.
    pub read_states: Vec<ReadState>,
    /// Pass as `after` for the next page; `None` when this page is the last.
    pub next: Option<u64>,
}

/// A client of readstate's gRPC API (`readstate.v1.ReadStates`).
///
/// Cheap to clone: clones share one HTTP/2 connection ([`tonic::transport::Channel`]),
/// which reconnects by itself when it breaks. Every method retries retryable
/// errors as the [`RetryPolicy`] allows (default: 3 tries), which is safe because
/// reads change nothing and every write is idempotent.
///
/// Ids are `u64` in `1..=2^63-1`; `0` is rejected by the server with
/// [`Error::InvalidArgument`] naming the field (e.g. `channel_id`).
///
/// A server with access control needs a token on every call: an API key or a
/// user's JWT, given with [`Client::with_token`] (and replaced with
/// [`Client::set_token`]). The `Debug` output never shows it.
#[derive(Clone)]
pub struct Client {
    pub(crate) grpc: Grpc,
    pub(crate) retry: RetryPolicy,
    timeout: Option<Duration>,
    channel: Channel,
    credentials: Credentials,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// The endpoint with this crate's connection settings: connect timeout 10 s,
    /// HTTP/2 keep-alive pings every 30 s (also on idle connections, so a
    /// subscription notices a dead server), `TCP_NODELAY`.
    fn endpoint(endpoint: String) -> Result<Endpoint, Error> {
        let parsed = Endpoint::from_shared(endpoint.clone())
            .map_err(|source| Error::InvalidEndpoint { endpoint, source })?;
        Ok(parsed
            .connect_timeout(Duration::from_secs(10))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true)
            .tcp_nodelay(true))
    }

    /// Connects to `endpoint` (`http://host:port`; the server's `grpc.addr`).
    ///
    /// # Errors
    /// [`Error::InvalidEndpoint`] when it is not a URI, [`Error::Transport`] when
    /// the server cannot be reached (retryable: this call does not retry).
    pub async fn connect(endpoint: impl Into<String>) -> Result<Client, Error> {
        let channel = Self::endpoint(endpoint.into())?.connect().await?;
        Ok(Self::from_channel(channel))
    }

    /// A client that connects on its first call (and never fails here for a
    /// server that is down). Needs a Tokio runtime.
    ///
    /// # Errors
    /// [`Error::InvalidEndpoint`] when `endpoint` is not a URI.
    pub fn connect_lazy(endpoint: impl Into<String>) -> Result<Client, Error> {
        Ok(Self::from_channel(
            Self::endpoint(endpoint.into())?.connect_lazy(),
        ))
    }

    /// A client over a channel configured by the caller (TLS, interceptors, ...).
    pub fn from_channel(channel: Channel) -> Client {
        let credentials = Credentials::default();
        Client {
            grpc: ReadStatesClient::with_interceptor(channel.clone(), credentials.clone()),
            retry: RetryPolicy::default(),
            timeout: None,
            channel,
            credentials,
        }
    }

    /// The same client sending `token` — an API key (`rsk_…`, from `readstate
    /// api-key new`) or a user's JWT — as the `authorization` metadata
    /// `Bearer <token>` on every call: unary calls, [`Client::write`] streams and
    /// every (re)connection of [`Client::subscribe`]. Give the token alone, without
    /// `Bearer `; surrounding whitespace is trimmed.
    ///
    /// The token is this client's and its clones' from now on (another client made
    /// from the same one with `with_token` has its own); [`Client::set_token`]
    /// replaces it for all of them. It never appears in `Debug` output or in
    /// errors.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), readstate_client::Error> {
    /// let key = std::env::var("READSTATE_API_KEY").expect("an API key");
    /// let client = readstate_client::Client::connect("http://127.0.0.1:50051")
    ///     .await?
    ///     .with_token(key)?;
    /// client.ack(42, 1000, 1).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidToken`] when the token is empty or holds characters that
    /// cannot be sent (spaces, control or non-ASCII characters).
    pub fn with_token(mut self, token: impl AsRef<str>) -> Result<Client, Error> {
        self.credentials = Credentials::new(token.as_ref())?;
        self.grpc =
            ReadStatesClient::with_interceptor(self.channel.clone(), self.credentials.clone());
        Ok(self)
    }

    /// Replaces the token of this client and of every clone of it, e.g. with a
    /// fresh JWT before the old one expires. Calls from now on send the new one;
    /// a [`Subscription`] in progress sends it when it reconnects, a
    /// [`Client::write`] when it retries. Works on a client that had no token too.
    ///
    /// # Errors
    /// [`Error::InvalidToken`], as [`Client::with_token`]; the token in use is
    /// then unchanged.
    pub fn set_token(&self, token: impl AsRef<str>) -> Result<(), Error> {
        self.credentials.set(Some(bearer(token.as_ref())?));
        Ok(())
    }

    /// Whether this client sends a token.
    pub fn has_token(&self) -> bool {
        self.credentials.is_set()
    }

    /// The same client with another retry policy ([`RetryPolicy::none`] to
    /// retry nothing).
    #[must_use]
    pub fn with_retries(mut self, policy: RetryPolicy) -> Client {
        self.retry = policy;
        self
    }

    /// The same client with a deadline on every try of every unary call (sent as
    /// `grpc-timeout`, and enforced here too): past it the try fails with
    /// [`Error::DeadlineExceeded`], which is retried. No deadline by default (the
    /// server still bounds a call by its `http.request_timeout_ms`). Does not
    /// apply to [`Client::write`] or [`Client::subscribe`].
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = Some(timeout);
        self
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// The generated tonic client, for what this one does not cover (it sends this
    /// client's token too).
    pub fn grpc(&self) -> Grpc {
        self.grpc.clone()
    }

    /// Calls a unary RPC with `message`, retrying as the policy allows.
    async fn unary<M, R, F, Fut>(&self, message: M, rpc: F) -> Result<R, Error>
    where
        M: Clone,
        F: Fn(Grpc, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let mut failures = 0;
        loop {
            let mut request = tonic::Request::new(message.clone());
            let answer = match self.timeout {
                Some(timeout) => {
                    request.set_timeout(timeout);
                    match tokio::time::timeout(timeout, rpc(self.grpc.clone(), request)).await {
                        Ok(answer) => answer.map_err(Error::from),
                        Err(_) => Err(Error::DeadlineExceeded {
                            message: format!("no answer within {timeout:?}"),
                        }),
                    }
                }
                None => rpc(self.grpc.clone(), request).await.map_err(Error::from),
            };
            match answer {
                Ok(reply) => return Ok(reply.into_inner()),
                Err(e) => {
                    failures += 1;
                    if !e.is_retryable() || !self.retry.may_retry(failures) {
                        return Err(e);
                    }
                    tokio::time::sleep(self.retry.backoff(failures, e.retry_after())).await;
                }
            }
        }
    }

    /// A message was posted in `channel`: unread counts grow, the `mentions` get
    /// a mention, and the `author`'s read position moves to it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an id of 0 or too many mentions; see [`Error`].
    pub async fn message_created(
        &self,
        channel: u64,
        message: u64,
        author: Option<u64>,
        mentions: &[u64],
    ) -> Result<(), Error> {
        let request = proto::MessageCreatedRequest {
            channel_id: channel,
            message_id: message,
            author_id: author,
            mentions: mentions.to_vec(),
        };
        self.unary(
            request,
            |mut g, r| async move { g.message_created(r).await },
        )
        .await
        .map(drop)
    }

    /// A message was deleted: it no longer counts as unread or as a mention.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn message_deleted(&self, channel: u64, message: u64) -> Result<(), Error> {
        let request = proto::MessageDeletedRequest {
            channel_id: channel,
            message_id: message,
        };
        self.unary(
            request,
            |mut g, r| async move { g.message_deleted(r).await },
        )
        .await
        .map(drop)
    }

    /// The channel and every read state in it are gone (idempotent).
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn delete_channel(&self, channel: u64) -> Result<(), Error> {
        let request = proto::DeleteChannelRequest {
            channel_id: channel,
        };
        self.unary(request, |mut g, r| async move { g.delete_channel(r).await })
            .await
            .map(drop)
    }

    /// Sets what the channel belongs to: a thread's `parent` channel and a
    /// `group` (guild, team, workspace or category); `None` unsets. Setting it
    /// again replaces both. A thread without a group of its own belongs to its
    /// parent's group. Answers the channel.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] on `parent_id` for a parent equal to the
    /// channel or under it (a cycle); see [`Error`].
    pub async fn set_channel(
        &self,
        channel: u64,
        parent: Option<u64>,
        group: Option<u64>,
    ) -> Result<proto::Channel, Error> {
        self.set_channel_request(proto::SetChannelRequest {
            channel_id: channel,
            parent_id: parent,
            group_id: group,
            at: None,
        })
        .await
    }

    /// [`Client::set_channel`] made at `at` (sent as `at`, ms since the epoch):
    /// ignored when older than the metadata in place (without `at`, a write is
    /// stamped on arrival), so a redelivered old write does not undo a newer one.
    ///
    /// # Errors
    /// See [`Client::set_channel`].
    pub async fn set_channel_at(
        &self,
        channel: u64,
        parent: Option<u64>,
        group: Option<u64>,
        at: SystemTime,
    ) -> Result<proto::Channel, Error> {
        self.set_channel_request(proto::SetChannelRequest {
            channel_id: channel,
            parent_id: parent,
            group_id: group,
            at: Some(epoch_ms(at)),
        })
        .await
    }

    async fn set_channel_request(
        &self,
        request: proto::SetChannelRequest,
    ) -> Result<proto::Channel, Error> {
        self.unary(request, |mut g, r| async move { g.set_channel(r).await })
            .await
    }

    /// The channel's metadata (parent, group) and newest message; `None` for a
    /// channel the server has never seen (`NOT_FOUND`).
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn channel(&self, channel: u64) -> Result<Option<proto::Channel>, Error> {
        let request = proto::GetChannelRequest {
            channel_id: channel,
        };
        match self
            .unary(request, |mut g, r| async move { g.get_channel(r).await })
            .await
        {
            Ok(channel) => Ok(Some(channel)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Read receipts: one page of the users whose read position is at or past
    /// `message`, sorted by id, after the cursor `after` (the previous page's
    /// `next`); `limit` is the page size (server default 100).
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn readers(
        &self,
        channel: u64,
        message: u64,
        after: Option<u64>,
        limit: Option<u32>,
    ) -> Result<ReadersPage, Error> {
        let request = proto::ReadersRequest {
            channel_id: channel,
            message_id: message,
            after,
            limit,
        };
        let reply = self
            .unary(request, |mut g, r| async move { g.readers(r).await })
            .await?;
        Ok(ReadersPage {
            readers: reply.readers,
            next: reply.next,
        })
    }

    /// The user joins the channel (a no-op when already in it), starting at
    /// `last_read` (`Some(0)`: nothing read; `None`: the channel's newest message).
    /// Answers the read state.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn join(
        &self,
        user: u64,
        channel: u64,
        last_read: Option<u64>,
    ) -> Result<ReadState, Error> {
        let request = proto::JoinRequest {
            user_id: user,
            channel_id: channel,
            last_read_message_id: last_read,
        };
        self.unary(request, |mut g, r| async move { g.join(r).await })
            .await
    }

    /// The user leaves the channel: the read state is removed (idempotent).
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn leave(&self, user: u64, channel: u64) -> Result<(), Error> {
        let request = proto::LeaveRequest {
            user_id: user,
            channel_id: channel,
        };
        self.unary(request, |mut g, r| async move { g.leave(r).await })
            .await
            .map(drop)
    }

    /// The user's read state in the channel; `None` when they have none
    /// (`NOT_FOUND`).
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn read_state(&self, user: u64, channel: u64) -> Result<Option<ReadState>, Error> {
        let request = proto::GetReadStateRequest {
            user_id: user,
            channel_id: channel,
        };
        match self
            .unary(request, |mut g, r| async move { g.get_read_state(r).await })
            .await
        {
            Ok(state) => Ok(Some(state)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The user's read states in `channels` (all of them when empty), sorted by
    /// channel id.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn read_states(&self, user: u64, channels: &[u64]) -> Result<Vec<ReadState>, Error> {
        let request = proto::GetReadStatesRequest {
            user_id: user,
            channels: channels.to_vec(),
            group_id: None,
        };
        let reply = self
            .unary(
                request,
                |mut g, r| async move { g.get_read_states(r).await },
            )
            .await?;
        Ok(reply.read_states)
    }

    /// The user's read states of channels in `group` (their own group, or a
    /// thread's parent's), sorted by channel id.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn read_states_in_group(
        &self,
        user: u64,
        group: u64,
    ) -> Result<Vec<ReadState>, Error> {
        let request = proto::GetReadStatesRequest {
            user_id: user,
            channels: Vec::new(),
            group_id: Some(group),
        };
        let reply = self
            .unary(
                request,
                |mut g, r| async move { g.get_read_states(r).await },
            )
            .await?;
        Ok(reply.read_states)
    }

    /// The user has read up to `message` (an ack never moves the read position
    /// back). Answers the read state.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn ack(&self, user: u64, channel: u64, message: u64) -> Result<ReadState, Error> {
        self.ack_request(proto::AckRequest {
            user_id: user,
            channel_id: channel,
            message_id: message,
            at: None,
        })
        .await
    }

    /// [`Client::ack`] made at `at` (sent as `at`, ms since the epoch): ignored
    /// when older than the read state's latest [`Client::mark_unread`], so a
    /// late ack from another device does not undo it.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn ack_at(
        &self,
        user: u64,
        channel: u64,
        message: u64,
        at: SystemTime,
    ) -> Result<ReadState, Error> {
        self.ack_request(proto::AckRequest {
            user_id: user,
            channel_id: channel,
            message_id: message,
            at: Some(epoch_ms(at)),
        })
        .await
    }

    async fn ack_request(&self, request: proto::AckRequest) -> Result<ReadState, Error> {
        self.unary(request, |mut g, r| async move { g.ack(r).await })
            .await
    }

    /// Marks unread from `message` on: the read position moves to just before
    /// it. Answers the read state.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn mark_unread(
        &self,
        user: u64,
        channel: u64,
        message: u64,
    ) -> Result<ReadState, Error> {
        let request = proto::MarkUnreadRequest {
            user_id: user,
            channel_id: channel,
            message_id: message,
        };
        self.unary(request, |mut g, r| async move { g.mark_unread(r).await })
            .await
    }

    /// Sets the notification settings of the user's read state in the channel
    /// (mute, level); a field of `settings` left `None` keeps its value, and per
    /// field the newest [`Settings::at`] wins. Creates the read state like
    /// [`Client::join`] does. Answers the read state (`muted`, `level`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] on `muted_until` for a [`Mute::Until`] past
    /// [`Mute::FOREVER_MS`]; see [`Error`].
    ///
    /// [`Mute::Until`]: crate::Mute::Until
    /// [`Mute::FOREVER_MS`]: crate::Mute::FOREVER_MS
    pub async fn update_settings(
        &self,
        user: u64,
        channel: u64,
        settings: Settings,
    ) -> Result<ReadState, Error> {
        let request = settings.request(user, channel);
        self.unary(
            request,
            |mut g, r| async move { g.update_settings(r).await },
        )
        .await
    }

    /// Every read state of the user is read up to its channel's newest message.
    /// Answers all the user's read states afterwards.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn ack_all(&self, user: u64) -> Result<Vec<ReadState>, Error> {
        let request = proto::AckAllRequest { user_id: user };
        let reply = self
            .unary(request, |mut g, r| async move { g.ack_all(r).await })
            .await?;
        Ok(reply.read_states)
    }

    /// Unread channels, unread threads and mention total of one user, over all
    /// their read states (muted ones and those of level `mentions` are not
    /// unread; those of level `nothing` have no mentions).
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn summary(&self, user: u64) -> Result<Summary, Error> {
        let request = proto::GetSummaryRequest {
            user_id: user,
            group_id: None,
        };
        self.unary(request, |mut g, r| async move { g.get_summary(r).await })
            .await
    }

    /// [`Client::summary`] over the user's read states of channels in `group`
    /// (their own group, or a thread's parent's).
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn group_summary(&self, user: u64, group: u64) -> Result<Summary, Error> {
        let request = proto::GetSummaryRequest {
            user_id: user,
            group_id: Some(group),
        };
        self.unary(request, |mut g, r| async move { g.get_summary(r).await })
            .await
    }

    /// A summary per group in which the user has a read state, by group id (the
    /// badges of a guild list in one call).
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn groups(&self, user: u64) -> Result<BTreeMap<u64, Summary>, Error> {
        let request = proto::GetGroupsRequest { user_id: user };
        let reply = self
            .unary(request, |mut g, r| async move { g.get_groups(r).await })
            .await?;
        Ok(reply.groups.into_iter().collect())
    }

    /// The user's threads under `channel`: their summary, and one page (sorted
    /// by channel id) of those unread or with a mention, after the cursor `after`
    /// (the previous page's `next`); `limit` is the page size (server default
    /// 100).
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn threads(
        &self,
        user: u64,
        channel: u64,
        after: Option<u64>,
        limit: Option<u32>,
    ) -> Result<Threads, Error> {
        let request = proto::GetThreadsRequest {
            user_id: user,
            channel_id: channel,
            after,
            limit,
        };
        let reply = self
            .unary(request, |mut g, r| async move { g.get_threads(r).await })
            .await?;
        Ok(Threads {
            unread_threads: reply.unread_threads,
            mentions: reply.mentions,
            read_states: reply.read_states,
            next: reply.next,
        })
    }

    /// Summaries of many users: one per distinct user, in request order.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn summaries(&self, users: &[u64]) -> Result<Vec<(u64, Summary)>, Error> {
        let request = proto::GetSummariesRequest {
            user_ids: users.to_vec(),
        };
        let reply = self
            .unary(request, |mut g, r| async move { g.get_summaries(r).await })
            .await?;
        Ok(reply
            .summaries
            .into_iter()
            .map(|s| {
                (
                    s.user_id,
                    Summary {
                        unread_channels: s.unread_channels,
                        mentions: s.mentions,
                        unread_threads: s.unread_threads,
                    },
                )
            })
            .collect())
    }

    /// Removes every read state, mention and setting of the user (idempotent); a
    /// later write about the user starts afresh. An API key needs the `admin`
    /// scope.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn delete_user(&self, user: u64) -> Result<(), Error> {
        let request = proto::DeleteUserRequest { user_id: user };
        self.unary(request, |mut g, r| async move { g.delete_user(r).await })
            .await
            .map(drop)
    }

    /// Everything stored about the user: every read state with its read
    /// position and unread epoch, mention ids and settings, sorted by channel
    /// id (none for an unknown user). An API key needs the `admin` scope.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn export_user(&self, user: u64) -> Result<ExportReply, Error> {
        let request = proto::ExportUserRequest { user_id: user };
        self.unary(request, |mut g, r| async move { g.export_user(r).await })
            .await
    }

    /// Many writes in one call, applied in order: one result per op, in order. A
    /// bad op fails alone (its [`Problem`] names the field, e.g.
    /// `ops[1].channel_id`); the others are applied.
    ///
    /// The whole batch is resent on a retryable error (every op is idempotent).
    ///
    /// # Errors
    /// The call itself failed (more than `limits.max_batch_ops` ops is
    /// [`Error::InvalidArgument`] on `ops`, and nothing is applied).
    pub async fn batch(&self, ops: Vec<Op>) -> Result<Vec<Result<(), Problem>>, Error> {
        let request = proto::BatchRequest { ops };
        let reply = self
            .unary(request, |mut g, r| async move { g.batch(r).await })
            .await?;
        Ok(reply.results.into_iter().map(op_result).collect())
    }

    /// Live changes of the user's read states; see [`Subscription`]. Connects on
    /// the first poll and reconnects by itself.
    pub fn subscribe(&self, user: u64) -> Subscription {
        Subscription::new(self.clone(), user, None)
    }

    /// [`Client::subscribe`], resuming after the event `last_event_id` (the id of
    /// the last [`Event`](crate::Event) seen, e.g. by an earlier process). The
    /// first event is `Ready` when nothing was missed, `Resync` otherwise.
    pub fn subscribe_from(&self, user: u64, last_event_id: impl Into<String>) -> Subscription {
        Subscription::new(self.clone(), user, Some(last_event_id.into()))
    }
}

/// The result of one op.
pub(crate) fn op_result(result: proto::OpResult) -> Result<(), Problem> {
    match (result.ok, result.error) {
        (true, _) => Ok(()),
        (false, Some(problem)) => Err(problem),
        (false, None) => Err(Problem {
            r#type: "about:blank".to_owned(),
            title: "Op failed".to_owned(),
            status: 500,
            detail: "the server answered a failed op without a problem".to_owned(),
            field: None,
        }),
    }
}
