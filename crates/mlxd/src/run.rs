//! `mlxd run`: one prompt through the engine in this process (no server, no
//! worker), the text streamed to stdout as it is produced and the figures
//! to stderr. This is the bare-engine baseline the server is measured
//! against. With `--hosts`, the model is split over several processes
//! (see `dist`).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use engine::distributed::Parallel;
use engine::generate::{GenerateOptions, Generator};
use engine::loader::LoadedModel;
use engine::{ChatMessage, RenderOptions, Sampler, SamplingParams, TextStream};

use crate::dist::{Launch, LaunchSpec};
use crate::models;

mod speculative;

/// Arguments of `mlxd run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Model: a directory, a .gguf file, or org/name in the Hugging Face
    /// cache. Default: the built-in SmolLM2-135M-Instruct.
    #[arg(short, long, env = "MLXD_MODEL")]
    model: Option<String>,
    /// The prompt (a user message, unless --raw).
    #[arg(short, long)]
    prompt: String,
    /// An optional system message (ignored with --raw).
    #[arg(long)]
    system: Option<String>,
    /// Tokens to generate at most.
    #[arg(short = 'n', long, default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long = "temp", default_value_t = 0.0)]
    temperature: f32,
    /// Nucleus sampling mass (1 = off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Keep only the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    top_k: u32,
    /// Drop tokens less likely than min-p times the most likely (0 = off).
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    /// Penalty on recently seen tokens (1 = off).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Seed of the random draws (same seed, same output).
    #[arg(long)]
    seed: Option<u64>,
    /// Feed the prompt as-is, without the chat template.
    #[arg(long)]
    raw: bool,
    /// Keep generating past end-of-sequence tokens (exact token counts for
    /// measurements).
    #[arg(long)]
    ignore_eos: bool,
    /// Prompt tokens per prefill chunk.
    #[arg(long, default_value_t = 2048)]
    prefill_step: usize,
    /// Split the model over processes on these hosts, one rank per entry
    /// (comma-separated IP addresses; the first is this process, rank 0;
    /// repeat 127.0.0.1 for several ranks on this machine). Ranks talk
    /// over MLX's `ring` backend; remote ranks start through `ssh` and
    /// need `mlxd` and the model at the same paths as here. Not with
    /// speculative decoding (a split model decodes one step at a time) or
    /// a quantized KV cache.
    #[arg(
        long,
        value_delimiter = ',',
        conflicts_with_all = ["prompt_lookup", "draft_model", "kv_bits"]
    )]
    hosts: Vec<String>,
    /// How to split the model over `--hosts`: `tensor` (every layer's
    /// heads and features divided among the ranks) or `pipeline` (each
    /// rank a run of layers). Default: tensor.
    #[arg(long, requires = "hosts")]
    parallel: Option<Parallel>,
    /// The first ring port on hosts other than loopback (rank r listens
    /// on this + r; loopback ranks take free ports).
    #[arg(long, default_value_t = 32323, requires = "hosts")]
    ring_port: u16,
    /// Seconds to wait for every rank to join the ring before failing.
    #[arg(long, default_value_t = 60, requires = "hosts")]
    connect_timeout: u64,
    /// Speculative decoding with prompt lookup (n-gram matches in the
    /// prompt and the output so far); runs through the batch scheduler.
    #[arg(long, conflicts_with = "draft_model")]
    prompt_lookup: bool,
    /// Speculative decoding with this draft model (a directory, a .gguf
    /// file, or org/name; same vocabulary); runs through the scheduler.
    #[arg(long)]
    draft_model: Option<String>,
    /// Draft tokens per speculative step at most.
    #[arg(long, default_value_t = engine::speculative::DEFAULT_DRAFT_TOKENS)]
    num_draft_tokens: usize,
    /// Store the KV cache quantized to 4 or 8 bits, as mlx-lm's
    /// `--kv-bits` (default: full precision).
    #[arg(long, value_name = "BITS")]
    kv_bits: Option<i32>,
    /// Values per scale and bias of a quantized KV cache (32, 64 or 128).
    #[arg(long, value_name = "N", default_value_t = engine::model::kv_quant::DEFAULT_KV_GROUP_SIZE)]
    kv_group_size: i32,
    /// Positions kept at full precision before the KV cache is quantized
    /// (mlx-lm's `--quantized-kv-start`; 0: from the first prefill chunk on).
    #[arg(long, value_name = "N", default_value_t = 0)]
    quantized_kv_start: i32,
}

/// Runs the prompt and prints text and figures.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let path: PathBuf = models::resolve(args.model.as_deref())?;
    if args.hosts.len() > 1 {
        return run_split(&args, &path);
    }
    engine::use_dedicated_stream()?;
    engine::wire_working_set()?;
    let mut loaded =
        engine::loader::load(&path).with_context(|| format!("loading {}", path.display()))?;
    let quant = args
        .kv_bits
        .map(|bits| engine::model::KvQuant::new(bits, args.kv_group_size, args.quantized_kv_start))
        .transpose()?;
    loaded.model.set_kv_quant(quant)?;
    generate(loaded, &args)
}

/// Runs the prompt as rank 0 of a group over `--hosts`: starts the other
/// ranks, joins the ring, loads this rank's part and generates, the other
/// ranks following each forward pass.
fn run_split(args: &RunArgs, path: &std::path::Path) -> anyhow::Result<()> {
    let timeout = std::time::Duration::from_secs(args.connect_timeout);
    let mut launch = Launch::start(&LaunchSpec {
        hosts: &args.hosts,
        model: path,
        parallel: args.parallel.unwrap_or(Parallel::Tensor),
        ring_port: args.ring_port,
        connect_timeout: timeout,
    })?;
    engine::use_dedicated_stream()?;
    engine::wire_working_set()?;
    let shard = launch.join(timeout)?;
    let group = shard.group.clone();
    let result = engine::loader::load_part(path, Some(shard), &mut |_, _| {})
        .with_context(|| format!("rank 0: loading {}", path.display()))
        .and_then(|loaded| generate(loaded, args))
        .and_then(|()| Ok(engine::distributed::finish(&group)?));
    match result {
        Ok(()) => launch.wait(std::time::Duration::from_secs(30)),
        Err(e) => Err(match launch.blame(std::time::Duration::from_secs(3)) {
            Some(why) => e.context(why),
            None => e,
        }),
    }
}

/// Generates from the prompt of `args` with `loaded`, the text to stdout
/// and the figures to stderr.
fn generate(loaded: LoadedModel, args: &RunArgs) -> anyhow::Result<()> {
    let tokenizer = Arc::new(loaded.tokenizer);
    let prompt = if args.raw {
        tokenizer.encode_prompt(&args.prompt)?
    } else {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(ChatMessage::new("system", system.as_str()));
        }
        messages.push(ChatMessage::new("user", args.prompt.as_str()));
        let options = RenderOptions {
            add_generation_prompt: true,
            ..RenderOptions::default()
        };
        tokenizer.encode_chat(&messages, &options)?
    };
    let params = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        min_p: args.min_p,
        repetition_penalty: args.repetition_penalty,
        seed: args.seed,
        ..SamplingParams::default()
    };
    let model = &loaded.model;
    let sampler = Sampler::new(params, model.config.vocab_size as usize, &prompt)?;
    mlx::memory::reset_peak_memory();
    if args.prompt_lookup || args.draft_model.is_some() {
        return speculative::run(args, model, &tokenizer, prompt, sampler);
    }
    let options = GenerateOptions {
        max_tokens: args.max_tokens,
        prefill_step: args.prefill_step,
        ..GenerateOptions::default()
    };
    let mut generator = Generator::new(model, &prompt, sampler, options)?;
    let mut text = TextStream::new(Arc::clone(&tokenizer), Vec::new(), &[]);
    if args.ignore_eos {
        text.ignore_eos();
    }
    let mut out = std::io::stdout().lock();
    for token in generator.by_ref() {
        let step = text.push(token?.token)?;
        out.write_all(step.text.as_bytes())?;
        out.flush()?;
        if step.finish.is_some() {
            break;
        }
    }
    out.write_all(text.finish()?.as_bytes())?;
    writeln!(out)?;
    let stats = generator.stats();
    eprintln!(
        "prompt: {} tokens, {:.1} tokens/s | generation: {} tokens, {:.1} tokens/s | peak memory: {:.3} GB",
        stats.prompt_tokens,
        stats.prefill_tps(),
        stats.generated_tokens,
        stats.decode_tps(),
        mlx::memory::stats().peak as f64 / 1e9
    );
    Ok(())
}
