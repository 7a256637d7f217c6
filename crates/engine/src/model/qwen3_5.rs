//! Qwen3.5 / Qwen3.6 (dense): mlx-lm's `mlx_lm/models/qwen3_5.py`. The
//! hybrid decoder of Qwen3-Next ([`Hybrid`]) with the linear-attention
//! projections stored apart (`in_proj_qkv`, `in_proj_z`, `in_proj_b`,
//! `in_proj_a`), inside a multimodal-style checkpoint: the config nests the
//! language model under `text_config` (`model_type` `qwen3_5`, text
//! `qwen3_5_text`), its tensors live under `language_model.` (mlx-lm's
//! layout; a Hugging Face checkpoint's `model.language_model.` is renamed
//! to it), and the vision tower's and multi-token prediction's tensors are
//! skipped with a log line. RoPE θ and the rotating fraction of each head
//! come from `rope_parameters` (defaults 100,000 and 0.25). With
//! `num_experts > 0` every layer's MLP is a sparse Mixture-of-Experts block
//! with a gated shared expert (`norm_topk_prob` by default), as in
//! `qwen3_5_moe.rs`.

use serde::Deserialize;

use super::base::{CacheKind, LanguageModel};
use super::config::ModelConfig;
use super::linear_attention::Projections;
use super::qwen3_next::{Hybrid, HybridArgs, HybridLayout, sanitize_hybrid};
use super::registry::Family;
use super::weights::Weights;
use crate::error::Result;

/// The `qwen3_5` family.
pub struct Qwen3_5;

/// `qwen3_5.py`'s `TextModelArgs` (its defaults where a key is absent).
#[derive(Debug, Clone, Deserialize)]
pub struct Qwen3_5Args {
    #[serde(flatten)]
    pub hybrid: HybridArgs,
}

impl Family for Qwen3_5 {
    const MODEL_TYPES: &'static [&'static str] = &["qwen3_5", "qwen3_5_text"];
    type Args = Qwen3_5Args;

    fn sanitize(_: &Qwen3_5Args, _: &ModelConfig, weights: &mut Weights) -> Result<()> {
        weights.skip("vision", |name| {
            name.starts_with("vision_tower") || name.starts_with("model.visual")
        });
        weights.rename(|name| {
            if let Some(rest) = name.strip_prefix("model.language_model") {
                Some(format!("language_model.model{rest}"))
            } else if name.starts_with("language_model.") {
                None
            } else {
                Some(format!("language_model.{name}"))
            }
        })?;
        sanitize_hybrid(weights)
    }

    fn cache_kinds(args: &Qwen3_5Args, config: &ModelConfig) -> Result<Vec<CacheKind>> {
        args.hybrid.cache_kinds(config)
    }

    fn build(
        args: Qwen3_5Args,
        config: &ModelConfig,
        weights: &mut Weights,
    ) -> Result<Box<dyn LanguageModel>> {
        let layout = HybridLayout {
            root: "language_model.model",
            head: "language_model.lm_head",
            projections: Projections::Split,
            default_theta: 100_000.0,
            default_partial: 0.25,
            rope_parameters_only: true,
            moe_every_layer: true,
            default_norm_topk_prob: true,
        };
        Ok(Box::new(Hybrid::load(
            weights,
            config,
            &args.hybrid,
            layout,
        )?))
    }
}
