//! The Gated DeltaNet linear-attention layer of Qwen3-Next and Qwen3.5,
//! as mlx-lm's `Qwen3NextGatedDeltaNet` (`qwen3_next.py`) and
//! `GatedDeltaNet` (`qwen3_5.py`) compute it: projections of the input to
//! q, k, v, an output gate `z` and the per-head `b`, `a`; a causal
//! depthwise convolution over q, k, v (kernel `linear_conv_kernel_dim`,
//! its last inputs kept in the cache) and SiLU; q and k L2-normalized;
//! the gated delta rule ([`super::gated_delta`]) against the layer's
//! recurrent state; a gated RMSNorm (`rms_norm(y) * silu(z)`, in f32) and
//! the output projection.
//!
//! The two families store the projections differently ([`Projections`]):
//! Qwen3-Next as `in_proj_qkvz` and `in_proj_ba` with the parts of each
//! key head side by side, Qwen3.5 as `in_proj_qkv`, `in_proj_z`,
//! `in_proj_b`, `in_proj_a`. Either way they read the same input and run
//! as one product when stored alike.

use mlx::{Array, Dtype};

use super::base::CacheKind;
use super::config::ModelConfig;
use super::gated_delta;
use super::nn::{Linear, LinearGroup, Matrix, RmsNorm};
use super::recurrent_cache::RecurrentCache;
use super::weights::Weights;
use crate::error::{EngineError, Result};

/// How the input projections are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Projections {
    /// `in_proj_qkvz` and `in_proj_ba`, grouped per key head (Qwen3-Next).
    Grouped,
    /// `in_proj_qkv`, `in_proj_z`, `in_proj_b`, `in_proj_a` (Qwen3.5).
    Split,
}

/// The shape of a Gated DeltaNet layer.
#[derive(Debug, Clone, Copy)]
pub struct GatedDeltaSpec {
    pub num_k_heads: i32,
    pub num_v_heads: i32,
    pub head_k_dim: i32,
    pub head_v_dim: i32,
    pub conv_kernel: i32,
    pub eps: f32,
    pub projections: Projections,
}

impl GatedDeltaSpec {
    fn key_dim(&self) -> i32 {
        self.num_k_heads * self.head_k_dim
    }

    fn value_dim(&self) -> i32 {
        self.num_v_heads * self.head_v_dim
    }

    /// Channels of the convolution: q, k and v.
    fn conv_dim(&self) -> i32 {
        2 * self.key_dim() + self.value_dim()
    }

    /// The cache the layer keeps.
    pub fn cache_kind(&self) -> CacheKind {
        CacheKind::Recurrent {
            conv_len: self.conv_kernel - 1,
            conv_dim: self.conv_dim(),
            heads: self.num_v_heads,
            value_dim: self.head_v_dim,
            key_dim: self.head_k_dim,
        }
    }
}

/// A loaded Gated DeltaNet layer.
pub struct GatedDeltaNet {
    spec: GatedDeltaSpec,
    projections: LinearGroup,
    /// The depthwise kernel as `[kernel, channels]`.
    conv: Array,
    a_log: Array,
    dt_bias: Array,
    norm: RmsNorm,
    out_proj: Linear,
}

impl GatedDeltaNet {
    /// Loads the layer at `prefix` (e.g. `model.layers.0.linear_attn`).
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        config: &ModelConfig,
        spec: GatedDeltaSpec,
    ) -> Result<GatedDeltaNet> {
        let p = |name: &str| format!("{prefix}.{name}");
        if spec.num_k_heads <= 0 || spec.num_v_heads % spec.num_k_heads != 0 {
            return Err(EngineError::Config(format!(
                "linear_num_value_heads ({}) must be a multiple of linear_num_key_heads ({})",
                spec.num_v_heads, spec.num_k_heads
            )));
        }
        let (kd, vd, nv) = (spec.key_dim(), spec.value_dim(), spec.num_v_heads);
        let parts: &[(&str, i32)] = match spec.projections {
            Projections::Grouped => &[("in_proj_qkvz", 2 * kd + 2 * vd), ("in_proj_ba", 2 * nv)],
            Projections::Split => &[
                ("in_proj_qkv", 2 * kd + vd),
                ("in_proj_z", vd),
                ("in_proj_b", nv),
                ("in_proj_a", nv),
            ],
        };
        let mut layers = Vec::with_capacity(parts.len());
        let hidden = config.hidden_size;
        for &(name, width) in parts {
            layers.push(Linear::load_shaped(
                w,
                &p(name),
                config,
                false,
                [width, hidden],
            )?);
        }
        let (conv_dim, kernel) = (spec.conv_dim(), spec.conv_kernel);
        let conv = w
            .take_shaped(&p("conv1d.weight"), &[conv_dim, kernel, 1])?
            .reshape(&[conv_dim, kernel])?
            .transpose(&[1, 0])?;
        Ok(GatedDeltaNet {
            spec,
            projections: LinearGroup::new(layers)?,
            conv,
            a_log: w.take_shaped(&p("A_log"), &[nv])?,
            dt_bias: w.take_shaped(&p("dt_bias"), &[nv])?,
            norm: RmsNorm {
                weight: w.take_shaped(&p("norm.weight"), &[spec.head_v_dim])?,
                eps: spec.eps,
            },
            out_proj: Linear::load_shaped(w, &p("out_proj"), config, false, [hidden, vd])?,
        })
    }

    /// The weight matrices.
    pub fn matrices_mut(&mut self) -> Vec<&mut Matrix> {
        let mut out: Vec<&mut Matrix> = self.projections.matrices_mut().collect();
        out.push(&mut self.out_proj.weight);
        out
    }

    /// q, k, v side by side (`[B, S, conv_dim]`), z (`[B, S, Hv, Dv]`),
    /// b and a (`[B, S, Hv]`) of the normed input.
    fn project(&self, x: &Array, b: i32, s: i32) -> Result<[Array; 4]> {
        let spec = &self.spec;
        let (nk, nv, dk, dv) = (
            spec.num_k_heads,
            spec.num_v_heads,
            spec.head_k_dim,
            spec.head_v_dim,
        );
        let parts = self.projections.forward(x)?;
        let lost = || EngineError::Weights("a linear-attention projection lost a part".into());
        match spec.projections {
            Projections::Split => {
                let [qkv, z, bb, a]: [Array; 4] = parts.try_into().map_err(|_| lost())?;
                Ok([qkv, z.reshape(&[b, s, nv, dv])?, bb, a])
            }
            Projections::Grouped => {
                let [qkvz, ba]: [Array; 2] = parts.try_into().map_err(|_| lost())?;
                let r = nv / nk;
                let per_head = qkvz.reshape(&[b, s, nk, -1])?;
                let qkvz = per_head.split(&[dk, 2 * dk, 2 * dk + r * dv], -1)?;
                let flat = |x: &Array| x.reshape(&[b, s, -1]);
                let qkv =
                    mlx::concatenate(&[&flat(&qkvz[0])?, &flat(&qkvz[1])?, &flat(&qkvz[2])?], -1)?;
                let ba = ba.reshape(&[b, s, nk, -1])?.split(&[r], -1)?;
                Ok([
                    qkv,
                    qkvz[3].reshape(&[b, s, nv, dv])?,
                    ba[0].reshape(&[b, s, nv])?,
                    ba[1].reshape(&[b, s, nv])?,
                ])
            }
        }
    }

    /// `[B, S, H, D]` with each of the `H` heads repeated `r` times.
    fn repeat_heads(x: &Array, r: i32) -> Result<Array> {
        if r == 1 {
            return Ok(x.clone());
        }
        let s = x.shape();
        Ok(x.expand_dims(3)?
            .broadcast_to(&[s[0], s[1], s[2], r, s[3]])?
            .reshape(&[s[0], s[1], s[2] * r, s[3]])?)
    }

    /// `residual` plus the layer's output for `norm(x)` (`[B, S, hidden]`),
    /// folding the tokens into `cache`; `valid` (`[B, S]`) marks the tokens
    /// that are not padding.
    pub fn forward_add(
        &self,
        x: &Array,
        norm: &RmsNorm,
        residual: &Array,
        cache: &mut RecurrentCache,
        valid: Option<&Array>,
    ) -> Result<Array> {
        let spec = &self.spec;
        let shape = x.shape();
        let (b, s) = (shape[0], shape[1]);
        let dtype = x.dtype();
        let [mut qkv, z, bb, a] = self.project(&norm.forward(x)?, b, s)?;
        if let Some(valid) = valid {
            qkv = mlx::where_(
                &valid.expand_dims(-1)?,
                &qkv,
                &Array::scalar(0.0f32)?.astype(dtype)?,
            )?;
        }
        let (conv_state, state) = cache.arrays(b, dtype)?;
        let input = mlx::concatenate(&[&conv_state, &qkv], 1)?;
        let keep = spec.conv_kernel - 1;
        let new_conv = input.slice_axis(1, s, s + keep)?.contiguous()?;
        // Depthwise causal convolution: out[t] = Σ_j input[t + j] · w[j].
        let mut conv = input
            .slice_axis(1, 0, s)?
            .multiply(&self.conv.slice_axis(0, 0, 1)?)?;
        for j in 1..spec.conv_kernel {
            let tap = input
                .slice_axis(1, j, j + s)?
                .multiply(&self.conv.slice_axis(0, j, j + 1)?)?;
            conv = conv.add(&tap)?;
        }
        let conv = conv.silu()?;
        let (kd, dk) = (spec.key_dim(), spec.head_k_dim);
        let parts = conv.split(&[kd, 2 * kd], -1)?;
        let heads = |x: &Array, h: i32, d: i32| x.reshape(&[b, s, h, d]);
        let q = heads(&parts[0], spec.num_k_heads, dk)?;
        let k = heads(&parts[1], spec.num_k_heads, dk)?;
        let v = heads(&parts[2], spec.num_v_heads, spec.head_v_dim)?;
        // mlx-lm's normalize_qk: unit q and k, the Dk^-1/2 readout in q.
        let inv = (dk as f32).powf(-0.5);
        let eps = 1e-6 * inv * inv;
        let q = mlx::fast::rms_norm(&q, None, eps)?
            .multiply(&Array::scalar(inv * inv)?.astype(dtype)?)?;
        let k =
            mlx::fast::rms_norm(&k, None, eps)?.multiply(&Array::scalar(inv)?.astype(dtype)?)?;
        let (log_g, beta) = gated_delta::gates(&a, &bb, &self.a_log, &self.dt_bias, valid)?;
        let r = spec.num_v_heads / spec.num_k_heads;
        let f32 = |x: Array| x.astype(Dtype::F32);
        let q = f32(Self::repeat_heads(&q, r)?)?;
        let k = f32(Self::repeat_heads(&k, r)?)?;
        let v = f32(v)?;
        let (y, state) = if s == 1 {
            let one = |x: &Array| x.squeeze(1);
            let (y, state) = gated_delta::step(
                &one(&q)?,
                &one(&k)?,
                &one(&v)?,
                &one(&log_g)?,
                &one(&beta)?,
                &state,
            )?;
            (y.expand_dims(1)?, state)
        } else {
            gated_delta::chunked(&q, &k, &v, &log_g, &beta, &state)?
        };
        cache.store(new_conv, state, s);
        // Gated RMSNorm, as mlx-lm's precise_swiglu: silu(z) · norm(y) in f32.
        let y = y.astype(dtype)?;
        let normed = self.norm.forward(&y)?.astype(Dtype::F32)?;
        let out = z
            .astype(Dtype::F32)?
            .silu()?
            .multiply(&normed)?
            .astype(dtype)?;
        self.out_proj
            .forward_add(&out.reshape(&[b, s, -1])?, residual)
    }
}
