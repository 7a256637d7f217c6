//! Gemma 3's language model: mlx-lm's `mlx_lm/models/gemma3_text.py` (and
//! `gemma3.py`, whose multimodal checkpoints keep it under
//! `language_model.` beside a vision tower this engine does not run).
//!
//! - Embeddings scaled by `sqrt(hidden_size)`, the factor rounded to
//!   bfloat16 first, as mlx-lm does.
//! - Every RMSNorm multiplies by `1 + weight`; the offset is added to the
//!   stored weights once, at load (the same value mlx-lm computes each
//!   call, in the weights' dtype).
//! - "Sandwich" blocks: the attention's output and the MLP's output are
//!   each normalized before they join the residual; the MLP is gated with
//!   GELU's tanh approximation; in float16, residual sums are clipped to
//!   float16's range.
//! - Attention: per-head q/k norms, softmax scale
//!   `query_pre_attn_scalar^-0.5`; every `sliding_window_pattern`-th layer
//!   is global (RoPE θ `rope_theta`, with `rope_scaling`), the others see
//!   the last `sliding_window` positions (RoPE θ `rope_local_base_freq`).
//! - The head is tied to the embedding unless the checkpoint has
//!   `lm_head.weight`.

use mlx::{Array, Dtype, bf16};
use serde::Deserialize;

use super::attention::{Attention, AttentionSpec};
use super::base::{CacheKind, Caches, LanguageModel, LayerCache, Positions, check_caches};
use super::config::ModelConfig;
use super::embedding::TokenIo;
use super::mlp::{Activation, Mlp};
use super::nn::{Matrix, RmsNorm};
use super::registry::Family;
use super::rope::{RopeScaling, initialize_rope};
use super::weights::Weights;
use crate::error::{EngineError, Result};

/// The `gemma3_text` family, and `gemma3` checkpoints' language model.
pub struct Gemma3Text;

/// `gemma3_text.py`'s `ModelArgs` beyond the common config.
#[derive(Debug, Clone, Deserialize)]
pub struct Gemma3TextArgs {
    #[serde(default = "default_theta")]
    pub rope_theta: f32,
    #[serde(default = "default_local_theta")]
    pub rope_local_base_freq: f32,
    #[serde(default = "default_scalar")]
    pub query_pre_attn_scalar: f32,
    #[serde(default = "default_window")]
    pub sliding_window: i32,
    #[serde(default = "default_pattern")]
    pub sliding_window_pattern: i32,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
}

fn default_theta() -> f32 {
    1_000_000.0
}

fn default_local_theta() -> f32 {
    10_000.0
}

fn default_scalar() -> f32 {
    256.0
}

fn default_window() -> i32 {
    512
}

fn default_pattern() -> i32 {
    6
}

impl Gemma3TextArgs {
    fn is_global(&self, layer: i32) -> bool {
        layer % self.sliding_window_pattern == self.sliding_window_pattern - 1
    }
}

/// Where a checkpoint keeps the language model.
fn root(config: &ModelConfig) -> &'static str {
    if config.model_type == "gemma3" {
        "language_model."
    } else {
        ""
    }
}

impl Family for Gemma3Text {
    const MODEL_TYPES: &'static [&'static str] = &["gemma3_text", "gemma3"];
    type Args = Gemma3TextArgs;

    fn sanitize(args: &Gemma3TextArgs, config: &ModelConfig, weights: &mut Weights) -> Result<()> {
        if args.sliding_window_pattern < 1 || args.sliding_window < 1 {
            return Err(EngineError::Config(format!(
                "sliding_window {} and sliding_window_pattern {} must be positive",
                args.sliding_window, args.sliding_window_pattern
            )));
        }
        let root = root(config);
        if !root.is_empty() {
            weights.skip("vision", |name| !name.starts_with(root));
            weights.rename(|name| name.strip_prefix(root).map(str::to_owned))?;
        }
        // RMSNorm(x) * (1 + weight), in the weights' dtype.
        weights.map(|name, w| {
            if name.ends_with("norm.weight") {
                Ok(Some(w.add(&w.scalar_like(1.0)?)?))
            } else {
                Ok(None)
            }
        })
    }

    fn build(
        args: Gemma3TextArgs,
        config: &ModelConfig,
        weights: &mut Weights,
    ) -> Result<Box<dyn LanguageModel>> {
        let head_dim = config.head_dim();
        let tied = !weights.contains("lm_head.weight");
        let io = TokenIo::load(weights, config, "model", "lm_head", tied)?;
        let (eps, dim) = (config.rms_norm_eps, config.hidden_size);
        let layers = (0..config.num_hidden_layers)
            .map(|layer| {
                let p = |name: &str| format!("model.layers.{layer}.{name}");
                let (rope, window) = if args.is_global(layer) {
                    let scaling = args.rope_scaling.as_ref();
                    (
                        initialize_rope(head_dim, args.rope_theta, false, scaling)?,
                        None,
                    )
                } else {
                    let rope = initialize_rope(head_dim, args.rope_local_base_freq, false, None)?;
                    (rope, Some(args.sliding_window))
                };
                let spec = AttentionSpec {
                    qk_norm: Some(eps),
                    window,
                    scale: Some(f64::from(args.query_pre_attn_scalar).powf(-0.5) as f32),
                    ..AttentionSpec::plain(config, rope)
                };
                let norm =
                    |w: &mut Weights, name: &str| RmsNorm::load_shaped(w, &p(name), eps, dim);
                Ok(Block {
                    attention: Attention::load(weights, &p("self_attn"), config, &spec)?,
                    mlp: Mlp {
                        activation: Activation::GeluApprox,
                        ..Mlp::load(weights, &p("mlp"), config, false)?
                    },
                    input_layernorm: norm(weights, "input_layernorm")?,
                    post_attention_layernorm: norm(weights, "post_attention_layernorm")?,
                    pre_feedforward_layernorm: norm(weights, "pre_feedforward_layernorm")?,
                    post_feedforward_layernorm: norm(weights, "post_feedforward_layernorm")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::load_shaped(weights, "model.norm", eps, dim)?;
        // The scale as mlx-lm rounds it: to bfloat16, then the model's dtype.
        let embed_scale = bf16::from_f64(f64::from(dim).sqrt()).to_f32();
        Ok(Box::new(Gemma3 {
            io,
            layers,
            norm,
            embed_scale,
        }))
    }
}

/// A Gemma 3 block: attention and MLP, each output normalized before it
/// joins the residual.
struct Block {
    attention: Attention,
    mlp: Mlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
    pre_feedforward_layernorm: RmsNorm,
    post_feedforward_layernorm: RmsNorm,
}

/// `x + y`, clipped to float16's range (in float32) when float16.
fn clip_residual(x: &Array, y: &Array) -> Result<Array> {
    if x.dtype() != Dtype::F16 {
        return Ok(x.add(y)?);
    }
    let sum = x.astype(Dtype::F32)?.add(&y.astype(Dtype::F32)?)?;
    // float16's largest finite value.
    let bound = Array::scalar(65_504.0f32)?;
    Ok(sum
        .clip(Some(&bound.negative()?), Some(&bound))?
        .astype(Dtype::F16)?)
}

impl Block {
    fn forward(&self, x: &Array, cache: &mut dyn LayerCache, at: Positions) -> Result<Array> {
        let r = self
            .attention
            .forward(x, &self.input_layernorm, cache, at)?;
        let h = clip_residual(x, &self.post_attention_layernorm.forward(&r)?)?;
        let r = self
            .mlp
            .forward(&self.pre_feedforward_layernorm.forward(&h)?)?;
        clip_residual(&h, &self.post_feedforward_layernorm.forward(&r)?)
    }
}

/// A loaded Gemma 3 language model.
struct Gemma3 {
    io: TokenIo,
    layers: Vec<Block>,
    norm: RmsNorm,
    embed_scale: f32,
}

impl LanguageModel for Gemma3 {
    fn cache_kinds(&self) -> Vec<CacheKind> {
        vec![CacheKind::Kv; self.layers.len()]
    }

    fn hidden(&self, tokens: &Array, caches: &mut dyn Caches, at: Positions) -> Result<Array> {
        check_caches(caches, self.layers.len())?;
        let h = self.io.embed(tokens)?;
        let mut h = h.multiply(&h.scalar_like(self.embed_scale)?)?;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h, caches.layer(i), at)?;
        }
        self.norm.forward(&h)
    }

    fn logits(&self, hidden: &Array) -> Result<Array> {
        self.io.logits(hidden)
    }

    fn matrices_mut(&mut self) -> Vec<&mut Matrix> {
        let mut out = self.io.matrices_mut();
        for layer in &mut self.layers {
            out.extend(layer.attention.matrices_mut());
            out.extend(layer.mlp.matrices_mut());
        }
        out
    }

    fn dtype(&self) -> Dtype {
        self.norm.weight.dtype()
    }

    fn kv_quantizable(&self) -> bool {
        self.layers.iter().all(|l| l.attention.kv_quantizable())
    }
}
