//! The caches of one sequence, one per layer, of the kind the layer needs
//! ([`Cache`]): the key/value cache of an attention layer, as mlx-lm's
//! `KVCache` (`mlx_lm/models/cache.py`: preallocated in steps of 256
//! positions, written in place with `slice_update`, read as the prefix
//! filled so far), or the fixed-size state of a linear-attention layer
//! ([`RecurrentCache`]).

use mlx::{Array, Dtype};

use super::base::{CacheKind, LayerCache};
pub use super::kv_quant::{KvArray, KvQuant};
pub use super::recurrent_cache::RecurrentCache;
use crate::error::{EngineError, Result};

/// One layer's cache for one sequence.
#[derive(Debug, Clone)]
pub enum Cache {
    Kv(KvCache),
    Recurrent(RecurrentCache),
}

impl Cache {
    /// An empty cache of `kind`, its KV quantized with `quant` (from the
    /// model: [`crate::model::Model::kv_quant`]).
    pub fn new(kind: CacheKind, quant: Option<KvQuant>) -> Cache {
        match kind.recurrent_shape() {
            None => Cache::Kv(KvCache::quantizing(quant)),
            Some(shape) => Cache::Recurrent(RecurrentCache::with_shape(shape, 1)),
        }
    }

    /// Positions cached.
    pub fn offset(&self) -> i32 {
        match self {
            Cache::Kv(c) => c.offset(),
            Cache::Recurrent(c) => c.offset(),
        }
    }

    /// Forgets every position past `len` (a speculative draft's rejected
    /// tokens): a KV cache keeps its buffers and overwrites them next; a
    /// recurrent state cannot be cut back.
    pub fn truncate(&mut self, len: i32) -> Result<()> {
        match self {
            Cache::Kv(c) => {
                c.truncate(len);
                Ok(())
            }
            Cache::Recurrent(c) if c.offset() <= len => Ok(()),
            Cache::Recurrent(_) => Err(EngineError::InvalidRequest(
                "a recurrent state cannot be cut back to an earlier position".into(),
            )),
        }
    }

    /// The arrays to evaluate to materialize the cache.
    pub fn state(&self) -> Vec<&Array> {
        match self {
            Cache::Kv(c) => c.state(),
            Cache::Recurrent(c) => c.state(),
        }
    }

    /// Bytes held.
    pub fn nbytes(&self) -> usize {
        match self {
            Cache::Kv(c) => c.nbytes(),
            Cache::Recurrent(c) => c.nbytes(),
        }
    }

    /// What the prompt cache keeps of this cache: copies that share no
    /// memory with it (`None` when nothing was written).
    pub fn snapshot(&self) -> Result<Option<LayerSnapshot>> {
        Ok(match self {
            Cache::Kv(c) => match c.filled()? {
                Some((k, v)) => {
                    // A gather always writes a new buffer (a slice is a view).
                    let at = mlx::arange(0.0, f64::from(c.offset()), 1.0, Dtype::I32)?;
                    Some(LayerSnapshot::Kv(k.take(&at, 2)?, v.take(&at, 2)?, c.quant))
                }
                None => None,
            },
            Cache::Recurrent(c) => c
                .copy_row(0)?
                .map(|(conv, state)| LayerSnapshot::Recurrent(conv, state)),
        })
    }
}

/// What the prompt cache keeps of one layer of a sequence, sharing no
/// memory with anything that will be written.
#[derive(Debug, Clone)]
pub enum LayerSnapshot {
    /// Keys and values `[1, H, positions, D]` (quantized or not), and how
    /// the cache they came from quantizes: any prefix of them is the cache
    /// of that prefix.
    Kv(KvArray, KvArray, Option<KvQuant>),
    /// The convolution inputs and the state at the sequence's end: the
    /// cache of exactly that many positions, no fewer.
    Recurrent(Array, Array),
}

impl LayerSnapshot {
    /// Bytes held, as stored (packed codes, scales and biases when
    /// quantized).
    pub fn nbytes(&self) -> usize {
        match self {
            LayerSnapshot::Kv(a, b, _) => a.nbytes() + b.nbytes(),
            LayerSnapshot::Recurrent(a, b) => a.nbytes() + b.nbytes(),
        }
    }

    /// The arrays held.
    pub fn arrays(&self) -> Vec<&Array> {
        match self {
            LayerSnapshot::Kv(a, b, _) => a.arrays().into_iter().chain(b.arrays()).collect(),
            LayerSnapshot::Recurrent(a, b) => vec![a, b],
        }
    }

    /// A cache of the first `len` positions of a snapshot of `total`; a
    /// recurrent state only of all of them.
    pub fn to_cache(&self, len: i32, total: i32) -> Result<Cache> {
        match self {
            LayerSnapshot::Kv(k, v, quant) => Ok(Cache::Kv(KvCache::from_prefix(
                k.slice_axis(2, 0, len)?,
                v.slice_axis(2, 0, len)?,
                *quant,
            )?)),
            LayerSnapshot::Recurrent(_, _) if len != total => Err(EngineError::InvalidRequest(
                format!("a recurrent state of {total} positions cannot serve {len}"),
            )),
            LayerSnapshot::Recurrent(conv, state) => Ok(Cache::Recurrent(
                RecurrentCache::from_snapshot(conv.clone(), state.clone(), total)?,
            )),
        }
    }
}

impl LayerCache for Cache {
    fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(KvArray, KvArray)> {
        match self {
            Cache::Kv(c) => c.update_and_fetch(keys, values),
            Cache::Recurrent(_) => Err(EngineError::InvalidRequest(
                "an attention layer was given a recurrent cache".into(),
            )),
        }
    }

    fn recurrent(&mut self) -> Result<&mut RecurrentCache> {
        match self {
            Cache::Recurrent(c) => Ok(c),
            Cache::Kv(_) => Err(EngineError::InvalidRequest(
                "a linear-attention layer was given a KV cache".into(),
            )),
        }
    }
}

/// Positions added per growth of the buffers.
pub const CACHE_STEP: i32 = 256;

/// Keys and values `[batch, kv_heads, positions, head_dim]` of one layer,
/// at full precision or quantized (see [`super::kv_quant`]).
#[derive(Debug, Default, Clone)]
pub struct KvCache {
    keys: Option<KvArray>,
    values: Option<KvArray>,
    offset: i32,
    /// How the buffers are quantized once they hold `quant.start`
    /// positions; `None`: never.
    quant: Option<KvQuant>,
}

impl KvCache {
    /// An empty full-precision cache.
    pub fn new() -> KvCache {
        KvCache::default()
    }

    /// An empty cache quantized with `quant` (none: full precision).
    pub fn quantizing(quant: Option<KvQuant>) -> KvCache {
        KvCache {
            quant,
            ..KvCache::default()
        }
    }

    /// A cache holding `keys`/`values` (`[1, H, L, D]`) as its first `L`
    /// positions (a prompt-cache hit). The arrays are shared, never written:
    /// the first append copies them.
    pub fn from_prefix(keys: KvArray, values: KvArray, quant: Option<KvQuant>) -> Result<KvCache> {
        let offset = keys.dim(2)?;
        Ok(KvCache {
            keys: Some(keys),
            values: Some(values),
            offset,
            quant,
        })
    }

    /// How the cache quantizes.
    pub fn quant(&self) -> Option<KvQuant> {
        self.quant
    }

    /// Positions filled.
    pub fn offset(&self) -> i32 {
        self.offset
    }

    /// The filled prefix of the keys and values, if any was written.
    pub fn filled(&self) -> Result<Option<(KvArray, KvArray)>> {
        match (&self.keys, &self.values) {
            (Some(k), Some(v)) if self.offset > 0 => Ok(Some((
                k.slice_axis(2, 0, self.offset)?,
                v.slice_axis(2, 0, self.offset)?,
            ))),
            _ => Ok(None),
        }
    }

    /// Appends `keys`/`values` (`[B, H, L, D]`) and returns everything
    /// cached so far, including them: stored as the buffers are (quantized
    /// first when they are). When the cache should be quantized from here
    /// on, the buffers are quantized after the positions are fetched, so
    /// this pass attends at full precision (as mlx-lm quantizes a cache
    /// after the forward pass).
    pub fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(KvArray, KvArray)> {
        let shape = keys.shape();
        let (b, h, l, d) = (shape[0], shape[1], shape[2], shape[3]);
        let vd = values.dim(-1)?;
        let prev = self.offset;
        let (keys, values) = match (&self.keys, &self.values) {
            (Some(k), Some(v)) => (k.stored_like(keys)?, v.stored_like(values)?),
            _ => (KvArray::Full(keys.clone()), KvArray::Full(values.clone())),
        };
        let grown = match (self.keys.take(), self.values.take()) {
            (Some(k), Some(v)) if prev + l <= k.dim(2)? => (k, v),
            old => {
                let steps = (CACHE_STEP + l - 1) / CACHE_STEP;
                match old {
                    (Some(k), Some(v)) => {
                        // Drop the unused tail before growing, as mlx-lm does.
                        let (k, v) = if prev % CACHE_STEP != 0 {
                            (k.slice_axis(2, 0, prev)?, v.slice_axis(2, 0, prev)?)
                        } else {
                            (k, v)
                        };
                        let (new_k, new_v) = (
                            k.zeros(b, steps * CACHE_STEP)?,
                            v.zeros(b, steps * CACHE_STEP)?,
                        );
                        (
                            KvArray::concatenate(&[&k, &new_k], 2)?,
                            KvArray::concatenate(&[&v, &new_v], 2)?,
                        )
                    }
                    _ => (
                        KvArray::Full(mlx::zeros(
                            &[b, h, steps * CACHE_STEP, d],
                            keys_dtype(&keys),
                        )?),
                        KvArray::Full(mlx::zeros(
                            &[b, h, steps * CACHE_STEP, vd],
                            keys_dtype(&values),
                        )?),
                    ),
                }
            }
        };
        self.offset += l;
        let k = grown.0.slice_update_axis(&keys, 2, prev, self.offset)?;
        let v = grown.1.slice_update_axis(&values, 2, prev, self.offset)?;
        let out = (
            k.slice_axis(2, 0, self.offset)?,
            v.slice_axis(2, 0, self.offset)?,
        );
        match self.quant {
            Some(q) if !k.is_quantized() && self.offset >= q.start => {
                self.keys = Some(k.quantized(q)?);
                self.values = Some(v.quantized(q)?);
            }
            _ => {
                self.keys = Some(k);
                self.values = Some(v);
            }
        }
        Ok(out)
    }

    /// The buffers (`[1, H, capacity, D]`, the first `offset` positions
    /// filled) and the offset, handed over whole; `None` when nothing was
    /// written.
    pub fn into_buffers(self) -> Option<(KvArray, KvArray, i32)> {
        match (self.keys, self.values) {
            (Some(k), Some(v)) if self.offset > 0 => Some((k, v, self.offset)),
            _ => None,
        }
    }

    /// The arrays to evaluate to materialize the cache.
    pub fn state(&self) -> Vec<&Array> {
        self.keys
            .iter()
            .chain(self.values.iter())
            .flat_map(KvArray::arrays)
            .collect()
    }

    /// Bytes held by the buffers.
    pub fn nbytes(&self) -> usize {
        self.state().iter().map(|a| a.nbytes()).sum()
    }

    /// Forgets every position past `len` (keeps the buffers).
    pub fn truncate(&mut self, len: i32) {
        self.offset = self.offset.min(len.max(0));
    }
}

/// The dtype of new full-precision keys or values.
fn keys_dtype(a: &KvArray) -> Dtype {
    match a {
        KvArray::Full(a) => a.dtype(),
        KvArray::Quantized(q) => q.scales.dtype(),
    }
}

/// Bytes one position of KV costs across `layers` attention layers caching
/// `width` values each (keys and values: `2 * kv_heads * head_dim`),
/// stored as `quant` says (`None`: at full precision in `dtype`; quantized:
/// each `head_dim` values packed, with a scale and a bias of `dtype` per
/// group): the input of memory admission and of batch limits.
pub fn bytes_per_position(
    layers: i32,
    (width, head_dim): (i32, i32),
    dtype: Dtype,
    quant: Option<KvQuant>,
) -> usize {
    match quant {
        Some(q) if head_dim > 0 => {
            (layers * (width / head_dim)) as usize * q.head_bytes(head_dim, dtype)
        }
        _ => (layers * width) as usize * dtype.size(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(l: i32, start: f32) -> Array {
        let data: Vec<f32> = (0..l * 2).map(|i| start + i as f32).collect();
        Array::from_slice(&data, &[1, 1, l, 2]).unwrap()
    }

    #[test]
    fn appends_across_growth_steps_and_returns_the_filled_prefix() {
        let mut cache = KvCache::new();
        let (k, _) = cache
            .update_and_fetch(&filled(3, 0.0), &filled(3, 100.0))
            .unwrap();
        let k = k.to_full().unwrap();
        assert_eq!(k.shape(), vec![1, 1, 3, 2]);
        let (k, v) = cache
            .update_and_fetch(&filled(300, 6.0), &filled(300, 106.0))
            .unwrap();
        let (k, v) = (k.to_full().unwrap(), v.to_full().unwrap());
        assert_eq!(cache.offset(), 303);
        assert_eq!(k.shape(), vec![1, 1, 303, 2]);
        let kv = k.to_vec::<f32>().unwrap();
        let vv = v.to_vec::<f32>().unwrap();
        assert!(kv.iter().enumerate().all(|(i, x)| *x == i as f32));
        assert!(vv.iter().enumerate().all(|(i, x)| *x == 100.0 + i as f32));
        let (k, _) = cache
            .update_and_fetch(&filled(1, 606.0), &filled(1, 0.0))
            .unwrap();
        let k = k.to_full().unwrap();
        assert_eq!(k.shape(), vec![1, 1, 304, 2]);
        assert_eq!(
            k.slice_axis(2, 303, 304).unwrap().to_vec::<f32>().unwrap(),
            [606.0, 607.0]
        );
    }

    #[test]
    fn capacity_grows_in_whole_steps() {
        let mut cache = KvCache::new();
        cache
            .update_and_fetch(&filled(10, 0.0), &filled(10, 0.0))
            .unwrap();
        assert_eq!(cache.nbytes(), 2 * 256 * 2 * 4);
        cache
            .update_and_fetch(&filled(250, 0.0), &filled(250, 0.0))
            .unwrap();
        // 10 filled positions kept, plus one new step of 256.
        assert_eq!(cache.nbytes(), 2 * 266 * 2 * 4);
    }

    /// Keys `[1, 2, l, 32]`, one distinct value per element.
    fn heads(l: i32, start: f32) -> Array {
        let data: Vec<f32> = (0..2 * l * 32)
            .map(|i| start + (i % 97) as f32 / 97.0)
            .collect();
        Array::from_slice(&data, &[1, 2, l, 32]).unwrap()
    }

    #[test]
    fn a_quantizing_cache_turns_quantized_after_the_pass_that_reaches_its_start() {
        let quant = KvQuant::new(8, 32, 4).unwrap();
        let mut cache = KvCache::quantizing(Some(quant));
        // 3 positions: under the start, stored and returned at full precision.
        let (k, _) = cache
            .update_and_fetch(&heads(3, 0.0), &heads(3, 1.0))
            .unwrap();
        assert!(!k.is_quantized() && !cache.keys.as_ref().unwrap().is_quantized());
        // The pass reaching 5 positions attends at full precision; the
        // buffers are quantized after it.
        let (k, _) = cache
            .update_and_fetch(&heads(2, 0.5), &heads(2, 1.5))
            .unwrap();
        assert!(!k.is_quantized() && cache.keys.as_ref().unwrap().is_quantized());
        // Later passes read packed keys; across a growth step too.
        let (k, v) = cache
            .update_and_fetch(&heads(300, 0.25), &heads(300, 1.25))
            .unwrap();
        assert!(k.is_quantized() && v.is_quantized());
        assert_eq!(cache.offset(), 305);
        assert_eq!(k.dim(2).unwrap(), 305);
        // 8 bits over values in [0.25, 1.25): within a step of 1/255.
        let got: Vec<f32> = v
            .to_full()
            .unwrap()
            .slice_axis(2, 5, 305)
            .unwrap()
            .to_vec()
            .unwrap();
        let want: Vec<f32> = heads(300, 1.25).to_vec().unwrap();
        let err = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(err < 1.0 / 255.0, "{err}");
        // The bytes of the 5 filled positions kept and two new growth
        // steps, packed.
        assert_eq!(
            cache.nbytes(),
            517 * bytes_per_position(1, (2 * 2 * 32, 32), Dtype::F32, Some(quant))
        );
    }
}
