//! Mistral: the Llama architecture under another `model_type`. mlx-lm maps
//! `mistral` to `llama.py` (`MODEL_REMAPPING`) and so does this engine; like
//! mlx-lm it attends over the whole context (Mistral 7B v0.1's 4096-token
//! `sliding_window` only matters past 4096 tokens, where it is not applied).

use super::config::ModelConfig;
use super::transformer::Family;
use crate::error::Result;

/// The `Family` of a `mistral` config: that of Llama.
pub fn family(config: &ModelConfig) -> Result<Family> {
    super::llama::family(config)
}
