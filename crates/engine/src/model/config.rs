//! `config.json` of a model in the Hugging Face / mlx-community layout, as
//! mlx-lm's `ModelArgs` read it (`mlx_lm/models/{llama,qwen2,qwen3}.py`),
//! including the defaults mlx-lm applies when a key is absent.

use std::collections::HashMap;

use serde::Deserialize;

use crate::error::{EngineError, Result};

/// The architecture settings every supported family shares.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelConfig {
    pub model_type: String,
    pub hidden_size: i32,
    pub num_hidden_layers: i32,
    pub intermediate_size: i32,
    pub num_attention_heads: i32,
    /// Defaults to `num_attention_heads` (no grouped-query attention).
    #[serde(default)]
    pub num_key_value_heads: Option<i32>,
    /// Defaults to `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<i32>,
    pub rms_norm_eps: f32,
    pub vocab_size: i32,
    /// mlx-lm's per-family default applies when absent (see `rope_theta()`).
    #[serde(default)]
    rope_theta: Option<f32>,
    #[serde(default)]
    pub rope_traditional: bool,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    /// Absent means tied for llama and qwen2 (mlx-lm's defaults).
    #[serde(default)]
    tie_word_embeddings: Option<bool>,
    #[serde(default)]
    pub max_position_embeddings: Option<i32>,
    /// Biases on q/k/v/o (llama family option).
    #[serde(default)]
    pub attention_bias: bool,
    /// Biases on the MLP projections (llama family option).
    #[serde(default)]
    pub mlp_bias: bool,
    /// MLX quantization of the stored weights.
    #[serde(default)]
    pub quantization: Option<QuantizationConfig>,
    /// The same under the Hugging Face name; mlx-lm writes both, and reads
    /// this one when `quantization` is absent.
    #[serde(default)]
    quantization_config: Option<QuantizationConfig>,
    /// Attention kind per layer (`full_attention` / `sliding_attention`).
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    /// End-of-sequence ids (one id or a list).
    #[serde(default)]
    pub eos_token_id: Option<EosIds>,
}

/// One EOS id or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum EosIds {
    One(u32),
    Many(Vec<u32>),
}

impl EosIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            EosIds::One(id) => vec![*id],
            EosIds::Many(ids) => ids.clone(),
        }
    }
}

/// `rope_scaling`: the rescaling of rotary frequencies for long contexts.
#[derive(Debug, Clone, Deserialize)]
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

/// Quantization parameters of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct QuantParams {
    pub group_size: i32,
    pub bits: i32,
}

/// `quantization`: the default parameters and per-layer overrides, where
/// an override is parameters or `false` (kept unquantized).
#[derive(Debug, Clone, Deserialize)]
pub struct QuantizationConfig {
    pub group_size: i32,
    pub bits: i32,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(flatten)]
    overrides: HashMap<String, serde_json::Value>,
}

impl QuantizationConfig {
    /// The parameters for the layer at `path` (e.g. `model.layers.0.mlp.up_proj`):
    /// its override if there is one, else the defaults; `None` if the
    /// override keeps it unquantized.
    pub fn for_layer(&self, path: &str) -> Result<Option<QuantParams>> {
        let default = QuantParams {
            group_size: self.group_size,
            bits: self.bits,
        };
        match self.overrides.get(path) {
            None | Some(serde_json::Value::Bool(true)) => Ok(Some(default)),
            Some(serde_json::Value::Bool(false)) => Ok(None),
            Some(v) => serde_json::from_value::<QuantParams>(v.clone())
                .map(Some)
                .map_err(|e| EngineError::Config(format!("quantization of {path}: {e}"))),
        }
    }
}

impl ModelConfig {
    /// Parses `config.json` text and checks it.
    pub fn from_json(text: &str) -> Result<ModelConfig> {
        let mut config: ModelConfig =
            serde_json::from_str(text).map_err(|e| EngineError::Config(e.to_string()))?;
        if config.quantization.is_none() {
            config.quantization = config.quantization_config.take();
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        let positive = [
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_kv_heads()),
            ("head_dim", self.head_dim()),
            ("vocab_size", self.vocab_size),
        ];
        if let Some((name, value)) = positive.iter().find(|(_, v)| *v <= 0) {
            return Err(EngineError::Config(format!(
                "{name} is {value}, must be positive"
            )));
        }
        if self.num_attention_heads % self.num_kv_heads() != 0 {
            return Err(EngineError::Config(format!(
                "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.num_attention_heads,
                self.num_kv_heads()
            )));
        }
        if let Some(q) = &self.quantization
            && let Some(mode) = &q.mode
            && mode != "affine"
        {
            return Err(EngineError::Config(format!(
                "quantization mode {mode:?} is not supported (only affine)"
            )));
        }
        Ok(())
    }

    pub fn num_kv_heads(&self) -> i32 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> i32 {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// `rope_theta`, else mlx-lm's default for the family.
    pub fn rope_theta(&self) -> f32 {
        self.rope_theta.unwrap_or(match self.model_type.as_str() {
            "qwen2" | "qwen3" => 1_000_000.0,
            _ => 10_000.0,
        })
    }

    /// Whether the output projection reuses the embedding matrix.
    pub fn tie_word_embeddings(&self) -> bool {
        self.tie_word_embeddings.unwrap_or(true)
    }

    /// Whether some layers use sliding-window attention.
    pub fn has_sliding_window_layers(&self) -> bool {
        self.layer_types
            .as_ref()
            .is_some_and(|t| t.iter().any(|k| k == "sliding_attention"))
    }

    /// The context length the model was trained for, if the config says.
    pub fn context_length(&self) -> Option<i32> {
        self.max_position_embeddings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QWEN: &str = r#"{
        "model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6, "vocab_size": 100,
        "quantization": {"group_size": 64, "bits": 4,
            "model.layers.0.mlp.down_proj": {"group_size": 32, "bits": 8},
            "lm_head": false}
    }"#;

    #[test]
    fn absent_keys_take_mlx_lm_defaults() {
        let c = ModelConfig::from_json(QWEN).unwrap();
        assert_eq!(c.head_dim(), 16);
        assert_eq!(c.num_kv_heads(), 2);
        assert_eq!(c.rope_theta(), 1_000_000.0);
        assert!(c.tie_word_embeddings());
        assert!(!c.rope_traditional);
    }

    #[test]
    fn per_layer_quantization_overrides_win() {
        let c = ModelConfig::from_json(QWEN).unwrap();
        let q = c.quantization.unwrap();
        let p = |g, b| {
            Some(QuantParams {
                group_size: g,
                bits: b,
            })
        };
        assert_eq!(q.for_layer("model.layers.0.mlp.up_proj").unwrap(), p(64, 4));
        assert_eq!(
            q.for_layer("model.layers.0.mlp.down_proj").unwrap(),
            p(32, 8)
        );
        assert_eq!(q.for_layer("lm_head").unwrap(), None);
    }

    #[test]
    fn impossible_head_counts_are_rejected() {
        let bad = QWEN.replace("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3");
        let err = ModelConfig::from_json(&bad).unwrap_err().to_string();
        assert!(err.contains("multiple"), "{err}");
        let bad = QWEN.replace("\"vocab_size\": 100", "\"vocab_size\": 0");
        assert!(ModelConfig::from_json(&bad).is_err());
    }

    #[test]
    fn rope_scaling_reads_type_or_rope_type() {
        let s: RopeScaling =
            serde_json::from_str(r#"{"rope_type": "llama3", "factor": 8.0}"#).unwrap();
        assert_eq!(s.kind(), "llama3");
        let s: RopeScaling = serde_json::from_str(r#"{"type": "linear", "factor": 2.0}"#).unwrap();
        assert_eq!(s.kind(), "linear");
    }
}
