//! Qwen3 (dense): mlx-lm's `mlx_lm/models/qwen3.py`. No projection
//! biases; each head of q and k goes through its own RMSNorm
//! (`self_attn.q_norm`, `self_attn.k_norm`, over `head_dim`) before RoPE;
//! `head_dim` is explicit in the config.

use serde::Deserialize;

use super::attention::AttentionSpec;
use super::base::LanguageModel;
use super::config::ModelConfig;
use super::llama::sanitize_rotary;
use super::registry::Family;
use super::rope::RopeArgs;
use super::transformer::{DecoderSpec, Transformer};
use super::weights::Weights;
use crate::error::{EngineError, Result};

/// The `qwen3` family.
pub struct Qwen3;

/// `qwen3.py`'s `ModelArgs` beyond the common config.
#[derive(Debug, Clone, Deserialize)]
pub struct Qwen3Args {
    #[serde(flatten)]
    pub rope: RopeArgs,
}

impl Family for Qwen3 {
    const MODEL_TYPES: &'static [&'static str] = &["qwen3"];
    const SPLITS: bool = true;
    type Args = Qwen3Args;

    fn sanitize(_: &Qwen3Args, _: &ModelConfig, weights: &mut Weights) -> Result<()> {
        sanitize_rotary(weights);
        Ok(())
    }

    fn build(
        args: Qwen3Args,
        config: &ModelConfig,
        weights: &mut Weights,
    ) -> Result<Box<dyn LanguageModel>> {
        if config.head_dim.is_none() {
            return Err(EngineError::Config(
                "qwen3 configs must give head_dim".into(),
            ));
        }
        let spec = DecoderSpec {
            attention: AttentionSpec {
                qk_norm: Some(config.rms_norm_eps),
                ..AttentionSpec::plain(config, args.rope.rope(config.head_dim(), 1_000_000.0)?)
            },
            mlp_bias: false,
            tied: config.tie_word_embeddings_or(true),
            layer_windows: Vec::new(),
        };
        Ok(Box::new(Transformer::load(weights, config, &spec)?))
    }
}
