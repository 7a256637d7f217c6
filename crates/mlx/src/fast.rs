//! MLX's fused kernels (`mlx::core::fast`): RMS and layer norm, rotary
//! position embedding, and scaled dot-product attention.

use std::ffi::CStr;

use crate::Array;
use crate::array::call_array;
use crate::error::Result;

fn opt(a: Option<&Array>) -> crate::ffi::Handle {
    a.map_or(std::ptr::null(), Array::as_ptr)
}

/// `x / sqrt(mean(x², last axis) + eps) * weight`.
pub fn rms_norm(x: &Array, weight: Option<&Array>, eps: f32) -> Result<Array> {
    call_array!(mlxs_rms_norm(x.as_ptr(), opt(weight), eps))
}

/// `(x - mean) / sqrt(var + eps) * weight + bias` over the last axis.
pub fn layer_norm(
    x: &Array,
    weight: Option<&Array>,
    bias: Option<&Array>,
    eps: f32,
) -> Result<Array> {
    call_array!(mlxs_layer_norm(x.as_ptr(), opt(weight), opt(bias), eps))
}

/// `silu(gate) * up` (the gated MLP's activation) as one compiled kernel
/// instead of three element-wise ones: mlx-lm's `swiglu`, built with
/// `mx.compile` and shape-independent.
pub fn swiglu(gate: &Array, up: &Array) -> Result<Array> {
    call_array!(mlxs_swiglu(gate.as_ptr(), up.as_ptr()))
}

/// Rotary position embedding of the first `dims` features of the last axis
/// of `x` (shape `[..., seq, head_dim]`), positions starting at an offset.
#[derive(Debug, Clone)]
pub struct Rope {
    /// Features rotated (the rest pass through).
    pub dims: i32,
    /// `true`: rotate consecutive pairs `(x[2i], x[2i+1])` (the original
    /// layout, and llama.cpp's); `false`: rotate `(x[i], x[i + dims/2])`
    /// (the Hugging Face layout).
    pub traditional: bool,
    /// θ: pair `i` turns by `position * base^(-2i/dims)`. Unused when
    /// `freqs` is set.
    pub base: f32,
    /// Positions are multiplied by this.
    pub scale: f32,
    /// Explicit per-pair periods `f_i` (`dims / 2` of them): pair `i` turns
    /// by `position / f_i`. This is how mlx-lm passes Llama 3's rescaled
    /// frequencies; with `f_i = base^(2i/dims)` it equals the `base` form.
    pub freqs: Option<Array>,
    /// The rotated features are multiplied by this before they turn (the
    /// attention-temperature factor of LongRoPE and YaRN; 1 for the rest).
    pub mscale: f32,
    /// Dynamic NTK scaling: past `max_positions`, θ grows with the length
    /// the call reaches (see [`DynamicNtk`]).
    pub dynamic: Option<DynamicNtk>,
}

/// Dynamic NTK-aware scaling (mlx-lm's `DynamicNTKScalingRoPE`): a call that
/// reaches `n > max_positions` positions (its new ones included) rotates
/// with `θ' = θ·(factor·n/max_positions − (factor − 1))^(dims/(dims − 2))`,
/// the earlier positions' keys keeping the θ they were rotated with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DynamicNtk {
    pub max_positions: i32,
    pub factor: f32,
}

impl DynamicNtk {
    /// θ for a call that reaches `reached` positions, in double precision as
    /// mlx-lm computes it.
    fn base(&self, base: f32, dims: i32, reached: i32) -> f32 {
        let n = f64::from(reached.max(self.max_positions));
        let factor = f64::from(self.factor);
        let ratio = factor * n / f64::from(self.max_positions) - (factor - 1.0);
        let exponent = f64::from(dims) / f64::from(dims - 2);
        (f64::from(base) * ratio.powf(exponent)) as f32
    }
}

impl Rope {
    /// `x` with its rotated features multiplied by `mscale` (as mlx-lm's
    /// `x.at[..., :dims].multiply(mscale)`); `x` itself when it is 1.
    fn prescaled(&self, x: &Array) -> Result<Array> {
        if self.mscale == 1.0 {
            return Ok(x.clone());
        }
        let width = x.shape().last().copied().unwrap_or(0);
        let factor = x.scalar_like(self.mscale)?;
        if self.dims >= width {
            return x.multiply(&factor);
        }
        let rotated = x.slice_axis(-1, 0, self.dims)?.multiply(&factor)?;
        let rest = x.slice_axis(-1, self.dims, width)?;
        crate::concatenate(&[&rotated, &rest], -1)
    }

    /// Rotates `x` for positions `offset, offset + 1, ...` along axis -2.
    pub fn apply(&self, x: &Array, offset: i32) -> Result<Array> {
        let has_base = self.freqs.is_none();
        let base = match &self.dynamic {
            Some(d) => d.base(self.base, self.dims, x.dim(-2)? + offset),
            None => self.base,
        };
        let x = &self.prescaled(x)?;
        call_array!(mlxs_rope(
            x.as_ptr(),
            self.dims,
            self.traditional,
            base,
            has_base,
            self.scale,
            offset,
            opt(self.freqs.as_ref()),
        ))
    }

    /// Rotates each row `b` of `x` (`[B, ..., seq, head_dim]`) for
    /// positions starting at its own `offsets[b]` (`offsets`: int32 `[B]`),
    /// as for a batch of sequences of different lengths.
    pub fn apply_rows(&self, x: &Array, offsets: &Array) -> Result<Array> {
        if let Some(d) = self.dynamic {
            return self.apply_rows_dynamic(x, offsets, d);
        }
        let has_base = self.freqs.is_none();
        let x = &self.prescaled(x)?;
        call_array!(mlxs_rope_offsets(
            x.as_ptr(),
            self.dims,
            self.traditional,
            self.base,
            has_base,
            self.scale,
            offsets.as_ptr(),
            opt(self.freqs.as_ref()),
        ))
    }

    /// [`Rope::apply_rows`] under dynamic NTK scaling: each row's θ follows
    /// the length it reaches, computed on the device from its offset (no
    /// host read), and the row turns by the periods `θ_b^(2i/dims)`.
    fn apply_rows_dynamic(&self, x: &Array, offsets: &Array, d: DynamicNtk) -> Result<Array> {
        let x = &self.prescaled(x)?;
        let rows = x.dim(0)?;
        let new = x.dim(-2)?;
        let f32s = |v: f32| Array::scalar(v);
        let reached = offsets
            .astype(crate::Dtype::F32)?
            .add(&f32s(new as f32)?)?
            .maximum(&f32s(d.max_positions as f32)?)?;
        let ratio = reached
            .multiply(&f32s(d.factor / d.max_positions as f32)?)?
            .subtract(&f32s(d.factor - 1.0)?)?;
        let exponent = self.dims as f32 / (self.dims - 2) as f32;
        let bases = ratio.power(&f32s(exponent)?)?.multiply(&f32s(self.base)?)?;
        let pairs = crate::arange(0.0, f64::from(self.dims), 2.0, crate::Dtype::F32)?
            .divide(&f32s(self.dims as f32)?)?;
        let mut out = Vec::with_capacity(usize::try_from(rows).unwrap_or(0));
        for b in 0..rows {
            let periods = bases.slice_axis(0, b, b + 1)?.power(&pairs)?;
            out.push(call_array!(mlxs_rope_offsets(
                x.slice_axis(0, b, b + 1)?.as_ptr(),
                self.dims,
                self.traditional,
                self.base,
                false,
                self.scale,
                offsets.slice_axis(0, b, b + 1)?.as_ptr(),
                periods.as_ptr(),
            ))?);
        }
        crate::concatenate(&out.iter().collect::<Vec<_>>(), 0)
    }
}

/// The mask of an attention call.
#[derive(Debug, Clone, Copy)]
pub enum AttentionMask<'a> {
    /// Every query sees every key.
    None,
    /// Query `i` sees keys up to `i + (keys - queries)` (a causal mask
    /// aligned to the end, as when decoding after a cache).
    Causal,
    /// A boolean mask (true = attend) or an additive float mask, broadcast
    /// to `[batch, heads, queries, keys]`.
    Array(&'a Array),
}

/// `softmax(q @ kᵀ * scale + mask) @ v` with `q: [B, Hq, L, D]` and
/// `k, v: [B, Hkv, S, D]`; `Hq` a multiple of `Hkv` (grouped-query attention).
///
/// MLX's fused kernel, except on the CUDA backend for several queries (a
/// prefill): there it is [`attention_composed`], because the fused kernel's
/// cuDNN plan is built anew for every new combination of lengths (50-75 ms
/// on an H100, inside the request that brings it).
pub fn scaled_dot_product_attention(
    q: &Array,
    k: &Array,
    v: &Array,
    scale: f32,
    mask: AttentionMask<'_>,
) -> Result<Array> {
    let (mode, arr) = mask.parts();
    call_array!(mlxs_sdpa(
        q.as_ptr(),
        k.as_ptr(),
        v.as_ptr(),
        scale,
        mode.as_ptr(),
        opt(arr),
    ))
}

/// [`scaled_dot_product_attention`] with attention sinks: `sinks`
/// (`[heads]`, one logit per query head) joins every softmax as a column
/// no value stands behind, so a query may give part of its weight to
/// nothing (gpt-oss). Always MLX's own kernel (or its fallback).
pub fn attention_with_sinks(
    q: &Array,
    k: &Array,
    v: &Array,
    scale: f32,
    mask: AttentionMask<'_>,
    sinks: &Array,
) -> Result<Array> {
    let (mode, arr) = mask.parts();
    call_array!(mlxs_sdpa_sinks(
        q.as_ptr(),
        k.as_ptr(),
        v.as_ptr(),
        scale,
        mode.as_ptr(),
        opt(arr),
        sinks.as_ptr(),
    ))
}

/// [`scaled_dot_product_attention`] from matmul and softmax on every
/// backend: the queries grouped by the key head they share (keys and values
/// are never repeated), masked scores at the type's lowest value, a precise
/// softmax; taken in blocks of queries whose scores hold at most
/// `max_scores` elements (`None`: 2^27).
pub fn attention_composed(
    q: &Array,
    k: &Array,
    v: &Array,
    scale: f32,
    mask: AttentionMask<'_>,
    max_scores: Option<usize>,
) -> Result<Array> {
    let (mode, arr) = mask.parts();
    let max_scores = max_scores.map_or(0, |n| i64::try_from(n.max(1)).unwrap_or(i64::MAX));
    call_array!(mlxs_sdpa_composed(
        q.as_ptr(),
        k.as_ptr(),
        v.as_ptr(),
        scale,
        mode.as_ptr(),
        opt(arr),
        max_scores,
    ))
}

impl<'a> AttentionMask<'a> {
    /// The shim's mask mode and mask array.
    fn parts(self) -> (&'static CStr, Option<&'a Array>) {
        match self {
            AttentionMask::None => (c"", None),
            AttentionMask::Causal => (c"causal", None),
            AttentionMask::Array(a) => (c"", Some(a)),
        }
    }
}
