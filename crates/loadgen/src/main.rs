//! `mlxd-loadgen`: sends a mixed load to a running `mlxd serve` and prints
//! the figures (see the library). Exits non-zero on any unexpected error,
//! or when `--max-drift` is given and memory did not return within it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use loadgen::LoadConfig;

/// Load generator for mlxd.
#[derive(Debug, Parser)]
#[command(name = "mlxd-loadgen", version)]
struct Args {
    /// The OpenAI API's address.
    #[arg(
        long,
        env = "MLXD_LOADGEN_URL",
        default_value = "http://127.0.0.1:11440"
    )]
    url: String,
    /// The admin API's address, for memory figures ("" for none).
    #[arg(
        long,
        env = "MLXD_LOADGEN_ADMIN_URL",
        default_value = "http://127.0.0.1:11441"
    )]
    admin_url: String,
    /// The model the requests name.
    #[arg(
        long,
        short,
        env = "MLXD_LOADGEN_MODEL",
        default_value = "SmolLM2-135M-Instruct"
    )]
    model: String,
    /// Requests to send.
    #[arg(
        long,
        short = 'n',
        env = "MLXD_LOADGEN_REQUESTS",
        default_value_t = 10_000
    )]
    requests: usize,
    /// Concurrent connections.
    #[arg(
        long,
        short = 'c',
        env = "MLXD_LOADGEN_CONCURRENCY",
        default_value_t = 64
    )]
    concurrency: usize,
    /// Requests sent before the run (not counted), to warm up.
    #[arg(long, env = "MLXD_LOADGEN_WARMUP", default_value_t = 64)]
    warmup: usize,
    /// Largest max_tokens of a request (each draws 1 to this).
    #[arg(long, env = "MLXD_LOADGEN_MAX_TOKENS", default_value_t = 16)]
    max_tokens: u32,
    /// Seed of the request mix.
    #[arg(long, env = "MLXD_LOADGEN_SEED", default_value_t = 1)]
    seed: u64,
    /// Seconds after the run before the last memory sample.
    #[arg(long, env = "MLXD_LOADGEN_SETTLE", default_value_t = 10)]
    settle: u64,
    /// Fail when memory after the settle period differs from before by more
    /// than this fraction (e.g. 0.05).
    #[arg(long, env = "MLXD_LOADGEN_MAX_DRIFT")]
    max_drift: Option<f64>,
    /// Write the figures as JSON to this file.
    #[arg(long, env = "MLXD_LOADGEN_JSON")]
    json: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = LoadConfig {
        url: args.url.trim_end_matches('/').to_owned(),
        admin_url: (!args.admin_url.is_empty())
            .then(|| args.admin_url.trim_end_matches('/').to_owned()),
        model: args.model,
        requests: args.requests,
        concurrency: args.concurrency,
        warmup: args.warmup,
        max_tokens: args.max_tokens,
        seed: args.seed,
        settle: Duration::from_secs(args.settle),
        ..LoadConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let report = runtime.block_on(loadgen::run(config))?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        let mut value = serde_json::to_value(&report)?;
        value["memory_drift"] = serde_json::json!(report.memory_drift());
        std::fs::write(path, serde_json::to_string_pretty(&value)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if report.unexpected_errors() > 0 {
        anyhow::bail!("{} unexpected errors", report.unexpected_errors());
    }
    if let (Some(max), Some(drift)) = (args.max_drift, report.memory_drift()) {
        anyhow::ensure!(
            drift.abs() <= max,
            "memory drifted {:+.2}% (allowed {:.2}%)",
            drift * 100.0,
            max * 100.0
        );
    }
    Ok(())
}
