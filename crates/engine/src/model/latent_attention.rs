//! Multi-head latent attention (DeepSeek-V2/V3, Kimi K2), as mlx-lm's
//! `deepseek_v3.py` and `mla.py` compute it.
//!
//! Each position caches one compressed vector (`kv_lora_rank` features,
//! normalized) and one rotary key part (`qk_rope_head_dim`) shared by all
//! heads: the cache holds them as keys `[B, 1, S, kv_lora_rank]` and values
//! `[B, 1, S, qk_rope_head_dim]`, so the ordinary KV caches, batching and
//! the prompt cache carry them, at a few percent of what full keys and
//! values of 128 heads would take. The per-head key and value projections
//! are absorbed as mlx-lm does: for one new token the query is taken into
//! the latent space (`embed_q`) and attends to the cached latents
//! directly, its output brought back per head (`unembed_out`); for
//! several, the latents are expanded into each head's keys and values. The
//! rotary part enters as the scores `q_pe · k_pe` added to the attention's
//! logits (masked positions at the type's lowest value).

use mlx::fast::{AttentionMask, Rope, scaled_dot_product_attention};
use mlx::{Array, Dtype};

use super::base::{LayerCache, Positions};
use super::config::ModelConfig;
use super::nn::{Linear, Matrix, RmsNorm};
use super::weights::Weights;
use crate::error::{EngineError, Result};

/// The shape of a latent attention layer.
#[derive(Debug, Clone)]
pub struct LatentSpec {
    /// The query's low-rank bottleneck (`None`: a direct `q_proj`).
    pub q_lora_rank: Option<i32>,
    pub kv_lora_rank: i32,
    /// Per head, the query/key features without and with rotation, and the
    /// value features.
    pub nope_dim: i32,
    pub rope_dim: i32,
    pub v_dim: i32,
    /// Biases on `q_a_proj`, `kv_a_proj_with_mqa` and `o_proj`.
    pub bias: bool,
    /// The softmax scale.
    pub scale: f32,
    pub rope: Rope,
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
pub struct LatentAttention {
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
    /// Loads `{prefix}.*` (mlx-lm's names: `q_proj` or `q_a_proj` /
    /// `q_a_layernorm` / `q_b_proj`, `kv_a_proj_with_mqa`, `kv_a_layernorm`,
    /// `embed_q`, `unembed_out`, `o_proj`).
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        config: &ModelConfig,
        spec: &LatentSpec,
    ) -> Result<Self> {
        let p = |name: &str| format!("{prefix}.{name}");
        let hidden = config.hidden_size;
        let heads = config.num_attention_heads;
        let q_head_dim = spec.nope_dim + spec.rope_dim;
        let bias = spec.bias;
        let q = match spec.q_lora_rank {
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
        let rank = spec.kv_lora_rank;
        Ok(LatentAttention {
            q,
            kv_a_proj_with_mqa: Linear::load_shaped(
                w,
                &p("kv_a_proj_with_mqa"),
                config,
                bias,
                [rank + spec.rope_dim, hidden],
            )?,
            kv_a_layernorm: RmsNorm::load_shaped(w, &p("kv_a_layernorm"), 1e-6, rank)?,
            embed_q: MultiLinear::load(w, &p("embed_q"), config, [heads, rank, spec.nope_dim])?,
            unembed_out: MultiLinear::load(
                w,
                &p("unembed_out"),
                config,
                [heads, spec.v_dim, rank],
            )?,
            o_proj: Linear::load_shaped(
                w,
                &p("o_proj"),
                config,
                bias,
                [hidden, heads * spec.v_dim],
            )?,
            heads,
            nope_dim: spec.nope_dim,
            rope_dim: spec.rope_dim,
            kv_lora_rank: rank,
            scale: spec.scale,
            rope: spec.rope.clone(),
        })
    }

    /// The weight matrices.
    pub fn matrices_mut(&mut self) -> Vec<&mut Matrix> {
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
    pub fn forward_add(
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
        // Never quantized (the family says so: `kv_quantizable`).
        let (latent, k_pe) = cache.update_and_fetch(&latent, &k_pe)?;
        let (latent, k_pe) = (latent.to_full()?, k_pe.to_full()?);
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

/// Splits a Hugging Face `kv_b_proj` (`[heads * (nope + v), rank]`, per
/// head `nope` key features then `v_dim` value features) into
/// the absorbed `embed_q` (`[heads, rank, nope]`) and `unembed_out`
/// (`[heads, v, rank]`).
pub fn split_kv_b_proj(
    (nope, v_dim): (i32, i32),
    heads: i32,
    prefix: &str,
    w: &mut Weights,
) -> Result<()> {
    let name = format!("{prefix}.kv_b_proj.weight");
    let Some(kv_b) = w.take_opt(&name) else {
        return Ok(());
    };
    if w.contains(&format!("{prefix}.kv_b_proj.scales")) {
        return Err(EngineError::Weights(format!(
            "{prefix}.kv_b_proj is quantized: convert the checkpoint with mlx-lm first"
        )));
    }
    let per_head = nope + v_dim;
    let v = kv_b.reshape(&[heads, per_head, -1])?;
    let wk = v.slice_axis(1, 0, nope)?.swapaxes(-1, -2)?;
    let wv = v.slice_axis(1, nope, per_head)?;
    w.insert(format!("{prefix}.embed_q.weight"), wk);
    w.insert(format!("{prefix}.unembed_out.weight"), wv);
    Ok(())
}
