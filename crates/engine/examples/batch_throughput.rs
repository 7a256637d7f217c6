//! Continuous batching measured in-process (no IPC, no HTTP): aggregate and
//! per-stream decode tok/s and time to first token at several numbers of
//! concurrent streams, and the time to first token of a chat resending a
//! long history with and without the prompt cache.
//!
//! ```text
//! cargo run --release -p engine --example batch_throughput -- \
//!     [--synthetic PRESET | --model DIR] [--concurrency 1,4,16,64] \
//!     [--prompt 128] [--tokens 128] [--history 2000] \
//!     [--arrivals 64 --every-ms 50] [--schema [--tokenizer DIR|GGUF]] [--qmv-max-rows N] [--json FILE]
//! ```
//!
//! `--qmv-max-rows N`: up to N rows (0 to 8), 4-bit products run the
//! project's CUDA kernel, past them MLX's (`mlx::set_custom_qmv_max_rows`).
//!
//! All streams start together with different prompts of `--prompt` tokens
//! and generate exactly `--tokens` tokens each (greedy, no stop tokens).
//! Aggregate tok/s counts every generated token over the time from the
//! first submission to the last token; per-stream tok/s is each stream's
//! tokens after its first over its decode time. With `--arrivals N`, N more
//! requests arrive one every `--every-ms` (a steady stream joining a running
//! batch) and their time to first token is reported. With `--schema`, each
//! level runs again with every stream under a strict JSON schema (a
//! grammar, see `engine::constraint`) and both aggregate tok/s are set side
//! by side; the grammar needs the model's tokenizer (`--model`'s own, or
//! `--tokenizer` for a synthetic model, whose vocabulary then matches it). Its array of objects has no end,
//! so a random model generates `--tokens` tokens under it too.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use engine::batch::{BatchConfig, Scheduler, SeqEvent, SeqRequest};
use engine::constraint::{Grammar, GrammarCompiler};
use engine::model::synthetic::Preset;
use engine::{Model, Sampler, SamplingParams, Tokenizer};

struct Args {
    synthetic: Option<String>,
    model: Option<PathBuf>,
    concurrency: Vec<usize>,
    prompt: usize,
    tokens: usize,
    history: usize,
    arrivals: usize,
    every_ms: u64,
    schema: bool,
    tokenizer: Option<PathBuf>,
    json: Option<PathBuf>,
}

fn args() -> Args {
    let mut a = Args {
        synthetic: None,
        model: None,
        concurrency: vec![1, 4, 16, 64],
        prompt: 128,
        tokens: 128,
        history: 2000,
        arrivals: 0,
        every_ms: 50,
        schema: false,
        tokenizer: None,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--synthetic" => a.synthetic = Some(value()),
            "--model" => a.model = Some(value().into()),
            "--concurrency" => {
                a.concurrency = value().split(',').map(|c| c.parse().unwrap()).collect();
            }
            "--prompt" => a.prompt = value().parse().unwrap(),
            "--tokens" => a.tokens = value().parse().unwrap(),
            "--history" => a.history = value().parse().unwrap(),
            "--arrivals" => a.arrivals = value().parse().unwrap(),
            "--every-ms" => a.every_ms = value().parse().unwrap(),
            "--json" => a.json = Some(value().into()),
            "--schema" => a.schema = true,
            "--tokenizer" => a.tokenizer = Some(value().into()),
            "--qmv-max-rows" => mlx::set_custom_qmv_max_rows(value().parse().unwrap()).unwrap(),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// A prompt of `len` token ids, different for every `seed`.
fn prompt(len: usize, seed: u64, vocab: usize) -> Vec<u32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) % vocab as u64) as u32
        })
        .collect()
}

/// A strict schema whose output never ends: an array of objects.
const SCHEMA: &str = r#"{"type": "object", "properties": {"items": {"type": "array",
  "items": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
  "score": {"type": "integer", "minimum": 0, "maximum": 100}, "tags": {"type": "array",
  "items": {"enum": ["a", "b", "c"]}, "maxItems": 3}}, "required": ["name", "score", "tags"],
  "additionalProperties": false}}}, "required": ["items"], "additionalProperties": false,
  "x-guidance": {"whitespace_flexible": false}}"#;

/// Streams under a grammar, when measured.
type Constrained<'a> = Option<&'a GrammarCompiler>;

fn request(
    model: &Model,
    id: u64,
    prompt: Vec<u32>,
    tokens: usize,
    grammar: Constrained<'_>,
) -> SeqRequest {
    let vocab = model.config.vocab_size as usize;
    let schema = Grammar::JsonSchema(SCHEMA.to_owned());
    SeqRequest {
        id,
        sampler: Sampler::new(SamplingParams::greedy(), vocab, &prompt).unwrap(),
        prompt,
        max_tokens: tokens,
        stop_ids: Vec::new(),
        constraint: grammar.map(|c| c.constraint(&schema).unwrap()),
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

struct Level {
    streams: usize,
    aggregate_tps: f64,
    per_stream_tps: f64,
    ttft_p50_ms: f64,
    ttft_p99_ms: f64,
}

/// Runs `streams` sequences to their end; the figures of the run.
fn run_level(
    model: &Model,
    config: BatchConfig,
    prompt_len: usize,
    tokens: usize,
    streams: usize,
    grammar: Constrained<'_>,
) -> Level {
    let vocab = model.config.vocab_size as usize;
    let mut s = Scheduler::new(model, config);
    let start = Instant::now();
    for id in 0..streams as u64 {
        s.submit(request(
            model,
            id,
            prompt(prompt_len, id + 1, vocab),
            tokens,
            grammar,
        ))
        .unwrap();
    }
    let mut first: HashMap<u64, Instant> = HashMap::new();
    let mut last: HashMap<u64, Instant> = HashMap::new();
    let mut generated = 0usize;
    while s.is_busy() {
        for event in s.step().unwrap() {
            if let SeqEvent::Token { id, .. } = event {
                let now = Instant::now();
                first.entry(id).or_insert(now);
                last.insert(id, now);
                generated += 1;
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut ttft: Vec<f64> = first
        .values()
        .map(|t| (*t - start).as_secs_f64() * 1e3)
        .collect();
    ttft.sort_by(f64::total_cmp);
    let per_stream: f64 = first
        .iter()
        .map(|(id, f)| (tokens - 1) as f64 / (last[id] - *f).as_secs_f64().max(1e-9))
        .sum::<f64>()
        / streams as f64;
    Level {
        streams,
        aggregate_tps: generated as f64 / elapsed,
        per_stream_tps: per_stream,
        ttft_p50_ms: percentile(&ttft, 0.5),
        ttft_p99_ms: percentile(&ttft, 0.99),
    }
}

/// Each level free and under [`SCHEMA`], interleaved: aggregate tok/s of
/// both and their ratio, printed and as JSON.
fn schema_levels(
    model: &Model,
    config: BatchConfig,
    a: &Args,
    compiler: &GrammarCompiler,
) -> serde_json::Value {
    for &c in &a.concurrency {
        run_level(model, config, a.prompt, 4, c, Some(compiler));
    }
    println!("\nstrict JSON schema against the same requests unconstrained:");
    println!("| streams | free tok/s | schema tok/s | schema / free |");
    println!("|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for &c in &a.concurrency {
        let free = run_level(model, config, a.prompt, a.tokens, c, None);
        let constrained = run_level(model, config, a.prompt, a.tokens, c, Some(compiler));
        let ratio = constrained.aggregate_tps / free.aggregate_tps;
        println!(
            "| {c} | {:.1} | {:.1} | {ratio:.3} |",
            free.aggregate_tps, constrained.aggregate_tps
        );
        rows.push(serde_json::json!({
            "streams": c, "free_tps": free.aggregate_tps,
            "schema_tps": constrained.aggregate_tps, "ratio": ratio,
        }));
    }
    serde_json::Value::Array(rows)
}

/// `n` requests arriving one every `every`: TTFT p50/p99 in ms and the
/// aggregate tok/s.
fn arrivals(
    model: &Model,
    config: BatchConfig,
    a: &Args,
    n: usize,
    every: Duration,
) -> (f64, f64, f64) {
    let vocab = model.config.vocab_size as usize;
    let mut s = Scheduler::new(model, config);
    let start = Instant::now();
    let mut submitted_at = HashMap::new();
    let mut ttft = Vec::new();
    let mut generated = 0usize;
    let mut next = 0usize;
    while next < n || s.is_busy() {
        while next < n && start.elapsed() >= every * next as u32 {
            let id = next as u64;
            s.submit(request(
                model,
                id,
                prompt(a.prompt, 1000 + id, vocab),
                a.tokens,
                None,
            ))
            .unwrap();
            submitted_at.insert(id, Instant::now());
            next += 1;
        }
        if !s.is_busy() {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        for event in s.step().unwrap() {
            if let SeqEvent::Token { id, .. } = event {
                generated += 1;
                if let Some(at) = submitted_at.remove(&id) {
                    ttft.push(at.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
    }
    ttft.sort_by(f64::total_cmp);
    (
        percentile(&ttft, 0.5),
        percentile(&ttft, 0.99),
        generated as f64 / start.elapsed().as_secs_f64(),
    )
}

/// Time to first token of turn 2 of a chat whose turn 1 had a history of
/// `history` tokens.
fn chat_ttft(model: &Model, config: BatchConfig, history: usize) -> Duration {
    let vocab = model.config.vocab_size as usize;
    let mut s = Scheduler::new(model, config);
    let turn1 = prompt(history, 99, vocab);
    s.submit(request(model, 1, turn1.clone(), 16, None))
        .unwrap();
    let mut answer = Vec::new();
    while s.is_busy() {
        for event in s.step().unwrap() {
            if let SeqEvent::Token { token, .. } = event {
                answer.push(token.token);
            }
        }
    }
    let mut turn2 = turn1;
    turn2.extend(answer);
    turn2.extend(prompt(24, 7, vocab));
    let start = Instant::now();
    s.submit(request(model, 2, turn2, 1, None)).unwrap();
    loop {
        for event in s.step().unwrap() {
            if matches!(event, SeqEvent::Token { .. }) {
                return start.elapsed();
            }
        }
    }
}

fn main() {
    let a = args();
    engine::use_dedicated_stream().unwrap();
    let given = a.tokenizer.as_ref().map(|path| {
        if path.is_dir() {
            Tokenizer::from_dir(path).unwrap()
        } else {
            Tokenizer::from_gguf_path(path).unwrap()
        }
    });
    let (name, model, tokenizer) = match (&a.synthetic, &a.model) {
        (Some(preset), None) => {
            let mut shape = Preset::find(preset).unwrap();
            if let Some(t) = &given {
                shape = shape.with_vocab(t.vocab_size() as i32);
            }
            (preset.clone(), shape.build(0).unwrap(), None)
        }
        (None, Some(dir)) => {
            let loaded = engine::loader::load(dir).unwrap();
            (
                dir.display().to_string(),
                loaded.model,
                Some(loaded.tokenizer),
            )
        }
        _ => panic!("give --synthetic PRESET or --model DIR"),
    };
    let tokenizer = given.or(tokenizer);
    println!(
        "{name} on {} ({}), prompts of {} tokens, {} generated each",
        mlx::device::default_device()
            .and_then(|d| d.name())
            .unwrap_or_default(),
        mlx::backend(),
        a.prompt,
        a.tokens
    );
    let max = a.concurrency.iter().copied().max().unwrap_or(1);
    let config = BatchConfig {
        max_batch: max,
        kv_budget: usize::MAX,
        ..BatchConfig::default()
    };
    // Warm-up, not measured: the GPU backends compile kernels and plan
    // attention per shape the first time they see it, so every level's
    // batch shapes and the chat's prefill shapes go through once first.
    for &c in &a.concurrency {
        run_level(&model, config, a.prompt, 4, c, None);
    }
    println!(
        "| streams | aggregate tok/s | × 1 stream | per-stream tok/s | TTFT p50 ms | TTFT p99 ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let mut levels = Vec::new();
    for &c in &a.concurrency {
        let level = run_level(&model, config, a.prompt, a.tokens, c, None);
        let base = levels
            .first()
            .map_or(level.aggregate_tps, |l: &Level| l.aggregate_tps);
        println!(
            "| {} | {:.1} | {:.2} | {:.1} | {:.1} | {:.1} |",
            level.streams,
            level.aggregate_tps,
            level.aggregate_tps / base,
            level.per_stream_tps,
            level.ttft_p50_ms,
            level.ttft_p99_ms
        );
        levels.push(level);
    }
    let schema = a.schema.then(|| {
        let tokenizer = tokenizer
            .as_ref()
            .expect("--schema needs the model's tokenizer: --model DIR or --tokenizer");
        let vocab = model.config.vocab_size as usize;
        let compiler = GrammarCompiler::new(tokenizer, vocab).unwrap();
        schema_levels(&model, config, &a, &compiler)
    });
    let arrival = (a.arrivals > 0).then(|| {
        let every = Duration::from_millis(a.every_ms);
        let (p50, p99, tps) = arrivals(&model, config, &a, a.arrivals, every);
        println!(
            "\n{} requests arriving every {} ms: TTFT p50 {p50:.1} ms, p99 {p99:.1} ms, \
             {tps:.1} tok/s aggregate",
            a.arrivals, a.every_ms
        );
        serde_json::json!({
            "requests": a.arrivals, "every_ms": a.every_ms,
            "ttft_p50_ms": p50, "ttft_p99_ms": p99, "aggregate_tps": tps,
        })
    });
    let uncached = BatchConfig {
        prefix_cache: 0,
        ..config
    };
    chat_ttft(&model, uncached, a.history);
    chat_ttft(&model, config, a.history);
    let cold = chat_ttft(&model, uncached, a.history);
    let warm = chat_ttft(&model, config, a.history);
    println!(
        "\nchat turn 2 after a {}-token history: TTFT {:.1} ms without the prompt cache, \
         {:.1} ms with it ({:.1}× faster)",
        a.history,
        cold.as_secs_f64() * 1e3,
        warm.as_secs_f64() * 1e3,
        cold.as_secs_f64() / warm.as_secs_f64()
    );
    if let Some(path) = &a.json {
        let levels: Vec<serde_json::Value> = levels
            .iter()
            .map(|l| {
                serde_json::json!({
                    "streams": l.streams, "aggregate_tps": l.aggregate_tps,
                    "per_stream_tps": l.per_stream_tps, "ttft_p50_ms": l.ttft_p50_ms,
                    "ttft_p99_ms": l.ttft_p99_ms,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "model": name, "backend": mlx::backend().to_string(), "prompt": a.prompt,
            "tokens": a.tokens, "levels": levels, "history": a.history,
            "chat_ttft_cold_ms": cold.as_secs_f64() * 1e3,
            "chat_ttft_cached_ms": warm.as_secs_f64() * 1e3,
            "arrivals": arrival,
            "schema": schema,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    }
}
