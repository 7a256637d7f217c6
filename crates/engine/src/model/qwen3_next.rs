//! Qwen3-Next (dense layers): mlx-lm's `mlx_lm/models/qwen3_next.py`. A
//! hybrid decoder: every `full_attention_interval`-th layer is gated
//! attention (q/k norms, partial rotary, an output gate in the query
//! projection), the others Gated DeltaNet linear attention
//! ([`GatedDeltaNet`], projections `in_proj_qkvz` / `in_proj_ba`), each
//! followed by a SwiGLU MLP, or, with `num_experts > 0`, by a sparse
//! Mixture-of-Experts block (`Qwen3NextSparseMoeBlock`: softmax routing,
//! `norm_topk_prob`, a shared expert scaled by the sigmoid of its gate) in
//! every `decoder_sparse_step`-th layer not in `mlp_only_layers`. The
//! full-attention layers keep KV, the others a fixed-size recurrent state.
//! [`Hybrid`] is shared with Qwen3.5 (`qwen3_5.rs`, `qwen3_5_moe.rs`), which
//! stores the linear-attention projections apart and makes every layer
//! sparse when it has experts. Multi-token-prediction tensors (`mtp.*`) are
//! skipped with a log line.

use mlx::{Array, Dtype};
use serde::Deserialize;

use super::attention::{Attention, AttentionSpec};
use super::base::{CacheKind, Caches, LanguageModel, Positions, check_caches};
use super::config::ModelConfig;
use super::embedding::TokenIo;
use super::linear_attention::{GatedDeltaNet, GatedDeltaSpec, Projections};
use super::mlp::Mlp;
use super::moe::{Experts, FeedForward, MoeSpec, Routing, Shared, SparseMoe, is_sparse_layer};
use super::nn::{Matrix, RmsNorm};
use super::registry::Family;
use super::rope::{RopeArgs, initialize_rope};
use super::weights::Weights;
use crate::error::{EngineError, Result};

/// The arguments of the hybrid families beyond the common config
/// (`qwen3_next.py`'s `ModelArgs`, `qwen3_5.py`'s `TextModelArgs`).
#[derive(Debug, Clone, Deserialize)]
pub struct HybridArgs {
    #[serde(flatten)]
    pub rope: RopeArgs,
    pub linear_num_value_heads: i32,
    pub linear_num_key_heads: i32,
    pub linear_key_head_dim: i32,
    pub linear_value_head_dim: i32,
    #[serde(default = "default_conv_kernel")]
    pub linear_conv_kernel_dim: i32,
    #[serde(default = "default_interval")]
    pub full_attention_interval: i32,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(flatten)]
    pub moe: HybridMoeArgs,
}

/// The Mixture-of-Experts keys of a hybrid config (mlx-lm's defaults;
/// `norm_topk_prob` defaults by family).
#[derive(Debug, Clone, Deserialize)]
pub struct HybridMoeArgs {
    #[serde(default)]
    pub num_experts: i32,
    #[serde(default)]
    pub num_experts_per_tok: i32,
    #[serde(default = "default_sparse_step")]
    pub decoder_sparse_step: i32,
    #[serde(default)]
    pub mlp_only_layers: Vec<i32>,
    #[serde(default)]
    pub moe_intermediate_size: i32,
    #[serde(default)]
    pub shared_expert_intermediate_size: i32,
    #[serde(default)]
    pub norm_topk_prob: Option<bool>,
}

fn default_sparse_step() -> i32 {
    1
}

impl HybridArgs {
    /// Whether layer `i` is linear attention (all but every
    /// `full_attention_interval`-th).
    fn is_linear(&self, i: i32) -> bool {
        (i + 1) % self.full_attention_interval != 0
    }

    /// The shape of the linear-attention layers.
    fn linear_spec(&self, config: &ModelConfig, projections: Projections) -> GatedDeltaSpec {
        GatedDeltaSpec {
            num_k_heads: self.linear_num_key_heads,
            num_v_heads: self.linear_num_value_heads,
            head_k_dim: self.linear_key_head_dim,
            head_v_dim: self.linear_value_head_dim,
            conv_kernel: self.linear_conv_kernel_dim,
            eps: config.rms_norm_eps,
            projections,
        }
    }

    /// The cache of each layer.
    pub fn cache_kinds(&self, config: &ModelConfig) -> Result<Vec<CacheKind>> {
        if self.full_attention_interval <= 0 {
            return Err(EngineError::Config(format!(
                "full_attention_interval is {}, must be positive",
                self.full_attention_interval
            )));
        }
        let linear = self.linear_spec(config, Projections::Split).cache_kind();
        Ok((0..config.num_hidden_layers)
            .map(|i| {
                if self.is_linear(i) {
                    linear
                } else {
                    CacheKind::Kv
                }
            })
            .collect())
    }
}

fn default_conv_kernel() -> i32 {
    4
}

fn default_interval() -> i32 {
    4
}

/// Where a hybrid model's tensors are and how they are stored.
#[derive(Debug, Clone, Copy)]
pub struct HybridLayout {
    /// The decoder's prefix (`model`, `language_model.model`).
    pub root: &'static str,
    /// The output head (`lm_head`, `language_model.lm_head`).
    pub head: &'static str,
    pub projections: Projections,
    /// θ and the rotating fraction of a head when the config gives none.
    pub default_theta: f32,
    pub default_partial: f32,
    /// RoPE from `rope_parameters` only (Qwen3.5), not the top-level keys.
    pub rope_parameters_only: bool,
    /// Every layer is sparse when the model has experts (Qwen3.5), rather
    /// than those `decoder_sparse_step` / `mlp_only_layers` choose.
    pub moe_every_layer: bool,
    /// `norm_topk_prob` when the config does not say.
    pub default_norm_topk_prob: bool,
}

/// A layer's token mixer.
enum Mixer {
    Linear(GatedDeltaNet),
    Full(Attention),
}

struct Layer {
    mixer: Mixer,
    mlp: FeedForward,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

/// A loaded hybrid decoder.
pub struct Hybrid {
    io: TokenIo,
    layers: Vec<Layer>,
    kinds: Vec<CacheKind>,
    norm: RmsNorm,
}

/// Drops the tensors of parts a hybrid checkpoint carries and this engine
/// does not run, and rewrites a Hugging Face checkpoint's as mlx-lm's
/// `sanitize` does: the convolution kernel `[C, 1, K]` to MLX's
/// `[C, K, 1]`, and the norms stored as offsets from one (`w` → `1 + w`)
/// in such a checkpoint (one whose kernel still had that layout).
pub fn sanitize_hybrid(weights: &mut Weights) -> Result<()> {
    weights.skip("multi-token prediction", |name| name.contains("mtp."));
    let raw = weights
        .iter()
        .any(|(name, a)| name.contains("conv1d.weight") && a.shape().last() != Some(&1));
    let norms = [
        ".input_layernorm.weight",
        ".post_attention_layernorm.weight",
        "model.norm.weight",
        ".q_norm.weight",
        ".k_norm.weight",
    ];
    weights.map(|name, a| {
        if name.contains("conv1d.weight") && a.shape().last() != Some(&1) {
            return Ok(Some(a.swapaxes(1, 2)?));
        }
        if raw && a.ndim() == 1 && norms.iter().any(|n| name.ends_with(n)) {
            return Ok(Some(a.add(&Array::scalar(1.0f32)?.astype(a.dtype())?)?));
        }
        Ok(None)
    })
}

impl Hybrid {
    /// Builds the model from `weights` as `layout` places them.
    pub fn load(
        w: &mut Weights,
        config: &ModelConfig,
        args: &HybridArgs,
        layout: HybridLayout,
    ) -> Result<Hybrid> {
        let kinds = args.cache_kinds(config)?;
        let head_dim = config.head_dim();
        let rope = if layout.rope_parameters_only {
            // Qwen3.5 reads θ, the fraction and the scaling from
            // `rope_parameters` alone, defaults filling what it lacks.
            let params = args.rope.rope_parameters.clone().unwrap_or_default();
            let theta = params.rope_theta.unwrap_or(layout.default_theta);
            let partial = params
                .partial_rotary_factor
                .unwrap_or(layout.default_partial);
            let dims = (head_dim as f32 * partial) as i32;
            initialize_rope(dims, theta, false, Some(&params))?
        } else {
            let partial = args.rope.partial_factor(layout.default_partial);
            let dims = (head_dim as f32 * partial) as i32;
            initialize_rope(
                dims,
                args.rope.theta(layout.default_theta),
                false,
                args.rope.scaling(),
            )?
        };
        let attention = AttentionSpec {
            qkv_bias: args.attention_bias,
            o_bias: args.attention_bias,
            qk_norm: Some(config.rms_norm_eps),
            output_gate: true,
            ..AttentionSpec::plain(config, rope)
        };
        let linear = args.linear_spec(config, layout.projections);
        let tied = config.tie_word_embeddings_or(false);
        let io = TokenIo::load(w, config, layout.root, layout.head, tied)?;
        let (eps, dim) = (config.rms_norm_eps, config.hidden_size);
        let mut layers = Vec::new();
        for i in 0..config.num_hidden_layers {
            let p = |name: &str| format!("{}.layers.{i}.{name}", layout.root);
            let mixer = if args.is_linear(i) {
                Mixer::Linear(GatedDeltaNet::load(w, &p("linear_attn"), config, linear)?)
            } else {
                Mixer::Full(Attention::load(w, &p("self_attn"), config, &attention)?)
            };
            let moe = &args.moe;
            let sparse = if layout.moe_every_layer {
                moe.num_experts > 0
            } else {
                is_sparse_layer(
                    i,
                    moe.num_experts,
                    moe.decoder_sparse_step,
                    &moe.mlp_only_layers,
                )
            };
            let mlp = if sparse {
                let spec = MoeSpec {
                    num_experts: moe.num_experts,
                    top_k: moe.num_experts_per_tok,
                    expert_hidden: moe.moe_intermediate_size,
                    routing: Routing::SoftmaxTopK {
                        norm_topk_prob: moe.norm_topk_prob.unwrap_or(layout.default_norm_topk_prob),
                    },
                    experts: Experts::Standard,
                    shared_expert: Shared::Gated {
                        hidden: moe.shared_expert_intermediate_size,
                    },
                };
                FeedForward::Sparse(Box::new(SparseMoe::load(w, &p("mlp"), config, &spec)?))
            } else {
                FeedForward::Dense(Mlp::load(w, &p("mlp"), config, false)?)
            };
            layers.push(Layer {
                mixer,
                mlp,
                input_layernorm: RmsNorm::load_shaped(w, &p("input_layernorm"), eps, dim)?,
                post_attention_layernorm: RmsNorm::load_shaped(
                    w,
                    &p("post_attention_layernorm"),
                    eps,
                    dim,
                )?,
            });
        }
        let norm = RmsNorm::load_shaped(w, &format!("{}.norm", layout.root), eps, dim)?;
        Ok(Hybrid {
            io,
            layers,
            kinds,
            norm,
        })
    }
}

impl LanguageModel for Hybrid {
    fn cache_kinds(&self) -> Vec<CacheKind> {
        self.kinds.clone()
    }

    fn hidden(&self, tokens: &Array, caches: &mut dyn Caches, at: Positions) -> Result<Array> {
        check_caches(caches, self.layers.len())?;
        let valid = match at {
            Positions::Rows { valid, .. } => valid,
            Positions::Sequence { .. } => None,
        };
        let mut h = self.io.embed(tokens)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let cache = caches.layer(i);
            let norm = &layer.input_layernorm;
            let r = match &layer.mixer {
                Mixer::Linear(gdn) => gdn.forward_add(&h, norm, &h, cache.recurrent()?, valid)?,
                Mixer::Full(attn) => attn.forward_add(&h, norm, &h, cache, at)?,
            };
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
            match &mut layer.mixer {
                Mixer::Linear(gdn) => out.extend(gdn.matrices_mut()),
                Mixer::Full(attn) => out.extend(attn.matrices_mut()),
            }
            out.extend(layer.mlp.matrices_mut());
        }
        out
    }

    fn dtype(&self) -> Dtype {
        self.norm.weight.dtype()
    }

    fn kv_quantizable(&self) -> bool {
        self.layers.iter().all(|l| match &l.mixer {
            Mixer::Full(attn) => attn.kv_quantizable(),
            Mixer::Linear(_) => true,
        })
    }
}

/// The `qwen3_next` family.
pub struct Qwen3Next;

impl Family for Qwen3Next {
    const MODEL_TYPES: &'static [&'static str] = &["qwen3_next"];
    type Args = HybridArgs;

    fn sanitize(_: &HybridArgs, _: &ModelConfig, weights: &mut Weights) -> Result<()> {
        sanitize_hybrid(weights)
    }

    fn cache_kinds(args: &HybridArgs, config: &ModelConfig) -> Result<Vec<CacheKind>> {
        args.cache_kinds(config)
    }

    fn build(
        args: HybridArgs,
        config: &ModelConfig,
        weights: &mut Weights,
    ) -> Result<Box<dyn LanguageModel>> {
        let layout = HybridLayout {
            root: "model",
            head: "lm_head",
            projections: Projections::Grouped,
            default_theta: 10_000.0,
            default_partial: 1.0,
            rope_parameters_only: false,
            moe_every_layer: false,
            default_norm_topk_prob: false,
        };
        Ok(Box::new(Hybrid::load(weights, config, &args, layout)?))
    }
}
