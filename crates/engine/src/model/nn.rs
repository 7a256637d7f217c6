//! The basic layers models are made of, as mlx's `mlx.nn` versions compute
//! them: weight matrices and `Linear` (dense or affine-quantized, with the
//! fused [`LinearGroup`] of projections that read one input) and `RmsNorm`.

use std::sync::atomic::{AtomicBool, Ordering};

use mlx::{Array, Dtype, QuantMode, QuantizedWeight};

use super::config::{ModelConfig, QuantParams};
use super::weights::Weights;
use crate::error::{EngineError, Result};

/// A weight matrix `[out, in]`, dense or quantized.
#[derive(Debug, Clone)]
pub enum Matrix {
    Dense(Array),
    Quantized(QuantizedWeight),
}

impl Matrix {
    /// Loads `{prefix}.weight`, quantized when `{prefix}.scales` exists (as
    /// mlx-lm decides), with the config's parameters for that layer.
    pub fn load(w: &mut Weights, prefix: &str, config: &ModelConfig) -> Result<Matrix> {
        let weight = w.take(&format!("{prefix}.weight"))?;
        if !w.contains(&format!("{prefix}.scales")) {
            return Ok(Matrix::Dense(weight));
        }
        let params = match &config.quantization {
            Some(q) => q.for_layer(prefix)?,
            None => None,
        };
        let QuantParams {
            group_size,
            bits,
            mode,
        } = params.ok_or_else(|| {
            EngineError::Weights(format!(
                "{prefix} is stored quantized but the config gives no quantization for it"
            ))
        })?;
        let mode = mode.get()?;
        let biases = format!("{prefix}.biases");
        Ok(Matrix::Quantized(QuantizedWeight {
            weight,
            scales: w.take(&format!("{prefix}.scales"))?,
            // Affine groups have biases; the microscaling modes none.
            biases: if mode == QuantMode::Affine {
                Some(w.take(&biases)?)
            } else {
                None
            },
            group_size,
            bits,
            mode,
        }))
    }

    /// `x @ Wᵀ`.
    pub fn matmul_t(&self, x: &Array) -> Result<Array> {
        Ok(match self {
            Matrix::Dense(w) => x.matmul(&w.t()?)?,
            Matrix::Quantized(q) => q.matmul(x, true)?,
        })
    }

    /// `x Wᵀ` (of `norm(x)` when given) and `then` as one kernel where the
    /// matrix is quantized and the project's CUDA kernel applies (a decode
    /// step on an NVIDIA GPU); `None` elsewhere.
    pub fn matmul_t_then(
        &self,
        x: &Array,
        norm: Option<&RmsNorm>,
        then: mlx::Epilogue<'_>,
    ) -> Result<Option<Array>> {
        Ok(match self {
            Matrix::Dense(_) => None,
            Matrix::Quantized(q) => {
                q.normed_matmul_then(x, norm.map(|n| (&n.weight, n.eps)), then)?
            }
        })
    }

    /// Rows of `W` at `ids` (any shape), giving `[..ids, in]`.
    pub fn rows(&self, ids: &Array) -> Result<Array> {
        Ok(match self {
            Matrix::Dense(w) => w.take(ids, 0)?,
            Matrix::Quantized(q) => {
                let flat = ids.reshape(&[-1])?;
                let rows = q.take_rows(&flat)?;
                let mut shape = ids.shape();
                shape.push(rows.dim(-1)?);
                rows.reshape(&shape)?
            }
        })
    }

    /// Replaces a quantized matrix by its dequantized `dtype` values (lazy:
    /// evaluate [`Matrix::arrays`] to materialize them).
    pub fn densify(&mut self, dtype: Dtype) -> Result<()> {
        if let Matrix::Quantized(q) = self {
            *self = Matrix::Dense(q.dequantize()?.astype(dtype)?);
        }
        Ok(())
    }

    /// Checks that the matrix is `[out, inp]` (packed along `inp` when
    /// quantized), naming `prefix` when it is not.
    pub fn check_shape(&self, prefix: &str, out: i32, inp: i32) -> Result<()> {
        let (name, got, want) = match self {
            Matrix::Dense(w) => ("weight", w.shape(), vec![out, inp]),
            Matrix::Quantized(q) => {
                let packed = inp * q.bits / 32;
                if q.weight.shape() != [out, packed] {
                    ("weight", q.weight.shape(), vec![out, packed])
                } else {
                    ("scales", q.scales.shape(), vec![out, inp / q.group_size])
                }
            }
        };
        if got != want {
            return Err(EngineError::Weights(format!(
                "tensor {prefix}.{name} has shape {got:?}, expected {want:?} (a [{out}, {inp}] layer)"
            )));
        }
        Ok(())
    }

    /// Output rows.
    pub fn out_features(&self) -> Result<i32> {
        Ok(match self {
            Matrix::Dense(w) => w.dim(0)?,
            Matrix::Quantized(q) => q.weight.dim(0)?,
        })
    }

    /// Whether `self` and `other` are stored the same way (dense of one
    /// dtype, or quantized with the same parameters), so their rows can
    /// make one matrix.
    fn stored_like(&self, other: &Matrix) -> bool {
        match (self, other) {
            (Matrix::Dense(a), Matrix::Dense(b)) => a.dtype() == b.dtype() && a.ndim() == 2,
            (Matrix::Quantized(a), Matrix::Quantized(b)) => {
                a.stored_like(b) && a.weight.dtype() == b.weight.dtype() && a.weight.ndim() == 2
            }
            _ => false,
        }
    }

    /// One matrix of `parts`' rows, in order (lazy); the parts must be
    /// [`stored_like`](Matrix::stored_like) each other.
    fn concat_rows(parts: &[&Matrix]) -> Result<Matrix> {
        let dense: Vec<&Array> = parts
            .iter()
            .filter_map(|m| match m {
                Matrix::Dense(w) => Some(w),
                Matrix::Quantized(_) => None,
            })
            .collect();
        if dense.len() == parts.len() {
            return Ok(Matrix::Dense(mlx::concatenate(&dense, 0)?));
        }
        let quantized: Vec<&QuantizedWeight> = parts
            .iter()
            .filter_map(|m| match m {
                Matrix::Quantized(q) => Some(q),
                Matrix::Dense(_) => None,
            })
            .collect();
        let Some(first) = quantized.first().filter(|_| quantized.len() == parts.len()) else {
            return Err(EngineError::Weights(
                "only matrices stored alike can be concatenated".into(),
            ));
        };
        let cat = |f: fn(&QuantizedWeight) -> Option<&Array>| -> Result<Option<Array>> {
            let arrays: Option<Vec<&Array>> = quantized.iter().map(|q| f(q)).collect();
            Ok(match arrays {
                Some(arrays) => Some(mlx::concatenate(&arrays, 0)?),
                None => None,
            })
        };
        let lost = || EngineError::Weights("a quantized part lost an array".into());
        Ok(Matrix::Quantized(QuantizedWeight {
            weight: cat(|q| Some(&q.weight))?.ok_or_else(lost)?,
            scales: cat(|q| Some(&q.scales))?.ok_or_else(lost)?,
            biases: cat(|q| q.biases.as_ref())?,
            group_size: first.group_size,
            bits: first.bits,
            mode: first.mode,
        }))
    }

    /// Bytes the matrix takes dense in `dtype`.
    pub fn dense_bytes(&self, dtype: Dtype) -> Result<usize> {
        Ok(match self {
            Matrix::Dense(w) => w.nbytes(),
            // Every packed u32 holds 32 / bits weights (of one matrix or
            // of a stack of them, such as a Mixture-of-Experts layer's).
            Matrix::Quantized(q) => q.weight.size() * 32 / q.bits as usize * dtype.size(),
        })
    }

    /// The arrays holding the matrix.
    pub fn arrays(&self) -> Vec<&Array> {
        match self {
            Matrix::Dense(w) => vec![w],
            Matrix::Quantized(q) => q.arrays(),
        }
    }

    /// Bytes of the stored weight (packed, with scales and biases).
    pub fn nbytes(&self) -> usize {
        match self {
            Matrix::Dense(w) => w.nbytes(),
            Matrix::Quantized(q) => q.nbytes(),
        }
    }
}

/// `y = x Wᵀ + b`.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Matrix,
    pub bias: Option<Array>,
    /// The bias as `[1, 1, out]`: added to the `[1, 1, out]` output of a
    /// one-token step, it needs no broadcast operation.
    bias_row: Option<Array>,
}

impl Linear {
    pub fn new(weight: Matrix, bias: Option<Array>) -> Result<Linear> {
        let bias_row = bias.as_ref().map(|b| b.reshape(&[1, 1, -1])).transpose()?;
        Ok(Linear {
            weight,
            bias,
            bias_row,
        })
    }

    /// Loads `{prefix}.weight` (+ `.scales`/`.biases`) and, when `bias`,
    /// `{prefix}.bias`.
    pub fn load(w: &mut Weights, prefix: &str, config: &ModelConfig, bias: bool) -> Result<Linear> {
        let weight = Matrix::load(w, prefix, config)?;
        let bias = if bias {
            Some(w.take(&format!("{prefix}.bias"))?)
        } else {
            None
        };
        Linear::new(weight, bias)
    }

    /// Loads as [`Linear::load`] a layer that must map `inp` features to
    /// `out`; a tensor of another shape is an error naming it.
    pub fn load_shaped(
        w: &mut Weights,
        prefix: &str,
        config: &ModelConfig,
        bias: bool,
        [out, inp]: [i32; 2],
    ) -> Result<Linear> {
        let layer = Linear::load(w, prefix, config, bias)?;
        layer.weight.check_shape(prefix, out, inp)?;
        if let Some(b) = &layer.bias
            && b.shape() != [out]
        {
            return Err(EngineError::Weights(format!(
                "tensor {prefix}.bias has shape {:?}, expected [{out}]",
                b.shape()
            )));
        }
        Ok(layer)
    }

    /// Whether `self` and `other` can be one layer: matrices stored alike,
    /// and biases of one dtype on both or on neither.
    fn stored_like(&self, other: &Linear) -> bool {
        let biases = match (&self.bias, &other.bias) {
            (Some(a), Some(b)) => a.dtype() == b.dtype(),
            (None, None) => true,
            _ => false,
        };
        biases && self.weight.stored_like(&other.weight)
    }

    /// As `mlx.nn.Linear` / `QuantizedLinear`: a dense layer with a bias is
    /// one fused `addmm`, a quantized one adds the bias after the product.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        Ok(match (&self.weight, &self.bias) {
            (Matrix::Dense(w), Some(b)) => x.addmm(&w.t()?, b, 1.0, 1.0)?,
            (weight, Some(b)) => {
                if let Some(y) = weight.matmul_t_then(x, None, mlx::Epilogue::AddRow(b))? {
                    return Ok(y);
                }
                let y = weight.matmul_t(x)?;
                match &self.bias_row {
                    Some(row) if y.shape()[..y.ndim().saturating_sub(1)] == [1, 1] => y.add(row)?,
                    _ => y.add(b)?,
                }
            }
            (weight, None) => weight.matmul_t(x)?,
        })
    }

    /// `forward(x) + residual`, in the product's kernel where it can be.
    pub fn forward_add(&self, x: &Array, residual: &Array) -> Result<Array> {
        if self.bias.is_none()
            && let Some(y) = self
                .weight
                .matmul_t_then(x, None, mlx::Epilogue::Add(residual))?
        {
            return Ok(y);
        }
        Ok(residual.add(&self.forward(x)?)?)
    }

    /// `forward(norm(x))`, the norm in the product's kernel where it can be.
    pub fn forward_normed(&self, x: &Array, norm: &RmsNorm) -> Result<Array> {
        let then = match &self.bias {
            Some(b) => mlx::Epilogue::AddRow(b),
            None => mlx::Epilogue::None,
        };
        if let Some(y) = self.weight.matmul_t_then(x, Some(norm), then)? {
            return Ok(y);
        }
        self.forward(&norm.forward(x)?)
    }
}

/// Linear layers that read the same input (attention's q, k and v; the
/// MLP's gate and up), stored as one matrix when they are stored alike, so
/// a step runs one product where it ran several. On a GPU each product is
/// a kernel launch and more host work; a decode step at batch 1 is made of
/// such launches far more than of arithmetic. The parts' rows are
/// concatenated as they are (quantized rows keep their scales), so every
/// output is computed from the same numbers as before, and the outputs are
/// split back into views of the one result.
#[derive(Debug, Clone)]
pub struct LinearGroup {
    /// One layer holding all the parts' rows, or the parts themselves when
    /// they differ in storage (dtype, quantization, bias or not).
    layers: Vec<Linear>,
    /// Output width of each part.
    widths: Vec<i32>,
}

/// Whether models loaded from now on fuse their projection groups.
static FUSE_GROUPS: AtomicBool = AtomicBool::new(true);

/// Turns the fusing of projection groups on or off for models loaded from
/// now on (on by default; off only to measure what it is worth).
pub fn set_fused_projections(on: bool) {
    // Relaxed: a flag read at load, with no other memory to order.
    FUSE_GROUPS.store(on, Ordering::Relaxed);
}

impl LinearGroup {
    /// Fuses `parts` when they are stored alike; the fused matrix is
    /// evaluated at once so the parts' arrays can be freed.
    pub fn new(parts: Vec<Linear>) -> Result<LinearGroup> {
        let widths = parts
            .iter()
            .map(|p| p.weight.out_features())
            .collect::<Result<Vec<_>>>()?;
        let alike = parts.windows(2).all(|w| w[0].stored_like(&w[1]));
        if parts.len() < 2 || !alike || !FUSE_GROUPS.load(Ordering::Relaxed) {
            return Ok(LinearGroup {
                layers: parts,
                widths,
            });
        }
        let weight = Matrix::concat_rows(&parts.iter().map(|p| &p.weight).collect::<Vec<_>>())?;
        let bias = match parts[0].bias {
            Some(_) => {
                let biases: Vec<&Array> = parts.iter().filter_map(|p| p.bias.as_ref()).collect();
                Some(mlx::concatenate(&biases, 0)?)
            }
            None => None,
        };
        let fused = Linear::new(weight, bias)?;
        let mut arrays = fused.weight.arrays();
        arrays.extend(fused.bias.iter());
        mlx::eval(&arrays)?;
        Ok(LinearGroup {
            layers: vec![fused],
            widths,
        })
    }

    /// Whether the parts run as one product.
    pub fn is_fused(&self) -> bool {
        self.layers.len() == 1 && self.widths.len() > 1
    }

    /// The fused product's output for `norm(x)` (the parts' outputs side by
    /// side along the last axis), or `None` when the parts run separately.
    pub fn forward_joined_normed(&self, x: &Array, norm: &RmsNorm) -> Result<Option<Array>> {
        if !self.is_fused() {
            return Ok(None);
        }
        Ok(Some(self.layers[0].forward_normed(x, norm)?))
    }

    /// Each part's output for `x`, in the order the parts were given.
    pub fn forward(&self, x: &Array) -> Result<Vec<Array>> {
        if !self.is_fused() {
            return self.layers.iter().map(|l| l.forward(x)).collect();
        }
        let y = self.layers[0].forward(x)?;
        let axis = y.ndim() as i32 - 1;
        let mut start = 0;
        self.widths
            .iter()
            .map(|&w| {
                let part = y.slice_axis(axis, start, start + w)?;
                start += w;
                Ok(part)
            })
            .collect()
    }

    /// `silu(gate) * up` of `norm(x)` for a fused, bias-free gate/up pair of
    /// equal widths, as one kernel where the project's CUDA kernel applies.
    pub fn swiglu_normed(&self, x: &Array, norm: &RmsNorm) -> Result<Option<Array>> {
        match &self.layers[..] {
            [fused]
                if self.is_fused()
                    && fused.bias.is_none()
                    && self.widths.len() == 2
                    && self.widths[0] == self.widths[1] =>
            {
                fused
                    .weight
                    .matmul_t_then(x, Some(norm), mlx::Epilogue::Swiglu)
            }
            _ => Ok(None),
        }
    }

    /// The weight matrices (one when fused).
    pub fn matrices_mut(&mut self) -> impl Iterator<Item = &mut Matrix> {
        self.layers.iter_mut().map(|l| &mut l.weight)
    }
}

/// `x / rms(x) * weight`.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    pub weight: Array,
    pub eps: f32,
}

impl RmsNorm {
    pub fn load(w: &mut Weights, prefix: &str, eps: f32) -> Result<RmsNorm> {
        Ok(RmsNorm {
            weight: w.take(&format!("{prefix}.weight"))?,
            eps,
        })
    }

    /// Loads a norm over `dims` features.
    pub fn load_shaped(w: &mut Weights, prefix: &str, eps: f32, dims: i32) -> Result<RmsNorm> {
        Ok(RmsNorm {
            weight: w.take_shaped(&format!("{prefix}.weight"), &[dims])?,
            eps,
        })
    }

    pub fn forward(&self, x: &Array) -> Result<Array> {
        Ok(mlx::fast::rms_norm(x, Some(&self.weight), self.eps)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(shape: &[i32], seed: u64) -> Array {
        let key = mlx::random::key(seed).unwrap();
        mlx::random::normal(shape, Dtype::F32, Some(&key)).unwrap()
    }

    fn values(a: &Array) -> Vec<f32> {
        a.astype(Dtype::F32).unwrap().to_vec::<f32>().unwrap()
    }

    fn quantized(rows: i32, seed: u64) -> Linear {
        Linear::new(
            Matrix::Quantized(mlx::quantize(&normal(&[rows, 128], seed), 64, 4).unwrap()),
            Some(normal(&[rows], seed + 100)),
        )
        .unwrap()
    }

    #[test]
    fn a_fused_group_gives_each_part_its_own_output() {
        // x Wᵀ + b from the dequantized weights, broadcasting the bias.
        let reference = |p: &Linear, x: &Array| {
            let w = match &p.weight {
                Matrix::Dense(w) => w.clone(),
                Matrix::Quantized(q) => q.dequantize().unwrap(),
            };
            let y = x.matmul(&w.t().unwrap()).unwrap();
            values(&match &p.bias {
                Some(b) => y.add(b).unwrap(),
                None => y,
            })
        };
        let dense = |rows, seed| Linear::new(Matrix::Dense(normal(&[rows, 128], seed)), None);
        // Several positions, and the one of a decode step (its own bias path).
        for shape in [[2, 3, 128], [1, 1, 128]] {
            let x = normal(&shape, 9);
            for parts in [
                vec![quantized(64, 1), quantized(32, 2), quantized(32, 3)],
                vec![dense(48, 4).unwrap(), dense(16, 5).unwrap()],
            ] {
                let want: Vec<Vec<f32>> = parts.iter().map(|p| reference(p, &x)).collect();
                let group = LinearGroup::new(parts).unwrap();
                assert!(group.is_fused());
                let got = group.forward(&x).unwrap();
                assert_eq!(got.len(), want.len());
                for (got, want) in got.iter().zip(&want) {
                    assert_eq!(got.shape()[..2], shape[..2]);
                    let got = values(got);
                    assert_eq!(got.len(), want.len());
                    let worst = got
                        .iter()
                        .zip(want)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f32::max);
                    assert!(worst < 1e-3, "largest difference {worst}");
                }
            }
        }
    }

    #[test]
    fn parts_stored_differently_stay_separate() {
        let mut dense = quantized(32, 2);
        dense.weight = Matrix::Dense(normal(&[32, 128], 2));
        let unbiased = Linear::new(quantized(32, 3).weight, None).unwrap();
        for parts in [
            vec![quantized(64, 1), dense],
            vec![quantized(64, 1), unbiased],
        ] {
            let want: Vec<Vec<f32>> = parts
                .iter()
                .map(|p| values(&p.forward(&normal(&[1, 128], 7)).unwrap()))
                .collect();
            let group = LinearGroup::new(parts).unwrap();
            assert!(!group.is_fused());
            let got: Vec<Vec<f32>> = group
                .forward(&normal(&[1, 128], 7))
                .unwrap()
                .iter()
                .map(values)
                .collect();
            assert_eq!(got, want);
        }
    }
}
