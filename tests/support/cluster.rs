//! A throwaway PostgreSQL cluster for crash tests: `initdb` into a temp dir (as user
//! `postgres` when we are root, since PostgreSQL refuses to run as root), trust auth,
//! `fsync=on`, listening on 127.0.0.1 on a free port. It can be stopped with
//! `pg_ctl stop -m immediate` (a crash: no shutdown checkpoint, recovery from the WAL at
//! the next start) and started again. Dropping it stops it and removes its files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Where the server binaries (`initdb`, `pg_ctl`) are: `PG_BIN`, or the newest
/// `/usr/lib/postgresql/*/bin` (Debian's layout).
///
/// # Panics
/// With a one-line hint when there are none.
pub fn pg_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry
                .file_name()
                .to_string_lossy()
                .split('.')
                .map(str::parse)
                .collect::<Result<Vec<u32>, _>>()
                .ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_ctl").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin: \
             apt-get install postgresql (./scripts/test does), or set PG_BIN"
        )
    })
}

fn running_as_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
    })
}

/// A free TCP port on 127.0.0.1 (free when asked; the cluster binds it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A PostgreSQL cluster of the test's own.
#[derive(Debug)]
pub struct Cluster {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
}

impl Cluster {
    /// Creates and starts a new cluster.
    ///
    /// # Panics
    /// With the server's log when `initdb` or the start fails.
    pub fn start_new() -> Self {
        let bin = pg_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("readstate-pg-")
            .tempdir()
            .expect("a temp dir");
        run_checked(Command::new("chmod").arg("755").arg(dir.path()));
        if running_as_root() {
            run_checked(Command::new("chown").arg("postgres:").arg(dir.path()));
        }
        let cluster = Self {
            bin,
            port: free_port(),
            dir,
        };
        let data = cluster.data();
        let out = cluster.pg("initdb", |c| {
            c.arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
            ]);
        });
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.start();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Runs a server binary, as `postgres` when we are root.
    fn pg(&self, program: &str, configure: impl FnOnce(&mut Command)) -> Output {
        let path = self.bin.join(program);
        let mut cmd = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        configure(&mut cmd);
        cmd.output()
            .unwrap_or_else(|e| panic!("{program} does not run: {e}"))
    }

    /// `postgres://postgres@127.0.0.1:PORT`.
    pub fn server_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// Creates a database and returns its URL (the cluster is thrown away whole, so
    /// the database is never dropped on its own).
    pub fn create_db(&self, name: &str) -> String {
        super::admin(&self.server_url(), &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("{e}"));
        format!("{}/{name}", self.server_url())
    }

    /// Starts the server and waits until it accepts connections; returns how long that
    /// took (crash recovery included).
    pub fn start(&self) -> Duration {
        let started = Instant::now();
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} \
             -c fsync=on -c synchronous_commit=on -c max_connections=60",
            self.port,
            self.dir.path().display()
        );
        let (data, log) = (self.data(), self.log());
        let out = self.pg("pg_ctl", |c| {
            c.arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "-o", &options, "start"]);
        });
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}; server log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log())
        );
        started.elapsed()
    }

    /// `pg_ctl stop -m immediate`: the postmaster and every backend quit at once, with
    /// no shutdown checkpoint (the next start runs crash recovery). Returns once the
    /// server is gone.
    pub fn stop_immediate(&self) {
        let data = self.data();
        let out = self.pg("pg_ctl", |c| {
            c.arg("-D")
                .arg(&data)
                .args(["-w", "-t", "60", "-m", "immediate", "stop"]);
        });
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self.pg("pg_ctl", |c| {
            c.arg("-D")
                .arg(&data)
                .args(["-w", "-t", "30", "-m", "immediate", "stop"]);
        });
    }
}

fn run_checked(cmd: &mut Command) {
    let status = cmd.status().expect("the command runs");
    assert!(status.success(), "{cmd:?} failed");
}

/// The last lines of a log file, for failure messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
