//! Qwen3.5-MoE / Qwen3.6-MoE (e.g. Qwen3.5-35B-A3B): mlx-lm's
//! `mlx_lm/models/qwen3_5_moe.py`. The Qwen3.5 hybrid decoder
//! (`qwen3_5.rs`) with every layer's MLP a sparse Mixture-of-Experts block:
//! softmax routing to `num_experts_per_tok` experts (renormalized unless
//! `norm_topk_prob` is false) and a shared expert scaled by the sigmoid of
//! `shared_expert_gate`. Hugging Face checkpoints store each layer's
//! experts as two fused tensors, `mlp.experts.gate_up_proj`
//! `[E, 2 * moe_intermediate_size, hidden]` and `mlp.experts.down_proj`;
//! `sanitize` splits the first into the gate and up stacks
//! (`mlp.switch_mlp.{gate,up}_proj.weight`) and renames the second, as
//! mlx-lm does, after Qwen3.5's own renaming. mlx-community's quantized
//! checkpoints keep the routers and shared-expert gates at 8 bits.

use super::base::{CacheKind, LanguageModel};
use super::config::ModelConfig;
use super::qwen3_5::{Qwen3_5, Qwen3_5Args};
use super::registry::Family;
use super::weights::Weights;
use crate::error::{EngineError, Result};

/// The `qwen3_5_moe` family.
pub struct Qwen3_5Moe;

impl Family for Qwen3_5Moe {
    const MODEL_TYPES: &'static [&'static str] = &["qwen3_5_moe", "qwen3_5_moe_text"];
    type Args = Qwen3_5Args;

    fn sanitize(args: &Qwen3_5Args, config: &ModelConfig, weights: &mut Weights) -> Result<()> {
        Qwen3_5::sanitize(args, config, weights)?;
        for layer in 0..config.num_hidden_layers {
            let prefix = format!("language_model.model.layers.{layer}.mlp");
            let Some(gate_up) = weights.take_opt(&format!("{prefix}.experts.gate_up_proj")) else {
                continue;
            };
            let shape = gate_up.shape();
            let rows = match shape[..] {
                [_, rows, _] if rows % 2 == 0 => rows,
                _ => {
                    return Err(EngineError::Weights(format!(
                        "{prefix}.experts.gate_up_proj has shape {shape:?}, expected \
                         [experts, 2 * moe_intermediate_size, hidden_size]"
                    )));
                }
            };
            let mid = rows / 2;
            let stack = |name: &str| format!("{prefix}.switch_mlp.{name}.weight");
            weights.insert(stack("gate_proj"), gate_up.slice_axis(1, 0, mid)?);
            weights.insert(stack("up_proj"), gate_up.slice_axis(1, mid, rows)?);
            let down = weights.take(&format!("{prefix}.experts.down_proj"))?;
            weights.insert(stack("down_proj"), down);
        }
        Ok(())
    }

    fn cache_kinds(args: &Qwen3_5Args, config: &ModelConfig) -> Result<Vec<CacheKind>> {
        Qwen3_5::cache_kinds(args, config)
    }

    fn build(
        args: Qwen3_5Args,
        config: &ModelConfig,
        weights: &mut Weights,
    ) -> Result<Box<dyn LanguageModel>> {
        if args.hybrid.moe.num_experts <= 0 {
            return Err(EngineError::Config(format!(
                "qwen3_5_moe: num_experts is {}, must be positive",
                args.hybrid.moe.num_experts
            )));
        }
        Qwen3_5::build(args, config, weights)
    }
}
