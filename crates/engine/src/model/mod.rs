//! Model definitions and loading: `config.json`, strict weight loading from
//! safetensors (dense or MLX-quantized), the families by `model_type`, and
//! the per-layer KV cache.

pub mod batch_cache;
pub mod cache;
pub mod config;
pub mod gguf;
mod llama;
mod mistral;
pub mod nn;
mod qwen2;
mod qwen3;
pub mod synthetic;
pub mod transformer;
pub mod weights;

use std::path::Path;

use mlx::{Array, Dtype};

pub use batch_cache::BatchKvCache;
pub use cache::KvCache;
pub use config::ModelConfig;
pub use transformer::Positions;
use transformer::{Family, Transformer};
pub use weights::Weights;

use crate::error::{EngineError, Result};

/// The `model_type`s this engine runs.
pub const SUPPORTED_MODEL_TYPES: [&str; 4] = ["llama", "mistral", "qwen2", "qwen3"];

fn family_of(config: &ModelConfig) -> Result<Family> {
    match config.model_type.as_str() {
        "llama" => llama::family(config),
        "mistral" => mistral::family(config),
        "qwen2" => qwen2::family(config),
        "qwen3" => qwen3::family(config),
        other => Err(EngineError::Config(format!(
            "model_type {other:?} is not supported (supported: {})",
            SUPPORTED_MODEL_TYPES.join(", ")
        ))),
    }
}

/// A model ready to run: its config and its layers.
pub struct Model {
    pub config: ModelConfig,
    transformer: Transformer,
    weight_bytes: usize,
}

impl Model {
    /// Builds a model from its config and tensors, strictly: every tensor the
    /// architecture needs must be there, and nothing else.
    pub fn from_weights(config: ModelConfig, mut weights: Weights) -> Result<Model> {
        let family = family_of(&config)?;
        let weight_bytes = weights.nbytes();
        let transformer = Transformer::load(&mut weights, &config, family)?;
        weights.finish()?;
        Ok(Model {
            config,
            transformer,
            weight_bytes,
        })
    }

    /// Loads `config.json` and the safetensors of a model directory.
    pub fn load_dir(dir: &Path) -> Result<Model> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| EngineError::io(&path, e))?;
        let config = ModelConfig::from_json(&text)?;
        Model::from_weights(config, Weights::load_dir(dir)?)
    }

    /// Fresh caches, one per layer.
    pub fn new_cache(&self) -> Vec<KvCache> {
        (0..self.transformer.num_layers())
            .map(|_| KvCache::new())
            .collect()
    }

    /// Logits `[B, L, vocab]` for token ids `[B, L]`, appending to `caches`.
    pub fn forward(&self, tokens: &Array, caches: &mut [KvCache]) -> Result<Array> {
        self.transformer.forward(tokens, caches)
    }

    /// Logits `[B, 1, vocab]` for one new token per row (`[B, 1]`) of a
    /// batch at positions `at`, appending to the batch's `caches`.
    pub fn forward_rows(
        &self,
        tokens: &Array,
        caches: &mut [BatchKvCache],
        at: Positions,
    ) -> Result<Array> {
        let hidden = self.transformer.hidden_at(tokens, caches, at)?;
        self.transformer.logits(&hidden)
    }

    /// Runs the layers for `tokens` to fill `caches`, without the output
    /// projection (prefill of all but the last prompt token).
    pub fn fill_cache(&self, tokens: &Array, caches: &mut [KvCache]) -> Result<()> {
        self.transformer.hidden(tokens, caches)?;
        Ok(())
    }

    /// Bytes of the weights as loaded.
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// The dtype of activations and the KV cache.
    pub fn dtype(&self) -> Dtype {
        self.transformer.dtype()
    }

    /// Bytes one cached position costs across all layers.
    pub fn kv_bytes_per_position(&self) -> usize {
        cache::bytes_per_position(
            self.config.num_hidden_layers,
            self.config.num_kv_heads(),
            self.config.head_dim(),
            self.dtype(),
        )
    }
}
