//! Durable storage behind one interface, [`Store`], with one implementation per
//! database. Every write is a merge (see [`Write`]), so a batch may be replayed and
//! several nodes may write the same rows and still converge.

mod batch;
#[cfg(target_os = "linux")]
mod paced_vfs;
pub mod postgres;
mod rows;
pub mod sqlite;
#[cfg(target_os = "linux")]
mod sqlite_alloc;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
mod writeback;

use async_trait::async_trait;

use crate::domain::{ChannelMeta, ChannelWindow, Settings, UserStates};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// A storage error, classified by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is failing: retry later.
    #[error("storage unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// Migrations failed or are missing.
    #[error("storage migrations failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// The storage URL or options are unusable.
    #[error("invalid storage configuration: {0}")]
    Config(String),
    /// Stored data does not parse (never written by us).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Unavailable(e)
    }
}

/// One storage write: a merge into the stored state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Read position merged by lexicographic max of `(epoch, pos)`; creates the row.
    ///
    /// `at` says whether it is an ack: 0 for any other write (join, mark unread), else
    /// when the ack was made (ms; [`ACK_NOW`] for an ack without a stamp). An ack was
    /// applied in the epoch of the writing node's cached copy, which on a database
    /// shared by several nodes may be older than the stored one (another node marked
    /// the state unread a moment before): the database then raises the stored
    /// position within its own epoch, unless the ack is older than that epoch, as
    /// [`crate::domain::UserStates::ack`] does in memory.
    ReadPos {
        user: u64,
        channel: u64,
        epoch: u64,
        pos: u64,
        at: u64,
    },
    /// A mention id added to the state's set; creates the state at position 0.
    Mention {
        user: u64,
        channel: u64,
        message: u64,
    },
    /// A message id seen by the channel; `deleted` is sticky (a tombstone).
    Message {
        channel: u64,
        message: u64,
        deleted: bool,
    },
    /// Removes one read state, its mentions and its settings.
    Leave { user: u64, channel: u64 },
    /// Removes a channel, its messages, its metadata and every read state in it
    /// (with their mentions and settings).
    DeleteChannel { channel: u64 },
    /// A read state's notification settings, merged register by register (see
    /// [`Settings::merge`]). The state itself is written by its own [`Write::ReadPos`];
    /// settings of a state that has no row are ignored when loading.
    Settings {
        user: u64,
        channel: u64,
        settings: Settings,
    },
    /// A channel's metadata, merged as one register (see [`ChannelMeta::merge`]).
    ChannelMeta { channel: u64, meta: ChannelMeta },
    /// Removes every read state of the user, with their mentions and settings.
    DeleteUser { user: u64 },
}

impl Write {
    /// Whether the write removes rows (leave, delete channel, delete user): it orders
    /// against every write before and after it, so a commit applies it on its own
    /// and never runs it concurrently with another batch.
    pub fn is_removal(&self) -> bool {
        matches!(
            self,
            Write::Leave { .. } | Write::DeleteChannel { .. } | Write::DeleteUser { .. }
        )
    }
}

/// [`Write::ReadPos::at`] of an ack without an `at` stamp: it applies in whatever
/// epoch the stored state is in.
pub const ACK_NOW: u64 = i64::MAX as u64;

/// Keys that another node committed writes for: cached copies of them are stale.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub users: Vec<u64>,
    pub channels: Vec<u64>,
    /// Channels deleted: every cached read state in them is stale too.
    pub deleted_channels: Vec<u64>,
    /// Notifications may have been missed (the feed reconnected): every cached entry
    /// may be stale.
    pub resync: bool,
}

/// A stream of [`Changes`] committed by other nodes sharing the database.
#[async_trait]
pub trait ChangeFeed: Send {
    /// Waits for the next changes.
    ///
    /// # Errors
    /// When the feed cannot continue (the caller logs, waits and calls again; the next
    /// successful answer then carries `resync: true`).
    async fn next(&mut self) -> Result<Changes, StoreError>;
}

/// Durable storage of read states and channels.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Ok when the database answers and every migration is applied.
    async fn ready(&self) -> Result<(), StoreError>;

    /// Every read state of `user` (with mention ids), in one query.
    async fn load_user(&self, user: u64, mention_window: usize) -> Result<UserStates, StoreError>;

    /// The windows of `channels`, in one query; channels never seen come back empty.
    async fn load_channels(
        &self,
        channels: &[u64],
        window: usize,
    ) -> Result<Vec<(u64, ChannelWindow)>, StoreError>;

    /// Applies `writes` in order in one transaction; returns once it is durable.
    ///
    /// `Ok` only after a real `COMMIT` (never the release of a savepoint). On `Err`
    /// the outcome is in doubt, and the implementation must leave nothing behind: the
    /// next call starts outside any transaction (roll back and verify, or discard the
    /// connection), since the caller retries the same writes.
    async fn commit(&self, writes: &[Write]) -> Result<(), StoreError>;

    /// Applies a checkpoint of the commit log, as [`Store::commit`] does. `urgent`:
    /// the checkpoints are behind (writes near the unflushed bound), so this one
    /// must not wait for idle CPU; a store whose writer runs at the lowest priority
    /// writes it at normal priority instead. The default is `commit`.
    async fn checkpoint(&self, writes: &[Write], _urgent: bool) -> Result<(), StoreError> {
        self.commit(writes).await
    }

    /// Checkpoints have had nothing to write for a while: give back memory kept
    /// only to make the next one cheaper (SQLite: the writer's page cache). Errors
    /// are the store's to log; nothing durable depends on this. The default does
    /// nothing.
    async fn idle(&self) {}

    /// Users whose read position in `channel` is at or past `message`, with user id
    /// greater than `after`, ascending, at most `limit`.
    async fn readers(
        &self,
        channel: u64,
        message: u64,
        after: u64,
        limit: u32,
    ) -> Result<Vec<u64>, StoreError>;

    /// Changes committed by *other* nodes, for cache invalidation; `None` for a
    /// single-node backend (SQLite).
    ///
    /// # Errors
    /// When the feed cannot be set up.
    async fn watch(&self) -> Result<Option<Box<dyn ChangeFeed>>, StoreError> {
        Ok(None)
    }

    /// How many commit transactions may run at once (`direct` mode). Merges commute
    /// and each transaction writes its rows in key order, so concurrent batches
    /// neither conflict in outcome nor deadlock; batches with removals still run
    /// alone. 1 for a single-writer database (SQLite).
    fn commit_concurrency(&self) -> usize {
        1
    }

    /// Whether other nodes may write the same database (PostgreSQL). A node's cached
    /// copy can then lag behind the stored state by a change notification, so an ack
    /// that changes nothing in the cache is still written: the database applies it
    /// against what it holds (see [`Write::ReadPos`]).
    fn shared(&self) -> bool {
        false
    }

    /// Closes connections (after the commit writer has drained).
    async fn close(&self);
}

/// Readiness: the newest applied migration must be the newest one this build has.
pub(crate) fn check_migrated(applied: Option<i64>, latest: i64) -> Result<(), StoreError> {
    if applied.unwrap_or(0) < latest {
        return Err(StoreError::Config(format!(
            "migrations not applied (at {applied:?}, need {latest})"
        )));
    }
    Ok(())
}

/// Parses a comma-separated list of ids as stored by an aggregate.
pub(crate) fn parse_id_list(text: &str) -> Result<Vec<u64>, StoreError> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim()
                .parse::<u64>()
                .map_err(|_| StoreError::Corrupt(format!("bad id list {text:?}")))
        })
        .collect()
}
