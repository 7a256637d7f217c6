//! `mlxd bench --engine`: prefill and decode speed of the engine in this
//! process, on a real model or a random-weight one of a real shape
//! (`--synthetic`), as the median of repeated runs after a warm-up.

use anyhow::{Context, bail};
use clap::Args;
use engine::Model;
use engine::generate::{GenerateOptions, Generator};
use engine::model::synthetic::{PRESETS, Preset};
use engine::{Sampler, SamplingParams};
use serde::Serialize;

use crate::models;

/// Arguments of `mlxd bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Measure the engine in this process (no server).
    #[arg(long, required = true)]
    engine: bool,
    /// Model: a directory, a .gguf file, or org/name in the Hugging Face cache.
    #[arg(short, long, conflicts_with = "synthetic")]
    model: Option<String>,
    /// A random-weight model of a real shape instead of a file (see --list).
    #[arg(long)]
    synthetic: Option<String>,
    /// List the synthetic shapes and exit.
    #[arg(long)]
    list: bool,
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 512)]
    prompt_tokens: usize,
    /// Tokens generated per run (exactly: end-of-sequence is ignored).
    #[arg(long, default_value_t = 200)]
    gen_tokens: usize,
    /// Measured runs (after one warm-up run).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Write the results as JSON to this file too.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Debug, Serialize)]
struct Run {
    prefill_tps: f64,
    decode_tps: f64,
    ttft_ms: f64,
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
    runs: Vec<Run>,
    prefill_tps: Summary,
    decode_tps: Summary,
    ttft_ms: Summary,
    peak_memory_bytes: usize,
}

#[derive(Debug, Serialize)]
struct Summary {
    median: f64,
    mean: f64,
    stddev: f64,
    min: f64,
    max: f64,
}

impl Summary {
    fn of(values: &[f64]) -> Summary {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len().max(1) as f64;
        let mean = sorted.iter().sum::<f64>() / n;
        let var = sorted.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let mid = sorted.len() / 2;
        let median = match sorted.len() {
            0 => 0.0,
            len if len % 2 == 1 => sorted[mid],
            _ => (sorted[mid - 1] + sorted[mid]) / 2.0,
        };
        Summary {
            median,
            mean,
            stddev: var.sqrt(),
            min: sorted.first().copied().unwrap_or(0.0),
            max: sorted.last().copied().unwrap_or(0.0),
        }
    }
}

/// One generation of exactly `gen` tokens after a `prompt`-token prefill.
fn measure(model: &Model, prompt: &[u32], tokens: usize) -> anyhow::Result<Run> {
    let sampler = Sampler::new(
        SamplingParams::greedy(),
        model.config.vocab_size as usize,
        prompt,
    )?;
    let options = GenerateOptions {
        max_tokens: tokens,
        ..GenerateOptions::default()
    };
    let mut generator = Generator::new(model, prompt, sampler, options)?;
    let mut count = 0;
    for token in generator.by_ref() {
        token?;
        count += 1;
    }
    if count != tokens {
        bail!("generated {count} tokens, expected {tokens}");
    }
    let stats = generator.stats();
    Ok(Run {
        prefill_tps: stats.prefill_tps(),
        decode_tps: stats.decode_tps(),
        ttft_ms: stats.prefill.as_secs_f64() * 1e3,
    })
}

/// Runs the benchmark and prints its table.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.list {
        for p in PRESETS {
            println!("{}", p.name);
        }
        return Ok(());
    }
    if args.prompt_tokens == 0 || args.gen_tokens == 0 || args.repeats == 0 {
        bail!("--prompt-tokens, --gen-tokens and --repeats must be positive");
    }
    engine::use_dedicated_stream()?;
    engine::wire_working_set()?;
    let (name, model) = match &args.synthetic {
        Some(preset) => (
            format!("{preset} (synthetic)"),
            Preset::find(preset)?.build(0)?,
        ),
        None => {
            let path = models::resolve(args.model.as_deref())?;
            let loaded = engine::loader::load(&path)
                .with_context(|| format!("loading {}", path.display()))?;
            (path.display().to_string(), loaded.model)
        }
    };
    let vocab = model.config.vocab_size as u32;
    // A fixed pseudo-random prompt (no tokenizer needed, same every run).
    let prompt: Vec<u32> = (0..args.prompt_tokens as u64)
        .map(|i| ((i.wrapping_mul(2_654_435_761) >> 7) % u64::from(vocab)) as u32)
        .collect();
    eprintln!("warm-up run...");
    measure(&model, &prompt, args.gen_tokens)?;
    mlx::memory::reset_peak_memory();
    let mut runs = Vec::with_capacity(args.repeats);
    for i in 0..args.repeats {
        let run = measure(&model, &prompt, args.gen_tokens)?;
        eprintln!(
            "run {}/{}: prefill {:.1} tok/s, decode {:.1} tok/s, TTFT {:.1} ms",
            i + 1,
            args.repeats,
            run.prefill_tps,
            run.decode_tps,
            run.ttft_ms
        );
        runs.push(run);
    }
    let pick = |f: fn(&Run) -> f64| Summary::of(&runs.iter().map(f).collect::<Vec<_>>());
    let device = mlx::device::default_device()?;
    let report = Report {
        model: name,
        backend: mlx::backend().to_string(),
        device: device.name().unwrap_or_else(|_| device.to_string()),
        mlx_version: mlx::version(),
        prompt_tokens: args.prompt_tokens,
        gen_tokens: args.gen_tokens,
        weight_bytes: model.weight_bytes(),
        prefill_tps: pick(|r| r.prefill_tps),
        decode_tps: pick(|r| r.decode_tps),
        ttft_ms: pick(|r| r.ttft_ms),
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
    println!();
    println!("| metric | median | mean | stddev | min | max |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, s) in [
        ("prefill tok/s", &r.prefill_tps),
        ("decode tok/s", &r.decode_tps),
        ("TTFT ms", &r.ttft_ms),
    ] {
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            s.median, s.mean, s.stddev, s.min, s.max
        );
    }
    println!();
    println!("peak memory: {:.3} GB", r.peak_memory_bytes as f64 / 1e9);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_take_the_middle_and_spread() {
        let s = Summary::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.mean, s.min, s.max), (2.0, 2.0, 1.0, 3.0));
        assert!((s.stddev - (2.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(Summary::of(&[1.0, 4.0]).median, 2.5);
    }
}
