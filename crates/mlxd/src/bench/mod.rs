//! `mlxd bench`: the engine alone in this process (`--engine`), or the
//! benchmark suite (`--suite`): the bare engine, `mlxd serve` over HTTP and
//! the peers found on the machine, side by side in one run, with the
//! daemon's own per-stage timings, a Markdown report, JSON and SVG plots.

mod client;
mod direct;
mod plots;
mod report;
mod stats;
mod suite;
mod systems;

use std::path::PathBuf;

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
    /// --engine: run q/k/v and gate/up as separate products, as loaded
    /// (to measure what fusing them is worth).
    #[arg(long)]
    unfused: bool,
    /// --engine: run 4-bit decode products with MLX's kernel instead of the
    /// project's CUDA kernel (to measure what the latter is worth).
    #[arg(long)]
    mlx_qmv: bool,
    /// --engine: also run every repeat through the continuous-batching
    /// scheduler with one sequence (the worker's path), right after the
    /// single-sequence generator, and report both.
    #[arg(long)]
    scheduler: bool,
    /// --engine: the scheduler's runs speculate with prompt lookup (implies
    /// --scheduler).
    #[arg(long, conflicts_with = "draft_model")]
    prompt_lookup: bool,
    /// --engine: the scheduler's runs speculate with this draft model (a
    /// directory, a .gguf file, or org/name; implies --scheduler).
    #[arg(long)]
    draft_model: Option<String>,
    /// --engine: draft tokens per speculative step at most.
    #[arg(long, default_value_t = engine::speculative::DEFAULT_DRAFT_TOKENS)]
    num_draft_tokens: usize,
    /// --engine: store the KV cache quantized to 4 or 8 bits, from the first
    /// prefill chunk on (default: full precision).
    #[arg(long, value_name = "BITS")]
    kv_bits: Option<i32>,
    /// --engine: values per scale and bias of the quantized KV cache.
    #[arg(long, value_name = "N", default_value_t = engine::model::kv_quant::DEFAULT_KV_GROUP_SIZE)]
    kv_group_size: i32,
    /// --engine: write the results as JSON to this file too.
    #[arg(long)]
    json: Option<PathBuf>,
    /// --suite: generation lengths, comma-separated (default 50,100,200; 8
    /// with --smoke).
    #[arg(long, value_delimiter = ',')]
    tokens: Vec<usize>,
    /// --suite: measured runs per system and length, after one warm-up
    /// (default 5; 1 with --smoke).
    #[arg(long)]
    runs: Option<usize>,
    /// --suite: numbers of concurrent streams to measure, comma-separated
    /// (default none; 1,2 with --smoke).
    #[arg(long, value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// --suite: the directory for report.md, results.json, the plots and
    /// the servers' logs.
    #[arg(long, default_value = "bench-suite")]
    out: PathBuf,
    /// --suite: a quick check that everything runs (one short run, no
    /// peers); its figures mean nothing.
    #[arg(long)]
    smoke: bool,
    /// --suite: measure mlxd only, not the peers found on the machine.
    #[arg(long)]
    no_peers: bool,
    /// --suite: the Python that runs mlx_lm.server (default: this source
    /// tree's .venv).
    #[arg(long, env = "MLXD_BENCH_PYTHON")]
    python: Option<PathBuf>,
    /// --suite: the GGUF file llama-server and Ollama serve (default: the
    /// model itself when it is a .gguf).
    #[arg(long)]
    gguf: Option<PathBuf>,
    /// --suite: leave the servers' prompt caches on (by default they are
    /// off, so every system prefills the whole prompt as the bare engine
    /// does).
    #[arg(long)]
    prompt_cache: bool,
    /// --suite: the log filter of the `mlxd serve` measured (its workers
    /// get it too), e.g. `warn,worker=debug,mlxd::worker=debug` to log
    /// where each worker's busy stretches spent their host time.
    #[arg(long, default_value = "warn", value_name = "FILTER")]
    mlxd_log: String,
}

/// Runs `mlxd bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.list {
        for p in PRESETS {
            println!("{}", p.name);
        }
        return Ok(());
    }
    if !args.suite {
        return direct::run(&args);
    }
    if args.kv_bits.is_some() {
        anyhow::bail!(
            "--kv-bits measures the engine (--engine); a suite's mlxd takes \
             models.kv_bits from its configuration"
        );
    }
    let smoke = args.smoke;
    let or_smoke = |given: Vec<usize>, normal: &[usize], quick: &[usize]| match given.is_empty() {
        false => given,
        true if smoke => quick.to_vec(),
        true => normal.to_vec(),
    };
    let command_line = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    suite::run(suite::SuiteOptions {
        models: args.model,
        synthetic: args.synthetic,
        tokens: or_smoke(args.tokens, &[50, 100, 200], &[8]),
        runs: args.runs.unwrap_or(if smoke { 1 } else { 5 }),
        concurrency: or_smoke(args.concurrency, &[], &[1, 2]),
        out: args.out,
        smoke,
        peers: !smoke && !args.no_peers,
        python: args.python,
        gguf: args.gguf,
        prompt_cache: args.prompt_cache,
        mlxd_log: args.mlxd_log,
        command_line: format!("mlxd {command_line}"),
    })
}
