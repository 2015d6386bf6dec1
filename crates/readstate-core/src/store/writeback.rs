//! Paced write-back of a database's files while a checkpoint writes them.
//!
//! A checkpoint writes a few hundred MB into SQLite's WAL and then into the database
//! file in about a second; the page cache takes all of it, and SQLite's `fsync` at
//! the end sends it to the device at once. Every commit-log `fdatasync` issued
//! meanwhile ends in a device cache flush, which has to wait for that whole burst:
//! 50–140 ms on this project's machine, where it otherwise takes 0.1 ms.
//!
//! While a checkpoint runs, the pacer starts write-back of both files every
//! [`EVERY`], so that the device receives them a few MB at a time and a log flush
//! waits for little. The bytes written are the same; only their timing changes.
//! Measured with a 400 MB write beside a loop of 300-byte appends and `fdatasync`s:
//! the worst append went from 70–125 ms to 2–7 ms. On `medium` (fixed rate, same
//! data, same day) readstate's p99 / p99.9 / max went from 83 / 118 / 136 ms to
//! 37 / 60 / 76 ms.
//!
//! It uses `sync_file_range(2)`, which starts write-back without a device cache
//! flush. An `fdatasync` every tick instead made the tail much worse (p99 125 ms on
//! `smoke`): each is a device flush of its own that the log's flushes queue behind.
//!
//! An I/O error is kept and turned into a failed checkpoint by [`Pacer::finish`].
//! The kernel reports a write-back error to every descriptor open on the file, so
//! SQLite would see it too; the checkpoint does not rely on that.

use std::fs::File;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often write-back is started while a checkpoint writes the files.
pub(crate) const EVERY: Duration = Duration::from_millis(2);

/// Starts write-back of a set of files every [`EVERY`], on its own thread, until
/// finished.
#[derive(Debug)]
pub(crate) struct Pacer {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl Pacer {
    /// Starts pacing those of `paths` that exist. With none, where there is no
    /// `sync_file_range(2)` (not Linux), or when no thread can be started, nothing is
    /// paced: SQLite's own `fsync` still makes the checkpoint durable, only its
    /// timing is then bursty.
    pub(crate) fn start(paths: &[PathBuf], every: Duration) -> Self {
        if !cfg!(target_os = "linux") {
            return Self::idle();
        }
        let files: Vec<File> = paths.iter().filter_map(|p| File::open(p).ok()).collect();
        if files.is_empty() {
            return Self::idle();
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("readstate-writeback".into())
            .spawn(move || {
                loop {
                    match stopped.recv_timeout(every) {
                        Err(RecvTimeoutError::Timeout) => {
                            for file in &files {
                                start_writeback(file)?;
                            }
                        }
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return Ok(()),
                    }
                }
            });
        match thread {
            Ok(thread) => Self {
                stop: Some(stop),
                thread: Some(thread),
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the write-back pacer; checkpoint unpaced");
                Self::idle()
            }
        }
    }

    fn idle() -> Self {
        Self {
            stop: None,
            thread: None,
        }
    }

    /// Stops pacing and reports the first error, if any. Waits at most for one
    /// write-back in progress.
    pub(crate) fn finish(mut self) -> std::io::Result<()> {
        drop(self.stop.take());
        match self.thread.take().map(JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(std::io::Error::other("the write-back pacer panicked")),
        }
    }
}

/// Waits for the write-back already under way on `file`, then starts it for
/// whatever is dirty now, without waiting for it and without a device cache flush:
/// `sync_file_range(2)` with `WAIT_BEFORE | WRITE` over the whole file. At most one
/// tick's worth of writes is thus in flight. An I/O error of an earlier write-back
/// is reported here.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn start_writeback(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE;
    // SAFETY: sync_file_range reads no memory of this process and writes none: its
    // arguments are a descriptor and three integers. The descriptor is open for the
    // whole call, because it is borrowed from `file`, which outlives the call.
    let ret = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, flags) };
    if ret == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Never called: [`Pacer::start`] starts no thread where this is compiled.
#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File) -> std::io::Result<()> {
    Ok(())
}

impl Drop for Pacer {
    /// A pacer dropped without [`Pacer::finish`] (a cancelled checkpoint) stops at its
    /// next tick; its thread is not waited for.
    fn drop(&mut self) {
        drop(self.stop.take());
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn paces_existing_files_until_finished_and_skips_missing_ones() {
        let dir = tempfile::tempdir().expect("a temp dir can be created");
        let path = dir.path().join("db");
        let mut file = File::create(&path).expect("the file can be created");
        let pacer = Pacer::start(
            &[path.clone(), dir.path().join("missing")],
            Duration::from_millis(1),
        );
        assert!(pacer.thread.is_some(), "one file exists, so the pacer runs");
        file.write_all(&[7; 1 << 16]).expect("writes");
        std::thread::sleep(Duration::from_millis(20));
        pacer
            .finish()
            .expect("write-back of a regular file succeeds");
        assert_eq!(std::fs::read(&path).expect("reads").len(), 1 << 16);
    }

    #[test]
    fn a_write_back_error_is_reported_by_finish() {
        // sync_file_range on a character device fails (ESPIPE): an error, for real.
        let pacer = Pacer::start(&[PathBuf::from("/dev/null")], Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(20));
        assert!(pacer.finish().is_err(), "the error reaches the checkpoint");
    }

    #[test]
    fn nothing_to_pace_starts_no_thread() {
        let dir = tempfile::tempdir().expect("a temp dir can be created");
        let pacer = Pacer::start(&[dir.path().join("missing")], EVERY);
        assert!(pacer.thread.is_none());
        pacer.finish().expect("an idle pacer finishes cleanly");
    }
}
