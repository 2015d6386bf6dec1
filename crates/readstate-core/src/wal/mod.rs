//! The commit log: an append-only, checksummed write-ahead log of [`Write`] groups.
//!
//! In `sync` mode a write is acknowledged once its record is in the log and the log has
//! been fdatasync'ed; a checkpointer later writes the merged state into the database and
//! calls [`Wal::checkpointed`], after which older segments are deleted. On start-up,
//! [`Wal::open`] returns every record after the checkpoint, to be replayed.
//!
//! # Format
//!
//! The log is a directory of *segment* files `wal-<20-digit seq>.log` (seq from 1,
//! increasing, never reused) and one *checkpoint* file `checkpoint`. All integers are
//! little-endian; all checksums are CRC-32C (Castagnoli).
//!
//! Segment = header, then records back to back.
//!
//! ```text
//! header (40 bytes):
//!   0  magic       8 bytes  "RSWAL001"
//!   8  seq         u64      this segment's sequence number (= the one in the file name)
//!  16  prev_seq    u64      \  if flags & 1: "segment prev_seq holds valid records only
//!  24  prev_valid  u64      /  up to byte prev_valid" (0 when unset)
//!  32  flags       u8       bit 0: prev_* set; other bits zero
//!  33  reserved    3 bytes  zero
//!  36  crc         u32      CRC-32C of bytes 0..36
//! record:
//!   len  u32   payload length, 1 ..= 64 MiB
//!   crc  u32   CRC-32C of the payload
//!   payload:   varint count, then per write: tag byte, fields as LEB128 varints
//!     tag 1 ReadPos        user channel epoch pos
//!     tag 2 Mention        user channel message
//!     tag 3 Message        channel message        (deleted = false)
//!     tag 4 Message        channel message        (deleted = true)
//!     tag 5 Leave          user channel
//!     tag 6 DeleteChannel  channel
//!     tag 7 ReadPos (ack)  user channel epoch pos at
//!     tag 8 Settings       user channel muted_until muted_at level level_at
//!     tag 9 ChannelMeta    channel parent group at
//!     tag 10 DeleteUser    user
//! checkpoint (28 bytes): "RSWALCP1", segment u64, offset u64, crc u32 of bytes 0..24
//! ```
//!
//! A [`Position`] is `(segment seq, byte offset just after a record)`. The checkpoint
//! says every record ending at or before its position is in the database.
//!
//! # Acknowledgement and positions
//!
//! [`Wal::append`] only buffers; [`Wal::sync`] (or [`Wal::repair`]) returning `Ok(end)`
//! is the durability point for everything appended before it, and `end` is final:
//! pass it (or any earlier durable position) to [`Wal::checkpointed`]. The position
//! `append` returns is final too unless a failed sync intervenes: a repair moves the
//! kept records into a new segment, always to a later position, so an outdated one
//! given to `checkpointed` only makes recovery replay a little more (merges are
//! idempotent), never less.
//!
//! Every segment but the very first names its predecessor and that predecessor's valid
//! length. Normally that is simply the previous segment's final size (rotation); after a
//! failed sync it is the last *successfully synced* offset of the segment the failed
//! write went to — whatever that write left behind it is ignored — and segments between
//! the two (failed repair attempts) are *abandoned*. Recovery walks this chain back from
//! the newest segment, so a missing or shortened segment is detected.
//!
//! A segment's header always reaches the disk (fdatasync + directory fsync) together
//! with, or before, the first record acknowledged in it.
//!
//! # Recovery rules
//!
//! - Segments wholly before the checkpoint's segment are not read; they are deleted.
//! - The newest segment, if its header is invalid and the file is no longer than a
//!   header or all zeros, is a torn or failed creation (nothing in it was ever
//!   acknowledged: a header is durable before any record in it is acknowledged): it is
//!   removed, with a warning. With any other content it is [`WalError::Corrupt`].
//! - In every segment but the last, the records must be valid exactly up to the valid
//!   length its successor records; anything else is [`WalError::Corrupt`].
//! - In the last segment, a bad record (incomplete header, zero or absurd length,
//!   length past the end of file, checksum mismatch) with no valid record anywhere after
//!   it is a torn tail: the file is truncated there, with a warning. A bad record
//!   followed by a valid one is [`WalError::Corrupt`].
//! - A record whose checksum matches but whose payload does not decode is corrupt,
//!   wherever it is.
//!
//! Known limit: unsynced bytes are assumed to survive a crash as a prefix of what was
//! written. A file system that writes back pages of one unsynced write out of order can
//! leave, after a crash, a hole followed by a valid (never acknowledged) record in the
//! last segment; that is refused as corruption (safe, but start-up needs an operator).

mod codec;
pub mod fs;
pub mod memfs;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

pub use crate::store::Write;
pub use codec::MAX_RECORD_PAYLOAD;
pub use fs::{DirFs, LogFile, LogFs};

use codec::{CHECKPOINT_FILE, CHECKPOINT_TMP, HEADER_LEN, PrevSegment, SegmentHeader};

/// The name of the checkpoint file in a log directory, for tools that copy a log
/// (`readstate backup` copies it with the segments it covers).
pub const CHECKPOINT_FILE_NAME: &str = CHECKPOINT_FILE;

/// The sequence number of a segment file name (`wal-<20 digits>.log`), or `None` for
/// any other name found in a log directory.
pub fn segment_seq(name: &str) -> Option<u64> {
    codec::parse_segment_name(name)
}

/// Parses the content of a checkpoint file: every record ending at or before the
/// returned position is in the database. `Err` names what is wrong with it.
///
/// # Errors
/// A wrong length, magic or checksum.
pub fn parse_checkpoint(data: &[u8]) -> Result<Position, String> {
    codec::parse_checkpoint(data)
}

/// Writes the `checkpoint` file durably (temp file, fdatasync, rename, directory
/// fsync). It touches only that file, so it runs without the [`Wal`]: appends go on.
#[derive(Debug)]
pub struct CheckpointJob {
    fs: Arc<dyn LogFs>,
    upto: Position,
}

impl CheckpointJob {
    /// Writes and syncs the checkpoint file.
    ///
    /// # Errors
    /// Any I/O failure; the old checkpoint then stays in force.
    pub fn write(&self) -> Result<(), WalError> {
        let mut tmp = self.fs.create(CHECKPOINT_TMP)?;
        tmp.write_all(&codec::encode_checkpoint(self.upto))?;
        tmp.sync_data()?;
        drop(tmp);
        self.fs.rename(CHECKPOINT_TMP, CHECKPOINT_FILE)?;
        self.fs.sync_dir()?;
        Ok(())
    }
}

/// Position in the log: segment sequence number and byte offset after a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.segment, self.offset)
    }
}

#[derive(Debug, Clone)]
pub struct WalOptions {
    /// A segment is closed, and the next sync starts a new one, once it reaches this
    /// size. A segment can pass it by one sync's worth of records.
    pub segment_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("commit log I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// Corruption before the tail: names the file and the byte offset. Start-up must stop.
    #[error("commit log {file} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        file: String,
        offset: u64,
        reason: String,
    },
    /// A previous sync failed and the unsynced records could not yet be rewritten;
    /// nothing new is accepted as durable until `repair` succeeds.
    #[error("commit log is failed closed after an fsync error")]
    FailedClosed,
}

/// One recovered record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub end: Position,
    pub writes: Vec<Write>,
}

/// What [`Wal::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Records returned (those after the checkpoint).
    pub records: usize,
    /// Writes in those records.
    pub writes: usize,
    /// Bytes of the segments read and validated.
    pub bytes: u64,
    /// A torn tail was cut off: the file and the offset it was truncated to.
    pub torn_tail_truncated: Option<(String, u64)>,
    pub checkpoint: Option<Position>,
}

/// A segment with durable content: its sequence number and durable length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seg {
    seq: u64,
    len: u64,
}

/// The commit log. `Send`; used from one thread at a time.
pub struct Wal {
    fs: Arc<dyn LogFs>,
    options: WalOptions,
    /// The newest segment with durable content (and a durable header and directory
    /// entry). `None` until the first sync.
    last: Option<Seg>,
    /// Open handle on `last`: set exactly when buffered records go to the end of `last`.
    file: Option<Box<dyn LogFile>>,
    /// Set when buffered records go to a new segment with this seq; `buf` then starts
    /// with its header.
    new_seq: Option<u64>,
    /// Bytes to write at the next sync: `[header]` then records.
    buf: Vec<u8>,
    /// Length of the header at the start of `buf` (0 or `HEADER_LEN`).
    buf_header: usize,
    failed: bool,
    next_seq: u64,
    /// Segment files on disk (including abandoned ones) and their sizes. Sizes of files
    /// a failed write went to are upper bounds.
    files: BTreeMap<u64, u64>,
    /// Files of failed segment creations, to remove once a repair succeeded.
    abandoned: Vec<u64>,
    durable_end: Position,
    checkpoint: Option<Position>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("fs", &self.fs)
            .field("last", &self.last)
            .field("new_seq", &self.new_seq)
            .field("buffered_bytes", &(self.buf.len() - self.buf_header))
            .field("failed", &self.failed)
            .field("durable_end", &self.durable_end)
            .field("checkpoint", &self.checkpoint)
            .finish_non_exhaustive()
    }
}

impl Wal {
    /// Opens (creating it if needed) the log, reads the checkpoint, validates the
    /// segments, truncates a torn tail of the last segment (with a warning naming file and
    /// offset), refuses corruption with [`WalError::Corrupt`], and returns every record
    /// after the checkpoint, in order. Before returning it fdatasyncs the last segment and
    /// the directory, so everything returned is durable.
    pub fn open(
        fs: Arc<dyn LogFs>,
        options: WalOptions,
    ) -> Result<(Wal, Vec<Recovered>, RecoveryReport), WalError> {
        recover(fs, options)
    }

    /// [`Wal::open`] on the real file system in `dir` (created if missing).
    pub fn open_dir(
        dir: &Path,
        options: WalOptions,
    ) -> Result<(Wal, Vec<Recovered>, RecoveryReport), WalError> {
        Wal::open(Arc::new(DirFs::open(dir)?), options)
    }

    /// Appends one record holding `writes` (one group), in memory: nothing reaches the
    /// file until [`Wal::sync`]. Returns the position after it *if the next sync succeeds
    /// without a repair*; after a repair the record lies further on, at or before the
    /// position `sync`/`repair` then returns. (An outdated position is still safe to pass
    /// to [`Wal::checkpointed`]: it is never after the record's real position.)
    ///
    /// When failed closed, first tries [`Wal::repair`]; if that fails the record is not
    /// taken and the error is [`WalError::FailedClosed`]. A group whose encoding exceeds
    /// [`MAX_RECORD_PAYLOAD`] is refused with an `InvalidInput` I/O error.
    pub fn append(&mut self, writes: &[Write]) -> Result<Position, WalError> {
        if self.failed {
            self.repair_or_fail_closed()?;
        }
        codec::encode_record(&mut self.buf, writes).map_err(|codec::TooLarge(n)| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a record of {n} bytes exceeds the {MAX_RECORD_PAYLOAD}-byte cap"),
            )
        })?;
        Ok(self.buffer_end())
    }

    /// Writes every record appended since the last sync with one `write_all` and one
    /// fdatasync (plus a directory fsync when that starts a new segment). On `Ok(end)`
    /// every record appended so far is durable and ends at or before `end`, the new
    /// [`Wal::durable_end`]. With nothing buffered it does no I/O.
    ///
    /// On a write or fdatasync error the log fails closed (the page cache can no longer
    /// be trusted): it keeps the records in memory for [`Wal::repair`] and returns the
    /// error. While failed closed, `sync` first tries `repair`, and returns
    /// [`WalError::FailedClosed`] if that fails.
    pub fn sync(&mut self) -> Result<Position, WalError> {
        if self.failed {
            return self.repair_or_fail_closed();
        }
        self.write_out(false)
    }

    /// After a failed sync: starts a new segment whose header records that the last
    /// durable segment is valid only up to its last synced offset (so recovery ignores
    /// whatever the failed write left after it), rewrites the kept records into it, and
    /// fdatasyncs it and the directory. `Ok(end)`: healthy again; every record appended
    /// so far is durable and ends at or before `end`. On error the log stays failed
    /// closed (the next attempt uses yet another new segment). Does nothing when the log
    /// is not failed.
    pub fn repair(&mut self) -> Result<Position, WalError> {
        if !self.failed {
            return Ok(self.durable_end);
        }
        let end = self.write_out(true)?;
        self.failed = false;
        tracing::warn!(durable_end = %end, "commit log repaired: unsynced records rewritten into a new segment");
        Ok(end)
    }

    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// Records durably (temporary file + fdatasync + rename + directory fsync) that
    /// everything up to `upto` is in the database, then deletes every segment file that
    /// lies wholly before `upto` (never the one holding the durable end). Returns the
    /// bytes removed. A position at or before the current checkpoint writes nothing (the
    /// checkpoint never moves back). `upto` after [`Wal::durable_end`] is refused with an
    /// `InvalidInput` I/O error.
    pub fn checkpointed(&mut self, upto: Position) -> Result<u64, WalError> {
        if let Some(job) = self.checkpoint_job(upto)? {
            job.write()?;
        }
        let deleted = self.checkpoint_written(upto).delete();
        self.deleted(deleted)
    }

    /// The first half of [`Wal::checkpointed`], for a caller that must not hold the
    /// log while the checkpoint file is fsynced (appends would wait): checks `upto`
    /// and returns the file write to run without the log (`None` when the checkpoint
    /// is already there). Then call [`Wal::checkpoint_written`], [`Doomed::delete`]
    /// (without the log) and [`Wal::deleted`].
    pub fn checkpoint_job(&mut self, upto: Position) -> Result<Option<CheckpointJob>, WalError> {
        if upto > self.durable_end {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "checkpoint {upto} is past the durable end of the log {}",
                    self.durable_end
                ),
            )
            .into());
        }
        // Before the job's directory fsync could make their entries durable.
        self.remove_abandoned();
        Ok(self
            .checkpoint
            .is_none_or(|c| upto > c)
            .then(|| CheckpointJob {
                fs: self.fs.clone(),
                upto,
            }))
    }

    /// The second half of [`Wal::checkpointed`]: once the job's file is durable, the
    /// checkpoint moves to `upto` (never back). Returns the segments wholly before it
    /// (never the one holding the durable end), for [`Doomed::delete`] to delete
    /// without the log's lock (unlinking a 64 MiB segment takes about 15 ms on a disk
    /// mounted with `discard`, and appends would wait for it) and [`Wal::deleted`] to
    /// book.
    pub fn checkpoint_written(&mut self, upto: Position) -> Doomed {
        if upto <= self.durable_end && self.checkpoint.is_none_or(|c| upto > c) {
            self.checkpoint = Some(upto);
        }
        self.remove_abandoned();
        let floor = self.checkpoint.map_or(0, |c| c.segment);
        let seqs = self
            .files
            .range(..floor)
            .map(|(s, _)| *s)
            .filter(|&seq| !(self.last.is_some_and(|l| l.seq == seq) || self.new_seq == Some(seq)))
            .collect();
        Doomed {
            fs: self.fs.clone(),
            seqs,
        }
    }

    /// Books what [`Doomed::delete`] deleted: returns the bytes removed, or its error.
    /// A segment it did not delete stays listed, and the next checkpoint deletes it.
    pub fn deleted(&mut self, deleted: Deleted) -> Result<u64, WalError> {
        let mut removed = 0;
        for seq in deleted.seqs {
            removed += self.files.remove(&seq).unwrap_or(0);
            self.abandoned.retain(|a| *a != seq);
        }
        match deleted.error {
            Some(e) => Err(e.into()),
            None => Ok(removed),
        }
    }

    /// Bytes of all segment files on disk.
    pub fn bytes_on_disk(&self) -> u64 {
        self.files.values().sum()
    }

    /// End position of the last durable record (just after the header of the newest
    /// segment when that holds none yet; the default position when the log is empty).
    pub fn durable_end(&self) -> Position {
        self.durable_end
    }

    /// The current checkpoint.
    pub fn checkpoint(&self) -> Option<Position> {
        self.checkpoint
    }

    /// Whether records are buffered, waiting for a sync (or, failed closed, a repair).
    pub fn has_unsynced(&self) -> bool {
        self.buf.len() > self.buf_header
    }

    fn repair_or_fail_closed(&mut self) -> Result<Position, WalError> {
        self.repair().map_err(|e| {
            tracing::warn!(error = %crate::error_chain(&e), "commit log repair failed: still failed closed");
            WalError::FailedClosed
        })
    }

    /// The position after the last buffered record (or the durable end).
    fn buffer_end(&self) -> Position {
        match (self.new_seq, self.last) {
            (Some(seq), _) => Position {
                segment: seq,
                offset: self.buf.len() as u64,
            },
            (None, Some(last)) => Position {
                segment: last.seq,
                offset: last.len + self.buf.len() as u64,
            },
            (None, None) => self.durable_end,
        }
    }

    /// Buffered records go to a new segment from now on: allocates its seq and puts its
    /// header (naming `last` as its predecessor) in front of them.
    fn start_new_segment(&mut self) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.new_seq = Some(seq);
        self.file = None;
        let records = self.buf.split_off(self.buf_header);
        self.buf.clear();
        SegmentHeader {
            seq,
            prev: self.last.map(|l| PrevSegment {
                seq: l.seq,
                valid_upto: l.len,
            }),
        }
        .encode(&mut self.buf);
        self.buf_header = HEADER_LEN;
        self.buf.extend_from_slice(&records);
    }

    /// Writes `buf` out: one write, one fdatasync, and for a new segment its creation and
    /// a directory fsync. `force` writes a new segment even with no records in it.
    fn write_out(&mut self, force: bool) -> Result<Position, WalError> {
        let header_only = force && self.new_seq.is_some();
        if !self.has_unsynced() && !header_only {
            return Ok(self.durable_end);
        }
        if self.new_seq.is_none() && self.file.is_none() {
            // No handle on `last` (cannot happen: kept together); write a new segment.
            self.start_new_segment();
        }
        if self.new_seq.is_some() {
            // Before the directory fsync of the new segment can make their entries
            // durable: a failed creation may have left a file of zeros.
            self.remove_abandoned();
        }
        let result = match (self.new_seq, self.file.as_mut()) {
            (None, Some(file)) => file.write_all(&self.buf).and_then(|()| file.sync_data()),
            (Some(seq), _) => self.write_new_segment(seq),
            (None, None) => Err(io::Error::other("commit log has no segment to write to")),
        };
        match result {
            Ok(()) => {
                let written = self.buf.len() as u64;
                let last = match (self.new_seq.take(), self.last) {
                    (Some(seq), _) => Seg { seq, len: written },
                    (None, Some(l)) => Seg {
                        seq: l.seq,
                        len: l.len + written,
                    },
                    // Unreachable: with no segment the write above failed.
                    (None, None) => Seg { seq: 0, len: 0 },
                };
                self.last = Some(last);
                self.files.insert(last.seq, last.len);
                self.durable_end = Position {
                    segment: last.seq,
                    offset: last.len,
                };
                self.buf.clear();
                self.buf_header = 0;
                self.remove_abandoned();
                if last.len >= self.options.segment_bytes {
                    self.start_new_segment();
                }
                Ok(self.durable_end)
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    durable_end = %self.durable_end,
                    "commit log write or fdatasync failed: failing closed"
                );
                self.failed = true;
                if self.new_seq.is_none() {
                    // The failed write went to `last`: never write to that file again.
                    if let Some(l) = self.last {
                        self.files.insert(l.seq, l.len + self.buf.len() as u64);
                    }
                }
                self.start_new_segment();
                Err(e.into())
            }
        }
    }

    /// Creates segment `seq`, writes `buf` (header and records) into it with one write,
    /// fdatasyncs it and the directory. On success the handle becomes `file`.
    fn write_new_segment(&mut self, seq: u64) -> io::Result<()> {
        let mut file = self.fs.create(&codec::segment_name(seq))?;
        // From here on the file exists: if anything fails it is abandoned (its size is
        // an upper bound).
        self.files.insert(seq, self.buf.len() as u64);
        let result = file
            .write_all(&self.buf)
            .and_then(|()| file.sync_data())
            .and_then(|()| self.fs.sync_dir());
        match result {
            Ok(()) => {
                self.file = Some(file);
                Ok(())
            }
            Err(e) => {
                self.abandoned.push(seq);
                Err(e)
            }
        }
    }

    /// Removes the files of failed segment creations. They never hold an acknowledged
    /// record, so this is safe at any time; it is done before each directory fsync that
    /// could make their entries durable, and after a successful repair. Best effort: a
    /// file that cannot be removed is retried next time, and a leftover found by
    /// recovery lies between two chained segments (skipped) or is all zeros or shorter
    /// than a header (removed).
    fn remove_abandoned(&mut self) {
        let mut kept = Vec::new();
        for seq in std::mem::take(&mut self.abandoned) {
            let name = codec::segment_name(seq);
            match self.fs.remove(&name) {
                Ok(()) => {
                    self.files.remove(&seq);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.files.remove(&seq);
                }
                Err(e) => {
                    tracing::warn!(
                        file = %self.fs.display_name(&name),
                        error = %e,
                        "could not remove an abandoned commit log segment"
                    );
                    kept.push(seq);
                }
            }
        }
        self.abandoned = kept;
    }
}

/// Segments a checkpoint made unnecessary ([`Wal::checkpoint_written`]).
#[must_use = "the segments stay on disk until deleted and booked with Wal::deleted"]
pub struct Doomed {
    fs: Arc<dyn LogFs>,
    seqs: Vec<u64>,
}

impl Doomed {
    /// Deletes the segments, oldest first, stopping at the first error: a crash or an
    /// error part-way leaves only newer ones, all below the checkpoint, which recovery
    /// ignores and deletes.
    pub fn delete(self) -> Deleted {
        let mut deleted = Deleted {
            seqs: Vec::with_capacity(self.seqs.len()),
            error: None,
        };
        for seq in self.seqs {
            if let Err(e) = self.fs.remove(&codec::segment_name(seq)) {
                deleted.error = Some(e);
                break;
            }
            deleted.seqs.push(seq);
        }
        deleted
    }
}

/// What [`Doomed::delete`] did, for [`Wal::deleted`].
#[must_use = "book it with Wal::deleted"]
pub struct Deleted {
    seqs: Vec<u64>,
    error: Option<io::Error>,
}

fn corrupt(fs: &dyn LogFs, name: &str, offset: u64, reason: impl Into<String>) -> WalError {
    WalError::Corrupt {
        file: fs.display_name(name),
        offset,
        reason: reason.into(),
    }
}

/// A segment whose records recovery reads.
struct LiveSegment {
    seq: u64,
    /// Valid length recorded by the successor; `None` for the last segment.
    limit: Option<u64>,
}

/// Checksumming budget when looking for a valid record after a bad one.
const RESYNC_BUDGET: usize = 1 << 30;

fn recover(
    fs: Arc<dyn LogFs>,
    options: WalOptions,
) -> Result<(Wal, Vec<Recovered>, RecoveryReport), WalError> {
    let mut segs: BTreeMap<u64, String> = BTreeMap::new();
    let mut has_checkpoint = false;
    for name in fs.list()? {
        if let Some(seq) = codec::parse_segment_name(&name) {
            segs.insert(seq, name);
        } else if name == CHECKPOINT_FILE {
            has_checkpoint = true;
        } else if name == CHECKPOINT_TMP {
            // A checkpoint write interrupted before its rename: the old one stands.
            if let Err(e) = fs.remove(&name) {
                tracing::warn!(error = %e, "could not remove {}", fs.display_name(&name));
            }
        }
    }
    let checkpoint = if has_checkpoint {
        let data = fs.read(CHECKPOINT_FILE)?;
        Some(codec::parse_checkpoint(&data).map_err(|r| corrupt(&*fs, CHECKPOINT_FILE, 0, r))?)
    } else {
        None
    };
    let floor = checkpoint.map_or(0, |c| c.segment);
    let max_seen = segs.keys().next_back().copied().unwrap_or(0).max(floor);
    let mut files: BTreeMap<u64, u64> = BTreeMap::new();

    // The newest segment with a valid header; newer ones with a torn header are torn
    // creations (a header always reaches the disk before any record in it).
    let mut top: Option<(u64, SegmentHeader)> = None;
    while let Some((&seq, name)) = segs.range(floor..).next_back() {
        let name = name.clone();
        let (prefix, len) = fs.read_prefix(&name, HEADER_LEN)?;
        match SegmentHeader::parse(&prefix, seq) {
            Ok(h) => {
                files.insert(seq, len);
                top = Some((seq, h));
                break;
            }
            Err(reason) if len <= HEADER_LEN as u64 || fs.read(&name)?.iter().all(|&b| b == 0) => {
                tracing::warn!(
                    file = %fs.display_name(&name),
                    len,
                    reason = %reason,
                    "commit log: removing a segment whose creation was torn"
                );
                segs.remove(&seq);
                if let Err(e) = fs.remove(&name) {
                    tracing::warn!(error = %e, "could not remove {}", fs.display_name(&name));
                    files.insert(seq, len);
                }
            }
            Err(reason) => return Err(corrupt(&*fs, &name, 0, reason)),
        }
    }

    // Walk the chain of predecessors back to the checkpoint's segment.
    let mut live: Vec<LiveSegment> = Vec::new();
    let mut abandoned: Vec<u64> = Vec::new();
    if let Some((top_seq, top_header)) = top {
        live.push(LiveSegment {
            seq: top_seq,
            limit: None,
        });
        let (mut cur_seq, mut cur) = (top_seq, top_header);
        loop {
            let stop = match cur.prev {
                Some(p) if p.seq >= floor => p.seq,
                _ => floor,
            };
            abandoned.extend(
                segs.range(stop..cur_seq)
                    .map(|(s, _)| *s)
                    .filter(|s| cur.prev.is_none_or(|p| *s != p.seq)),
            );
            let Some(prev) = cur.prev.filter(|p| p.seq >= floor) else {
                break;
            };
            let prev_name = codec::segment_name(prev.seq);
            if !segs.contains_key(&prev.seq) {
                return Err(corrupt(
                    &*fs,
                    &prev_name,
                    0,
                    format!(
                        "segment is missing, but segment {cur_seq} names it as its predecessor"
                    ),
                ));
            }
            let (prefix, len) = fs.read_prefix(&prev_name, HEADER_LEN)?;
            let header = SegmentHeader::parse(&prefix, prev.seq)
                .map_err(|r| corrupt(&*fs, &prev_name, 0, r))?;
            if len < prev.valid_upto {
                return Err(corrupt(
                    &*fs,
                    &prev_name,
                    len,
                    format!(
                        "segment ends at byte {len}, but segment {cur_seq} records it valid up to byte {}",
                        prev.valid_upto
                    ),
                ));
            }
            files.insert(prev.seq, len);
            live.push(LiveSegment {
                seq: prev.seq,
                limit: Some(prev.valid_upto),
            });
            (cur_seq, cur) = (prev.seq, header);
        }
    }
    live.reverse();

    // Read the live segments, oldest first.
    let mut out: Vec<Recovered> = Vec::new();
    let mut report = RecoveryReport {
        checkpoint,
        ..RecoveryReport::default()
    };
    let mut last: Option<Seg> = None;
    let live_count = live.len();
    for (i, seg) in live.iter().enumerate() {
        let is_last = i + 1 == live_count;
        let name = codec::segment_name(seg.seq);
        let data = fs.read(&name)?;
        report.bytes += data.len() as u64;
        let end = match seg.limit {
            Some(limit) => usize::try_from(limit).unwrap_or(usize::MAX),
            None => data.len(),
        };
        let Some(region) = data.get(..end) else {
            return Err(corrupt(
                &*fs,
                &name,
                data.len() as u64,
                format!("segment ends before its recorded valid length {end}"),
            ));
        };
        SegmentHeader::parse(region, seg.seq).map_err(|r| corrupt(&*fs, &name, 0, r))?;
        let mut off = HEADER_LEN;
        while off < region.len() {
            match codec::frame_at(region, off) {
                Ok((payload, next)) => {
                    let writes = codec::decode_payload(&region[payload..next]).map_err(|e| {
                        corrupt(
                            &*fs,
                            &name,
                            off as u64,
                            format!("record checksum matches but the payload does not decode: {e}"),
                        )
                    })?;
                    let pos = Position {
                        segment: seg.seq,
                        offset: next as u64,
                    };
                    if checkpoint.is_none_or(|c| pos > c) {
                        report.writes += writes.len();
                        out.push(Recovered { end: pos, writes });
                    }
                    off = next;
                }
                Err(reason) if !is_last => {
                    return Err(corrupt(&*fs, &name, off as u64, reason));
                }
                Err(reason) => {
                    if let Some(valid) = codec::find_valid_record(region, off + 1, RESYNC_BUDGET) {
                        return Err(corrupt(
                            &*fs,
                            &name,
                            off as u64,
                            format!("{reason}, yet a valid record follows at byte {valid}"),
                        ));
                    }
                    let shown = fs.display_name(&name);
                    tracing::warn!(
                        file = %shown,
                        offset = off,
                        dropped_bytes = region.len() - off,
                        reason = %reason,
                        "commit log: truncating a torn tail"
                    );
                    fs.truncate(&name, off as u64)?;
                    report.torn_tail_truncated = Some((shown, off as u64));
                    break;
                }
            }
        }
        if is_last {
            files.insert(seg.seq, off as u64);
            last = Some(Seg {
                seq: seg.seq,
                len: off as u64,
            });
        }
    }
    report.records = out.len();

    let durable_end = last.map_or(Position::default(), |l| Position {
        segment: l.seq,
        offset: l.len,
    });
    if let Some(c) = checkpoint
        && c > durable_end
    {
        return Err(corrupt(
            &*fs,
            CHECKPOINT_FILE,
            0,
            format!("checkpoint {c} lies past the end of the log {durable_end}"),
        ));
    }

    // Make what was read durable (it may have been only in the page cache of a process
    // that crashed), and the checkpoint's rename with it, before deleting anything.
    let mut file = match last {
        Some(l) => {
            let mut f = fs.open_append(&codec::segment_name(l.seq))?;
            f.sync_data()?;
            Some(f)
        }
        None => None,
    };
    fs.sync_dir()?;

    let doomed: Vec<u64> = segs
        .range(..floor)
        .map(|(s, _)| *s)
        .chain(abandoned.iter().copied())
        .collect();
    for seq in doomed {
        let name = codec::segment_name(seq);
        match fs.remove(&name) {
            Ok(()) => {
                tracing::info!(file = %fs.display_name(&name), "commit log: removed a checkpointed or abandoned segment")
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not remove {}", fs.display_name(&name));
                let len = fs.read_prefix(&name, 0).map_or(0, |(_, len)| len);
                files.insert(seq, len);
            }
        }
    }

    let full = last.is_some_and(|l| l.len >= options.segment_bytes);
    if full || last.is_none() {
        file = None;
    }
    let mut wal = Wal {
        fs,
        options,
        last,
        file,
        new_seq: None,
        buf: Vec::new(),
        buf_header: 0,
        failed: false,
        next_seq: max_seen + 1,
        files,
        abandoned: Vec::new(),
        durable_end,
        checkpoint,
    };
    if wal.file.is_none() {
        wal.start_new_segment();
    }
    tracing::info!(
        records = report.records,
        writes = report.writes,
        bytes = report.bytes,
        durable_end = %durable_end,
        checkpoint = ?checkpoint,
        "commit log opened"
    );
    Ok((wal, out, report))
}
