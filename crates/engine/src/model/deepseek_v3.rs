//! DeepSeek-V3 (and Kimi K2, which shares its shape): mlx-lm's
//! `mlx_lm/models/deepseek_v3.py`. The pre-norm decoder of GLM-4-MoE's
//! routing (sigmoid scores with `e_score_correction_bias`, expert groups,
//! `routed_scaling_factor`, shared experts, dense first layers), with
//! multi-head latent attention ([`LatentAttention`]) in place of grouped
//! query attention.
//!
//! **Latent attention.** Each position caches one compressed vector
//! (`kv_lora_rank` features, normalized) and one rotary key part
//! (`qk_rope_head_dim`) shared by all heads: the cache holds them as keys
//! `[B, 1, S, kv_lora_rank]` and values `[B, 1, S, qk_rope_head_dim]`, a
//! few percent of what full keys and values of 128 heads would take. The
//! per-head key and value projections are absorbed as mlx-lm does: for one
//! new token the query is taken into the latent space (`embed_q`) and
//! attends to the cached latents directly, its output brought back per
//! head (`unembed_out`); for several, the latents are expanded into each
//! head's keys and values. The rotary part enters as the scores `q_pe ·
//! k_pe` added to the attention's logits (masked positions at the type's
//! lowest value).
//!
//! Hugging Face checkpoints store the two per-head projections as one
//! `kv_b_proj`; `sanitize` splits it into `embed_q` / `unembed_out`, and
//! stacks the experts and drops the multi-token-prediction layer after the
//! last one, as mlx-lm does. FP8 checkpoints (`weight_scale_inv`) and a
//! quantized `kv_b_proj` are refused by name: convert them with mlx-lm
//! first.

use mlx::fast::{AttentionMask, Rope, scaled_dot_product_attention};
use mlx::{Array, Dtype};
use serde::Deserialize;

use super::base::{CacheKind, Caches, LanguageModel, LayerCache, Positions, check_caches};
use super::config::ModelConfig;
use super::embedding::TokenIo;
use super::mlp::Mlp;
use super::moe::{Experts, FeedForward, MoeSpec, Routing, Shared, SigmoidRouting, SparseMoe};
use super::nn::{Linear, Matrix, RmsNorm};
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
        MoeSpec {
            num_experts: experts,
            top_k: self.num_experts_per_tok,
            expert_hidden: self.moe_intermediate_size,
            routing: Routing::Sigmoid(SigmoidRouting {
                correction_bias: bias,
                n_group: self.n_group,
                topk_group: self.topk_group,
                norm_topk_prob: self.norm_topk_prob,
                scaling: self.routed_scaling_factor,
            }),
            experts: Experts::Standard,
            shared_expert: match self.n_shared_experts {
                Some(n) => Shared::Plain {
                    hidden: self.moe_intermediate_size * n,
                },
                None => Shared::None,
            },
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

/// Per-head matrices `[heads, out, in]` (mlx-lm's `MultiLinear`), applied
/// to inputs with a head axis.
struct MultiLinear {
    weight: Matrix,
}

impl MultiLinear {
    fn load(w: &mut Weights, prefix: &str, config: &ModelConfig, shape: [i32; 3]) -> Result<Self> {
        let weight = Matrix::load(w, prefix, config)?;
        let stored = match &weight {
            Matrix::Dense(a) => a.shape(),
            Matrix::Quantized(q) => q.scales.shape()[..2].to_vec(),
        };
        if stored[..] != shape[..stored.len()] {
            return Err(EngineError::Weights(format!(
                "tensor {prefix}.weight has shape {stored:?}, expected {shape:?}"
            )));
        }
        Ok(MultiLinear { weight })
    }

    /// `x @ Wᵀ` per head (`transpose`), or `x @ W`.
    fn forward(&self, x: &Array, transpose: bool) -> Result<Array> {
        Ok(match &self.weight {
            Matrix::Dense(w) if transpose => x.matmul(&w.swapaxes(-1, -2)?)?,
            Matrix::Dense(w) => x.matmul(w)?,
            Matrix::Quantized(q) => q.matmul(x, transpose)?,
        })
    }
}

/// The query projection: direct, or through a low-rank bottleneck.
enum QueryProj {
    Direct(Linear),
    LowRank { a: Linear, norm: RmsNorm, b: Linear },
}

/// Multi-head latent attention (see the module's notes).
struct LatentAttention {
    q: QueryProj,
    kv_a_proj_with_mqa: Linear,
    kv_a_layernorm: RmsNorm,
    embed_q: MultiLinear,
    unembed_out: MultiLinear,
    o_proj: Linear,
    heads: i32,
    nope_dim: i32,
    rope_dim: i32,
    kv_lora_rank: i32,
    scale: f32,
    rope: Rope,
}

impl LatentAttention {
    fn load(
        w: &mut Weights,
        prefix: &str,
        config: &ModelConfig,
        args: &DeepseekV3Args,
        rope: &Rope,
    ) -> Result<Self> {
        let p = |name: &str| format!("{prefix}.{name}");
        let hidden = config.hidden_size;
        let heads = config.num_attention_heads;
        let q_head_dim = args.qk_nope_head_dim + args.qk_rope_head_dim;
        let bias = args.attention_bias;
        let q = match args.q_lora_rank {
            None => QueryProj::Direct(Linear::load_shaped(
                w,
                &p("q_proj"),
                config,
                false,
                [heads * q_head_dim, hidden],
            )?),
            Some(rank) => QueryProj::LowRank {
                a: Linear::load_shaped(w, &p("q_a_proj"), config, bias, [rank, hidden])?,
                norm: RmsNorm::load_shaped(w, &p("q_a_layernorm"), 1e-6, rank)?,
                b: Linear::load_shaped(
                    w,
                    &p("q_b_proj"),
                    config,
                    false,
                    [heads * q_head_dim, rank],
                )?,
            },
        };
        let rank = args.kv_lora_rank;
        Ok(LatentAttention {
            q,
            kv_a_proj_with_mqa: Linear::load_shaped(
                w,
                &p("kv_a_proj_with_mqa"),
                config,
                bias,
                [rank + args.qk_rope_head_dim, hidden],
            )?,
            kv_a_layernorm: RmsNorm::load_shaped(w, &p("kv_a_layernorm"), 1e-6, rank)?,
            embed_q: MultiLinear::load(
                w,
                &p("embed_q"),
                config,
                [heads, rank, args.qk_nope_head_dim],
            )?,
            unembed_out: MultiLinear::load(
                w,
                &p("unembed_out"),
                config,
                [heads, args.v_head_dim, rank],
            )?,
            o_proj: Linear::load_shaped(
                w,
                &p("o_proj"),
                config,
                bias,
                [hidden, heads * args.v_head_dim],
            )?,
            heads,
            nope_dim: args.qk_nope_head_dim,
            rope_dim: args.qk_rope_head_dim,
            kv_lora_rank: rank,
            scale: args.scale(),
            rope: rope.clone(),
        })
    }

    fn matrices_mut(&mut self) -> Vec<&mut Matrix> {
        let mut out = match &mut self.q {
            QueryProj::Direct(q) => vec![&mut q.weight],
            QueryProj::LowRank { a, b, .. } => vec![&mut a.weight, &mut b.weight],
        };
        out.extend([
            &mut self.kv_a_proj_with_mqa.weight,
            &mut self.embed_q.weight,
            &mut self.unembed_out.weight,
            &mut self.o_proj.weight,
        ]);
        out
    }

    /// `residual` plus the attention of `x` (already normalized).
    fn forward_add(
        &self,
        x: &Array,
        residual: &Array,
        cache: &mut dyn LayerCache,
        at: Positions,
    ) -> Result<Array> {
        let shape = x.shape();
        let (b, l) = (shape[0], shape[1]);
        let q = match &self.q {
            QueryProj::Direct(q) => q.forward(x)?,
            QueryProj::LowRank { a, norm, b } => b.forward(&norm.forward(&a.forward(x)?)?)?,
        };
        let q = q
            .reshape(&[b, l, self.heads, self.nope_dim + self.rope_dim])?
            .transpose(&[0, 2, 1, 3])?;
        let q_nope = q.slice_axis(3, 0, self.nope_dim)?;
        let q_pe = q.slice_axis(3, self.nope_dim, self.nope_dim + self.rope_dim)?;
        let compressed = self.kv_a_proj_with_mqa.forward(x)?;
        let rank = self.kv_lora_rank;
        let k_pe = compressed
            .slice_axis(2, rank, rank + self.rope_dim)?
            .reshape(&[b, l, 1, self.rope_dim])?
            .transpose(&[0, 2, 1, 3])?;
        let latent = self
            .kv_a_layernorm
            .forward(&compressed.slice_axis(2, 0, rank)?)?
            .expand_dims(1)?;
        let rope = |x: &Array| match at {
            Positions::Sequence { offset } => self.rope.apply(x, offset),
            Positions::Rows { offsets, .. } => self.rope.apply_rows(x, offsets),
        };
        let (q_pe, k_pe) = (rope(&q_pe)?, rope(&k_pe)?);
        let (latent, k_pe) = cache.update_and_fetch(&latent, &k_pe)?;
        let columns = latent.dim(2)?;

        // The rotary scores, masked, as the attention's additive mask.
        let pe = q_pe
            .multiply(&q_pe.scalar_like(self.scale)?)?
            .matmul(&k_pe.swapaxes(-1, -2)?)?;
        let mask = match at {
            Positions::Sequence { offset } if l > 1 => Some(causal(offset, l, columns)?),
            Positions::Sequence { .. } => None,
            Positions::Rows { mask, .. } => mask.cloned(),
        };
        let pe = match mask {
            Some(mask) => mlx::where_(
                &mask,
                &pe,
                &Array::scalar(lowest(pe.dtype()))?.astype(pe.dtype())?,
            )?,
            None => pe,
        };
        let mask = AttentionMask::Array(&pe);
        let out = if l == 1 {
            let q = self.embed_q.forward(&q_nope, true)?;
            let out = scaled_dot_product_attention(&q, &latent, &latent, self.scale, mask)?;
            self.unembed_out.forward(&out, true)?
        } else {
            let k = self.embed_q.forward(&latent, false)?;
            let v = self.unembed_out.forward(&latent, true)?;
            scaled_dot_product_attention(&q_nope, &k, &v, self.scale, mask)?
        };
        let out = out.transpose(&[0, 2, 1, 3])?.reshape(&[b, l, -1])?;
        self.o_proj.forward_add(&out, residual)
    }
}

/// Query `i` of `l` new positions after `offset` cached ones sees the
/// columns up to its own (`[l, offset + l]`, true = attend).
fn causal(offset: i32, l: i32, columns: i32) -> Result<Array> {
    let rows =
        mlx::arange(f64::from(offset), f64::from(offset + l), 1.0, Dtype::I32)?.reshape(&[l, 1])?;
    let cols = mlx::arange(0.0, f64::from(columns), 1.0, Dtype::I32)?.reshape(&[1, columns])?;
    Ok(rows.greater_equal(&cols)?)
}

/// The lowest finite value of `dtype` (masked scores take it, as
/// `mx.finfo(dtype).min`).
fn lowest(dtype: Dtype) -> f32 {
    match dtype {
        Dtype::F16 => -65504.0,
        Dtype::Bf16 => -3.389_531_4e38,
        _ => f32::MIN,
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
}

/// Splits a Hugging Face `kv_b_proj` (`[heads * (nope + v), rank]`) into
/// the absorbed `embed_q` (`[heads, rank, nope]`) and `unembed_out`
/// (`[heads, v, rank]`).
fn split_kv_b_proj(args: &DeepseekV3Args, heads: i32, prefix: &str, w: &mut Weights) -> Result<()> {
    let name = format!("{prefix}.kv_b_proj.weight");
    let Some(kv_b) = w.take_opt(&name) else {
        return Ok(());
    };
    if w.contains(&format!("{prefix}.kv_b_proj.scales")) {
        return Err(EngineError::Weights(format!(
            "{prefix}.kv_b_proj is quantized: convert the checkpoint with mlx-lm first"
        )));
    }
    let nope = args.qk_nope_head_dim;
    let per_head = nope + args.v_head_dim;
    let v = kv_b.reshape(&[heads, per_head, -1])?;
    let wk = v.slice_axis(1, 0, nope)?.swapaxes(-1, -2)?;
    let wv = v.slice_axis(1, nope, per_head)?;
    w.insert(format!("{prefix}.embed_q.weight"), wk);
    w.insert(format!("{prefix}.unembed_out.weight"), wv);
    Ok(())
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
                args,
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
        let io = TokenIo::load(weights, config, "model", "lm_head", false)?;
        let (eps, dim) = (config.rms_norm_eps, config.hidden_size);
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let prefix = format!("model.layers.{i}");
                let p = |name: &str| format!("{prefix}.{name}");
                let self_attn =
                    LatentAttention::load(weights, &p("self_attn"), config, &args, &rope)?;
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
