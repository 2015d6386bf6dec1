//! The `postgres-direct` target: what most teams start with. One SQL statement per
//! operation against PostgreSQL, no cache in front, default durability
//! (`synchronous_commit = on`). Also the database admin the bench needs for the
//! `readstate` target on PostgreSQL: fresh databases, dropped on `--cleanup`.
//!
//! Schema (primary keys added after the bulk `COPY`):
//! - `read_states(user_id, channel_id, last_read)`, key `(user_id, channel_id)`:
//!   a user's states are one index range;
//! - `messages(channel_id, message_id)`, key `(channel_id, message_id)`: the head
//!   is a backward index scan, unread counts an index range cut at `cap + 1`;
//! - `mentions(user_id, channel_id, message_id)`, key in that order: a state's
//!   unread mentions are one index range, cut at `cap + 1`.
//!
//! Counts are computed per read with the caps, like readstate's, never stored.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::future::try_join_all;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Row};

use super::dataset::Dataset;
use super::workload::Op;

const SCHEMA: &str = "
create table read_states (user_id bigint not null, channel_id bigint not null, last_read bigint not null);
create table messages (channel_id bigint not null, message_id bigint not null);
create table mentions (user_id bigint not null, channel_id bigint not null, message_id bigint not null);
";

const INDEXES: &str = "
alter table read_states add primary key (user_id, channel_id);
alter table messages add primary key (channel_id, message_id);
alter table mentions add primary key (user_id, channel_id, message_id);
analyze;
";

/// Ack: the position moves forward only (index: read_states pkey).
const ACK: &str = "insert into read_states (user_id, channel_id, last_read) values ($1, $2, $3) \
on conflict (user_id, channel_id) do update set last_read = excluded.last_read \
where read_states.last_read < excluded.last_read";

/// Mark unread: the position becomes message - 1 (index: read_states pkey).
const UNREAD: &str = "insert into read_states (user_id, channel_id, last_read) values ($1, $2, $3) \
on conflict (user_id, channel_id) do update set last_read = excluded.last_read";

/// Message created, in one statement: the channel learns the id, the author has read
/// it, each mentioned user gets a state (if missing) and the mention
/// (indexes: messages, read_states and mentions pkeys).
const MESSAGE: &str = "with msg as (
  insert into messages (channel_id, message_id) values ($1, $2) on conflict do nothing
), author as (
  insert into read_states (user_id, channel_id, last_read) values ($3, $1, $2)
  on conflict (user_id, channel_id) do update set last_read = excluded.last_read
  where read_states.last_read < excluded.last_read
), mentioned as (
  insert into read_states (user_id, channel_id, last_read)
  select u, $1, 0 from unnest($4::bigint[]) as u where u <> $3
  on conflict (user_id, channel_id) do nothing
)
insert into mentions (user_id, channel_id, message_id)
select u, $1, $2 from unnest($4::bigint[]) as u where u <> $3
on conflict do nothing";

/// All of a user's read states with head, unread and mention counts cut at cap + 1
/// (indexes: read_states pkey range, messages pkey backward scan and range,
/// mentions pkey range).
const READ_STATES: &str = "select rs.channel_id, rs.last_read, h.head, u.n, m.n
from read_states rs
cross join lateral (select coalesce(max(message_id), 0) as head from messages where channel_id = rs.channel_id) h
cross join lateral (select count(*) as n from (select 1 from messages where channel_id = rs.channel_id and message_id > rs.last_read limit $2) x) u
cross join lateral (select count(*) as n from (select 1 from mentions where user_id = rs.user_id and channel_id = rs.channel_id and message_id > rs.last_read limit $3) y) m
where rs.user_id = $1
order by rs.channel_id";

/// A user's summary: channels with something unread, and the capped mentions
/// (the same indexes as READ_STATES).
const SUMMARY: &str = "select count(*) filter (where h.head > rs.last_read), coalesce(sum(least(m.n, $3)), 0)::bigint
from read_states rs
cross join lateral (select coalesce(max(message_id), 0) as head from messages where channel_id = rs.channel_id) h
cross join lateral (select count(*) as n from (select 1 from mentions where user_id = rs.user_id and channel_id = rs.channel_id and message_id > rs.last_read limit $2) y) m
where rs.user_id = $1";

/// `base` (a `postgres://` URL) pointing at database `database` instead.
pub fn database_url(base: &str, database: &str) -> String {
    let (scheme, rest) = base.split_once("://").unwrap_or(("postgres", base));
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    match query {
        Some(q) => format!("{scheme}://{authority}/{database}?{q}"),
        None => format!("{scheme}://{authority}/{database}"),
    }
}

/// A connection to the maintenance database of `base` (its own database, else
/// `postgres`).
async fn admin_connection(base: &str) -> anyhow::Result<PgConnection> {
    let mut options = PgConnectOptions::from_str(base)
        .with_context(|| format!("while parsing the PostgreSQL URL {base}"))?;
    if options.get_database().is_none() {
        options = options.database("postgres");
    }
    PgConnection::connect_with(&options)
        .await
        .with_context(|| format!("while connecting to PostgreSQL at {base}"))
}

/// The host of a `postgres://` URL (`localhost` when it names none).
///
/// # Errors
/// A URL that does not parse.
pub fn host_of(base: &str) -> anyhow::Result<String> {
    let options = PgConnectOptions::from_str(base)
        .with_context(|| format!("while parsing the PostgreSQL URL {base}"))?;
    Ok(options.get_host().to_owned())
}

/// The pid of the backend serving a fresh connection to `base` (as the server
/// sees it: on this machine, a child of the postmaster).
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn backend_pid(base: &str) -> anyhow::Result<u32> {
    let mut conn = admin_connection(base).await?;
    let pid: i32 = sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .context("while asking for the backend's pid")?;
    let _ = conn.close().await;
    u32::try_from(pid).context("a negative backend pid")
}

/// Drops database `name` if it exists and creates it empty.
///
/// # Errors
/// PostgreSQL unreachable or refusing.
pub async fn recreate_database(base: &str, name: &str) -> anyhow::Result<()> {
    let mut conn = admin_connection(base).await?;
    drop_with(&mut conn, name).await?;
    sqlx::raw_sql(AssertSqlSafe(format!("create database \"{name}\"")))
        .execute(&mut conn)
        .await
        .with_context(|| format!("while creating database {name}"))?;
    let _ = conn.close().await;
    Ok(())
}

/// Whether database `name` exists.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn database_exists(base: &str, name: &str) -> anyhow::Result<bool> {
    let mut conn = admin_connection(base).await?;
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await
            .context("while looking the database up")?;
    let _ = conn.close().await;
    Ok(exists)
}

/// Drops database `name` (and its sessions) if it exists.
///
/// # Errors
/// PostgreSQL unreachable or refusing.
pub async fn drop_database(base: &str, name: &str) -> anyhow::Result<()> {
    let mut conn = admin_connection(base).await?;
    drop_with(&mut conn, name).await?;
    let _ = conn.close().await;
    Ok(())
}

async fn drop_with(conn: &mut PgConnection, name: &str) -> anyhow::Result<()> {
    sqlx::raw_sql(AssertSqlSafe(format!(
        "drop database if exists \"{name}\" with (force)"
    )))
    .execute(conn)
    .await
    .with_context(|| format!("while dropping database {name}"))?;
    Ok(())
}

/// The `postgres-direct` target: a pool shared by all workers.
#[derive(Debug, Clone)]
pub struct PgDirect {
    pool: PgPool,
    /// `unread_cap + 1` and `mention_cap + 1`: counting stops there.
    unread_limit: i64,
    mention_limit: i64,
}

impl PgDirect {
    /// Connects a pool of `connections` to `url`.
    ///
    /// # Errors
    /// PostgreSQL unreachable.
    pub async fn connect(
        url: &str,
        connections: u32,
        unread_cap: u32,
        mention_cap: u32,
    ) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(connections.max(1))
            .acquire_timeout(Duration::from_secs(60))
            .connect(url)
            .await
            .with_context(|| format!("while connecting to PostgreSQL at {url}"))?;
        Ok(Self {
            pool,
            unread_limit: i64::from(unread_cap) + 1,
            mention_limit: i64::from(mention_cap) + 1,
        })
    }

    /// Opens every connection of the pool now, so the measurement does not.
    ///
    /// # Errors
    /// PostgreSQL refusing connections.
    pub async fn warm(&self, connections: usize) -> anyhow::Result<()> {
        let conns = try_join_all((0..connections).map(|_| self.pool.acquire()))
            .await
            .context("while opening the pool's connections")?;
        drop(conns);
        Ok(())
    }

    /// Whether the schema exists (a populated database from an earlier run).
    ///
    /// # Errors
    /// PostgreSQL errors.
    pub async fn has_schema(&self) -> anyhow::Result<bool> {
        let exists: bool = sqlx::query_scalar(
            "select to_regclass('read_states') is not null and to_regclass('messages') is not null",
        )
        .fetch_one(&self.pool)
        .await
        .context("while looking for the schema")?;
        Ok(exists)
    }

    /// Creates the tables, loads the data set with `COPY` and builds the indexes.
    /// `progress(rows)` is called after each chunk.
    ///
    /// # Errors
    /// PostgreSQL errors.
    pub async fn populate(&self, data: &Dataset, progress: &dyn Fn(u64)) -> anyhow::Result<()> {
        let mut conn = self.pool.acquire().await.context("while connecting")?;
        sqlx::raw_sql(SCHEMA)
            .execute(&mut *conn)
            .await
            .context("while creating the schema")?;
        let messages = (0..data.shape.channels as usize).flat_map(|c| {
            let channel = Dataset::channel_id(c);
            data.initial_message_ids()
                .map(move |id| format!("{channel}\t{id}\n"))
        });
        let mut rows = copy_rows(
            &mut conn,
            "copy messages (channel_id, message_id) from stdin",
            messages,
            0,
            progress,
        )
        .await?;
        let read_states = data
            .read_state_rows()
            .map(|(user, channel, position)| format!("{user}\t{channel}\t{position}\n"));
        rows = copy_rows(
            &mut conn,
            "copy read_states (user_id, channel_id, last_read) from stdin",
            read_states,
            rows,
            progress,
        )
        .await?;
        progress(rows);
        sqlx::raw_sql(INDEXES)
            .execute(&mut *conn)
            .await
            .context("while building the indexes")?;
        Ok(())
    }

    /// The database's size on disk (tables, indexes, everything).
    ///
    /// # Errors
    /// PostgreSQL errors.
    pub async fn database_bytes(&self) -> anyhow::Result<u64> {
        let bytes: i64 = sqlx::query_scalar("select pg_database_size(current_database())")
            .fetch_one(&self.pool)
            .await
            .context("while reading the database size")?;
        Ok(u64::try_from(bytes).unwrap_or(0))
    }

    /// Runs `op` as one statement.
    ///
    /// # Errors
    /// PostgreSQL errors.
    pub async fn execute(&self, op: &Op) -> anyhow::Result<()> {
        let id = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        match *op {
            Op::Ack {
                user,
                channel,
                message,
            } => {
                sqlx::query(ACK)
                    .bind(id(user))
                    .bind(id(channel))
                    .bind(id(message))
                    .execute(&self.pool)
                    .await?;
            }
            Op::Unread {
                user,
                channel,
                message,
            } => {
                sqlx::query(UNREAD)
                    .bind(id(user))
                    .bind(id(channel))
                    .bind(id(message.saturating_sub(1)))
                    .execute(&self.pool)
                    .await?;
            }
            Op::Message {
                channel,
                message,
                author,
                ..
            } => {
                let mentions: Vec<i64> = op.mentions().iter().map(|&m| id(m)).collect();
                sqlx::query(MESSAGE)
                    .bind(id(channel))
                    .bind(id(message))
                    .bind(id(author))
                    .bind(mentions)
                    .execute(&self.pool)
                    .await?;
            }
            Op::ReadStates { user } => {
                let rows = sqlx::query(READ_STATES)
                    .bind(id(user))
                    .bind(self.unread_limit)
                    .bind(self.mention_limit)
                    .fetch_all(&self.pool)
                    .await?;
                // Decode what a service would render: the capped counts.
                let mut unread_total = 0_i64;
                for row in &rows {
                    let unread: i64 = row.try_get(3)?;
                    let mentions: i64 = row.try_get(4)?;
                    unread_total +=
                        unread.min(self.unread_limit - 1) + mentions.min(self.mention_limit - 1);
                }
                std::hint::black_box(unread_total);
            }
            Op::Summary { user } => {
                let row = sqlx::query(SUMMARY)
                    .bind(id(user))
                    .bind(self.mention_limit)
                    .bind(self.mention_limit - 1)
                    .fetch_one(&self.pool)
                    .await?;
                let unread_channels: i64 = row.try_get(0)?;
                let mentions: i64 = row.try_get(1)?;
                std::hint::black_box((unread_channels, mentions));
            }
        }
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Streams text `lines` through `COPY` in 4 MiB chunks; `progress` gets the running
/// row count (starting at `done`) after each chunk. Returns the new count.
async fn copy_rows(
    conn: &mut sqlx::PgConnection,
    statement: &str,
    lines: impl Iterator<Item = String>,
    mut done: u64,
    progress: &dyn Fn(u64),
) -> anyhow::Result<u64> {
    const CHUNK: usize = 4 << 20;
    let mut copy = conn
        .copy_in_raw(statement)
        .await
        .with_context(|| format!("while starting {statement}"))?;
    let mut buf = String::with_capacity(CHUNK + 64);
    for line in lines {
        buf.push_str(&line);
        done += 1;
        if buf.len() >= CHUNK {
            copy.send(buf.as_bytes())
                .await
                .context("while sending COPY data")?;
            buf.clear();
            progress(done);
        }
    }
    if !buf.is_empty() {
        copy.send(buf.as_bytes())
            .await
            .context("while sending COPY data")?;
    }
    copy.finish()
        .await
        .with_context(|| format!("while finishing {statement}"))?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_replaces_only_the_database() {
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5432/", "b1"),
            "postgres://postgres@127.0.0.1:5432/b1"
        );
        assert_eq!(
            database_url("postgres://u:p@h/test?sslmode=disable", "b2"),
            "postgres://u:p@h/b2?sslmode=disable"
        );
        assert_eq!(
            database_url("postgresql://h:1", "b3"),
            "postgresql://h:1/b3"
        );
    }
}
