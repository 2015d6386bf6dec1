//! One function per operation. HTTP, batch (and later gRPC and NATS) call these;
//! business rules live here and in `domain`, never in a transport.
//!
//! Every write follows the same path: reserve room in the commit queue (or answer
//! 503), make sure the touched entities are cached (loading each at most once), then
//! for each entity, under its shard lock, apply the effect to the cached value and
//! queue the storage write, marking the entry dirty. In `sync` mode the call then
//! waits for a barrier queued behind its writes, i.e. for the commit.
//!
//! This file holds the service's parts and its small operations; `write` the
//! write path, `load` how entities get into the cache (and leave it on other
//! nodes' changes), `read` the queries.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use tokio::sync::Notify;

use crate::cache::{Cache, CacheStats, SHARDS};
use crate::commit::{CommitError, Committer};
use crate::domain::{Caps, UserId};
use crate::live::{EventId, Hub, SubscribeError, Subscription};
use crate::store::{ChangeFeed, Store, StoreError};

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
    /// Open change subscriptions (SSE, firehose).
    pub subscribers: usize,
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
            subscribers: self.hub.subscribers(),
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
    /// [`ServiceError::Overloaded`] with too many subscribers,
    /// [`ServiceError::Unavailable`] once the streams have ended (shutting down).
    pub fn subscribe(
        &self,
        user: UserId,
        last: Option<&str>,
    ) -> Result<Subscription, ServiceError> {
        self.hub.subscribe(user.get(), last).map_err(|e| match e {
            SubscribeError::TooMany => ServiceError::Overloaded,
            SubscribeError::Closed => ServiceError::Unavailable {
                reason: "shutting down",
                source: None,
            },
        })
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

    /// Cancelled once the live streams end (the start of a shutdown): long-lived
    /// calls (a gRPC `Write` stream) answer what they have and finish.
    pub fn closing(&self) -> &CancellationToken {
        self.hub.closed()
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
}

/// The wall clock in ms since the Unix epoch: stamps marks unread and writes
/// without `at`, and decides whether a mute has run out.
pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

mod load;
mod read;
mod write;

pub use read::{ChannelInfo, StoredState, Threads};
