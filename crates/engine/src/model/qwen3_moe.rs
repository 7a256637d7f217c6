//! Qwen3-MoE (Qwen3-30B-A3B, Qwen3-Coder): mlx-lm's
//! `mlx_lm/models/qwen3_moe.py`. Qwen3's attention (no biases, an RMSNorm
//! of each q and k head before RoPE, explicit `head_dim`) with a sparse
//! [`SparseMoe`] feed-forward block in every `decoder_sparse_step`-th layer
//! not listed in `mlp_only_layers`, a dense SwiGLU MLP in the others. The
//! router (`mlp.gate`) takes the softmax of its logits, routes each token
//! to its `num_experts_per_tok` most probable experts and weights them by
//! those probabilities, renormalized to sum to one when `norm_topk_prob`.
//! Hugging Face checkpoints store each expert apart
//! (`mlp.experts.N.{gate,up,down}_proj`); `sanitize` stacks them into
//! `mlp.switch_mlp.*` as mlx-lm does. mlx-community's quantized
//! checkpoints keep the router at 8 bits beside 4-bit experts through the
//! config's per-layer overrides.

use serde::Deserialize;

use super::attention::AttentionSpec;
use super::base::LanguageModel;
use super::config::ModelConfig;
use super::llama::sanitize_rotary;
use super::mlp::Mlp;
use super::moe::{Experts, FeedForward, MoeSpec, Routing, Shared, SparseMoe, is_sparse_layer};
use super::registry::Family;
use super::rope::{RopeArgs, initialize_rope};
use super::switch_layers::stack_experts;
use super::transformer::{DecoderSpec, Transformer};
use super::weights::Weights;
use crate::error::{EngineError, Result};

/// The `qwen3_moe` family.
pub struct Qwen3Moe;

/// `qwen3_moe.py`'s `ModelArgs` beyond the common config.
#[derive(Debug, Clone, Deserialize)]
pub struct Qwen3MoeArgs {
    pub num_experts: i32,
    pub num_experts_per_tok: i32,
    pub decoder_sparse_step: i32,
    pub mlp_only_layers: Vec<i32>,
    pub moe_intermediate_size: i32,
    pub norm_topk_prob: bool,
    /// θ (`rope_theta`, or transformers 5's `rope_parameters.rope_theta`);
    /// mlx-lm's `nn.RoPE(head_dim, base=rope_theta)` applies no scaling.
    #[serde(flatten)]
    pub rope: RopeArgs,
}

impl Qwen3MoeArgs {
    fn moe(&self) -> MoeSpec {
        MoeSpec {
            num_experts: self.num_experts,
            top_k: self.num_experts_per_tok,
            expert_hidden: self.moe_intermediate_size,
            routing: Routing::SoftmaxTopK {
                norm_topk_prob: self.norm_topk_prob,
            },
            experts: Experts::Standard,
            shared_expert: Shared::None,
        }
    }

    fn is_sparse(&self, layer: i32) -> bool {
        is_sparse_layer(
            layer,
            self.num_experts,
            self.decoder_sparse_step,
            &self.mlp_only_layers,
        )
    }
}

impl Family for Qwen3Moe {
    const MODEL_TYPES: &'static [&'static str] = &["qwen3_moe"];
    const SPLITS: bool = true;
    type Args = Qwen3MoeArgs;

    fn sanitize(args: &Qwen3MoeArgs, config: &ModelConfig, weights: &mut Weights) -> Result<()> {
        sanitize_rotary(weights);
        let names = ["gate_proj", "up_proj", "down_proj"].map(|n| (n, n));
        for layer in 0..config.num_hidden_layers {
            let prefix = format!("model.layers.{layer}.mlp");
            stack_experts(
                weights,
                &format!("{prefix}.experts"),
                &format!("{prefix}.switch_mlp"),
                &names,
                args.num_experts,
            )?;
        }
        Ok(())
    }

    fn build(
        args: Qwen3MoeArgs,
        config: &ModelConfig,
        weights: &mut Weights,
    ) -> Result<Box<dyn LanguageModel>> {
        if config.head_dim.is_none() {
            return Err(EngineError::Config(
                "qwen3_moe configs must give head_dim".into(),
            ));
        }
        if args.decoder_sparse_step < 1 {
            return Err(EngineError::Config(format!(
                "decoder_sparse_step is {}, must be at least 1",
                args.decoder_sparse_step
            )));
        }
        let rope = initialize_rope(config.head_dim(), args.rope.theta(1_000_000.0), false, None)?;
        let spec = DecoderSpec {
            attention: AttentionSpec {
                qk_norm: Some(config.rms_norm_eps),
                ..AttentionSpec::plain(config, rope)
            },
            mlp_bias: false,
            tied: config.tie_word_embeddings_or(false),
            layer_windows: Vec::new(),
        };
        let moe = args.moe();
        let model = Transformer::load_with(weights, config, &spec, &|w, layer, prefix| {
            let prefix = format!("{prefix}.mlp");
            Ok(if args.is_sparse(layer) {
                FeedForward::Sparse(Box::new(SparseMoe::load(w, &prefix, config, &moe)?))
            } else {
                FeedForward::Dense(Mlp::load(w, &prefix, config, false)?)
            })
        })?;
        Ok(Box::new(model))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARGS: &str = r#"{"num_experts": 128, "num_experts_per_tok": 8,
        "decoder_sparse_step": 2, "mlp_only_layers": [5],
        "moe_intermediate_size": 768, "norm_topk_prob": true}"#;

    #[test]
    fn sparse_layers_follow_the_config() {
        let args: Qwen3MoeArgs = serde_json::from_str(ARGS).unwrap();
        let sparse: Vec<i32> = (0..8).filter(|&l| args.is_sparse(l)).collect();
        assert_eq!(sparse, [1, 3, 7]);
        assert_eq!(args.rope.theta(1_000_000.0), 1_000_000.0);
    }

    #[test]
    fn a_missing_moe_key_is_named() {
        let text = ARGS.replace(r#""moe_intermediate_size": 768,"#, "");
        let err = serde_json::from_str::<Qwen3MoeArgs>(&text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("moe_intermediate_size"), "{err}");
    }
}
