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

pub use batch_cache::{BatchCache, BatchKvCache};
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

/// Dense weights a model may take on the CPU backend at most: dequantized
/// once at load, up to this much (and an eighth of the memory MLX may use).
const CPU_DENSE_MAX: usize = 4 << 30;

/// On the CPU backend with a fast BLAS, dequantizes the quantized matrices
/// of an f32 model once, when the dense weights fit (see [`CPU_DENSE_MAX`]);
/// returns their bytes, or `None` when the weights stay as they are.
///
/// MLX's CPU quantized product unpacks every weight for every row, so it
/// costs the same per row at any batch size and runs at a fraction of a
/// dense BLAS product; a batch of 16 rows costs 16 single rows. Dense f32
/// weights go through the BLAS instead: a prefill chunk or a decode batch
/// costs little more than one row. (Measured on a 2-core x86 machine, one
/// `[B, 576] x [576, 1536]` 4-bit product: B = 64 is 25× faster dense.)
/// The products are the same up to float summation order. GPU backends
/// keep their quantized kernels, which read each weight once per batch.
fn densify_for_cpu(t: &mut Transformer) -> Result<Option<usize>> {
    if mlx::backend() != mlx::Backend::Cpu || !mlx::fast_cpu_gemm() || t.dtype() != Dtype::F32 {
        return Ok(None);
    }
    let mut dense = 0;
    let mut quantized = false;
    for m in t.matrices_mut() {
        dense += m.dense_bytes(Dtype::F32)?;
        quantized |= matches!(m, nn::Matrix::Quantized(_));
    }
    let limit = CPU_DENSE_MAX.min(mlx::memory::memory_limit() / 8);
    if !quantized || dense > limit {
        return Ok(None);
    }
    let mut arrays = Vec::new();
    for m in t.matrices_mut() {
        m.densify(Dtype::F32)?;
        arrays.extend(m.arrays().into_iter().cloned());
    }
    let refs: Vec<&Array> = arrays.iter().collect();
    mlx::eval(&refs)?;
    Ok(Some(dense))
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
        let mut transformer = Transformer::load(&mut weights, &config, family)?;
        weights.finish()?;
        let weight_bytes = match densify_for_cpu(&mut transformer)? {
            Some(dense) => dense,
            None => weight_bytes,
        };
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

    /// Runs the layers for rows of tokens `[B, L]` at positions `at` to
    /// fill a batch's `caches`, without the output projection (prompts
    /// prefilled together).
    pub fn fill_rows(
        &self,
        tokens: &Array,
        caches: &mut [BatchKvCache],
        at: Positions,
    ) -> Result<()> {
        self.transformer.hidden_at(tokens, caches, at)?;
        Ok(())
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
