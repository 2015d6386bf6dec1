//! A real `readstate serve` for the tests: the workspace's debug build
//! (`$READSTATE_BIN` overrides it), on free ports, over SQLite in a temporary
//! directory; stopped with SIGTERM and started again on the same ports and data;
//! killed by pid when dropped. `TEST_LOG=1` prints the server's log.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use readstate_client::{Client, Error, Event, RetryPolicy, Subscription};

/// How long anything in the tests may take before it is a failure (generous:
/// these are deadlines, not timing assertions).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The readstate binary.
pub fn binary() -> PathBuf {
    std::env::var_os("READSTATE_BIN").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../target/debug/readstate"
            ))
        },
        PathBuf::from,
    )
}

/// A running readstate.
pub struct Server {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Settings of this server besides the addresses and the storage
    /// (`READSTATE_AUTH__API_KEYS`, ...), kept for restarts.
    env: Vec<(String, String)>,
    /// `host:port` of the HTTP API.
    pub http_addr: String,
    /// `host:port` of the gRPC API.
    pub grpc_addr: String,
}

impl Server {
    /// Starts a server on free ports over a new, empty database.
    pub fn start() -> Server {
        Server::start_with(Vec::new())
    }

    /// [`Server::start`] with more settings (`READSTATE_*` variables).
    pub fn start_with(env: Vec<(String, String)>) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("readstate-client-test-")
            .tempdir()
            .expect("a temporary directory");
        let (child, http_addr, grpc_addr) = spawn(&dir, "127.0.0.1:0", "127.0.0.1:0", &env);
        Server {
            child: Some(child),
            dir,
            env,
            http_addr,
            grpc_addr,
        }
    }

    /// The gRPC endpoint, `http://host:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// A client of this server (default retry policy).
    pub async fn client(&self) -> Client {
        Client::connect(self.url())
            .await
            .expect("the client connects")
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server runs").id()
    }

    /// SIGTERM (a graceful shutdown), then waits for the process to exit.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("the server runs");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {}", child.id());
        let deadline = Instant::now() + PATIENCE;
        loop {
            if child.try_wait().expect("try_wait").is_some() {
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server did not stop within {PATIENCE:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same ports over the same data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server first");
        let (child, http_addr, grpc_addr) =
            spawn(&self.dir, &self.http_addr, &self.grpc_addr, &self.env);
        assert_eq!((&http_addr, &grpc_addr), (&self.http_addr, &self.grpc_addr));
        self.child = Some(child);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `readstate serve` over `dir`, waits for its `listening` lines and for
/// `/readyz` to answer 200; answers the process and its HTTP and gRPC addresses.
fn spawn(
    dir: &tempfile::TempDir,
    http: &str,
    grpc: &str,
    env: &[(String, String)],
) -> (Child, String, String) {
    let bin = binary();
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --bin readstate` (or set READSTATE_BIN)",
        bin.display()
    );
    let db = dir.path().join("rs.db");
    let mut command = Command::new(&bin);
    // Only what this helper sets configures the server: a READSTATE_* variable of the
    // caller's (READSTATE_BIN, READSTATE_TEST_PG_URL, ...) is not a setting and would
    // make it refuse to start.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("READSTATE_") {
            command.env_remove(key);
        }
    }
    let mut child = command
        .arg("serve")
        .current_dir(dir.path())
        .env("READSTATE_HTTP__ADDR", http)
        .env("READSTATE_GRPC__ADDR", grpc)
        .env(
            "READSTATE_STORAGE__URL",
            format!("sqlite://{}", db.display()),
        )
        .env("READSTATE_LOG__FORMAT", "json")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} starts: {e}", bin.display()));
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if std::env::var_os("TEST_LOG").is_some() {
                eprintln!("[readstate] {line}");
            }
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + PATIENCE;
    let (mut http_addr, mut grpc_addr) = (None, None);
    while http_addr.is_none() || grpc_addr.is_none() {
        let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
            let _ = child.kill();
            let status = child.wait();
            panic!(
                "readstate did not log `listening` for http and grpc ({status:?}); TEST_LOG=1 shows its log"
            );
        };
        let Ok(log) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if log["message"] != "listening" {
            continue;
        }
        let addr = log["addr"].as_str().map(str::to_owned);
        match log["protocol"].as_str() {
            Some("http") => http_addr = addr,
            Some("grpc") => grpc_addr = addr,
            _ => {}
        }
    }
    let (http_addr, grpc_addr) = (
        http_addr.expect("the http address"),
        grpc_addr.expect("the grpc address"),
    );
    // Keep draining the log so that the server never blocks on a full pipe.
    std::thread::spawn(move || while rx.recv().is_ok() {});
    while !ready(&http_addr) {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("/readyz did not answer 200 within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, http_addr, grpc_addr)
}

/// Whether `GET /readyz` answers 200.
fn ready(http_addr: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(http_addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {http_addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

/// A retry policy patient enough to wait for a server restart.
pub fn patient() -> RetryPolicy {
    RetryPolicy {
        attempts: 100,
        first_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
    }
}

/// The next event of `events`, within [`PATIENCE`].
pub async fn next_event(events: &mut Subscription) -> Result<Event, Error> {
    tokio::time::timeout(PATIENCE, events.next())
        .await
        .expect("an event within the deadline")
        .expect("the subscription goes on")
}

/// Skips events until one matches `wanted` (within [`PATIENCE`] in all); panics
/// on an error.
pub async fn wait_for(events: &mut Subscription, wanted: impl Fn(&Event) -> bool) -> Event {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("the expected event within the deadline")
            .expect("the subscription goes on")
            .expect("no error");
        if wanted(&event) {
            return event;
        }
    }
}

/// The process part of an event id (`<process>-<sequence>`).
pub fn process_of(id: &str) -> &str {
    id.rsplit_once('-').map_or(id, |(process, _)| process)
}

/// The SHA-256 of `key` in hex: what `auth.api_keys[].key_sha256` holds.
pub fn sha256_hex(key: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `READSTATE_AUTH__API_KEYS` for these `(name, key, scopes)`.
pub fn api_keys_env(keys: &[(&str, &str, &[&str])]) -> (String, String) {
    let entries: Vec<serde_json::Value> = keys
        .iter()
        .map(|(name, key, scopes)| {
            serde_json::json!({"name": name, "key_sha256": sha256_hex(key), "scopes": scopes})
        })
        .collect();
    (
        "READSTATE_AUTH__API_KEYS".to_owned(),
        serde_json::Value::Array(entries).to_string(),
    )
}

/// An HS256 JWT for user `sub` signed with `secret`, expiring `expires_in_s`
/// seconds from now (negative: already expired, beyond the server's leeway when
/// below -30).
pub fn jwt(secret: &str, sub: u64, expires_in_s: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let exp = now.saturating_add_signed(expires_in_s);
    let claims = serde_json::json!({"sub": sub.to_string(), "exp": exp});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("a signed token")
}
