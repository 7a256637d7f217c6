//! Qwen2 and Qwen2.5: mlx-lm's `mlx_lm/models/qwen2.py`. Llama's design
//! with biases on the q, k and v projections (none on o or the MLP), and
//! rope θ 1,000,000 unless the config says otherwise.

use super::config::ModelConfig;
use super::transformer::Family;
use crate::error::Result;

/// The `Family` of a `qwen2` config.
pub fn family(_config: &ModelConfig) -> Result<Family> {
    Ok(Family {
        qkv_bias: true,
        o_bias: false,
        mlp_bias: false,
        qk_norm: false,
    })
}
