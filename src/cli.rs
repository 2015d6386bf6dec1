//! Command-line interface definitions (clap derive); the binary decides what each command does.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{CONFIG_PATH_ENV, LogFormat};

/// Read states for chat: last read message, exact unread and mention counts, read receipts.
#[derive(Debug, Clone, Parser)]
#[command(name = "readstate", version, about, propagate_version = true)]
pub struct Cli {
    /// TOML config file; `READSTATE_*` environment variables override it.
    #[arg(long, global = true, value_name = "FILE", env = CONFIG_PATH_ENV)]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the server (applies pending migrations first).
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Load and validate the configuration, print the effective settings, and exit.
    CheckConfig,
}

/// Options of `readstate serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
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
        assert_eq!(cli.config, Some(PathBuf::from("a.toml")));
        match cli.command {
            Command::Serve(args) => assert_eq!(args.log_format, Some(LogFormat::Json)),
            other => panic!("unexpected {other:?}"),
        }
        let cli = Cli::try_parse_from(["readstate", "check-config", "--config", "b.toml"]).unwrap();
        assert_eq!(cli.config, Some(PathBuf::from("b.toml")));
        assert!(matches!(cli.command, Command::CheckConfig));
        assert!(Cli::try_parse_from(["readstate", "serve", "--log-format", "xml"]).is_err());
    }
}
