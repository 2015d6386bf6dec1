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
//!   removals (leave, delete channel); within a segment the merges are combined in
//!   memory and written with one `insert ... select from unnest(...) on conflict do
//!   update` per table, rows sorted by primary key (nodes then take row locks in the
//!   same order; a deadlock remains possible only across segments of concurrent
//!   batches, and PostgreSQL then aborts one batch, which the commit writer retries).
//!   Mentioned states are created by the read-state upsert itself, so read states are
//!   written by one statement per segment, in key order. Merge expressions (max of the
//!   read position, set union of ids, sticky tombstones) make a replayed batch harmless
//!   and let nodes converge.
//! - **Change feed.** The same string ends with `pg_notify('readstate_changes', ...)`
//!   naming every user and channel the batch wrote; PostgreSQL delivers it only if and
//!   when the transaction commits. `PgStore`'s [`Store::watch`] listens on that channel so other
//!   nodes drop their cached copies; a reconnect of the listener (notifications may have
//!   been missed) is reported as a resync.
//! - **Migrations.** `migrations/postgres`, applied on a dedicated connection (no
//!   statement timeout: a migration may legitimately run long) that is closed afterwards,
//!   so sqlx's migration advisory lock can never stay behind in the pool after a failure.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Row};

use super::batch::{Segment, Step, steps};
use super::rows::{ChannelRows, UserRows, id, uid};
use super::{ChangeFeed, Changes, Store, StoreError, Write};
use crate::domain::{ChannelWindow, UserStates};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

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

/// `'{1,2,3}'::bigint[]`: an array literal of our own integers.
fn bigints(values: impl IntoIterator<Item = u64>) -> String {
    let mut out = String::from("'{");
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{}", id(v));
    }
    out.push_str("}'::bigint[]");
    out
}

/// `'{t,f}'::boolean[]`.
fn booleans(values: impl IntoIterator<Item = bool>) -> String {
    let mut out = String::from("'{");
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push(if v { 't' } else { 'f' });
    }
    out.push_str("}'::boolean[]");
    out
}

/// The SQL of one commit: every step of `writes` in order, then the change
/// notifications, in one explicit transaction.
///
/// The string contains nothing but our SQL text and integers (and `t`/`f`) formatted
/// by us from `u64`/`bool` values, so there is no injection risk in sending it
/// unparameterised. A multi-statement simple query runs as one implicit transaction
/// anyway; the explicit `begin`/`commit` only says so.
fn commit_sql(writes: &[Write], channel_window: i64, mention_window: i64, node_id: u64) -> String {
    let mut sql = String::from("begin;\n");
    for step in steps(writes) {
        match step {
            Step::Merge(seg) => push_segment(&mut sql, &seg, channel_window, mention_window),
            Step::Remove(w) => push_removal(&mut sql, &w),
        }
    }
    let (users, channels) = touched(writes);
    let deleted = writes.iter().filter_map(|w| match *w {
        Write::DeleteChannel { channel } => {
            Some(format!("{{\"node\":{node_id},\"d\":[{channel}]}}"))
        }
        _ => None,
    });
    for payload in notify_payloads(node_id, &users, &channels)
        .into_iter()
        .chain(deleted)
    {
        // Payloads are digits, braces, brackets, commas, colons and double quotes only:
        // nothing to escape inside a single-quoted literal.
        let _ = writeln!(sql, "select pg_notify('{CHANGES_CHANNEL}', '{payload}');");
    }
    sql.push_str("commit;\n");
    sql
}

/// Writes one segment: one statement per table (plus the trims), rows in key order.
fn push_segment(sql: &mut String, seg: &Segment, channel_window: i64, mention_window: i64) {
    if !seg.messages.is_empty() {
        // channel_messages primary key: one unique probe per row; a tombstone is
        // sticky, and an unchanged row is not rewritten.
        let _ = writeln!(
            sql,
            "insert into channel_messages (channel_id, message_id, deleted) \
             select * from unnest({}, {}, {}) \
             on conflict (channel_id, message_id) do update \
             set deleted = channel_messages.deleted or excluded.deleted \
             where excluded.deleted and not channel_messages.deleted;",
            bigints(seg.messages.keys().map(|&(c, _)| c)),
            bigints(seg.messages.keys().map(|&(_, m)| m)),
            booleans(seg.messages.values().copied()),
        );
        let channels = bigints(seg.channels());
        // channel_messages primary key, scanned backwards per touched channel: the id
        // just past its newest `channel_window` becomes its floor (channels primary key).
        let _ = writeln!(
            sql,
            "insert into channels (channel_id, floor) \
             select c.channel_id, f.message_id from unnest({channels}) as c (channel_id) \
             cross join lateral (select m.message_id from channel_messages m \
               where m.channel_id = c.channel_id \
               order by m.message_id desc limit 1 offset {channel_window}) f \
             on conflict (channel_id) do update \
             set floor = greatest(channels.floor, excluded.floor) \
             where excluded.floor > channels.floor;"
        );
        // channel_messages primary key: a range delete of each touched channel's ids at
        // or below its floor (channels primary key).
        let _ = writeln!(
            sql,
            "delete from channel_messages m using channels c \
             where c.channel_id = any({channels}) and m.channel_id = c.channel_id \
             and m.message_id <= c.floor;"
        );
    }
    let states = seg.states();
    if !states.is_empty() {
        // read_states primary key: the lexicographic max of (epoch, pos); mentioned
        // states come at (0, 0), which creates them and never lowers one.
        let _ = writeln!(
            sql,
            "insert into read_states (user_id, channel_id, epoch, pos) \
             select * from unnest({}, {}, {}, {}) \
             on conflict (user_id, channel_id) do update \
             set epoch = excluded.epoch, pos = excluded.pos \
             where (excluded.epoch, excluded.pos) > (read_states.epoch, read_states.pos);",
            bigints(states.keys().map(|&(u, _)| u)),
            bigints(states.keys().map(|&(_, c)| c)),
            bigints(states.values().map(|r| r.epoch)),
            bigints(states.values().map(|r| r.pos)),
        );
    }
    if !seg.mentions.is_empty() {
        // mentions primary key: a set, so duplicates are dropped.
        let _ = writeln!(
            sql,
            "insert into mentions (user_id, channel_id, message_id) \
             select * from unnest({}, {}, {}) on conflict do nothing;",
            bigints(seg.mentions.iter().map(|&(u, _, _)| u)),
            bigints(seg.mentions.iter().map(|&(_, c, _)| c)),
            bigints(seg.mentions.iter().map(|&(_, _, m)| m)),
        );
        let keys = seg.mentioned_states();
        let keep = mention_window.max(1) - 1;
        // mentions primary key, scanned backwards per touched state: keep the newest
        // `mention_window` ids, range-delete the rest.
        let _ = writeln!(
            sql,
            "delete from mentions m using (select k.user_id, k.channel_id, t.message_id \
               from unnest({}, {}) as k (user_id, channel_id) \
               cross join lateral (select x.message_id from mentions x \
                 where x.user_id = k.user_id and x.channel_id = k.channel_id \
                 order by x.message_id desc limit 1 offset {keep}) t) cut \
             where m.user_id = cut.user_id and m.channel_id = cut.channel_id \
             and m.message_id < cut.message_id;",
            bigints(keys.iter().map(|&(u, _)| u)),
            bigints(keys.iter().map(|&(_, c)| c)),
        );
    }
}

/// Writes one removal.
fn push_removal(sql: &mut String, w: &Write) {
    match *w {
        Write::Leave { user, channel } => {
            let (u, c) = (id(user), id(channel));
            // read_states and mentions primary keys.
            let _ = writeln!(
                sql,
                "delete from read_states where user_id = {u} and channel_id = {c};\n\
                 delete from mentions where user_id = {u} and channel_id = {c};"
            );
        }
        Write::DeleteChannel { channel } => {
            let c = id(channel);
            // read_states_by_channel, mentions_by_channel, and the channel_messages and
            // channels primary keys: index range deletes.
            let _ = writeln!(
                sql,
                "delete from read_states where channel_id = {c};\n\
                 delete from mentions where channel_id = {c};\n\
                 delete from channel_messages where channel_id = {c};\n\
                 delete from channels where channel_id = {c};"
            );
        }
        Write::ReadPos { .. } | Write::Mention { .. } | Write::Message { .. } => {}
    }
}

/// Users and channels whose stored state `writes` change. A deleted channel names the
/// channel only: other nodes drop its readers' states when they see it.
fn touched(writes: &[Write]) -> (BTreeSet<u64>, BTreeSet<u64>) {
    let mut users = BTreeSet::new();
    let mut channels = BTreeSet::new();
    for w in writes {
        match *w {
            Write::ReadPos { user, .. }
            | Write::Mention { user, .. }
            | Write::Leave { user, .. } => {
                users.insert(user);
            }
            Write::Message { channel, .. } | Write::DeleteChannel { channel } => {
                channels.insert(channel);
            }
        }
    }
    (users, channels)
}

/// The JSON payloads `{"node":N,"u":[users],"c":[channels]}` naming every listed id,
/// each shorter than [`MAX_PAYLOAD_BYTES`]. None when there is nothing to name.
fn notify_payloads(node: u64, users: &BTreeSet<u64>, channels: &BTreeSet<u64>) -> Vec<String> {
    fn finish(node: u64, users: &[u64], channels: &[u64]) -> String {
        let list = |ids: &[u64]| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        format!(
            "{{\"node\":{node},\"u\":[{}],\"c\":[{}]}}",
            list(users),
            list(channels)
        )
    }
    let base = finish(node, &[], &[]).len();
    let mut out = Vec::new();
    let (mut u, mut c) = (Vec::new(), Vec::new());
    let mut len = base;
    let ids = users
        .iter()
        .map(|&v| (true, v))
        .chain(channels.iter().map(|&v| (false, v)));
    for (is_user, v) in ids {
        // Digits plus a separating comma (one too many per list: a safe overcount).
        let cost = v.to_string().len() + 1;
        if len + cost >= MAX_PAYLOAD_BYTES && !(u.is_empty() && c.is_empty()) {
            out.push(finish(node, &u, &c));
            u.clear();
            c.clear();
            len = base;
        }
        if is_user { &mut u } else { &mut c }.push(v);
        len += cost;
    }
    if !(u.is_empty() && c.is_empty()) {
        out.push(finish(node, &u, &c));
    }
    out
}

/// A change notification as sent by [`commit_sql`].
#[derive(Debug, PartialEq, Eq, serde::Deserialize)]
struct Payload {
    node: u64,
    #[serde(default)]
    u: Vec<u64>,
    #[serde(default)]
    c: Vec<u64>,
    /// Deleted channels (one notification each; deletes are rare): other nodes drop
    /// every cached read state in them.
    #[serde(default)]
    d: Vec<u64>,
}

fn parse_payload(text: &str) -> Result<Payload, serde_json::Error> {
    serde_json::from_str(text)
}

/// [`ChangeFeed`] over `LISTEN readstate_changes` on a connection of its own.
struct PgFeed {
    /// A one-connection pool the listener (re)connects through.
    pool: PgPool,
    /// `None` after an error: rebuilt (and a resync reported) on the next call.
    listener: Option<PgListener>,
    node_id: u64,
}

impl PgFeed {
    async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANGES_CHANNEL).await?;
        Ok(listener)
    }
}

#[async_trait]
impl ChangeFeed for PgFeed {
    async fn next(&mut self) -> Result<Changes, StoreError> {
        let listener = match &mut self.listener {
            Some(listener) => listener,
            None => {
                // Whatever was notified while we were not listening is lost.
                self.listener = Some(Self::listen(&self.pool).await?);
                return Ok(Changes {
                    resync: true,
                    ..Changes::default()
                });
            }
        };
        loop {
            match listener.try_recv().await {
                Ok(Some(note)) => match parse_payload(note.payload()) {
                    Ok(p) if p.node == self.node_id => {}
                    Ok(p) => {
                        return Ok(Changes {
                            users: p.u,
                            channels: p.c,
                            deleted_channels: p.d,
                            resync: false,
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, payload = note.payload(), "ignoring an unparseable change notification");
                    }
                },
                // The connection was lost and is listening again: notifications sent in
                // between were missed.
                Ok(None) => {
                    return Ok(Changes {
                        resync: true,
                        ..Changes::default()
                    });
                }
                Err(e) => {
                    // The listener may hold a dead connection it will not replace on
                    // its own; start over with a fresh one on the next call.
                    self.listener = None;
                    return Err(e.into());
                }
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
        // mentions primary key (the planner carries user_id over: a second range scan).
        let rows = self
            .with_conn(|c| {
                Box::pin(async move {
                    sqlx::query(
                        "select r.channel_id, r.epoch, r.pos, m.message_id \
                         from read_states r left join mentions m \
                           on m.user_id = r.user_id and m.channel_id = r.channel_id \
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
            states.read(channel, row.try_get(1)?, row.try_get(2)?)?;
            let mention: Option<i64> = row.try_get(3)?;
            if let Some(message) = mention {
                states.mention(channel, uid(message)?)?;
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
        // channel_messages primary key: one range scan per listed channel; the floor by
        // the channels primary key.
        let rows = self
            .with_conn(|c| {
                Box::pin(async move {
                    sqlx::query(
                        "select l.channel_id, m.message_id, coalesce(m.deleted, false), coalesce(f.floor, 0) \
                         from unnest($1::bigint[]) as l (channel_id) \
                         left join channel_messages m on m.channel_id = l.channel_id \
                         left join channels f on f.channel_id = l.channel_id",
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
        // filtered on the included pos.
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

    async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::domain::ReadPos;

    fn read(user: u64, channel: u64, pos: u64) -> Write {
        Write::ReadPos {
            user,
            channel,
            epoch: 0,
            pos,
        }
    }

    fn msg(channel: u64, message: u64, deleted: bool) -> Write {
        Write::Message {
            channel,
            message,
            deleted,
        }
    }

    #[test]
    fn a_batch_splits_into_segments_at_removals_only() {
        let writes = [
            read(1, 10, 5),
            msg(10, 7, false),
            read(1, 10, 3),
            Write::Leave {
                user: 1,
                channel: 10,
            },
            read(1, 10, 2),
            msg(10, 7, true),
            msg(10, 7, false),
            Write::DeleteChannel { channel: 10 },
            Write::DeleteChannel { channel: 11 },
            Write::Mention {
                user: 2,
                channel: 11,
                message: 9,
            },
        ];
        let steps = steps(&writes);
        assert_eq!(steps.len(), 6, "{steps:?}");
        let Step::Merge(first) = &steps[0] else {
            panic!("{steps:?}")
        };
        assert_eq!(first.reads[&(1, 10)], ReadPos { epoch: 0, pos: 5 });
        assert!(!first.messages[&(10, 7)]);
        assert_eq!(steps[1], Step::Remove(writes[3]));
        let Step::Merge(second) = &steps[2] else {
            panic!("{steps:?}")
        };
        assert_eq!(second.reads[&(1, 10)].pos, 2);
        assert!(second.messages[&(10, 7)], "tombstones are sticky");
        assert_eq!(steps[3], Step::Remove(writes[7]));
        assert_eq!(steps[4], Step::Remove(writes[8]));
        let Step::Merge(last) = &steps[5] else {
            panic!("{steps:?}")
        };
        assert!(last.mentions.contains(&(2, 11, 9)));
        assert_eq!(last.states()[&(2, 11)], ReadPos::default());
    }

    #[test]
    fn commit_sql_is_one_transaction_with_sorted_rows_and_removals_in_order() {
        let writes = [
            read(3, 10, 5),
            read(1, 20, 4),
            msg(20, 9, false),
            msg(10, 8, true),
            Write::Leave {
                user: 1,
                channel: 20,
            },
            read(1, 20, 1),
        ];
        let sql = commit_sql(&writes, 200, 200, 42);
        assert!(sql.starts_with("begin;\n"), "{sql}");
        assert!(sql.ends_with("commit;\n"), "{sql}");
        let upsert = sql.find("insert into read_states").unwrap();
        let leave = sql
            .find("delete from read_states where user_id = 1 and channel_id = 20")
            .unwrap();
        let again = sql.rfind("insert into read_states").unwrap();
        let notify = sql.find("pg_notify").unwrap();
        assert!(upsert < leave && leave < again && again < notify, "{sql}");
        assert!(
            sql.contains("unnest('{1,3}'::bigint[], '{20,10}'::bigint[]"),
            "{sql}"
        );
        assert!(
            sql.contains("unnest('{10,20}'::bigint[], '{8,9}'::bigint[], '{t,f}'::boolean[])"),
            "{sql}"
        );
        assert!(sql.contains("offset 200"), "{sql}");
        assert!(
            sql.contains(r#"'{"node":42,"u":[1,3],"c":[10,20]}'"#),
            "{sql}"
        );
        assert!(!sql.contains("''"), "no empty literals: {sql}");
    }

    #[test]
    fn a_mention_only_segment_creates_states_and_trims_per_state() {
        let writes = [
            Write::Mention {
                user: 5,
                channel: 6,
                message: 7,
            },
            Write::Mention {
                user: 5,
                channel: 6,
                message: 8,
            },
        ];
        let sql = commit_sql(&writes, 10, 4, 1);
        assert!(
            sql.contains(
                "unnest('{5}'::bigint[], '{6}'::bigint[], '{0}'::bigint[], '{0}'::bigint[])"
            ),
            "{sql}"
        );
        assert!(
            sql.contains("unnest('{5,5}'::bigint[], '{6,6}'::bigint[], '{7,8}'::bigint[])"),
            "{sql}"
        );
        assert!(sql.contains("offset 3"), "keeps the newest 4: {sql}");
        assert!(!sql.contains("channel_messages"), "{sql}");
    }

    #[test]
    fn notify_payloads_stay_under_the_limit_and_name_every_id() {
        let users: BTreeSet<u64> = (0..3000).map(|i| (1 << 62) + i * 7919).collect();
        let channels: BTreeSet<u64> = (1..2000).map(|i| i * 1_000_003).collect();
        let node = u64::MAX;
        let payloads = notify_payloads(node, &users, &channels);
        assert!(payloads.len() > 5, "{}", payloads.len());
        let (mut seen_u, mut seen_c) = (BTreeSet::new(), BTreeSet::new());
        for p in &payloads {
            assert!(p.len() < MAX_PAYLOAD_BYTES, "{} bytes", p.len());
            assert!(!p.contains('\''), "{p}");
            let parsed = parse_payload(p).unwrap();
            assert_eq!(parsed.node, node);
            seen_u.extend(parsed.u);
            seen_c.extend(parsed.c);
        }
        assert_eq!(seen_u, users);
        assert_eq!(seen_c, channels);
        assert!(notify_payloads(1, &BTreeSet::new(), &BTreeSet::new()).is_empty());
    }

    #[test]
    fn payloads_parse_and_garbage_does_not() {
        assert_eq!(
            parse_payload(r#"{"node":7,"u":[1,2],"c":[3]}"#).unwrap(),
            Payload {
                node: 7,
                u: vec![1, 2],
                c: vec![3],
                d: vec![]
            }
        );
        assert_eq!(
            parse_payload(r#"{"node":7,"d":[9]}"#).unwrap().d,
            vec![9],
            "a deleted channel travels in its own payload"
        );
        assert_eq!(
            parse_payload(r#"{"node":7,"c":[3]}"#).unwrap().u,
            Vec::<u64>::new()
        );
        assert!(parse_payload("").is_err());
        assert!(parse_payload("hello").is_err());
        assert!(parse_payload(r#"{"u":[1]}"#).is_err(), "node is required");
        assert!(parse_payload(r#"{"node":1,"u":[-1]}"#).is_err());
    }

    #[test]
    fn touched_names_users_and_channels_of_every_write_kind() {
        let writes = [
            read(1, 10, 1),
            Write::Mention {
                user: 2,
                channel: 11,
                message: 1,
            },
            msg(12, 1, false),
            Write::Leave {
                user: 3,
                channel: 13,
            },
            Write::DeleteChannel { channel: 14 },
        ];
        let (users, channels) = touched(&writes);
        assert_eq!(users.into_iter().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(channels.into_iter().collect::<Vec<_>>(), [12, 14]);
    }
}
