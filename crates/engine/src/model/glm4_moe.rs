//! GLM-4.5, 4.6 and 4.7 (and their Air variants): mlx-lm's
//! `mlx_lm/models/glm4_moe.py`. The standard pre-norm decoder with
//! attention biases on q, k and v (`attention_bias`), optional per-head
//! q/k RMSNorms (`use_qk_norm`), partial rotary (`partial_rotary_factor`,
//! plain RoPE: mlx-lm applies no `rope_scaling` here), dense SwiGLU MLPs in
//! the first `first_k_dense_replace` layers and a sparse block in the
//! others: sigmoid routing with the selection bias
//! `gate.e_score_correction_bias`, expert groups (`n_group`, `topk_group`),
//! `norm_topk_prob` and `routed_scaling_factor` ([`Routing::Sigmoid`]),
//! plus `n_shared_experts` shared experts as one plain SwiGLU MLP every
//! token takes. Hugging Face checkpoints store each expert apart and carry
//! a multi-token-prediction layer after the last one; `sanitize` stacks the
//! experts and drops that layer, as mlx-lm does.

use serde::Deserialize;

use super::attention::AttentionSpec;
use super::base::LanguageModel;
use super::config::ModelConfig;
use super::mlp::Mlp;
use super::moe::{FeedForward, MoeSpec, SigmoidRouting, SparseMoe};
use super::registry::Family;
use super::rope::initialize_rope;
use super::switch_layers::stack_experts;
use super::transformer::{DecoderSpec, Transformer};
use super::weights::Weights;
use crate::error::{EngineError, Result};

/// The `glm4_moe` family.
pub struct Glm4Moe;

/// `glm4_moe.py`'s `ModelArgs` beyond the common config.
#[derive(Debug, Clone, Deserialize)]
pub struct Glm4MoeArgs {
    pub n_routed_experts: i32,
    pub num_experts_per_tok: i32,
    pub moe_intermediate_size: i32,
    #[serde(default)]
    pub n_shared_experts: Option<i32>,
    pub first_k_dense_replace: i32,
    pub n_group: i32,
    pub topk_group: i32,
    pub routed_scaling_factor: f32,
    pub norm_topk_prob: bool,
    pub use_qk_norm: bool,
    pub attention_bias: bool,
    pub partial_rotary_factor: f32,
    pub rope_theta: f32,
    #[serde(default = "sigmoid")]
    pub scoring_func: String,
    #[serde(default = "noaux_tc")]
    pub topk_method: String,
}

fn sigmoid() -> String {
    "sigmoid".into()
}

fn noaux_tc() -> String {
    "noaux_tc".into()
}

impl Glm4MoeArgs {
    /// The sparse block of a layer whose router's selection bias is `bias`.
    fn moe(&self, bias: Option<mlx::Array>) -> MoeSpec {
        MoeSpec::sigmoid(
            (
                self.n_routed_experts,
                self.num_experts_per_tok,
                self.moe_intermediate_size,
            ),
            self.n_shared_experts,
            SigmoidRouting {
                correction_bias: bias,
                n_group: self.n_group,
                topk_group: self.topk_group,
                norm_topk_prob: self.norm_topk_prob,
                scaling: self.routed_scaling_factor,
            },
        )
    }
}

impl Family for Glm4Moe {
    const MODEL_TYPES: &'static [&'static str] = &["glm4_moe"];
    type Args = Glm4MoeArgs;

    fn sanitize(args: &Glm4MoeArgs, config: &ModelConfig, weights: &mut Weights) -> Result<()> {
        let prediction_layer = format!("model.layers.{}.", config.num_hidden_layers);
        weights.discard(|name| name.starts_with(&prediction_layer));
        let names = ["gate_proj", "up_proj", "down_proj"].map(|n| (n, n));
        for layer in 0..config.num_hidden_layers {
            let prefix = format!("model.layers.{layer}.mlp");
            stack_experts(
                weights,
                &format!("{prefix}.experts"),
                &format!("{prefix}.switch_mlp"),
                &names,
                args.n_routed_experts,
            )?;
        }
        // The shared experts, one MLP, under the name the sparse block reads.
        weights.rename(|name| {
            name.contains(".mlp.shared_experts.")
                .then(|| name.replace(".mlp.shared_experts.", ".mlp.shared_expert."))
        })
    }

    fn build(
        args: Glm4MoeArgs,
        config: &ModelConfig,
        weights: &mut Weights,
    ) -> Result<Box<dyn LanguageModel>> {
        if config.head_dim.is_none() {
            return Err(EngineError::Config(
                "glm4_moe configs must give head_dim".into(),
            ));
        }
        if args.scoring_func != "sigmoid" || args.topk_method != "noaux_tc" {
            return Err(EngineError::Config(format!(
                "glm4_moe routing {} / {} is not supported (sigmoid / noaux_tc)",
                args.scoring_func, args.topk_method
            )));
        }
        let dims = (config.head_dim() as f32 * args.partial_rotary_factor) as i32;
        let rope = initialize_rope(dims, args.rope_theta, false, None)?;
        let spec = DecoderSpec {
            attention: AttentionSpec {
                qkv_bias: args.attention_bias,
                qk_norm: args.use_qk_norm.then_some(config.rms_norm_eps),
                ..AttentionSpec::plain(config, rope)
            },
            mlp_bias: false,
            tied: config.tie_word_embeddings_or(false),
            layer_windows: Vec::new(),
        };
        let model = Transformer::load_with(weights, config, &spec, &|w, layer, prefix| {
            let prefix = format!("{prefix}.mlp");
            Ok(if layer >= args.first_k_dense_replace {
                let bias = w.take_opt(&format!("{prefix}.gate.e_score_correction_bias"));
                let moe = args.moe(bias);
                FeedForward::Sparse(Box::new(SparseMoe::load(w, &prefix, config, &moe)?))
            } else {
                FeedForward::Dense(Mlp::load(w, &prefix, config, false)?)
            })
        })?;
        Ok(Box::new(model))
    }
}
