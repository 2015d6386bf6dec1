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
use std::time::{Duration, Instant};

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

/// Paces a checkpoint's writes to a rate, in bytes per second, while switched on
/// ([`Throttle::begin`] to [`Throttle::end`]).
///
/// The [`Pacer`] starts write-back of what is dirty every few ms, but SQLite dirties
/// pages faster than the device takes them when it copies its WAL into the database
/// file (hundreds of MB in under a second), and the backlog still reaches the device
/// as one burst. The throttle makes the writes themselves wait: SQLite's `xWrite`
/// takes its bytes from it first ([`super::paced_vfs`]), sleeping when the
/// checkpoint is ahead of the rate. Measured beside a loop of 300-byte appends with
/// `fdatasync`: writing 400 MB as fast as possible with write-back started every 2 ms
/// made the worst append 277–412 ms; the same writes at 200–400 MB/s, 2–36 ms.
///
/// It stops pacing for the rest of a checkpoint once its sleeps have overrun by
/// [`GIVE_UP_LATE`] in all and by at least as long as they asked for
/// ([`gives_up`]): the writer's thread then spends more time waiting for CPU after
/// each sleep than sleeping (it runs at the lowest priority and the requests use all
/// of it), and a slower checkpoint would only fill the unflushed bound. Overruns of a
/// fraction of a millisecond per sleep, normal on a half-busy machine, add up to
/// 250 ms over a long checkpoint without meaning that, so the overrun alone does
/// not decide.
#[derive(Debug)]
pub(crate) struct Throttle {
    /// Bytes per second; never 0.
    rate: u64,
    state: parking_lot::Mutex<ThrottleState>,
}

/// What a throttle did during one checkpoint.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Paced {
    /// Bytes written while it was on.
    pub(crate) bytes: u64,
    /// Time its sleeps asked for.
    pub(crate) slept: Duration,
    /// Whether it stopped pacing because its sleeps overran ([`gives_up`]).
    pub(crate) gave_up: bool,
}

#[derive(Debug, Default)]
struct ThrottleState {
    on: bool,
    /// When the bytes taken so far are paid for at the rate.
    paid_until: Option<Instant>,
    /// How much the sleeps overran in all.
    late: Duration,
    paced: Paced,
}

/// Bytes a checkpoint may write at once before the rate applies.
const BURST: u64 = 1 << 20;

/// Sleeps shorter than this are not taken (a wake-up of the lowered writer thread
/// can overrun by as much); the debt is carried to the next write. At 128 MiB/s
/// that is a sleep per 256 KiB.
const MIN_SLEEP: Duration = Duration::from_millis(2);

/// The least overrun of the sleeps, in one checkpoint, after which it may stop
/// being paced ([`gives_up`]).
pub(crate) const GIVE_UP_LATE: Duration = Duration::from_millis(250);

/// Whether a checkpoint whose sleeps asked for `slept` in all and overran by `late`
/// stops being paced: only when the overrun is both large ([`GIVE_UP_LATE`]) and at
/// least the time asked for, i.e. the thread waits for CPU more than it paces.
pub(crate) fn gives_up(late: Duration, slept: Duration) -> bool {
    late >= GIVE_UP_LATE && late >= slept
}

impl Throttle {
    /// A throttle at `rate` bytes per second; `None` for 0 (no pacing).
    pub(crate) fn new(rate: u64) -> Option<Self> {
        (rate > 0).then(|| Self {
            rate,
            state: parking_lot::Mutex::default(),
        })
    }

    /// Switches pacing on, for one checkpoint, until the returned guard ends or is
    /// dropped (a cancelled checkpoint leaves nothing paced).
    pub(crate) fn begin(&self) -> Pacing<'_> {
        *self.state.lock() = ThrottleState {
            on: true,
            ..ThrottleState::default()
        };
        Pacing(self)
    }

    /// Switches pacing off and reports what it did since [`Throttle::begin`].
    pub(crate) fn end(&self) -> Paced {
        let mut state = self.state.lock();
        state.on = false;
        state.paced
    }

    /// Takes `bytes` about to be written: returns at once while off, else once the
    /// rate allows them (after a burst of [`BURST`]).
    pub(crate) fn take(&self, bytes: u64) {
        let wait = {
            let mut state = self.state.lock();
            if !state.on {
                return;
            }
            state.paced.bytes += bytes;
            if state.paced.gave_up {
                return;
            }
            let now = Instant::now();
            let cost = self.duration_of(bytes);
            let earliest = now.checked_sub(self.duration_of(BURST)).unwrap_or(now);
            let paid = state.paid_until.map_or(earliest, |t| t.max(earliest)) + cost;
            state.paid_until = Some(paid);
            let wait = paid.saturating_duration_since(now);
            if wait < MIN_SLEEP {
                return;
            }
            state.paced.slept += wait;
            wait
        };
        let started = Instant::now();
        std::thread::sleep(wait);
        let late = started.elapsed().saturating_sub(wait);
        let mut state = self.state.lock();
        state.late += late;
        if !state.paced.gave_up && gives_up(state.late, state.paced.slept) {
            state.paced.gave_up = true;
            tracing::debug!(
                late_ms = state.late.as_millis(),
                "checkpoint pacing given up: its thread waits for CPU"
            );
        }
    }

    /// How long `bytes` take at the rate.
    fn duration_of(&self, bytes: u64) -> Duration {
        let nanos = u128::from(bytes) * 1_000_000_000 / u128::from(self.rate);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// Pacing switched on by [`Throttle::begin`]; switched off when ended or dropped.
#[derive(Debug)]
pub(crate) struct Pacing<'a>(&'a Throttle);

impl Pacing<'_> {
    /// Switches pacing off and reports what it did.
    pub(crate) fn end(self) -> Paced {
        self.0.end()
    }
}

impl Drop for Pacing<'_> {
    fn drop(&mut self) {
        self.0.state.lock().on = false;
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
    fn a_throttle_holds_writes_to_its_rate_only_while_on() {
        assert!(Throttle::new(0).is_none(), "rate 0 means no pacing");
        // 4 MiB/s: 3 MiB beyond the 1 MiB burst take at least 0.75 s.
        let throttle = Throttle::new(4 << 20).expect("a positive rate");
        let started = Instant::now();
        for _ in 0..64 {
            throttle.take(64 << 10);
        }
        assert_eq!(throttle.end(), Paced::default(), "off: nothing counted");
        let pacing = throttle.begin();
        for _ in 0..64 {
            throttle.take(64 << 10);
        }
        let paced = pacing.end();
        let took = started.elapsed();
        assert_eq!(paced.bytes, 4 << 20);
        // Sleeps last at least what they ask for, so pacing took at least the time
        // the rate gives 3 MiB, unless its sleeps overran so much (a machine with no
        // CPU to spare) that it stopped pacing.
        assert!(
            paced.gave_up || took >= Duration::from_millis(740),
            "took {took:?}: {paced:?}"
        );
        assert!(
            paced.gave_up || paced.slept >= Duration::from_millis(700),
            "{paced:?}"
        );
    }

    #[test]
    fn pacing_is_given_up_only_when_overruns_are_large_and_outweigh_the_sleeps() {
        let ms = Duration::from_millis;
        // Small overruns, however many sleeps: paced on.
        assert!(!gives_up(ms(249), ms(10)));
        // Large overruns of a long, mostly slept checkpoint (0.3 ms over each of
        // 1,000 sleeps of 2 ms): paced on.
        assert!(!gives_up(ms(300), ms(2_000)));
        // The thread waits for CPU longer than it sleeps: given up.
        assert!(gives_up(ms(300), ms(300)));
        assert!(gives_up(ms(250), ms(40)));
    }

    #[test]
    fn nothing_to_pace_starts_no_thread() {
        let dir = tempfile::tempdir().expect("a temp dir can be created");
        let pacer = Pacer::start(&[dir.path().join("missing")], EVERY);
        assert!(pacer.thread.is_none());
        pacer.finish().expect("an idle pacer finishes cleanly");
    }
}
