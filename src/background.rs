//! Work that must not take CPU time from requests — checkpoints — runs on threads
//! with a lower scheduling priority.
//!
//! On Linux the nice value belongs to a thread, and the threads it starts inherit
//! it: a thread lowered here, and the SQLite worker thread a connection opened from
//! it starts, both stay lowered. Under the kernel's fair scheduler a thread at nice
//! +10 gets about a tenth of the CPU time a nice-0 thread gets while both want it,
//! and all of it when the request threads are idle. So a checkpoint (hundreds of
//! milliseconds of B-tree work a second at full load) still finishes, but no
//! longer takes one of a small machine's cores away from requests while it runs.
//! On other systems these are plain threads.

use std::sync::mpsc;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// How much a background thread's nice value is raised above the process's.
pub const NICE_INCREMENT: i32 = 10;

/// Raises the calling thread's nice value by [`NICE_INCREMENT`] (capped at 19).
/// Raising needs no privilege; a failure is logged and otherwise ignored (the work
/// then runs at normal priority).
pub fn lower_current_thread() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        let tid = rustix::thread::gettid();
        let lowered = getpriority_process(Some(tid))
            .and_then(|nice| setpriority_process(Some(tid), (nice + NICE_INCREMENT).min(19)));
        if let Err(e) = lowered {
            tracing::debug!(error = %e, "could not lower a background thread's priority");
        }
    }
}

/// The nice value of the calling thread (Linux), for tests.
#[cfg(target_os = "linux")]
pub fn current_nice() -> i32 {
    rustix::process::getpriority_process(Some(rustix::thread::gettid()))
        .expect("getpriority of the calling thread cannot fail")
}

type Job = Box<dyn FnOnce() + Send>;

/// One thread at lowered priority that runs jobs one at a time, in order, with a
/// handle on the runtime so that a job can drive async work (`Handle::block_on`:
/// sockets and timers stay with the runtime's own drivers). It ends when the lane
/// is dropped and its queued jobs are done.
#[derive(Debug)]
pub struct Lane {
    jobs: mpsc::Sender<Job>,
}

impl Lane {
    /// Starts the thread, named `name`. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start(name: &str) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                lower_current_thread();
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
        let lane = Lane::start("test-lane").expect("a thread starts");
        let nice = lane.run(current_nice).await;
        assert_eq!(nice, (base + NICE_INCREMENT).min(19));
        // A job can await timers of the runtime it came from.
        let slept = lane
            .block_on(|| async {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                current_nice()
            })
            .await;
        assert_eq!(slept, nice);
        // The request thread itself is untouched.
        assert_eq!(current_nice(), base);
        let order: Vec<u32> =
            futures_util::future::join_all((0..10).map(|i| lane.run(move || i))).await;
        assert_eq!(order, (0..10).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn threads_started_by_a_lowered_open_inherit_its_priority() {
        let base = current_nice();
        let child: Result<i32, std::io::Error> = open_lowered(|| async {
            // Stands in for the worker thread a SQLite connection starts.
            Ok(std::thread::spawn(current_nice).join().expect("no panic"))
        })
        .await;
        assert_eq!(child.expect("opens"), (base + NICE_INCREMENT).min(19));
        assert_eq!(current_nice(), base);
    }
}
