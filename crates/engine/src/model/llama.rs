//! Llama 2 and 3 (and SmolLM, which is Llama-shaped): mlx-lm's
//! `mlx_lm/models/llama.py`. Optional biases on the attention
//! (`attention_bias`) and MLP (`mlp_bias`) projections; RoPE optionally
//! rescaled (`rope_scaling` linear or `llama3`). Sliding-window layers
//! (`layer_types`) are not supported and are refused at load.

use super::config::ModelConfig;
use super::transformer::Family;
use crate::error::{EngineError, Result};

/// The `Family` of a `llama` config.
pub fn family(config: &ModelConfig) -> Result<Family> {
    if config.has_sliding_window_layers() {
        return Err(EngineError::Config(
            "llama models with sliding-window layers are not supported".into(),
        ));
    }
    Ok(Family {
        qkv_bias: config.attention_bias,
        o_bias: config.attention_bias,
        mlp_bias: config.mlp_bias,
        qk_norm: false,
    })
}
