//! The `redis-server` processes of the `redis-aof-always` and `redis-aof-everysec`
//! targets: Redis with the durability of readstate's `sync` and `async` modes.
//!
//! Each is started by the bench on 127.0.0.1 and a free port, in a directory of
//! its own under the bench's data directory, with `appendonly yes`,
//! `appendfsync always|everysec` and `save ""` (no RDB snapshots: the AOF is the
//! only persistence, as readstate's commits are). Everything else is Redis'
//! default: no configuration file is read. It is ready when it logs `Ready to
//! accept connections` (after loading an existing AOF, with `--reuse`), and it is
//! stopped by pid with SIGTERM, then SIGKILL if it lingers.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::server::{LogStream, ServerProcess};

/// Attempts at a free port (another process may take the one found first).
const PORT_ATTEMPTS: u32 = 3;

/// When Redis' append-only file is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Before each write is answered: readstate's `sync`.
    Always,
    /// Once a second: readstate's `async`.
    Everysec,
}

impl Fsync {
    /// The `appendfsync` value.
    pub fn name(self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::Everysec => "everysec",
        }
    }
}

/// The options a bench redis-server runs with.
pub fn server_args(port: u16, dir: &Path, fsync: Fsync) -> Vec<String> {
    [
        "--bind",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--dir",
        &dir.display().to_string(),
        "--appendonly",
        "yes",
        "--appendfsync",
        fsync.name(),
        "--save",
        "",
        "--daemonize",
        "no",
        "--logfile",
        "",
    ]
    .iter()
    .map(|&a| a.to_owned())
    .collect()
}

/// A port free on 127.0.0.1 right now.
///
/// # Errors
/// When no socket can be bound.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("while looking for a free port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

/// A redis-server the bench started.
#[derive(Debug)]
pub struct RedisServer {
    process: ServerProcess,
    /// `redis://127.0.0.1:<port>`.
    pub url: String,
    /// Its data directory.
    pub dir: PathBuf,
    /// The options it was started with.
    pub args: Vec<String>,
}

impl RedisServer {
    /// Starts `program` serving `dir` (which must exist) with `fsync`, and waits up
    /// to `timeout` until it accepts connections.
    ///
    /// # Errors
    /// The program is missing, or the server exits or is not ready in time (the
    /// error has its last log lines).
    pub async fn start(
        program: &Path,
        dir: &Path,
        fsync: Fsync,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let dir = dir
            .canonicalize()
            .with_context(|| format!("while resolving {}", dir.display()))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port()?;
            let args = server_args(port, &dir, fsync);
            let mut cmd = Command::new(program);
            cmd.args(&args).current_dir(&dir);
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let started =
                ServerProcess::start_matching(cmd, timeout, LogStream::Stdout, move |line| {
                    line.contains("Ready to accept connections").then_some(addr)
                })
                .await;
            match started {
                Ok(process) => {
                    return Ok(Self {
                        process,
                        url: format!("redis://{addr}"),
                        dir,
                        args,
                    });
                }
                Err(e) if is_not_found(&e) => {
                    return Err(e.context(format!(
                        "{} is not installed (install Redis, or name the program with --redis-server)",
                        program.display()
                    )));
                }
                Err(e) if attempt < PORT_ATTEMPTS && format!("{e:#}").contains("in use") => {}
                Err(e) => {
                    return Err(e.context(format!("while starting {}", program.display())));
                }
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Whether it has exited, and if so, how and with which last log lines.
    pub fn death(&mut self) -> Option<String> {
        self.process.has_exited().then(|| {
            format!(
                "redis-server exited during the run ({}); its last log lines:\n{}",
                self.process.exit_status(),
                self.process.recent_log()
            )
        })
    }

    /// SIGTERM (Redis flushes the AOF and exits), then SIGKILL after `grace`.
    ///
    /// # Errors
    /// When it had to be killed or exited with a failure.
    pub async fn stop(self, grace: Duration) -> anyhow::Result<()> {
        let pid = self.pid();
        self.process
            .stop(grace)
            .await
            .with_context(|| format!("while stopping redis-server (pid {pid})"))
    }
}

/// Whether the error is a program that does not exist.
fn is_not_found(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
    })
}

/// Whether `dir` holds something (an AOF from an earlier run, for `--reuse`).
pub fn has_data(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
}

/// Sanity check for a directory about to be deleted: it must be a bench target's
/// own directory (`…/<namespace>/redis-aof-…`).
///
/// # Errors
/// Any other path.
pub fn check_own_dir(dir: &Path) -> anyhow::Result<()> {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if !name.starts_with("redis-aof-") {
        bail!(
            "refusing to delete {}: not a bench redis-server directory",
            dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_server_runs_on_loopback_with_only_the_aof() {
        let args = server_args(6390, Path::new("/tmp/x y/redis-aof-always"), Fsync::Always);
        let pairs: Vec<(&str, &str)> = args
            .chunks(2)
            .map(|p| (p[0].as_str(), p[1].as_str()))
            .collect();

        assert!(pairs.contains(&("--bind", "127.0.0.1")));
        assert!(pairs.contains(&("--port", "6390")));
        assert!(pairs.contains(&("--dir", "/tmp/x y/redis-aof-always")));
        assert!(pairs.contains(&("--appendonly", "yes")));
        assert!(pairs.contains(&("--appendfsync", "always")));
        assert!(pairs.contains(&("--save", "")));
        let everysec = server_args(1, Path::new("/d"), Fsync::Everysec);
        assert!(
            everysec
                .windows(2)
                .any(|w| w[0] == "--appendfsync" && w[1] == "everysec")
        );
    }

    #[test]
    fn a_missing_program_is_reported_as_not_installed() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();

        let e = rt
            .block_on(RedisServer::start(
                Path::new("/nonexistent/redis-server"),
                dir.path(),
                Fsync::Always,
                Duration::from_secs(5),
            ))
            .unwrap_err();

        assert!(format!("{e:#}").contains("is not installed"), "{e:#}");
    }

    #[test]
    fn only_target_directories_are_deleted() {
        assert!(check_own_dir(Path::new("bench-data/ns/redis-aof-always")).is_ok());
        assert!(check_own_dir(Path::new("/")).is_err());
        assert!(check_own_dir(Path::new("bench-data/ns")).is_err());
        assert!(free_port().unwrap() > 0);
    }
}
