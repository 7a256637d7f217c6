//! Mistral: the Llama architecture under another `model_type`. mlx-lm maps
//! `mistral` to `llama.py` (`MODEL_REMAPPING`) and so does this engine; like
//! mlx-lm it attends over the whole context (Mistral 7B v0.1's 4096-token
//! `sliding_window` only matters past 4096 tokens, where it is not applied).

use super::base::LanguageModel;
use super::config::ModelConfig;
use super::llama::{Llama, LlamaArgs};
use super::registry::Family;
use super::weights::Weights;
use crate::error::Result;

/// The `mistral` family: Llama's arguments, sanitizing and layers.
pub struct Mistral;

impl Family for Mistral {
    const MODEL_TYPES: &'static [&'static str] = &["mistral"];
    type Args = LlamaArgs;

    fn sanitize(args: &LlamaArgs, config: &ModelConfig, weights: &mut Weights) -> Result<()> {
        Llama::sanitize(args, config, weights)
    }

    fn build(
        args: LlamaArgs,
        config: &ModelConfig,
        weights: &mut Weights,
    ) -> Result<Box<dyn LanguageModel>> {
        Llama::build(args, config, weights)
    }
}
