//! Qwen3 (dense): mlx-lm's `mlx_lm/models/qwen3.py`. No projection
//! biases; each head of q and k goes through its own RMSNorm
//! (`self_attn.q_norm`, `self_attn.k_norm`, over `head_dim`) before RoPE;
//! `head_dim` is explicit in the config.

use super::config::ModelConfig;
use super::transformer::Family;
use crate::error::{EngineError, Result};

/// The `Family` of a `qwen3` config.
pub fn family(config: &ModelConfig) -> Result<Family> {
    if config.head_dim.is_none() {
        return Err(EngineError::Config(
            "qwen3 configs must give head_dim".into(),
        ));
    }
    Ok(Family {
        qkv_bias: false,
        o_bias: false,
        mlp_bias: false,
        qk_norm: true,
    })
}
