//! Work that must not take CPU time from requests — checkpoints — runs on threads
//! with the lowest scheduling priority.
//!
//! On Linux a thread's scheduling policy belongs to the thread, and the threads it
//! starts inherit it: a thread lowered here, and the SQLite worker thread a
//! connection opened from it starts, both stay lowered. They run under
//! `SCHED_IDLE`: the kernel gives them the CPU time no normal thread wants, and a
//! request thread that wakes up takes the CPU from them at once. (A raised nice
//! value alone was measured not to be enough: under the kernel's EEVDF scheduler a
//! nice +10 thread still ran its slice out before a woken request thread got the
//! core, and a 3-second checkpoint raised the median latency of everything else
//! from 0.8 ms to 65 ms. See docs/ARCHITECTURE.md.) Where `SCHED_IDLE` is refused,
//! the nice value is raised by [`NICE_INCREMENT`] instead. Leaving `SCHED_IDLE`
//! again needs a privilege a container rarely has, so a checkpoint that must not
//! wait (see `commit`) runs on normal threads instead of raising these. On other
//! systems these are plain threads.

use std::sync::mpsc;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// How much a background thread's nice value is raised above the process's when
/// `SCHED_IDLE` is refused.
pub const NICE_INCREMENT: i32 = 10;

/// Lowers the calling thread to `SCHED_IDLE`, or, when that is refused, raises its
/// nice value by [`NICE_INCREMENT`] (capped at 19). Lowering needs no privilege; a
/// failure is logged and otherwise ignored (the work then runs at normal priority).
pub fn lower_current_thread() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
            thread_native_id,
        };
        let idle = set_thread_priority_and_policy(
            thread_native_id(),
            thread_priority::ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
        );
        let Err(why) = idle else { return };
        tracing::debug!(error = ?why, "SCHED_IDLE refused; raising the nice value instead");
        use rustix::process::{getpriority_process, setpriority_process};
        let tid = rustix::thread::gettid();
        let lowered = getpriority_process(Some(tid))
            .and_then(|nice| setpriority_process(Some(tid), (nice + NICE_INCREMENT).min(19)));
        if let Err(e) = lowered {
            tracing::debug!(error = %e, "could not lower a background thread's priority");
        }
    }
}

/// Whether the thread a `/proc/.../stat` line describes runs lowered: under
/// `SCHED_IDLE`, or at a nice value raised by [`NICE_INCREMENT`] above `base_nice`
/// (Linux), for tests.
///
/// # Panics
/// When `stat` is not a stat line.
#[cfg(target_os = "linux")]
pub fn stat_is_lowered(stat: &str, base_nice: i32) -> bool {
    const SCHED_IDLE: u32 = 5;
    // After the parenthesised name: state is field 3, nice 19, policy 41.
    let rest = &stat[stat.rfind(')').expect("stat has the name in parentheses") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let nice: i32 = fields[16].parse().expect("nice is a number");
    let policy: u32 = fields[38].parse().expect("policy is a number");
    policy == SCHED_IDLE || nice >= (base_nice + NICE_INCREMENT).min(19)
}

/// Whether the calling thread runs lowered (see [`stat_is_lowered`]), for tests.
#[cfg(target_os = "linux")]
pub fn current_is_lowered(base_nice: i32) -> bool {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("procfs is mounted");
    stat_is_lowered(&stat, base_nice)
}

/// The nice value of the calling thread (Linux), for tests.
#[cfg(target_os = "linux")]
pub fn current_nice() -> i32 {
    rustix::process::getpriority_process(Some(rustix::thread::gettid()))
        .expect("getpriority of the calling thread cannot fail")
}

type Job = Box<dyn FnOnce() + Send>;

/// One thread at the lowest priority that runs jobs one at a time, in order, with a
/// handle on the runtime so that a job can drive async work (`Handle::block_on`:
/// sockets and timers stay with the runtime's own drivers). It ends when the lane
/// is dropped and its queued jobs are done.
#[derive(Debug)]
pub struct Lane {
    jobs: mpsc::Sender<Job>,
}

impl Lane {
    /// Starts the thread at the lowest priority, named `name`. Must be called
    /// inside a tokio runtime.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start(name: &str) -> std::io::Result<Self> {
        Self::spawn(name, true)
    }

    /// Starts the thread at normal priority: for work that must not wait for idle
    /// CPU but must not hold up a runtime worker either.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start_normal(name: &str) -> std::io::Result<Self> {
        Self::spawn(name, false)
    }

    fn spawn(name: &str, lowered: bool) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                if lowered {
                    lower_current_thread();
                }
                for job in queue {
                    job();
                }
            })?;
        Ok(Self { jobs })
    }

    /// Runs `f` on the lane and waits for its result.
    ///
    /// # Panics
    /// When `f` panicked (tests; release builds abort on panic).
    pub async fn run<T, F>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        // The thread only ends once `jobs` is dropped, which needs `&mut self` gone:
        // it is alive here unless a job panicked.
        self.jobs
            .send(job)
            .expect("the background lane runs as long as it is referenced (a job panicked)");
        rx.await
            .expect("a background job answers unless it panicked")
    }

    /// Runs the future `make()` returns to completion on the lane, driven by the
    /// current runtime's handle.
    pub async fn block_on<T, F, Fut>(&self, make: F) -> T
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T>,
    {
        let handle = Handle::current();
        self.run(move || handle.block_on(make())).await
    }
}

/// Runs `connect` (an async open that starts its own worker thread, as a SQLite
/// connection does) on a short-lived thread at lowered priority, so that the worker
/// thread it starts inherits that priority.
///
/// # Errors
/// `connect`'s own error; an I/O error when the thread cannot be started.
pub async fn open_lowered<T, E, F, Fut>(connect: F) -> Result<T, E>
where
    T: Send + 'static,
    E: From<std::io::Error> + Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    // A lane of its own, ended (its thread too) once the connection is open.
    Lane::start("readstate-open")
        .map_err(E::from)?
        .block_on(connect)
        .await
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lane_jobs_run_lowered_and_in_order_and_drive_async_work() {
        let base = current_nice();
        assert!(!current_is_lowered(base));
        let lane = Lane::start("test-lane").expect("a thread starts");
        assert!(lane.run(move || current_is_lowered(base)).await);
        // A job can await timers of the runtime it came from.
        let slept = lane
            .block_on(move || async move {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                current_is_lowered(base)
            })
            .await;
        assert!(slept);
        // The request thread itself is untouched.
        assert!(!current_is_lowered(base));
        assert_eq!(current_nice(), base);
        let order: Vec<u32> =
            futures_util::future::join_all((0..10).map(|i| lane.run(move || i))).await;
        assert_eq!(order, (0..10).collect::<Vec<_>>());
        // A normal lane is not lowered.
        let normal = Lane::start_normal("test-normal").expect("a thread starts");
        assert!(!normal.run(move || current_is_lowered(base)).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn threads_started_by_a_lowered_open_inherit_its_priority() {
        let base = current_nice();
        let child: Result<bool, std::io::Error> = open_lowered(move || async move {
            // Stands in for the worker thread a SQLite connection starts.
            Ok(std::thread::spawn(move || current_is_lowered(base))
                .join()
                .expect("no panic"))
        })
        .await;
        assert!(child.expect("opens"));
        assert!(!current_is_lowered(base));
    }
}
