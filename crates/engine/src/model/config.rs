//! `config.json` of a model in the Hugging Face / mlx-community layout: the
//! settings every family shares ([`ModelConfig`]: vocabulary, layers,
//! heads, EOS, context length, quantization), read as mlx-lm's `ModelArgs`
//! read them, with the config's JSON kept for the family's own arguments
//! (`mlx_lm/models/base.py::BaseModelArgs.from_dict`). A multimodal-style
//! config nests the language model's settings under `text_config`; they are
//! read from there, with the top level's quantization and EOS.

use std::collections::HashMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use mlx::QuantMode;

use crate::error::{EngineError, Result};

/// Keys a nested `text_config` takes from the top level when it lacks them
/// (a vision-language family reads its vision tower's config and image
/// token ids from there too).
const INHERITED: [&str; 9] = [
    "quantization",
    "quantization_config",
    "eos_token_id",
    "tie_word_embeddings",
    "max_position_embeddings",
    "vision_config",
    "image_token_id",
    "video_token_id",
    "vision_start_token_id",
];

/// Defaults a language model's `ModelArgs` give keys its config may lack
/// (transformers saves configs without their defaults): per model type,
/// the keys set when absent. And what a wrapper family's `ModelArgs` put
/// into its `text_config` first (mlx-lm's `__post_init__`): keys set when
/// absent, and keys always taken from the top level (with their default
/// there).
struct Defaults {
    model_type: &'static str,
    when_absent: &'static [(&'static str, f64)],
    from_top: &'static [(&'static str, f64)],
}

const DEFAULTS: &[Defaults] = &[
    // gemma3.py's wrapper.
    Defaults {
        model_type: "gemma3",
        when_absent: &[("num_attention_heads", 8.0), ("num_key_value_heads", 4.0)],
        from_top: &[("vocab_size", 262_208.0)],
    },
    // gemma3_text.py.
    Defaults {
        model_type: "gemma3_text",
        when_absent: &[
            ("hidden_size", 1152.0),
            ("num_hidden_layers", 26.0),
            ("intermediate_size", 6912.0),
            ("num_attention_heads", 4.0),
            ("head_dim", 256.0),
            ("rms_norm_eps", 1.0e-6),
            ("vocab_size", 262_144.0),
            ("num_key_value_heads", 1.0),
            ("max_position_embeddings", 32768.0),
        ],
        from_top: &[],
    },
];

/// `config` with the defaults of `model_type` (see [`Defaults`]).
fn apply_defaults(
    config: &mut serde_json::Map<String, serde_json::Value>,
    top: &serde_json::Value,
    model_type: &str,
) {
    let Some(d) = DEFAULTS.iter().find(|d| d.model_type == model_type) else {
        return;
    };
    let number = |v: f64| {
        if v.fract() == 0.0 {
            serde_json::json!(v as i64)
        } else {
            serde_json::json!(v)
        }
    };
    for &(key, v) in d.from_top {
        let value = top.get(key).cloned().unwrap_or_else(|| number(v));
        config.insert(key.to_owned(), value);
    }
    for &(key, v) in d.when_absent {
        config.entry(key).or_insert_with(|| number(v));
    }
}

/// The architecture settings every family shares.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelConfig {
    /// The top-level `model_type` (the registry's key).
    #[serde(default)]
    pub model_type: String,
    /// `text_config.model_type` of a nested config.
    #[serde(skip)]
    pub text_model_type: Option<String>,
    pub hidden_size: i32,
    pub num_hidden_layers: i32,
    #[serde(default)]
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
    /// Absent means the family's default (see [`ModelConfig::tie_word_embeddings`]).
    #[serde(default)]
    tie_word_embeddings: Option<bool>,
    #[serde(default)]
    pub max_position_embeddings: Option<i32>,
    /// MLX quantization of the stored weights.
    #[serde(default)]
    pub quantization: Option<QuantizationConfig>,
    /// The same under the Hugging Face name; mlx-lm writes both, and reads
    /// this one when `quantization` is absent.
    #[serde(default)]
    quantization_config: Option<QuantizationConfig>,
    /// End-of-sequence ids (one id or a list).
    #[serde(default)]
    pub eos_token_id: Option<EosIds>,
    /// The language model's config as JSON (the `text_config` of a nested
    /// one), for the family's own arguments.
    #[serde(skip)]
    pub raw: serde_json::Value,
    /// This process's part of a model split over several ranks (set by
    /// the caller before building; `None`: the whole model).
    #[serde(skip)]
    pub shard: Option<crate::distributed::Shard>,
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

/// Quantization parameters of one layer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct QuantParams {
    pub group_size: i32,
    pub bits: i32,
    /// `affine` when absent (mlx-lm's default).
    #[serde(default)]
    pub mode: ModeName,
}

/// A quantization mode as the config names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ModeName(Option<String>);

impl ModeName {
    /// The mode; an error naming it if MLX has no such mode.
    pub fn get(&self) -> Result<QuantMode> {
        let name = self.0.as_deref().unwrap_or("affine");
        QuantMode::from_name(name).ok_or_else(|| {
            EngineError::Config(format!(
                "quantization mode {name:?} is not supported (affine, mxfp4, nvfp4, mxfp8)"
            ))
        })
    }
}

/// `quantization`: the default parameters and per-layer overrides, where
/// an override is parameters or `false` (kept unquantized).
#[derive(Debug, Clone, Deserialize)]
pub struct QuantizationConfig {
    pub group_size: i32,
    pub bits: i32,
    #[serde(default)]
    pub mode: ModeName,
    #[serde(flatten)]
    overrides: HashMap<String, serde_json::Value>,
}

impl QuantizationConfig {
    /// Renames the paths of the per-layer overrides (`rename` gives a
    /// path's new name or `None` to keep it), for a family that renames
    /// its tensors on loading.
    pub fn rename_layers(&mut self, rename: impl Fn(&str) -> Option<String>) {
        self.overrides = std::mem::take(&mut self.overrides)
            .into_iter()
            .map(|(path, v)| (rename(&path).unwrap_or(path), v))
            .collect();
    }

    /// The parameters for the layer at `path` (e.g. `model.layers.0.mlp.up_proj`):
    /// its override if there is one, else the defaults; `None` if the
    /// override keeps it unquantized.
    pub fn for_layer(&self, path: &str) -> Result<Option<QuantParams>> {
        let default = QuantParams {
            group_size: self.group_size,
            bits: self.bits,
            mode: self.mode.clone(),
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
        let top: serde_json::Value =
            serde_json::from_str(text).map_err(|e| EngineError::Config(e.to_string()))?;
        let model_type = top
            .get("model_type")
            .and_then(|v| v.as_str())
            .ok_or_else(|| EngineError::Config("model_type is missing".into()))?
            .to_owned();
        let (raw, text_model_type) = match top.get("text_config") {
            Some(serde_json::Value::Object(nested)) => {
                let mut nested = nested.clone();
                for key in INHERITED {
                    if let Some(v) = top.get(key)
                        && !nested.contains_key(key)
                    {
                        nested.insert(key.to_owned(), v.clone());
                    }
                }
                apply_defaults(&mut nested, &top, &model_type);
                let text_type = nested
                    .get("model_type")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned);
                if let Some(t) = &text_type {
                    apply_defaults(&mut nested, &top, t);
                }
                (serde_json::Value::Object(nested), text_type)
            }
            _ => {
                let mut flat = top.as_object().cloned().unwrap_or_default();
                apply_defaults(&mut flat, &top, &model_type);
                (serde_json::Value::Object(flat), None)
            }
        };
        let mut config: ModelConfig =
            serde_json::from_value(raw.clone()).map_err(|e| EngineError::Config(e.to_string()))?;
        config.model_type = model_type;
        config.text_model_type = text_model_type;
        config.raw = raw;
        if config.quantization.is_none() {
            config.quantization = config.quantization_config.take();
        }
        config.validate()?;
        Ok(config)
    }

    /// The family's own arguments, parsed from the (text) config's JSON
    /// with the defaults its type gives.
    pub fn args<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.raw.clone())
            .map_err(|e| EngineError::Config(format!("{}: {e}", self.model_type)))
    }

    fn validate(&self) -> Result<()> {
        let positive = [
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
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
        if let Some(q) = &self.quantization {
            q.mode.get()?;
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

    /// Whether the output projection reuses the embedding matrix, `default`
    /// (the family's) when the config does not say.
    pub fn tie_word_embeddings_or(&self, default: bool) -> bool {
        self.tie_word_embeddings.unwrap_or(default)
    }

    /// Whether the output projection reuses the embedding matrix (absent:
    /// tied, the default of the Llama and Qwen2 families).
    pub fn tie_word_embeddings(&self) -> bool {
        self.tie_word_embeddings_or(true)
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
        assert!(c.tie_word_embeddings());
    }

    #[test]
    fn per_layer_quantization_overrides_win() {
        let c = ModelConfig::from_json(QWEN).unwrap();
        let q = c.quantization.unwrap();
        let p = |g, b| {
            Some(QuantParams {
                group_size: g,
                bits: b,
                mode: ModeName::default(),
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
    fn a_nested_text_config_is_read_with_the_top_level_quantization() {
        let nested = r#"{
            "model_type": "qwen3_5", "eos_token_id": 7,
            "quantization": {"group_size": 64, "bits": 4},
            "text_config": {"model_type": "qwen3_5_text", "hidden_size": 64,
                "num_hidden_layers": 2, "intermediate_size": 128,
                "num_attention_heads": 4, "rms_norm_eps": 1e-6, "vocab_size": 100}
        }"#;
        let c = ModelConfig::from_json(nested).unwrap();
        assert_eq!(c.model_type, "qwen3_5");
        assert_eq!(c.text_model_type.as_deref(), Some("qwen3_5_text"));
        assert_eq!(c.hidden_size, 64);
        assert_eq!(c.quantization.unwrap().bits, 4);
        assert_eq!(c.eos_token_id.unwrap().to_vec(), [7]);
        assert_eq!(c.raw["model_type"], "qwen3_5_text");
    }

    #[test]
    fn a_missing_model_type_is_named() {
        let bad = QWEN.replace("\"model_type\": \"qwen2\",", "");
        let err = ModelConfig::from_json(&bad).unwrap_err().to_string();
        assert!(err.contains("model_type"), "{err}");
    }
}
