//! The families added on the model layer after the first (Phi-3, GLM-4-MoE,
//! Gemma 3, gpt-oss, DeepSeek-V3, Llama with sliding-window layers) in the batch
//! scheduler, on mlx-lm's
//! tiny checkpoints: greedy tokens in a batch (joining mid-flight, whole
//! and chunked prefill, prompts of 3 to 150 tokens against a window of 8)
//! equal them alone, and a prompt-cache hit gives the logits of a cold
//! prefill.

#![allow(clippy::unwrap_used)]

mod common;

use common::batching::{
    assert_greedy_batched_equals_alone, assert_prompt_cache_hit_equals_cold_prefill,
};
use common::mlx_lm::load;

const FAMILIES: [&str; 11] = [
    "phi3_f32_longrope_partial",
    "phi3_q4_g32_tied",
    "glm4_moe_f32_e8_g4_k3",
    "glm4_moe_q4_g32_e6_k2",
    "llama_f32_sliding8",
    "gemma3_text_f32_pattern3",
    "gemma3_q4_g32_nested_tied",
    "gpt_oss_f32",
    "gpt_oss_mxfp4_g32",
    "deepseek_v3_f32_e8_g4_k3_yarn_hf",
    "deepseek_v3_q4_g32_e6_k2",
];

#[test]
fn greedy_outputs_in_a_batch_equal_the_outputs_alone() {
    for name in FAMILIES {
        assert_greedy_batched_equals_alone(name, &load(name));
    }
}

#[test]
fn a_prompt_cache_hit_gives_the_logits_of_a_cold_prefill() {
    for name in FAMILIES {
        assert_prompt_cache_hit_equals_cold_prefill(name, &load(name));
    }
}

#[test]
fn latent_attention_counts_its_compressed_cache_per_position() {
    // DeepSeek-V3 caches a 32-feature latent and a 16-feature rotary key per
    // layer and position, not keys and values of every head.
    let model = load("deepseek_v3_q4_g32_e6_k2");
    assert_eq!(engine::model::kv_width(&model.config).unwrap(), 32 + 16);
    assert_eq!(model.kv_bytes_per_position(), 3 * (32 + 16) * 4);
    let llama = load("gpt_oss_f32");
    assert_eq!(
        engine::model::kv_width(&llama.config).unwrap(),
        2 * llama.config.num_kv_heads() * llama.config.head_dim()
    );
}
