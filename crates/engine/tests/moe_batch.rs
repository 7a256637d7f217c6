//! Mixture-of-Experts models (Qwen3-MoE, Mixtral, and the hybrids
//! Qwen3-Next and Qwen3.5-MoE with experts) in continuous batching,
//! on the tiny checkpoints mlx-lm writes (`tests/data/mlx_lm_reference.py`):
//! a sequence's tokens are the same alone, prefilled together with others
//! (left-padded: padding rows are routed too, and must not change what the
//! real rows get), joining a running batch, and prefilled in chunks (the
//! experts' rows sorted or not by how many are routed at once); a
//! prompt-cache hit gives the logits of a cold prefill; every expert counts
//! in the weights' memory.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use engine::batch::{BatchConfig, Scheduler, SeqEvent, SeqReport, SeqRequest};
use engine::generate::{GenerateOptions, Generator};
use engine::{Model, SampledToken, Sampler, SamplingParams};

/// The reference checkpoints, written once per test run.
fn reference_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = std::env::var_os("MLXD_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("../../.venv/bin/python"));
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(python)
            .arg(root.join("tests/data/mlx_lm_reference.py"))
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
    .path()
}

/// Attention-only models with experts.
const MOES: [&str; 4] = [
    "qwen3_moe_f32_e6_k3_norm",
    "qwen3_moe_q4_g64_gate8",
    "mixtral_f32_e5_k2",
    "mixtral_q4_g32_gate8_hf",
];

/// Gated DeltaNet hybrids with experts (`tests/hybrid.rs` checks their
/// prompt cache, which reuses recurrent state only at an entry's end).
const HYBRID_MOES: [&str; 2] = ["qwen3_next_moe_f32_e6_k2_step2", "qwen3_5_moe_q4_g32_e6_k1"];

fn load(name: &str) -> Model {
    Model::load_dir(&reference_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Eight prompts of 3 to 52 tokens, and one of 150 (several prefill
/// chunks, and more routed rows than the experts sort from).
fn prompts() -> Vec<Vec<u32>> {
    let mut out: Vec<Vec<u32>> = (0..8u32)
        .map(|i| {
            let len = 3 + 7 * i;
            (0..len).map(|j| (j * 31 + i * 17 + 5) % 256).collect()
        })
        .collect();
    out.push((0..150u32).map(|j| (j * 7 + 3) % 256).collect());
    out
}

fn request(
    model: &Model,
    id: u64,
    prompt: &[u32],
    params: &SamplingParams,
    n: usize,
) -> SeqRequest {
    let vocab = model.config.vocab_size as usize;
    SeqRequest {
        id,
        prompt: prompt.to_vec(),
        sampler: Sampler::new(params.clone(), vocab, prompt).unwrap(),
        max_tokens: n,
        stop_ids: Vec::new(),
        constraint: None,
    }
}

fn alone(model: &Model, prompt: &[u32], params: &SamplingParams, n: usize) -> Vec<SampledToken> {
    let options = GenerateOptions {
        max_tokens: n,
        ..GenerateOptions::default()
    };
    let vocab = model.config.vocab_size as usize;
    let sampler = Sampler::new(params.clone(), vocab, prompt).unwrap();
    Generator::new(model, prompt, sampler, options)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

struct Run {
    tokens: HashMap<u64, Vec<SampledToken>>,
    reports: HashMap<u64, SeqReport>,
}

/// Steps until every sequence ended, submitting `later[k]` after step `k`.
fn run(s: &mut Scheduler, mut later: HashMap<usize, Vec<SeqRequest>>) -> Run {
    let mut out = Run {
        tokens: HashMap::new(),
        reports: HashMap::new(),
    };
    let mut step = 0;
    while s.is_busy() || !later.is_empty() {
        for event in s.step().unwrap() {
            match event {
                SeqEvent::Token { id, token } => out.tokens.entry(id).or_default().push(token),
                SeqEvent::Done(r) => {
                    out.reports.insert(r.id, r);
                }
            }
        }
        for req in later.remove(&step).unwrap_or_default() {
            s.submit(req).unwrap();
        }
        step += 1;
        assert!(step < 10_000, "the scheduler never finished");
    }
    out
}

fn ids(tokens: &[SampledToken]) -> Vec<u32> {
    tokens.iter().map(|t| t.token).collect()
}

#[test]
fn greedy_outputs_in_a_batch_equal_the_outputs_alone() {
    let params = SamplingParams::greedy();
    let n = 10;
    for name in MOES.into_iter().chain(HYBRID_MOES) {
        let model = load(name);
        let want: Vec<Vec<u32>> = prompts()
            .iter()
            .map(|p| ids(&alone(&model, p, &params, n)))
            .collect();
        // Together (one left-padded pass for the short ones), with half of
        // them joining the running batch later; then with prefill pieces of
        // 32 tokens, so the long prompt is cut while others decode.
        for chunk in [512, 32] {
            let config = BatchConfig {
                prefill_chunk: chunk,
                ..BatchConfig::default()
            };
            let mut s = Scheduler::new(&model, config);
            let mut later: HashMap<usize, Vec<SeqRequest>> = HashMap::new();
            for (i, p) in prompts().iter().enumerate() {
                let req = request(&model, i as u64, p, &params, n);
                if i % 2 == 0 {
                    s.submit(req).unwrap();
                } else {
                    later.entry(2 * i).or_default().push(req);
                }
            }
            let got = run(&mut s, later);
            for (i, want) in want.iter().enumerate() {
                assert_eq!(
                    &ids(&got.tokens[&(i as u64)]),
                    want,
                    "{name}: prompt {i}, chunk {chunk}"
                );
            }
        }
    }
}

#[test]
fn a_prompt_cache_hit_gives_the_logits_of_a_cold_prefill() {
    let params = SamplingParams {
        logprobs: true,
        top_logprobs: 20,
        ..SamplingParams::greedy()
    };
    let history: Vec<u32> = (0..90u32).map(|i| (i * 13 + 7) % 256).collect();
    let n = 6;
    for name in MOES {
        let model = load(name);
        let mut s = Scheduler::new(&model, BatchConfig::default());
        s.submit(request(&model, 1, &history, &params, n)).unwrap();
        run(&mut s, HashMap::new());
        // A prompt that shares the first 60 tokens of the cached one.
        let mut branch = history[..60].to_vec();
        branch.extend([1, 2, 3, 4]);
        s.submit(request(&model, 2, &branch, &params, n)).unwrap();
        let warm = run(&mut s, HashMap::new());
        assert!(warm.reports[&2].cached_tokens >= 59, "{name}");
        let cold = alone(&model, &branch, &params, n);
        assert_eq!(ids(&warm.tokens[&2]), ids(&cold), "{name}");
        for (w, c) in warm.tokens[&2].iter().zip(&cold) {
            let (w, c) = (w.logprobs.as_ref().unwrap(), c.logprobs.as_ref().unwrap());
            for ((wi, wl), (ci, cl)) in w.top.iter().zip(&c.top) {
                assert_eq!(wi, ci, "{name}");
                assert!((wl - cl).abs() < 1e-4, "{name}: {wl} vs {cl}");
            }
        }
    }
}

#[test]
fn every_expert_counts_in_the_weights_and_attention_alone_in_the_cache() {
    // Two layers of 6 experts, each three [32, 64] f32 matrices, all
    // resident whichever a token is routed to.
    let name = "qwen3_moe_f32_e6_k3_norm";
    let model = load(name);
    let stored =
        mlx::io::load_safetensors(reference_dir().join(name).join("model.safetensors")).unwrap();
    let total: usize = stored.arrays.values().map(mlx::Array::nbytes).sum();
    let experts: usize = stored
        .arrays
        .iter()
        .filter(|(k, _)| k.contains(".switch_mlp."))
        .map(|(_, v)| v.nbytes())
        .sum();
    assert_eq!(experts, 2 * 3 * 6 * 32 * 64 * 4);
    assert_eq!(model.weight_bytes(), total);
    // KV for the attention of both layers (2 heads of 16, f32); no state.
    assert_eq!(model.kv_bytes_per_position(), 2 * 2 * 2 * 16 * 4);
    assert_eq!(model.state_bytes_per_row(), 0);
}
