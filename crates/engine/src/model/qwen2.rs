//! Qwen2 and Qwen2.5: mlx-lm's `mlx_lm/models/qwen2.py`. Llama's design
//! with biases on the q, k and v projections (none on o or the MLP), and
//! rope θ 1,000,000 unless the config says otherwise.

use serde::Deserialize;

use super::attention::AttentionSpec;
use super::base::LanguageModel;
use super::config::ModelConfig;
use super::llama::sanitize_rotary;
use super::registry::Family;
use super::rope::RopeArgs;
use super::transformer::{DecoderSpec, Transformer};
use super::weights::Weights;
use crate::error::Result;

/// The `qwen2` family.
pub struct Qwen2;

/// `qwen2.py`'s `ModelArgs` beyond the common config.
#[derive(Debug, Clone, Deserialize)]
pub struct Qwen2Args {
    #[serde(flatten)]
    pub rope: RopeArgs,
}

impl Family for Qwen2 {
    const MODEL_TYPES: &'static [&'static str] = &["qwen2"];
    const SPLITS: bool = true;
    type Args = Qwen2Args;

    fn sanitize(_: &Qwen2Args, _: &ModelConfig, weights: &mut Weights) -> Result<()> {
        sanitize_rotary(weights);
        Ok(())
    }

    fn build(
        args: Qwen2Args,
        config: &ModelConfig,
        weights: &mut Weights,
    ) -> Result<Box<dyn LanguageModel>> {
        let spec = DecoderSpec {
            attention: AttentionSpec {
                qkv_bias: true,
                ..AttentionSpec::plain(config, args.rope.rope(config.head_dim(), 1_000_000.0)?)
            },
            mlp_bias: false,
            tied: config.tie_word_embeddings_or(true),
            layer_windows: Vec::new(),
        };
        Ok(Box::new(Transformer::load(weights, config, &spec)?))
    }
}
