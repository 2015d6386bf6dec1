//! Server processes the bench starts (`readstate serve`, `readstate bench-floor`,
//! `redis-server`): start with env config, wait for the `listening addr=...` log
//! line (or another readiness line), read the
//! resident set size from `/proc`, stop with SIGTERM. Also reads a gauge from a
//! Prometheus `/metrics` page, for servers the bench did not start.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hyper::Method;

use super::client::HttpClient;

/// Log lines kept to explain a server that failed.
const LOG_TAIL: usize = 40;

/// A child server process. Dropping it kills it.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// The address from its `listening` line.
    pub addr: SocketAddr,
    /// The newest log lines (written by the reader thread, read on failure).
    log: Arc<Mutex<VecDeque<String>>>,
}

/// Which output of a started server carries its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// A `Command` for this very binary with every `READSTATE_*` and `DATABASE_URL`
/// variable of the bench's own environment removed, so only what the bench sets
/// configures the server.
///
/// # Errors
/// When the path of the running executable is unknown.
pub fn self_command() -> anyhow::Result<Command> {
    let exe = std::env::current_exe().context("while finding the readstate executable")?;
    let mut cmd = Command::new(exe);
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("READSTATE_") || key_text == "DATABASE_URL" {
            cmd.env_remove(&key);
        }
    }
    Ok(cmd)
}

impl ServerProcess {
    /// Starts `cmd` and waits (up to `timeout`) for the line that logs `listening`
    /// with its address.
    ///
    /// # Errors
    /// When the process cannot start, exits, or logs no address in time; the error
    /// carries its last log lines.
    pub async fn start(cmd: Command, timeout: Duration) -> anyhow::Result<Self> {
        Self::start_matching(cmd, timeout, LogStream::Stderr, listening_addr).await
    }

    /// Starts `cmd` and waits (up to `timeout`) for a line of its `log` stream for
    /// which `ready` gives the address it serves (e.g. Redis' `Ready to accept
    /// connections` on stdout). The other stream is discarded.
    ///
    /// # Errors
    /// When the process cannot start, exits, or never logs readiness in time; the
    /// error carries its last log lines.
    pub async fn start_matching(
        mut cmd: Command,
        timeout: Duration,
        log_stream: LogStream,
        ready: impl Fn(&str) -> Option<SocketAddr> + Send + 'static,
    ) -> anyhow::Result<Self> {
        cmd.stdin(Stdio::null());
        match log_stream {
            LogStream::Stderr => cmd.stdout(Stdio::null()).stderr(Stdio::piped()),
            LogStream::Stdout => cmd.stdout(Stdio::piped()).stderr(Stdio::null()),
        };
        let mut child = cmd
            .spawn()
            .with_context(|| format!("while starting {:?}", cmd.get_program()))?;
        let pipe: Box<dyn std::io::Read + Send> = match log_stream {
            LogStream::Stderr => Box::new(child.stderr.take().context("stderr is piped")?),
            LogStream::Stdout => Box::new(child.stdout.take().context("stdout is piped")?),
        };
        let log = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL)));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let tail = Arc::clone(&log);
        std::thread::spawn(move || {
            // Drains the pipe for the life of the process so the server never blocks
            // on a full pipe.
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(addr) = ready(&line) {
                    let _ = tx.send(addr);
                }
                if let Ok(mut tail) = tail.lock() {
                    if tail.len() == LOG_TAIL {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            }
        });
        let mut server = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        let mut rx = rx;
        let deadline = tokio::time::Instant::now() + timeout;
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(addr)) => {
                server.addr = addr;
                Ok(server)
            }
            Ok(None) => {
                // The pipe closed: the process is gone.
                let status = server.child.wait().ok();
                bail!(
                    "the server exited ({}) before listening; its last log lines:\n{}",
                    status.map_or("unknown status".to_owned(), |s| s.to_string()),
                    server.recent_log()
                );
            }
            Err(_) => bail!(
                "the server did not log that it was ready within {} s; its last log lines:\n{}",
                timeout.as_secs(),
                server.recent_log()
            ),
        }
    }

    /// Waits (up to `timeout`) until a line of the recent log gives an address by
    /// `matcher` (a second listener, logged after the first).
    ///
    /// # Errors
    /// No such line in time.
    pub async fn logged_addr(
        &self,
        matcher: impl Fn(&str) -> Option<SocketAddr>,
        timeout: Duration,
    ) -> anyhow::Result<SocketAddr> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let found = self
                .log
                .lock()
                .ok()
                .and_then(|tail| tail.iter().find_map(|line| matcher(line)));
            if let Some(addr) = found {
                return Ok(addr);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "no such line within {} s; the last log lines:\n{}",
                    timeout.as_secs(),
                    self.recent_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The resident set size now, from `/proc/<pid>/status`.
    pub fn rss_bytes(&self) -> Option<u64> {
        rss_of_pid(self.pid())
    }

    /// The newest log lines, one per line.
    pub fn recent_log(&self) -> String {
        self.log
            .lock()
            .map(|tail| tail.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    /// Whether the process has exited.
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// How the process ended (`running` while it runs).
    pub fn exit_status(&mut self) -> String {
        match self.child.try_wait() {
            Ok(Some(status)) => status.to_string(),
            Ok(None) => "running".to_owned(),
            Err(e) => format!("unknown: {e}"),
        }
    }

    /// SIGTERM, then waits up to `grace` for a clean exit before SIGKILL.
    ///
    /// # Errors
    /// When the process had to be killed or exited with a failure.
    pub async fn stop(mut self, grace: Duration) -> anyhow::Result<()> {
        let pid = self.pid().to_string();
        let _ = Command::new("kill")
            .args(["-TERM", &pid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                if status.success() {
                    return Ok(());
                }
                bail!(
                    "the server exited with {status}; its last log lines:\n{}",
                    self.recent_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        bail!(
            "the server did not exit within {} s of SIGTERM and was killed",
            grace.as_secs()
        )
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The address of the `listening` line of the gRPC server (`protocol` `grpc`).
pub fn grpc_listening_addr(line: &str) -> Option<SocketAddr> {
    if line.contains("grpc") {
        listening_addr(line)
    } else {
        None
    }
}

/// The address of a `listening` log line: JSON (`"addr":"…"` anywhere in the
/// object) or text (`addr=…`).
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("listening") {
        return None;
    }
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(line) {
        return find_str(&value, "addr").and_then(|a| a.parse().ok());
    }
    let rest = &line[line.find("addr=")? + "addr=".len()..];
    let token: String = rest
        .trim_start_matches('"')
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"')
        .collect();
    token.parse().ok()
}

fn find_str(value: &serde_json::Value, key: &str) -> Option<String> {
    match value {
        serde_json::Value::Object(map) => map
            .get(key)
            .and_then(|v| v.as_str().map(str::to_owned))
            .or_else(|| map.values().find_map(|v| find_str(v, key))),
        _ => None,
    }
}

/// `VmRSS` of a process, in bytes.
pub fn rss_of_pid(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The value of an unlabelled gauge `name` in Prometheus text.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let rest = if rest.starts_with('{') {
            &rest[rest.find('}')? + 1..]
        } else {
            rest
        };
        if !rest.starts_with(' ') {
            return None;
        }
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Reads gauge `name` from `http://addr/metrics` over `client`.
pub async fn scrape_metric(client: &mut HttpClient, name: &str) -> Option<f64> {
    let (status, body) = client.send(Method::GET, "/metrics", None).await.ok()?;
    if !status.is_success() {
        return None;
    }
    metric_value(&String::from_utf8_lossy(&body), name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_address_of_json_and_text_listening_lines() {
        let json = r#"{"timestamp":"x","level":"INFO","fields":{"message":"listening","addr":"127.0.0.1:4242","protocol":"http"}}"#;
        let text = "2024-01-01T00:00:00Z INFO readstate::app: listening addr=127.0.0.1:5151 protocol=\"http\"";

        assert_eq!(
            listening_addr(json),
            Some("127.0.0.1:4242".parse().unwrap())
        );
        assert_eq!(
            listening_addr(text),
            Some("127.0.0.1:5151".parse().unwrap())
        );
        assert_eq!(listening_addr(r#"{"fields":{"message":"ready"}}"#), None);
    }

    #[test]
    fn reads_a_gauge_from_prometheus_text() {
        let text = "# HELP readstate_process_resident_bytes RSS\n\
                    # TYPE readstate_process_resident_bytes gauge\n\
                    readstate_process_resident_bytes_total 3\n\
                    readstate_process_resident_bytes 12345678\n\
                    readstate_cache_bytes{shard=\"a\"} 7\n";

        assert_eq!(
            metric_value(text, "readstate_process_resident_bytes"),
            Some(12_345_678.0)
        );
        assert_eq!(metric_value(text, "readstate_cache_bytes"), Some(7.0));
        assert_eq!(metric_value(text, "readstate_nothing"), None);
    }

    #[test]
    fn reads_this_process_rss() {
        assert!(rss_of_pid(std::process::id()).unwrap() > 0);
    }
}
