//! PostgreSQL storage, for production and for several nodes sharing one database.
//!
//! - **Pool.** One [`PgPool`] of `storage.pool_size` connections serves loads,
//!   readers and the commit writer. Every connection starts with `statement_timeout`
//!   set (and `synchronous_commit = off` in `async` mode only; in `sync` mode the
//!   server's setting, `on` by default, is left alone). Acquiring a connection waits at
//!   most `storage.timeout_ms`; every query is also bounded on our side (statement
//!   timeout + `storage.timeout_ms`), so a database that stops answering fails the call
//!   instead of hanging it. A connection abandoned that way is closed, never reused.
//! - **Commit.** A batch is one round trip: one multi-statement SQL string, built by
//!   `commit_sql`, sent as a simple query on one connection inside `begin; ... commit;`.
//!   As in the SQLite store, the batch is split into segments at the order-sensitive
//!   removals (leave, delete channel, delete user); within a segment the merges are
//!   combined in memory and written with one `insert ... select from unnest(...) on
//!   conflict do update` per table, rows sorted by primary key (nodes then take row
//!   locks in the same order; a deadlock remains possible only across segments of
//!   concurrent batches, and PostgreSQL then aborts one batch, which the commit writer
//!   retries). Mentioned states are created by the read-state upsert itself, so read
//!   states are written by one statement per segment, in key order. Merge expressions
//!   (max of the read position, set union of ids, sticky tombstones, per-register
//!   last-writer-wins of settings and channel metadata) make a replayed batch harmless
//!   and let nodes converge.
//! - **Change feed.** The same string ends with `pg_notify('readstate_changes', ...)`
//!   naming every user and channel the batch wrote; PostgreSQL delivers it only if and
//!   when the transaction commits. `PgStore`'s [`Store::watch`] listens on that channel so other
//!   nodes drop their cached copies; a reconnect of the listener (notifications may have
//!   been missed) is reported as a resync.
//! - **Files.** `sql.rs` builds the commit's SQL, `feed.rs` the notifications and
//!   the listener; this file holds the pool and the [`Store`] implementation.
//! - **Migrations.** `migrations/postgres`, applied on a dedicated connection (no
//!   statement timeout: a migration may legitimately run long) that is closed afterwards,
//!   so sqlx's migration advisory lock can never stay behind in the pool after a failure.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Row};

mod feed;
mod sql;

use super::rows::{ChannelRows, UserRows, id, uid};
use super::{ChangeFeed, Store, StoreError, Write};
use crate::domain::{ChannelWindow, UserStates};
use feed::PgFeed;
use sql::commit_sql;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// The LISTEN/NOTIFY channel carrying committed changes between nodes.
pub const CHANGES_CHANNEL: &str = "readstate_changes";

/// Largest notification payload we send, in bytes (PostgreSQL's limit is 8000).
pub const MAX_PAYLOAD_BYTES: usize = 7_900;

/// How the PostgreSQL store is opened.
#[derive(Clone)]
pub struct PgOptions {
    /// `postgres://` or `postgresql://` URL (libpq syntax, as sqlx parses it).
    pub url: String,
    /// Most pooled connections (loads, readers and the commit writer share them).
    pub pool_size: u32,
    /// Longest wait for a connection from the pool (and for opening one).
    pub timeout: Duration,
    /// Server-side limit on each statement (`statement_timeout`, set per connection).
    pub statement_timeout: Duration,
    /// `true` (`sync` durability): leave `synchronous_commit` as the server has it
    /// (`on`); `false` (`async`): set it `off` for our sessions.
    pub synchronous_commit: bool,
    /// Message ids each channel keeps (the engine's channel window).
    pub channel_window: usize,
    /// Mention ids each read state keeps.
    pub mention_window: usize,
    /// This process's id in change notifications (its own are ignored by its feed).
    pub node_id: u64,
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("PgOptions")
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("synchronous_commit", &self.synchronous_commit)
            .field("channel_window", &self.channel_window)
            .field("mention_window", &self.mention_window)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// PostgreSQL-backed [`Store`].
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Options of pooled connections (with the statement timeout).
    session: PgConnectOptions,
    /// Options of the migration connection (no statement timeout).
    migration: PgConnectOptions,
    timeout: Duration,
    /// Our bound on one query: statement timeout plus `timeout`.
    deadline: Duration,
    channel_window: i64,
    mention_window: i64,
    node_id: u64,
    /// Commit transactions run at once: half the pool (the rest serves loads), at
    /// most 8.
    commit_lanes: usize,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("pool", &self.pool)
            .field("deadline", &self.deadline)
            .field("channel_window", &self.channel_window)
            .field("mention_window", &self.mention_window)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

fn timed_out(what: &str) -> StoreError {
    StoreError::Unavailable(sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what}: no answer from PostgreSQL in time"),
    )))
}

impl PgStore {
    /// Opens a pool on the database at `opts.url` (one connection is made at once, so
    /// an unreachable database fails here).
    ///
    /// # Errors
    /// [`StoreError::Config`] for an unusable URL, [`StoreError::Unavailable`] when the
    /// database cannot be reached.
    pub async fn open(opts: &PgOptions) -> Result<Self, StoreError> {
        if !(opts.url.starts_with("postgres://") || opts.url.starts_with("postgresql://")) {
            return Err(StoreError::Config(
                "not a postgres:// or postgresql:// URL".to_owned(),
            ));
        }
        let base = PgConnectOptions::from_str(&opts.url)
            .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL: {e}")))?
            .application_name("readstate");
        let statement_ms = opts.statement_timeout.as_millis().max(1).to_string();
        let mut settings = vec![("statement_timeout", statement_ms)];
        if !opts.synchronous_commit {
            settings.push(("synchronous_commit", "off".to_owned()));
        }
        let session = base.clone().options(settings);
        let migration = base.options([("statement_timeout", "0")]);
        let pool = PgPoolOptions::new()
            .max_connections(opts.pool_size.max(1))
            .acquire_timeout(opts.timeout)
            // No ping before each use: a commit stays one round trip. A connection that
            // died while idle fails its one query (a commit is retried, a load answers
            // 503 once) and is then discarded by the pool.
            .test_before_acquire(false)
            .connect_with(session.clone())
            .await?;
        let store = Self {
            pool,
            session,
            migration,
            timeout: opts.timeout,
            deadline: opts.statement_timeout + opts.timeout,
            channel_window: i64::try_from(opts.channel_window).unwrap_or(i64::MAX),
            mention_window: i64::try_from(opts.mention_window.max(1)).unwrap_or(i64::MAX),
            node_id: opts.node_id,
            commit_lanes: (opts.pool_size as usize / 2).clamp(1, 8),
        };
        if opts.synchronous_commit {
            store.warn_if_commits_are_not_durable().await;
        }
        Ok(store)
    }

    /// This store's node id in change notifications.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// `sync` mode promises durable commits; say so loudly when the server (or the
    /// role or database defaults) turned `synchronous_commit` off.
    async fn warn_if_commits_are_not_durable(&self) {
        let setting = self
            .with_conn(|c| {
                // A session setting: no table, no index.
                Box::pin(async move {
                    sqlx::query_scalar::<_, String>("select current_setting('synchronous_commit')")
                        .fetch_one(c)
                        .await
                })
            })
            .await;
        if let Ok(setting) = setting
            && setting == "off"
        {
            tracing::warn!(
                synchronous_commit = %setting,
                "PostgreSQL has synchronous_commit = off: sync durability cannot survive a database crash"
            );
        }
    }

    /// Runs `f` on one pooled connection, bounded by the query deadline. A connection
    /// whose query did not finish in time is closed instead of going back to the pool.
    async fn with_conn<T: Send>(
        &self,
        f: impl for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T, sqlx::Error>> + Send,
    ) -> Result<T, StoreError> {
        let mut conn = self.pool.acquire().await?;
        match tokio::time::timeout(self.deadline, f(&mut conn)).await {
            Ok(result) => Ok(result?),
            Err(_) => {
                conn.close_on_drop();
                Err(timed_out("query"))
            }
        }
    }
}

#[async_trait]
impl Store for PgStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        // sqlx-postgres 0.9.0 (src/migrate.rs) takes `pg_advisory_lock` keyed by the
        // database name before it creates `_sqlx_migrations` and releases it after the
        // last migration, so nodes starting at once apply each migration once. The
        // connection is our own and closed at the end: a failure cannot leave that
        // session-level lock held on a pooled connection.
        let mut conn =
            tokio::time::timeout(self.timeout, PgConnection::connect_with(&self.migration))
                .await
                .map_err(|_| timed_out("connect for migrations"))??;
        // `run_direct` is what `run` calls after acquiring; calling it directly avoids
        // the "`Acquire` is not general enough" error of `run(&mut conn)` in a `Send`
        // future (sqlx's own comment on it says as much).
        let result = MIGRATOR
            .run_direct(None, &mut conn, false)
            .await
            .map_err(StoreError::Migrate);
        if result.is_ok() {
            let _ = conn.close().await;
        }
        result
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        // _sqlx_migrations primary key (a handful of rows).
        let applied: Option<i64> = self
            .with_conn(|c| {
                Box::pin(async move {
                    sqlx::query_scalar("select max(version) from _sqlx_migrations where success")
                        .fetch_one(c)
                        .await
                })
            })
            .await?;
        super::check_migrated(applied, latest)
    }

    async fn load_user(&self, user: u64, mention_window: usize) -> Result<UserStates, StoreError> {
        let user_id = id(user);
        // read_states primary key (range scan on the user_id prefix) joined with the
        // mentions and settings primary keys (the planner carries user_id over: range
        // scans again). A state has at most one settings row, so the join repeats it
        // once per mention at most (merging it again changes nothing).
        let rows = self
            .with_conn(|c| {
                Box::pin(async move {
                    sqlx::query(
                        "select r.channel_id, r.epoch, r.pos, m.message_id, \
                         s.muted_until, s.muted_at, s.level, s.level_at \
                         from read_states r left join mentions m \
                           on m.user_id = r.user_id and m.channel_id = r.channel_id \
                         left join settings s \
                           on s.user_id = r.user_id and s.channel_id = r.channel_id \
                         where r.user_id = $1",
                    )
                    .bind(user_id)
                    .fetch_all(c)
                    .await
                })
            })
            .await?;
        let mut states = UserRows::new(mention_window);
        for row in rows {
            let channel: i64 = row.try_get(0)?;
            let read = (row.try_get(1)?, row.try_get(2)?);
            states.read(channel, read.0, read.1)?;
            let mention: Option<i64> = row.try_get(3)?;
            if let Some(message) = mention {
                states.mention(channel, uid(message)?)?;
            }
            let muted_until: Option<i64> = row.try_get(4)?;
            if let Some(muted_until) = muted_until {
                let settings = [
                    muted_until,
                    row.try_get(5)?,
                    row.try_get(6)?,
                    row.try_get(7)?,
                ];
                states.settings(channel, read, settings)?;
            }
        }
        Ok(states.finish())
    }

    async fn load_channels(
        &self,
        channels: &[u64],
        window: usize,
    ) -> Result<Vec<(u64, ChannelWindow)>, StoreError> {
        let mut list: Vec<i64> = channels.iter().map(|&c| id(c)).collect();
        list.sort_unstable();
        list.dedup();
        // channel_messages primary key: one range scan per listed channel; the floor and
        // the metadata by the channels and channel_meta primary keys.
        let rows = self
            .with_conn(|c| {
                Box::pin(async move {
                    sqlx::query(
                        "select l.channel_id, m.message_id, coalesce(m.deleted, false), coalesce(f.floor, 0), \
                         coalesce(x.parent_id, 0), coalesce(x.group_id, 0), coalesce(x.at, 0) \
                         from unnest($1::bigint[]) as l (channel_id) \
                         left join channel_messages m on m.channel_id = l.channel_id \
                         left join channels f on f.channel_id = l.channel_id \
                         left join channel_meta x on x.channel_id = l.channel_id",
                    )
                    .bind(list)
                    .fetch_all(c)
                    .await
                })
            })
            .await?;
        let mut windows = ChannelRows::default();
        for row in rows {
            windows.row(
                row.try_get(0)?,
                row.try_get(3)?,
                [row.try_get(4)?, row.try_get(5)?, row.try_get(6)?],
                row.try_get(1)?,
                row.try_get(2)?,
            )?;
        }
        Ok(windows.finish(channels, window))
    }

    async fn commit(&self, writes: &[Write]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let sql = commit_sql(
            writes,
            self.channel_window,
            self.mention_window,
            self.node_id,
        );
        let mut conn = self.pool.acquire().await?;
        let run = sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *conn);
        match tokio::time::timeout(self.deadline, run).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                // A failed statement leaves the explicit transaction open and aborted
                // on this session; end it so the pool never hands out a connection
                // that refuses every command. If that fails too, drop the connection.
                let rollback = sqlx::raw_sql("rollback").execute(&mut *conn);
                if !matches!(
                    tokio::time::timeout(self.timeout, rollback).await,
                    Ok(Ok(_))
                ) {
                    conn.close_on_drop();
                }
                Err(e.into())
            }
            Err(_) => {
                // In doubt: it may still commit. The caller retries (writes are merges).
                conn.close_on_drop();
                Err(timed_out("commit"))
            }
        }
    }

    async fn readers(
        &self,
        channel: u64,
        message: u64,
        after: u64,
        limit: u32,
    ) -> Result<Vec<u64>, StoreError> {
        let (channel, after, message) = (id(channel), id(after), id(message));
        // read_states_by_channel: range scan from (channel, after) in user order,
        // pos read from the heap (migration 0003 took it out of the index, so that
        // acks can be HOT updates).
        let rows: Vec<i64> = self
            .with_conn(|c| {
                Box::pin(async move {
                    sqlx::query_scalar(
                        "select user_id from read_states \
                         where channel_id = $1 and user_id > $2 and pos >= $3 \
                         order by user_id limit $4",
                    )
                    .bind(channel)
                    .bind(after)
                    .bind(message)
                    .bind(i64::from(limit))
                    .fetch_all(c)
                    .await
                })
            })
            .await?;
        rows.into_iter().map(uid).collect()
    }

    async fn watch(&self) -> Result<Option<Box<dyn ChangeFeed>>, StoreError> {
        // A pool of one for the listener: it reconnects through it, and it never
        // takes a connection away from the main pool.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(self.timeout)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(self.session.clone());
        let listener = PgFeed::listen(&pool).await?;
        Ok(Some(Box::new(PgFeed {
            pool,
            listener: Some(listener),
            node_id: self.node_id,
        })))
    }

    fn commit_concurrency(&self) -> usize {
        self.commit_lanes
    }

    fn shared(&self) -> bool {
        true
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
