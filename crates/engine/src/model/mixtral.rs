//! Mixtral: mlx-lm's `mlx_lm/models/mixtral.py`. Llama's attention (no
//! biases, no q/k norms, `head_dim = hidden_size / num_attention_heads`,
//! plain RoPE of θ `rope_theta`, 1e6 by default) and in every layer a
//! sparse [`SparseMoe`] block named `block_sparse_moe`: the router takes
//! each token's `num_experts_per_tok` largest logits and weights those
//! experts by a softmax over just those logits. Hugging Face checkpoints
//! store each expert apart (`block_sparse_moe.experts.N.{w1,w2,w3}`, the
//! gate, down and up projections); `sanitize` stacks them into
//! `block_sparse_moe.switch_mlp.*` as mlx-lm does, quantized ones too.

use serde::Deserialize;

use super::attention::AttentionSpec;
use super::base::LanguageModel;
use super::config::ModelConfig;
use super::llama::sanitize_rotary;
use super::moe::{Experts, FeedForward, MoeSpec, Routing, Shared, SparseMoe};
use super::registry::Family;
use super::rope::{RopeArgs, initialize_rope};
use super::switch_layers::stack_experts;
use super::transformer::{DecoderSpec, Transformer};
use super::weights::Weights;
use crate::error::{EngineError, Result};

/// The `mixtral` family.
pub struct Mixtral;

/// `mixtral.py`'s `ModelArgs` beyond the common config, with its defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct MixtralArgs {
    #[serde(default = "default_experts")]
    pub num_local_experts: i32,
    #[serde(default = "default_top_k")]
    pub num_experts_per_tok: i32,
    /// θ (`rope_theta`, or transformers 5's `rope_parameters.rope_theta`;
    /// 1e6 by default) and `rope_traditional`; mlx-lm applies no scaling.
    #[serde(flatten)]
    pub rope: RopeArgs,
}

fn default_experts() -> i32 {
    8
}

fn default_top_k() -> i32 {
    2
}

/// The per-expert names of the Hugging Face layout and their stacks.
const EXPERT_NAMES: [(&str, &str); 3] =
    [("w1", "gate_proj"), ("w2", "down_proj"), ("w3", "up_proj")];

impl Family for Mixtral {
    const MODEL_TYPES: &'static [&'static str] = &["mixtral"];
    type Args = MixtralArgs;

    fn sanitize(args: &MixtralArgs, config: &ModelConfig, weights: &mut Weights) -> Result<()> {
        sanitize_rotary(weights);
        for layer in 0..config.num_hidden_layers {
            let prefix = format!("model.layers.{layer}.block_sparse_moe");
            stack_experts(
                weights,
                &format!("{prefix}.experts"),
                &format!("{prefix}.switch_mlp"),
                &EXPERT_NAMES,
                args.num_local_experts,
            )?;
        }
        Ok(())
    }

    fn build(
        args: MixtralArgs,
        config: &ModelConfig,
        weights: &mut Weights,
    ) -> Result<Box<dyn LanguageModel>> {
        // mlx-lm derives the head width from the hidden size alone.
        let head_dim = config.hidden_size / config.num_attention_heads;
        if config.head_dim() != head_dim {
            return Err(EngineError::Config(format!(
                "mixtral's heads are hidden_size / num_attention_heads = {head_dim} wide, \
                 the config gives head_dim {}",
                config.head_dim()
            )));
        }
        let theta = args.rope.theta(1_000_000.0);
        let rope = initialize_rope(head_dim, theta, args.rope.rope_traditional, None)?;
        let spec = DecoderSpec {
            attention: AttentionSpec::plain(config, rope),
            mlp_bias: false,
            tied: config.tie_word_embeddings_or(false),
            layer_windows: Vec::new(),
        };
        let moe = MoeSpec {
            num_experts: args.num_local_experts,
            top_k: args.num_experts_per_tok,
            expert_hidden: config.intermediate_size,
            routing: Routing::TopKSoftmax,
            experts: Experts::Standard,
            shared_expert: Shared::None,
        };
        let model = Transformer::load_with(weights, config, &spec, &|w, _, prefix| {
            let prefix = format!("{prefix}.block_sparse_moe");
            Ok(FeedForward::Sparse(Box::new(SparseMoe::load(
                w, &prefix, config, &moe,
            )?)))
        })?;
        Ok(Box::new(model))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_keys_take_mlx_lm_defaults() {
        let args: MixtralArgs = serde_json::from_str("{}").unwrap();
        assert_eq!(args.num_local_experts, 8);
        assert_eq!(args.num_experts_per_tok, 2);
        assert_eq!(args.rope.theta(1_000_000.0), 1_000_000.0);
        assert!(!args.rope.rope_traditional);
        let nested: MixtralArgs =
            serde_json::from_str(r#"{"rope_parameters": {"rope_theta": 5e5}}"#).unwrap();
        assert_eq!(nested.rope.theta(1_000_000.0), 500_000.0);
    }
}
