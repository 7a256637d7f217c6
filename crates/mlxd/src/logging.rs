//! Logging: `tracing` to stderr, human-readable on a terminal and JSON
//! lines otherwise (services, workers' output captured by the supervisor
//! is read line by line). `MLXD_LOG` (or `RUST_LOG`) sets the filter,
//! default `info`; `MLXD_LOG_FORMAT=json|text` overrides the format.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber (once, at start).
pub fn init() {
    let filter = EnvFilter::try_from_env("MLXD_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match std::env::var("MLXD_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    // A subscriber set earlier (tests) stays.
    drop(result);
}
