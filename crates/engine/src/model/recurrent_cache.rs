//! The cache of a linear-attention layer, as mlx-lm's `ArraysCache` of
//! two arrays (`mlx_lm/models/cache.py`) that the Gated DeltaNet layers
//! keep: the last `conv_len` inputs of the causal convolution
//! (`[rows, conv_len, conv_dim]`, the activations' dtype) and the
//! recurrent state (`[rows, heads, value_dim, key_dim]`, f32). Its size
//! does not grow with the sequence.
//!
//! One type serves a single sequence (one row) and a batch: rows join by
//! concatenation and leave by a gather along the batch axis. Unlike keys
//! and values, the state cannot be cut back to an earlier position, so
//! the prompt cache keeps it only as a snapshot at a sequence's end.

use mlx::{Array, Dtype};

use super::base::CacheKind;
use crate::error::{EngineError, Result};

/// A linear-attention layer's convolution and recurrent state.
#[derive(Debug, Clone)]
pub struct RecurrentCache {
    conv: Option<Array>,
    state: Option<Array>,
    rows: i32,
    /// Positions folded into the state (a batch: its longest row's).
    offset: i32,
    shape: [i32; 5],
}

impl RecurrentCache {
    /// An empty cache of `rows` rows for a layer of `kind` (zeros until the
    /// first write); an attention layer's kind is refused.
    pub fn new(kind: CacheKind, rows: i32) -> Result<RecurrentCache> {
        let shape = kind.recurrent_shape().ok_or_else(|| {
            EngineError::InvalidRequest("a recurrent cache for an attention layer".into())
        })?;
        Ok(RecurrentCache::with_shape(shape, rows))
    }

    /// An empty cache of `rows` rows of the state
    /// [`CacheKind::recurrent_shape`] gives.
    pub fn with_shape(shape: [i32; 5], rows: i32) -> RecurrentCache {
        RecurrentCache {
            conv: None,
            state: None,
            rows,
            offset: 0,
            shape,
        }
    }

    /// A cache holding `conv` (`[rows, conv_len, conv_dim]`) and `state`
    /// (`[rows, heads, value_dim, key_dim]`) after `offset` positions; the
    /// arrays are shared, never written (a step replaces them).
    pub fn from_snapshot(conv: Array, state: Array, offset: i32) -> Result<RecurrentCache> {
        let (c, s) = (conv.shape(), state.shape());
        if c.len() != 3 || s.len() != 4 || c[0] != s[0] {
            return Err(EngineError::InvalidRequest(format!(
                "a recurrent state of shapes {c:?} and {s:?}"
            )));
        }
        let mut cache = RecurrentCache::with_shape([c[1], c[2], s[1], s[2], s[3]], c[0]);
        cache.conv = Some(conv);
        cache.state = Some(state);
        cache.offset = offset;
        Ok(cache)
    }

    /// Rows held.
    pub fn rows(&self) -> i32 {
        self.rows
    }

    /// Positions folded in.
    pub fn offset(&self) -> i32 {
        self.offset
    }

    /// The convolution inputs and the state for `rows` rows, zeros when
    /// nothing was written (`dtype`: the activations').
    pub fn arrays(&self, rows: i32, dtype: Dtype) -> Result<(Array, Array)> {
        if rows != self.rows {
            return Err(EngineError::InvalidRequest(format!(
                "{rows} rows of input for a recurrent cache of {}",
                self.rows
            )));
        }
        let [conv_len, conv_dim, heads, value_dim, key_dim] = self.shape;
        let conv = match &self.conv {
            Some(c) => c.clone(),
            None => mlx::zeros(&[rows, conv_len, conv_dim], dtype)?,
        };
        let state = match &self.state {
            Some(s) => s.clone(),
            None => mlx::zeros(&[rows, heads, value_dim, key_dim], Dtype::F32)?,
        };
        Ok((conv, state))
    }

    /// Stores the arrays after `len` more positions.
    pub fn store(&mut self, conv: Array, state: Array, len: i32) {
        self.conv = Some(conv);
        self.state = Some(state);
        self.offset += len;
    }

    /// The zeros of a side without arrays, like `like`'s rows.
    fn filled(a: &Option<Array>, rows: i32, like: &Array) -> Result<Array> {
        match a {
            Some(a) => Ok(a.clone()),
            None => {
                let mut shape = like.shape();
                shape[0] = rows;
                Ok(mlx::zeros(&shape, like.dtype())?)
            }
        }
    }

    /// Appends `other`'s rows after these.
    pub fn extend(&mut self, other: RecurrentCache) -> Result<()> {
        if other.rows == 0 {
            return Ok(());
        }
        if self.rows == 0 {
            *self = other;
            return Ok(());
        }
        let join = |a: &Option<Array>, ra: i32, b: &Option<Array>, rb: i32| -> Result<_> {
            let Some(like) = a.as_ref().or(b.as_ref()) else {
                return Ok(None);
            };
            let (a, b) = (Self::filled(a, ra, like)?, Self::filled(b, rb, like)?);
            Ok(Some(mlx::concatenate(&[&a, &b], 0)?))
        };
        self.conv = join(&self.conv, self.rows, &other.conv, other.rows)?;
        self.state = join(&self.state, self.rows, &other.state, other.rows)?;
        self.rows += other.rows;
        self.offset = self.offset.max(other.offset);
        Ok(())
    }

    /// Keeps the rows at `indices` (int32 `[n]`, in that order).
    pub fn retain(&mut self, indices: &Array) -> Result<()> {
        let n = indices.size() as i32;
        if n == 0 {
            self.conv = None;
            self.state = None;
            self.rows = 0;
            self.offset = 0;
            return Ok(());
        }
        if let Some(c) = self.conv.take() {
            self.conv = Some(c.take(indices, 0)?);
        }
        if let Some(s) = self.state.take() {
            self.state = Some(s.take(indices, 0)?);
        }
        self.rows = n;
        Ok(())
    }

    /// Row `row`'s convolution inputs and state as fresh arrays sharing no
    /// memory with the batch (`None` when nothing was written).
    pub fn copy_row(&self, row: i32) -> Result<Option<(Array, Array)>> {
        let (Some(c), Some(s)) = (&self.conv, &self.state) else {
            return Ok(None);
        };
        // A gather always writes a new buffer (a slice could be a view).
        let at = Array::from_slice(&[row], &[1])?;
        Ok(Some((c.take(&at, 0)?, s.take(&at, 0)?)))
    }

    /// The arrays to evaluate to materialize the cache.
    pub fn state(&self) -> Vec<&Array> {
        self.conv.iter().chain(self.state.iter()).collect()
    }

    /// Bytes held.
    pub fn nbytes(&self) -> usize {
        self.state().iter().map(|a| a.nbytes()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIND: CacheKind = CacheKind::Recurrent {
        conv_len: 3,
        conv_dim: 4,
        heads: 2,
        value_dim: 2,
        key_dim: 2,
    };

    fn row(fill: f32, offset: i32) -> RecurrentCache {
        let conv = mlx::full(&[1, 3, 4], f64::from(fill), Dtype::F32).unwrap();
        let state = mlx::full(&[1, 2, 2, 2], f64::from(fill), Dtype::F32).unwrap();
        RecurrentCache::from_snapshot(conv, state, offset).unwrap()
    }

    #[test]
    fn rows_join_and_leave_along_the_batch_axis() {
        let mut batch = RecurrentCache::new(KIND, 0).unwrap();
        batch.extend(row(1.0, 5)).unwrap();
        batch.extend(row(2.0, 9)).unwrap();
        // A row with nothing written joins as zeros.
        batch.extend(RecurrentCache::new(KIND, 1).unwrap()).unwrap();
        assert_eq!(batch.rows(), 3);
        let (conv, state) = batch.arrays(3, Dtype::F32).unwrap();
        assert_eq!(conv.shape(), [3, 3, 4]);
        let firsts: Vec<f32> = (0..3)
            .map(|r| {
                state
                    .slice_axis(0, r, r + 1)
                    .unwrap()
                    .to_vec::<f32>()
                    .unwrap()[0]
            })
            .collect();
        assert_eq!(firsts, [1.0, 2.0, 0.0]);
        batch
            .retain(&Array::from_slice(&[1i32], &[1]).unwrap())
            .unwrap();
        let (c, s) = batch.copy_row(0).unwrap().unwrap();
        assert!(c.to_vec::<f32>().unwrap().iter().all(|&x| x == 2.0));
        assert!(s.to_vec::<f32>().unwrap().iter().all(|&x| x == 2.0));
        assert!(batch.arrays(2, Dtype::F32).is_err());
    }

    #[test]
    fn its_size_is_fixed_per_row() {
        let bytes = KIND.state_bytes(Dtype::F32);
        assert_eq!(bytes, (3 * 4 + 2 * 2 * 2) * 4);
        assert_eq!(row(1.0, 0).nbytes(), bytes);
        assert_eq!(CacheKind::Kv.state_bytes(Dtype::F32), 0);
    }
}
