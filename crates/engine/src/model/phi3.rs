//! Phi-3, Phi-3.5 and Phi-4-mini: mlx-lm's `mlx_lm/models/phi3.py`.
//! Llama's block with the q, k and v projections fused into one
//! `qkv_proj` and the MLP's gate and up projections into one
//! `gate_up_proj` (gate first); no biases; `head_dim = hidden / heads`;
//! partial rotary (`partial_rotary_factor`, Phi-4-mini rotates three
//! quarters of each head); RoPE plain, linearly scaled, or LongRoPE
//! (`rope_scaling.type` `su` / `longrope`, with the context stretch from
//! `max_position_embeddings / original_max_position_embeddings`).
//!
//! The fused projections are split into the standard q/k/v and gate/up
//! tensors when the checkpoint is read (rows of a quantized tensor's
//! weight, scales and biases alike), so the model runs on the shared
//! decoder; its attention joins q, k and v again for one product.

use mlx::Array;
use serde::Deserialize;

use super::attention::AttentionSpec;
use super::base::LanguageModel;
use super::config::ModelConfig;
use super::registry::Family;
use super::rope::{RopeScaling, initialize_rope, long_rope};
use super::transformer::{DecoderSpec, Transformer};
use super::weights::Weights;
use crate::error::{EngineError, Result};

/// The `phi3` family.
pub struct Phi3;

/// `phi3.py`'s `ModelArgs` beyond the common config.
#[derive(Debug, Clone, Deserialize)]
pub struct Phi3Args {
    #[serde(default = "default_theta")]
    pub rope_theta: f32,
    #[serde(default)]
    pub rope_traditional: bool,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    #[serde(default = "one")]
    pub partial_rotary_factor: f32,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: f32,
    #[serde(default = "default_original_max_positions")]
    pub original_max_position_embeddings: f32,
}

fn default_theta() -> f32 {
    10_000.0
}

fn one() -> f32 {
    1.0
}

fn default_max_positions() -> f32 {
    131_072.0
}

fn default_original_max_positions() -> f32 {
    4096.0
}

/// The tensor suffixes of a linear layer, plain or quantized.
const PARTS: [&str; 3] = ["weight", "scales", "biases"];

/// Splits every `<layer>.<fused>.<part>` into `<layer>.<names[i]>.<part>`
/// of `rows[i]` rows each, in order.
fn split_rows(weights: &mut Weights, fused: &str, names: &[&str], rows: &[i32]) -> Result<()> {
    let fused_names: Vec<String> = weights
        .iter()
        .map(|(name, _)| name.to_owned())
        .filter(|name| {
            PARTS
                .iter()
                .any(|part| name.ends_with(&format!(".{fused}.{part}")))
        })
        .collect();
    let total: i32 = rows.iter().sum();
    for name in fused_names {
        let (prefix, part) = name
            .rsplit_once(&format!(".{fused}."))
            .map(|(p, s)| (p.to_owned(), s.to_owned()))
            .unwrap_or_default();
        let array = weights.take(&name)?;
        let have = array.shape().first().copied().unwrap_or(0);
        if have != total {
            return Err(EngineError::Config(format!(
                "{name} has {have} rows, expected {total}"
            )));
        }
        let mut start = 0;
        for (target, &n) in names.iter().zip(rows) {
            let piece: Array = array.slice_axis(0, start, start + n)?;
            weights.insert(format!("{prefix}.{target}.{part}"), piece);
            start += n;
        }
    }
    Ok(())
}

impl Family for Phi3 {
    const MODEL_TYPES: &'static [&'static str] = &["phi3"];
    type Args = Phi3Args;

    fn sanitize(_: &Phi3Args, config: &ModelConfig, weights: &mut Weights) -> Result<()> {
        let head_dim = config.hidden_size / config.num_attention_heads;
        let q = config.num_attention_heads * head_dim;
        let kv = config.num_kv_heads() * head_dim;
        split_rows(
            weights,
            "self_attn.qkv_proj",
            &["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
            &[q, kv, kv],
        )?;
        let ff = config.intermediate_size;
        split_rows(
            weights,
            "mlp.gate_up_proj",
            &["mlp.gate_proj", "mlp.up_proj"],
            &[ff, ff],
        )
    }

    fn build(
        args: Phi3Args,
        config: &ModelConfig,
        weights: &mut Weights,
    ) -> Result<Box<dyn LanguageModel>> {
        let head_dim = config.hidden_size / config.num_attention_heads;
        let dims = (head_dim as f32 * args.partial_rotary_factor) as i32;
        let rope = match &args.rope_scaling {
            Some(s) if matches!(s.kind(), "su" | "longrope") => {
                let long = s.long_factor.as_ref().ok_or_else(|| {
                    EngineError::Config("rope_scaling.long_factor is missing".into())
                })?;
                long_rope(
                    dims,
                    args.rope_theta,
                    long,
                    args.max_position_embeddings,
                    args.original_max_position_embeddings,
                )?
            }
            scaling => initialize_rope(
                dims,
                args.rope_theta,
                args.rope_traditional,
                scaling.as_ref(),
            )?,
        };
        let spec = DecoderSpec {
            attention: AttentionSpec {
                head_dim,
                ..AttentionSpec::plain(config, rope)
            },
            mlp_bias: false,
            tied: config.tie_word_embeddings_or(false),
            layer_windows: Vec::new(),
        };
        Ok(Box::new(Transformer::load(weights, config, &spec)?))
    }
}
