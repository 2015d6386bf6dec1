//! `readstate backup` and `readstate restore`: an online, consistent backup of a
//! SQLite deployment into one SQLite file, and its restore into an empty data
//! directory. PostgreSQL deployments are refused (they have `pg_dump` and point-in-time
//! recovery).
//!
//! # Backup
//!
//! A backup must hold every write acknowledged before it started. With the commit log
//! an acknowledged write may be only in the log (a checkpoint merges it into the
//! database later), and the server goes on checkpointing, and deleting the segments a
//! checkpoint covers, while the backup runs. So the backup combines a snapshot of the
//! database with a copy of the log, in this order:
//!
//! 1. **Pin the log.** Read the checkpoint position `P`, open every segment from `P`'s
//!    segment on, read the checkpoint again, and start over if it moved. An open file
//!    stays readable after the server deletes it, so every record after `P` stays
//!    available to the backup, however far the server checkpoints meanwhile.
//! 2. **Snapshot the database** with `VACUUM INTO` from a read-only connection: a
//!    consistent snapshot `Q` of what was checkpointed when it started. `Q` holds at
//!    least everything up to `P`, since the server writes the checkpoint file only
//!    after the database commit it covers. Segments the server starts meanwhile are
//!    pinned as they appear (the directory is polled), so the log copy reaches past
//!    `Q`.
//! 3. **Copy the log**: the pinned files as they are now, and `P`, into a scratch
//!    directory next to the destination. A record the server was writing at that
//!    moment is a torn tail in the copy.
//! 4. **Replay** the copy into the snapshot with the start-up recovery code
//!    ([`crate::commit::recover_log_on`]): the torn tail is dropped, records after `P` are
//!    merged; those `Q` already holds are harmless (merges are idempotent, and a
//!    replayed run of records ending past `Q` ends in the same state as applying it
//!    once: exactly what start-up after a crash relies on).
//! 5. **Finish**: switch the file to a rollback journal (one self-contained file),
//!    fsync it, link it to the destination (never replacing a file) and fsync the
//!    directory.
//!
//! Every write acknowledged before step 1 is in the backup: if its record ends at or
//! before `P`, the database had it before step 1 and `Q` has it; otherwise its segment
//! was live (at or after `P`'s) and was pinned in step 1, and the copy, read after the
//! acknowledgement, holds it. The result is the state after a prefix of the log that
//! ends at or after `Q`: a point-in-time state, not a mix.
//!
//! Why not the other orders: snapshotting the database first and copying the log
//! afterwards loses writes when a checkpoint lands in between (the snapshot lacks them
//! and the copied checkpoint says the log no longer needs them, their segments may be
//! gone). Copying the log first and snapshotting afterwards loses nothing, but the
//! snapshot may then be newer than the log copy, and replaying an older run of records
//! onto a newer state is not harmless when the newer part removed what the older run
//! writes (a leave, a deleted channel would come back).
//!
//! The live log directory is only ever read: recovery, which truncates torn tails and
//! deletes segments, runs on the copy.
//!
//! # Restore
//!
//! Only into an empty target: no database file (nor its `-wal`, `-shm` or `-journal`)
//! at the configured path and no commit log records in `storage.log_dir` (they would be
//! replayed onto the restored database at start). The file is copied next to the
//! target, fsynced, checked there (`PRAGMA integrity_check`, the migrations table
//! against this build's migrations, the tables), and only then linked into place: what
//! is checked is what is installed.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions as _, Connection as _};

use crate::config::{CommitMode, Durability, Secret, Settings};
use crate::store::sqlite::with_suffix;
use crate::wal::{self, DirFs, Position, RecoveryReport, WalOptions};

/// Where the documentation of backups is, for refusals.
const DOCS: &str = "docs/OPERATIONS.md#backups";

/// How often the log directory is polled for new segments while the database is
/// copied.
const POLL: Duration = Duration::from_millis(10);

/// Attempts to pin the log's segments while its checkpoint stays put.
const PIN_ATTEMPTS: usize = 100;

/// Why a backup or restore did not happen.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Refused before anything was written: the configuration, an argument or the
    /// target is not what the command needs (`readstate` exits with 64).
    #[error("{0}")]
    Refused(String),
    /// Failed while working (I/O, SQLite, a corrupt commit log); scratch files are
    /// removed and the destination is untouched.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Failed(e.into())
    }
}

/// Rows per table of a readstate database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowCounts {
    pub read_states: u64,
    pub mentions: u64,
    pub channel_messages: u64,
    pub channels: u64,
    /// Read states' notification settings (0 in a database from before they were).
    pub settings: u64,
    /// Channels' metadata (0 in a database from before it was).
    pub channel_meta: u64,
}

impl fmt::Display for RowCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} read states, {} mentions, {} channel messages, {} channel floors, \
             {} notification settings, {} channel metadata",
            self.read_states,
            self.mentions,
            self.channel_messages,
            self.channels,
            self.settings,
            self.channel_meta
        )
    }
}

/// What [`backup`] wrote.
#[derive(Debug, Clone)]
pub struct BackupReport {
    /// The backup file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Rows in it.
    pub rows: RowCounts,
    /// Commit log segments copied (0 without a commit log).
    pub log_segments: usize,
    /// Bytes of them.
    pub log_bytes: u64,
    /// Records after the checkpoint merged into the snapshot.
    pub log_records: usize,
    /// Writes in those records.
    pub log_writes: usize,
    /// A record was being written as the log was copied (dropped as a torn tail; it
    /// was not acknowledged before the copy).
    pub torn_tail: bool,
    pub took: Duration,
}

/// What [`restore`] wrote.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// The restored database (the configured SQLite path).
    pub path: PathBuf,
    pub bytes: u64,
    pub rows: RowCounts,
}

/// Writes a consistent backup of the SQLite database named by `settings`, including
/// every record of its commit log, to the new file `to`, while a server may keep
/// serving from it (see the module docs). `progress` gets one line per step.
///
/// # Errors
/// [`Error::Refused`] for PostgreSQL, an in-memory database, no database, or an
/// existing `to`; [`Error::Failed`] when copying or replaying fails (the destination
/// is then untouched).
pub async fn backup(
    settings: &Settings,
    to: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<BackupReport, Error> {
    let started = Instant::now();
    let db = sqlite_file(settings, "backup")?;
    if !db.is_file() {
        return Err(Error::Refused(format!(
            "there is no database at {}: nothing to back up",
            db.display(),
        )));
    }
    refuse_existing(to, "a backup never replaces a file: choose a new name")?;
    if to.file_name().is_none() {
        return Err(Error::Refused(format!(
            "--to {}: must name a file",
            to.display()
        )));
    }
    let dir = parent_dir(to);
    let log_dir = settings
        .storage
        .uses_log()
        .then(|| settings.storage.log_dir());
    if let Some(log_dir) = &log_dir
        && resolved(&dir).starts_with(resolved(log_dir))
    {
        return Err(Error::Refused(format!(
            "--to {}: lies in the commit log directory {}; write the backup elsewhere",
            to.display(),
            log_dir.display()
        )));
    }
    fs::create_dir_all(&dir).with_context(|| format!("while creating {}", dir.display()))?;
    let scratch = Scratch::new(&dir, "backup");
    scratch.clean();

    // 1. Pin the log.
    let mut pin = match &log_dir {
        Some(log_dir) => {
            let pin = LogPin::pin(log_dir)?;
            match &pin {
                Some(pin) => progress(&format!(
                    "pinned the commit log {}: {} segment(s) from checkpoint {}",
                    log_dir.display(),
                    pin.segments.len(),
                    pin.checkpoint
                        .as_ref()
                        .map_or_else(|| "none (start)".to_owned(), |(_, p)| p.to_string()),
                )),
                None => progress(&format!(
                    "no commit log at {}: the database alone is the state",
                    log_dir.display()
                )),
            }
            pin
        }
        None => {
            progress("storage.commit is direct: no commit log to merge");
            None
        }
    };

    // 2. Snapshot the database.
    let snapshot_started = Instant::now();
    snapshot(&db, &scratch.db, settings.storage.timeout(), pin.as_mut()).await?;
    progress(&format!(
        "snapshot of {} taken in {:.1} s ({} bytes)",
        db.display(),
        snapshot_started.elapsed().as_secs_f64(),
        fs::metadata(&scratch.db).map_or(0, |m| m.len())
    ));

    // 3. Copy the log.
    let (log_segments, log_bytes) = match pin.as_mut() {
        Some(pin) => {
            let copied = pin.copy_to(&scratch.log).with_context(|| {
                format!("while copying the commit log to {}", scratch.log.display())
            })?;
            progress(&format!(
                "copied the commit log: {} segment(s), {} bytes",
                copied.0, copied.1
            ));
            copied
        }
        None => (0, 0),
    };
    drop(pin);

    // 4. Replay it into the snapshot (this also applies this build's migrations).
    let copied_log = log_dir
        .as_deref()
        .filter(|_| scratch.log.is_dir())
        .map(|live| (scratch.log.as_path(), live));
    let replayed = replay(settings, &scratch.db, copied_log).await?;
    let (log_records, log_writes, torn_tail) = replayed.as_ref().map_or((0, 0, false), |r| {
        (r.records, r.writes, r.torn_tail_truncated.is_some())
    });
    if replayed.is_some() {
        progress(&format!(
            "merged {log_records} commit log record(s) ({log_writes} writes) into the snapshot{}",
            if torn_tail {
                "; a partly written record at its end was dropped (a torn tail: never acknowledged)"
            } else {
                ""
            }
        ));
    }

    // 5. One self-contained file, durable, then into place.
    let rows = finish(&scratch.db, settings.storage.timeout()).await?;
    install(&scratch.db, to)?;
    let bytes = fs::metadata(to).map_or(0, |m| m.len());
    Ok(BackupReport {
        path: to.to_path_buf(),
        bytes,
        rows,
        log_segments,
        log_bytes,
        log_records,
        log_writes,
        torn_tail,
        took: started.elapsed(),
    })
}

/// Restores the backup `from` (a file [`backup`] wrote) as the SQLite database named
/// by `settings`, which must not exist yet, with no commit log records beside it.
///
/// # Errors
/// [`Error::Refused`] for PostgreSQL, a target that is not empty, or a file that is
/// not a sound readstate database (nothing is left at the target then);
/// [`Error::Failed`] for I/O failures.
pub async fn restore(
    settings: &Settings,
    from: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<RestoreReport, Error> {
    let db = sqlite_file(settings, "restore")?;
    let refusal = "restore writes only into an empty data directory (stop readstate and move \
                   the old data directory away first)";
    for path in sqlite_files(&db) {
        refuse_existing(&path, refusal)?;
    }
    let log_dir = settings.storage.log_dir();
    if let Ok(mut entries) = fs::read_dir(&log_dir)
        && entries.next().is_some()
    {
        return Err(Error::Refused(format!(
            "the commit log directory {} is not empty: its records would be replayed onto \
             the restored database; {refusal}",
            log_dir.display()
        )));
    }
    let meta = fs::metadata(from)
        .map_err(|e| Error::Refused(format!("cannot read {}: {e}", from.display())))?;
    if !meta.is_file() {
        return Err(Error::Refused(format!("{} is not a file", from.display())));
    }
    let from_wal = with_suffix(from, "-wal");
    if fs::metadata(&from_wal).is_ok_and(|m| m.len() > 0) {
        return Err(Error::Refused(format!(
            "{} has a write-ahead log beside it ({}): it is a live database, not a backup; \
             make one with `readstate backup`",
            from.display(),
            from_wal.display()
        )));
    }

    let dir = parent_dir(&db);
    create_dir_durably(&dir)?;
    let scratch = Scratch::new(&dir, "restore");
    scratch.clean();
    let bytes = {
        let mut src =
            File::open(from).with_context(|| format!("while opening {}", from.display()))?;
        let mut dst = File::create(&scratch.db)
            .with_context(|| format!("while creating {}", scratch.db.display()))?;
        let n = io::copy(&mut src, &mut dst)
            .with_context(|| format!("while copying {} to {}", from.display(), dir.display()))?;
        dst.sync_all()?;
        n
    };
    progress(&format!(
        "copied {} ({bytes} bytes); checking it",
        from.display()
    ));
    let rows = check(&scratch.db, settings.storage.timeout())
        .await
        .map_err(|reason| {
            Error::Refused(format!(
                "{} is not a sound readstate backup: {reason}",
                from.display()
            ))
        })?;
    // A read-only open of a WAL-mode file may leave an empty -shm behind.
    scratch.clean_sidecars();
    install(&scratch.db, &db)?;
    Ok(RestoreReport {
        path: db,
        bytes,
        rows,
    })
}

/// The SQLite file `storage.url` names; refuses PostgreSQL and in-memory databases.
fn sqlite_file(settings: &Settings, command: &str) -> Result<PathBuf, Error> {
    let storage = &settings.storage;
    if storage.is_postgres() {
        return Err(Error::Refused(format!(
            "readstate {command} works on SQLite deployments; storage.url names PostgreSQL: \
             use pg_dump, or base backups with WAL archiving for point-in-time recovery \
             (see {DOCS})"
        )));
    }
    let url = storage.url.expose();
    let file = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .map(|rest| rest.split('?').next().unwrap_or(rest))
        .ok_or_else(|| {
            Error::Refused(format!("storage.url {} is not a SQLite URL", storage.url))
        })?;
    // A SQLite URL carries no password: it is shown as it is.
    if file.is_empty() || file == ":memory:" {
        return Err(Error::Refused(format!(
            "storage.url {url} is an in-memory database: readstate {command} needs a file"
        )));
    }
    Ok(PathBuf::from(file))
}

/// The database file and the files SQLite keeps beside it.
fn sqlite_files(db: &Path) -> [PathBuf; 4] {
    [
        db.to_path_buf(),
        with_suffix(db, "-wal"),
        with_suffix(db, "-shm"),
        with_suffix(db, "-journal"),
    ]
}

fn refuse_existing(path: &Path, why: &str) -> Result<(), Error> {
    if fs::symlink_metadata(path).is_ok() {
        return Err(Error::Refused(format!(
            "{} already exists: {why}",
            path.display()
        )));
    }
    Ok(())
}

/// `path` made absolute, with symlinks resolved as far as it exists and the rest
/// appended as written: comparable with another such path even when it does not exist
/// yet.
fn resolved(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return rest.iter().rev().fold(real, |p, name| p.join(name));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return absolute,
        }
    }
}

/// The directory a file path lies in (`.` for a bare name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` if missing and makes its entry durable.
fn create_dir_durably(dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        fs::create_dir_all(dir).with_context(|| format!("while creating {}", dir.display()))?;
        sync_dir(&parent_dir(dir))?;
    }
    Ok(())
}

/// Moves the finished, fsynced file `tmp` to `dest` without ever replacing a file
/// (a hard link fails when `dest` exists), then makes the directory durable.
fn install(tmp: &Path, dest: &Path) -> Result<(), Error> {
    match fs::hard_link(tmp, dest) {
        Ok(()) => fs::remove_file(tmp)?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(Error::Refused(format!(
                "{} appeared while it was being written; left it untouched",
                dest.display()
            )));
        }
        // A file system without hard links: check, then rename.
        Err(_) => {
            refuse_existing(dest, "left it untouched")?;
            fs::rename(tmp, dest)?;
        }
    }
    sync_dir(&parent_dir(dest))?;
    Ok(())
}

/// Scratch files next to the destination, removed when dropped (after success only
/// what was not moved into place).
#[derive(Debug)]
struct Scratch {
    db: PathBuf,
    log: PathBuf,
}

impl Scratch {
    fn new(dir: &Path, what: &str) -> Self {
        let pid = std::process::id();
        Scratch {
            db: dir.join(format!(".readstate-{what}-{pid}.db")),
            log: dir.join(format!(".readstate-{what}-{pid}.log")),
        }
    }

    fn clean_sidecars(&self) {
        for path in sqlite_files(&self.db).iter().skip(1) {
            let _ = fs::remove_file(path);
        }
    }

    fn clean(&self) {
        let _ = fs::remove_file(&self.db);
        self.clean_sidecars();
        let _ = fs::remove_dir_all(&self.log);
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.clean();
    }
}

/// Open handles on the commit log's live segments (module docs, step 1): a segment
/// the server deletes stays readable through them.
#[derive(Debug)]
struct LogPin {
    dir: PathBuf,
    /// The checkpoint file's bytes and position when pinned; `None`: no checkpoint yet.
    checkpoint: Option<(Vec<u8>, Position)>,
    /// Segments from the checkpoint's on, by sequence number: file name and handle.
    segments: BTreeMap<u64, (String, File)>,
}

impl LogPin {
    /// Pins the log in `dir`; `None` when there is no such directory.
    fn pin(dir: &Path) -> anyhow::Result<Option<LogPin>> {
        if !dir.is_dir() {
            return Ok(None);
        }
        for _ in 0..PIN_ATTEMPTS {
            let mut pin = LogPin {
                dir: dir.to_path_buf(),
                checkpoint: read_checkpoint(dir)?,
                segments: BTreeMap::new(),
            };
            let complete = pin
                .refresh()
                .with_context(|| format!("while opening the commit log in {}", dir.display()))?;
            let now = read_checkpoint(dir)?;
            if complete && now.map(|c| c.0) == pin.checkpoint.as_ref().map(|c| c.0.clone()) {
                return Ok(Some(pin));
            }
            // A checkpoint landed meanwhile: segments may have gone; start over.
            std::thread::sleep(POLL);
        }
        bail!(
            "the commit log's checkpoint in {} moved during each of {PIN_ATTEMPTS} attempts to open its segments",
            dir.display()
        )
    }

    /// Opens the segments from the checkpoint's on that are not open yet; `false`
    /// when one vanished between listing and opening.
    fn refresh(&mut self) -> io::Result<bool> {
        let floor = self.checkpoint.as_ref().map_or(0, |(_, p)| p.segment);
        let mut complete = true;
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Some(seq) = wal::segment_seq(&name) else {
                continue;
            };
            if seq < floor || self.segments.contains_key(&seq) {
                continue;
            }
            match File::open(entry.path()) {
                Ok(file) => {
                    self.segments.insert(seq, (name, file));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => complete = false,
                Err(e) => return Err(e),
            }
        }
        Ok(complete)
    }

    /// Copies the pinned segments, as they are now, oldest first, and the checkpoint
    /// into the new directory `dest`. Returns the segments and bytes copied.
    fn copy_to(&mut self, dest: &Path) -> io::Result<(usize, u64)> {
        fs::create_dir_all(dest)?;
        let mut bytes = 0;
        for (name, file) in self.segments.values_mut() {
            let mut out = File::create(dest.join(&*name))?;
            bytes += io::copy(file, &mut out)?;
        }
        if let Some((data, _)) = &self.checkpoint {
            fs::write(dest.join(wal::CHECKPOINT_FILE_NAME), data)?;
        }
        Ok((self.segments.len(), bytes))
    }
}

/// The checkpoint file of the log in `dir`, raw and parsed; `None` when there is none.
fn read_checkpoint(dir: &Path) -> anyhow::Result<Option<(Vec<u8>, Position)>> {
    let path = dir.join(wal::CHECKPOINT_FILE_NAME);
    let data = match fs::read(&path) {
        Ok(data) => data,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("while reading {}", path.display())),
    };
    let position = wal::parse_checkpoint(&data).map_err(|reason| {
        anyhow::anyhow!(
            "commit log checkpoint {} is corrupt: {reason}",
            path.display()
        )
    })?;
    Ok(Some((data, position)))
}

/// `VACUUM INTO` the new file `into` from a read-only connection to the live database
/// `db`, pinning new log segments as they appear meanwhile.
async fn snapshot(
    db: &Path,
    into: &Path,
    timeout: Duration,
    mut pin: Option<&mut LogPin>,
) -> anyhow::Result<()> {
    let target = into
        .to_str()
        .with_context(|| format!("{} is not a UTF-8 path", into.display()))?
        .to_owned();
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .create_if_missing(false)
        .busy_timeout(timeout)
        .connect()
        .await
        .with_context(|| format!("while opening {}", db.display()))?;
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = {
        let vacuum = sqlx::query("VACUUM INTO ?1")
            .bind(target)
            .execute(&mut conn);
        tokio::pin!(vacuum);
        loop {
            tokio::select! {
                done = &mut vacuum => break done,
                _ = poll.tick() => {
                    if let Some(pin) = pin.as_deref_mut() {
                        pin.refresh().context("while watching the commit log for new segments")?;
                    }
                }
            }
        }
    };
    if let Some(pin) = pin {
        pin.refresh()
            .context("while watching the commit log for new segments")?;
    }
    let _ = conn.close().await;
    result.with_context(|| format!("while copying {} (VACUUM INTO)", db.display()))?;
    Ok(())
}

/// Opens the snapshot `db` as a store (applying this build's migrations) and, with
/// `log` = (the copy, the live directory it was copied from), replays the copy there
/// with the start-up recovery code: the torn tail is dropped, every record after the
/// copied checkpoint is merged. Only ever on a copy: recovery truncates and deletes
/// segments.
async fn replay(
    settings: &Settings,
    db: &Path,
    log: Option<(&Path, &Path)>,
) -> anyhow::Result<Option<RecoveryReport>> {
    let mut snap = settings.clone();
    snap.storage.url = Secret::new(format!("sqlite://{}", db.display()));
    snap.storage.commit = CommitMode::Direct;
    snap.storage.durability = Durability::Sync;
    snap.storage.sqlite_readers = 1;
    let store = crate::app::open_store(&snap)
        .await
        .context("while opening the snapshot")?;
    let replayed = match log {
        Some((log, live)) => {
            let result = async {
                let fs = DirFs::open(log)?;
                crate::commit::recover_log_on(
                    store.as_ref(),
                    Arc::new(fs),
                    WalOptions {
                        segment_bytes: settings.storage.log_segment_bytes.get(),
                    },
                )
                .await
            }
            .await
            .map_err(|e| {
                let missing = format!("{e:#}").contains("segment is missing");
                let e = e.context(format!(
                    "while replaying the commit log copied from {} into the snapshot (the \
                     copy keeps its file names and offsets)",
                    live.display()
                ));
                if missing {
                    e.context(
                        "the server went past a whole log segment between two looks at its \
                         directory: run the backup again",
                    )
                } else {
                    e
                }
            });
            match result {
                Ok((wal, report)) => {
                    drop(wal);
                    Some(report)
                }
                Err(e) => {
                    store.close().await;
                    return Err(e);
                }
            }
        }
        None => None,
    };
    store.close().await;
    Ok(replayed)
}

/// Makes the replayed snapshot one self-contained file (its WAL checkpointed, a
/// rollback journal from now on) and fsyncs it; returns its row counts.
async fn finish(path: &Path, timeout: Duration) -> anyhow::Result<RowCounts> {
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .busy_timeout(timeout)
        .connect()
        .await
        .with_context(|| format!("while reopening {}", path.display()))?;
    let result = async {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_all(&mut conn)
            .await?;
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode = DELETE")
            .fetch_one(&mut conn)
            .await?;
        ensure!(
            mode.eq_ignore_ascii_case("delete"),
            "the backup stayed in journal mode {mode}"
        );
        count_rows(&mut conn).await
    }
    .await;
    let _ = conn.close().await;
    let rows = result.with_context(|| format!("while finishing {}", path.display()))?;
    File::open(path)?.sync_all()?;
    Ok(rows)
}

async fn count_rows(conn: &mut SqliteConnection) -> anyhow::Result<RowCounts> {
    let (read_states, mentions, channel_messages, channels): (i64, i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from read_states), (select count(*) from mentions), \
             (select count(*) from channel_messages), (select count(*) from channels)",
    )
    .fetch_one(&mut *conn)
    .await?;
    // A backup made before migration 2 has neither table yet (the server creates them
    // when it starts on the restored file).
    let tables = table_names(conn).await?;
    let settings: i64 = if tables.iter().any(|t| t == "settings") {
        sqlx::query_scalar("select count(*) from settings")
            .fetch_one(&mut *conn)
            .await?
    } else {
        0
    };
    let channel_meta: i64 = if tables.iter().any(|t| t == "channel_meta") {
        sqlx::query_scalar("select count(*) from channel_meta")
            .fetch_one(&mut *conn)
            .await?
    } else {
        0
    };
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(RowCounts {
        read_states: n(read_states),
        mentions: n(mentions),
        channel_messages: n(channel_messages),
        channels: n(channels),
        settings: n(settings),
        channel_meta: n(channel_meta),
    })
}

async fn table_names(conn: &mut SqliteConnection) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("select name from sqlite_master where type = 'table'")
        .fetch_all(&mut *conn)
        .await
}

/// The tables every readstate database has (the first migration creates them).
const TABLES: [&str; 4] = ["read_states", "mentions", "channel_messages", "channels"];

/// Tables a later migration creates: `(version, table)`. A database with that
/// migration applied must have the table.
const LATER_TABLES: [(i64, &str); 2] = [(2, "settings"), (2, "channel_meta")];

/// Checks that `path` is a sound readstate database this build can serve; `Err` says
/// why not.
async fn check(path: &Path, timeout: Duration) -> Result<RowCounts, String> {
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .create_if_missing(false)
        .busy_timeout(timeout)
        .connect()
        .await
        .map_err(|e| format!("it does not open as a SQLite database ({e})"))?;
    let result = check_on(&mut conn).await;
    let _ = conn.close().await;
    result
}

async fn check_on(conn: &mut SqliteConnection) -> Result<RowCounts, String> {
    let problems: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| format!("it is not a readable SQLite database ({e})"))?;
    if problems != ["ok"] {
        let shown: Vec<&str> = problems.iter().take(3).map(String::as_str).collect();
        return Err(format!(
            "PRAGMA integrity_check reports damage: {}",
            shown.join("; ")
        ));
    }
    let applied: Vec<(i64, Vec<u8>, bool)> =
        sqlx::query_as("select version, checksum, success from _sqlx_migrations order by version")
            .fetch_all(&mut *conn)
            .await
            .map_err(|_| {
                "it has no migrations table (_sqlx_migrations): not a readstate database".to_owned()
            })?;
    if applied.is_empty() {
        return Err("no migration was ever applied to it".to_owned());
    }
    let ours = crate::store::sqlite::migrator();
    for (version, checksum, success) in &applied {
        let Some(known) = ours.iter().find(|m| m.version == *version) else {
            return Err(format!(
                "it has migration {version}, which this build does not know: it was made by a \
                 newer readstate or is not a readstate database"
            ));
        };
        if known.checksum.as_ref() != checksum.as_slice() {
            return Err(format!(
                "its migration {version} differs from this build's: not a readstate database"
            ));
        }
        if !success {
            return Err(format!("its migration {version} failed part-way"));
        }
    }
    let tables = table_names(conn).await.map_err(|e| e.to_string())?;
    if let Some(missing) = TABLES.iter().find(|t| !tables.iter().any(|n| n == *t)) {
        return Err(format!("it has no {missing} table"));
    }
    let newest = applied.iter().map(|(v, _, _)| *v).max().unwrap_or(0);
    if let Some((_, missing)) = LATER_TABLES
        .iter()
        .find(|(v, t)| *v <= newest && !tables.iter().any(|n| n == t))
    {
        return Err(format!("it has no {missing} table"));
    }
    count_rows(conn).await.map_err(|e| format!("{e:#}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
