//! What every family's model is to the rest of the engine, as mlx-lm's
//! `Model` classes and `mlx_lm/models/base.py` are to its generator: a
//! [`LanguageModel`] runs token ids through its layers into the caches it
//! declares ([`CacheKind`] per layer) at the given [`Positions`], and turns
//! hidden states into logits. The scheduler, the generator and the prompt
//! cache hold caches through [`LayerCache`] / [`Caches`] and never learn
//! which kind a layer has.

use mlx::{Array, Dtype};

use super::cache::RecurrentCache;
use super::kv_quant::KvArray;
use super::nn::Matrix;
use crate::error::Result;

/// The positions of the new tokens.
#[derive(Debug, Clone, Copy)]
pub enum Positions<'a> {
    /// One sequence, continuing at `offset` (its cache's length).
    Sequence { offset: i32 },
    /// A batch of rows: row `b`'s first new token is at position
    /// `offsets[b]` (int32 `[B]`), and it attends to the columns where
    /// `mask` (bool, `[B, 1, new tokens, columns]`, broadcast) is true; no
    /// mask (one new token per row only): all of them. `valid` (bool,
    /// `[B, new tokens]`) is false on left padding, which recurrent layers
    /// must not fold into their state; `None`: every token is real.
    Rows {
        offsets: &'a Array,
        mask: Option<&'a Array>,
        valid: Option<&'a Array>,
    },
}

/// The state a layer keeps between steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheKind {
    /// Keys and values of every position (attention layers).
    Kv,
    /// A fixed-size recurrent state: the last `conv_len` inputs of a
    /// causal convolution over `conv_dim` channels, and a `[heads, value
    /// dim, key dim]` f32 state (linear-attention layers, mlx-lm's
    /// `ArraysCache` of two).
    Recurrent {
        conv_len: i32,
        conv_dim: i32,
        heads: i32,
        value_dim: i32,
        key_dim: i32,
    },
}

impl CacheKind {
    /// `[conv_len, conv_dim, heads, value_dim, key_dim]` of a recurrent
    /// kind.
    pub fn recurrent_shape(&self) -> Option<[i32; 5]> {
        match *self {
            CacheKind::Kv => None,
            CacheKind::Recurrent {
                conv_len,
                conv_dim,
                heads,
                value_dim,
                key_dim,
            } => Some([conv_len, conv_dim, heads, value_dim, key_dim]),
        }
    }

    /// Bytes one row of the recurrent state takes with activations of
    /// `dtype` (0 for a KV layer, whose cost is per position).
    pub fn state_bytes(&self, dtype: Dtype) -> usize {
        match *self {
            CacheKind::Kv => 0,
            CacheKind::Recurrent {
                conv_len,
                conv_dim,
                heads,
                value_dim,
                key_dim,
            } => {
                (conv_len * conv_dim) as usize * dtype.size()
                    + (heads * value_dim * key_dim) as usize * Dtype::F32.size()
            }
        }
    }
}

/// One layer's cache, as the layer sees it.
pub trait LayerCache {
    /// Appends keys/values `[B, H, L, D]`; returns all cached, them
    /// included, as the cache stores them (an attention layer's cache; see
    /// [`super::kv_quant`] for a quantized one).
    fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(KvArray, KvArray)>;

    /// The recurrent state (a linear-attention layer's cache).
    fn recurrent(&mut self) -> Result<&mut RecurrentCache>;
}

/// The caches of all layers of a model, one per layer.
pub trait Caches {
    /// Layers cached.
    fn count(&self) -> usize;

    /// Layer `i`'s cache.
    fn layer(&mut self, i: usize) -> &mut dyn LayerCache;
}

/// A slice of layer caches as [`Caches`].
pub struct LayerCaches<'a, C>(pub &'a mut [C]);

impl<C: LayerCache> Caches for LayerCaches<'_, C> {
    fn count(&self) -> usize {
        self.0.len()
    }

    fn layer(&mut self, i: usize) -> &mut dyn LayerCache {
        &mut self.0[i]
    }
}

/// A family's model, as the engine runs it.
pub trait LanguageModel: Send {
    /// The cache each layer needs, in order.
    fn cache_kinds(&self) -> Vec<CacheKind>;

    /// The hidden states after the final norm, `[B, L, hidden]`, for token
    /// ids `[B, L]` at positions `at`, appending to `caches` (one per layer).
    fn hidden(&self, tokens: &Array, caches: &mut dyn Caches, at: Positions) -> Result<Array>;

    /// Output logits `[.., vocab]` of hidden states.
    fn logits(&self, hidden: &Array) -> Result<Array>;

    /// Every weight matrix (projections, embedding, output head), to
    /// dequantize on the CPU backend.
    fn matrices_mut(&mut self) -> Vec<&mut Matrix>;

    /// The dtype of activations and of the KV cache.
    fn dtype(&self) -> Dtype;

    /// The image side of a vision-language family (none for text models).
    fn vision(&self) -> Option<&dyn super::multimodal::VisionLanguage> {
        None
    }

    /// Whether every attention layer attends over all earlier positions
    /// without sinks, as a quantized KV cache needs (mlx-lm quantizes no
    /// rotating, sliding-window cache, and its quantized attention takes
    /// no sinks).
    fn kv_quantizable(&self) -> bool;
}

/// Checks that `caches` has one cache per layer of a model of `layers`.
pub fn check_caches(caches: &dyn Caches, layers: usize) -> Result<()> {
    if caches.count() != layers {
        return Err(crate::error::EngineError::InvalidRequest(format!(
            "{} caches for {layers} layers",
            caches.count()
        )));
    }
    Ok(())
}
