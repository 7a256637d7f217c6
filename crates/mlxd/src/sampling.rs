//! The sampling defaults a request gets when it leaves a parameter out:
//! the model's per-model overrides (configuration), else the values its
//! checkpoint recommends in `generation_config.json` (transformers'
//! generation defaults, which the model's authors ship), else
//! [`SMALL_MODEL_DEFAULTS`], greedy. OpenAI's own defaults (temperature 1,
//! no truncation) suit large hosted models; a small local model sampled
//! that way wanders off within a few tokens.

use std::path::Path;

use api::ModelDefaults;
use serde::Deserialize;

/// What a model without recommended values gets: greedy decoding
/// (temperature 0). A small model's first tokens are often near ties: for
/// the README's "What is the capital of France?" the default model
/// (SmolLM2-135M-Instruct) gives "The" 15 %, "L" 14 %, "La" 10 %, and even
/// at temperature 0.1 four replies in ten then wander off into French
/// fragments, where the greedy reply is "The capital of France is Paris."
/// GGUF files carry no sampling values (the default model's has none), so
/// GGUF models get this too. A request that sends `temperature` samples.
pub const SMALL_MODEL_DEFAULTS: ModelDefaults = ModelDefaults {
    temperature: Some(0.0),
    top_p: None,
    top_k: None,
    min_p: None,
    repetition_penalty: None,
    max_tokens: None,
};

/// The sampling keys of `generation_config.json` this daemon honours.
#[derive(Debug, Default, Deserialize)]
struct GenerationConfig {
    do_sample: Option<bool>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
    min_p: Option<f64>,
    repetition_penalty: Option<f64>,
}

/// The model's own defaults: the sampling values of the
/// `generation_config.json` in a checkpoint directory, each only when in
/// the range requests may use; `do_sample: false` means greedy, as in
/// transformers. Empty for a GGUF file, a directory without the file, and
/// a file that cannot be read (logged).
pub fn of_model(path: &Path) -> ModelDefaults {
    let file = path.join("generation_config.json");
    if !path.is_dir() || !file.is_file() {
        return ModelDefaults::default();
    }
    let parsed = std::fs::read_to_string(&file)
        .map_err(|e| e.to_string())
        .and_then(|text| {
            serde_json::from_str::<GenerationConfig>(&text).map_err(|e| e.to_string())
        });
    match parsed {
        Ok(config) => from_generation_config(&config),
        Err(e) => {
            tracing::warn!(file = %file.display(), "ignoring the model's generation config: {e}");
            ModelDefaults::default()
        }
    }
}

fn from_generation_config(c: &GenerationConfig) -> ModelDefaults {
    let in_range = |v: Option<f64>, ok: fn(f64) -> bool| v.filter(|v| ok(*v)).map(|v| v as f32);
    let temperature = if c.do_sample == Some(false) {
        Some(0.0)
    } else {
        in_range(c.temperature, |t| (0.0..=2.0).contains(&t))
    };
    ModelDefaults {
        temperature,
        top_p: in_range(c.top_p, |p| p > 0.0 && p <= 1.0),
        top_k: c
            .top_k
            .filter(|k| *k > 0)
            .and_then(|k| u32::try_from(k).ok()),
        min_p: in_range(c.min_p, |p| (0.0..=1.0).contains(&p)),
        repetition_penalty: in_range(c.repetition_penalty, |p| p > 0.0),
        max_tokens: None,
    }
}

/// Whether `d` sets any sampling value.
fn samples(d: &ModelDefaults) -> bool {
    d.temperature.is_some()
        || d.top_p.is_some()
        || d.top_k.is_some()
        || d.min_p.is_some()
        || d.repetition_penalty.is_some()
}

/// `configured` over the model's `own` values; when the model recommends
/// no sampling values at all, [`SMALL_MODEL_DEFAULTS`] in their place (as
/// a set: the model's values are never mixed with these).
pub fn layered(configured: ModelDefaults, own: ModelDefaults) -> ModelDefaults {
    let own = if samples(&own) {
        own
    } else {
        SMALL_MODEL_DEFAULTS
    };
    ModelDefaults {
        temperature: configured.temperature.or(own.temperature),
        top_p: configured.top_p.or(own.top_p),
        top_k: configured.top_k.or(own.top_k),
        min_p: configured.min_p.or(own.min_p),
        repetition_penalty: configured.repetition_penalty.or(own.repetition_penalty),
        max_tokens: configured.max_tokens.or(own.max_tokens),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_with(json: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("generation_config.json"), json).unwrap();
        dir
    }

    #[test]
    fn a_checkpoints_generation_config_gives_its_sampling_values() {
        let dir = model_with(
            r#"{"bos_token_id": 1, "do_sample": true, "temperature": 0.6, "top_p": 0.95,
                "top_k": 20, "repetition_penalty": 1.05, "max_new_tokens": 2048}"#,
        );
        let own = of_model(dir.path());
        assert_eq!(
            own,
            ModelDefaults {
                temperature: Some(0.6),
                top_p: Some(0.95),
                top_k: Some(20),
                min_p: None,
                repetition_penalty: Some(1.05),
                max_tokens: None,
            }
        );
        // The configuration's overrides win, key by key.
        let configured = ModelDefaults {
            temperature: Some(0.0),
            ..ModelDefaults::default()
        };
        let d = layered(configured, own);
        assert_eq!(d.temperature, Some(0.0));
        assert_eq!(d.top_p, Some(0.95));
        // A model that recommends only top-p keeps OpenAI's temperature: its
        // values are never mixed with the greedy fallback.
        let dir = model_with(r#"{"top_p": 0.8}"#);
        let d = layered(ModelDefaults::default(), of_model(dir.path()));
        assert_eq!((d.temperature, d.top_p), (None, Some(0.8)));
    }

    #[test]
    fn greedy_and_out_of_range_values_follow_transformers_and_validation() {
        let dir =
            model_with(r#"{"do_sample": false, "temperature": 0.9, "top_k": 0, "top_p": 1.5}"#);
        let own = of_model(dir.path());
        assert_eq!(own.temperature, Some(0.0));
        assert_eq!(own.top_k, None);
        assert_eq!(own.top_p, None);
    }

    #[test]
    fn a_model_without_sampling_values_gets_the_small_model_defaults() {
        // SmolLM2's file: token ids only.
        let ids_only = model_with(r#"{"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}"#);
        let broken = model_with("{not json");
        let none = tempfile::tempdir().unwrap();
        let gguf = none.path().join("model.gguf");
        std::fs::write(&gguf, b"GGUF").unwrap();
        for path in [ids_only.path(), broken.path(), none.path(), gguf.as_path()] {
            let d = layered(ModelDefaults::default(), of_model(path));
            assert_eq!(d, SMALL_MODEL_DEFAULTS, "{}", path.display());
        }
        let configured = ModelDefaults {
            top_k: Some(40),
            max_tokens: Some(100),
            ..ModelDefaults::default()
        };
        let d = layered(configured, ModelDefaults::default());
        assert_eq!(d.top_k, Some(40));
        assert_eq!(d.max_tokens, Some(100));
        assert_eq!(d.temperature, SMALL_MODEL_DEFAULTS.temperature);
    }
}
