//! Tests that run the real `readstate` binary: exit codes, durability across
//! `kill -9` (with a negative control that must lose data), graceful SIGTERM — on the
//! storage `READSTATE_TEST_STORAGE` picks (SQLite by default, or PostgreSQL).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Stdio};

use support::binary::{self, BIN, Writers, lost_writes, start};
use support::{Backend, TestStorage};

#[test]
fn an_invalid_configuration_exits_with_64_before_binding() {
    let status = Command::new(BIN)
        .arg("check-config")
        .env_clear()
        .env("READSTATE_STORAGE__DURABILITY", "sometimes")
        .stderr(Stdio::piped())
        .output()
        .expect("runs");
    assert_eq!(status.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&status.stderr).contains("storage.durability"));
}

#[test]
fn check_config_prints_the_effective_configuration() {
    let out = Command::new(BIN)
        .arg("check-config")
        .env_clear()
        .env("READSTATE_CACHE__MAX_BYTES", "64MiB")
        .output()
        .expect("runs");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json on stdout");
    assert_eq!(v["cache"]["max_bytes"], serde_json::json!("64MiB"));
}

#[test]
fn version_prints_the_crate_version() {
    let out = Command::new(BIN).arg("--version").output().expect("runs");
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn migrate_creates_the_database_and_is_idempotent() {
    let storage = TestStorage::from_env();
    // SQLite: in a directory that does not exist yet (migrate creates it).
    let url = match storage.dir() {
        Some(dir) => format!("sqlite://{}/db/readstate.db", dir.display()),
        None => storage.url().to_owned(),
    };

    for _ in 0..2 {
        let out = Command::new(BIN)
            .arg("migrate")
            .env_clear()
            .env("READSTATE_STORAGE__URL", &url)
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    match storage.backend() {
        Backend::Sqlite => assert!(storage.dir().unwrap().join("db/readstate.db").exists()),
        Backend::Postgres => {
            let tables = support::query_i64(
                storage.url(),
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()",
            )
            .unwrap();
            assert!(tables > 0, "migrate created no table");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_sync_mode_loses_no_acknowledged_write() {
    binary::kill_9_in_sync_mode_loses_nothing(TestStorage::from_env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_async_mode_does_lose_acknowledged_writes_so_the_checker_can_see_loss() {
    binary::kill_9_in_async_mode_loses_something(TestStorage::from_env()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_in_async_mode_flushes_everything_and_exits_0() {
    let storage = TestStorage::from_env();
    let env = [
        ("READSTATE_STORAGE__DURABILITY", "async"),
        ("READSTATE_STORAGE__FLUSH_INTERVAL_MS", "60000"),
    ];
    let mut server = start(storage.url(), &env);
    let history = Writers::spawn(&server.addr, 4, 400).join().await;

    server.sigterm();
    let status = server.child.wait().unwrap();

    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
    let mut restarted = start(storage.url(), &env);
    let lost = lost_writes(&restarted.addr, &history).await;
    restarted.sigterm();
    assert_eq!(restarted.child.wait().unwrap().code(), Some(0));
    assert!(
        lost.is_empty(),
        "SIGTERM lost acknowledged writes: {lost:?}"
    );
}

/// `url` with `password` added to its user (`postgres://user@` → `postgres://user:pw@`).
fn with_password(url: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (user, host) = rest.split_once('@').expect("a user in the test URL");
    format!("{scheme}://{user}:{password}@{host}")
}

#[test]
fn no_command_and_no_error_prints_the_database_password() {
    // Always PostgreSQL: its URL carries a password (trust authentication ignores it).
    const PASSWORD: &str = "s3cret-pw-4711";
    // The HS256 secret is a secret too (and turns auth on, so serving stays allowed).
    const JWT_SECRET: &str = "jwt-s3cret-that-is-long-enough-4711";
    let storage = TestStorage::postgres();
    let url = with_password(storage.url(), PASSWORD);
    let unreachable = with_password("postgres://postgres@127.0.0.1:1/nothing", PASSWORD);
    let run = |args: &[&str], url: &str| {
        Command::new(BIN)
            .args(args)
            .env_clear()
            .env("READSTATE_STORAGE__URL", url)
            .env("READSTATE_STORAGE__TIMEOUT_MS", "2000")
            .env("READSTATE_AUTH__JWT__HS256_SECRET", JWT_SECRET)
            .output()
            .expect("runs")
    };
    let mut printed = Vec::new();
    let mut record = |what: &str, out: std::process::Output| {
        printed.push((
            what.to_owned(),
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    };

    record("check-config", run(&["check-config"], &url));
    record("migrate", run(&["migrate"], &url));
    record("migrate, unreachable", run(&["migrate"], &unreachable));
    record("serve, unreachable", run(&["serve"], &unreachable));
    record(
        "check-config, bad port",
        run(
            &["check-config"],
            &url.replace("127.0.0.1:5432", "127.0.0.1:notaport"),
        ),
    );
    // A server that starts, serves and stops, with its whole log.
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut server = Command::new(BIN)
        .arg("serve")
        .env_clear()
        .env("READSTATE_HTTP__ADDR", "127.0.0.1:0")
        .env("READSTATE_STORAGE__URL", &url)
        .env("READSTATE_AUTH__JWT__HS256_SECRET", JWT_SECRET)
        .env("READSTATE_LOG__FILTER", "debug")
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::fs::read_to_string(log.path())
        .unwrap()
        .contains("listening")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let term = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = server.wait().unwrap();
    printed.push((
        "serve".to_owned(),
        status.code(),
        std::fs::read_to_string(log.path()).unwrap(),
    ));

    let codes: Vec<(&str, Option<i32>)> =
        printed.iter().map(|(w, c, _)| (w.as_str(), *c)).collect();
    assert_eq!(
        codes,
        [
            ("check-config", Some(0)),
            ("migrate", Some(0)),
            ("migrate, unreachable", Some(1)),
            ("serve, unreachable", Some(1)),
            ("check-config, bad port", Some(64)),
            ("serve", Some(0)),
        ]
    );
    for (what, _, text) in &printed {
        assert!(
            !text.contains(PASSWORD),
            "{what} printed the password:\n{text}"
        );
        assert!(
            !text.contains(JWT_SECRET),
            "{what} printed the JWT secret:\n{text}"
        );
    }
    assert!(
        printed[0].2.contains("\"hs256_secret\": \"***\""),
        "check-config shows that a JWT secret is set: {}",
        printed[0].2
    );
    assert!(
        printed[0].2.contains("postgres:***@"),
        "check-config shows where the password was: {}",
        printed[0].2
    );
}

#[test]
fn serving_open_beyond_loopback_is_refused_with_64_naming_auth() {
    for (key, addr) in [
        ("READSTATE_HTTP__ADDR", "0.0.0.0:0"),
        ("READSTATE_HTTP__ADDR", "[::]:0"),
        ("READSTATE_GRPC__ADDR", "0.0.0.0:0"),
        ("READSTATE_GRPC__ADDR", "[::]:0"),
    ] {
        for command in ["serve", "check-config"] {
            let out = Command::new(BIN)
                .arg(command)
                .env_clear()
                .env(key, addr)
                .output()
                .expect("runs");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(64),
                "{command} with {key}={addr}: {stderr}"
            );
            assert!(
                stderr.contains("auth:") && stderr.contains("auth.allow_unauthenticated"),
                "{command} with {key}={addr}: {stderr}"
            );
        }
    }
}

/// Starts `readstate serve` with `env`, waits for its listening line and answers
/// its log so far; the server is stopped with SIGTERM.
fn serve_and_read_the_log(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .env_clear()
        .env(
            "READSTATE_STORAGE__URL",
            format!("sqlite://{}/db", dir.path().display()),
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut server = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if text.contains("listening") {
            break text;
        }
        if std::time::Instant::now() > deadline || server.try_wait().unwrap().is_some() {
            let _ = server.kill();
            panic!("the server did not start:\n{text}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let term = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert_eq!(server.wait().unwrap().code(), Some(0));
    text
}

#[test]
fn serving_open_is_said_once_at_start_and_warned_about_beyond_loopback() {
    let loopback = serve_and_read_the_log(&[("READSTATE_HTTP__ADDR", "127.0.0.1:0")]);
    assert!(
        loopback.contains("serving open on loopback only"),
        "{loopback}"
    );

    let open = serve_and_read_the_log(&[
        ("READSTATE_HTTP__ADDR", "0.0.0.0:0"),
        ("READSTATE_AUTH__ALLOW_UNAUTHENTICATED", "true"),
    ]);
    assert!(
        open.contains("WARN") && open.contains("authentication is OFF"),
        "{open}"
    );
}

#[tokio::test]
async fn api_key_new_prints_a_key_and_the_entry_that_makes_the_server_accept_it() {
    let out = Command::new(BIN)
        .args([
            "api-key",
            "new",
            "--name",
            "chat-backend",
            "--scopes",
            "read,write",
        ])
        .env_clear()
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let key = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("rsk_"))
        .unwrap_or_else(|| panic!("a key line: {text}"))
        .to_owned();
    assert!(
        text.contains("[[auth.api_keys]]") && text.contains("name = \"chat-backend\""),
        "{text}"
    );
    // The environment form, pasted as printed (without the shell's quotes).
    let keys = text
        .lines()
        .find_map(|l| l.strip_prefix("READSTATE_AUTH__API_KEYS='"))
        .and_then(|l| l.strip_suffix('\''))
        .unwrap_or_else(|| panic!("an environment line: {text}"))
        .to_owned();
    assert!(!keys.contains(&key), "only the hash is configured");

    let storage = TestStorage::sqlite();
    let server = start(storage.url(), &[("READSTATE_AUTH__API_KEYS", &keys)]);
    let client = binary::client();
    let summary = |key: Option<String>| {
        let mut request = client.get(server.url("/v1/users/1/summary"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(summary(Some(key.clone())).await, 200);
    assert_eq!(summary(None).await, 401);
    assert_eq!(summary(Some(format!("{key}x"))).await, 401);
    let delete = client
        .delete(server.url("/v1/channels/10"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status().as_u16(), 403, "no admin scope");

    let bad = Command::new(BIN)
        .args(["api-key", "new", "--name", "x", "--scopes", "read,root"])
        .env_clear()
        .output()
        .expect("runs");
    assert_eq!(bad.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--scopes"));
}
