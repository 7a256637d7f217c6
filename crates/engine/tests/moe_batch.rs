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

mod common;

use std::collections::HashMap;

use common::batching::{alone, assert_greedy_batched_equals_alone, ids, request, run};
use common::mlx_lm::{load, reference_dir};
use engine::SamplingParams;
use engine::batch::{BatchConfig, Scheduler};

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

#[test]
fn greedy_outputs_in_a_batch_equal_the_outputs_alone() {
    for name in MOES.into_iter().chain(HYBRID_MOES) {
        assert_greedy_batched_equals_alone(name, &load(name));
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
