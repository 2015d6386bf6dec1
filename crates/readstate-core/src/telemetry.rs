//! Logging setup: `tracing` to stderr, human-readable or JSON.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global `tracing` subscriber writing to stderr.
///
/// The filter comes from `RUST_LOG` when it is set and valid, else from `filter` (normally
/// `log.filter`), else `info`. `Auto` logs human-readable lines when stderr is a terminal and
/// JSON lines otherwise. Human-readable output is one line per event, so `listening addr=...`
/// stays greppable. Calling it again (as tests do) leaves the first subscriber in place.
pub fn init(format: LogFormat, filter: &str) {
    let (env_filter, bad_rust_log) = build_filter(filter);
    let is_terminal = std::io::stderr().is_terminal();
    let json = match format {
        LogFormat::Auto => !is_terminal,
        LogFormat::Json => true,
        LogFormat::Pretty => false,
    };

    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr);
    let installed = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
            .is_ok()
    } else {
        builder.with_ansi(is_terminal).try_init().is_ok()
    };

    if installed && let Some(error) = bad_rust_log {
        tracing::warn!(%error, fallback = filter, "ignoring invalid RUST_LOG");
    }
}

/// The filter to use, plus the parse error of `RUST_LOG` if it was set but invalid.
fn build_filter(filter: &str) -> (EnvFilter, Option<String>) {
    let mut bad_rust_log = None;
    if let Ok(rust_log) = std::env::var(EnvFilter::DEFAULT_ENV)
        && !rust_log.trim().is_empty()
    {
        match EnvFilter::builder().parse(&rust_log) {
            Ok(f) => return (f, None),
            Err(e) => bad_rust_log = Some(e.to_string()),
        }
    }
    let f = EnvFilter::builder()
        .parse(filter)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    (f, bad_rust_log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_twice_does_not_panic() {
        init(LogFormat::Json, "info");
        init(LogFormat::Pretty, "debug");
        init(LogFormat::Auto, "not a = valid filter");
        tracing::info!(addr = "127.0.0.1:0", "listening");
    }
}
