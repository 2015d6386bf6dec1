//! Notification settings, channel metadata and deleted users through a real SQLite
//! store: what `commit` then `load_user`/`load_channels` give equals the domain's
//! merge of the same writes, whatever their order and repetition, and removals take
//! the rows with them. (`tests/pg_store.rs` holds PostgreSQL to the same.)

use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _};

use super::sqlite::{SqliteOptions, SqliteStore};
use super::{Store, Write};
use crate::domain::{ChannelMeta, Level, MUTED_FOREVER, Settings};

const MENTION_WINDOW: usize = 4;
const CHANNEL_WINDOW: usize = 8;

async fn open(dir: &tempfile::TempDir) -> SqliteStore {
    let store = SqliteStore::open(&SqliteOptions {
        url: format!("sqlite://{}", dir.path().join("rs.db").display()),
        full_sync: false,
        readers: 2,
        timeout: Duration::from_secs(5),
        channel_window: CHANNEL_WINDOW,
        mention_window: MENTION_WINDOW,
        background_writer: false,
        checkpoint_write_rate: 0,
    })
    .await
    .expect("the store opens");
    store.migrate().await.expect("migrates");
    store.ready().await.expect("every migration applied");
    store
}

/// Rows of `table` matching `filter` (our own SQL), counted on a connection of
/// its own.
async fn count(dir: &tempfile::TempDir, table: &str, filter: &str) -> i64 {
    let mut conn = SqliteConnectOptions::new()
        .filename(dir.path().join("rs.db"))
        .read_only(true)
        .connect()
        .await
        .expect("opens");
    let sql = format!("select count(*) from {table} where {filter}");
    let n = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(&mut conn)
        .await
        .expect("counts");
    conn.close().await.expect("closes");
    n
}

/// xorshift64*: deterministic, so a failure replays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// A settings write with colliding stamps and values (ties break on the value).
fn random_settings(rng: &mut Rng) -> Settings {
    let until = match rng.below(4) {
        0 => Some(0),
        1 => Some(MUTED_FOREVER),
        2 => Some(1_000 + rng.below(5)),
        _ => None,
    };
    let level = match rng.below(4) {
        0 => Some(Level::All),
        1 => Some(Level::Mentions),
        2 => Some(Level::Nothing),
        _ => None,
    };
    let mut s = Settings::written(until, level, 1 + rng.below(4));
    // Now and then the two registers carry different stamps.
    if rng.below(3) == 0 && level.is_some() {
        s.level_at = 1 + rng.below(4);
    }
    s
}

fn random_meta(rng: &mut Rng) -> ChannelMeta {
    ChannelMeta {
        parent: rng.below(3),
        group: rng.below(3),
        at: 1 + rng.below(3),
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

#[tokio::test]
async fn settings_and_channel_meta_through_commit_and_load_equal_the_domain_merge() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = open(&dir).await;
    let users = [1u64, 2, 3];
    let channels = [10u64, 11, 12, 13];
    let mut rng = Rng(0x5e77_1465);
    for round in 0..12 {
        // Every state exists; settings and metadata writes, each given twice, in
        // random order, committed in random-sized batches.
        let mut writes: Vec<Write> = Vec::new();
        let mut want_settings = std::collections::BTreeMap::new();
        let mut want_meta = std::collections::BTreeMap::new();
        for &user in &users {
            let user = user + 100 * round;
            for &channel in &channels {
                writes.push(read(user, channel, 1));
                let mut merged = Settings::default();
                for _ in 0..rng.below(5) {
                    let settings = random_settings(&mut rng);
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
            for _ in 0..rng.below(5) {
                let meta = random_meta(&mut rng);
                merged.merge(&meta);
                let w = Write::ChannelMeta {
                    channel: channel + 100 * round,
                    meta,
                };
                writes.extend([w, w]);
            }
            want_meta.insert(channel + 100 * round, merged);
        }
        assert!(
            want_settings.values().filter(|s| !s.is_default()).count() > 3,
            "not vacuous"
        );
        rng.shuffle(&mut writes);
        let mut rest = &writes[..];
        while !rest.is_empty() {
            let n = (1 + rng.below(12) as usize).min(rest.len());
            store.commit(&rest[..n]).await.expect("commits");
            rest = &rest[n..];
        }
        for &user in &users {
            let user = user + 100 * round;
            let states = store.load_user(user, MENTION_WINDOW).await.expect("loads");
            assert_eq!(states.len(), channels.len());
            for &channel in &channels {
                let got = states.get(channel).expect("a state").settings;
                assert_eq!(
                    got,
                    want_settings[&(user, channel)],
                    "round {round}, user {user}, channel {channel}"
                );
            }
        }
        let ids: Vec<u64> = want_meta.keys().copied().collect();
        let loaded = store
            .load_channels(&ids, CHANNEL_WINDOW)
            .await
            .expect("loads");
        for (channel, window) in loaded {
            assert_eq!(window.meta(), want_meta[&channel], "round {round}");
            assert_eq!(window.is_known(), !want_meta[&channel].is_default());
        }
    }
    store.close().await;
}

#[tokio::test]
async fn settings_of_a_left_state_do_not_come_back_and_never_show_without_a_state() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = open(&dir).await;
    let muted = |user, channel, at| Write::Settings {
        user,
        channel,
        settings: Settings::written(Some(MUTED_FOREVER), Some(Level::Nothing), at),
    };
    // Across batches: muted, left, joined again.
    store
        .commit(&[read(1, 10, 5), muted(1, 10, 3)])
        .await
        .expect("commits");
    let states = store.load_user(1, MENTION_WINDOW).await.expect("loads");
    assert!(states.get(10).expect("a state").settings.muted(0));
    store
        .commit(&[Write::Leave {
            user: 1,
            channel: 10,
        }])
        .await
        .expect("commits");
    assert_eq!(count(&dir, "settings", "user_id = 1").await, 0);
    store.commit(&[read(1, 10, 7)]).await.expect("commits");
    let states = store.load_user(1, MENTION_WINDOW).await.expect("loads");
    assert!(states.get(10).expect("a state").settings.is_default());
    // Within one batch: the leave orders after the settings written before it, and
    // settings written after it stay.
    store
        .commit(&[
            read(2, 10, 1),
            muted(2, 10, 3),
            Write::Leave {
                user: 2,
                channel: 10,
            },
            read(2, 10, 2),
            read(2, 11, 2),
            muted(2, 11, 4),
        ])
        .await
        .expect("commits");
    let states = store.load_user(2, MENTION_WINDOW).await.expect("loads");
    assert!(states.get(10).expect("a state").settings.is_default());
    assert_eq!(
        states.get(11).expect("a state").settings,
        Settings::written(Some(MUTED_FOREVER), Some(Level::Nothing), 4)
    );
    // Settings of a state that has no row are ignored.
    store.commit(&[muted(3, 12, 1)]).await.expect("commits");
    assert!(
        store
            .load_user(3, MENTION_WINDOW)
            .await
            .expect("loads")
            .is_empty()
    );
    // A row that says nothing is never written.
    store
        .commit(&[Write::Settings {
            user: 4,
            channel: 12,
            settings: Settings::default(),
        }])
        .await
        .expect("commits");
    assert_eq!(count(&dir, "settings", "user_id = 4").await, 0);
    store.close().await;
}

#[tokio::test]
async fn deleting_a_user_removes_all_of_theirs_and_nothing_of_others() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = open(&dir).await;
    let mut writes = Vec::new();
    for user in [1, 2] {
        for channel in [10, 11] {
            writes.extend([
                read(user, channel, 4),
                Write::Mention {
                    user,
                    channel,
                    message: 9,
                },
                Write::Settings {
                    user,
                    channel,
                    settings: Settings::written(Some(50), None, 1),
                },
            ]);
        }
    }
    writes.push(Write::ChannelMeta {
        channel: 10,
        meta: ChannelMeta {
            parent: 0,
            group: 3,
            at: 1,
        },
    });
    store.commit(&writes).await.expect("commits");
    let before = store.load_user(2, MENTION_WINDOW).await.expect("loads");
    // Deleted in the middle of a batch: what follows creates afresh.
    store
        .commit(&[
            read(1, 12, 1),
            Write::DeleteUser { user: 1 },
            read(1, 13, 2),
        ])
        .await
        .expect("commits");
    let user1 = store.load_user(1, MENTION_WINDOW).await.expect("loads");
    assert_eq!(user1.channels().collect::<Vec<_>>(), [13]);
    assert!(user1.get(13).expect("a state").settings.is_default());
    for table in ["read_states", "mentions", "settings"] {
        assert_eq!(
            count(&dir, table, "user_id = 1 and channel_id <> 13").await,
            0,
            "{table}"
        );
    }
    assert_eq!(
        store.load_user(2, MENTION_WINDOW).await.expect("loads"),
        before
    );
    assert_eq!(store.readers(10, 0, 0, 10).await.expect("reads"), [2]);
    let meta = store
        .load_channels(&[10], CHANNEL_WINDOW)
        .await
        .expect("loads");
    assert_eq!(meta[0].1.meta().group, 3, "channels are not the user's");
    store.close().await;
}

#[tokio::test]
async fn deleting_a_channel_removes_its_settings_and_metadata_only() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = open(&dir).await;
    let meta = |channel, group| Write::ChannelMeta {
        channel,
        meta: ChannelMeta {
            parent: 0,
            group,
            at: 1,
        },
    };
    let settings = |user, channel| Write::Settings {
        user,
        channel,
        settings: Settings::written(None, Some(Level::Mentions), 1),
    };
    store
        .commit(&[
            read(1, 10, 1),
            read(1, 11, 1),
            read(2, 10, 1),
            settings(1, 10),
            settings(1, 11),
            settings(2, 10),
            meta(10, 5),
            meta(11, 6),
        ])
        .await
        .expect("commits");
    store
        .commit(&[Write::DeleteChannel { channel: 10 }])
        .await
        .expect("commits");
    assert_eq!(count(&dir, "settings", "channel_id = 10").await, 0);
    assert_eq!(count(&dir, "channel_meta", "channel_id = 10").await, 0);
    let windows = store
        .load_channels(&[10, 11], CHANNEL_WINDOW)
        .await
        .expect("loads");
    assert!(!windows[0].1.is_known());
    assert_eq!(windows[1].1.meta().group, 6);
    let user1 = store.load_user(1, MENTION_WINDOW).await.expect("loads");
    assert_eq!(user1.channels().collect::<Vec<_>>(), [11]);
    assert_eq!(
        user1.get(11).expect("a state").settings.level,
        Level::Mentions
    );
    // The channel starts afresh: no old metadata or settings come back.
    store
        .commit(&[read(2, 10, 1), meta(10, 0)])
        .await
        .expect("commits");
    let user2 = store.load_user(2, MENTION_WINDOW).await.expect("loads");
    assert!(user2.get(10).expect("a state").settings.is_default());
    let windows = store
        .load_channels(&[10], CHANNEL_WINDOW)
        .await
        .expect("loads");
    assert_eq!(windows[0].1.meta().group, 0, "not the deleted channel's 5");
    store.close().await;
}
