//! Command-line interface definitions (clap derive); the binary decides what each command does.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::bench::capacity::CapacityArgs;
use crate::bench::dataset::Preset;
use crate::bench::mix::Mix;
use crate::bench::parse_duration;
use crate::config::{CONFIG_PATH_ENV, LogFormat};

/// What `readstate serve --help` (and `readstate --help`) says about where it serves
/// and how it is configured.
const SERVE_HELP: &str = "\
With no configuration, readstate serves HTTP on 127.0.0.1:8080 with embedded SQLite in
./readstate-data/; the live dashboard is at / and the API reference at /docs.

Every setting can come from the TOML file given by --config (or READSTATE_CONFIG) and
from READSTATE_<SECTION>__<KEY> environment variables, which win over the file, e.g.
READSTATE_HTTP__ADDR=0.0.0.0:8080 or READSTATE_STORAGE__URL=postgres://user@host/db.
`readstate check-config` prints the effective settings; config/readstate.example.toml
lists every key with its default.";

/// Read states for chat: last read message, exact unread and mention counts, read receipts.
///
/// Without a command, `readstate` runs the service, exactly like `readstate serve`.
#[derive(Debug, Clone, Parser)]
#[command(name = "readstate", version, about, long_about, propagate_version = true, after_help = SERVE_HELP)]
pub struct Cli {
    /// TOML config file for serve, migrate and check-config; `READSTATE_*`
    /// environment variables override it.
    #[arg(long, value_name = "FILE", env = CONFIG_PATH_ENV)]
    pub config: Option<PathBuf>,

    /// What to do; `serve` when none is given.
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// The command to run (`serve` when none was given) and the configuration file
    /// named before or after it.
    pub fn into_parts(self) -> (Command, Option<PathBuf>) {
        let command = self
            .command
            .unwrap_or_else(|| Command::Serve(ServeArgs::default()));
        let config = match &command {
            Command::Serve(args) => args.config.config.clone(),
            Command::Migrate(args) | Command::CheckConfig(args) => args.config.clone(),
            Command::Bench(_) | Command::BenchFloor(_) => None,
        }
        .or(self.config);
        (command, config)
    }
}

/// The subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the service (the default when no command is given): HTTP on `http.addr`
    /// (127.0.0.1:8080 unless configured); applies pending migrations first.
    #[command(after_help = SERVE_HELP)]
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate(ConfigArgs),
    /// Load and validate the configuration, print the effective settings, and exit.
    CheckConfig(ConfigArgs),
    /// Measure readstate against an empty HTTP handler, Redis scripts and plain
    /// PostgreSQL on the same machine and load (see docs/BENCH.md); `--capacity`
    /// turns the results into a node and cost projection. Reads no service
    /// configuration: it configures the servers it starts itself.
    Bench(Box<BenchArgs>),
    /// The bench's `floor` target: constant answers on readstate's HTTP stack.
    #[command(hide = true)]
    BenchFloor(FloorArgs),
}

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

/// The configuration file option of the commands that read the configuration.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigArgs {
    /// TOML config file; `READSTATE_*` environment variables override it.
    #[arg(long, value_name = "FILE", env = CONFIG_PATH_ENV)]
    pub config: Option<PathBuf>,
}

/// Options of `readstate serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// The configuration file.
    #[command(flatten)]
    pub config: ConfigArgs,

    /// Log format, overriding `log.format`.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_commands() {
        let cli = Cli::try_parse_from([
            "readstate",
            "--config",
            "a.toml",
            "serve",
            "--log-format",
            "json",
        ])
        .unwrap();
        let (command, config) = cli.into_parts();
        assert_eq!(config, Some(PathBuf::from("a.toml")));
        match command {
            Command::Serve(args) => assert_eq!(args.log_format, Some(LogFormat::Json)),
            other => panic!("unexpected {other:?}"),
        }
        let cli = Cli::try_parse_from(["readstate", "check-config", "--config", "b.toml"]).unwrap();
        let (command, config) = cli.into_parts();
        assert_eq!(config, Some(PathBuf::from("b.toml")));
        assert!(matches!(command, Command::CheckConfig(_)));
        assert!(Cli::try_parse_from(["readstate", "serve", "--log-format", "xml"]).is_err());
    }

    #[test]
    fn no_command_means_serve() {
        let (command, config) = Cli::try_parse_from(["readstate"]).unwrap().into_parts();
        assert!(matches!(command, Command::Serve(_)), "{command:?}");
        assert_eq!(config, None);
        let (command, config) = Cli::try_parse_from(["readstate", "--config", "c.toml"])
            .unwrap()
            .into_parts();
        assert!(matches!(command, Command::Serve(_)), "{command:?}");
        assert_eq!(config, Some(PathBuf::from("c.toml")));
    }

    #[test]
    fn help_says_what_serves_and_how_to_configure_it() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("like `readstate serve`"), "{help}");
        let mut cli = Cli::command();
        let serve = cli.find_subcommand_mut("serve").unwrap();
        let help = serve.render_long_help().to_string();
        assert!(help.contains("127.0.0.1:8080"), "{help}");
        assert!(help.contains("READSTATE_"), "{help}");
    }

    #[test]
    fn bench_help_is_grouped_and_has_no_config_option() {
        let mut cli = Cli::command();
        let bench = cli.find_subcommand_mut("bench").unwrap();
        let help = bench.render_long_help().to_string();
        assert!(!help.contains("--config"), "{help}");
        assert!(help.contains("docs/BENCH.md"), "{help}");
        assert!(help.contains("Capacity projection"), "{help}");
        assert!(help.contains("[default: smoke]"), "{help}");
    }

    #[test]
    fn parses_bench_options() {
        let cli = Cli::try_parse_from([
            "readstate",
            "bench",
            "--preset",
            "smoke",
            "--duration",
            "3s",
            "--targets",
            "readstate,postgres-direct",
            "--mix",
            "ack=1,summary=1",
            "--soak",
            "10m",
        ])
        .unwrap();

        let Some(Command::Bench(args)) = cli.command else {
            panic!("not bench: {:?}", cli.command)
        };
        assert_eq!(args.preset, Preset::Smoke);
        assert_eq!(args.duration, Duration::from_secs(3));
        assert_eq!(args.soak, Some(Duration::from_secs(600)));
        assert_eq!(
            args.targets,
            vec![BenchTarget::Readstate, BenchTarget::PostgresDirect]
        );
        assert_eq!(
            args.mix.to_string(),
            "ack=1,message=0,read_states=0,summary=1,unread=0"
        );
        assert_eq!(args.connections, 64);
        assert!(!args.capacity.capacity);
        assert!(Cli::try_parse_from(["readstate", "bench", "--targets", "mysql"]).is_err());
    }
}
