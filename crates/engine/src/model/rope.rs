//! Rotary position embeddings as a config asks for them, behind one
//! constructor as mlx-lm's `initialize_rope`
//! (`mlx_lm/models/rope_utils.py`): plain, linearly scaled, dynamic NTK
//! (θ grown past `max_position_embeddings`, [`RopeArgs::rope`]), Llama 3's
//! frequency rescaling, YaRN (`yarn` / `deepseek_yarn`), or LongRoPE
//! (Phi-3's, through [`long_rope`]), over all of a head or its first `dims`
//! dimensions (partial rotary). The config keys are read the way mlx-lm reads them:
//! `rope_theta` and `rope_scaling` at the top, or nested in transformers
//! 5's `rope_parameters`.

use mlx::fast::Rope;
use mlx::{Array, Dtype};
use serde::Deserialize;

use crate::error::{EngineError, Result};

/// `rope_scaling`: the rescaling of rotary frequencies for long contexts.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RopeScaling {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    rope_type: Option<String>,
    #[serde(default)]
    pub factor: Option<f32>,
    #[serde(default)]
    pub low_freq_factor: Option<f32>,
    #[serde(default)]
    pub high_freq_factor: Option<f32>,
    #[serde(default)]
    pub original_max_position_embeddings: Option<f32>,
    /// `rope_parameters` carry θ and the partial factor beside the scaling.
    #[serde(default)]
    pub rope_theta: Option<f32>,
    #[serde(default)]
    pub partial_rotary_factor: Option<f32>,
    /// YaRN's correction range and attention factors.
    #[serde(default)]
    pub beta_fast: Option<f32>,
    #[serde(default)]
    pub beta_slow: Option<f32>,
    #[serde(default)]
    pub mscale: Option<f32>,
    #[serde(default)]
    pub mscale_all_dim: Option<f32>,
    /// Per-pair period factors (a GGUF's `rope_freqs`).
    #[serde(default)]
    pub factors: Option<Vec<f32>>,
    /// LongRoPE's per-pair factors (Phi-3).
    #[serde(default)]
    pub long_factor: Option<FactorList>,
    #[serde(default)]
    pub short_factor: Option<FactorList>,
}

impl RopeScaling {
    /// `type`, else `rope_type`, else "default" (mlx-lm's order).
    pub fn kind(&self) -> &str {
        self.kind
            .as_deref()
            .or(self.rope_type.as_deref())
            .unwrap_or("default")
    }
}

/// The rotary keys of a config, flattened into a family's arguments.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RopeArgs {
    #[serde(default)]
    pub rope_theta: Option<f32>,
    #[serde(default)]
    pub rope_traditional: bool,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    #[serde(default)]
    pub rope_parameters: Option<RopeScaling>,
    #[serde(default)]
    pub partial_rotary_factor: Option<f32>,
    /// The context the model was trained for: where dynamic NTK scaling
    /// starts.
    #[serde(default)]
    pub max_position_embeddings: Option<i32>,
}

impl RopeArgs {
    /// θ: `rope_theta`, else `rope_parameters.rope_theta`, else the
    /// family's default.
    pub fn theta(&self, default: f32) -> f32 {
        self.rope_theta
            .or(self.rope_parameters.as_ref().and_then(|p| p.rope_theta))
            .unwrap_or(default)
    }

    /// The scaling: `rope_scaling`, else `rope_parameters` (mlx-lm's
    /// `__post_init__` of transformers 5 configs).
    pub fn scaling(&self) -> Option<&RopeScaling> {
        self.rope_scaling.as_ref().or(self.rope_parameters.as_ref())
    }

    /// The fraction of each head that rotates: `partial_rotary_factor`,
    /// else the one in `rope_parameters`, else `default`.
    pub fn partial_factor(&self, default: f32) -> f32 {
        self.partial_rotary_factor
            .or(self
                .rope_parameters
                .as_ref()
                .and_then(|p| p.partial_rotary_factor))
            .unwrap_or(default)
    }

    /// The rotary embedding of `dims` dimensions per head with θ defaulting
    /// to `default_theta`.
    pub fn rope(&self, dims: i32, default_theta: f32) -> Result<Rope> {
        let theta = self.theta(default_theta);
        match self.scaling() {
            Some(s) if s.kind() == "dynamic" => {
                let factor = s
                    .factor
                    .ok_or_else(|| EngineError::Config("rope_scaling.factor is missing".into()))?;
                let max_positions = self.max_position_embeddings.ok_or_else(|| {
                    EngineError::Config("dynamic rope_scaling needs max_position_embeddings".into())
                })?;
                if max_positions <= 0 || dims <= 2 {
                    return Err(EngineError::Config(format!(
                        "dynamic rope_scaling over {dims} dimensions from {max_positions} \
                         positions"
                    )));
                }
                let mut rope = initialize_rope(dims, theta, self.rope_traditional, None)?;
                rope.dynamic = Some(mlx::fast::DynamicNtk {
                    max_positions,
                    factor,
                });
                Ok(rope)
            }
            scaling => initialize_rope(dims, theta, self.rope_traditional, scaling),
        }
    }
}

/// mlx-lm's `initialize_rope`: the rotary embedding of `dims` dimensions
/// with base `base`, rescaled as `scaling` says.
pub fn initialize_rope(
    dims: i32,
    base: f32,
    traditional: bool,
    scaling: Option<&RopeScaling>,
) -> Result<Rope> {
    let plain = |scale: f32| Rope {
        dims,
        traditional,
        base,
        scale,
        freqs: None,
        mscale: 1.0,
        dynamic: None,
    };
    let Some(scaling) = scaling else {
        return Ok(plain(1.0));
    };
    let factor = || {
        scaling
            .factor
            .ok_or_else(|| EngineError::Config("rope_scaling.factor is missing".into()))
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
            mscale: 1.0,
            dynamic: None,
        }),
        "yarn" | "deepseek_yarn" => yarn(dims, base, traditional, factor()?, scaling),
        super::gguf::GGUF_FREQ_FACTORS => {
            let factors = scaling
                .factors
                .as_ref()
                .ok_or_else(|| EngineError::Config("rope_scaling.factors is missing".into()))?;
            if factors.len() as i32 != dims / 2 {
                return Err(EngineError::Config(format!(
                    "rope_scaling.factors has {} values for {} rotated pairs",
                    factors.len(),
                    dims / 2
                )));
            }
            let exponents = mlx::arange(0.0, dims as f64, 2.0, Dtype::F32)?
                .divide(&Array::scalar(dims as f32)?)?;
            let periods = Array::scalar(base)?.power(&exponents)?;
            Ok(Rope {
                dims,
                traditional,
                base,
                scale: 1.0,
                freqs: Some(periods.multiply(&Array::from_slice(factors, &[dims / 2])?)?),
                mscale: 1.0,
                dynamic: None,
            })
        }
        "dynamic" => Err(EngineError::Config(
            "dynamic rope_scaling is supported where the family reads max_position_embeddings \
             (llama, mistral, qwen2, qwen3)"
                .into(),
        )),
        other => Err(EngineError::Config(format!(
            "rope_scaling type {other:?} is not supported (default, linear, dynamic, llama3, yarn)"
        ))),
    }
}

/// YaRN (gpt-oss, DeepSeek-V3), as mlx-lm's `YarnRoPE`: the periods of the
/// pairs between the correction dimensions of `beta_fast` and `beta_slow`
/// blend the original ones into ones stretched `factor` times (the fast
/// pairs keep theirs, the slow ones are stretched), and the rotated
/// features are multiplied by `yarn_mscale(factor, mscale) /
/// yarn_mscale(factor, mscale_all_dim)`, `yarn_mscale(s, m) = 0.1 m ln s +
/// 1` (1 when s ≤ 1).
fn yarn(dims: i32, base: f32, traditional: bool, factor: f32, s: &RopeScaling) -> Result<Rope> {
    let original = f64::from(s.original_max_position_embeddings.unwrap_or(4096.0));
    let (beta_fast, beta_slow) = (s.beta_fast.unwrap_or(32.0), s.beta_slow.unwrap_or(1.0));
    let correction_dim = |rotations: f32| {
        f64::from(dims) * (original / (f64::from(rotations) * 2.0 * std::f64::consts::PI)).ln()
            / (2.0 * f64::from(base).ln())
    };
    let low = correction_dim(beta_fast).floor().max(0.0);
    let high = correction_dim(beta_slow).ceil().min(f64::from(dims - 1));
    let span = if low == high { 0.001 } else { high - low };
    let yarn_mscale = |scale: f32, m: f32| {
        if scale <= 1.0 {
            1.0
        } else {
            0.1 * f64::from(m) * f64::from(scale).ln() + 1.0
        }
    };
    let mscale = yarn_mscale(factor, s.mscale.unwrap_or(1.0))
        / yarn_mscale(factor, s.mscale_all_dim.unwrap_or(0.0));
    let scalar = |v: f32| Array::scalar(v);
    let exponents =
        mlx::arange(0.0, dims as f64, 2.0, Dtype::F32)?.divide(&scalar(dims as f32)?)?;
    let freq_extra = scalar(base)?.power(&exponents)?;
    let freq_inter = freq_extra.multiply(&scalar(factor)?)?;
    let ramp = mlx::arange(0.0, f64::from(dims / 2), 1.0, Dtype::F32)?
        .subtract(&scalar(low as f32)?)?
        .divide(&scalar(span as f32)?)?;
    let zero = scalar(0.0)?;
    let one = scalar(1.0)?;
    let freq_mask = one.subtract(&ramp.clip(Some(&zero), Some(&one))?)?;
    let numerator = freq_inter.multiply(&freq_extra)?;
    let denominator = freq_inter
        .multiply(&freq_mask)?
        .add(&freq_extra.multiply(&one.subtract(&freq_mask)?)?)?;
    Ok(Rope {
        dims,
        traditional,
        base,
        scale: 1.0,
        freqs: Some(numerator.divide(&denominator)?),
        mscale: mscale as f32,
        dynamic: None,
    })
}

/// LongRoPE (Phi-3's `su` / `longrope` scaling), as mlx-lm's
/// `SuScaledRoPE`: pair `i` turns with period `long_factor[i] * base^(2i/dims)`
/// at every position (mlx-lm uses the long factors throughout), and the
/// rotated features are multiplied by `sqrt(1 + ln(f) / ln(original))` for a
/// context stretched `f = max / original` times (1 when not stretched).
pub fn long_rope(
    dims: i32,
    base: f32,
    long_factor: &FactorList,
    max_positions: f32,
    original_max_positions: f32,
) -> Result<Rope> {
    let exponents =
        mlx::arange(0.0, dims as f64, 2.0, Dtype::F32)?.divide(&Array::scalar(dims as f32)?)?;
    let periods = Array::scalar(base)?.power(&exponents)?;
    let factors = match long_factor {
        FactorList::One(f) => Array::scalar(*f)?,
        FactorList::PerPair(fs) => {
            if fs.len() as i32 != dims / 2 {
                return Err(EngineError::Config(format!(
                    "rope_scaling.long_factor has {} values for {} rotated pairs",
                    fs.len(),
                    dims / 2
                )));
            }
            Array::from_slice(fs, &[fs.len() as i32])?
        }
    };
    let stretch = f64::from(max_positions) / f64::from(original_max_positions);
    let mscale = if stretch <= 1.0 {
        1.0
    } else {
        (1.0 + stretch.ln() / f64::from(original_max_positions).ln()).sqrt() as f32
    };
    Ok(Rope {
        dims,
        traditional: false,
        base,
        scale: 1.0,
        freqs: Some(factors.multiply(&periods)?),
        mscale,
        dynamic: None,
    })
}

/// A scaling factor given once for every rotated pair or per pair.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FactorList {
    One(f32),
    PerPair(Vec<f32>),
}

/// Llama 3's per-pair rotation periods, computed with MLX ops in the order
/// mlx-lm's `Llama3RoPE` uses, so the values match it bit for bit.
fn llama3_periods(dims: i32, base: f32, factor: f32, s: &RopeScaling) -> Result<Array> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_scaling_reads_type_or_rope_type() {
        let s: RopeScaling =
            serde_json::from_str(r#"{"rope_type": "llama3", "factor": 8.0}"#).unwrap();
        assert_eq!(s.kind(), "llama3");
        let s: RopeScaling = serde_json::from_str(r#"{"type": "linear", "factor": 2.0}"#).unwrap();
        assert_eq!(s.kind(), "linear");
    }

    #[test]
    fn theta_and_scaling_may_come_from_rope_parameters() {
        let args: RopeArgs = serde_json::from_str(
            r#"{"rope_parameters": {"rope_type": "default", "rope_theta": 5000.0,
                "partial_rotary_factor": 0.25}}"#,
        )
        .unwrap();
        assert_eq!(args.theta(10_000.0), 5000.0);
        assert_eq!(args.partial_factor(1.0), 0.25);
        let rope = args.rope(16, 10_000.0).unwrap();
        assert_eq!((rope.dims, rope.base, rope.scale), (16, 5000.0, 1.0));
        let args: RopeArgs = serde_json::from_str("{}").unwrap();
        assert_eq!(args.theta(1e6), 1e6);
    }

    #[test]
    fn an_unknown_scaling_is_refused_by_name() {
        let s: RopeScaling = serde_json::from_str(r#"{"type": "dynamic", "factor": 4.0}"#).unwrap();
        let err = initialize_rope(8, 1e4, false, Some(&s)).unwrap_err();
        assert!(err.to_string().contains("dynamic"), "{err}");
    }
}
