//! DeepSeek-V3 (and Kimi K2, which shares its shape): mlx-lm's
//! `mlx_lm/models/deepseek_v3.py`. The pre-norm decoder of GLM-4-MoE's
//! routing (sigmoid scores with `e_score_correction_bias`, expert groups,
//! `routed_scaling_factor`, shared experts, dense first layers), with
//! multi-head latent attention ([`LatentAttention`]) in place of grouped
//! query attention.
//!
//! The attention is `latent_attention.rs`'s: it caches a compressed latent
//! and a shared rotary key per position instead of every head's keys and
//! values.
//!
//! Hugging Face checkpoints store the two per-head projections as one
//! `kv_b_proj`; `sanitize` splits it into `embed_q` / `unembed_out`, and
//! stacks the experts and drops the multi-token-prediction layer after the
//! last one, as mlx-lm does. FP8 checkpoints (`weight_scale_inv`) and a
//! quantized `kv_b_proj` are refused by name: convert them with mlx-lm
//! first.

use mlx::fast::Rope;
use mlx::{Array, Dtype};
use serde::Deserialize;

use super::base::{CacheKind, Caches, LanguageModel, Positions, check_caches};
use super::config::ModelConfig;
use super::embedding::TokenIo;
use super::latent_attention::{LatentAttention, LatentSpec, split_kv_b_proj};
use super::mlp::Mlp;
use super::moe::{FeedForward, MoeSpec, SigmoidRouting, SparseMoe};
use super::nn::{Matrix, RmsNorm};
use super::registry::Family;
use super::rope::{RopeArgs, initialize_rope};
use super::switch_layers::stack_experts;
use super::weights::Weights;
use crate::error::{EngineError, Result};

/// The `deepseek_v3` family.
pub struct DeepseekV3;

/// `deepseek_v3.py`'s `ModelArgs` beyond the common config, with its
/// defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct DeepseekV3Args {
    #[serde(flatten)]
    pub rope: RopeArgs,
    #[serde(default = "default_moe_intermediate")]
    pub moe_intermediate_size: i32,
    #[serde(default)]
    pub n_shared_experts: Option<i32>,
    #[serde(default)]
    pub n_routed_experts: Option<i32>,
    #[serde(default = "one")]
    pub routed_scaling_factor: f32,
    #[serde(default = "default_kv_lora_rank")]
    pub kv_lora_rank: i32,
    #[serde(default = "default_q_lora_rank")]
    pub q_lora_rank: Option<i32>,
    #[serde(default = "default_rope_head_dim")]
    pub qk_rope_head_dim: i32,
    #[serde(default = "default_head_dim")]
    pub v_head_dim: i32,
    #[serde(default = "default_head_dim")]
    pub qk_nope_head_dim: i32,
    #[serde(default = "noaux_tc")]
    pub topk_method: String,
    #[serde(default = "sigmoid")]
    pub scoring_func: String,
    #[serde(default = "yes")]
    pub norm_topk_prob: bool,
    #[serde(default = "one_i")]
    pub n_group: i32,
    #[serde(default = "one_i")]
    pub topk_group: i32,
    #[serde(default = "one_i")]
    pub num_experts_per_tok: i32,
    #[serde(default = "one_i")]
    pub moe_layer_freq: i32,
    #[serde(default)]
    pub first_k_dense_replace: i32,
    #[serde(default)]
    pub attention_bias: bool,
}

fn default_moe_intermediate() -> i32 {
    1407
}
fn default_kv_lora_rank() -> i32 {
    512
}
fn default_q_lora_rank() -> Option<i32> {
    Some(1536)
}
fn default_rope_head_dim() -> i32 {
    64
}
fn default_head_dim() -> i32 {
    128
}
fn noaux_tc() -> String {
    "noaux_tc".into()
}
fn sigmoid() -> String {
    "sigmoid".into()
}
fn yes() -> bool {
    true
}
fn one() -> f32 {
    1.0
}
fn one_i() -> i32 {
    1
}

impl DeepseekV3Args {
    /// Whether layer `i` is a sparse block.
    fn is_sparse(&self, i: i32) -> bool {
        self.n_routed_experts.is_some()
            && i >= self.first_k_dense_replace
            && i % self.moe_layer_freq.max(1) == 0
    }

    /// The sparse block of a layer whose router's selection bias is `bias`.
    fn moe(&self, experts: i32, bias: Option<Array>) -> MoeSpec {
        MoeSpec::sigmoid(
            (
                experts,
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

    /// The latent attention of every layer, rotating with `rope`.
    fn latent(&self, rope: Rope) -> LatentSpec {
        LatentSpec {
            q_lora_rank: self.q_lora_rank,
            kv_lora_rank: self.kv_lora_rank,
            nope_dim: self.qk_nope_head_dim,
            rope_dim: self.qk_rope_head_dim,
            v_dim: self.v_head_dim,
            bias: self.attention_bias,
            scale: self.scale(),
            rope,
        }
    }

    /// The softmax scale: `q_head_dim^-0.5`, times YaRN's attention factor
    /// squared when the rotary scaling stretches the context
    /// (`mscale_all_dim`), in double precision as mlx-lm computes it.
    fn scale(&self) -> f32 {
        let q_head_dim = f64::from(self.qk_nope_head_dim + self.qk_rope_head_dim);
        let mut scale = q_head_dim.powf(-0.5);
        if let Some(s) = self.rope.rope_scaling.as_ref()
            && let Some(all_dim) = s.mscale_all_dim.filter(|&m| m != 0.0)
            && let Some(factor) = s.factor.filter(|&f| f > 1.0)
        {
            let m = 0.1 * f64::from(all_dim) * f64::from(factor).ln() + 1.0;
            scale *= m * m;
        }
        scale as f32
    }
}

/// A pre-norm block: latent attention, then the dense or sparse MLP.
struct Block {
    self_attn: LatentAttention,
    mlp: FeedForward,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

/// A loaded DeepSeek-V3.
pub struct DeepseekV3Model {
    io: TokenIo,
    layers: Vec<Block>,
    norm: RmsNorm,
}

impl LanguageModel for DeepseekV3Model {
    fn cache_kinds(&self) -> Vec<CacheKind> {
        vec![CacheKind::Kv; self.layers.len()]
    }

    fn hidden(&self, tokens: &Array, caches: &mut dyn Caches, at: Positions) -> Result<Array> {
        check_caches(caches, self.layers.len())?;
        let mut h = self.io.embed(tokens)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let normed = layer.input_layernorm.forward(&h)?;
            let r = layer
                .self_attn
                .forward_add(&normed, &h, caches.layer(i), at)?;
            h = layer
                .mlp
                .forward_normed_add(&r, &layer.post_attention_layernorm, &r)?;
        }
        self.norm.forward(&h)
    }

    fn logits(&self, hidden: &Array) -> Result<Array> {
        self.io.logits(hidden)
    }

    fn matrices_mut(&mut self) -> Vec<&mut Matrix> {
        let mut out = self.io.matrices_mut();
        for layer in &mut self.layers {
            out.extend(layer.self_attn.matrices_mut());
            out.extend(layer.mlp.matrices_mut());
        }
        out
    }

    fn dtype(&self) -> Dtype {
        self.norm.weight.dtype()
    }

    /// Latent attention reads its compressed cache at full precision (as
    /// mlx-lm, which does not quantize it either).
    fn kv_quantizable(&self) -> bool {
        false
    }
}

impl Family for DeepseekV3 {
    const MODEL_TYPES: &'static [&'static str] = &["deepseek_v3", "kimi_k2", "joyai_llm_flash"];
    type Args = DeepseekV3Args;

    fn sanitize(args: &DeepseekV3Args, config: &ModelConfig, weights: &mut Weights) -> Result<()> {
        if let Some((name, _)) = weights
            .iter()
            .find(|(n, _)| n.ends_with("weight_scale_inv"))
        {
            return Err(EngineError::Weights(format!(
                "{name}: FP8 block-quantized checkpoints are not supported; convert the \
                 checkpoint with mlx-lm first"
            )));
        }
        let prediction_layer = format!("model.layers.{}.", config.num_hidden_layers);
        weights.discard(|name| {
            name.starts_with(&prediction_layer) || name.contains("rotary_emb.inv_freq")
        });
        let names = ["gate_proj", "up_proj", "down_proj"].map(|n| (n, n));
        for layer in 0..config.num_hidden_layers {
            let prefix = format!("model.layers.{layer}");
            if let Some(experts) = args.n_routed_experts {
                stack_experts(
                    weights,
                    &format!("{prefix}.mlp.experts"),
                    &format!("{prefix}.mlp.switch_mlp"),
                    &names,
                    experts,
                )?;
            }
            split_kv_b_proj(
                (args.qk_nope_head_dim, args.v_head_dim),
                config.num_attention_heads,
                &format!("{prefix}.self_attn"),
                weights,
            )?;
        }
        weights.rename(|name| {
            name.contains(".mlp.shared_experts.")
                .then(|| name.replace(".mlp.shared_experts.", ".mlp.shared_expert."))
        })
    }

    /// The compressed latent and the rotary key, shared by the heads.
    fn kv_width(args: &DeepseekV3Args, _: &ModelConfig) -> i32 {
        args.kv_lora_rank + args.qk_rope_head_dim
    }

    fn build(
        args: DeepseekV3Args,
        config: &ModelConfig,
        weights: &mut Weights,
    ) -> Result<Box<dyn LanguageModel>> {
        if args.scoring_func != "sigmoid" || args.topk_method != "noaux_tc" {
            return Err(EngineError::Config(format!(
                "deepseek_v3 routing {} / {} is not supported (sigmoid / noaux_tc)",
                args.scoring_func, args.topk_method
            )));
        }
        let theta = args.rope.rope_theta.unwrap_or(10000.0);
        let rope = initialize_rope(
            args.qk_rope_head_dim,
            theta,
            true,
            args.rope.rope_scaling.as_ref(),
        )?;
        let latent = args.latent(rope);
        let io = TokenIo::load(weights, config, "model", "lm_head", false)?;
        let (eps, dim) = (config.rms_norm_eps, config.hidden_size);
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let prefix = format!("model.layers.{i}");
                let p = |name: &str| format!("{prefix}.{name}");
                let self_attn = LatentAttention::load(weights, &p("self_attn"), config, &latent)?;
                let mlp = match args.n_routed_experts {
                    Some(experts) if args.is_sparse(i) => {
                        let bias = weights.take_opt(&p("mlp.gate.e_score_correction_bias"));
                        let moe = args.moe(experts, bias);
                        FeedForward::Sparse(Box::new(SparseMoe::load(
                            weights,
                            &p("mlp"),
                            config,
                            &moe,
                        )?))
                    }
                    _ => FeedForward::Dense(Mlp::load(weights, &p("mlp"), config, false)?),
                };
                Ok(Block {
                    self_attn,
                    mlp,
                    input_layernorm: RmsNorm::load_shaped(
                        weights,
                        &p("input_layernorm"),
                        eps,
                        dim,
                    )?,
                    post_attention_layernorm: RmsNorm::load_shaped(
                        weights,
                        &p("post_attention_layernorm"),
                        eps,
                        dim,
                    )?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::load_shaped(weights, "model.norm", eps, dim)?;
        Ok(Box::new(DeepseekV3Model { io, layers, norm }))
    }
}
