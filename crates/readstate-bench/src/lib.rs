//! `readstate bench`: the benchmark of BENCH.md. It measures readstate and, in the
//! same run with the same load generator and the same operation streams, the
//! alternatives a team would pick instead: an empty handler on the same HTTP stack
//! (`floor`), Redis scripts (`redis`, and on Redis servers the bench starts with the
//! durability of readstate's modes: `redis-aof-always`, `redis-aof-everysec`) and
//! one SQL statement per operation (`postgres-direct`). It must not flatter readstate: every target gets the same
//! data set, the same seeds and the same phases, and a target that cannot be
//! measured is reported with the reason, never dropped.
//!
//! Flow per target, one target at a time (they share the machine's cores):
//! start or connect → populate (or reuse) measuring memory → saturation (closed
//! loop) → fixed rate (open loop, coordinated-omission corrected) → optional soak →
//! stop. Each phase also reads the server's CPU time ([`cpu`]). Then
//! `bench-results.json`, `bench-report.html` and the table.
//!
//! - [`dataset`], [`zipf`], [`mix`], [`workload`]: what is sent (pure, seeded).
//! - [`client`], [`server`], [`floor`], [`populate`], [`pg`], [`redis`],
//!   [`redis_server`]: the targets.
//! - [`runner`]: phases and measurement. [`report`], [`html`]: the outputs.
//! - [`capacity`]: `--capacity`, the node-count and cost projection from the results.

pub mod args;
pub mod capacity;
pub mod client;
pub mod cpu;
pub mod dataset;
pub mod floor;
pub mod grpc;
pub mod html;
pub mod mix;
pub mod pg;
pub mod populate;
pub mod redis;
pub mod redis_server;
pub mod report;
pub mod runner;
pub mod server;
pub mod workload;
pub mod zipf;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use args::{BenchArgs, BenchDurability, BenchStorage, BenchTarget};
use cpu::{CpuProbe, CpuSource};
use dataset::Dataset;
use redis::RedisTarget;
use redis_server::{Fsync, RedisServer};
use report::{Machine, Params, PhaseFigures, Population, Results, ServerInfo, TargetResult};
use runner::{Connector, Live, MemoryProbe, PhaseSpec, run_phase};
use server::{ServerProcess, grpc_listening_addr, self_command};
use workload::Workload;

/// The engine's default caps, used by every target.
const UNREAD_CAP: u32 = 99;
const MENTION_CAP: u32 = 99;
/// How long a started server may take to log its address.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping server may take to drain.
const STOP_GRACE: Duration = Duration::from_secs(60);

/// Parses `500ms`, `3s`, `10m`, `1h` or a bare number of seconds.
///
/// # Errors
/// Anything else.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}`: expected a duration such as 500ms, 30s, 10m or 1h"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" | "sec" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "`{other}`: unknown unit; use ms, s, m or h (e.g. 30s)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("`{text}`: out of range"))
}

/// Everything a target's run needs.
struct Ctx {
    args: BenchArgs,
    dataset: Arc<Dataset>,
    namespace: String,
    /// `<data-dir>/<namespace>`: readstate's SQLite files and population markers.
    dir: PathBuf,
    /// The phases' seeds: the same for every target.
    seed: u64,
}

/// What a population left behind for `--reuse`.
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    seconds: f64,
    bytes_per_read_state: Option<f64>,
    #[serde(default)]
    rss_bytes_per_read_state: Option<f64>,
}

impl Ctx {
    fn marker_path(&self, target: &str) -> PathBuf {
        self.dir.join(format!("{target}.populated.json"))
    }

    fn read_marker(&self, target: &str) -> Option<Marker> {
        let text = std::fs::read_to_string(self.marker_path(target)).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn write_marker(&self, target: &str, marker: &Marker) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("while creating {}", self.dir.display()))?;
        let text = serde_json::to_string_pretty(marker).context("while encoding the marker")?;
        std::fs::write(self.marker_path(target), text).context("while writing the marker")
    }

    fn forget_marker(&self, target: &str) {
        let _ = std::fs::remove_file(self.marker_path(target));
    }

    fn readstate_database(&self) -> String {
        format!("{}_readstate", self.namespace)
    }

    fn direct_database(&self) -> String {
        format!("{}_direct", self.namespace)
    }

    fn redis_prefix(&self) -> String {
        self.namespace.clone()
    }

    fn live(&self, target: &str) -> Live {
        Live {
            target: target.to_owned(),
        }
    }
}

/// `rsbench_<preset>_<seed>`, or the given name reduced to `[a-z0-9_]`.
fn namespace(args: &BenchArgs) -> anyhow::Result<String> {
    let raw = args
        .namespace
        .clone()
        .unwrap_or_else(|| format!("rsbench_{}_{}", args.preset.name(), args.seed));
    let name: String = raw
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if name.is_empty() || name.len() > 48 {
        bail!("--namespace must have 1 to 48 characters, not `{raw}`");
    }
    Ok(name)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The first message id a measurement creates: the current Unix time in µs, so
/// later runs over reused data always create newer ids (and ids stay below 2^53).
fn first_message_id() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1_000_000, |d| {
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX >> 11)
        })
}

/// `git rev-parse HEAD` in the working directory, else in the source tree the
/// binary was built from.
fn git_commit() -> Option<String> {
    let here = std::env::current_dir().ok();
    let source = Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    [here, source].into_iter().flatten().find_map(|dir| {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&dir)
            .args(["rev-parse", "HEAD"])
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        let commit = String::from_utf8(out.stdout).ok()?.trim().to_owned();
        (out.status.success() && commit.len() >= 7).then_some(commit)
    })
}

/// Runs the bench as `args` says and writes its outputs.
///
/// # Errors
/// Bad arguments or unwritable outputs. A target that fails is reported in the
/// results, not as an error.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if args.duration.is_zero() {
        bail!("--duration must be above 0");
    }
    if let Some(rate) = args.rate
        && !(rate.is_finite() && rate > 0.0)
    {
        bail!("--rate must be a number of operations per second above 0");
    }
    let started_at = unix_now();
    let namespace = namespace(&args)?;
    let shape = args.preset.shape();
    let generation = populate::bar(u64::from(shape.users), "data set: drawing memberships");
    let seed = args.seed;
    let dataset = {
        let bar = generation.clone();
        tokio::task::spawn_blocking(move || {
            Dataset::generate(shape, seed, &|done| bar.set_position(done))
        })
        .await
        .context("the data set generator panicked")??
    };
    generation.finish_and_clear();
    let dataset = Arc::new(dataset);
    let ctx = Ctx {
        dir: args.data_dir.join(&namespace),
        namespace,
        dataset,
        seed: args.seed,
        args,
    };
    eprintln!(
        "readstate bench: preset {} ({} users, {} channels, {} read states), seed {}, {} connections, {:?} per phase, mix {}",
        ctx.args.preset.name(),
        shape.users,
        shape.channels,
        ctx.dataset.read_states(),
        ctx.seed,
        ctx.args.connections,
        ctx.args.duration,
        ctx.args.mix
    );
    eprintln!("{}", Live::header());

    let mut targets = Vec::new();
    let mut seen = Vec::new();
    for &target in &ctx.args.targets {
        if seen.contains(&target) {
            continue;
        }
        seen.push(target);
        let name = target.name();
        let mut over_grpc = None;
        let outcome = match target {
            BenchTarget::Readstate => bench_readstate(&ctx, &mut over_grpc).await,
            BenchTarget::Floor => bench_floor(&ctx).await,
            BenchTarget::Redis => bench_redis(&ctx).await,
            BenchTarget::RedisAofAlways => bench_redis_aof(&ctx, target, Fsync::Always).await,
            BenchTarget::RedisAofEverysec => bench_redis_aof(&ctx, target, Fsync::Everysec).await,
            BenchTarget::PostgresDirect => bench_postgres(&ctx).await,
        };
        let result = outcome.unwrap_or_else(|(description, e)| {
            eprintln!("{name}: not measured: {e:#}");
            TargetResult::failed(description, &e)
        });
        targets.push((name.to_owned(), result));
        if target == BenchTarget::Readstate && ctx.args.grpc {
            let result = over_grpc.unwrap_or_else(|| {
                let why = anyhow::anyhow!("not measured: the readstate run ended before it");
                eprintln!("{GRPC_TARGET}: {why}");
                TargetResult::failed(grpc_description(), &why)
            });
            targets.push((GRPC_TARGET.to_owned(), result));
        }
    }

    let ratios = report::ratios(&targets);
    let results = Results {
        tool: "readstate bench",
        version: env!("CARGO_PKG_VERSION"),
        started_at_unix_s: started_at,
        finished_at_unix_s: unix_now(),
        git_commit: git_commit(),
        machine: Machine::detect(),
        params: params(&ctx),
        targets,
        ratios,
    };
    let written = write_outputs(&ctx.args.out_dir, &results)?;
    println!("\n{}", report::table(&results));
    print!("{}", report::ratio_lines(&results));
    for path in written {
        println!("wrote {}", path.display());
    }
    if ctx.args.cleanup {
        cleanup(&ctx).await;
    }
    Ok(())
}

fn params(ctx: &Ctx) -> Params {
    let a = &ctx.args;
    let shape = ctx.dataset.shape;
    Params {
        preset: a.preset.name(),
        seed: a.seed,
        users: shape.users,
        channels: shape.channels,
        read_states: ctx.dataset.read_states(),
        messages_per_channel: shape.messages_per_channel,
        channels_per_user: ctx.dataset.per_user(),
        mix: a.mix.to_string(),
        connections: a.connections,
        duration_s: a.duration.as_secs_f64(),
        warmup_s: a.warmup.as_secs_f64(),
        rate: a.rate,
        soak_s: a.soak.map(|d| d.as_secs_f64()),
        targets: a
            .targets
            .iter()
            .map(|t| t.name().to_owned())
            .chain(a.grpc.then(|| GRPC_TARGET.to_owned()))
            .collect(),
        storage: match (&a.url, a.storage) {
            (Some(_), _) => "external".to_owned(),
            (None, BenchStorage::Sqlite) => "sqlite".to_owned(),
            (None, BenchStorage::Postgres) => "postgres".to_owned(),
        },
        durability: match (&a.url, a.durability) {
            (Some(_), _) => "as configured".to_owned(),
            (None, BenchDurability::Sync) => "sync".to_owned(),
            (None, BenchDurability::Async) => "async".to_owned(),
        },
        url: a.url.clone(),
        reuse: a.reuse,
        namespace: ctx.namespace.clone(),
        cache_max_bytes: a.cache_max_bytes.clone(),
        unread_cap: UNREAD_CAP,
        mention_cap: MENTION_CAP,
    }
}

fn write_outputs(out_dir: &Path, results: &Results) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("while creating {}", out_dir.display()))?;
    let json_path = out_dir.join("bench-results.json");
    let json = serde_json::to_string_pretty(results).context("while encoding the results")?;
    std::fs::write(&json_path, json + "\n")
        .with_context(|| format!("while writing {}", json_path.display()))?;
    let html_path = out_dir.join("bench-report.html");
    std::fs::write(&html_path, html::render(results))
        .with_context(|| format!("while writing {}", html_path.display()))?;
    Ok(vec![json_path, html_path])
}

/// A target's failure: its description and why.
type Failure = (String, anyhow::Error);

/// Runs warm-up, saturation, fixed rate and soak against a target.
async fn measure(
    ctx: &Ctx,
    name: &str,
    connector: &Connector,
    memory: &MemoryProbe,
    cpu: &CpuProbe,
    result: &mut TargetResult,
) -> anyhow::Result<()> {
    result.cpu_basis = Some(cpu.basis.clone());
    let live = ctx.live(name);
    let workload = Arc::new(Workload::new(
        Arc::clone(&ctx.dataset),
        ctx.args.mix.clone(),
        first_message_id(),
    )?);
    let spec = |phase: &'static str, index: u64, duration: Duration, rate: Option<f64>| PhaseSpec {
        name: phase,
        duration,
        rate,
        connections: ctx.args.connections,
        seed: dataset::mix_seed(ctx.seed, index),
    };
    if !ctx.args.warmup.is_zero() {
        run_phase(
            &spec("warmup", 0, ctx.args.warmup, None),
            connector,
            &workload,
            memory,
            cpu,
            &live,
        )
        .await
        .context("during the warm-up")?;
    }
    let saturation = run_phase(
        &spec("saturation", 1, ctx.args.duration, None),
        connector,
        &workload,
        memory,
        cpu,
        &live,
    )
    .await
    .context("during the saturation phase")?;
    if saturation.ops == 0 {
        bail!(
            "no operation succeeded in the saturation phase: {}",
            saturation.first_error.as_deref().unwrap_or("no answer")
        );
    }
    result.saturation = Some(PhaseFigures::from(&saturation));
    let rate = ctx
        .args
        .rate
        .unwrap_or(saturation.ops_per_sec * 0.5)
        .max(1.0);
    let fixed = run_phase(
        &spec("fixed_rate", 2, ctx.args.duration, Some(rate)),
        connector,
        &workload,
        memory,
        cpu,
        &live,
    )
    .await
    .context("during the fixed-rate phase")?;
    result.fixed_rate = Some(PhaseFigures::from(&fixed));
    if let Some(soak) = ctx.args.soak {
        let soak = run_phase(
            &spec("soak", 3, soak, Some(rate)),
            connector,
            &workload,
            memory,
            cpu,
            &live,
        )
        .await
        .context("during the soak")?;
        result.soak = Some(PhaseFigures::from(&soak));
    }
    result.set_headline();
    Ok(())
}

/// The memory figure once it stops moving: allocators return freed pages to the
/// system a few seconds after a burst, so the figure is read when two samples a
/// second apart differ by less than 0.5 % (at most 15 s).
async fn settled(memory: &MemoryProbe) -> Option<u64> {
    let mut last = memory.sample().await?;
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = memory.sample().await?;
        let moved = now.abs_diff(last);
        last = now;
        if moved.saturating_mul(200) < now {
            break;
        }
    }
    Some(last)
}

fn per_state(before: Option<u64>, after: Option<u64>, states: u64) -> Option<f64> {
    let (before, after) = (before?, after?);
    (after > before && states > 0).then(|| (after - before) as f64 / states as f64)
}

/// Resolves `http://host:port` (or `host:port`) to an address.
async fn resolve(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or(url)
        .trim_end_matches('/');
    if url.starts_with("https://") {
        bail!("--url must be plain http:// (the bench measures the service, not TLS)");
    }
    tokio::net::lookup_host(rest)
        .await
        .with_context(|| format!("while resolving {rest}"))?
        .next()
        .with_context(|| format!("{rest} resolves to no address"))
}

/// The name of the target `--grpc` adds.
pub const GRPC_TARGET: &str = "readstate-grpc";

fn grpc_description() -> String {
    "The same readstate server, data and operations as the `readstate` target, measured right after it over gRPC (readstate.v1.ReadStates, HTTP/2, one connection per worker); memory and population figures are those of `readstate`.".to_owned()
}

/// Measures the readstate target and, with `--grpc`, the same server over gRPC
/// into `over_grpc`.
async fn bench_readstate(
    ctx: &Ctx,
    over_grpc: &mut Option<TargetResult>,
) -> Result<TargetResult, Failure> {
    let description = match (&ctx.args.url, ctx.args.storage) {
        (Some(url), _) => format!("readstate over HTTP/1.1 at {url} (an existing server)."),
        (None, storage) => format!(
            "readstate over HTTP/1.1, started by the bench on {} storage with {} durability (group commit) and cache.max_bytes = {}.{}",
            match storage {
                BenchStorage::Sqlite => "SQLite",
                BenchStorage::Postgres => "PostgreSQL",
            },
            match ctx.args.durability {
                BenchDurability::Sync => "sync",
                BenchDurability::Async => "async",
            },
            ctx.args.cache_max_bytes,
            ctx.args
                .server_config
                .as_ref()
                .map(|c| format!(" Its other settings: {}.", c.display()))
                .unwrap_or_default()
        ),
    };
    let mut result = TargetResult {
        description: description.clone(),
        ..TargetResult::default()
    };
    let outcome = readstate_inner(ctx, &mut result, over_grpc).await;
    match outcome {
        Ok(()) => Ok(result),
        Err(e) => Err((description, e)),
    }
}

async fn readstate_inner(
    ctx: &Ctx,
    result: &mut TargetResult,
    over_grpc: &mut Option<TargetResult>,
) -> anyhow::Result<()> {
    let marker_name = match ctx.args.storage {
        BenchStorage::Sqlite => "readstate-sqlite",
        BenchStorage::Postgres => "readstate-postgres",
    };
    let Some(url) = &ctx.args.url else {
        let (storage_url, has_data) = prepare_readstate_storage(ctx, marker_name).await?;
        let mut cmd = self_command()?;
        cmd.arg("serve")
            .env("READSTATE_HTTP__ADDR", "127.0.0.1:0")
            .env("READSTATE_STORAGE__URL", &storage_url)
            .env(
                "READSTATE_STORAGE__DURABILITY",
                match ctx.args.durability {
                    BenchDurability::Sync => "sync",
                    BenchDurability::Async => "async",
                },
            )
            .env("READSTATE_CACHE__MAX_BYTES", &ctx.args.cache_max_bytes)
            .env("READSTATE_LOG__FORMAT", "json")
            .env("READSTATE_LOG__FILTER", "info");
        if let Some(config) = &ctx.args.server_config {
            cmd.env("READSTATE_CONFIG", config);
        }
        if ctx.args.grpc {
            cmd.env("READSTATE_GRPC__ADDR", "127.0.0.1:0");
        }
        let mut server = ServerProcess::start(cmd, START_TIMEOUT)
            .await
            .context("while starting `readstate serve`")?;
        let grpc_addr = if ctx.args.grpc {
            Some(
                server
                    .logged_addr(grpc_listening_addr, START_TIMEOUT)
                    .await
                    .context("the server logged no gRPC address")?,
            )
        } else {
            None
        };
        let memory = MemoryProbe::Pid(server.pid());
        let mut cpu = CpuProbe::process(server.pid(), "the readstate server");
        if ctx.args.storage == BenchStorage::Postgres {
            match local_postgres(&ctx.args.postgres_url).await {
                Ok(postmaster) => {
                    cpu.sources.push(CpuSource::Tree(postmaster));
                    cpu.basis.push_str(&format!(
                        ", plus the PostgreSQL server holding its data (the postmaster, pid {postmaster}, and all its processes; other databases' work on it counts too)"
                    ));
                }
                Err(why) => {
                    cpu = CpuProbe::none(format!(
                        "the PostgreSQL server holding readstate's data cannot be measured: {why:#}"
                    ));
                }
            }
        }
        let mut outcome = readstate_run(
            ctx,
            result,
            server.addr,
            &memory,
            &cpu,
            has_data,
            marker_name,
        )
        .await;
        if let (Ok(()), Some(addr)) = (&outcome, grpc_addr) {
            let mut grpc = TargetResult {
                description: grpc_description(),
                bytes_per_read_state: result.bytes_per_read_state,
                rss_bytes_per_read_state: result.rss_bytes_per_read_state,
                disk_bytes_per_read_state: result.disk_bytes_per_read_state,
                memory_basis: Some("the readstate target's (the same server and data)".into()),
                ..TargetResult::default()
            };
            outcome = measure(
                ctx,
                GRPC_TARGET,
                &Connector::Grpc(addr),
                &memory,
                &cpu,
                &mut grpc,
            )
            .await
            .context("while measuring over gRPC");
            *over_grpc = Some(match &outcome {
                Ok(()) => grpc,
                Err(e) => TargetResult::failed(grpc_description(), e),
            });
        }
        // A server that died explains every error after it: say so, with its log.
        if server.has_exited() {
            let why = outcome
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("the run went on"));
            return Err(why.context(format!(
                "the readstate server exited during the run ({}); its last log lines:\n{}",
                server.exit_status(),
                server.recent_log()
            )));
        }
        outcome?;
        return server
            .stop(STOP_GRACE)
            .await
            .context("while stopping the server");
    };
    if ctx.args.grpc {
        let why = anyhow::anyhow!(
            "--grpc measures the server the bench starts; with --url its gRPC address is not known"
        );
        *over_grpc = Some(TargetResult::failed(grpc_description(), &why));
    }
    let addr = resolve(url).await?;
    client::HttpClient::connect(addr)
        .await
        .with_context(|| format!("readstate at {url} is not reachable"))?;
    readstate_run(
        ctx,
        result,
        addr,
        &MemoryProbe::Metrics(addr, readstate::metrics::PROCESS_RSS),
        &CpuProbe::none(
            "not measured: an existing server (--url), whose process the bench does not know",
        ),
        ctx.args.reuse,
        marker_name,
    )
    .await
}

/// A fresh (or, with `--reuse`, the previous) storage for the readstate server:
/// its URL, and whether it holds a populated data set.
async fn prepare_readstate_storage(ctx: &Ctx, marker_name: &str) -> anyhow::Result<(String, bool)> {
    Ok(match ctx.args.storage {
        BenchStorage::Sqlite => {
            let dir = ctx.dir.join("readstate");
            let db = dir.join("readstate.db");
            let has_data = ctx.args.reuse && db.exists() && ctx.read_marker(marker_name).is_some();
            if !has_data {
                ctx.forget_marker(marker_name);
                let _ = std::fs::remove_dir_all(&dir);
            }
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("while creating {}", dir.display()))?;
            (format!("sqlite://{}", db.display()), has_data)
        }
        BenchStorage::Postgres => {
            let db = ctx.readstate_database();
            let has_data = ctx.args.reuse
                && pg::database_exists(&ctx.args.postgres_url, &db).await?
                && ctx.read_marker(marker_name).is_some();
            if !has_data {
                ctx.forget_marker(marker_name);
                pg::recreate_database(&ctx.args.postgres_url, &db).await?;
            }
            (pg::database_url(&ctx.args.postgres_url, &db), has_data)
        }
    })
}

/// Populates (or, over reused data, loads) and measures the readstate at `addr`.
async fn readstate_run(
    ctx: &Ctx,
    result: &mut TargetResult,
    addr: SocketAddr,
    memory: &MemoryProbe,
    cpu: &CpuProbe,
    reused: bool,
    marker_name: &str,
) -> anyhow::Result<()> {
    let name = "readstate";
    let states = ctx.dataset.read_states();
    let external = ctx.args.url.is_some();
    // Both of readstate's memory figures: what its cache counts (against
    // `cache.max_bytes`) and what the process holds resident.
    let counted = MemoryProbe::Metrics(addr, readstate::metrics::CACHE_BYTES);
    if !reused {
        let before = memory.sample().await;
        let counted_before = counted.sample().await;
        let started = Instant::now();
        let pushback =
            populate::populate_http(addr, &ctx.dataset, ctx.args.populate_connections, name)
                .await
                .context("while populating readstate over its batch API")?;
        let seconds = started.elapsed().as_secs_f64();
        let after = settled(memory).await;
        let counted_after = counted.sample().await;
        let rss_bytes = per_state(before, after, states);
        let bytes = per_state(counted_before, counted_after, states);
        result.population = Some(Population {
            retries: pushback.retries,
            retry_wait_s: pushback.retry_wait_s,
            ..Population::new(false, Some(seconds), states, before, after)
        });
        result.bytes_per_read_state = bytes;
        result.rss_bytes_per_read_state = rss_bytes;
        result.memory_basis = Some(format!(
            "bytes_per_read_state: growth of readstate_cache_bytes (the server's /metrics: the bytes its cache counts against cache.max_bytes) over the population, divided by the read states; rss_bytes_per_read_state: growth of {}, divided by the read states",
            if external {
                "readstate_process_resident_bytes (the server's /metrics) over the population"
            } else {
                "the server's resident set (VmRSS, everything included: cache, allocator slack, SQLite page cache) from start to the settled figure after the population"
            }
        ));
        if !external {
            ctx.write_marker(
                marker_name,
                &Marker {
                    seconds,
                    bytes_per_read_state: bytes,
                    rss_bytes_per_read_state: rss_bytes,
                },
            )?;
        }
    } else if external {
        result.population = Some(Population {
            reused: true,
            read_states: states,
            ..Population::default()
        });
        result.memory_basis = Some("not measured: an existing server with --reuse".into());
    } else {
        // Reused data: the restarted server's cache is empty; reading every user
        // once loads it, and the growth over that read is the memory figure.
        let before = memory.sample().await;
        let counted_before = counted.sample().await;
        let pushback = populate::read_every_user(
            addr,
            ctx.dataset.shape.users,
            ctx.args.populate_connections.max(ctx.args.connections),
            name,
        )
        .await
        .context("while loading every user into the cache")?;
        let after = settled(memory).await;
        let counted_after = counted.sample().await;
        result.population = Some(Population {
            retries: pushback.retries,
            retry_wait_s: pushback.retry_wait_s,
            ..Population::new(true, None, states, before, after)
        });
        result.bytes_per_read_state = per_state(counted_before, counted_after, states);
        result.rss_bytes_per_read_state = per_state(before, after, states);
        result.memory_basis = Some(
            "bytes_per_read_state: growth of readstate_cache_bytes (the bytes the cache counts against cache.max_bytes), rss_bytes_per_read_state: growth of the server's resident set (VmRSS), each while reading every user's read states into its cache after a restart (--reuse), divided by the read states".into(),
        );
    }
    if ctx.args.storage == BenchStorage::Sqlite && !external {
        let db = ctx.dir.join("readstate").join("readstate.db");
        let size: u64 = ["", "-wal"]
            .iter()
            .filter_map(|suffix| {
                std::fs::metadata(format!("{}{suffix}", db.display()))
                    .ok()
                    .map(|m| m.len())
            })
            .sum();
        result.disk_bytes_per_read_state = (size > 0).then(|| size as f64 / states as f64);
    }
    measure(ctx, name, &Connector::Http(addr), memory, cpu, result).await
}

async fn bench_floor(ctx: &Ctx) -> Result<TargetResult, Failure> {
    let description = "An empty handler: the bench's routes answered with constant bodies of readstate's shape and size, on readstate's HTTP stack (accept loop, request metrics, body limit, timeout, in-flight limits). The ceiling request handling alone allows.".to_owned();
    let mut result = TargetResult {
        description: description.clone(),
        memory_basis: Some("not applicable: the floor holds no state".into()),
        ..TargetResult::default()
    };
    let run = async {
        let mut cmd = self_command()?;
        cmd.args([
            "bench-floor",
            "--addr",
            "127.0.0.1:0",
            "--states-per-user",
            &ctx.dataset.per_user().to_string(),
        ]);
        let server = ServerProcess::start(cmd, START_TIMEOUT)
            .await
            .context("while starting `readstate bench-floor`")?;
        let memory = MemoryProbe::Pid(server.pid());
        let cpu = CpuProbe::process(server.pid(), "the floor server");
        measure(
            ctx,
            "floor",
            &Connector::Http(server.addr),
            &memory,
            &cpu,
            &mut result,
        )
        .await?;
        server
            .stop(STOP_GRACE)
            .await
            .context("while stopping the floor")
    };
    match run.await {
        Ok(()) => Ok(result),
        Err(e) => Err((description, e)),
    }
}

async fn bench_redis(ctx: &Ctx) -> Result<TargetResult, Failure> {
    let description = format!(
        "The same operations as Lua scripts on the Redis at {} (a hash per user, sorted sets of recent message ids per channel and of mention ids per read state, the same caps), one EVALSHA per operation over multiplexed connections (one per 16 workers); persistence as that server is configured.",
        ctx.args.redis_url
    );
    let mut result = TargetResult {
        description: description.clone(),
        ..TargetResult::default()
    };
    let run = RedisRun {
        name: "redis",
        url: ctx.args.redis_url.clone(),
        reuse: ctx.args.reuse,
        cpu: None,
    };
    match redis_inner(ctx, &mut result, run).await {
        Ok(()) => Ok(result),
        Err(e) => Err((description, e)),
    }
}

/// The `redis-aof-*` targets: the `redis` target's scripts and population on a
/// redis-server of the bench's own, persisting every write to its append-only
/// file, fsynced as `fsync` says.
async fn bench_redis_aof(
    ctx: &Ctx,
    target: BenchTarget,
    fsync: Fsync,
) -> Result<TargetResult, Failure> {
    let name = target.name();
    let program = ctx.args.redis_server.display().to_string();
    let what = match fsync {
        Fsync::Always => {
            "every write is in the append-only file and fsynced before Redis answers it (one fsync per event-loop turn, shared by the writes of that turn): the durability of readstate's `sync` mode"
        }
        Fsync::Everysec => {
            "every write is in the append-only file before Redis answers it and the file is fsynced once a second, so a crash of the machine loses up to about a second of writes: the durability of readstate's `async` mode"
        }
    };
    let description = format!(
        "The same Lua scripts, operations and population as `redis`, on a redis-server the bench starts itself ({program} on 127.0.0.1, a fresh directory, appendonly yes, appendfsync {}, save \"\": no RDB snapshots, every other setting at Redis' default): {what}.",
        fsync.name()
    );
    let mut result = TargetResult {
        description: description.clone(),
        ..TargetResult::default()
    };
    match redis_aof_inner(ctx, &mut result, name, fsync).await {
        Ok(()) => Ok(result),
        Err(e) => Err((description, e)),
    }
}

async fn redis_aof_inner(
    ctx: &Ctx,
    result: &mut TargetResult,
    name: &'static str,
    fsync: Fsync,
) -> anyhow::Result<()> {
    let dir = ctx.dir.join(name);
    redis_server::check_own_dir(&dir)?;
    let reuse = ctx.args.reuse && redis_server::has_data(&dir) && ctx.read_marker(name).is_some();
    if !reuse {
        ctx.forget_marker(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("while emptying {}", dir.display()))?;
        }
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("while creating {}", dir.display()))?;
    let started = RedisServer::start(&ctx.args.redis_server, &dir, fsync, START_TIMEOUT).await;
    let mut server = match started {
        Ok(server) => server,
        Err(e) => {
            if !ctx.args.reuse {
                let _ = std::fs::remove_dir_all(&dir);
            }
            return Err(e);
        }
    };
    result.server = Some(ServerInfo {
        program: ctx.args.redis_server.display().to_string(),
        pid: server.pid(),
        version: None,
        dir: server.dir.display().to_string(),
        args: server.args.clone(),
    });
    let run = RedisRun {
        name,
        url: server.url.clone(),
        reuse,
        cpu: Some(CpuProbe::process(
            server.pid(),
            "the redis-server the bench started",
        )),
    };
    let outcome = redis_inner(ctx, result, run).await;
    // A server that died explains every error after it: say so, with its log.
    let outcome = match server.death() {
        Some(death) => Err(outcome
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("the run went on"))
            .context(death)),
        None => outcome,
    };
    let stopped = server.stop(STOP_GRACE).await;
    if !ctx.args.reuse {
        // The data goes with its marker: a later --reuse populates again.
        ctx.forget_marker(name);
        if dir.exists()
            && let Err(e) = std::fs::remove_dir_all(&dir)
        {
            eprintln!("{name}: could not remove {}: {e}", dir.display());
        }
    }
    outcome?;
    stopped
}

/// One Redis target's run.
struct RedisRun {
    /// The target's name (live table, population marker).
    name: &'static str,
    url: String,
    /// Whether the data of an earlier population may be reused (with its marker).
    reuse: bool,
    /// The server's CPU; `None`: find the server's process from `INFO server`.
    cpu: Option<CpuProbe>,
}

/// The CPU probe of a Redis the bench did not start: its `INFO server`
/// `process_id`, when the URL points at this machine and that pid is a redis-server.
async fn shared_redis_cpu(url: &str, target: &RedisTarget) -> CpuProbe {
    let local = match ::redis::Client::open(url).map(|c| c.get_connection_info().addr().clone()) {
        Ok(
            ::redis::ConnectionAddr::Tcp(host, _) | ::redis::ConnectionAddr::TcpTls { host, .. },
        ) => cpu::is_local_host(&host),
        Ok(::redis::ConnectionAddr::Unix(_)) => true,
        _ => false,
    };
    if !local {
        return CpuProbe::none(format!(
            "not measured: the Redis at {url} is not on this machine"
        ));
    }
    let pid = match target.server_process().await {
        Ok((pid, _)) => pid,
        Err(e) => return CpuProbe::none(format!("not measured: {e:#}")),
    };
    if !cpu::comm_of(pid).is_some_and(|c| c.starts_with("redis")) {
        return CpuProbe::none(format!(
            "not measured: INFO server names process {pid}, which is not a redis-server this machine can see (a container?)"
        ));
    }
    let mut probe = CpuProbe::process(pid, &format!("the Redis server at {url}"));
    probe
        .basis
        .push_str("; it is shared, so other clients' work in the phase counts too");
    probe
}

async fn redis_inner(ctx: &Ctx, result: &mut TargetResult, run: RedisRun) -> anyhow::Result<()> {
    let RedisRun {
        name,
        url,
        reuse,
        cpu,
    } = run;
    let prefix = ctx.redis_prefix();
    let target = RedisTarget::connect(&url, &prefix, UNREAD_CAP, MENTION_CAP)
        .await
        .with_context(|| format!("Redis at {url} is not reachable"))?;
    if let Ok((_, version)) = target.server_process().await {
        result.description.push_str(&format!(" Redis {version}."));
        if let Some(server) = &mut result.server {
            server.version = Some(version);
        }
    }
    let cpu = match cpu {
        Some(cpu) => cpu,
        None => shared_redis_cpu(&url, &target).await,
    };
    let states = ctx.dataset.read_states();
    let marker = if reuse { ctx.read_marker(name) } else { None };
    match marker {
        Some(marker) => {
            result.population = Some(Population {
                reused: true,
                seconds: None,
                read_states: states,
                ..Population::default()
            });
            result.bytes_per_read_state = marker.bytes_per_read_state;
            result.rss_bytes_per_read_state = marker.rss_bytes_per_read_state;
            result.memory_basis = Some(
                "growth of Redis used_memory (and of used_memory_rss) over the population, divided by the read states (measured by the run that populated; reused)".into(),
            );
        }
        None => {
            ctx.forget_marker(name);
            target.clear().await.context("while clearing old keys")?;
            let rss = MemoryProbe::RedisRss(target.clone());
            let before = target.used_memory().await.ok();
            let rss_before = rss.sample().await;
            let started = Instant::now();
            populate_redis(&target, &ctx.dataset, name).await?;
            let seconds = started.elapsed().as_secs_f64();
            let after = target.used_memory().await.ok();
            let rss_after = settled(&rss).await;
            let bytes = per_state(before, after, states);
            let rss_bytes = per_state(rss_before, rss_after, states);
            result.population = Some(Population {
                rss_before_bytes: rss_before,
                rss_after_bytes: rss_after,
                ..Population::new(false, Some(seconds), states, before, after)
            });
            result.bytes_per_read_state = bytes;
            result.rss_bytes_per_read_state = rss_bytes;
            result.memory_basis = Some(
                "growth of Redis used_memory (INFO memory: allocated bytes, without allocator fragmentation) over the population, divided by the read states; rss_bytes_per_read_state is the growth of used_memory_rss (the process's resident set, fragmentation included, read once it settles)".into(),
            );
            ctx.write_marker(
                name,
                &Marker {
                    seconds,
                    bytes_per_read_state: bytes,
                    rss_bytes_per_read_state: rss_bytes,
                },
            )?;
        }
    }
    let connector = Connector::Redis {
        url,
        prefix,
        unread_cap: UNREAD_CAP,
        mention_cap: MENTION_CAP,
    };
    measure(
        ctx,
        name,
        &connector,
        &MemoryProbe::Redis(target),
        &cpu,
        result,
    )
    .await
}

async fn populate_redis(target: &RedisTarget, data: &Dataset, name: &str) -> anyhow::Result<()> {
    const CHANNEL_CHUNK: usize = 5_000;
    const STATE_CHUNK: usize = 50_000;
    let channels = data.shape.channels as usize;
    let bar = populate::bar(channels as u64, &format!("{name}: populate messages"));
    let ids: Vec<u64> = data.initial_message_ids().collect();
    let mut from = 0;
    while from < channels {
        let to = (from + CHANNEL_CHUNK).min(channels);
        let chunk: Vec<(u64, Vec<u64>)> = (from..to)
            .map(|c| (Dataset::channel_id(c), ids.clone()))
            .collect();
        target
            .load_channels(&chunk)
            .await
            .context("while loading channels into Redis")?;
        bar.inc((to - from) as u64);
        from = to;
    }
    bar.finish_and_clear();
    let bar = populate::bar(data.read_states(), &format!("{name}: populate read states"));
    let mut chunk = Vec::with_capacity(STATE_CHUNK);
    for row in data.read_state_rows() {
        chunk.push(row);
        if chunk.len() == STATE_CHUNK {
            target
                .load_read_states(&chunk)
                .await
                .context("while loading read states into Redis")?;
            bar.inc(chunk.len() as u64);
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        target
            .load_read_states(&chunk)
            .await
            .context("while loading read states into Redis")?;
    }
    bar.finish_and_clear();
    Ok(())
}

async fn bench_postgres(ctx: &Ctx) -> Result<TargetResult, Failure> {
    let description = format!(
        "One SQL statement per operation on the PostgreSQL at {} (no cache, synchronous_commit on): upserts for ack and mark unread, one CTE statement for a message with its mentions, LATERAL counts cut at cap + 1 for read states and summary; primary-key indexes on read_states(user_id, channel_id), messages(channel_id, message_id), mentions(user_id, channel_id, message_id). A pool of --connections connections.",
        ctx.args.postgres_url
    );
    let mut result = TargetResult {
        description: description.clone(),
        memory_basis: Some(
            "not applicable: PostgreSQL keeps the state on disk (see disk_bytes_per_read_state = pg_database_size / read states)".into(),
        ),
        ..TargetResult::default()
    };
    match postgres_inner(ctx, &mut result).await {
        Ok(()) => Ok(result),
        Err(e) => Err((description, e)),
    }
}

async fn postgres_inner(ctx: &Ctx, result: &mut TargetResult) -> anyhow::Result<()> {
    let base = &ctx.args.postgres_url;
    let db = ctx.direct_database();
    let states = ctx.dataset.read_states();
    let connections = u32::try_from(ctx.args.connections).unwrap_or(u32::MAX);
    let mut reused = false;
    if ctx.args.reuse
        && pg::database_exists(base, &db).await?
        && ctx.read_marker("postgres-direct").is_some()
    {
        let pg =
            pg::PgDirect::connect(&pg::database_url(base, &db), 2, UNREAD_CAP, MENTION_CAP).await?;
        reused = pg.has_schema().await?;
        pg.close().await;
    }
    if !reused {
        ctx.forget_marker("postgres-direct");
        pg::recreate_database(base, &db).await?;
    }
    let pg = pg::PgDirect::connect(
        &pg::database_url(base, &db),
        connections,
        UNREAD_CAP,
        MENTION_CAP,
    )
    .await?;
    if reused {
        result.population = Some(Population {
            reused: true,
            read_states: states,
            ..Population::default()
        });
    } else {
        let rows = u64::from(ctx.dataset.shape.channels)
            * u64::from(ctx.dataset.shape.messages_per_channel)
            + states;
        let bar = populate::bar(rows, "postgres-direct: COPY");
        let started = Instant::now();
        pg.populate(&ctx.dataset, &|done| bar.set_position(done))
            .await
            .context("while loading the data set with COPY")?;
        bar.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        result.population = Some(Population::new(false, Some(seconds), states, None, None));
        ctx.write_marker(
            "postgres-direct",
            &Marker {
                seconds,
                bytes_per_read_state: None,
                rss_bytes_per_read_state: None,
            },
        )?;
    }
    let size = pg.database_bytes().await?;
    result.disk_bytes_per_read_state = Some(size as f64 / states as f64);
    let cpu = match local_postgres(base).await {
        Ok(postmaster) => CpuProbe {
            sources: vec![CpuSource::Tree(postmaster)],
            basis: format!(
                "utime + stime from /proc of the PostgreSQL server: the postmaster (pid {postmaster}), its live children (the pool's backends, WAL writer, checkpointer, …) and its exited children; other databases' work on that server counts too"
            ),
        },
        Err(why) => CpuProbe::none(format!("not measured: {why:#}")),
    };
    let measured = measure(
        ctx,
        "postgres-direct",
        &Connector::Postgres(pg.clone()),
        &MemoryProbe::None,
        &cpu,
        result,
    )
    .await;
    pg.close().await;
    measured
}

/// The postmaster's pid of the PostgreSQL at `base` when it runs on this machine.
///
/// # Errors
/// Why it cannot be found: a remote server, or a backend pid this machine cannot
/// see (a container).
async fn local_postgres(base: &str) -> anyhow::Result<u32> {
    let host = pg::host_of(base)?;
    if !cpu::is_local_host(&host) {
        bail!("the PostgreSQL at {host} is not on this machine");
    }
    let backend = pg::backend_pid(base).await?;
    cpu::postmaster_of(backend).with_context(|| {
        format!("PostgreSQL's backend pid {backend} is not a postgres process this machine can see (a container?)")
    })
}

/// Drops what this run's namespace created (best effort; problems are printed).
async fn cleanup(ctx: &Ctx) {
    let base = &ctx.args.postgres_url;
    for target in &ctx.args.targets {
        let outcome = match target {
            BenchTarget::Readstate
                if ctx.args.storage == BenchStorage::Postgres && ctx.args.url.is_none() =>
            {
                pg::drop_database(base, &ctx.readstate_database()).await
            }
            BenchTarget::PostgresDirect => pg::drop_database(base, &ctx.direct_database()).await,
            BenchTarget::Redis => match RedisTarget::connect(
                &ctx.args.redis_url,
                &ctx.redis_prefix(),
                UNREAD_CAP,
                MENTION_CAP,
            )
            .await
            {
                Ok(redis) => redis.clear().await,
                Err(e) => Err(e),
            },
            _ => Ok(()),
        };
        if let Err(e) = outcome {
            eprintln!("cleanup of {}: {e:#}", target.name());
        }
    }
    if ctx.dir.exists()
        && let Err(e) = std::fs::remove_dir_all(&ctx.dir)
    {
        eprintln!("cleanup of {}: {e}", ctx.dir.display());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations_with_units() {
        assert_eq!(parse_duration("3s").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("2.5").unwrap(), Duration::from_millis(2500));
        assert!(parse_duration("3 days").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn the_durable_redis_targets_and_their_program_are_options() {
        use clap::Parser;

        #[derive(Parser)]
        struct Bench {
            #[command(flatten)]
            args: BenchArgs,
        }
        let args = Bench::try_parse_from([
            "bench",
            "--targets",
            "redis-aof-always,redis-aof-everysec",
            "--redis-server",
            "/opt/redis/bin/redis-server",
        ])
        .unwrap()
        .args;

        assert_eq!(
            args.targets,
            [BenchTarget::RedisAofAlways, BenchTarget::RedisAofEverysec]
        );
        assert_eq!(
            args.targets.iter().map(|t| t.name()).collect::<Vec<_>>(),
            ["redis-aof-always", "redis-aof-everysec"]
        );
        assert_eq!(
            args.redis_server,
            PathBuf::from("/opt/redis/bin/redis-server")
        );
        let default = Bench::try_parse_from(["bench"]).unwrap().args;
        assert_eq!(default.redis_server, PathBuf::from("redis-server"));
        for name in ["redis-aof-always", "redis-aof-everysec"] {
            assert!(report::TARGET_NAMES.contains(&name));
        }
    }

    #[test]
    fn memory_per_state_needs_growth() {
        assert_eq!(per_state(Some(100), Some(1100), 10), Some(100.0));
        assert_eq!(per_state(Some(100), Some(90), 10), None);
        assert_eq!(per_state(None, Some(90), 10), None);
    }
}
