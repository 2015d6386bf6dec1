//! Command-line interface definitions (clap derive); the binary decides what each command does.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use readstate::config::{CONFIG_PATH_ENV, LogFormat};
pub use readstate_bench::args::{BenchArgs, FloorArgs};

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
    /// TOML config file for serve, migrate, check-config, backup and restore; `READSTATE_*`
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
            Command::Backup(args) => args.config.config.clone(),
            Command::Restore(args) => args.config.config.clone(),
            Command::Bench(_) | Command::BenchFloor(_) | Command::ApiKey(_) => None,
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
    /// Back up a SQLite deployment, commit log included, into one file while it serves.
    ///
    /// Writes a consistent backup of the configured SQLite database, with every write
    /// acknowledged before the command started (including those only in the commit
    /// log so far), to one new SQLite file, while the server keeps serving; see
    /// docs/OPERATIONS.md, "Backups". PostgreSQL is refused: use pg_dump or
    /// point-in-time recovery.
    Backup(BackupArgs),
    /// Restore a backup into an empty data directory.
    ///
    /// Checks the file (integrity, migrations, tables) and installs it as the
    /// configured SQLite database; refused (exit 64) when that database or commit log
    /// records already exist there.
    Restore(RestoreArgs),
    /// Manage API keys (`readstate api-key new --name NAME --scopes read,write`).
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),
    /// Measure readstate against an empty HTTP handler, Redis scripts and plain
    /// PostgreSQL on the same machine and load (see docs/BENCH.md); `--capacity`
    /// turns the results into a node and cost projection. Reads no service
    /// configuration: it configures the servers it starts itself.
    Bench(Box<BenchArgs>),
    /// The bench's `floor` target: constant answers on readstate's HTTP stack.
    #[command(hide = true)]
    BenchFloor(FloorArgs),
}

/// `readstate api-key ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum ApiKeyCommand {
    /// Print a fresh random key (once: only its SHA-256 goes in the configuration)
    /// and the `auth.api_keys` entry to paste. Reads no configuration.
    New(NewApiKeyArgs),
}

/// Options of `readstate api-key new`.
#[derive(Debug, Clone, Args)]
pub struct NewApiKeyArgs {
    /// The key's name, shown in logs and metrics (never the key itself).
    #[arg(long)]
    pub name: String,
    /// What the key may do, comma-separated: read, write, admin.
    #[arg(long, value_delimiter = ',', required = true)]
    pub scopes: Vec<String>,
}

/// The configuration file option of the commands that read the configuration.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigArgs {
    /// TOML config file; `READSTATE_*` environment variables override it.
    #[arg(long, value_name = "FILE", env = CONFIG_PATH_ENV)]
    pub config: Option<PathBuf>,
}

/// Options of `readstate backup`.
#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// The configuration file (the same as `serve`'s: it names the database and its
    /// commit log).
    #[command(flatten)]
    pub config: ConfigArgs,

    /// The backup file to write; it must not exist (its directory is created).
    #[arg(long, value_name = "FILE")]
    pub to: PathBuf,
}

/// Options of `readstate restore`.
#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// The configuration file; the backup is restored as its SQLite `storage.url`.
    #[command(flatten)]
    pub config: ConfigArgs,

    /// The backup file (written by `readstate backup`).
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
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
    use readstate_bench::args::BenchTarget;
    use readstate_bench::dataset::Preset;
    use std::path::Path;
    use std::time::Duration;

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
    fn parses_backup_and_restore() {
        let cli =
            Cli::try_parse_from(["readstate", "backup", "--to", "b.db", "--config", "d.toml"])
                .unwrap();
        let (command, config) = cli.into_parts();
        assert_eq!(config, Some(PathBuf::from("d.toml")));
        match command {
            Command::Backup(args) => assert_eq!(args.to, PathBuf::from("b.db")),
            other => panic!("unexpected {other:?}"),
        }
        let (command, _) = Cli::try_parse_from(["readstate", "restore", "--from", "b.db"])
            .unwrap()
            .into_parts();
        assert!(matches!(command, Command::Restore(args) if args.from == Path::new("b.db")));
        assert!(Cli::try_parse_from(["readstate", "backup"]).is_err());
        assert!(Cli::try_parse_from(["readstate", "restore"]).is_err());
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
