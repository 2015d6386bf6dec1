//! `readstate bench --preset smoke` run by the real binary against every target:
//! readstate (started by the bench on SQLite), the floor, the local Redis, two
//! redis-servers the bench starts itself with an append-only file (`appendfsync
//! always` and `everysec`) and the local PostgreSQL. Checks that each target
//! produced figures, server CPU per operation included, that the bench's own
//! redis-servers are gone afterwards with their directories, and that
//! `bench-results.json` and `bench-report.html` are well formed. No timing
//! thresholds: the figures depend on the machine. A missing Redis (server or
//! `redis-server` program) or PostgreSQL fails the test with a hint; it never skips.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_readstate");
const TARGETS: [&str; 6] = [
    "readstate",
    "floor",
    "redis",
    "redis-aof-always",
    "redis-aof-everysec",
    "postgres-direct",
];
/// The targets the bench starts a redis-server for.
const OWN_REDIS: [&str; 2] = ["redis-aof-always", "redis-aof-everysec"];
/// The targets whose server CPU the bench must measure (their processes are on
/// this machine and readable).
const WITH_CPU: [&str; 6] = [
    "readstate",
    "readstate-grpc",
    "floor",
    "redis",
    "redis-aof-always",
    "redis-aof-everysec",
];

fn pg_url() -> String {
    std::env::var("READSTATE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

fn redis_url() -> String {
    std::env::var("READSTATE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A name no other run uses: databases `<ns>_*`, Redis keys `<ns>:*`.
fn unique_namespace() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("rsb_t_{}_{nanos}", std::process::id())
}

/// Drops what the run may have left, even when an assertion failed first.
struct Leftovers {
    namespace: String,
}

impl Leftovers {
    fn databases(&self) -> [String; 2] {
        [
            format!("{}_readstate", self.namespace),
            format!("{}_direct", self.namespace),
        ]
    }

    async fn existing_databases(&self) -> Vec<String> {
        let mut conn = connect_pg().await;
        let mut found = Vec::new();
        for db in self.databases() {
            let exists: bool =
                sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
                    .bind(&db)
                    .fetch_one(&mut conn)
                    .await
                    .expect("pg_database is readable");
            if exists {
                found.push(db);
            }
        }
        found
    }

    async fn redis_keys(&self) -> Vec<String> {
        let mut con = redis_connection().await.expect("Redis is reachable");
        namespace_keys(&mut con, &self.namespace)
            .await
            .expect("SCAN answers")
    }
}

/// A connection whose replies may take as long as a busy shared Redis needs: the
/// client's default 500 ms response timeout failed a CI run while another test
/// was loading Redis.
async fn redis_connection() -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(10)))
        .set_response_timeout(Some(Duration::from_secs(120)));
    redis::Client::open(redis_url())?
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// The keys under `<namespace>:`, by `SCAN` (`KEYS` would block a Redis that other
/// tests share for as long as it walks every key).
async fn namespace_keys(
    con: &mut redis::aio::MultiplexedConnection,
    namespace: &str,
) -> redis::RedisResult<Vec<String>> {
    let pattern = format!("{namespace}:*");
    let mut found = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1_000)
            .query_async(con)
            .await?;
        found.extend(keys);
        if next == 0 {
            return Ok(found);
        }
        cursor = next;
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        // Best effort, outside any runtime: psql and redis-cli are not assumed, so
        // this uses a small runtime of its own.
        let namespace = self.namespace.clone();
        let databases = self.databases();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                use sqlx::Connection;
                if let Ok(mut conn) =
                    sqlx::PgConnection::connect(&format!("{}/postgres", pg_url())).await
                {
                    for db in databases {
                        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                            "drop database if exists \"{db}\" with (force)"
                        )))
                        .execute(&mut conn)
                        .await;
                    }
                }
                if let Ok(mut con) = redis_connection().await {
                    let keys = namespace_keys(&mut con, &namespace)
                        .await
                        .unwrap_or_default();
                    // UNLINK a batch at a time: Redis frees them in the background,
                    // and no one command holds the shared server for long.
                    for batch in keys.chunks(1_000) {
                        let _: Result<(), _> =
                            redis::cmd("UNLINK").arg(batch).query_async(&mut con).await;
                    }
                }
            });
        })
        .join();
    }
}

async fn connect_pg() -> sqlx::PgConnection {
    use sqlx::Connection;
    let url = format!("{}/postgres", pg_url().trim_end_matches('/'));
    sqlx::PgConnection::connect(&url).await.unwrap_or_else(|e| {
        panic!("PostgreSQL is required at {url} (set READSTATE_TEST_PG_URL): {e}")
    })
}

async fn check_servers_are_up() {
    drop(connect_pg().await);
    if let Err(e) = redis_connection().await {
        panic!(
            "Redis is required at {} (start it with `redis-server --daemonize yes`): {e}",
            redis_url()
        );
    }
    let version = Command::new("redis-server").arg("--version").output();
    assert!(
        version.is_ok_and(|out| out.status.success()),
        "the redis-server program is required in PATH (the redis-aof-* targets start their own)"
    );
}

/// Whether process `pid` still runs `redis-server` (a pid reused by something
/// else since does not count).
fn runs_redis_server(pid: u64) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains("redis-server"))
}

fn run_bench(dir: &Path, namespace: &str) -> std::process::Output {
    let targets = TARGETS.join(",");
    // `--grpc` adds `readstate-grpc`: the same server measured over gRPC.
    Command::new(BIN)
        .current_dir(dir)
        .env_remove("READSTATE_CONFIG")
        // The bench reads no service configuration: a stray READSTATE_* variable (the
        // test suite exports READSTATE_TEST_PG_URL) must not stop it.
        .env("READSTATE_NOT_A_KEY", "1")
        .args([
            "bench",
            "--preset",
            "smoke",
            "--duration",
            "3s",
            "--connections",
            "8",
            "--populate-connections",
            "2",
            "--namespace",
            namespace,
            "--targets",
            &targets,
            "--grpc",
            "--redis-url",
            &redis_url(),
            "--postgres-url",
            &format!("{}/", pg_url().trim_end_matches('/')),
            "--cleanup",
        ])
        .output()
        .expect("the binary runs")
}

fn number(v: &Value, target: &str, field: &str) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{target}.{field} is not a number: {v}"))
}

/// The HTML checks: one document, balanced SVG, nothing loaded from elsewhere.
fn assert_self_contained_html(html: &str) {
    let lower = html.to_ascii_lowercase();
    assert!(lower.starts_with("<!doctype html>"), "no doctype");
    assert_eq!(lower.matches("<html").count(), 1, "one <html>");
    assert_eq!(lower.matches("</html>").count(), 1, "one </html>");
    assert_eq!(lower.matches("<body").count(), 1, "one <body>");
    let opened = lower.matches("<svg").count();
    assert!(
        opened >= 3,
        "at least the throughput, latency and memory charts"
    );
    assert_eq!(opened, lower.matches("</svg>").count(), "balanced <svg>");
    assert_eq!(
        lower.matches("<table").count(),
        lower.matches("</table>").count(),
        "balanced <table>"
    );
    assert!(!lower.contains("<script"), "no script");
    assert!(!lower.contains("<link"), "no linked resources");
    for attr in ["src=", "href="] {
        for (at, _) in lower.match_indices(attr) {
            let value = lower[at + attr.len()..].trim_start_matches(['"', '\'']);
            assert!(
                !value.starts_with("http://")
                    && !value.starts_with("https://")
                    && !value.starts_with("//"),
                "external resource at byte {at}"
            );
        }
    }
    assert!(!lower.contains("url(http"), "no external CSS resource");
    for target in TARGETS {
        assert!(html.contains(target), "the report names {target}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_smoke_bench_measures_every_target_and_writes_json_and_html() {
    check_servers_are_up().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let leftovers = Leftovers {
        namespace: unique_namespace(),
    };

    let output = {
        let dir = dir.path().to_owned();
        let namespace = leftovers.namespace.clone();
        tokio::task::spawn_blocking(move || run_bench(&dir, &namespace))
            .await
            .expect("the bench ran")
    };

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let json = std::fs::read_to_string(dir.path().join("bench-results.json"))
        .expect("bench-results.json in the working directory");
    let results: Value = serde_json::from_str(&json).expect("the results are JSON");
    for target in TARGETS.iter().copied().chain(["readstate-grpc"]) {
        let t = &results["targets"][target];
        assert!(
            t["error"].is_null(),
            "{target} was not measured: {}\n{stderr}",
            t["error"]
        );
        assert!(number(&t["ops_per_sec"], target, "ops_per_sec") > 0.0);
        assert!(
            number(
                &t["fixed_rate_ops_per_sec"],
                target,
                "fixed_rate_ops_per_sec"
            ) > 0.0
        );
        let p50 = number(&t["p50_ms"], target, "p50_ms");
        let p99 = number(&t["p99_ms"], target, "p99_ms");
        let p999 = number(&t["p999_ms"], target, "p999_ms");
        let max = number(&t["max_ms"], target, "max_ms");
        assert!(
            0.0 < p50 && p50 <= p99 && p99 <= p999 && p999 <= max,
            "{target}: {t}"
        );
        assert!(
            t.get("bytes_per_read_state").is_some(),
            "{target} has the memory field"
        );
    }
    for target in [
        "readstate",
        "redis",
        "redis-aof-always",
        "redis-aof-everysec",
    ] {
        let bytes = &results["targets"][target]["bytes_per_read_state"];
        assert!(number(bytes, target, "bytes_per_read_state") > 0.0);
        assert!(
            results["targets"][target]
                .get("rss_bytes_per_read_state")
                .is_some(),
            "{target} has the RSS field"
        );
    }
    // Fresh servers of the bench's own: their resident set grows with the data.
    for target in OWN_REDIS {
        let rss = &results["targets"][target]["rss_bytes_per_read_state"];
        assert!(number(rss, target, "rss_bytes_per_read_state") > 0.0);
    }
    // readstate's two figures: what its cache counts, and its resident set growth
    // (which holds the cache and more: allocator slack, SQLite's page cache).
    let readstate = &results["targets"]["readstate"];
    let counted = number(
        &readstate["bytes_per_read_state"],
        "readstate",
        "bytes_per_read_state",
    );
    let rss = number(
        &readstate["rss_bytes_per_read_state"],
        "readstate",
        "rss_bytes_per_read_state",
    );
    assert!(counted > 0.0 && rss > 0.0 && counted != rss, "{readstate}");
    assert!(
        readstate["memory_basis"]
            .as_str()
            .is_some_and(|b| b.contains("readstate_cache_bytes") && b.contains("VmRSS")),
        "{readstate}"
    );
    assert!(results["targets"]["floor"]["bytes_per_read_state"].is_null());
    for target in WITH_CPU {
        let t = &results["targets"][target];
        for field in ["cpu_us_per_op", "fixed_rate_cpu_us_per_op"] {
            assert!(
                number(&t[field], target, field) > 0.0,
                "{target}.{field}; cpu_basis: {}",
                t["cpu_basis"]
            );
        }
        for phase in ["saturation", "fixed_rate"] {
            let figures = &t[phase];
            assert!(number(&figures["cpu_us_per_op"], target, "phase cpu_us_per_op") > 0.0);
            assert!(number(&figures["server_cpu_s"], target, "server_cpu_s") > 0.0);
        }
        assert!(
            t["cpu_basis"].is_string(),
            "{target} says what its CPU counts"
        );
    }
    assert!(
        results["targets"]["postgres-direct"]
            .get("cpu_us_per_op")
            .is_some(),
        "postgres-direct has the CPU field (null only with a reason)"
    );
    let retries = &results["targets"]["readstate"]["population"]["retries"];
    assert!(retries.as_u64().is_some(), "population.retries: {retries}");
    // The redis-servers the bench started are stopped, their directories removed.
    for target in OWN_REDIS {
        let server = &results["targets"][target]["server"];
        let pid = server["pid"]
            .as_u64()
            .unwrap_or_else(|| panic!("{target}.server.pid: {server}"));
        assert!(
            !runs_redis_server(pid),
            "{target}'s redis-server (pid {pid}) still runs"
        );
        let dir = server["dir"]
            .as_str()
            .unwrap_or_else(|| panic!("{target}.server.dir: {server}"));
        assert!(dir.contains(&leftovers.namespace), "{dir}");
        assert!(
            !Path::new(dir).exists(),
            "{target}'s directory {dir} is left"
        );
        let args: Vec<&str> = server["args"]
            .as_array()
            .expect("server.args")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let fsync = target.trim_start_matches("redis-aof-");
        assert!(
            args.windows(2).any(|w| w == ["--appendfsync", fsync]),
            "{target}: {args:?}"
        );
    }
    assert_eq!(results["params"]["preset"], "smoke");
    assert_eq!(results["params"]["read_states"], 100_000);
    assert!(results["machine"]["cores"].as_u64().is_some_and(|c| c >= 1));
    for peer in [
        "floor",
        "redis",
        "redis-aof-always",
        "redis-aof-everysec",
        "postgres-direct",
    ] {
        let ratio = &results["ratios"][format!("readstate/{peer}")]["ops_per_sec"];
        assert!(number(ratio, peer, "ratio") > 0.0);
    }
    for peer in ["floor", "redis", "redis-aof-always", "redis-aof-everysec"] {
        let ratio = &results["ratios"][format!("readstate/{peer}")]["cpu_us_per_op"];
        assert!(number(ratio, peer, "CPU ratio") > 0.0);
    }
    let html = std::fs::read_to_string(dir.path().join("bench-report.html"))
        .expect("bench-report.html in the working directory");
    assert_self_contained_html(&html);
    assert!(
        stdout.contains("| readstate |") && stdout.contains("CPU µs/op"),
        "the final table: {stdout}"
    );
    assert!(html.contains("Server CPU per operation"), "the CPU chart");
    // --cleanup dropped the databases, the Redis keys and the data directory.
    assert_eq!(leftovers.existing_databases().await, Vec::<String>::new());
    assert_eq!(leftovers.redis_keys().await, Vec::<String>::new());
    assert!(
        !dir.path()
            .join("bench-data")
            .join(&leftovers.namespace)
            .exists()
    );
}

/// A machine without the `redis-server` program: the AOF targets are reported as
/// not measured, with the reason, and the bench still succeeds.
#[test]
fn a_missing_redis_server_program_is_reported_not_fatal() {
    let dir = tempfile::tempdir().expect("a temp dir");

    let output = Command::new(BIN)
        .current_dir(dir.path())
        .env_remove("READSTATE_CONFIG")
        .args([
            "bench",
            "--preset",
            "smoke",
            "--duration",
            "1s",
            "--targets",
            "redis-aof-always,redis-aof-everysec",
            "--redis-server",
            "/nonexistent/bin/redis-server",
            "--namespace",
            &unique_namespace(),
        ])
        .output()
        .expect("the binary runs");

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed: {stderr}");
    let json =
        std::fs::read_to_string(dir.path().join("bench-results.json")).expect("bench-results.json");
    let results: Value = serde_json::from_str(&json).expect("the results are JSON");
    for target in OWN_REDIS {
        let t = &results["targets"][target];
        let error = t["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{target}: {t}"));
        assert!(error.contains("not installed"), "{target}: {error}");
        assert!(t["ops_per_sec"].is_null());
    }
    // Nothing is left in the data directory for them.
    let data = dir.path().join("bench-data");
    let left: Vec<_> = walk(&data)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("redis-aof-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            }
            out.push(path);
        }
    }
    out
}
