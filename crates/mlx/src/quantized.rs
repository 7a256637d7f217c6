//! Quantization as MLX does it: each group of `group_size` consecutive
//! weights along the last axis is stored as `bits`-bit codes with a
//! per-group scale. In the affine mode (mlx-lm's default) codes are
//! integers `q` with a per-group `scale` and `bias`, meaning
//! `w ≈ scale * q + bias`; in the microscaling modes (`mxfp4`, `nvfp4`,
//! `mxfp8`: gpt-oss's experts, NVIDIA's and OCP's formats) codes are small
//! floating-point numbers times a shared per-group scale, with no bias.
//! Packed weights are `u32`; this is the layout mlx-lm checkpoints store.

use crate::array::call_array;
use crate::error::Result;
use crate::{Array, ffi};

/// How codes and scales make weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantMode {
    /// `scale * q + bias`.
    Affine,
    /// 4-bit E2M1 codes, an E8M0 scale per 32 (OCP microscaling).
    Mxfp4,
    /// 4-bit E2M1 codes, an E4M3 scale per 16 (NVIDIA).
    Nvfp4,
    /// 8-bit E4M3 codes, an E8M0 scale per 32.
    Mxfp8,
}

impl QuantMode {
    /// Every mode.
    pub const ALL: [QuantMode; 4] = [
        QuantMode::Affine,
        QuantMode::Mxfp4,
        QuantMode::Nvfp4,
        QuantMode::Mxfp8,
    ];

    /// The mode of MLX's (and mlx-lm's config's) name.
    pub fn from_name(name: &str) -> Option<QuantMode> {
        Some(match name {
            "affine" => QuantMode::Affine,
            "mxfp4" => QuantMode::Mxfp4,
            "nvfp4" => QuantMode::Nvfp4,
            "mxfp8" => QuantMode::Mxfp8,
            _ => return None,
        })
    }

    /// MLX's name.
    pub fn name(self) -> &'static str {
        match self {
            QuantMode::Affine => "affine",
            QuantMode::Mxfp4 => "mxfp4",
            QuantMode::Nvfp4 => "nvfp4",
            QuantMode::Mxfp8 => "mxfp8",
        }
    }

    fn code(self) -> i32 {
        match self {
            QuantMode::Affine => 0,
            QuantMode::Mxfp4 => 1,
            QuantMode::Nvfp4 => 2,
            QuantMode::Mxfp8 => 3,
        }
    }
}

/// A quantized matrix: packed codes plus per-group scales (and biases, in
/// the affine mode).
#[derive(Debug, Clone)]
pub struct QuantizedWeight {
    /// Packed `bits`-bit values, `u32`, shape `[..., cols * bits / 32]`.
    pub weight: Array,
    /// Per-group scales, shape `[..., cols / group_size]`.
    pub scales: Array,
    /// Per-group biases, shape `[..., cols / group_size]`; affine only.
    pub biases: Option<Array>,
    /// Weights per group (32, 64 or 128 affine; 32 for mxfp4/mxfp8, 16 for
    /// nvfp4).
    pub group_size: i32,
    /// Bits per weight (2, 3, 4, 5, 6 or 8 affine; 4 or 8 otherwise).
    pub bits: i32,
    pub mode: QuantMode,
}

/// A handle for an optional array (null for none).
fn opt_handle(a: Option<&Array>) -> ffi::Handle {
    a.map_or(std::ptr::null(), Array::as_ptr)
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

/// Quantizes `w` along its last axis, affine.
pub fn quantize(w: &Array, group_size: i32, bits: i32) -> Result<QuantizedWeight> {
    quantize_mode(w, group_size, bits, QuantMode::Affine)
}

/// Quantizes `w` along its last axis in `mode`.
pub fn quantize_mode(
    w: &Array,
    group_size: i32,
    bits: i32,
    mode: QuantMode,
) -> Result<QuantizedWeight> {
    let mut q = std::ptr::null_mut();
    let mut s = std::ptr::null_mut();
    let mut b = std::ptr::null_mut();
    // SAFETY: `w` is a live handle; on success the shim writes new, owned
    // handles to `q` and `s`, and to `b` (affine) or null.
    let rc = unsafe {
        ffi::mlxs_quantize(
            w.as_ptr(),
            group_size,
            bits,
            mode.code(),
            &mut q,
            &mut s,
            &mut b,
        )
    };
    crate::error::check(rc)?;
    Ok(QuantizedWeight {
        weight: Array::from_owned(q)?,
        scales: Array::from_owned(s)?,
        biases: if b.is_null() {
            None
        } else {
            Some(Array::from_owned(b)?)
        },
        group_size,
        bits,
        mode,
    })
}

impl QuantizedWeight {
    /// The dequantized matrix `scale * q + bias`.
    pub fn dequantize(&self) -> Result<Array> {
        call_array!(mlxs_dequantize(
            self.weight.as_ptr(),
            self.scales.as_ptr(),
            opt_handle(self.biases.as_ref()),
            self.group_size,
            self.bits,
            self.mode.code(),
        ))
    }

    /// Every array it holds.
    pub fn arrays(&self) -> Vec<&Array> {
        let mut out = vec![&self.weight, &self.scales];
        out.extend(&self.biases);
        out
    }

    /// Bytes of every array it holds.
    pub fn nbytes(&self) -> usize {
        self.arrays().iter().map(|a| a.nbytes()).sum()
    }

    /// Whether `other` is stored alike: mode, group size, bits, and the
    /// dtypes of scales and biases (so the two can be one matrix).
    pub fn stored_like(&self, other: &QuantizedWeight) -> bool {
        let biases = match (&self.biases, &other.biases) {
            (Some(a), Some(b)) => a.dtype() == b.dtype(),
            (None, None) => true,
            _ => false,
        };
        self.mode == other.mode
            && self.group_size == other.group_size
            && self.bits == other.bits
            && self.scales.dtype() == other.scales.dtype()
            && biases
    }

    /// The matrix with `f` applied to each of its arrays (weight, scales,
    /// biases alike: row selections, concatenations).
    pub fn map_arrays(&self, f: impl Fn(&Array) -> Result<Array>) -> Result<QuantizedWeight> {
        Ok(QuantizedWeight {
            weight: f(&self.weight)?,
            scales: f(&self.scales)?,
            biases: self.biases.as_ref().map(&f).transpose()?,
            group_size: self.group_size,
            bits: self.bits,
            mode: self.mode,
        })
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
            opt_handle(self.biases.as_ref()),
            transpose,
            self.group_size,
            self.bits,
            self.mode.code(),
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
        // The project's kernel is affine only.
        let Some(biases) = self
            .biases
            .as_ref()
            .filter(|_| self.mode == QuantMode::Affine)
        else {
            return Ok(None);
        };
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
                biases.as_ptr(),
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
        self.map_arrays(|a| a.take(indices, 0))?.dequantize()
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
            opt_handle(self.biases.as_ref()),
            lhs,
            rhs,
            transpose,
            self.group_size,
            self.bits,
            self.mode.code(),
            gather.sorted,
        ))
    }
}
