//! SQLite storage: one file in WAL mode, one writer connection (SQLite has a single
//! writer anyway; the commit task owns it) and a small pool of readers.
//!
//! **A failed commit discards the writer connection.** After an error SQLite may or
//! may not have rolled the transaction back by itself (`SQLITE_FULL` at `COMMIT`
//! does, and then the `ROLLBACK` that follows fails), while sqlx counts transaction
//! depth on its own: once the two disagree, the next `begin` becomes a `SAVEPOINT`
//! inside a transaction that never ends, and every later "commit" only releases that
//! savepoint, so nothing is durable again, ever. Closing the connection ends whatever
//! transaction it was in (SQLite rolls it back and releases its locks); the next
//! commit opens a fresh one with the same pragmas and starts with a real `BEGIN`.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row, Sqlite, Transaction};
use tokio::sync::Mutex;

use super::batch::{Segment, Step, steps};
use super::rows::{ChannelRows, UserRows, id, uid};
use super::writeback;
use super::{Store, StoreError, Write, parse_id_list};
use crate::domain::{ChannelWindow, UserStates};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// The SQLite migrations of this build (`migrations/sqlite`), for tools that check a
/// database file without opening it as a store (`readstate restore`).
pub fn migrator() -> &'static sqlx::migrate::Migrator {
    &MIGRATOR
}

/// The writer connection's page cache, KiB: grown to as it is used, never beyond.
const WRITER_CACHE_KIB: u32 = 64 * 1024;

/// A checkpoint statement that takes longer than this is logged as a warning.
const SLOW_CHECKPOINT_STATEMENT: Duration = Duration::from_secs(30);

/// How the SQLite store is opened.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// `sqlite://PATH` (the directory is created when missing).
    pub url: String,
    /// `FULL` fsyncs the WAL on every commit (survives power loss); `NORMAL` survives
    /// a killed process but may lose the last commits on power loss.
    pub full_sync: bool,
    /// Reader connections.
    pub readers: u32,
    /// How long to wait for a connection or a lock.
    pub timeout: Duration,
    /// Message ids each channel keeps (the engine's channel window).
    pub channel_window: usize,
    /// Mention ids each read state keeps.
    pub mention_window: usize,
    /// The writer's thread runs at the lowest priority (see `background`): set when
    /// only checkpoints write, so their B-tree work yields to requests. An urgent
    /// checkpoint ([`Store::checkpoint`]) then uses a second writer connection at
    /// normal priority.
    pub background_writer: bool,
    /// With `background_writer`: the rate, in bytes per second, at which a
    /// checkpoint that is not urgent writes the database file and its WAL
    /// ([`writeback::Throttle`]); 0 does not pace them.
    pub checkpoint_write_rate: u64,
}

/// The writer connections; one at a time writes (the mutex around them), since
/// SQLite has one writer anyway. `None` until first used and after a failed commit
/// discarded it.
#[derive(Debug, Default)]
struct Writers {
    /// Commits, or with `background_writer` the checkpoints that can wait.
    main: Option<SqliteConnection>,
    /// With `background_writer`: urgent checkpoints, at normal priority.
    urgent: Option<SqliteConnection>,
}

/// SQLite-backed [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// The writer connections (migrations and commits).
    writers: Arc<Mutex<Writers>>,
    /// How a writer connection is opened (and reopened).
    writer_options: SqliteConnectOptions,
    /// Whether the main writer's thread runs at the lowest priority.
    background_writer: bool,
    readers: SqlitePool,
    /// The database file and its WAL, whose write-back is paced while a checkpoint
    /// writes them ([`super::writeback`]).
    files: Arc<[PathBuf]>,
    /// Paces the writes of checkpoints that are not urgent; `None`: unpaced.
    throttle: Option<Arc<writeback::Throttle>>,
    timeout: Duration,
    channel_window: i64,
    mention_window: i64,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file.
    ///
    /// # Errors
    /// [`StoreError::Config`] for an unusable URL, [`StoreError::Unavailable`] when the
    /// file cannot be opened.
    pub async fn open(opts: &SqliteOptions) -> Result<Self, StoreError> {
        let path = opts
            .url
            .strip_prefix("sqlite://")
            .or_else(|| opts.url.strip_prefix("sqlite:"))
            .ok_or_else(|| StoreError::Config(format!("not a sqlite URL: {}", opts.url)))?;
        let path = PathBuf::from(path.split('?').next().unwrap_or(path));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Config(format!("cannot create {}: {e}", dir.display())))?;
        }
        let base = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|e| StoreError::Config(e.to_string()))?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if opts.full_sync {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .busy_timeout(opts.timeout)
            .foreign_keys(false);
        // Opened now, so that an unusable file fails here rather than at first write.
        // The writer's worker thread is named, so that it can be told apart. Its page
        // cache holds a large database's interior B-tree pages (about 1 % of the
        // file), so that a commit reads only the leaf pages it changes instead of
        // re-reading the path to each from the OS (SQLite's default is 2 MiB).
        let mut writer_options = base
            .clone()
            .thread_name(|n| format!("sqlite-writer-{n}"))
            .pragma("cache_size", format!("-{WRITER_CACHE_KIB}"));
        if opts.background_writer {
            // Only checkpoints write: large statements that pacing stretches to
            // seconds on purpose. sqlx's default (a warning, with the statement,
            // past 1 s) would log one on every checkpoint under load.
            writer_options = writer_options
                .log_slow_statements(log::LevelFilter::Warn, SLOW_CHECKPOINT_STATEMENT);
        }
        // The writers write through a VFS that paces checkpoints when asked to; it is
        // registered only where checkpoints are the writers' sole work.
        let throttle = opts
            .background_writer
            .then(|| writeback::Throttle::new(opts.checkpoint_write_rate))
            .flatten()
            .map(Arc::new)
            .and_then(|throttle| {
                writer_options = writer_options.clone().vfs(paced_vfs(throttle.clone())?);
                Some(throttle)
            });
        let writer = open_writer(&writer_options, opts.timeout, opts.background_writer).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(opts.readers.max(1))
            .acquire_timeout(opts.timeout)
            .connect_with(base.clone().read_only(true))
            .await?;
        Ok(Self {
            writers: Arc::new(Mutex::new(Writers {
                main: Some(writer),
                urgent: None,
            })),
            writer_options,
            background_writer: opts.background_writer,
            readers,
            files: Arc::from([path.clone(), with_suffix(&path, "-wal")]),
            throttle,
            timeout: opts.timeout,
            channel_window: i64::try_from(opts.channel_window).unwrap_or(i64::MAX),
            mention_window: i64::try_from(opts.mention_window).unwrap_or(i64::MAX),
        })
    }

    /// The writer connection in `slot`, opened first if there is none (at the
    /// lowest priority when `lowered`).
    async fn writer<'a>(
        &self,
        slot: &'a mut Option<SqliteConnection>,
        lowered: bool,
    ) -> Result<&'a mut SqliteConnection, StoreError> {
        Ok(match slot {
            Some(conn) => conn,
            empty => empty.insert(open_writer(&self.writer_options, self.timeout, lowered).await?),
        })
    }

    /// Writes `writes` in one transaction on the writer in `slot`; a failure
    /// discards that connection.
    async fn commit_on(
        &self,
        slot: &mut Option<SqliteConnection>,
        lowered: bool,
        writes: &[Write],
    ) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let result = self
            .write_batch(self.writer(slot, lowered).await?, writes)
            .await;
        if result.is_err() {
            self.discard_writer(slot).await;
        }
        result
    }

    /// After a failure on the writer connection: closes it rather than reuse it.
    /// Whatever transaction it may still be in ends with it (see the module docs);
    /// the next use opens a new one.
    async fn discard_writer(&self, slot: &mut Option<SqliteConnection>) {
        if let Some(conn) = slot.take() {
            discard(conn, self.timeout).await;
        }
    }

    /// Writes `writes` in one transaction on `conn`.
    async fn write_batch(
        &self,
        conn: &mut SqliteConnection,
        writes: &[Write],
    ) -> Result<(), StoreError> {
        // A custom BEGIN, never a SAVEPOINT: sqlx refuses it when it counts the
        // connection as in a transaction, SQLite when it really is in one (and sqlx
        // checks SQLite's autocommit flag after it). So a batch either starts a real
        // transaction, whose COMMIT is a real one, or fails. IMMEDIATE takes the write
        // lock up front (waiting up to busy_timeout for it).
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        for step in steps(writes) {
            match step {
                Step::Merge(segment) => self.apply_segment(&mut tx, &segment).await?,
                Step::Remove(w) => self.apply_removal(&mut tx, &w).await?,
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Writes one segment (merges only, so their order within it does not matter) with
    /// one statement per table, each reading its rows from a JSON array.
    async fn apply_segment(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        seg: &Segment,
    ) -> Result<(), sqlx::Error> {
        if !seg.messages.is_empty() {
            let rows = json_rows(
                seg.messages
                    .iter()
                    .map(|(&(c, m), &d)| [c, m, u64::from(d)]),
            );
            sqlx::query(
                "insert into channel_messages (channel_id, message_id, deleted) \
                 select json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]') \
                 from json_each(?1) where true \
                 on conflict (channel_id, message_id) do update set deleted = max(deleted, excluded.deleted)",
            )
            .bind(rows)
            .execute(&mut **tx)
            .await?;
            // Trim each touched channel to its newest W ids; the largest trimmed id
            // becomes its floor (primary key range scans, newest first).
            let channels = json_rows(seg.channels().into_iter().map(|c| [c]));
            sqlx::query(
                "insert into channels (channel_id, floor) \
                 select c.c, c.f from (select json_extract(value, '$[0]') as c, \
                   (select message_id from channel_messages \
                    where channel_id = json_extract(value, '$[0]') \
                    order by message_id desc limit 1 offset ?2) as f from json_each(?1)) c \
                 where c.f is not null \
                 on conflict (channel_id) do update set floor = max(floor, excluded.floor)",
            )
            .bind(&channels)
            .bind(self.channel_window)
            .execute(&mut **tx)
            .await?;
            sqlx::query(
                "delete from channel_messages \
                 where channel_id in (select json_extract(value, '$[0]') from json_each(?1)) \
                 and message_id <= (select floor from channels where channels.channel_id = channel_messages.channel_id)",
            )
            .bind(channels)
            .execute(&mut **tx)
            .await?;
        }
        if !seg.mentions.is_empty() {
            let rows = json_rows(seg.mentions.iter().map(|&(u, c, m)| [u, c, m]));
            sqlx::query(
                "insert into read_states (user_id, channel_id) \
                 select json_extract(value, '$[0]'), json_extract(value, '$[1]') from json_each(?1) where true \
                 on conflict do nothing",
            )
            .bind(&rows)
            .execute(&mut **tx)
            .await?;
            sqlx::query(
                "insert into mentions (user_id, channel_id, message_id) \
                 select json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]') \
                 from json_each(?1) where true on conflict do nothing",
            )
            .bind(&rows)
            .execute(&mut **tx)
            .await?;
            // Keep the newest mention_window ids of each touched state (primary key scans).
            sqlx::query(
                "delete from mentions \
                 where (user_id, channel_id) in \
                   (select json_extract(value, '$[0]'), json_extract(value, '$[1]') from json_each(?1)) \
                 and message_id < (select m.message_id from mentions m \
                   where m.user_id = mentions.user_id and m.channel_id = mentions.channel_id \
                   order by m.message_id desc limit 1 offset ?2 - 1)",
            )
            .bind(rows)
            .bind(self.mention_window)
            .execute(&mut **tx)
            .await?;
        }
        if !seg.settings.is_empty() {
            // settings primary key: each register is the lexicographic max of
            // (stamp, value), as `Settings::merge` has it; an unchanged row is not
            // rewritten.
            let rows = json_rows(seg.settings.iter().map(|(&(u, c), s)| {
                [
                    u,
                    c,
                    stored(s.muted_until),
                    stored(s.muted_at),
                    u64::from(s.level.code()),
                    stored(s.level_at),
                ]
            }));
            sqlx::query(
                "insert into settings (user_id, channel_id, muted_until, muted_at, level, level_at) \
                 select json_extract(value, '$[0]'), json_extract(value, '$[1]'), \
                        json_extract(value, '$[2]'), json_extract(value, '$[3]'), \
                        json_extract(value, '$[4]'), json_extract(value, '$[5]') \
                 from json_each(?1) where true \
                 on conflict (user_id, channel_id) do update set \
                 muted_until = case when (excluded.muted_at, excluded.muted_until) > (settings.muted_at, settings.muted_until) \
                   then excluded.muted_until else settings.muted_until end, \
                 muted_at = case when (excluded.muted_at, excluded.muted_until) > (settings.muted_at, settings.muted_until) \
                   then excluded.muted_at else settings.muted_at end, \
                 level = case when (excluded.level_at, excluded.level) > (settings.level_at, settings.level) \
                   then excluded.level else settings.level end, \
                 level_at = case when (excluded.level_at, excluded.level) > (settings.level_at, settings.level) \
                   then excluded.level_at else settings.level_at end \
                 where (excluded.muted_at, excluded.muted_until) > (settings.muted_at, settings.muted_until) \
                 or (excluded.level_at, excluded.level) > (settings.level_at, settings.level)",
            )
            .bind(rows)
            .execute(&mut **tx)
            .await?;
        }
        if !seg.metas.is_empty() {
            // channel_meta primary key: the max of (at, parent_id, group_id).
            let rows = json_rows(
                seg.metas
                    .iter()
                    .map(|(&c, m)| [c, stored(m.parent), stored(m.group), stored(m.at)]),
            );
            sqlx::query(
                "insert into channel_meta (channel_id, parent_id, group_id, at) \
                 select json_extract(value, '$[0]'), json_extract(value, '$[1]'), \
                        json_extract(value, '$[2]'), json_extract(value, '$[3]') \
                 from json_each(?1) where true \
                 on conflict (channel_id) do update \
                 set parent_id = excluded.parent_id, group_id = excluded.group_id, at = excluded.at \
                 where (excluded.at, excluded.parent_id, excluded.group_id) \
                   > (channel_meta.at, channel_meta.parent_id, channel_meta.group_id)",
            )
            .bind(rows)
            .execute(&mut **tx)
            .await?;
        }
        // An ack's stamp (`seg.acks`) plays no part here: only one node writes a
        // SQLite database, and its cached copy is never behind the stored epoch.
        if !seg.reads.is_empty() {
            let rows = json_rows(seg.reads.iter().map(|(&(u, c), &r)| [u, c, r.epoch, r.pos]));
            sqlx::query(
                "insert into read_states (user_id, channel_id, epoch, pos) \
                 select json_extract(value, '$[0]'), json_extract(value, '$[1]'), \
                        json_extract(value, '$[2]'), json_extract(value, '$[3]') \
                 from json_each(?1) where true \
                 on conflict (user_id, channel_id) do update set epoch = excluded.epoch, pos = excluded.pos \
                 where (excluded.epoch, excluded.pos) > (read_states.epoch, read_states.pos)",
            )
            .bind(rows)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// Writes one order-sensitive write (a removal) on its own.
    async fn apply_removal(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        w: &Write,
    ) -> Result<(), sqlx::Error> {
        match *w {
            Write::Leave { user, channel } => {
                // Primary keys.
                for sql in [
                    "delete from read_states where user_id = ?1 and channel_id = ?2",
                    "delete from mentions where user_id = ?1 and channel_id = ?2",
                    "delete from settings where user_id = ?1 and channel_id = ?2",
                ] {
                    sqlx::query(sql)
                        .bind(id(user))
                        .bind(id(channel))
                        .execute(&mut **tx)
                        .await?;
                }
            }
            Write::DeleteChannel { channel } => {
                // read_states_by_channel, mentions_by_channel, settings_by_channel and
                // the primary keys make each of these an index range delete.
                for sql in [
                    "delete from read_states where channel_id = ?1",
                    "delete from mentions where channel_id = ?1",
                    "delete from settings where channel_id = ?1",
                    "delete from channel_messages where channel_id = ?1",
                    "delete from channels where channel_id = ?1",
                    "delete from channel_meta where channel_id = ?1",
                ] {
                    sqlx::query(sql)
                        .bind(id(channel))
                        .execute(&mut **tx)
                        .await?;
                }
            }
            Write::DeleteUser { user } => {
                // Range deletes on the user_id prefix of each primary key.
                for sql in [
                    "delete from read_states where user_id = ?1",
                    "delete from mentions where user_id = ?1",
                    "delete from settings where user_id = ?1",
                ] {
                    sqlx::query(sql).bind(id(user)).execute(&mut **tx).await?;
                }
            }
            Write::ReadPos { .. }
            | Write::Mention { .. }
            | Write::Message { .. }
            | Write::Settings { .. }
            | Write::ChannelMeta { .. } => {}
        }
        Ok(())
    }
}

/// Opens the writer connection with the store's pragmas (WAL, synchronous, busy
/// timeout), within `timeout` plus the busy timeout a pragma may wait for. With
/// `background`, from a thread at lowered priority, so that the connection's worker
/// thread (where SQLite does all its work) inherits that priority.
async fn open_writer(
    options: &SqliteConnectOptions,
    timeout: Duration,
    background: bool,
) -> Result<SqliteConnection, StoreError> {
    let connect = async {
        if background {
            let options = options.clone();
            crate::background::open_lowered(move || async move { options.connect().await }).await
        } else {
            options.connect().await
        }
    };
    match tokio::time::timeout(timeout * 2, connect).await {
        Ok(conn) => Ok(conn?),
        Err(_) => Err(StoreError::Unavailable(sqlx::Error::Io(
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "opening the SQLite writer connection timed out",
            ),
        ))),
    }
}

/// `path` with `suffix` appended to its last component (`x.db` → `x.db-wal`): the
/// names of SQLite's files beside a database.
pub(crate) fn with_suffix(path: &std::path::Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Makes SQLite allocate with jemalloc, the process's allocator (see
/// `store/sqlite_alloc.rs`). Call it first thing in `main`, before any thread starts
/// and anything uses SQLite: SQLite accepts an allocator only before it initialises,
/// and the call must not race another thread's SQLite call. True when SQLite now
/// uses jemalloc; false when it was initialised already (it keeps the C library's
/// `malloc`) or off Linux.
pub fn use_jemalloc() -> bool {
    #[cfg(target_os = "linux")]
    {
        super::sqlite_alloc::install()
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// Registers the VFS that paces writes with `throttle` and returns its name, or
/// `None` where there is none (not Linux, or SQLite's default VFS is not `unix`).
#[cfg(target_os = "linux")]
fn paced_vfs(throttle: Arc<writeback::Throttle>) -> Option<String> {
    let name = super::paced_vfs::register(throttle);
    if name.is_none() {
        tracing::warn!("cannot register the pacing SQLite VFS; checkpoints write unpaced");
    }
    name
}

#[cfg(not(target_os = "linux"))]
fn paced_vfs(_throttle: Arc<writeback::Throttle>) -> Option<String> {
    None
}

/// Closes a writer connection that failed: SQLite rolls back any transaction still
/// open on it and releases its locks. Waits for the close, so that the connection
/// opened next does not queue behind this one's write lock.
async fn discard(conn: SqliteConnection, timeout: Duration) {
    match tokio::time::timeout(timeout, conn.close()).await {
        Ok(Ok(())) => tracing::debug!("discarded the SQLite writer connection after a failure"),
        Ok(Err(e)) => {
            tracing::warn!(error = %crate::error_chain(&e), "closing the failed SQLite writer connection");
        }
        Err(_) => tracing::warn!("closing the failed SQLite writer connection timed out"),
    }
}

/// A value as SQLite stores it: at most 2^63-1 (as [`id`] has it), so that
/// `json_each` reads it as an integer.
fn stored(v: u64) -> u64 {
    v.min(i64::MAX as u64)
}

/// `[[a,b,..],..]` for `json_each` (ids are at most 2^63-1: SQLite reads them as integers).
fn json_rows<const N: usize>(rows: impl Iterator<Item = [u64; N]>) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("[");
    for (i, row) in rows.enumerate() {
        out.push_str(if i == 0 { "[" } else { ",[" });
        for (j, v) in row.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            let _ = write!(out, "{v}");
        }
        out.push(']');
    }
    out.push(']');
    out
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        // On a connection of its own (the writer waits meanwhile), closed afterwards.
        let _writers = self.writers.lock().await;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(self.timeout)
            .connect_with(self.writer_options.clone())
            .await?;
        let result = MIGRATOR.run(&pool).await.map_err(StoreError::Migrate);
        pool.close().await;
        result
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let applied: Option<i64> =
            sqlx::query_scalar("select max(version) from _sqlx_migrations where success = 1")
                .fetch_one(&self.readers)
                .await?;
        super::check_migrated(applied, latest)
    }

    async fn load_user(&self, user: u64, mention_window: usize) -> Result<UserStates, StoreError> {
        // Primary key prefix scan on read_states; mentions and settings by their
        // primary keys.
        let rows = sqlx::query(
            "select r.channel_id, r.epoch, r.pos, \
             (select group_concat(m.message_id) from mentions m \
              where m.user_id = r.user_id and m.channel_id = r.channel_id) as mentions, \
             s.muted_until, s.muted_at, s.level, s.level_at \
             from read_states r left join settings s \
               on s.user_id = r.user_id and s.channel_id = r.channel_id \
             where r.user_id = ?1",
        )
        .bind(id(user))
        .fetch_all(&self.readers)
        .await?;
        let mut states = UserRows::new(mention_window);
        for row in rows {
            let channel: i64 = row.try_get(0)?;
            let read = (row.try_get(1)?, row.try_get(2)?);
            states.read(channel, read.0, read.1)?;
            let mentions: Option<String> = row.try_get(3)?;
            for message in parse_id_list(mentions.as_deref().unwrap_or(""))? {
                states.mention(channel, message)?;
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
        let list =
            serde_json::to_string(channels).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // Primary key range scans of channel_messages, one per listed channel; the
        // floor and the metadata by their primary keys.
        let rows = sqlx::query(
            "select c.value as channel_id, m.message_id, coalesce(m.deleted, 0), coalesce(f.floor, 0) as floor, \
             coalesce(x.parent_id, 0), coalesce(x.group_id, 0), coalesce(x.at, 0) \
             from json_each(?1) c \
             left join channel_messages m on m.channel_id = c.value \
             left join channels f on f.channel_id = c.value \
             left join channel_meta x on x.channel_id = c.value",
        )
        .bind(list)
        .fetch_all(&self.readers)
        .await?;
        let mut windows = ChannelRows::default();
        for row in rows {
            let deleted: i64 = row.try_get(2)?;
            windows.row(
                row.try_get(0)?,
                row.try_get(3)?,
                [row.try_get(4)?, row.try_get(5)?, row.try_get(6)?],
                row.try_get(1)?,
                deleted != 0,
            )?;
        }
        Ok(windows.finish(channels, window))
    }

    async fn commit(&self, writes: &[Write]) -> Result<(), StoreError> {
        let mut writers = self.writers.lock().await;
        self.commit_on(&mut writers.main, self.background_writer, writes)
            .await
    }

    async fn checkpoint(&self, writes: &[Write], urgent: bool) -> Result<(), StoreError> {
        let mut writers = self.writers.lock().await;
        let (slot, lowered) = if urgent && self.background_writer {
            (&mut writers.urgent, false)
        } else {
            (&mut writers.main, self.background_writer)
        };
        let pacer = writeback::Pacer::start(&self.files, writeback::EVERY);
        // An urgent checkpoint is behind already: it writes as fast as it can.
        let pacing = self
            .throttle
            .as_deref()
            .filter(|_| !urgent)
            .map(writeback::Throttle::begin);
        let result = self.commit_on(slot, lowered, writes).await;
        if urgent && self.background_writer && result.is_ok() {
            // The urgent writer serves bursts (a bulk load, a backlog after a
            // stall): its page cache, up to WRITER_CACHE_KIB, is given back after each
            // of its checkpoints rather than kept for the next burst. The checkpoint
            // has committed whatever this answers.
            release_page_cache(slot.as_mut(), "urgent").await;
        }
        if let Some(paced) = pacing.map(writeback::Pacing::end) {
            crate::metrics::checkpoint_paced(paced.slept, paced.gave_up);
            tracing::debug!(
                bytes = paced.bytes,
                slept_ms = paced.slept.as_millis(),
                gave_up = paced.gave_up,
                "checkpoint writes paced"
            );
        }
        let paced = tokio::task::spawn_blocking(move || pacer.finish())
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match (result, paced) {
            (Err(e), _) => Err(e),
            (Ok(()), Ok(())) => Ok(()),
            // Write-back of the files failed: what SQLite reported as durable may
            // not be, so the checkpoint fails (the log keeps its records) and the
            // connection, whose page cache may hold what never reached the disk, is
            // replaced.
            (Ok(()), Err(e)) => {
                tracing::warn!(error = %e, "write-back of the database files during a checkpoint failed");
                self.discard_writer(slot).await;
                Err(StoreError::Unavailable(sqlx::Error::Io(e)))
            }
        }
    }

    async fn idle(&self) {
        // The main writer keeps its page cache between checkpoints (the interior
        // B-tree pages each checkpoint walks again); with nothing to write for a
        // while it is memory held for nothing.
        let mut writers = self.writers.lock().await;
        let Writers { main, urgent } = &mut *writers;
        release_page_cache(main.as_mut(), "main").await;
        release_page_cache(urgent.as_mut(), "urgent").await;
        drop(writers);
        // SQLite allocates with the C library's malloc, which (glibc) keeps what was
        // freed until asked.
        let trimmed = tokio::task::spawn_blocking(crate::footprint::trim_c_heap).await;
        tracing::debug!(trimmed = ?trimmed, "idle: released the writers' page caches");
    }

    async fn readers(
        &self,
        channel: u64,
        message: u64,
        after: u64,
        limit: u32,
    ) -> Result<Vec<u64>, StoreError> {
        // read_states_by_channel: range scan from (channel, after) in user order, pos
        // looked up in the table (migration 0003 took it out of the index).
        let rows: Vec<i64> = sqlx::query_scalar(
            "select user_id from read_states where channel_id = ?1 and user_id > ?2 and pos >= ?3 \
             order by user_id limit ?4",
        )
        .bind(id(channel))
        .bind(id(after))
        .bind(id(message))
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter().map(uid).collect()
    }

    async fn close(&self) {
        let mut writers = self.writers.lock().await;
        for conn in [writers.main.take(), writers.urgent.take()]
            .into_iter()
            .flatten()
        {
            if let Err(e) = conn.close().await {
                tracing::warn!(error = %crate::error_chain(&e), "closing a SQLite writer connection");
            }
        }
        self.readers.close().await;
    }
}

/// Frees the page cache of a writer connection (`PRAGMA shrink_memory`), if it is
/// open; a failure is logged, as it loses nothing but the memory.
async fn release_page_cache(conn: Option<&mut SqliteConnection>, which: &str) {
    let Some(conn) = conn else { return };
    if let Err(e) = sqlx::query("PRAGMA shrink_memory").execute(conn).await {
        tracing::warn!(error = %crate::error_chain(&e), writer = which, "releasing a SQLite writer's page cache");
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Whether each of this process's threads whose name starts with `prefix` runs
    /// lowered (`SCHED_IDLE`, or a nice value raised above `base_nice`).
    fn lowered_threads(prefix: &str, base_nice: i32) -> Vec<bool> {
        threads(prefix, base_nice)
            .into_iter()
            .map(|(_, l)| l)
            .collect()
    }

    /// `(thread id, lowered)` of each of this process's threads named `prefix…`.
    fn threads(prefix: &str, base_nice: i32) -> Vec<(String, bool)> {
        let mut found = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").expect("procfs is mounted") {
            let path = task.expect("a task entry").path();
            let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
                continue; // the thread ended meanwhile
            };
            if !comm.starts_with(prefix) {
                continue;
            }
            let stat = std::fs::read_to_string(path.join("stat")).expect("a stat file");
            let tid = path.file_name().map(|n| n.to_string_lossy().into_owned());
            found.push((
                tid.unwrap_or_default(),
                crate::background::stat_is_lowered(&stat, base_nice),
            ));
        }
        found
    }

    async fn open(dir: &tempfile::TempDir, background_writer: bool) -> SqliteStore {
        open_paced(dir, background_writer, 0).await
    }

    async fn open_paced(
        dir: &tempfile::TempDir,
        background_writer: bool,
        checkpoint_write_rate: u64,
    ) -> SqliteStore {
        SqliteStore::open(&SqliteOptions {
            url: format!("sqlite://{}", dir.path().join("rs.db").display()),
            full_sync: false,
            readers: 1,
            timeout: Duration::from_secs(5),
            channel_window: 16,
            mention_window: 4,
            background_writer,
            checkpoint_write_rate,
        })
        .await
        .expect("the store opens")
    }

    /// Bytes of page cache the connection holds (`SQLITE_DBSTATUS_CACHE_USED`).
    #[allow(unsafe_code)]
    async fn cache_used(conn: &mut SqliteConnection) -> i64 {
        let mut handle = conn.lock_handle().await.expect("the worker thread runs");
        let (mut current, mut highwater) = (0, 0);
        // SAFETY: the handle is locked out of sqlx's worker thread for as long as
        // `handle` lives, so no other call uses the connection meanwhile; the two
        // out-pointers are valid, distinct locals; the status verb is one SQLite
        // defines, and the call only reads counters.
        let rc = unsafe {
            libsqlite3_sys::sqlite3_db_status(
                handle.as_raw_handle().as_ptr(),
                libsqlite3_sys::SQLITE_DBSTATUS_CACHE_USED,
                &raw mut current,
                &raw mut highwater,
                0,
            )
        };
        assert_eq!(rc, libsqlite3_sys::SQLITE_OK);
        i64::from(current)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_store_gives_back_its_writers_page_cache_and_writes_on() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = open(&dir, true).await;
        store.migrate().await.expect("migrates");
        let writes = |pos: u64| -> Vec<Write> {
            (0..50_000u64)
                .map(|i| Write::ReadPos {
                    user: i,
                    channel: i % 7,
                    epoch: 0,
                    pos,
                    at: 0,
                })
                .collect()
        };
        store.checkpoint(&writes(1), false).await.expect("commits");
        let mut writers = store.writers.lock().await;
        let main = writers
            .main
            .as_mut()
            .expect("the checkpoint's writer is open");
        let held = cache_used(main).await;
        assert!(
            held > 1 << 20,
            "a checkpoint of 50,000 rows fills the cache: {held}"
        );
        drop(writers);

        store.idle().await;
        let mut writers = store.writers.lock().await;
        let main = writers.main.as_mut().expect("still open");
        let left = cache_used(main).await;
        assert!(left < held / 8, "held {held} bytes, {left} left after idle");
        drop(writers);

        // The next checkpoint reads what it needs back in.
        store.checkpoint(&writes(2), false).await.expect("commits");
        for user in [0, 49_999] {
            let states = store.load_user(user, 4).await.expect("loads");
            assert_eq!(states.get(user % 7).map(|s| s.read.pos), Some(2));
        }
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checkpoints_that_can_wait_write_through_the_pacing_vfs_and_urgent_ones_do_not() {
        let dir = tempfile::tempdir().expect("a temp dir");
        // 8 MiB/s: a checkpoint of a few MB goes beyond the throttle's burst.
        let store = open_paced(&dir, true, 8 << 20).await;
        store.migrate().await.expect("migrates");
        let throttle = store
            .throttle
            .clone()
            .expect("a positive rate and Linux: paced");
        let writes: Vec<Write> = (0..100_000u64)
            .map(|i| Write::ReadPos {
                user: i % 10_000,
                channel: i,
                epoch: 0,
                pos: i + 1,
                at: 0,
            })
            .collect();
        store.checkpoint(&writes, false).await.expect("commits");
        // `end` reports what was paced since the last `begin`: the checkpoint's.
        let paced = throttle.end();
        assert!(
            paced.bytes > 2 << 20 && (paced.slept > Duration::ZERO || paced.gave_up),
            "the database and WAL writes went through the throttle: {paced:?}"
        );
        // Every write landed, through SQLite's own file methods.
        for user in [0, 9_999] {
            let states = store.load_user(user, 16).await.expect("loads");
            assert_eq!(states.len(), 10, "user {user}");
        }
        let states = store.load_user(7, 16).await.expect("loads");
        assert_eq!(states.get(10_007).map(|s| s.read.pos), Some(10_008));
        // An urgent checkpoint is behind already: not paced (no `begin`, so the
        // report is still the last checkpoint's).
        store
            .checkpoint(
                &[Write::ReadPos {
                    user: 7,
                    channel: 10_007,
                    epoch: 0,
                    pos: 99_999,
                    at: 0,
                }],
                true,
            )
            .await
            .expect("commits");
        assert_eq!(throttle.end(), paced);
        let states = store.load_user(7, 16).await.expect("loads");
        assert_eq!(states.get(10_007).map(|s| s.read.pos), Some(99_999));
        store.close().await;

        // Rate 0: no throttle, no VFS of its own.
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = open_paced(&dir, true, 0).await;
        assert!(store.throttle.is_none());
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_background_writer_thread_runs_lowered_and_a_direct_one_does_not() {
        let base = crate::background::current_nice();
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = open(&dir, true).await;
        // (Before `migrate`, whose own short-lived connection runs at normal priority.)
        assert!(lowered_threads("sqlite-writer", base).contains(&true));
        // Readers serve requests: normal priority.
        assert!(lowered_threads("sqlx-sqlite", base).iter().all(|&l| !l));
        // A reopened writer (after a failure discarded it) is lowered again. Other
        // tests of this process start writers of their own, at normal priority, at
        // any time: only the threads that appeared during the reopen are looked at,
        // and a reopen that another test's writer overlapped is tried again.
        let mut writers = store.writers.lock().await;
        let mut seen = Vec::new();
        for _attempt in 0..10 {
            let before: Vec<String> = threads("sqlite-writer", base)
                .into_iter()
                .map(|(tid, _)| tid)
                .collect();
            store.discard_writer(&mut writers.main).await;
            store
                .writer(&mut writers.main, true)
                .await
                .expect("reopens");
            let started: Vec<(String, bool)> = threads("sqlite-writer", base)
                .into_iter()
                .filter(|(tid, _)| !before.contains(tid))
                .collect();
            let clean = !started.is_empty() && started.iter().all(|&(_, l)| l);
            seen.push(started);
            if clean {
                break;
            }
        }
        assert!(
            seen.last()
                .is_some_and(|s| !s.is_empty() && s.iter().all(|&(_, l)| l)),
            "{seen:?}"
        );
        drop(writers);
        store.migrate().await.expect("migrates");
        // An urgent checkpoint writes on a second writer at normal priority; one
        // that can wait stays on the lowered one.
        let write = [Write::ReadPos {
            user: 1,
            channel: 2,
            epoch: 0,
            pos: 7,
            at: 0,
        }];
        store.checkpoint(&write, true).await.expect("commits");
        // (Other tests of this process may have writer threads of their own, at
        // normal priority, so the check is that one exists, not how many.)
        let lowered = lowered_threads("sqlite-writer", base);
        assert!(lowered.contains(&false), "{lowered:?}");
        store.checkpoint(&write, false).await.expect("commits");
        let states = store.load_user(1, 4).await.expect("loads");
        assert_eq!(states.get(2).map(|s| s.read.pos), Some(7));
        store.close().await;

        let dir = tempfile::tempdir().expect("a temp dir");
        let store = open(&dir, false).await;
        // (The closed writers' threads may still be on their way out.)
        assert!(lowered_threads("sqlite-writer", base).contains(&false));
        store.close().await;
    }
}
