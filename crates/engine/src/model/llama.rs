//! Llama 2 and 3 (and SmolLM, which is Llama-shaped): mlx-lm's
//! `mlx_lm/models/llama.py`. Optional biases on the attention
//! (`attention_bias`) and MLP (`mlp_bias`) projections; RoPE optionally
//! rescaled (`rope_scaling` linear or `llama3`). Layers listed as
//! `sliding_attention` in `layer_types` attend to the last `sliding_window`
//! positions only.

use serde::Deserialize;

use super::attention::AttentionSpec;
use super::base::LanguageModel;
use super::config::ModelConfig;
use super::registry::Family;
use super::rope::RopeArgs;
use super::transformer::{DecoderSpec, Transformer};
use super::weights::Weights;
use crate::error::{EngineError, Result};

/// The `llama` family.
pub struct Llama;

/// `llama.py`'s `ModelArgs` beyond the common config.
#[derive(Debug, Clone, Deserialize)]
pub struct LlamaArgs {
    #[serde(flatten)]
    pub rope: RopeArgs,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    /// Attention kind per layer (`full_attention` / `sliding_attention`).
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    /// The window of the sliding layers.
    #[serde(default)]
    pub sliding_window: Option<i32>,
}

impl LlamaArgs {
    /// Per layer, its sliding window (none for full-attention layers).
    pub fn layer_windows(&self) -> Result<Vec<Option<i32>>> {
        let Some(types) = &self.layer_types else {
            return Ok(Vec::new());
        };
        types
            .iter()
            .map(|kind| match kind.as_str() {
                "full_attention" => Ok(None),
                "sliding_attention" => match self.sliding_window {
                    Some(w) if w > 0 => Ok(Some(w)),
                    _ => Err(EngineError::Config(
                        "sliding_attention layers need a positive sliding_window".into(),
                    )),
                },
                other => Err(EngineError::Config(format!(
                    "layer type {other:?} is not supported (full_attention, sliding_attention)"
                ))),
            })
            .collect()
    }
}

/// Drops what mlx-lm's Llama-style `sanitize` drops: the rotary
/// `inv_freq` buffers some checkpoints carry (the tied head's `lm_head.*`
/// are dropped where the head is built).
pub fn sanitize_rotary(weights: &mut Weights) {
    weights.discard(|name| name.ends_with("self_attn.rotary_emb.inv_freq"));
}

impl Llama {
    /// The standard decoder of Llama's shape from `args`.
    pub fn decoder(args: &LlamaArgs, config: &ModelConfig) -> Result<DecoderSpec> {
        let layer_windows = args.layer_windows()?;
        if !layer_windows.is_empty() && layer_windows.len() != config.num_hidden_layers as usize {
            return Err(EngineError::Config(format!(
                "layer_types lists {} layers of {}",
                layer_windows.len(),
                config.num_hidden_layers
            )));
        }
        Ok(DecoderSpec {
            attention: AttentionSpec {
                qkv_bias: args.attention_bias,
                o_bias: args.attention_bias,
                ..AttentionSpec::plain(config, args.rope.rope(config.head_dim(), 10_000.0)?)
            },
            mlp_bias: args.mlp_bias,
            tied: config.tie_word_embeddings_or(true),
            layer_windows,
        })
    }
}

impl Family for Llama {
    const MODEL_TYPES: &'static [&'static str] = &["llama"];
    const SPLITS: bool = true;
    type Args = LlamaArgs;

    fn sanitize(_: &LlamaArgs, _: &ModelConfig, weights: &mut Weights) -> Result<()> {
        sanitize_rotary(weights);
        Ok(())
    }

    fn build(
        args: LlamaArgs,
        config: &ModelConfig,
        weights: &mut Weights,
    ) -> Result<Box<dyn LanguageModel>> {
        let spec = Llama::decoder(&args, config)?;
        Ok(Box::new(Transformer::load(weights, config, &spec)?))
    }
}
