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

use common::batching::{
    assert_greedy_batched_equals_alone, assert_prompt_cache_hit_equals_cold_prefill,
};
use common::mlx_lm::{load, reference_dir};

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
    for name in MOES {
        assert_prompt_cache_hit_equals_cold_prefill(name, &load(name));
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
