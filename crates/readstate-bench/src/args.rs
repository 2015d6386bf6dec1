//! The options of `readstate bench` and of the hidden `readstate bench-floor`
//! (the binary's command line embeds them; the bench needs nothing else from it).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::capacity::CapacityArgs;
use super::dataset::Preset;
use super::mix::Mix;
use super::parse_duration;

/// Options of `readstate bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Data set size: smoke (100 k read states, about a minute), medium (10 M, about
    /// 20 minutes on 2 cores), large (100 M).
    #[arg(long, value_enum, default_value_t = Preset::Smoke)]
    pub preset: Preset,

    /// Seed of the data set and of every operation stream.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Operation mix as name=weight pairs (ack, message, read_states, summary,
    /// unread); unnamed operations get 0.
    #[arg(
        long,
        value_name = "MIX",
        default_value = "ack=40,message=30,read_states=20,summary=8,unread=2"
    )]
    pub mix: Mix,

    /// Keep-alive connections (workers) per target.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub connections: usize,

    /// Length of the saturation and of the fixed-rate phase (`30s`, `2m`, `500ms`).
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Duration,

    /// Open-loop rate of the fixed-rate phase, ops/s, for every target; default
    /// half of each target's own saturation figure.
    #[arg(long, value_name = "OPS_PER_SEC")]
    pub rate: Option<f64>,

    /// Also run a long fixed-rate phase sampling latency and memory every second.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub soak: Option<Duration>,

    /// A closed-loop warm-up before measuring, not reported.
    #[arg(long, default_value = "0s", value_parser = parse_duration, value_name = "DURATION")]
    pub warmup: Duration,

    /// Targets to measure, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "readstate,floor,redis,postgres-direct"
    )]
    pub targets: Vec<BenchTarget>,

    /// Also measure the readstate server over gRPC (target `readstate-grpc`): the
    /// same server, data and operations, right after the HTTP measurement.
    #[arg(long)]
    pub grpc: bool,

    /// A TOML configuration file for the readstate server the bench starts (given
    /// to it as `READSTATE_CONFIG`), to compare settings on the same data. The
    /// bench's own settings (address, storage URL, durability, cache budget, log
    /// format) override what it says.
    #[arg(long, value_name = "FILE")]
    pub server_config: Option<PathBuf>,

    /// Measure an already running readstate (`http://host:port`) instead of
    /// starting one.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,

    /// Storage of the readstate server the bench starts.
    #[arg(long, value_enum, default_value_t = BenchStorage::Sqlite)]
    pub storage: BenchStorage,

    /// Durability of the readstate server the bench starts.
    #[arg(long, value_enum, default_value_t = BenchDurability::Sync)]
    pub durability: BenchDurability,

    /// `cache.max_bytes` of the readstate server the bench starts (large enough
    /// to hold the whole data set, like Redis).
    #[arg(long, default_value = "4GiB", value_name = "BYTES")]
    pub cache_max_bytes: String,

    /// The Redis of the `redis` target.
    #[arg(long, default_value = "redis://127.0.0.1:6379", value_name = "URL")]
    pub redis_url: String,

    /// The `redis-server` program the `redis-aof-always` and `redis-aof-everysec`
    /// targets start (a name looked up in PATH, or a path).
    #[arg(long, default_value = "redis-server", value_name = "PROGRAM")]
    pub redis_server: PathBuf,

    /// The PostgreSQL server of the `postgres-direct` target (and of readstate
    /// with `--storage postgres`); the bench creates its own databases there.
    #[arg(
        long,
        default_value = "postgres://postgres@127.0.0.1:5432/",
        value_name = "URL"
    )]
    pub postgres_url: String,

    /// Skip population when an earlier run with the same preset and seed (and
    /// namespace) left its data.
    #[arg(long)]
    pub reuse: bool,

    /// Names the data: database names, Redis key prefix, data directory
    /// (default `rsbench_<preset>_<seed>`).
    #[arg(long, value_name = "NAME")]
    pub namespace: Option<String>,

    /// Where readstate's SQLite data and the population markers live.
    #[arg(long, default_value = "bench-data", value_name = "DIR")]
    pub data_dir: PathBuf,

    /// Where `bench-results.json` and `bench-report.html` are written.
    #[arg(long, default_value = ".", value_name = "DIR")]
    pub out_dir: PathBuf,

    /// Drop the databases, Redis keys and data directory of this run at the end.
    #[arg(long)]
    pub cleanup: bool,

    /// Concurrent batch requests while populating readstate.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub populate_connections: usize,

    /// The capacity projection (`--capacity`) and its options.
    #[command(flatten)]
    pub capacity: CapacityArgs,
}

/// What `readstate bench` can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchTarget {
    /// readstate over HTTP.
    Readstate,
    /// An empty handler on the same HTTP stack.
    Floor,
    /// The same operations as Redis scripts, on the Redis at `--redis-url`.
    Redis,
    /// The Redis scripts on a redis-server the bench starts with `appendfsync
    /// always` (every write on disk before the answer, as readstate's `sync`).
    RedisAofAlways,
    /// The Redis scripts on a redis-server the bench starts with `appendfsync
    /// everysec` (writes on disk within a second, as readstate's `async`).
    RedisAofEverysec,
    /// One SQL statement per operation on PostgreSQL.
    PostgresDirect,
}

impl BenchTarget {
    /// The name in the results (`postgres-direct`).
    pub fn name(self) -> &'static str {
        match self {
            BenchTarget::Readstate => "readstate",
            BenchTarget::Floor => "floor",
            BenchTarget::Redis => "redis",
            BenchTarget::RedisAofAlways => "redis-aof-always",
            BenchTarget::RedisAofEverysec => "redis-aof-everysec",
            BenchTarget::PostgresDirect => "postgres-direct",
        }
    }
}

/// Storage of the bench's readstate server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchStorage {
    /// Embedded SQLite in the data directory.
    Sqlite,
    /// A fresh database on `--postgres-url`.
    Postgres,
}

/// Durability of the bench's readstate server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchDurability {
    /// Answer after commit.
    Sync,
    /// Answer after the in-memory apply.
    Async,
}

/// Options of the hidden `readstate bench-floor`.
#[derive(Debug, Clone, Args)]
pub struct FloorArgs {
    /// Address to listen on; port 0 picks a free port (logged as `listening addr=`).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub addr: SocketAddr,

    /// Read states in each constant read-states answer.
    #[arg(long, default_value_t = 10)]
    pub states_per_user: usize,
}
