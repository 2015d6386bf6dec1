//! The `readstate` binary: parse the command line, dispatch, map the result to an
//! exit code (64 for a bad configuration, 1 for a failure).

use std::process::ExitCode;

use clap::Parser;
mod cli;

use cli::{Cli, Command};
use readstate::{app, config, telemetry};
use readstate_bench as bench;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// EX_USAGE: the configuration is invalid.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
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
