//! The backup's log handling on a real SQLite store and a real commit log, with the
//! server's part (commits, checkpoints, segment deletion) played by the test between
//! the backup's steps.

use super::*;
use crate::domain::{ChannelMeta, Level, MUTED_FOREVER};
use crate::store::Write;
use crate::wal::Wal;

/// Settings of a deployment in `dir` (SQLite file, commit log beside it).
fn settings(dir: &Path) -> Settings {
    let mut settings = Settings::default();
    settings.storage.url = Secret::new(format!("sqlite://{}/readstate.db", dir.display()));
    settings
}

fn pos(user: u64, channel: u64, pos: u64) -> Write {
    Write::ReadPos {
        user,
        channel,
        epoch: 0,
        pos,
        at: 0,
    }
}

/// Small segments: every sync of a record or two ends its segment.
fn small_segments() -> WalOptions {
    WalOptions { segment_bytes: 60 }
}

/// The stored read position of `(user, channel)` in the SQLite file `db`.
async fn stored(db: &Path, user: u64, channel: u64) -> Option<i64> {
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await
        .unwrap();
    let pos =
        sqlx::query_scalar("select pos from read_states where user_id = ?1 and channel_id = ?2")
            .bind(i64::try_from(user).unwrap())
            .bind(i64::try_from(channel).unwrap())
            .fetch_optional(&mut conn)
            .await
            .unwrap();
    conn.close().await.unwrap();
    pos
}

fn log_and_sync(wal: &mut Wal, writes: &[Write]) -> Position {
    wal.append(writes).unwrap();
    wal.sync().unwrap()
}

/// The race of the obvious order: a checkpoint lands after the log was looked at and
/// deletes the segments the backup needs. Pinned, they stay readable, and the
/// snapshot taken afterwards holds what the checkpoint covered.
#[tokio::test]
async fn a_checkpoint_during_the_backup_loses_nothing() {
    let live = tempfile::tempdir().unwrap();
    let settings = settings(live.path());
    let log_dir = settings.storage.log_dir();
    let store = crate::app::open_store(&settings).await.unwrap();
    let (mut wal, _, _) = Wal::open_dir(&log_dir, small_segments()).unwrap();

    // Checkpointed: in the database.
    let first = [pos(1, 10, 5)];
    let end = log_and_sync(&mut wal, &first);
    store.commit(&first).await.unwrap();
    wal.checkpointed(end).unwrap();
    // Acknowledged, only in the log (two segments).
    let second = [pos(2, 10, 7)];
    log_and_sync(&mut wal, &second);
    let third = [pos(3, 10, 9), pos(2, 10, 8)];
    let end = log_and_sync(&mut wal, &third);

    let mut pin = LogPin::pin(&log_dir).unwrap().expect("a log");
    let pinned: Vec<u64> = pin.segments.keys().copied().collect();
    assert!(pinned.len() >= 2, "{pinned:?}");

    // The server checkpoints everything and deletes the segments; then logs more, in
    // new segments, while the backup runs.
    store.commit(&second).await.unwrap();
    store.commit(&third).await.unwrap();
    wal.checkpointed(end).unwrap();
    let fourth = [pos(4, 10, 11)];
    log_and_sync(&mut wal, &fourth);
    let fifth = [Write::Leave {
        user: 1,
        channel: 10,
    }];
    log_and_sync(&mut wal, &fifth);
    assert!(
        !log_dir.join(&pin.segments[&pinned[0]].0).exists(),
        "the test must delete a pinned segment"
    );

    let backup_dir = tempfile::tempdir().unwrap();
    let scratch = Scratch::new(backup_dir.path(), "test");
    let db = PathBuf::from(format!("{}/readstate.db", live.path().display()));
    snapshot(&db, &scratch.db, Duration::from_secs(5), Some(&mut pin))
        .await
        .unwrap();
    pin.copy_to(&scratch.log).unwrap();
    let report = replay(&settings, &scratch.db, Some((&scratch.log, &log_dir)))
        .await
        .unwrap()
        .expect("replayed");
    assert!(report.records >= 2, "{report:?}");

    // The state after every record: the leave removed (1, 10).
    assert_eq!(stored(&scratch.db, 1, 10).await, None);
    assert_eq!(stored(&scratch.db, 2, 10).await, Some(8));
    assert_eq!(stored(&scratch.db, 3, 10).await, Some(9));
    assert_eq!(stored(&scratch.db, 4, 10).await, Some(11));
    drop(wal);
    store.close().await;
}

/// The whole command pair offline: writes only in the log are in the backup, the
/// backup is one file, and restore refuses anything but an empty target.
#[tokio::test]
async fn backup_then_restore_round_trip() {
    let live = tempfile::tempdir().unwrap();
    let settings = settings(live.path());
    let store = crate::app::open_store(&settings).await.unwrap();
    let (mut wal, _, _) =
        Wal::open_dir(&settings.storage.log_dir(), WalOptions::default()).unwrap();
    log_and_sync(&mut wal, &[pos(1, 2, 3), pos(4, 5, 6)]);
    drop(wal);
    store.close().await;

    let out = tempfile::tempdir().unwrap();
    let to = out.path().join("sub/backup.db");
    let mut lines = Vec::new();
    let report = backup(&settings, &to, &mut |l| lines.push(l.to_owned()))
        .await
        .unwrap();
    assert_eq!(report.log_records, 1, "{lines:?}");
    assert_eq!(report.rows.read_states, 2);
    assert_eq!(stored(&to, 4, 5).await, Some(6));
    let names: Vec<_> = fs::read_dir(out.path().join("sub"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["backup.db"], "scratch files are gone, no -wal");
    // The live log is as it was: nothing truncated, nothing checkpointed.
    assert!(
        read_checkpoint(&settings.storage.log_dir())
            .unwrap()
            .is_none()
    );

    // Never over an existing file.
    let again = backup(&settings, &to, &mut |_| {}).await;
    assert!(matches!(again, Err(Error::Refused(_))), "{again:?}");

    let target = tempfile::tempdir().unwrap();
    let restored_settings = self::settings(&target.path().join("data"));
    let restored = restore(&restored_settings, &to, &mut |_| {}).await.unwrap();
    assert_eq!(restored.rows, report.rows);
    assert_eq!(stored(&restored.path, 1, 2).await, Some(3));
    let again = restore(&restored_settings, &to, &mut |_| {}).await;
    assert!(
        matches!(&again, Err(Error::Refused(m)) if m.contains("already exists")),
        "{again:?}"
    );
}

#[tokio::test]
async fn restore_refuses_what_is_not_a_readstate_database() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.db");
    let mut conn = SqliteConnectOptions::new()
        .filename(&plain)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    sqlx::query("create table t (x)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let noise = dir.path().join("noise.db");
    fs::write(&noise, vec![7u8; 10_000]).unwrap();

    let target = settings(&dir.path().join("data"));
    for (file, says) in [(&plain, "migrations table"), (&noise, "SQLite")] {
        let result = restore(&target, file, &mut |_| {}).await;
        assert!(
            matches!(&result, Err(Error::Refused(m)) if m.contains(says)),
            "{result:?}"
        );
    }
    let left: Vec<_> = fs::read_dir(dir.path().join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "nothing left at the target: {left:?}");
}

fn mute(user: u64, channel: u64, until: u64, at: u64) -> Write {
    Write::Settings {
        user,
        channel,
        settings: crate::domain::Settings::written(Some(until), None, at),
    }
}

fn level(user: u64, channel: u64, level: Level, at: u64) -> Write {
    Write::Settings {
        user,
        channel,
        settings: crate::domain::Settings::written(None, Some(level), at),
    }
}

fn meta(channel: u64, parent: u64, group: u64, at: u64) -> Write {
    Write::ChannelMeta {
        channel,
        meta: ChannelMeta { parent, group, at },
    }
}

/// Notification settings and channel metadata, in the database and only in the log,
/// are in the backup and come back on restore; a user deleted in the log is not.
#[tokio::test]
async fn settings_and_channel_metadata_round_trip_through_backup_and_restore() {
    let live = tempfile::tempdir().unwrap();
    let settings = settings(live.path());
    let store = crate::app::open_store(&settings).await.unwrap();
    store
        .commit(&[
            pos(1, 10, 5),
            mute(1, 10, 100, 1),
            pos(2, 10, 1),
            level(2, 10, Level::Nothing, 1),
            pos(3, 11, 1),
            mute(3, 11, MUTED_FOREVER, 1),
            meta(10, 0, 7, 1),
            meta(11, 10, 0, 1),
        ])
        .await
        .unwrap();
    store.close().await;
    let (mut wal, _, _) =
        Wal::open_dir(&settings.storage.log_dir(), WalOptions::default()).unwrap();
    log_and_sync(
        &mut wal,
        &[
            level(1, 10, Level::Mentions, 2),
            // Older than the stored mute: changes nothing.
            mute(1, 10, 50, 0),
            meta(10, 0, 8, 2),
            Write::DeleteUser { user: 2 },
        ],
    );
    drop(wal);

    let out = tempfile::tempdir().unwrap();
    let to = out.path().join("backup.db");
    let report = backup(&settings, &to, &mut |_| {}).await.unwrap();
    assert_eq!(report.log_writes, 4);
    assert_eq!(
        (
            report.rows.read_states,
            report.rows.settings,
            report.rows.channel_meta
        ),
        (2, 2, 2),
        "{}",
        report.rows
    );
    assert!(report.rows.to_string().contains("2 notification settings"));

    let target = tempfile::tempdir().unwrap();
    let restored_settings = self::settings(&target.path().join("data"));
    let restored = restore(&restored_settings, &to, &mut |_| {}).await.unwrap();
    assert_eq!(restored.rows, report.rows);
    let store = crate::app::open_store(&restored_settings).await.unwrap();
    let user1 = store.load_user(1, 4).await.unwrap();
    let s = user1.get(10).expect("user 1 is in channel 10").settings;
    assert_eq!(
        (s.muted_until, s.muted_at, s.level, s.level_at),
        (100, 1, Level::Mentions, 2)
    );
    assert!(store.load_user(2, 4).await.unwrap().is_empty());
    let user3 = store.load_user(3, 4).await.unwrap();
    assert_eq!(user3.get(11).unwrap().settings.muted_until, MUTED_FOREVER);
    let channels = store.load_channels(&[10, 11, 12], 16).await.unwrap();
    let metas: Vec<ChannelMeta> = channels.iter().map(|(_, ch)| ch.meta()).collect();
    assert_eq!(
        metas,
        [
            ChannelMeta {
                parent: 0,
                group: 8,
                at: 2
            },
            ChannelMeta {
                parent: 10,
                group: 0,
                at: 1
            },
            ChannelMeta::default(),
        ]
    );
    store.close().await;
}

/// A backup made before migration 2 (no settings or channel_meta tables) still
/// restores, and the server creates the tables when it opens it; a file that claims
/// migration 2 but lacks its tables is refused.
#[tokio::test]
async fn a_backup_from_before_the_settings_tables_restores_and_one_missing_them_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let make = |name: &str, drop_settings: bool| {
        let path = dir.path().join(name);
        async move {
            let mut conn = SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true)
                .connect()
                .await
                .unwrap();
            let migrator = crate::store::sqlite::migrator();
            if drop_settings {
                migrator.run(&mut conn).await.unwrap();
                sqlx::query("drop table settings")
                    .execute(&mut conn)
                    .await
                    .unwrap();
            } else {
                migrator.run_to(1, &mut conn).await.unwrap();
            }
            sqlx::query("insert into read_states (user_id, channel_id, pos) values (1, 2, 3)")
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
            path
        }
    };
    let old = make("old.db", false).await;
    let target = settings(&dir.path().join("data"));
    let restored = restore(&target, &old, &mut |_| {}).await.unwrap();
    assert_eq!(restored.rows.read_states, 1);
    assert_eq!((restored.rows.settings, restored.rows.channel_meta), (0, 0));
    let store = crate::app::open_store(&target).await.unwrap();
    store.ready().await.unwrap();
    store.commit(&[mute(1, 2, 9, 1)]).await.unwrap();
    let states = store.load_user(1, 4).await.unwrap();
    assert_eq!(states.get(2).unwrap().settings.muted_until, 9);
    store.close().await;

    let broken = make("broken.db", true).await;
    let target = settings(&dir.path().join("data2"));
    let result = restore(&target, &broken, &mut |_| {}).await;
    assert!(
        matches!(&result, Err(Error::Refused(m)) if m.contains("no settings table")),
        "{result:?}"
    );
}
