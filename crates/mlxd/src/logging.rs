//! Logging: `tracing` to stderr. The daemon takes its level and format
//! from the configuration (`[log]`); other commands from `MLXD_LOG` (or
//! `RUST_LOG`, default `info`) and `MLXD_LOG_FORMAT`, human-readable on a
//! terminal and JSON lines otherwise. A worker writes plain lines without
//! timestamps: the supervisor forwards them into the daemon's log, which
//! adds its own.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber (once, at start).
pub fn init(config: Option<&LogConfig>) {
    let filter = match config {
        Some(c) => EnvFilter::try_new(&c.level).unwrap_or_else(|_| EnvFilter::new("info")),
        None => EnvFilter::try_from_env("MLXD_LOG")
            .or_else(|_| EnvFilter::try_from_default_env())
            .unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let json = match (config, std::env::var("MLXD_LOG_FORMAT").as_deref()) {
        (Some(c), _) => c.format == LogFormat::Json,
        (None, Ok("json")) => true,
        (None, Ok("text")) => false,
        (None, _) => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // A subscriber set earlier stays.
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// The worker's subscriber: plain lines, no time (the daemon adds it).
pub fn init_worker() {
    let filter = EnvFilter::try_from_env("MLXD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .try_init();
}
