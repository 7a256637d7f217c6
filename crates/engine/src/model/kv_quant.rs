//! A key/value cache stored quantized, as mlx-lm's `QuantizedKVCache`
//! (`mlx_lm/models/cache.py`) stores it: each position's key and value
//! heads quantized affine along the head dimension (packed `bits`-bit
//! codes, a scale and a bias per `group_size` values), so that a long
//! context takes about half (8-bit) or a quarter (4-bit) of the memory of
//! a 16-bit cache. Attention then reads the codes directly
//! ([`quantized_attention`], mlx-lm's `quantized_scaled_dot_product_attention`
//! in `mlx_lm/models/base.py`): the queries times the packed keys, a
//! softmax, the scores times the packed values.
//!
//! As mlx-lm's `generate_step`, a cache turns quantized after a forward
//! pass that left it holding at least `start` positions (its
//! `quantized_kv_start`): the pass itself attended at full precision, and
//! every later one reads the quantized positions. Only full-attention
//! layers are quantized; mlx-lm cannot quantize a rotating (sliding-window)
//! cache, and a model with sliding windows or attention sinks is refused
//! ([`KvQuant`] is checked against the model when it is set).
//!
//! [`KvArray`] is what the caches hold per keys or values, either way: one
//! array, or the three of a quantized one, which every cache operation
//! (slicing positions or rows, concatenation, in-place writes, gathers)
//! applies alike.

use mlx::fast::AttentionMask;
use mlx::quantized::QuantizedWeight;
use mlx::{Array, Dtype};

use crate::error::{EngineError, Result};

/// How the KV cache is quantized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvQuant {
    /// Bits per value: 4 or 8.
    pub bits: i32,
    /// Values per scale and bias along the head dimension: 32, 64 or 128.
    pub group_size: i32,
    /// Caches stay at full precision until a forward pass leaves them
    /// holding at least this many positions (mlx-lm's
    /// `quantized_kv_start`).
    pub start: i32,
}

/// The group size when none is configured (mlx-lm's `kv_group_size`).
pub const DEFAULT_KV_GROUP_SIZE: i32 = 64;

impl KvQuant {
    /// Checks `bits` (4 or 8) and `group_size` (32, 64 or 128), naming the
    /// configuration keys in the error.
    pub fn new(bits: i32, group_size: i32, start: i32) -> Result<KvQuant> {
        if bits != 4 && bits != 8 {
            return Err(EngineError::InvalidRequest(format!(
                "kv_bits must be 4 or 8, not {bits}"
            )));
        }
        if ![32, 64, 128].contains(&group_size) {
            return Err(EngineError::InvalidRequest(format!(
                "kv_group_size must be 32, 64 or 128, not {group_size}"
            )));
        }
        if start < 0 {
            return Err(EngineError::InvalidRequest(format!(
                "quantized_kv_start must not be negative, not {start}"
            )));
        }
        Ok(KvQuant {
            bits,
            group_size,
            start,
        })
    }

    /// Bytes one `head_dim`-wide head of one position takes: the packed
    /// codes, and a scale and a bias of `dtype` per group.
    pub fn head_bytes(&self, head_dim: i32, dtype: Dtype) -> usize {
        crate::memory::kv_head_bytes(
            head_dim.max(0) as u64,
            dtype.size() as u64,
            Some((self.bits.max(0) as u32, self.group_size.max(1) as u32)),
        ) as usize
    }
}

/// Keys or values of a cache: full precision, or quantized along the last
/// (head) axis.
#[derive(Debug, Clone)]
pub enum KvArray {
    Full(Array),
    Quantized(QuantizedWeight),
}

impl KvArray {
    /// Length of `axis` (not the last one, whose length a quantized array
    /// packs).
    pub fn dim(&self, axis: i32) -> Result<i32> {
        Ok(match self {
            KvArray::Full(a) => a.dim(axis)?,
            KvArray::Quantized(q) => q.weight.dim(axis)?,
        })
    }

    /// The array, or each of a quantized one's, through `f` (an operation
    /// on any axis but the last).
    pub fn map(&self, f: impl Fn(&Array) -> mlx::Result<Array>) -> Result<KvArray> {
        Ok(match self {
            KvArray::Full(a) => KvArray::Full(f(a)?),
            KvArray::Quantized(q) => KvArray::Quantized(q.map_arrays(f)?),
        })
    }

    /// Positions or rows `start..stop` of `axis`.
    pub fn slice_axis(&self, axis: i32, start: i32, stop: i32) -> Result<KvArray> {
        self.map(|a| a.slice_axis(axis, start, stop))
    }

    /// A gather along `axis` (always a new buffer).
    pub fn take(&self, indices: &Array, axis: i32) -> Result<KvArray> {
        self.map(|a| a.take(indices, axis))
    }

    /// Zeros of this layout, `rows` rows and `len` positions.
    pub fn zeros(&self, rows: i32, len: i32) -> Result<KvArray> {
        self.map(|a| {
            let shape = a.shape();
            mlx::zeros(&[rows, shape[1], len, shape[3]], a.dtype())
        })
    }

    /// `self` with `update` (stored alike) written over `start..stop` of
    /// `axis`.
    pub fn slice_update_axis(
        &self,
        update: &KvArray,
        axis: i32,
        start: i32,
        stop: i32,
    ) -> Result<KvArray> {
        match (self, update) {
            (KvArray::Full(a), KvArray::Full(u)) => {
                Ok(KvArray::Full(a.slice_update_axis(u, axis, start, stop)?))
            }
            (KvArray::Quantized(a), KvArray::Quantized(u)) => {
                let mut out = a.clone();
                out.weight = a.weight.slice_update_axis(&u.weight, axis, start, stop)?;
                out.scales = a.scales.slice_update_axis(&u.scales, axis, start, stop)?;
                out.biases = match (&a.biases, &u.biases) {
                    (Some(b), Some(ub)) => Some(b.slice_update_axis(ub, axis, start, stop)?),
                    _ => return Err(unlike()),
                };
                Ok(KvArray::Quantized(out))
            }
            _ => Err(unlike()),
        }
    }

    /// Joins `parts` (stored alike) along `axis`.
    pub fn concatenate(parts: &[&KvArray], axis: i32) -> Result<KvArray> {
        match parts.first() {
            Some(KvArray::Full(_)) => {
                let arrays = parts
                    .iter()
                    .map(|p| match p {
                        KvArray::Full(a) => Ok(a),
                        KvArray::Quantized(_) => Err(unlike()),
                    })
                    .collect::<Result<Vec<&Array>>>()?;
                Ok(KvArray::Full(mlx::concatenate(&arrays, axis)?))
            }
            Some(KvArray::Quantized(first)) => {
                let quantized = parts
                    .iter()
                    .map(|p| match p {
                        KvArray::Quantized(q) if q.biases.is_some() => Ok(q),
                        _ => Err(unlike()),
                    })
                    .collect::<Result<Vec<&QuantizedWeight>>>()?;
                let join = |pick: &dyn Fn(&QuantizedWeight) -> &Array| -> Result<Array> {
                    let arrays: Vec<&Array> = quantized.iter().map(|q| pick(q)).collect();
                    Ok(mlx::concatenate(&arrays, axis)?)
                };
                let mut out = (*first).clone();
                out.weight = join(&|q| &q.weight)?;
                out.scales = join(&|q| &q.scales)?;
                out.biases = Some(join(&|q| q.biases.as_ref().unwrap_or(&q.scales))?);
                Ok(KvArray::Quantized(out))
            }
            None => Err(EngineError::InvalidRequest("nothing to concatenate".into())),
        }
    }

    /// The same positions quantized with `q` (already quantized: as is).
    pub fn quantized(&self, q: KvQuant) -> Result<KvArray> {
        Ok(match self {
            KvArray::Full(a) => {
                KvArray::Quantized(mlx::quantized::quantize(a, q.group_size, q.bits)?)
            }
            KvArray::Quantized(_) => self.clone(),
        })
    }

    /// `new` (`[.., D]`) stored as this array is: quantized alike, or as
    /// it is.
    pub fn stored_like(&self, new: &Array) -> Result<KvArray> {
        Ok(match self {
            KvArray::Full(_) => KvArray::Full(new.clone()),
            KvArray::Quantized(q) => {
                KvArray::Quantized(mlx::quantized::quantize(new, q.group_size, q.bits)?)
            }
        })
    }

    /// Whether it is stored quantized.
    pub fn is_quantized(&self) -> bool {
        matches!(self, KvArray::Quantized(_))
    }

    /// The full-precision array, or the dequantized one.
    pub fn to_full(&self) -> Result<Array> {
        Ok(match self {
            KvArray::Full(a) => a.clone(),
            KvArray::Quantized(q) => q.dequantize()?,
        })
    }

    /// Every array held.
    pub fn arrays(&self) -> Vec<&Array> {
        match self {
            KvArray::Full(a) => vec![a],
            KvArray::Quantized(q) => q.arrays(),
        }
    }

    /// Bytes held.
    pub fn nbytes(&self) -> usize {
        self.arrays().iter().map(|a| a.nbytes()).sum()
    }
}

/// Keys and values stored differently (a cache mixing layouts).
fn unlike() -> EngineError {
    EngineError::InvalidRequest("keys or values of a cache are stored unlike each other".into())
}

/// The lowest finite value of `dtype` (mlx's `finfo(dtype).min`), which a
/// masked score becomes.
fn lowest(dtype: Dtype) -> f64 {
    match dtype {
        Dtype::F16 => -65504.0,
        Dtype::Bf16 => -3.389_531_389_251_535_5e38,
        Dtype::F64 => f64::MIN,
        _ => f64::from(f32::MIN),
    }
}

/// Attention of `queries` (`[B, Hq, L, D]`) over quantized `keys` and
/// `values` (`[B, Hkv, S, ..]`), as mlx-lm's
/// `quantized_scaled_dot_product_attention`: grouped query heads share
/// their key/value head through a broadcast axis, a boolean mask sets
/// hidden scores to the dtype's lowest value (a float mask is added), and
/// the softmax runs in f32 (`precise`).
pub fn quantized_attention(
    queries: &Array,
    keys: &QuantizedWeight,
    values: &QuantizedWeight,
    scale: f32,
    mask: AttentionMask,
) -> Result<Array> {
    let shape = queries.shape();
    let (b, hq, l, d) = (shape[0], shape[1], shape[2], shape[3]);
    let hkv = keys.weight.dim(-3)?;
    let repeats = hq / hkv.max(1);
    let mut q = queries.multiply(&queries.scalar_like(scale)?)?;
    let (mut k, mut v) = (keys.clone(), values.clone());
    if repeats > 1 {
        q = q.reshape(&[b, hkv, repeats, l, d])?;
        k = k.map_arrays(|a| a.expand_dims(-3))?;
        v = v.map_arrays(|a| a.expand_dims(-3))?;
    }
    let mut scores = k.matmul(&q, true)?;
    let causal;
    let mask = match mask {
        AttentionMask::None => None,
        AttentionMask::Causal => {
            let s = scores.dim(-1)?;
            let queries = mlx::arange(f64::from(s - l), f64::from(s), 1.0, Dtype::I32)?;
            let keys = mlx::arange(0.0, f64::from(s), 1.0, Dtype::I32)?;
            causal = queries
                .reshape(&[l, 1])?
                .greater_equal(&keys.reshape(&[1, s])?)?;
            Some(&causal)
        }
        AttentionMask::Array(m) => Some(m),
    };
    if let Some(mask) = mask {
        let mask = if repeats > 1 && mask.ndim() > 3 {
            mask.expand_dims(-3)?
        } else {
            mask.clone()
        };
        scores = if mask.dtype() == Dtype::Bool {
            let low = mlx::full(&[], lowest(scores.dtype()), scores.dtype())?;
            mlx::where_(&mask, &scores, &low)?
        } else {
            scores.add(&mask)?
        };
    }
    let scores = scores.softmax(-1, true)?;
    let out = v.matmul(&scores, false)?;
    Ok(if repeats > 1 {
        out.reshape(&[b, hq, l, -1])?
    } else {
        out
    })
}
