//! Affine quantization as MLX does it: each group of `group_size`
//! consecutive weights along the last axis is stored as `bits`-bit integers
//! `q` with a per-group `scale` and `bias`, meaning `w ≈ scale * q + bias`.
//! Packed weights are `u32`; this is the layout mlx-lm checkpoints store.

use crate::array::call_array;
use crate::error::Result;
use crate::{Array, ffi};

/// A quantized matrix: packed weights plus per-group scales and biases.
#[derive(Debug, Clone)]
pub struct QuantizedWeight {
    /// Packed `bits`-bit values, `u32`, shape `[..., cols * bits / 32]`.
    pub weight: Array,
    /// Per-group scales, shape `[..., cols / group_size]`.
    pub scales: Array,
    /// Per-group biases, shape `[..., cols / group_size]`.
    pub biases: Array,
    /// Weights per group (32, 64 or 128).
    pub group_size: i32,
    /// Bits per weight (2, 3, 4, 5, 6 or 8).
    pub bits: i32,
}

/// Quantizes `w` along its last axis.
pub fn quantize(w: &Array, group_size: i32, bits: i32) -> Result<QuantizedWeight> {
    let mut q = std::ptr::null_mut();
    let mut s = std::ptr::null_mut();
    let mut b = std::ptr::null_mut();
    // SAFETY: `w` is a live handle; on success the shim writes three new,
    // owned handles to `q`, `s` and `b`.
    let rc = unsafe { ffi::mlxs_quantize(w.as_ptr(), group_size, bits, &mut q, &mut s, &mut b) };
    crate::error::check(rc)?;
    Ok(QuantizedWeight {
        weight: Array::from_owned(q)?,
        scales: Array::from_owned(s)?,
        biases: Array::from_owned(b)?,
        group_size,
        bits,
    })
}

impl QuantizedWeight {
    /// The dequantized matrix `scale * q + bias`.
    pub fn dequantize(&self) -> Result<Array> {
        call_array!(mlxs_dequantize(
            self.weight.as_ptr(),
            self.scales.as_ptr(),
            self.biases.as_ptr(),
            self.group_size,
            self.bits,
        ))
    }

    /// `x @ W.T` when `transpose` (the layout of a linear layer's weight
    /// `[out, in]`), else `x @ W`, without materializing `W`.
    pub fn matmul(&self, x: &Array, transpose: bool) -> Result<Array> {
        call_array!(mlxs_quantized_matmul(
            x.as_ptr(),
            self.weight.as_ptr(),
            self.scales.as_ptr(),
            self.biases.as_ptr(),
            transpose,
            self.group_size,
            self.bits,
        ))
    }

    /// Rows of the dequantized matrix at `indices` (an embedding lookup),
    /// dequantizing only those rows.
    pub fn take_rows(&self, indices: &Array) -> Result<Array> {
        let rows = QuantizedWeight {
            weight: self.weight.take(indices, 0)?,
            scales: self.scales.take(indices, 0)?,
            biases: self.biases.take(indices, 0)?,
            group_size: self.group_size,
            bits: self.bits,
        };
        rows.dequantize()
    }
}
