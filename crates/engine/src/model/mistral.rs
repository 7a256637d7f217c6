//! Mistral: the Llama architecture under another `model_type`. mlx-lm maps
//! `mistral` to `llama.py` (`MODEL_REMAPPING`) and so does this engine; like
//! mlx-lm it applies `sliding_window` only to the layers `layer_types`
//! marks `sliding_attention` (Mistral 7B v0.1's config gives a 4096-token
//! window and no `layer_types`: it attends over the whole context, as in
//! mlx-lm).

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
    const SPLITS: bool = true;
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
