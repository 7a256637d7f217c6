//! `mlxd bench --engine`: prefill and decode speed of the engine in this
//! process, on a real model or a random-weight one of a real shape
//! (`--synthetic`), as the median of repeated runs after a warm-up.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use engine::Model;
use engine::batch::{BatchConfig, Scheduler, SeqEnd, SeqEvent, SeqRequest};
use engine::generate::{GenerateOptions, GenerationStats, Generator};
use engine::model::synthetic::Preset;
use engine::speculative::{Drafter, Speculation};
use engine::{Sampler, SamplingParams};
use serde::Serialize;

use super::BenchArgs;
use super::stats::Summary;
use crate::models;

#[derive(Debug, Serialize)]
struct Run {
    prefill_tps: f64,
    decode_tps: f64,
    ttft_ms: f64,
    /// Per decode step, microseconds the host spent building the graph,
    /// handing it to MLX, and waiting for the device.
    build_us: f64,
    dispatch_us: f64,
    wait_us: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    model: String,
    backend: String,
    device: String,
    mlx_version: String,
    prompt_tokens: usize,
    gen_tokens: usize,
    weight_bytes: usize,
    /// Whether q/k/v and gate/up ran as one product each.
    fused_projections: bool,
    /// Whether 4-bit decode products ran the project's CUDA kernel.
    custom_qmv: bool,
    /// Bits of the quantized KV cache (`None`: full precision).
    kv_bits: Option<i32>,
    /// Bytes one position of KV takes across the layers.
    kv_bytes_per_position: usize,
    runs: Vec<Run>,
    /// The single-sequence generator's runs, summarized.
    #[serde(flatten)]
    generator: Summaries,
    /// With `--scheduler`: the same runs through the continuous-batching
    /// scheduler with one sequence, each right after the generator's.
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduler: Option<PathReport>,
    /// Time to the first token of prompts of lengths not seen before
    /// (one token shorter each, from the prompt's length less one), as a
    /// server sees them: what a per-shape cost (a kernel plan built or
    /// compiled for new lengths) adds to a request, against `ttft_ms`
    /// which repeats one prompt.
    fresh_ttft_ms: Summary,
    /// The first greedy tokens after the prompt: equal across kernel
    /// choices (`--mlx-qmv`, `--unfused`) unless they change the numbers.
    greedy_tokens: Vec<u32>,
    /// The operations of one decode step (sampling included), by name.
    step_ops: Vec<(String, usize)>,
    peak_memory_bytes: usize,
}

/// Medians and spreads of a set of runs.
#[derive(Debug, Serialize)]
struct Summaries {
    prefill_tps: Summary,
    decode_tps: Summary,
    ttft_ms: Summary,
    build_us: Summary,
    dispatch_us: Summary,
    wait_us: Summary,
}

impl Summaries {
    fn of(runs: &[Run]) -> Summaries {
        let pick = |f: fn(&Run) -> f64| Summary::of(&runs.iter().map(f).collect::<Vec<_>>());
        Summaries {
            prefill_tps: pick(|r| r.prefill_tps),
            decode_tps: pick(|r| r.decode_tps),
            ttft_ms: pick(|r| r.ttft_ms),
            build_us: pick(|r| r.build_us),
            dispatch_us: pick(|r| r.dispatch_us),
            wait_us: pick(|r| r.wait_us),
        }
    }
}

#[derive(Debug, Serialize)]
struct PathReport {
    runs: Vec<Run>,
    #[serde(flatten)]
    summaries: Summaries,
    /// Medians of the per-run ratios scheduler / generator.
    decode_ratio: f64,
    ttft_ratio: f64,
}

/// One generation as its caller sees it: wall-clock times from the start
/// of prefill, the same definitions the suite uses for HTTP clients.
#[derive(Debug, Clone, Copy)]
pub struct Timed {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub tokens: usize,
    /// From the start to the first token read.
    pub ttft: Duration,
    /// From the first token to the last one.
    pub decode: Duration,
    /// From the start to the last token.
    pub total: Duration,
    /// The generator's own counts, with where the host spent decode.
    pub stats: GenerationStats,
}

impl Timed {
    /// A generation of `tokens` after `prompt_tokens` that started at
    /// `start`, read its first token at `first` and its last at `end`.
    fn new(
        prompt_tokens: usize,
        tokens: usize,
        (start, first, end): (Instant, Option<Instant>, Instant),
        stats: GenerationStats,
    ) -> Timed {
        let first = first.unwrap_or(end);
        Timed {
            prompt_tokens,
            tokens,
            ttft: first - start,
            decode: end - first,
            total: end - start,
            stats,
        }
    }

    /// Tokens per second after the first.
    pub fn decode_tps(&self) -> f64 {
        self.tokens.saturating_sub(1) as f64 / self.decode.as_secs_f64().max(1e-9)
    }

    /// Tokens per second over the whole generation, prefill included.
    pub fn end_to_end_tps(&self) -> f64 {
        self.tokens as f64 / self.total.as_secs_f64().max(1e-9)
    }

    /// The host's time per decode step, in µs: building the graph,
    /// dispatching it, waiting for the token.
    pub fn host_per_step_us(&self) -> HostStep {
        let steps = self.stats.host_steps.max(1) as f64;
        let per_step = |d: Duration| d.as_secs_f64() * 1e6 / steps;
        HostStep {
            build: per_step(self.stats.host_build),
            dispatch: per_step(self.stats.host_dispatch),
            wait: per_step(self.stats.host_wait),
        }
    }
}

/// Where the host spent one decode step, in µs.
#[derive(Debug, Clone, Copy)]
pub struct HostStep {
    pub build: f64,
    pub dispatch: f64,
    pub wait: f64,
}

/// One greedy generation of exactly `tokens` tokens after prefilling
/// `prompt` (end-of-sequence is not looked at).
pub fn generate_timed(model: &Model, prompt: &[u32], tokens: usize) -> anyhow::Result<Timed> {
    let start = Instant::now();
    let mut generator = greedy(model, prompt, tokens)?;
    let mut count = 0;
    let mut first = None;
    for token in generator.by_ref() {
        token?;
        first.get_or_insert_with(Instant::now);
        count += 1;
    }
    let end = Instant::now();
    if count != tokens {
        bail!("generated {count} tokens, expected {tokens}");
    }
    Ok(Timed::new(
        prompt.len(),
        tokens,
        (start, first, end),
        generator.stats(),
    ))
}

/// [`generate_timed`] through the continuous-batching scheduler with one
/// sequence, as a worker runs a lone request (the prompt cache off: every
/// run prefills the whole prompt), speculating when `spec` says so (the
/// draft tokens proposed and accepted are printed).
pub fn schedule_timed(
    model: &Model,
    prompt: &[u32],
    tokens: usize,
    spec: Option<Speculation>,
) -> anyhow::Result<Timed> {
    let start = Instant::now();
    let config = BatchConfig {
        prefix_cache: 0,
        ..BatchConfig::default()
    };
    let mut scheduler = Scheduler::new(model, config);
    if let Some(spec) = spec {
        scheduler = scheduler.with_speculation(spec)?;
    }
    scheduler.submit(SeqRequest {
        id: 0,
        prompt: prompt.to_vec(),
        sampler: greedy_sampler(model, prompt)?,
        max_tokens: tokens,
        stop_ids: Vec::new(),
        constraint: None,
    })?;
    let mut count = 0;
    let mut first = None;
    while scheduler.is_busy() {
        for event in scheduler.step()? {
            match event {
                SeqEvent::Token { .. } => {
                    first.get_or_insert_with(Instant::now);
                    count += 1;
                }
                SeqEvent::Done(report) => {
                    if let SeqEnd::Failed(why) = report.end {
                        bail!("the scheduler failed: {why}");
                    }
                    let s = report.speculative;
                    if spec.is_some() {
                        eprintln!("  draft: {} tokens, {} accepted", s.drafted, s.accepted);
                    }
                }
            }
        }
    }
    let end = Instant::now();
    if count != tokens {
        bail!("scheduled {count} tokens, expected {tokens}");
    }
    let host = scheduler.host_times();
    let stats = GenerationStats {
        prompt_tokens: prompt.len(),
        generated_tokens: tokens,
        host_build: host.build,
        host_dispatch: host.dispatch,
        host_wait: host.wait,
        host_steps: host.steps as usize,
        ..GenerationStats::default()
    };
    Ok(Timed::new(prompt.len(), tokens, (start, first, end), stats))
}

/// One generation of exactly `tokens` tokens after a `prompt`-token
/// prefill, by the generator or (`scheduled`) the scheduler.
fn measure(
    model: &Model,
    prompt: &[u32],
    tokens: usize,
    scheduled: Option<Option<Speculation>>,
) -> anyhow::Result<Run> {
    let timed = if let Some(spec) = scheduled {
        schedule_timed(model, prompt, tokens, spec)?
    } else {
        generate_timed(model, prompt, tokens)?
    };
    let host = timed.host_per_step_us();
    Ok(Run {
        prefill_tps: timed.prompt_tokens as f64 / timed.ttft.as_secs_f64().max(1e-9),
        decode_tps: timed.decode_tps(),
        ttft_ms: timed.ttft.as_secs_f64() * 1e3,
        build_us: host.build,
        dispatch_us: host.dispatch,
        wait_us: host.wait,
    })
}

/// A greedy generation of at most `tokens` tokens after `prompt`.
fn greedy<'m>(model: &'m Model, prompt: &[u32], tokens: usize) -> anyhow::Result<Generator<'m>> {
    let options = GenerateOptions {
        max_tokens: tokens,
        ..GenerateOptions::default()
    };
    Ok(Generator::new(
        model,
        prompt,
        greedy_sampler(model, prompt)?,
        options,
    )?)
}

/// Greedy sampling after `prompt`.
fn greedy_sampler(model: &Model, prompt: &[u32]) -> anyhow::Result<Sampler> {
    Ok(Sampler::new(
        SamplingParams::greedy(),
        model.config.vocab_size as usize,
        prompt,
    )?)
}

/// The first `n` greedy token ids after `prompt`.
fn greedy_ids(model: &Model, prompt: &[u32], n: usize) -> anyhow::Result<Vec<u32>> {
    greedy(model, prompt, n)?
        .map(|token| Ok(token?.token))
        .collect()
}

/// The operations of the first decode step after `prompt` (prefilled but
/// for its last token, as a generation does), counted by name.
fn step_census(model: &Model, prompt: &[u32]) -> anyhow::Result<Vec<(String, usize)>> {
    let mut cache = model.new_cache();
    let head = &prompt[..prompt.len() - 1];
    if !head.is_empty() {
        let ids = mlx::Array::from_slice(head, &[1, head.len() as i32])?;
        model.fill_cache(&ids, &mut cache)?;
    }
    let state: Vec<&mlx::Array> = cache.iter().flat_map(|c| c.state()).collect();
    mlx::eval(&state)?;
    let mut sampler = greedy_sampler(model, prompt)?;
    let last = mlx::Array::from_slice(&prompt[prompt.len() - 1..], &[1, 1])?;
    let logits = model.forward(&last, &mut cache)?;
    let sampled = sampler.sample(&logits.squeeze(1)?)?;
    Ok(mlx::graph_census(&sampled.arrays())?)
}

/// Runs the benchmark and prints its table.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if args.prompt_tokens == 0 || args.gen_tokens == 0 || args.repeats == 0 {
        bail!("--prompt-tokens, --gen-tokens and --repeats must be positive");
    }
    engine::use_dedicated_stream()?;
    engine::wire_working_set()?;
    engine::model::nn::set_fused_projections(!args.unfused);
    mlx::set_custom_qmv(!args.mlx_qmv)?;
    if args.synthetic.len() + args.model.len() > 1 {
        bail!("--engine measures one model: give one -m or one --synthetic");
    }
    let (name, mut model) = match args.synthetic.first() {
        Some(preset) => (
            format!("{preset} (synthetic)"),
            Preset::find(preset)?.build(0)?,
        ),
        None => {
            let path = models::resolve(args.model.first().map(String::as_str))?;
            let loaded = engine::loader::load(&path)
                .with_context(|| format!("loading {}", path.display()))?;
            (path.display().to_string(), loaded.model)
        }
    };
    let quant = args
        .kv_bits
        .map(|bits| engine::model::KvQuant::new(bits, args.kv_group_size, 0))
        .transpose()?;
    model.set_kv_quant(quant)?;
    let vocab = model.config.vocab_size as u32;
    // A fixed pseudo-random prompt (no tokenizer needed, same every run).
    let prompt: Vec<u32> = (0..args.prompt_tokens as u64)
        .map(|i| ((i.wrapping_mul(2_654_435_761) >> 7) % u64::from(vocab)) as u32)
        .collect();
    let draft = match &args.draft_model {
        Some(name) => {
            let path = models::resolve(Some(name))?;
            let loaded = engine::loader::load(&path)
                .with_context(|| format!("loading the draft model {}", path.display()))?;
            Some(loaded.model)
        }
        None => None,
    };
    let spec = (args.prompt_lookup || draft.is_some()).then(|| Speculation {
        drafter: draft.as_ref().map_or(Drafter::PromptLookup, Drafter::Model),
        num_draft_tokens: args.num_draft_tokens,
        max_batch: 1,
    });
    let scheduler = (args.scheduler || spec.is_some()).then_some(spec);
    eprintln!("warm-up run...");
    measure(&model, &prompt, args.gen_tokens, None)?;
    if scheduler.is_some() {
        measure(&model, &prompt, args.gen_tokens, scheduler)?;
    }
    let step_ops = step_census(&model, &prompt)?;
    let greedy_tokens = greedy_ids(&model, &prompt, 32)?;
    mlx::memory::reset_peak_memory();
    let mut runs = Vec::with_capacity(args.repeats);
    let mut scheduled = Vec::new();
    for i in 0..args.repeats {
        let run = measure(&model, &prompt, args.gen_tokens, None)?;
        eprintln!(
            "run {}/{}: prefill {:.1} tok/s, decode {:.1} tok/s, TTFT {:.1} ms",
            i + 1,
            args.repeats,
            run.prefill_tps,
            run.decode_tps,
            run.ttft_ms
        );
        if scheduler.is_some() {
            let s = measure(&model, &prompt, args.gen_tokens, scheduler)?;
            eprintln!(
                "  scheduler: prefill {:.1} tok/s, decode {:.1} tok/s, TTFT {:.1} ms",
                s.prefill_tps, s.decode_tps, s.ttft_ms
            );
            scheduled.push(s);
        }
        runs.push(run);
    }
    let fresh: Vec<f64> = (1..=args.repeats.min(args.prompt_tokens - 1))
        .map(|shorter| {
            let timed = generate_timed(&model, &prompt[..args.prompt_tokens - shorter], 1)?;
            Ok(timed.ttft.as_secs_f64() * 1e3)
        })
        .collect::<anyhow::Result<_>>()?;
    let scheduler = (!scheduled.is_empty()).then(|| {
        let ratio = |f: fn(&Run) -> f64| {
            let r: Vec<f64> = scheduled
                .iter()
                .zip(&runs)
                .map(|(s, g)| f(s) / f(g))
                .collect();
            Summary::of(&r).median
        };
        PathReport {
            decode_ratio: ratio(|r| r.decode_tps),
            ttft_ratio: ratio(|r| r.ttft_ms),
            summaries: Summaries::of(&scheduled),
            runs: scheduled,
        }
    });
    let device = mlx::device::default_device()?;
    let report = Report {
        model: name,
        backend: mlx::backend().to_string(),
        device: device.name().unwrap_or_else(|_| device.to_string()),
        mlx_version: mlx::version(),
        prompt_tokens: args.prompt_tokens,
        gen_tokens: args.gen_tokens,
        weight_bytes: model.weight_bytes(),
        fused_projections: !args.unfused,
        custom_qmv: mlx::custom_qmv_available()? && !args.mlx_qmv,
        kv_bits: args.kv_bits,
        kv_bytes_per_position: model.kv_bytes_per_position(),
        generator: Summaries::of(&runs),
        scheduler,
        fresh_ttft_ms: Summary::of(&fresh),
        greedy_tokens,
        step_ops,
        peak_memory_bytes: mlx::memory::stats().peak,
        runs,
    };
    print_table(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn print_summaries(prefix: &str, s: &Summaries) {
    println!("| {prefix}metric | median | mean | stddev | min | max |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, s) in [
        ("prefill tok/s", &s.prefill_tps),
        ("decode tok/s", &s.decode_tps),
        ("TTFT ms", &s.ttft_ms),
        ("decode step: host builds, µs", &s.build_us),
        ("decode step: host dispatches, µs", &s.dispatch_us),
        ("decode step: host waits, µs", &s.wait_us),
    ] {
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            s.median, s.mean, s.stddev, s.min, s.max
        );
    }
}

fn print_table(r: &Report) {
    println!("model:   {}", r.model);
    println!(
        "device:  {} ({} backend, MLX {})",
        r.device, r.backend, r.mlx_version
    );
    println!(
        "weights: {:.1} MB; prompt {} tokens, {} generated, {} runs",
        r.weight_bytes as f64 / 1e6,
        r.prompt_tokens,
        r.gen_tokens,
        r.runs.len()
    );
    println!(
        "kernels: {} projections, {} 4-bit decode products",
        if r.fused_projections {
            "fused"
        } else {
            "separate"
        },
        if r.custom_qmv {
            "project's CUDA"
        } else {
            "MLX's"
        }
    );
    println!(
        "kv:      {}, {} bytes a position",
        r.kv_bits
            .map_or("full precision".to_string(), |b| format!("{b}-bit")),
        r.kv_bytes_per_position
    );
    println!();
    print_summaries("", &r.generator);
    if let Some(s) = &r.scheduler {
        println!();
        print_summaries("scheduler, one sequence: ", &s.summaries);
        println!();
        println!(
            "scheduler / generator, median of the runs' ratios: decode {:.3}, TTFT {:.3}",
            s.decode_ratio, s.ttft_ratio
        );
    }
    let fresh = &r.fresh_ttft_ms;
    println!(
        "TTFT of prompts of new lengths: median {:.1} ms (min {:.1}, max {:.1}) over {} prompts",
        fresh.median, fresh.min, fresh.max, fresh.n
    );
    println!();
    let ops: usize = r.step_ops.iter().map(|(_, n)| n).sum();
    let top: Vec<String> = r
        .step_ops
        .iter()
        .take(8)
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    println!("decode step: {ops} operations ({})", top.join(", "));
    println!("peak memory: {:.3} GB", r.peak_memory_bytes as f64 / 1e9);
}
