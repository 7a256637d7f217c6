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

/// What [`QuantizedWeight::matmul_then`] does with `x @ W.T` in the same
/// kernel.
#[derive(Debug, Clone, Copy)]
pub enum Epilogue<'a> {
    /// Nothing.
    None,
    /// Adds a bias row `[out]` (a linear layer's bias).
    AddRow(&'a Array),
    /// Adds an array of the output's shape (a residual connection).
    Add(&'a Array),
    /// `silu(gate) * up`, where the matrix's first half of rows is the gate
    /// projection and the second half the up projection; the output is half
    /// as wide.
    Swiglu,
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
    ///
    /// On the CUDA backend, 4-bit `x @ W.T` with 1 to 7 rows of `x` (a
    /// decode step of up to 7 sequences; [`set_custom_qmv_max_rows`]) runs
    /// the project's own kernel unless [`set_custom_qmv`] turned it off; see
    /// `shim/qmv.cpp`.
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

    /// `x @ W.T` followed by `then`, as one kernel, where the project's CUDA
    /// kernel applies (see [`QuantizedWeight::matmul`]); `None` where it
    /// does not, and the caller composes MLX's operations instead.
    pub fn matmul_then(&self, x: &Array, then: Epilogue<'_>) -> Result<Option<Array>> {
        self.normed_matmul_then(x, None, then)
    }

    /// As [`QuantizedWeight::matmul_then`] of `rms_norm(x, weight, eps)`
    /// when `norm` is `Some((weight, eps))`, the norm computed in the same
    /// kernel (without rounding its output to the activation type).
    pub fn normed_matmul_then(
        &self,
        x: &Array,
        norm: Option<(&Array, f32)>,
        then: Epilogue<'_>,
    ) -> Result<Option<Array>> {
        let (norm, eps) = norm.map_or((std::ptr::null(), 0.0), |(w, eps)| (w.as_ptr(), eps));
        let (code, extra) = match then {
            Epilogue::None => (0, std::ptr::null()),
            Epilogue::AddRow(bias) => (1, bias.as_ptr()),
            Epilogue::Add(residual) => (2, residual.as_ptr()),
            Epilogue::Swiglu => (3, std::ptr::null()),
        };
        let mut out = std::ptr::null_mut();
        // SAFETY: every handle is live for the call (`norm` and `extra` are
        // null or borrowed from the arguments); on success the shim writes a new, owned
        // handle or null to `out`.
        let rc = unsafe {
            ffi::mlxs_custom_qmv(
                x.as_ptr(),
                self.weight.as_ptr(),
                self.scales.as_ptr(),
                self.biases.as_ptr(),
                self.group_size,
                self.bits,
                norm,
                eps,
                code,
                extra,
                &mut out,
            )
        };
        crate::error::check(rc)?;
        if out.is_null() {
            return Ok(None);
        }
        Array::from_owned(out).map(Some)
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

/// Whether 4-bit products with a few rows of activations use the project's
/// CUDA kernel where it applies (the default) or MLX's own. Affects graphs
/// built afterwards, on every thread.
pub fn set_custom_qmv(enabled: bool) -> Result<()> {
    // SAFETY: plain value in, status out.
    crate::error::check(unsafe { ffi::mlxs_set_custom_qmv(enabled) })
}

/// The most rows of activations the project's kernel takes (0 to 8, 7 by
/// default); products of more rows run MLX's own, which from 8 rows on is
/// faster (see `shim/qmv.cpp`). Affects graphs built afterwards, on every
/// thread.
pub fn set_custom_qmv_max_rows(rows: i32) -> Result<()> {
    // SAFETY: plain value in, status out.
    crate::error::check(unsafe { ffi::mlxs_set_custom_qmv_max_rows(rows) })
}

/// Whether the running MLX has the CUDA backend the project's kernel needs.
pub fn custom_qmv_available() -> Result<bool> {
    let mut available = false;
    // SAFETY: `available` is a live bool the shim writes once.
    crate::error::check(unsafe { ffi::mlxs_custom_qmv_available(&mut available) })?;
    Ok(available)
}

// ---- Gathered products (Mixture-of-Experts) ----

impl QuantizedWeight {
    /// The gathered product with a stack of quantized matrices (MLX's
    /// `gather_qmm`): `x[lhs] @ W[rhs].T` when `transpose` (`W` stacked as
    /// `[E, out, in]`, a Mixture-of-Experts layer's experts), else
    /// `x[lhs] @ W[rhs]`, without dequantizing `W`. See [`crate::ops::Gather`]
    /// for the indices.
    pub fn gather_matmul(
        &self,
        x: &Array,
        gather: crate::ops::Gather<'_>,
        transpose: bool,
    ) -> Result<Array> {
        let (lhs, rhs) = gather.handles();
        call_array!(mlxs_gather_qmm(
            x.as_ptr(),
            self.weight.as_ptr(),
            self.scales.as_ptr(),
            self.biases.as_ptr(),
            lhs,
            rhs,
            transpose,
            self.group_size,
            self.bits,
            gather.sorted,
        ))
    }
}
