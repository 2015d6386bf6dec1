//! The `readstate` binary: parse the command line, dispatch, map the result to an
//! exit code (64 for a bad configuration or a refused backup/restore, 1 for a failure).

use std::process::ExitCode;

use clap::Parser;
mod cli;

use cli::{Cli, Command};
use readstate::{app, backup, config, telemetry};
use readstate_bench as bench;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's start-up options (its `malloc_conf`; `_RJEM_MALLOC_CONF` in the
/// environment still overrides them): one arena per CPU instead of four, which an
/// idle node's scattered first allocations each touch a page of (1 MB less RSS at
/// start on 2 cores), with threads taking the arena of the CPU they run on.
/// Background purging is turned on once the node is ready (`footprint.rs`).
#[allow(unsafe_code)]
// SAFETY: jemalloc reads this symbol once, at its initialisation, as a `const char *`
// to a NUL-terminated option string. `&u8` has the layout of a thin pointer, and it
// points at the first byte of a `'static` byte string that ends in NUL and is never
// written; nothing else in the program defines the symbol.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &u8 = &b"percpu_arena:percpu\0"[0];

/// EX_USAGE: the configuration is invalid, or `backup`/`restore` refused.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    // Before any thread starts and before anything uses SQLite, which is when SQLite
    // accepts an allocator: its page caches and statement buffers then come from
    // jemalloc, and what it frees goes back to the system with everything else.
    readstate::store::sqlite::use_jemalloc();
    let (command, config_path) = Cli::parse().into_parts();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("readstate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The bench reads no service configuration (it configures the servers it starts
    // itself), so stray READSTATE_* variables, e.g. the test suite's, cannot stop it.
    let command = match command {
        Command::Bench(args) => {
            return exit_code(if args.capacity.capacity {
                bench::capacity::run(&args.capacity)
            } else {
                runtime.block_on(bench::run(*args))
            });
        }
        Command::BenchFloor(args) => {
            return exit_code(
                runtime.block_on(bench::floor::serve(args.addr, args.states_per_user)),
            );
        }
        Command::ApiKey(cli::ApiKeyCommand::New(args)) => {
            return match new_api_key(&args) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("readstate: {e}");
                    ExitCode::from(EXIT_CONFIG)
                }
            };
        }
        command => command,
    };
    let settings = match config::load_from(config_path.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("readstate: invalid configuration: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let result = match command {
        Command::CheckConfig(_) => {
            match serde_json::to_string_pretty(&settings) {
                Ok(json) => println!("{json}"),
                Err(e) => eprintln!("readstate: cannot print the configuration: {e}"),
            }
            eprintln!("configuration ok");
            Ok(())
        }
        Command::Migrate(_) => {
            telemetry::init(settings.log.format, &settings.log.filter);
            runtime.block_on(async {
                let store = app::open_store(&settings).await?;
                store.close().await;
                tracing::info!(storage = %settings.storage.url, "migrations applied");
                Ok(())
            })
        }
        Command::Backup(args) => {
            // The command reports its own progress, the library only warnings. The
            // commit log it replays is a copy, whose torn tail is expected and reported
            // in the progress; a corrupt copy fails the command with the error.
            telemetry::init(settings.log.format, "warn,readstate::wal=error");
            let outcome = runtime.block_on(backup::backup(&settings, &args.to, &mut |line| {
                eprintln!("readstate backup: {line}");
            }));
            return backup_exit(outcome.map(|r| {
                eprintln!(
                    "readstate backup: wrote {} ({} bytes) in {:.1} s: {}; {} commit log record(s) ({} writes) merged from {} segment(s)",
                    r.path.display(),
                    r.bytes,
                    r.took.as_secs_f64(),
                    r.rows,
                    r.log_records,
                    r.log_writes,
                    r.log_segments,
                );
            }));
        }
        Command::Restore(args) => {
            telemetry::init(settings.log.format, "warn");
            let outcome = runtime.block_on(backup::restore(&settings, &args.from, &mut |line| {
                eprintln!("readstate restore: {line}");
            }));
            return backup_exit(outcome.map(|r| {
                eprintln!(
                    "readstate restore: restored {} ({} bytes): {}; start readstate on it",
                    r.path.display(),
                    r.bytes,
                    r.rows,
                );
            }));
        }
        Command::Serve(args) => {
            telemetry::init(
                args.log_format.unwrap_or(settings.log.format),
                &settings.log.filter,
            );
            runtime.block_on(async {
                let shutdown = app::shutdown_on_signals();
                let app = app::App::build(settings).await?;
                app.run(shutdown).await
            })
        }
        // Answered before the configuration was loaded.
        Command::Bench(_) | Command::BenchFloor(_) | Command::ApiKey(_) => Ok(()),
    };
    exit_code(result)
}

/// `readstate api-key new`: a fresh key and the configuration entry that accepts it
/// (TOML and the `READSTATE_AUTH__API_KEYS` form), checked as `serve` checks it.
fn new_api_key(args: &cli::NewApiKeyArgs) -> Result<String, String> {
    use readstate::auth::keys;
    let key = keys::generate();
    let entry = config::ApiKeySettings {
        name: args.name.trim().to_owned(),
        key_sha256: keys::sha256_hex(&key),
        scopes: args.scopes.iter().map(|s| s.trim().to_owned()).collect(),
    };
    keys::ApiKeys::new(std::slice::from_ref(&entry)).map_err(|e| {
        let field = e.key.rsplit('.').next().unwrap_or_default();
        format!("--{field}: {}", e.message)
    })?;
    let toml_list = |items: &[String]| {
        items
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // The entry's own field order: name, key_sha256, scopes.
    let json = serde_json::to_string(&[&entry]).map_err(|e| e.to_string())?;
    Ok(format!(
        "API key (shown only now; give it to the service that calls readstate):\n\n  {key}\n\n\
         Add it to readstate's configuration file:\n\n\
         [[auth.api_keys]]\nname = {:?}\nkey_sha256 = \"{}\"\nscopes = [{}]\n\n\
         or, as the only key, to its environment:\n\n\
         READSTATE_AUTH__API_KEYS='{json}'\n",
        entry.name,
        entry.key_sha256,
        toml_list(&entry.scopes),
    ))
}

/// `backup` and `restore`: 64 when refused before anything was written (PostgreSQL, a
/// target that is not empty, a file that is not a readstate backup), 1 on a failure.
fn backup_exit(outcome: Result<(), backup::Error>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(backup::Error::Refused(why)) => {
            eprintln!("readstate: {why}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(backup::Error::Failed(e)) => exit_code(Err(e)),
    }
}

/// 0 on success; otherwise logs the error and answers 1.
fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "readstate failed");
            eprintln!("readstate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
