//! `mlxd bench`: the engine alone in this process (`--engine`), or the
//! benchmark suite (`--suite`): the bare engine, `mlxd serve` over HTTP and
//! the peers found on the machine, side by side in one run, with the
//! daemon's own per-stage timings, a Markdown report, JSON and SVG plots.

mod direct;
mod stats;

use ::engine::model::synthetic::PRESETS;
use clap::{ArgGroup, Args};

/// Arguments of `mlxd bench`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("mode").required(true).args(["engine", "suite", "list"])))]
pub struct BenchArgs {
    /// Measure the engine in this process (no server).
    #[arg(long)]
    engine: bool,
    /// Run the suite: the engine in-process, `mlxd serve` over HTTP and the
    /// peers found (mlx_lm.server, llama-server, Ollama), per model and
    /// generation length; writes a report, JSON and plots to --out.
    #[arg(long)]
    suite: bool,
    /// Model(s): a directory, a .gguf file, or org/name in the Hugging Face
    /// cache (--engine takes one; the suite takes a comma-separated list).
    #[arg(short, long, alias = "models", value_delimiter = ',')]
    model: Vec<String>,
    /// Random-weight model(s) of a real shape instead of files (see --list;
    /// comma-separated for the suite).
    #[arg(long, value_delimiter = ',')]
    synthetic: Vec<String>,
    /// List the synthetic shapes and exit.
    #[arg(long)]
    list: bool,
    /// --engine: prompt length in tokens.
    #[arg(long, default_value_t = 512)]
    prompt_tokens: usize,
    /// --engine: tokens generated per run (exactly: end-of-sequence is
    /// ignored).
    #[arg(long, default_value_t = 200)]
    gen_tokens: usize,
    /// --engine: measured runs (after one warm-up run).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// --engine: write the results as JSON to this file too.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// Runs `mlxd bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.list {
        for p in PRESETS {
            println!("{}", p.name);
        }
        return Ok(());
    }
    direct::run(&args)
}
