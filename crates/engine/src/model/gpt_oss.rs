//! OpenAI's gpt-oss (20b, 120b): mlx-lm's `mlx_lm/models/gpt_oss.py`.
//!
//! The standard pre-norm decoder with:
//! - attention with biases on every projection, a learned sink logit per
//!   query head in each softmax (`self_attn.sinks`), RoPE with YaRN
//!   scaling, and layers alternating between a sliding window of
//!   `sliding_window` positions and full attention (`layer_types`, by
//!   default sliding first);
//! - a sparse block in every layer: the router `mlp.router` (with a bias)
//!   picks each token's `num_experts_per_tok` largest logits and weighs
//!   them by a softmax over those, and the experts `mlp.experts` (biased
//!   projections) gate with gpt-oss's clipped activation
//!   ([`Experts::GptOss`]); no shared expert;
//! - an untied head.
//!
//! mlx-community's checkpoints store the experts in `mxfp4` beside 8-bit
//! affine layers (per-layer overrides); the original checkpoints' packed
//! `*_blocks` / `*_scales` tensors are refused: convert them with mlx-lm.

use serde::Deserialize;

use super::attention::AttentionSpec;
use super::base::LanguageModel;
use super::config::ModelConfig;
use super::moe::{Experts, FeedForward, MoeSpec, Routing, Shared, SparseMoe};
use super::registry::Family;
use super::rope::{RopeScaling, initialize_rope};
use super::transformer::{DecoderSpec, Transformer};
use super::weights::Weights;
use crate::error::{EngineError, Result};

/// The `gpt_oss` family.
pub struct GptOss;

/// `gpt_oss.py`'s `ModelArgs` beyond the common config.
#[derive(Debug, Clone, Deserialize)]
pub struct GptOssArgs {
    #[serde(default = "default_experts")]
    pub num_local_experts: i32,
    #[serde(default = "default_top_k")]
    pub num_experts_per_tok: i32,
    #[serde(default = "default_window")]
    pub sliding_window: i32,
    #[serde(default = "default_theta")]
    pub rope_theta: f32,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
}

fn default_experts() -> i32 {
    128
}

fn default_top_k() -> i32 {
    4
}

fn default_window() -> i32 {
    128
}

fn default_theta() -> f32 {
    150_000.0
}

/// The clipped SwiGLU of gpt-oss's experts (mlx-lm's `SwigluOAI`
/// defaults).
const ALPHA: f32 = 1.702;
const LIMIT: f32 = 7.0;

impl GptOssArgs {
    /// Per layer, its sliding window (none for full attention).
    fn layer_windows(&self, layers: i32) -> Result<Vec<Option<i32>>> {
        let kinds: Vec<String> = match &self.layer_types {
            Some(kinds) => kinds.clone(),
            None => (0..layers)
                .map(|i| {
                    if i % 2 == 0 {
                        "sliding_attention"
                    } else {
                        "full_attention"
                    }
                    .to_owned()
                })
                .collect(),
        };
        if kinds.len() != layers as usize {
            return Err(EngineError::Config(format!(
                "layer_types lists {} layers of {layers}",
                kinds.len()
            )));
        }
        kinds
            .iter()
            .map(|kind| match kind.as_str() {
                "sliding_attention" => Ok(Some(self.sliding_window)),
                "full_attention" => Ok(None),
                other => Err(EngineError::Config(format!(
                    "layer type {other:?} is not supported (full_attention, sliding_attention)"
                ))),
            })
            .collect()
    }
}

impl Family for GptOss {
    const MODEL_TYPES: &'static [&'static str] = &["gpt_oss"];
    type Args = GptOssArgs;

    fn sanitize(_: &GptOssArgs, _: &ModelConfig, weights: &mut Weights) -> Result<()> {
        if let Some((name, _)) = weights
            .iter()
            .find(|(name, _)| name.ends_with("_blocks") || name.ends_with("_scales"))
        {
            return Err(EngineError::Weights(format!(
                "{name} is in the original gpt-oss layout; convert the checkpoint with mlx-lm \
                 (mlx_lm.convert) first"
            )));
        }
        Ok(())
    }

    fn build(
        args: GptOssArgs,
        config: &ModelConfig,
        weights: &mut Weights,
    ) -> Result<Box<dyn LanguageModel>> {
        if args.sliding_window < 1 {
            return Err(EngineError::Config(format!(
                "sliding_window is {}, must be positive",
                args.sliding_window
            )));
        }
        let rope = initialize_rope(
            config.head_dim(),
            args.rope_theta,
            false,
            args.rope_scaling.as_ref(),
        )?;
        let spec = DecoderSpec {
            attention: AttentionSpec {
                qkv_bias: true,
                o_bias: true,
                sinks: true,
                ..AttentionSpec::plain(config, rope)
            },
            mlp_bias: false,
            tied: false,
            layer_windows: args.layer_windows(config.num_hidden_layers)?,
        };
        let moe = MoeSpec {
            num_experts: args.num_local_experts,
            top_k: args.num_experts_per_tok,
            expert_hidden: config.intermediate_size,
            routing: Routing::TopKSoftmax,
            experts: Experts::GptOss {
                alpha: ALPHA,
                limit: LIMIT,
            },
            shared_expert: Shared::None,
        };
        let model = Transformer::load_with(weights, config, &spec, &|w, _, prefix| {
            let block = SparseMoe::load(w, &format!("{prefix}.mlp"), config, &moe)?;
            Ok(FeedForward::Sparse(Box::new(block)))
        })?;
        Ok(Box::new(model))
    }
}
