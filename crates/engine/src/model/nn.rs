//! The layers decoder models are made of, as mlx-lm's `mlx.nn` versions
//! compute them: `Linear` and `Embedding` (dense or affine-quantized),
//! `RmsNorm`, the SwiGLU `Mlp`, and RoPE set-up from the config
//! (`mlx_lm/models/rope_utils.py::initialize_rope`).

use mlx::fast::Rope;
use mlx::{Array, Dtype, QuantizedWeight};

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
        let QuantParams { group_size, bits } = params.ok_or_else(|| {
            EngineError::Weights(format!(
                "{prefix} is stored quantized but the config gives no quantization for it"
            ))
        })?;
        Ok(Matrix::Quantized(QuantizedWeight {
            weight,
            scales: w.take(&format!("{prefix}.scales"))?,
            biases: w.take(&format!("{prefix}.biases"))?,
            group_size,
            bits,
        }))
    }

    /// `x @ Wᵀ`.
    pub fn matmul_t(&self, x: &Array) -> Result<Array> {
        Ok(match self {
            Matrix::Dense(w) => x.matmul(&w.t()?)?,
            Matrix::Quantized(q) => q.matmul(x, true)?,
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

    /// Bytes the matrix takes dense in `dtype`.
    pub fn dense_bytes(&self, dtype: Dtype) -> Result<usize> {
        Ok(match self {
            Matrix::Dense(w) => w.nbytes(),
            Matrix::Quantized(q) => {
                let (rows, packed) = (q.weight.dim(0)? as usize, q.weight.dim(1)? as usize);
                rows * packed * 32 / q.bits as usize * dtype.size()
            }
        })
    }

    /// The arrays holding the matrix.
    pub fn arrays(&self) -> Vec<&Array> {
        match self {
            Matrix::Dense(w) => vec![w],
            Matrix::Quantized(q) => vec![&q.weight, &q.scales, &q.biases],
        }
    }

    /// Bytes of the stored weight (packed, with scales and biases).
    pub fn nbytes(&self) -> usize {
        match self {
            Matrix::Dense(w) => w.nbytes(),
            Matrix::Quantized(q) => q.weight.nbytes() + q.scales.nbytes() + q.biases.nbytes(),
        }
    }
}

/// `y = x Wᵀ + b`.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Matrix,
    pub bias: Option<Array>,
}

impl Linear {
    /// Loads `{prefix}.weight` (+ `.scales`/`.biases`) and, when `bias`,
    /// `{prefix}.bias`.
    pub fn load(w: &mut Weights, prefix: &str, config: &ModelConfig, bias: bool) -> Result<Linear> {
        Ok(Linear {
            weight: Matrix::load(w, prefix, config)?,
            bias: if bias {
                Some(w.take(&format!("{prefix}.bias"))?)
            } else {
                None
            },
        })
    }

    /// As `mlx.nn.Linear` / `QuantizedLinear`: a dense layer with a bias is
    /// one fused `addmm`, a quantized one adds the bias after the product.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        Ok(match (&self.weight, &self.bias) {
            (Matrix::Dense(w), Some(b)) => x.addmm(&w.t()?, b, 1.0, 1.0)?,
            (weight, Some(b)) => weight.matmul_t(x)?.add(b)?,
            (weight, None) => weight.matmul_t(x)?,
        })
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

    pub fn forward(&self, x: &Array) -> Result<Array> {
        Ok(mlx::fast::rms_norm(x, Some(&self.weight), self.eps)?)
    }
}

/// The gated feed-forward block: `down(silu(gate(x)) * up(x))`.
#[derive(Debug, Clone)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl Mlp {
    pub fn load(w: &mut Weights, prefix: &str, config: &ModelConfig, bias: bool) -> Result<Mlp> {
        let p = |name: &str| format!("{prefix}.{name}");
        Ok(Mlp {
            gate_proj: Linear::load(w, &p("gate_proj"), config, bias)?,
            up_proj: Linear::load(w, &p("up_proj"), config, bias)?,
            down_proj: Linear::load(w, &p("down_proj"), config, bias)?,
        })
    }

    pub fn forward(&self, x: &Array) -> Result<Array> {
        // One compiled kernel for silu(gate) * up, as mlx-lm's `swiglu`.
        let gate = self.gate_proj.forward(x)?;
        let up = self.up_proj.forward(x)?;
        self.down_proj.forward(&mlx::fast::swiglu(&gate, &up)?)
    }
}

/// The rotary embedding a config asks for: plain, linearly scaled, or
/// Llama 3's frequency rescaling.
pub fn rope_from_config(config: &ModelConfig) -> Result<Rope> {
    let dims = config.head_dim();
    let base = config.rope_theta();
    let traditional = config.rope_traditional;
    let plain = |scale: f32| Rope {
        dims,
        traditional,
        base,
        scale,
        freqs: None,
    };
    let Some(scaling) = &config.rope_scaling else {
        return Ok(plain(1.0));
    };
    let factor = || {
        scaling
            .factor
            .ok_or_else(|| EngineError::Config("rope_scaling needs a factor".into()))
    };
    match scaling.kind() {
        "default" => Ok(plain(1.0)),
        "linear" => Ok(plain(1.0 / factor()?)),
        "llama3" => Ok(Rope {
            dims,
            traditional,
            base,
            scale: 1.0,
            freqs: Some(llama3_periods(dims, base, factor()?, scaling)?),
        }),
        other => Err(EngineError::Config(format!(
            "rope_scaling type {other:?} is not supported (default, linear, llama3)"
        ))),
    }
}

/// Llama 3's per-pair rotation periods, computed with MLX ops in the order
/// mlx-lm's `Llama3RoPE` uses, so the values match it bit for bit.
fn llama3_periods(
    dims: i32,
    base: f32,
    factor: f32,
    s: &super::config::RopeScaling,
) -> Result<Array> {
    let low = s.low_freq_factor.unwrap_or(1.0);
    let high = s.high_freq_factor.unwrap_or(4.0);
    let old_ctx = s.original_max_position_embeddings.unwrap_or(8192.0);
    let scalar = |v: f32| Array::scalar(v);
    let exponents =
        mlx::arange(0.0, dims as f64, 2.0, Dtype::F32)?.divide(&scalar(dims as f32)?)?;
    let freqs = scalar(base)?.power(&exponents)?;
    let wavelens = freqs.multiply(&scalar(2.0 * std::f32::consts::PI)?)?;
    let low_wavelen = scalar(old_ctx / low)?;
    let high_wavelen = scalar(old_ctx / high)?;
    let freqs = mlx::where_(
        &wavelens.greater(&low_wavelen)?,
        &freqs.multiply(&scalar(factor)?)?,
        &freqs,
    )?;
    let medium = wavelens
        .greater(&high_wavelen)?
        .logical_and(&wavelens.less(&low_wavelen)?)?;
    let smooth = scalar(old_ctx)?
        .divide(&wavelens)?
        .subtract(&scalar(low)?)?
        .divide(&scalar(high - low)?)?;
    let one = scalar(1.0)?;
    let denom = one
        .subtract(&smooth)?
        .divide(&scalar(factor)?)?
        .add(&smooth)?;
    let smooth_freqs = freqs.divide(&denom)?;
    Ok(mlx::where_(&medium, &smooth_freqs, &freqs)?)
}
