//! One function per operation. HTTP, batch (and later gRPC and NATS) call these;
//! business rules live here and in `domain`, never in a transport.
//!
//! Every write follows the same path: reserve room in the commit queue (or answer
//! 503), make sure the touched entities are cached (loading each at most once), then
//! for each entity, under its shard lock, apply the effect to the cached value and
//! queue the storage write, marking the entry dirty. In `sync` mode the call then
//! waits for a barrier queued behind its writes, i.e. for the commit.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

use crate::cache::{Cache, CacheStats, Lookup, SHARDS};
use crate::commit::{CommitError, Committer, Entry, Key, Reserved};
use crate::config::Durability;
use crate::domain::{
    Caps, ChannelEffect, ChannelId, ChannelWindow, MessageId, Op, ReadPos, ReadStateView, StateRef,
    Summary, UserChange, UserEffect, UserId, UserStates, apply_user_effect, derive, expand,
};
use crate::live::{EventId, Hub, Kind, SubscribeError, Subscription};
use crate::store::{ChangeFeed, Changes, Store, StoreError, Write};

/// Page size of `readers` when no limit is given (lowered to `max_page` if that is
/// smaller).
pub const DEFAULT_READERS_LIMIT: u32 = 100;

/// Limits the service enforces on its inputs (each checked once, here).
#[derive(Debug, Clone, Copy)]
pub struct ServiceLimits {
    pub max_mentions: usize,
    pub max_batch_ops: usize,
    pub max_page: u32,
    pub max_summary_users: usize,
    pub max_channels_filter: usize,
}

/// An error of the service layer, sorted by what the client can do about it.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The input is invalid: fix `field`.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The thing asked for does not exist.
    #[error("{what} not found")]
    NotFound { what: &'static str },
    /// Too much unflushed work: retry after a moment.
    #[error("too many unflushed writes; retry later")]
    Overloaded,
    /// Storage is failing or the write's outcome is unknown: retry (writes are idempotent).
    #[error("{reason}")]
    Unavailable {
        reason: &'static str,
        #[source]
        source: Option<StoreError>,
    },
}

impl ServiceError {
    /// An invalid-input error for `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ServiceError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        crate::metrics::storage_error("load");
        tracing::warn!(error = %crate::error_chain(&e), "storage read failed");
        ServiceError::Unavailable {
            reason: "storage unavailable",
            source: Some(e),
        }
    }
}

impl From<CommitError> for ServiceError {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::QueueFull => ServiceError::Overloaded,
            CommitError::Failed => ServiceError::Unavailable {
                reason: "storage commit failed; the write may or may not have been applied",
                source: None,
            },
            CommitError::Stopped => ServiceError::Unavailable {
                reason: "shutting down",
                source: None,
            },
        }
    }
}

/// A read state with its mention ids, copied out of the cache.
struct OwnedState {
    channel: u64,
    read: ReadPos,
    mentions: Vec<(u64, u64)>,
}

impl OwnedState {
    fn as_ref(&self) -> StateRef<'_> {
        StateRef {
            channel: self.channel,
            read: self.read,
            mentions: &self.mentions,
        }
    }
}

/// Answered once the writes applied before it are durable.
#[derive(Debug)]
pub struct Durable {
    barrier: crate::commit::Barrier,
    timeout: Duration,
}

impl Durable {
    /// Waits for the commit, at most `storage.commit_timeout_ms`.
    ///
    /// # Errors
    /// The commit failed or timed out: the writes may or may not be durable.
    pub async fn wait(self) -> Result<(), ServiceError> {
        match tokio::time::timeout(self.timeout, self.barrier.wait()).await {
            Ok(result) => result.map_err(ServiceError::from),
            Err(_) => Err(ServiceError::Unavailable {
                reason: "storage commit timed out; the write may or may not have been applied",
                source: None,
            }),
        }
    }
}

/// How many times a call retries finding an entry it just loaded before giving up
/// (only a cache budget far too small for its working set gets there).
const MAX_ATTEMPTS: usize = 64;

/// The read-state service.
#[derive(Debug)]
pub struct Service {
    cache: Arc<Cache>,
    store: Arc<dyn Store>,
    committer: Committer,
    caps: Caps,
    limits: ServiceLimits,
    commit_timeout: Duration,
    /// Woken when a user load in that shard ends.
    user_loads: Box<[Notify]>,
    /// Woken when any channel load ends.
    channel_loads: Notify,
    /// Bumped by every channel delete: a user load that overlapped one reloads.
    delete_epoch: AtomicU64,
    /// Where every change of a read state is reported (live streams).
    hub: Arc<Hub>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What a [`Service`] is built from.
#[derive(Debug)]
pub struct ServiceParts {
    pub cache: Arc<Cache>,
    pub store: Arc<dyn Store>,
    pub committer: Committer,
    /// Where every change of a read state is reported (live streams).
    pub hub: Arc<Hub>,
    pub caps: Caps,
    pub limits: ServiceLimits,
    /// Longest wait of a `sync` write for its commit.
    pub commit_timeout: Duration,
}

/// The service's figures for metrics and the dashboard.
#[derive(Debug, Clone, Copy)]
pub struct ServiceStats {
    pub cache: CacheStats,
    /// `cache.max_bytes`.
    pub cache_budget: u64,
    /// Entries in the commit queue.
    pub queued: usize,
}

impl Service {
    /// Wires the service to its parts.
    pub fn new(parts: ServiceParts) -> Self {
        let ServiceParts {
            cache,
            store,
            committer,
            hub,
            caps,
            limits,
            commit_timeout,
        } = parts;
        Self {
            cache,
            store,
            committer,
            caps,
            limits,
            commit_timeout,
            user_loads: (0..SHARDS).map(|_| Notify::new()).collect(),
            channel_loads: Notify::new(),
            delete_epoch: AtomicU64::new(0),
            hub,
        }
    }

    /// Ok when the service can take requests: the database answers with every
    /// migration applied, and the last commit (or log sync) and checkpoint
    /// succeeded.
    ///
    /// # Errors
    /// [`ServiceError::Unavailable`] saying which check failed.
    pub async fn ready(&self) -> Result<(), ServiceError> {
        if let Err(e) = self.store.ready().await {
            return Err(ServiceError::Unavailable {
                reason: "not ready: storage is not available",
                source: Some(e),
            });
        }
        if !self.committer.is_healthy() {
            return Err(ServiceError::Unavailable {
                reason: "not ready: the last storage commit failed",
                source: None,
            });
        }
        Ok(())
    }

    /// Whether the last commit (or log sync) and the last checkpoint succeeded.
    pub fn storage_healthy(&self) -> bool {
        self.committer.is_healthy()
    }

    /// Entries reserved and not yet in the database (the `storage.max_unflushed`
    /// bound).
    pub fn unflushed(&self) -> usize {
        self.committer.unflushed()
    }

    /// Waits until everything written before is in the database (with the commit
    /// log: checkpointed).
    ///
    /// # Errors
    /// The commit failed or the writer stopped.
    pub async fn flush(&self) -> Result<(), ServiceError> {
        self.committer.flush().await.map_err(ServiceError::from)
    }

    /// Figures for metrics and the dashboard.
    pub fn stats(&self) -> ServiceStats {
        ServiceStats {
            cache: self.cache.stats(),
            cache_budget: self.cache.max_bytes(),
            queued: self.committer.queued(),
        }
    }

    /// Changes committed by other nodes, for cache invalidation (see
    /// [`Service::apply_remote_changes`]); `None` for a single-node backend.
    ///
    /// # Errors
    /// When the feed cannot be set up.
    pub async fn watch_storage(&self) -> Result<Option<Box<dyn ChangeFeed>>, StoreError> {
        self.store.watch().await
    }

    /// Opens a live subscription to `user`'s changes, resuming after the event id
    /// `last` when given and still known.
    ///
    /// # Errors
    /// Too many subscribers, or the streams have ended (shutting down).
    pub fn subscribe(
        &self,
        user: UserId,
        last: Option<&str>,
    ) -> Result<Subscription, SubscribeError> {
        self.hub.subscribe(user.get(), last)
    }

    /// Opens a live subscription to every user's changes (the change publisher).
    ///
    /// # Errors
    /// The streams have ended (shutting down).
    pub fn subscribe_all(&self) -> Result<Subscription, SubscribeError> {
        self.hub.subscribe_all()
    }

    /// The event id of change number `seq` (what a client resumes from).
    pub fn event_id(&self, seq: u64) -> EventId {
        self.hub.event_id(seq)
    }

    /// How often an idle live stream sends a heartbeat.
    pub fn heartbeat(&self) -> Duration {
        self.hub.heartbeat()
    }

    /// Ends every live stream and refuses new ones (the start of a shutdown).
    pub fn end_streams(&self) {
        self.hub.close();
    }

    /// Closes the storage connections, after the commit writer has drained.
    pub async fn close_storage(&self) {
        self.store.close().await;
    }

    /// The input limits.
    pub fn limits(&self) -> ServiceLimits {
        self.limits
    }

    /// Checks an operation against the limits.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming the offending field.
    pub fn validate(&self, op: &Op) -> Result<(), ServiceError> {
        if let Op::MessageCreated { mentions, .. } = op
            && mentions.len() > self.limits.max_mentions
        {
            return Err(ServiceError::invalid(
                "mentions",
                format!("at most {} users", self.limits.max_mentions),
            ));
        }
        Ok(())
    }

    /// Applies one write operation; in `sync` mode returns once it is durable.
    ///
    /// # Errors
    /// Invalid input, back pressure, or storage failure (the outcome is then unknown).
    pub async fn execute(&self, op: &Op) -> Result<(), ServiceError> {
        self.validate(op)?;
        // A full queue is found out before anything is applied.
        let barrier = self.reserve_barrier()?;
        self.apply(op).await?;
        self.wait_durable(barrier).await
    }

    /// Applies the ops of a batch in order, each with its own outcome, then waits
    /// once for all of them to be durable (`sync` mode). An op's invalid-input error
    /// names `ops[i].field`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] on `ops` when the batch has more than
    /// `max_batch_ops` ops (nothing is applied).
    pub async fn execute_batch(
        &self,
        ops: Vec<Result<Op, ServiceError>>,
    ) -> Result<Vec<Result<(), ServiceError>>, ServiceError> {
        if ops.len() > self.limits.max_batch_ops {
            return Err(ServiceError::invalid(
                "ops",
                format!("at most {} ops", self.limits.max_batch_ops),
            ));
        }
        let barrier = self.reserve_barrier()?;
        let mut results = self.apply_each(ops, |i| format!("ops[{i}].")).await;
        if results.iter().any(Result::is_ok)
            && let Err(e) = self.wait_durable(barrier).await
        {
            let reason = e.to_string();
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(match &e {
                    ServiceError::Overloaded => ServiceError::Overloaded,
                    _ => ServiceError::Unavailable {
                        reason: "storage commit failed; the write may or may not have been applied",
                        source: None,
                    },
                });
            }
            tracing::debug!(%reason, "batch commit failed");
        }
        Ok(results)
    }

    /// Applies many write operations in order without waiting for storage, and returns
    /// a barrier that is answered once all of them are durable, whatever
    /// `storage.durability` says (event ingest acknowledges only what is on disk, and
    /// goes on applying the next batch meanwhile). Per-op results as in
    /// [`Service::execute_batch`].
    ///
    /// # Errors
    /// No barrier could be queued (the queue is full or the writer stopped): whether
    /// the ops will be durable is unknown.
    pub async fn apply_then_barrier(
        &self,
        ops: Vec<Result<Op, ServiceError>>,
    ) -> (Vec<Result<(), ServiceError>>, Result<Durable, ServiceError>) {
        // Room for the barrier first: with a full queue nothing is applied, and the
        // valid ops get the same error as the barrier (the ingest redelivers them).
        let reserved = match self.committer.reserve(1) {
            Ok(reserved) => reserved,
            Err(e) => {
                let results = ops
                    .into_iter()
                    .map(|op| op.and_then(|_| Err(ServiceError::from(e.clone()))))
                    .collect();
                return (results, Err(e.into()));
            }
        };
        let results = self.apply_each(ops, |_| String::new()).await;
        (results, self.durable(reserved))
    }

    /// Validates and applies each op in order (no wait for storage); one result each.
    /// A validation error's field is prefixed with `prefix(i)` for op `i`.
    async fn apply_each(
        &self,
        ops: Vec<Result<Op, ServiceError>>,
        prefix: impl Fn(usize) -> String,
    ) -> Vec<Result<(), ServiceError>> {
        let mut results = Vec::with_capacity(ops.len());
        for (i, op) in ops.into_iter().enumerate() {
            results.push(match op {
                Ok(op) => match self.validate(&op) {
                    Ok(()) => self.apply(&op).await,
                    Err(ServiceError::Invalid { field, reason }) => Err(ServiceError::Invalid {
                        field: format!("{}{field}", prefix(i)),
                        reason,
                    }),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            });
        }
        results
    }

    /// In `sync` mode, room in the queue for the barrier a write waits on, reserved
    /// before the write applies anything (so a full queue answers 503 for a write
    /// that was not applied); nothing in `async` mode.
    fn reserve_barrier(&self) -> Result<Option<Reserved<'_>>, ServiceError> {
        if self.committer.durability() == Durability::Async {
            return Ok(None);
        }
        Ok(Some(self.committer.reserve(1)?))
    }

    /// Waits, in `sync` mode, until everything queued so far is durable.
    async fn wait_durable(&self, barrier: Option<Reserved<'_>>) -> Result<(), ServiceError> {
        match barrier {
            Some(reserved) => self.durable(reserved)?.wait().await,
            None => Ok(()),
        }
    }

    /// Spends `reserved` on a barrier behind every write queued so far.
    fn durable(&self, reserved: Reserved<'_>) -> Result<Durable, ServiceError> {
        Ok(Durable {
            barrier: reserved.into_barrier()?,
            timeout: self.commit_timeout,
        })
    }

    async fn apply(&self, op: &Op) -> Result<(), ServiceError> {
        if let Op::DeleteChannel { channel } = op {
            return self.delete_channel(channel.get());
        }
        let (channel, users) = expand(op);
        let mut reserved = self
            .committer
            .reserve(usize::from(channel.is_some()) + users.len())?;
        if let Some(effect) = channel {
            self.apply_channel(effect, &mut reserved).await?;
        }
        let now = now_ms();
        for effect in users {
            self.apply_user(effect, &mut reserved, now).await?;
        }
        Ok(())
    }

    async fn apply_channel(
        &self,
        effect: ChannelEffect,
        reserved: &mut Reserved<'_>,
    ) -> Result<(), ServiceError> {
        let (channel, message, deleted) =
            (effect.channel.get(), effect.message.get(), effect.deleted);
        let window = self.caps.channel_window();
        for _ in 0..MAX_ATTEMPTS {
            // Cached: one lock. Missing: load it, then try again.
            let applied = {
                let mut shard = self.cache.lock(self.cache.channel_shard(channel));
                shard
                    .update_channel(channel, |w| w.observe(message, deleted, window))
                    .map(|changed| {
                        if changed {
                            if deleted {
                                self.hub.publish_channel(channel, Kind::MessageDeleted);
                            }
                            shard.channels.add_pending(channel);
                            reserved.send(Entry {
                                keys: vec![Key::Channel(channel)],
                                writes: vec![Write::Message {
                                    channel,
                                    message,
                                    deleted,
                                }],
                                reply: None,
                                ..Entry::default()
                            });
                        }
                    })
            };
            if applied.is_some() {
                return Ok(());
            }
            self.ensure_channels(&[channel]).await?;
        }
        Err(thrashing())
    }

    async fn apply_user(
        &self,
        effect: UserEffect,
        reserved: &mut Reserved<'_>,
        now: u64,
    ) -> Result<(), ServiceError> {
        let user = effect.user().get();
        // Heads of the channels the effect needs, read before taking the user's lock.
        let heads: HashMap<u64, u64> = match effect {
            UserEffect::Join {
                channel,
                read: None,
                ..
            } => self.heads(&[channel.get()]).await?,
            UserEffect::AckAll { .. } => {
                let channels = self.user_channels(user).await?;
                self.heads(&channels).await?
            }
            _ => HashMap::new(),
        };
        let mention_window = self.caps.mention_window();
        for _ in 0..MAX_ATTEMPTS {
            // Cached: one lock. Missing: load it, then try again.
            let applied = {
                let mut shard = self.cache.lock(self.cache.user_shard(user));
                let head_of = |c: u64| heads.get(&c).copied().unwrap_or(0);
                shard
                    .update_user(user, |states| {
                        apply_user_effect(states, &effect, head_of, now, mention_window)
                    })
                    .map(|changes| {
                        if !changes.is_empty() {
                            for change in &changes {
                                self.hub
                                    .publish(user, change.channel(), Kind::of(&effect, change));
                            }
                            shard.users.add_pending(user);
                            let writes = changes.iter().map(|c| user_write(user, *c)).collect();
                            reserved.send(Entry {
                                keys: vec![Key::User(user)],
                                writes,
                                reply: None,
                                ..Entry::default()
                            });
                        }
                    })
            };
            if applied.is_some() {
                return Ok(());
            }
            self.ensure_user(user).await?;
        }
        Err(thrashing())
    }

    fn delete_channel(&self, channel: u64) -> Result<(), ServiceError> {
        let mut reserved = self.committer.reserve(1)?;
        let mut shards = self.cache.lock_all();
        // Loads that overlap this delete must not insert what storage held before it.
        self.delete_epoch.fetch_add(1, Ordering::SeqCst);
        self.committer.delete_started();
        let ci = self.cache.channel_shard(channel);
        shards[ci].channels.insert(channel, ChannelWindow::new());
        shards[ci].channels.add_pending(channel);
        let mut keys = vec![Key::Channel(channel)];
        let mut subscribed = self.hub.subscribed_users();
        subscribed.sort_unstable();
        for shard in shards.iter_mut() {
            for user in shard
                .users
                .update_all(|states| states.remove(channel).is_yes())
            {
                if subscribed.binary_search(&user).is_ok() {
                    self.hub.publish(user, channel, Kind::ChannelDeleted);
                }
                shard.users.add_pending(user);
                keys.push(Key::User(user));
            }
        }
        // A subscriber whose user is not cached may have had a state in the channel:
        // tell it too (a `channel_deleted` for a channel it was not in is harmless).
        for &user in &subscribed {
            if shards[self.cache.user_shard(user)]
                .users
                .get(user)
                .is_none()
            {
                self.hub.publish(user, channel, Kind::ChannelDeleted);
            }
        }
        reserved.send(Entry {
            keys,
            writes: vec![Write::DeleteChannel { channel }],
            reply: None,
            ..Entry::default()
        });
        Ok(())
    }

    /// Makes sure `user` is cached, loading it (once, however many callers ask).
    async fn ensure_user(&self, user: u64) -> Result<(), ServiceError> {
        let index = self.cache.user_shard(user);
        loop {
            let notified = self.user_loads[index].notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let lookup = self.cache.lock(index).lookup_user(user);
            match lookup {
                Lookup::Hit(()) => return Ok(()),
                Lookup::Loading => notified.await,
                Lookup::Miss => {
                    // If this future is dropped mid-load (request timeout, client gone),
                    // the guard clears the loading mark so that waiters retry.
                    let guard = UserLoadGuard {
                        service: self,
                        user,
                        index,
                    };
                    let loaded = self.load_user(user).await;
                    std::mem::forget(guard);
                    let inserted = {
                        let mut shard = self.cache.lock(index);
                        match loaded {
                            Ok(states) => Ok(shard.finish_user_load(user, states)),
                            Err(e) => {
                                shard.abort_user_load(user);
                                Err(e)
                            }
                        }
                    };
                    self.user_loads[index].notify_waiters();
                    // Not inserted: another node changed the user during the load; load again.
                    if inserted? {
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn load_user(&self, user: u64) -> Result<UserStates, ServiceError> {
        crate::metrics::cache_load("user");
        loop {
            if self.committer.deletes_pending() {
                self.committer.flush().await?;
            }
            let epoch = self.delete_epoch.load(Ordering::SeqCst);
            let states = self
                .store
                .load_user(user, self.caps.mention_window())
                .await?;
            if self.delete_epoch.load(Ordering::SeqCst) == epoch {
                return Ok(states);
            }
        }
    }

    /// Makes sure every listed channel is cached (one storage query for the misses).
    async fn ensure_channels(&self, channels: &[u64]) -> Result<(), ServiceError> {
        loop {
            let notified = self.channel_loads.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut own = Vec::new();
            let mut waiting = false;
            for &channel in channels {
                match self
                    .cache
                    .lock(self.cache.channel_shard(channel))
                    .lookup_channel(channel)
                {
                    Lookup::Hit(()) => {}
                    Lookup::Loading => waiting = true,
                    Lookup::Miss => own.push(channel),
                }
            }
            if own.is_empty() {
                if !waiting {
                    return Ok(());
                }
                notified.await;
                continue;
            }
            crate::metrics::cache_load("channel");
            let guard = ChannelLoadGuard {
                service: self,
                channels: &own,
            };
            let loaded = self
                .store
                .load_channels(&own, self.caps.channel_window())
                .await;
            std::mem::forget(guard);
            match loaded {
                Ok(windows) => {
                    let mut all_inserted = true;
                    for (channel, window) in windows {
                        // False when another node changed it during the load.
                        all_inserted &= self
                            .cache
                            .lock(self.cache.channel_shard(channel))
                            .finish_channel_load(channel, window);
                    }
                    self.channel_loads.notify_waiters();
                    if all_inserted && !waiting {
                        return Ok(());
                    }
                }
                Err(e) => {
                    for channel in own {
                        self.cache
                            .lock(self.cache.channel_shard(channel))
                            .abort_channel_load(channel);
                    }
                    self.channel_loads.notify_waiters();
                    return Err(e.into());
                }
            }
        }
    }

    async fn heads(&self, channels: &[u64]) -> Result<HashMap<u64, u64>, ServiceError> {
        self.with_channels(channels, |_, w| w.head()).await
    }

    /// Applies `f` to each listed channel's window, from the cache when possible.
    async fn with_channels<R>(
        &self,
        channels: &[u64],
        f: impl Fn(u64, &ChannelWindow) -> R,
    ) -> Result<HashMap<u64, R>, ServiceError> {
        let mut out = HashMap::with_capacity(channels.len());
        let mut missing: Vec<u64> = channels.to_vec();
        // Cached channels are read under one lock each; only misses are loaded.
        for attempt in 0..4 {
            if attempt > 0 {
                self.ensure_channels(&missing).await?;
            }
            missing.retain(|&c| {
                let mut shard = self.cache.lock(self.cache.channel_shard(c));
                if !shard.channels.touch(c) {
                    return true;
                }
                match shard.channels.get(c) {
                    Some(window) => {
                        out.insert(c, f(c, window));
                        false
                    }
                    None => true,
                }
            });
            if missing.is_empty() {
                return Ok(out);
            }
        }
        // Evicted as fast as loaded (a budget far too small): read storage directly.
        if !missing.is_empty() {
            for (c, window) in self
                .store
                .load_channels(&missing, self.caps.channel_window())
                .await?
            {
                out.insert(c, f(c, &window));
            }
        }
        Ok(out)
    }

    async fn user_channels(&self, user: u64) -> Result<Vec<u64>, ServiceError> {
        self.with_user(user, |states| states.channels().collect())
            .await
    }

    /// Applies `f` to the cached states of `user`, loading them if needed.
    async fn with_user<R>(
        &self,
        user: u64,
        f: impl Fn(&UserStates) -> R,
    ) -> Result<R, ServiceError> {
        for _ in 0..MAX_ATTEMPTS {
            if let Some(r) = self
                .cache
                .lock(self.cache.user_shard(user))
                .update_user(user, |states| f(states))
            {
                return Ok(r);
            }
            self.ensure_user(user).await?;
        }
        Err(thrashing())
    }

    /// The read states of `user` (all, or those of the listed channels), with derived fields.
    ///
    /// # Errors
    /// Storage failures while loading.
    pub async fn read_states(
        &self,
        user: UserId,
        channels: Option<&[ChannelId]>,
    ) -> Result<Vec<ReadStateView>, ServiceError> {
        if let Some(channels) = channels
            && channels.len() > self.limits.max_channels_filter
        {
            return Err(ServiceError::invalid(
                "channels",
                format!("at most {} channels", self.limits.max_channels_filter),
            ));
        }
        let filter: Option<Vec<u64>> = channels.map(|cs| {
            let mut v: Vec<u64> = cs.iter().map(|c| c.get()).collect();
            v.sort_unstable();
            v.dedup();
            v
        });
        let states: Vec<OwnedState> = self
            .with_user(user.get(), |states| {
                states
                    .iter()
                    .filter(|s| {
                        filter
                            .as_ref()
                            .is_none_or(|f| f.binary_search(&s.channel).is_ok())
                    })
                    .map(|s| OwnedState {
                        channel: s.channel,
                        read: s.read,
                        mentions: s.mentions.to_vec(),
                    })
                    .collect()
            })
            .await?;
        let ids: Vec<u64> = states.iter().map(|s| s.channel).collect();
        let caps = self.caps;
        // `states` is sorted by channel (as the user's states are), so each lookup is a search.
        let mut views = self
            .with_channels(&ids, |c, window| {
                let at = states.partition_point(|s| s.channel < c);
                derive(states[at].as_ref(), window, caps)
            })
            .await?;
        Ok(ids.iter().filter_map(|c| views.remove(c)).collect())
    }

    /// One read state.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`] when the user has no read state in the channel.
    pub async fn read_state(
        &self,
        user: UserId,
        channel: ChannelId,
    ) -> Result<ReadStateView, ServiceError> {
        self.read_states(user, Some(&[channel]))
            .await?
            .pop()
            .ok_or(ServiceError::NotFound { what: "read state" })
    }

    /// Unread channels and mention total of `user`.
    ///
    /// # Errors
    /// Storage failures while loading.
    pub async fn summary(&self, user: UserId) -> Result<Summary, ServiceError> {
        let mut summary = Summary::default();
        for view in self.read_states(user, None).await? {
            summary.add(&view);
        }
        Ok(summary)
    }

    /// Summaries of many users: one per distinct user, in the order asked.
    ///
    /// # Errors
    /// Too many users (counting repeats), or storage failures.
    pub async fn summaries(
        &self,
        users: &[UserId],
    ) -> Result<Vec<(UserId, Summary)>, ServiceError> {
        if users.len() > self.limits.max_summary_users {
            return Err(ServiceError::invalid(
                "user_ids",
                format!("at most {} users", self.limits.max_summary_users),
            ));
        }
        let mut seen = std::collections::HashSet::with_capacity(users.len());
        let mut out = Vec::with_capacity(users.len());
        for &user in users {
            if seen.insert(user) {
                out.push((user, self.summary(user).await?));
            }
        }
        Ok(out)
    }

    /// Read receipts: users whose read position in `channel` is at or past `message`,
    /// after the cursor `after`, at most `limit`; the next cursor when more may follow.
    ///
    /// # Errors
    /// A limit out of range, or storage failures.
    pub async fn readers(
        &self,
        channel: ChannelId,
        message: MessageId,
        after: Option<UserId>,
        limit: Option<u32>,
    ) -> Result<(Vec<UserId>, Option<UserId>), ServiceError> {
        let max_page = self.limits.max_page;
        let limit = match limit {
            None => DEFAULT_READERS_LIMIT.min(max_page),
            Some(limit) if (1..=max_page).contains(&limit) => limit,
            Some(_) => {
                return Err(ServiceError::invalid(
                    "limit",
                    format!("must be an integer between 1 and {max_page}"),
                ));
            }
        };
        // Receipts come from the database: in sync mode they show every acknowledged
        // write, so with the commit log the logged ones are checkpointed first.
        if self.committer.durability() == Durability::Sync
            && self.committer.database_lags()
            && self.committer.unflushed() > 0
        {
            self.committer.flush().await?;
        }
        let ids = self
            .store
            .readers(
                channel.get(),
                message.get(),
                after.map_or(0, UserId::get),
                limit,
            )
            .await?;
        let users: Vec<UserId> = ids
            .into_iter()
            .filter_map(|id| UserId::new(id).ok())
            .collect();
        let next = if users.len() == limit as usize {
            users.last().copied()
        } else {
            None
        };
        Ok((users, next))
    }

    /// Drops cached entries that another node sharing the database has written (the
    /// change feed of [`Store::watch`]): clean ones at once, dirty ones once their own
    /// writes commit, loads in flight are redone.
    pub fn apply_remote_changes(&self, changes: &Changes) {
        if changes.resync {
            tracing::info!("change feed resynchronising: dropping every cached entry");
            for mut shard in self.cache.lock_all() {
                shard.invalidate_all();
            }
            self.hub.resync_all();
            crate::metrics::remote_invalidation(0, true);
            return;
        }
        for &user in &changes.users {
            self.cache
                .lock(self.cache.user_shard(user))
                .invalidate_user(user);
            // What changed is not known here: the user's subscribers refetch.
            self.hub.resync_user(user);
        }
        for &channel in &changes.channels {
            self.cache
                .lock(self.cache.channel_shard(channel))
                .invalidate_channel(channel);
        }
        if !changes.deleted_channels.is_empty() {
            // Which users hold a state in the channel is known only by scanning: lock
            // every shard, as a local delete does (deletes are rare).
            let mut shards = self.cache.lock_all();
            for &channel in &changes.deleted_channels {
                for shard in shards.iter_mut() {
                    shard.invalidate_deleted_channel(channel);
                }
            }
            drop(shards);
            self.hub.resync_all();
        }
        crate::metrics::remote_invalidation(
            changes.users.len() + changes.channels.len() + changes.deleted_channels.len(),
            false,
        );
    }
}

/// Clears a user's loading mark if the loading future is dropped before it finishes.
struct UserLoadGuard<'a> {
    service: &'a Service,
    user: u64,
    index: usize,
}

impl Drop for UserLoadGuard<'_> {
    fn drop(&mut self) {
        self.service
            .cache
            .lock(self.index)
            .abort_user_load(self.user);
        self.service.user_loads[self.index].notify_waiters();
    }
}

/// Clears channels' loading marks if the loading future is dropped before it finishes.
struct ChannelLoadGuard<'a> {
    service: &'a Service,
    channels: &'a [u64],
}

impl Drop for ChannelLoadGuard<'_> {
    fn drop(&mut self) {
        for &channel in self.channels {
            self.service
                .cache
                .lock(self.service.cache.channel_shard(channel))
                .abort_channel_load(channel);
        }
        self.service.channel_loads.notify_waiters();
    }
}

fn user_write(user: u64, change: UserChange) -> Write {
    match change {
        UserChange::Read { channel, read } => Write::ReadPos {
            user,
            channel,
            epoch: read.epoch,
            pos: read.pos,
        },
        UserChange::Mention { channel, message } => Write::Mention {
            user,
            channel,
            message,
        },
        UserChange::Removed { channel } => Write::Leave { user, channel },
    }
}

fn thrashing() -> ServiceError {
    ServiceError::Unavailable {
        reason: "cache budget too small for the working set",
        source: None,
    }
}
