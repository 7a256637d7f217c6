//! The model layer: `config.json`, strict weight loading from safetensors
//! (dense or MLX-quantized), the registry of families by `model_type`
//! (one file per family, built from the shared blocks: attention, MLP,
//! norms, RoPE, embedding and head, linear attention), and the per-layer
//! caches of the kind each layer needs (KV, recurrent state), behind one
//! [`Model`] the scheduler, the generator and the prompt cache use without
//! knowing the family or the cache kinds.

pub mod attention;
pub mod base;
pub mod batch_cache;
pub mod cache;
pub mod config;
mod deepseek_v3;
pub mod embedding;
pub mod gated_delta;
mod gemma3_text;
pub mod gguf;
mod glm4_moe;
mod gpt_oss;
pub mod kv_quant;
pub mod latent_attention;
pub mod linear_attention;
mod llama;
mod mistral;
mod mixtral;
pub mod mlp;
pub mod moe;
pub mod multimodal;
pub mod nn;
mod phi3;
mod qwen2;
mod qwen2_5_vl;
pub mod qwen2_5_vl_vision;
mod qwen3;
mod qwen3_5;
mod qwen3_5_moe;
mod qwen3_moe;
mod qwen3_next;
pub mod recurrent_cache;
pub mod registry;
pub mod rope;
pub mod switch_layers;
pub mod synthetic;
pub mod transformer;
pub mod weights;

use std::path::Path;

use mlx::{Array, Dtype};

pub use base::{CacheKind, Caches, LanguageModel, LayerCache, LayerCaches, Positions};
pub use batch_cache::{BatchCache, BatchKvCache, BatchLayerCache};
pub use cache::{Cache, KvCache, LayerSnapshot, RecurrentCache};
pub use config::ModelConfig;
pub use kv_quant::{KvArray, KvQuant};
pub use multimodal::{ImagePrefill, VisionLanguage};
pub use registry::{cache_kinds, kv_width, supported_model_types};
pub use weights::Weights;

use crate::error::{EngineError, Result};

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
fn densify_for_cpu(t: &mut dyn LanguageModel) -> Result<Option<usize>> {
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

/// A model ready to run: its config, its layers and the cache kind of each.
pub struct Model {
    pub config: ModelConfig,
    model: Box<dyn LanguageModel>,
    kinds: Vec<CacheKind>,
    weight_bytes: usize,
    /// How the attention layers' KV is quantized (`None`: not).
    kv_quant: Option<KvQuant>,
}

impl Model {
    /// Builds a model from its config and tensors, strictly: every tensor the
    /// architecture needs must be there, and nothing else.
    pub fn from_weights(config: ModelConfig, mut weights: Weights) -> Result<Model> {
        let family = registry::find(&config)?;
        let weight_bytes = weights.nbytes();
        let mut model = family.load(&config, &mut weights)?;
        weights.finish()?;
        let mut declared = family.cache_kinds(&config)?;
        if let Some(shard) = &config.shard {
            declared = declared[shard.layers(declared.len())].to_vec();
        }
        if model.cache_kinds() != declared {
            return Err(EngineError::Config(format!(
                "{}: the layers built differ from the layers the config declares",
                config.model_type
            )));
        }
        let weight_bytes = match densify_for_cpu(model.as_mut())? {
            Some(dense) => dense,
            None => weight_bytes,
        };
        let kinds = model.cache_kinds();
        if let Some(shard) = config.shard.as_ref().filter(|s| s.rank() == 0) {
            model = Box::new(crate::distributed::Lead::new(model, shard.group.clone()));
        }
        Ok(Model {
            config,
            model,
            kinds,
            weight_bytes,
            kv_quant: None,
        })
    }

    /// Loads `config.json` and the safetensors of a model directory.
    pub fn load_dir(dir: &Path) -> Result<Model> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| EngineError::io(&path, e))?;
        let config = ModelConfig::from_json(&text)?;
        Model::from_weights(config, Weights::load_dir(dir)?)
    }

    /// The cache kind of each layer.
    pub fn cache_kinds(&self) -> &[CacheKind] {
        &self.kinds
    }

    /// Whether every layer's cache can be cut back to an earlier position
    /// (KV only): a prompt-cache entry then serves any prefix of itself.
    pub fn trimmable(&self) -> bool {
        self.kinds.iter().all(|k| *k == CacheKind::Kv)
    }

    /// Fresh caches, one per layer.
    pub fn new_cache(&self) -> Vec<Cache> {
        self.kinds
            .iter()
            .map(|&k| Cache::new(k, self.kv_quant))
            .collect()
    }

    /// Quantizes the KV cache of the attention layers from now on (`None`:
    /// full precision), for the caches made after this. Refused for a
    /// model with sliding-window attention or attention sinks (mlx-lm
    /// quantizes neither), and for a head size the group size does not
    /// divide.
    pub fn set_kv_quant(&mut self, quant: Option<KvQuant>) -> Result<()> {
        if let Some(q) = quant {
            if !self.model.kv_quantizable() {
                return Err(EngineError::Config(format!(
                    "kv_bits: {} has sliding-window attention or attention sinks, whose KV \
                     cache cannot be quantized (nor can mlx-lm's)",
                    self.config.model_type
                )));
            }
            let head_dim = self.config.head_dim();
            if head_dim % q.group_size != 0 {
                return Err(EngineError::Config(format!(
                    "kv_group_size {} does not divide the head size {head_dim}",
                    q.group_size
                )));
            }
        }
        self.kv_quant = quant;
        Ok(())
    }

    /// How the KV cache is quantized (`None`: full precision).
    pub fn kv_quant(&self) -> Option<KvQuant> {
        self.kv_quant
    }

    /// Logits `[B, L, vocab]` for token ids `[B, L]`, appending to `caches`.
    pub fn forward(&self, tokens: &Array, caches: &mut [Cache]) -> Result<Array> {
        let hidden = self.hidden(tokens, caches)?;
        self.model.logits(&hidden)
    }

    /// Hidden states after the final norm, `[B, L, hidden]`, for token ids
    /// `[B, L]`, appending to `caches` (embeddings: no output head).
    pub fn hidden_states(&self, tokens: &Array, caches: &mut [Cache]) -> Result<Array> {
        self.hidden(tokens, caches)
    }

    fn hidden(&self, tokens: &Array, caches: &mut [Cache]) -> Result<Array> {
        let offset = caches.first().map_or(0, Cache::offset);
        self.model.hidden(
            tokens,
            &mut LayerCaches(caches),
            Positions::Sequence { offset },
        )
    }

    /// Logits `[B, 1, vocab]` for one new token per row (`[B, 1]`) of a
    /// batch at positions `at`, appending to the batch's `caches`.
    pub fn forward_rows(
        &self,
        tokens: &Array,
        caches: &mut [BatchLayerCache],
        at: Positions,
    ) -> Result<Array> {
        let hidden = self.model.hidden(tokens, &mut LayerCaches(caches), at)?;
        self.model.logits(&hidden)
    }

    /// Runs the layers for rows of tokens `[B, L]` at positions `at` to
    /// fill a batch's `caches`, without the output projection (prompts
    /// prefilled together).
    pub fn fill_rows(
        &self,
        tokens: &Array,
        caches: &mut [BatchLayerCache],
        at: Positions,
    ) -> Result<()> {
        self.model.hidden(tokens, &mut LayerCaches(caches), at)?;
        Ok(())
    }

    /// Runs the layers for `tokens` to fill `caches`, without the output
    /// projection (prefill of all but the last prompt token).
    pub fn fill_cache(&self, tokens: &Array, caches: &mut [Cache]) -> Result<()> {
        self.hidden(tokens, caches)?;
        Ok(())
    }

    /// Bytes of the weights as loaded.
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// The dtype of activations and the KV cache.
    pub fn dtype(&self) -> Dtype {
        self.model.dtype()
    }

    /// Bytes one cached position costs across the attention layers (the
    /// recurrent layers' state does not grow with the sequence).
    pub fn kv_bytes_per_position(&self) -> usize {
        let kv_layers = self.kinds.iter().filter(|k| **k == CacheKind::Kv).count();
        let width = registry::kv_width(&self.config)
            .unwrap_or_else(|_| 2 * self.config.num_kv_heads() * self.config.head_dim());
        cache::bytes_per_position(
            kv_layers as i32,
            (width, self.config.head_dim()),
            self.dtype(),
            self.kv_quant,
        )
    }

    /// Bytes of recurrent state one sequence holds whatever its length
    /// (0 for a model of attention layers only).
    pub fn state_bytes_per_row(&self) -> usize {
        self.kinds.iter().map(|k| k.state_bytes(self.dtype())).sum()
    }
}
