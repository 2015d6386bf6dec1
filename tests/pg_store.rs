//! `PgStore` against a real PostgreSQL server: migrations (repeated and concurrent),
//! every write kind, window and mention trims equal to what `SqliteStore` keeps for
//! the same writes, notification settings and channel metadata equal to the domain's
//! merge, removals (leave, delete channel, delete user) taking their rows, readers
//! paging, the change feed between two nodes, and a failed commit leaving its
//! connection usable.
//!
//! Each test creates a database `readstate_t_<random>` on the server at
//! `READSTATE_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432`, trust auth)
//! and drops it at the end. A server that cannot be reached fails the test with a
//! one-line hint; it never skips.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use readstate::domain::{ChannelMeta, Level, MUTED_FOREVER, Settings};
use readstate::store::postgres::PgOptions;
use readstate::store::sqlite::SqliteOptions;
use readstate::store::{ACK_NOW, PgStore, SqliteStore, Store, Write};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

const CHANNEL_WINDOW: usize = 6;
const MENTION_WINDOW: usize = 3;

fn server_url() -> String {
    std::env::var("READSTATE_TEST_PG_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

async fn admin_connection(server: &str) -> PgConnection {
    let url = format!("{server}/postgres");
    match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&url)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => panic!(
            "PostgreSQL at {server} is not reachable ({e}): start it (./scripts/test does) or set READSTATE_TEST_PG_URL"
        ),
        Err(_) => panic!(
            "PostgreSQL at {server} did not answer within 5 s: start it (./scripts/test does) or set READSTATE_TEST_PG_URL"
        ),
    }
}

async fn admin(server: &str, sql: String) {
    let mut conn = admin_connection(server).await;
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
}

/// A fresh database of the test's own, dropped (`with (force)`) on drop.
struct TestDb {
    server: String,
    name: String,
}

impl TestDb {
    async fn create() -> Self {
        let server = server_url();
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        let name = format!("readstate_t_{:016x}", hasher.finish());
        admin(&server, format!("create database {name}")).await;
        Self { server, name }
    }

    fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // Our own runtime on our own thread: drop may run inside the test's runtime.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(admin(
                    &server,
                    format!("drop database if exists {name} with (force)"),
                ));
        })
        .join();
    }
}

fn pg_options(db: &TestDb, node_id: u64) -> PgOptions {
    PgOptions {
        url: db.url(),
        pool_size: 4,
        timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(5),
        synchronous_commit: true,
        channel_window: CHANNEL_WINDOW,
        mention_window: MENTION_WINDOW,
        node_id,
    }
}

async fn pg_store(db: &TestDb, node_id: u64) -> PgStore {
    let store = PgStore::open(&pg_options(db, node_id)).await.unwrap();
    store.migrate().await.unwrap();
    store
}

async fn sqlite_store(dir: &tempfile::TempDir) -> SqliteStore {
    let store = SqliteStore::open(&SqliteOptions {
        url: format!("sqlite://{}", dir.path().join("readstate.db").display()),
        full_sync: false,
        readers: 2,
        timeout: Duration::from_secs(5),
        channel_window: CHANNEL_WINDOW,
        mention_window: MENTION_WINDOW,
        background_writer: false,
        checkpoint_write_rate: 0,
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    store
}

/// Every user's states and every channel's window agree between the two stores.
async fn assert_same(pg: &PgStore, lite: &SqliteStore, users: &[u64], channels: &[u64], at: &str) {
    for &user in users {
        assert_eq!(
            pg.load_user(user, MENTION_WINDOW).await.unwrap(),
            lite.load_user(user, MENTION_WINDOW).await.unwrap(),
            "user {user} after {at}"
        );
    }
    assert_eq!(
        pg.load_channels(channels, CHANNEL_WINDOW).await.unwrap(),
        lite.load_channels(channels, CHANNEL_WINDOW).await.unwrap(),
        "channels after {at}"
    );
}

/// A small deterministic generator (xorshift64*), so a failure replays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

#[tokio::test]
async fn migrations_run_twice_and_concurrently_on_a_fresh_database() {
    let db = TestDb::create().await;
    let a = PgStore::open(&pg_options(&db, 1)).await.unwrap();
    let b = PgStore::open(&pg_options(&db, 2)).await.unwrap();
    assert!(a.ready().await.is_err(), "not ready before migrations");
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    ra.unwrap();
    rb.unwrap();
    a.migrate().await.unwrap();
    b.migrate().await.unwrap();
    a.ready().await.unwrap();
    b.ready().await.unwrap();
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn every_write_kind_round_trips_and_trims_like_sqlite() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let pg = pg_store(&db, 1).await;
    let lite = sqlite_store(&dir).await;
    let users = [1, 2, 3];
    let channels = [10, 11, 12];

    // Ten messages in channel 10 (window 6: a floor), a tombstone, reads and mentions
    // beyond the mention window.
    let first: Vec<Write> = (1..=10)
        .map(|m| Write::Message {
            channel: 10,
            message: m * 10,
            deleted: m == 9,
        })
        .chain((1..=5).map(|m| Write::Mention {
            user: 2,
            channel: 10,
            message: m * 10,
        }))
        .chain([
            Write::ReadPos {
                user: 1,
                channel: 10,
                epoch: 0,
                pos: 70,
                at: 0,
            },
            Write::ReadPos {
                user: 1,
                channel: 10,
                epoch: 0,
                pos: 40,
                at: 0,
            },
            Write::ReadPos {
                user: 3,
                channel: 11,
                epoch: 0,
                pos: 5,
                at: 0,
            },
        ])
        .collect();
    // A late create below the floor, a late create of a tombstoned id, a newer epoch
    // (mark unread) and an older ack that must not undo it.
    let second = vec![
        Write::Message {
            channel: 10,
            message: 15,
            deleted: false,
        },
        Write::Message {
            channel: 10,
            message: 90,
            deleted: false,
        },
        Write::ReadPos {
            user: 1,
            channel: 10,
            epoch: 1_700_000_000_000,
            pos: 49,
            at: 0,
        },
        Write::ReadPos {
            user: 1,
            channel: 10,
            epoch: 0,
            pos: 100,
            at: 0,
        },
    ];
    // Removals in the middle of merges, in order: leave then re-create, delete a
    // channel then a message starting it afresh.
    let third = vec![
        Write::Mention {
            user: 3,
            channel: 11,
            message: 7,
        },
        Write::Leave {
            user: 3,
            channel: 11,
        },
        Write::ReadPos {
            user: 3,
            channel: 11,
            epoch: 0,
            pos: 2,
            at: 0,
        },
        Write::Message {
            channel: 12,
            message: 1,
            deleted: false,
        },
        Write::ReadPos {
            user: 2,
            channel: 12,
            epoch: 0,
            pos: 1,
            at: 0,
        },
        Write::DeleteChannel { channel: 12 },
        Write::Message {
            channel: 12,
            message: 3,
            deleted: false,
        },
        Write::Leave {
            user: 9,
            channel: 99,
        },
    ];
    let batches = [first, second, third];
    for (i, batch) in batches.iter().enumerate() {
        pg.commit(batch).await.unwrap();
        lite.commit(batch).await.unwrap();
        assert_same(&pg, &lite, &users, &channels, &format!("batch {i}")).await;
    }
    // Spot checks that the comparison is not vacuous.
    let ch = &pg.load_channels(&[10], CHANNEL_WINDOW).await.unwrap()[0].1;
    assert_eq!(ch.floor(), 40, "the largest trimmed id");
    assert_eq!(ch.len(), CHANNEL_WINDOW);
    assert!(ch.is_deleted(90), "tombstones are sticky");
    let user2 = pg.load_user(2, MENTION_WINDOW).await.unwrap();
    assert!(user2.get(10).is_some() && user2.get(12).is_none());
    assert!(
        pg.load_user(3, MENTION_WINDOW)
            .await
            .unwrap()
            .get(11)
            .is_some()
    );
    // Replaying every batch changes nothing (merges).
    for batch in &batches[..2] {
        pg.commit(batch).await.unwrap();
        lite.commit(batch).await.unwrap();
    }
    assert_same(&pg, &lite, &users, &channels, "replay").await;
    pg.close().await;
}

#[tokio::test]
async fn readers_page_by_user_id_like_sqlite() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let pg = pg_store(&db, 1).await;
    let lite = sqlite_store(&dir).await;
    let batch: Vec<Write> = (1..=25)
        .map(|user| Write::ReadPos {
            user: user * 3,
            channel: 7,
            epoch: 0,
            pos: if user % 4 == 0 { 10 } else { 50 },
            at: 0,
        })
        .chain([Write::ReadPos {
            user: 1,
            channel: 8,
            epoch: 0,
            pos: 99,
            at: 0,
        }])
        .collect();
    pg.commit(&batch).await.unwrap();
    lite.commit(&batch).await.unwrap();
    let mut after = 0;
    let mut all: Vec<u64> = Vec::new();
    loop {
        let page = pg.readers(7, 50, after, 7).await.unwrap();
        assert_eq!(page, lite.readers(7, 50, after, 7).await.unwrap());
        assert!(page.len() <= 7);
        all.extend(&page);
        match page.last() {
            Some(&last) if page.len() == 7 => after = last,
            _ => break,
        }
    }
    let expected: Vec<u64> = (1..=25).filter(|u| u % 4 != 0).map(|u| u * 3).collect();
    assert_eq!(all, expected);
    assert_eq!(pg.readers(7, 10, 0, 100).await.unwrap().len(), 25);
    assert!(pg.readers(7, 51, 0, 100).await.unwrap().is_empty());
    pg.close().await;
}

#[tokio::test]
async fn the_change_feed_reports_other_nodes_commits_and_a_resync_after_a_lost_connection() {
    let db = TestDb::create().await;
    let a = pg_store(&db, 1).await;
    let b = pg_store(&db, 2).await;
    let mut feed_a = a.watch().await.unwrap().expect("PostgreSQL has a feed");
    let mut feed_b = b.watch().await.unwrap().expect("PostgreSQL has a feed");
    let wait = Duration::from_secs(5);

    // b's own commit is not reported to b; a's is.
    b.commit(&[Write::ReadPos {
        user: 5,
        channel: 6,
        epoch: 0,
        pos: 1,
        at: 0,
    }])
    .await
    .unwrap();
    a.commit(&[
        Write::Mention {
            user: 7,
            channel: 6,
            message: 3,
        },
        Write::Message {
            channel: 6,
            message: 3,
            deleted: false,
        },
        Write::DeleteChannel { channel: 8 },
    ])
    .await
    .unwrap();
    let changes = tokio::time::timeout(wait, feed_b.next())
        .await
        .expect("b hears a's commit")
        .unwrap();
    assert_eq!(changes.users, [7]);
    assert_eq!(changes.channels, [6, 8]);
    assert!(!changes.resync);
    // A deleted channel comes in a notification of its own, so b drops every cached
    // read state in it.
    let changes = tokio::time::timeout(wait, feed_b.next())
        .await
        .expect("b hears a's channel delete")
        .unwrap();
    assert_eq!(changes.deleted_channels, [8]);
    assert!(changes.users.is_empty() && changes.channels.is_empty());
    let changes = tokio::time::timeout(wait, feed_a.next())
        .await
        .expect("a hears b's commit")
        .unwrap();
    assert_eq!(changes.users, [5]);
    assert!(!changes.resync);

    // Junk on the channel is skipped.
    admin(
        &db.server,
        format!(
            "select pg_notify('readstate_changes', 'junk') from pg_database where datname = '{}'",
            db.name
        ),
    )
    .await;

    // Kill b's listening session: the next answer is a resync, then notifications flow again.
    admin(
        &db.server,
        format!(
            "select pg_terminate_backend(pid) from pg_stat_activity \
             where datname = '{}' and query ilike 'listen%'",
            db.name
        ),
    )
    .await;
    let mut resynced = false;
    for _ in 0..5 {
        match tokio::time::timeout(wait, feed_b.next()).await {
            Ok(Ok(changes)) if changes.resync => {
                resynced = true;
                break;
            }
            Ok(Ok(changes)) => panic!("unexpected changes {changes:?}"),
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(_) => panic!("no resync after the listener's connection was killed"),
        }
    }
    assert!(resynced);
    a.commit(&[Write::ReadPos {
        user: 11,
        channel: 6,
        epoch: 0,
        pos: 2,
        at: 0,
    }])
    .await
    .unwrap();
    let changes = tokio::time::timeout(wait, feed_b.next())
        .await
        .expect("b hears a again after reconnecting")
        .unwrap();
    assert_eq!(changes.users, [11]);
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_failed_commit_leaves_its_connection_usable_and_the_retry_lands() {
    let db = TestDb::create().await;
    let store = PgStore::open(&PgOptions {
        pool_size: 1,
        ..pg_options(&db, 1)
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let mut admin_conn = PgConnection::connect(&db.url()).await.unwrap();
    sqlx::raw_sql("alter table mentions rename to mentions_away")
        .execute(&mut admin_conn)
        .await
        .unwrap();
    let batch = [
        Write::ReadPos {
            user: 1,
            channel: 2,
            epoch: 0,
            pos: 3,
            at: 0,
        },
        Write::Mention {
            user: 1,
            channel: 2,
            message: 3,
        },
    ];
    assert!(store.commit(&batch).await.is_err());
    // The same (only) pooled connection serves the next query: not stuck in an
    // aborted transaction, and nothing of the failed batch was written.
    assert!(store.readers(2, 0, 0, 10).await.unwrap().is_empty());
    sqlx::raw_sql("alter table mentions_away rename to mentions")
        .execute(&mut admin_conn)
        .await
        .unwrap();
    store.commit(&batch).await.unwrap();
    assert_eq!(store.readers(2, 3, 0, 10).await.unwrap(), [1]);
    let _ = admin_conn.close().await;
    store.close().await;
}

/// An ack written by a node whose cached copy is in an older unread epoch than the
/// stored state (another node marked it unread a moment before) raises the stored
/// position within the stored epoch, unless it was made before that epoch began; a
/// write that is not an ack (`at` 0) still merges by plain lexicographic max.
#[tokio::test]
async fn an_ack_in_an_older_epoch_applies_in_the_stored_one_unless_it_is_older() {
    let db = TestDb::create().await;
    let x = pg_store(&db, 1).await;
    let y = pg_store(&db, 2).await;
    let read = |user, epoch, pos, at| Write::ReadPos {
        user,
        channel: 9,
        epoch,
        pos,
        at,
    };
    let stored = |store: &PgStore, user: u64| {
        let store = store.clone();
        async move {
            let states = store.load_user(user, MENTION_WINDOW).await.unwrap();
            states.get(9).map(|s| (s.read.epoch, s.read.pos))
        }
    };
    for user in 1..=5 {
        // Both nodes saw the state at (0, 20); x marks it unread at 5 in epoch 1000.
        y.commit(&[read(user, 0, 20, ACK_NOW)]).await.unwrap();
        x.commit(&[read(user, 1000, 4, 0)]).await.unwrap();
    }
    // An ack without a stamp raises the position, above or below y's cached 20.
    y.commit(&[read(1, 0, 25, ACK_NOW), read(2, 0, 15, ACK_NOW)])
        .await
        .unwrap();
    // Stamped after the mark unread: applies; before it: ignored.
    y.commit(&[read(3, 0, 12, 1000), read(4, 0, 12, 999)])
        .await
        .unwrap();
    // Not an ack (a join or a stale mark unread): the newer epoch wins.
    y.commit(&[read(5, 0, 30, 0)]).await.unwrap();
    assert_eq!(stored(&x, 1).await, Some((1000, 25)));
    assert_eq!(stored(&x, 2).await, Some((1000, 15)));
    assert_eq!(stored(&x, 3).await, Some((1000, 12)));
    assert_eq!(stored(&x, 4).await, Some((1000, 4)));
    assert_eq!(stored(&x, 5).await, Some((1000, 4)));
    // An ack never lowers a position, and in a newer epoch than the stored one it is
    // a plain merge.
    y.commit(&[read(1, 0, 10, ACK_NOW), read(2, 2000, 3, ACK_NOW)])
        .await
        .unwrap();
    assert_eq!(stored(&y, 1).await, Some((1000, 25)));
    assert_eq!(stored(&y, 2).await, Some((2000, 3)));
    // The same through a checkpoint of the commit log.
    let mut writes: Vec<Write> = (10..2_010).map(|u| read(u, 1000, 4, 0)).collect();
    x.commit(&writes).await.unwrap();
    writes = (10..2_010).map(|u| read(u, 0, 50 + u, ACK_NOW)).collect();
    y.checkpoint(&writes, false).await.unwrap();
    assert_eq!(stored(&x, 10).await, Some((1000, 60)));
    assert_eq!(stored(&x, 2_009).await, Some((1000, 2_059)));
}

/// Rows of `table` matching `filter` (our own SQL) in the test's database.
async fn count(db: &TestDb, table: &str, filter: &str) -> i64 {
    let mut conn = PgConnection::connect(&db.url()).await.unwrap();
    let n = sqlx::query_scalar(AssertSqlSafe(format!(
        "select count(*) from {table} where {filter}"
    )))
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let _ = conn.close().await;
    n
}

impl Rng {
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// A settings write with colliding stamps and values (ties break on the value).
    fn settings(&mut self) -> Settings {
        let until = match self.below(4) {
            0 => Some(0),
            1 => Some(MUTED_FOREVER),
            2 => Some(1_000 + self.below(5)),
            _ => None,
        };
        let level = match self.below(4) {
            0 => Some(Level::All),
            1 => Some(Level::Mentions),
            2 => Some(Level::Nothing),
            _ => None,
        };
        let mut s = Settings::written(until, level, 1 + self.below(4));
        if self.below(3) == 0 && level.is_some() {
            s.level_at = 1 + self.below(4);
        }
        s
    }

    fn meta(&mut self) -> ChannelMeta {
        ChannelMeta {
            parent: self.below(3),
            group: self.below(3),
            at: 1 + self.below(3),
        }
    }
}

fn read(user: u64, channel: u64, pos: u64) -> Write {
    Write::ReadPos {
        user,
        channel,
        epoch: 0,
        pos,
        at: 0,
    }
}

/// Settings and metadata writes, each twice, shuffled and committed in random
/// batches by two nodes at once: what loads equals the domain's merge of the same
/// writes, and what SQLite keeps for them.
#[tokio::test]
async fn settings_and_channel_meta_merge_like_the_domain_whatever_the_order() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let x = pg_store(&db, 1).await;
    let y = pg_store(&db, 2).await;
    let lite = sqlite_store(&dir).await;
    let users: Vec<u64> = (1..=4).collect();
    let channels: Vec<u64> = (10..=13).collect();
    let mut rng = Rng(0x5e77_1465_0000_0001);
    let mut writes: Vec<Write> = Vec::new();
    let mut want_settings = std::collections::BTreeMap::new();
    let mut want_meta = std::collections::BTreeMap::new();
    for &user in &users {
        for &channel in &channels {
            let mut merged = Settings::default();
            for _ in 0..rng.below(6) {
                let settings = rng.settings();
                merged.merge(&settings);
                let w = Write::Settings {
                    user,
                    channel,
                    settings,
                };
                writes.extend([w, w]);
            }
            want_settings.insert((user, channel), merged);
        }
    }
    for &channel in &channels {
        let mut merged = ChannelMeta::default();
        for _ in 0..rng.below(6) {
            let meta = rng.meta();
            merged.merge(&meta);
            let w = Write::ChannelMeta { channel, meta };
            writes.extend([w, w]);
        }
        want_meta.insert(channel, merged);
    }
    assert!(want_settings.values().filter(|s| !s.is_default()).count() > 4);
    // The states exist before their settings load (settings without a state are
    // ignored).
    let states: Vec<Write> = users
        .iter()
        .flat_map(|&u| channels.iter().map(move |&c| read(u, c, 1)))
        .collect();
    x.commit(&states).await.unwrap();
    lite.commit(&states).await.unwrap();
    rng.shuffle(&mut writes);
    let mut batches = Vec::new();
    let mut rest = &writes[..];
    while !rest.is_empty() {
        let n = (1 + rng.below(10) as usize).min(rest.len());
        batches.push(&rest[..n]);
        rest = &rest[n..];
    }
    // Two nodes, several transactions each in flight at once.
    let (xs, ys): (Vec<_>, Vec<_>) = batches.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let run = |store: &PgStore, batches: Vec<(usize, &&[Write])>| {
        let store = store.clone();
        let batches: Vec<Vec<Write>> = batches.into_iter().map(|(_, b)| b.to_vec()).collect();
        async move {
            for chunk in batches.chunks(3) {
                let commits = chunk.iter().map(|b| store.commit(b));
                for r in futures_util::future::join_all(commits).await {
                    r.unwrap();
                }
            }
        }
    };
    tokio::join!(run(&x, xs), run(&y, ys));
    for batch in &batches {
        lite.commit(batch).await.unwrap();
    }
    for &user in &users {
        let states = y.load_user(user, MENTION_WINDOW).await.unwrap();
        for &channel in &channels {
            assert_eq!(
                states.get(channel).unwrap().settings,
                want_settings[&(user, channel)],
                "user {user}, channel {channel}"
            );
        }
    }
    for (channel, window) in x.load_channels(&channels, CHANNEL_WINDOW).await.unwrap() {
        assert_eq!(window.meta(), want_meta[&channel], "channel {channel}");
    }
    assert_same(&x, &lite, &users, &channels, "settings and metadata").await;
    // Replayed (a commit log replay after a crash): nothing changes.
    x.commit(&writes).await.unwrap();
    assert_same(&x, &lite, &users, &channels, "replay").await;
    x.close().await;
    y.close().await;
}

#[tokio::test]
async fn removals_take_settings_metadata_and_a_deleted_users_rows_like_sqlite() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let pg = pg_store(&db, 1).await;
    let other = pg_store(&db, 2).await;
    let mut feed = other.watch().await.unwrap().expect("PostgreSQL has a feed");
    let lite = sqlite_store(&dir).await;
    let muted = |user, channel, at| Write::Settings {
        user,
        channel,
        settings: Settings::written(Some(MUTED_FOREVER), Some(Level::Nothing), at),
    };
    let meta = |channel, group| Write::ChannelMeta {
        channel,
        meta: ChannelMeta {
            parent: 0,
            group,
            at: 1,
        },
    };
    let mut setup = Vec::new();
    for user in [1, 2, 3] {
        for channel in [10, 11] {
            setup.extend([
                read(user, channel, 5),
                Write::Mention {
                    user,
                    channel,
                    message: 4,
                },
                muted(user, channel, 1),
            ]);
        }
    }
    setup.extend([meta(10, 7), meta(11, 8)]);
    let batches = [
        setup,
        // Leave with settings before and after it in the same batch.
        vec![
            muted(1, 10, 2),
            Write::Leave {
                user: 1,
                channel: 10,
            },
            read(1, 10, 6),
        ],
        // A deleted user, created afresh after the delete in the same batch.
        vec![
            Write::DeleteUser { user: 2 },
            read(2, 12, 1),
            // Settings of a state that has no row: stored, never loaded.
            muted(3, 13, 1),
        ],
        vec![Write::DeleteChannel { channel: 11 }, meta(11, 0)],
    ];
    let users = [1, 2, 3];
    let channels = [10, 11, 12, 13];
    for (i, batch) in batches.iter().enumerate() {
        pg.commit(batch).await.unwrap();
        lite.commit(batch).await.unwrap();
        assert_same(&pg, &lite, &users, &channels, &format!("batch {i}")).await;
    }
    let user1 = pg.load_user(1, MENTION_WINDOW).await.unwrap();
    assert!(
        user1.get(10).unwrap().settings.is_default(),
        "left, then back"
    );
    assert_eq!(user1.channels().collect::<Vec<_>>(), [10]);
    let user2 = pg.load_user(2, MENTION_WINDOW).await.unwrap();
    assert_eq!(user2.channels().collect::<Vec<_>>(), [12]);
    assert!(user2.get(12).unwrap().settings.is_default());
    for table in ["read_states", "mentions", "settings"] {
        assert_eq!(
            count(&db, table, "user_id = 2 and channel_id <> 12").await,
            0,
            "{table}"
        );
    }
    let user3 = pg.load_user(3, MENTION_WINDOW).await.unwrap();
    assert_eq!(user3.channels().collect::<Vec<_>>(), [10]);
    assert!(user3.get(10).unwrap().settings.muted(u64::MAX - 1));
    assert_eq!(user3.get(10).unwrap().mentions.len(), 1);
    assert_eq!(count(&db, "settings", "channel_id = 11").await, 0);
    assert_eq!(
        count(&db, "settings", "user_id = 3 and channel_id = 13").await,
        1
    );
    let windows = pg.load_channels(&[10, 11], CHANNEL_WINDOW).await.unwrap();
    assert_eq!(windows[0].1.meta().group, 7);
    assert_eq!(
        windows[1].1.meta(),
        ChannelMeta {
            parent: 0,
            group: 0,
            at: 1
        },
        "the deleted channel's metadata does not come back"
    );
    // The other node heard of every user and channel written.
    let mut users_heard = std::collections::BTreeSet::new();
    let mut channels_heard = std::collections::BTreeSet::new();
    while !(users_heard.contains(&2) && channels_heard.contains(&11)) {
        let changes = tokio::time::timeout(Duration::from_secs(5), feed.next())
            .await
            .expect("the other node hears the commits")
            .unwrap();
        users_heard.extend(changes.users);
        channels_heard.extend(changes.channels.into_iter().chain(changes.deleted_channels));
    }
    assert!(
        users_heard.is_superset(&[1, 2, 3].into()),
        "{users_heard:?}"
    );
    pg.close().await;
    other.close().await;
}

/// Random batches of every write kind: PostgreSQL keeps what SQLite keeps.
#[tokio::test]
async fn random_batches_of_every_write_kind_give_the_same_state_as_sqlite() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let pg = pg_store(&db, 1).await;
    let lite = sqlite_store(&dir).await;
    let users: Vec<u64> = (1..=4).collect();
    let channels: Vec<u64> = (1..=3).collect();
    let mut rng = Rng(0x0dd_ba11_cafe_f00d);
    for round in 0..40 {
        let n = 1 + rng.below(30);
        let batch: Vec<Write> = (0..n)
            .map(|_| {
                let user = 1 + rng.below(4);
                let channel = 1 + rng.below(3);
                let message = 1 + rng.below(25);
                match rng.below(24) {
                    0..=4 => Write::Message {
                        channel,
                        message,
                        deleted: rng.below(4) == 0,
                    },
                    5..=8 => Write::ReadPos {
                        user,
                        channel,
                        epoch: rng.below(3),
                        pos: message,
                        at: 0,
                    },
                    9..=11 => Write::Mention {
                        user,
                        channel,
                        message,
                    },
                    12..=16 => Write::Settings {
                        user,
                        channel,
                        settings: rng.settings(),
                    },
                    17..=19 => Write::ChannelMeta {
                        channel,
                        meta: rng.meta(),
                    },
                    20 => Write::Leave { user, channel },
                    21 => Write::DeleteChannel { channel },
                    _ => Write::DeleteUser { user },
                }
            })
            .collect();
        pg.commit(&batch).await.unwrap();
        lite.commit(&batch).await.unwrap();
        assert_same(
            &pg,
            &lite,
            &users,
            &channels,
            &format!("round {round}: {batch:?}"),
        )
        .await;
    }
    pg.close().await;
}
