//! `mlxd`: the daemon's command line.

mod admin;
mod bench;
mod config;
mod dist;
mod info;
mod logging;
mod ls;
mod models;
mod pull;
mod run;
mod sampling;
mod serve;
mod service;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

/// An OpenAI-compatible LLM inference daemon on MLX.
#[derive(Debug, Parser)]
#[command(name = "mlxd")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the OpenAI-compatible API (and the admin API), one worker
    /// process per loaded model.
    Serve(Box<serve::ServeArgs>),
    /// Generate from one prompt in this process and report the speed (the
    /// bare-engine baseline).
    Run(run::RunArgs),
    /// List the running daemon's models and workers.
    Ps(admin::AdminTarget),
    /// Ask the running daemon to load a model.
    Load(admin::LoadArgs),
    /// Ask the running daemon to unload a model (after its requests).
    Unload(admin::UnloadArgs),
    /// Measure prefill and decode speed.
    Bench(bench::BenchArgs),
    /// Write a GGUF model out as an MLX checkpoint directory (lossless).
    Convert(ConvertArgs),
    /// Write a random-weight model of a real shape as an MLX checkpoint, with
    /// the tokenizer of another model (for benchmarks and tests).
    Synth(SynthArgs),
    /// Show the MLX version, backend and device, and check that MLX computes
    /// correctly on it (a 4-bit quantized matmul against its dequantized twin).
    Info,
    /// Show the effective configuration and where each value came from.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// List the models on disk (Hugging Face cache, models directory,
    /// aliases).
    Ls(ls::LsArgs),
    /// Download a model from the Hugging Face hub into its cache.
    Pull(pull::PullArgs),
    /// Install, remove or inspect the background service (launchd on macOS,
    /// systemd on Linux).
    #[command(subcommand)]
    Service(service::ServiceCommand),
    /// Serve one model to the supervisor over shared memory (started by
    /// `mlxd serve`, not by hand).
    #[command(hide = true)]
    Worker(WorkerArgs),
    /// Run one rank of a model split over several processes (started by
    /// `mlxd run --hosts`, not by hand).
    #[command(hide = true)]
    Rank(dist::RankArgs),
}

/// Arguments of `mlxd synth`.
#[derive(Debug, Args)]
struct SynthArgs {
    /// The shape (`mlxd bench --engine --list` lists them).
    #[arg(long)]
    preset: String,
    /// Vocabulary size, when it must match the tokenizer's.
    #[arg(long)]
    vocab: Option<i32>,
    /// The model whose tokenizer to use (directory or .gguf; default: the
    /// built-in model).
    #[arg(long)]
    tokenizer_from: Option<String>,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The directory to write.
    out_dir: PathBuf,
}

/// Arguments of `mlxd worker`.
#[derive(Debug, Args)]
struct WorkerArgs {
    /// The model file or directory.
    #[arg(long)]
    model: PathBuf,
    /// The name requests use for the model.
    #[arg(long)]
    model_id: String,
    /// The protocol version the supervisor speaks.
    #[arg(long)]
    protocol_version: u32,
    /// Context length to serve (default: the model's).
    #[arg(long)]
    context_length: Option<u32>,
    /// Sequences decoded together at most (default: 32).
    #[arg(long)]
    max_batch: Option<usize>,
    /// Bytes the batch's KV cache may take (default: a quarter of the
    /// memory MLX may use, at least one full context); with `--kv-tokens`,
    /// the most it may take.
    #[arg(long)]
    kv_memory: Option<usize>,
    /// Size the batch's KV cache from the model: room for this many
    /// positions, at least one full context, at most `--kv-memory`.
    #[arg(long)]
    kv_tokens: Option<usize>,
    /// Bytes of KV the prompt cache keeps (default: a quarter of the KV
    /// memory; 0 turns it off).
    #[arg(long)]
    prompt_cache_memory: Option<usize>,
    /// Bytes the prompt cache keeps on disk for this model, under
    /// `--prompt-cache-dir` (default: 0, off).
    #[arg(
        long,
        requires = "prompt_cache_dir",
        overrides_with = "prompt_cache_disk"
    )]
    prompt_cache_disk: Option<u64>,
    /// The folder of the prompt cache on disk (each model's entries in a
    /// folder of its own under it).
    #[arg(long, overrides_with = "prompt_cache_dir")]
    prompt_cache_dir: Option<PathBuf>,
    /// Speculative decoding with prompt lookup (n-gram matches in the
    /// prompt and the output so far).
    #[arg(long, conflicts_with = "draft_model")]
    prompt_lookup: bool,
    /// Speculative decoding with this draft model (same vocabulary).
    #[arg(long)]
    draft_model: Option<PathBuf>,
    /// Draft tokens per speculative step at most.
    #[arg(long, default_value_t = engine::speculative::DEFAULT_DRAFT_TOKENS)]
    num_draft_tokens: usize,
    /// Speculate only while at most this many sequences decode together.
    #[arg(long, default_value_t = engine::speculative::DEFAULT_MAX_BATCH)]
    spec_max_batch: usize,
    /// Store the KV cache quantized to 4 or 8 bits (default: full
    /// precision).
    #[arg(long)]
    kv_bits: Option<i32>,
    /// Values per scale and bias of a quantized KV cache (default: 64).
    #[arg(long)]
    kv_group_size: Option<i32>,
}

/// Arguments of `mlxd convert`.
#[derive(Debug, Args)]
struct ConvertArgs {
    /// The GGUF file (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K
    /// or Q6_K tensors).
    gguf: PathBuf,
    /// The directory to write (created if needed).
    out_dir: PathBuf,
}

/// `mlxd 0.1.0 (MLX 0.32.4, CUDA backend)`: what `--version` prints.
fn version_line() -> String {
    format!(
        "{} (MLX {}, {} backend)",
        env!("CARGO_PKG_VERSION"),
        mlx::version(),
        mlx::backend()
    )
}

/// MLX's CUDA backend runs attention through cuDNN where it can: for a
/// prefill, with an execution plan built for every new shape (50-75 ms, in
/// the request), and for a decode step whose keys fill a cache of a whole
/// number of 256-position blocks, at about 30 µs more host time per layer
/// than its own vector kernel (+18 % decode speed without it, 0.5B on an
/// H100). The engine composes prefill attention itself (`mlx::fast`), so
/// cuDNN's is switched off unless the environment says otherwise.
const CUDNN_ATTENTION: &str = "MLX_CUDA_USE_CUDNN_SDPA";

/// Whether `main` switched cuDNN attention off (rather than the user).
static CUDNN_ATTENTION_SWITCHED_OFF: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Gives a child process that is not mlxd (a peer the bench measures) the
/// environment as the user set it.
pub(crate) fn user_environment(cmd: &mut std::process::Command) {
    // Relaxed: written once in `main` before any thread exists.
    if CUDNN_ATTENTION_SWITCHED_OFF.load(std::sync::atomic::Ordering::Relaxed) {
        cmd.env_remove(CUDNN_ATTENTION);
    }
}

fn main() -> anyhow::Result<()> {
    if std::env::var_os(CUDNN_ATTENTION).is_none() {
        // SAFETY: the first statement of `main`, before this process starts
        // any thread or calls into MLX, so nothing reads the environment
        // concurrently; workers inherit it.
        unsafe { std::env::set_var(CUDNN_ATTENTION, "0") };
        // Relaxed: no other thread exists yet.
        CUDNN_ATTENTION_SWITCHED_OFF.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let matches = Cli::command().version(version_line()).get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    match &cli.command {
        // The daemon logs as its configuration says; a worker as the
        // daemon forwards it.
        Command::Serve(_) => {}
        Command::Worker(_) => logging::init_worker(),
        _ => logging::init(None),
    }
    match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Run(args) => run::run(args),
        Command::Rank(args) => dist::rank(args),
        Command::Ps(target) => admin::ps(target),
        Command::Load(args) => admin::load(args),
        Command::Unload(args) => admin::unload(args),
        Command::Bench(args) => bench::run(args),
        Command::Convert(args) => {
            engine::convert::gguf_to_mlx(&args.gguf, &args.out_dir).with_context(|| {
                format!(
                    "converting {} to {}",
                    args.gguf.display(),
                    args.out_dir.display()
                )
            })?;
            eprintln!("wrote {}", args.out_dir.display());
            Ok(())
        }
        Command::Synth(args) => synth(args),
        Command::Info => info::run(),
        Command::Config(command) => config::run(command),
        Command::Ls(args) => ls::run(args),
        Command::Pull(args) => pull::run(args),
        Command::Service(command) => service::run(command),
        Command::Worker(args) => {
            // Compiled GPU kernels persist across worker restarts (the first
            // CUDA compile takes about a minute).
            if std::env::var_os("MLX_PTX_CACHE_DIR").is_none()
                && let Some(home) = std::env::var_os("HOME")
            {
                let dir = PathBuf::from(home).join(".cache/mlxd/ptx");
                // SAFETY: set before any other thread of this process exists.
                unsafe { std::env::set_var("MLX_PTX_CACHE_DIR", dir) };
            }
            let config = worker::WorkerConfig {
                model_path: args.model,
                model_id: args.model_id,
                context_length: args.context_length,
                protocol_version: args.protocol_version,
                batch: worker::BatchLimits {
                    max_batch: args.max_batch,
                    kv_memory: args.kv_memory,
                    kv_tokens: args.kv_tokens,
                    prompt_cache_memory: args.prompt_cache_memory,
                },
                prompt_cache_disk: args.prompt_cache_dir.zip(args.prompt_cache_disk),
                speculative: (args.prompt_lookup || args.draft_model.is_some()).then_some(
                    worker::SpecOptions {
                        draft_model: args.draft_model,
                        num_draft_tokens: args.num_draft_tokens,
                        max_batch: args.spec_max_batch,
                    },
                ),
                kv_bits: args.kv_bits,
                kv_group_size: args.kv_group_size,
            };
            // The supervisor reads the reason from the log line and the
            // event the worker sent; the exit status says it failed.
            if let Err(e) = worker::run(config) {
                tracing::error!("{e}");
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

fn synth(args: SynthArgs) -> anyhow::Result<()> {
    let mut preset = engine::model::synthetic::Preset::find(&args.preset)?;
    if let Some(vocab) = args.vocab {
        preset = preset.with_vocab(vocab);
    }
    let tokenizer = models::resolve(args.tokenizer_from.as_deref())?;
    preset
        .save(&args.out_dir, args.seed)
        .with_context(|| format!("writing {}", args.out_dir.display()))?;
    engine::convert::copy_tokenizer(&tokenizer, &args.out_dir)
        .with_context(|| format!("copying the tokenizer of {}", tokenizer.display()))?;
    eprintln!("wrote {}", args.out_dir.display());
    Ok(())
}
