//! The key/value cache of one attention layer for a batch of sequences of
//! different lengths, laid out as mlx-lm's `BatchKVCache` lays it out: one
//! buffer `[rows, kv_heads, capacity, head_dim]` in which every row ends at
//! the same write column. A shorter row is padded on the left; the caller
//! keeps each row's padding and masks it out of attention (so a row attends
//! to exactly the positions it would attend to alone), and rotates each
//! row's queries and keys by its own position (`column - padding`).
//!
//! One decode step then appends one column for every row with a single
//! `slice_update`, whatever the rows' lengths. A sequence joins by being
//! copied in right-aligned (shifting the others right when it is longer
//! than all of them), and leaves by a gather of the remaining rows, which
//! also drops the padding columns no row needs any more. Sequences
//! prefilled together (left-padded to the longest) join as a batch of their
//! own, right-aligned with the running one.
//!
//! A linear-attention layer's [`RecurrentCache`] has no columns: its rows
//! join and leave along the batch axis only, and left padding never
//! reaches it (the layer skips padded tokens, see `Positions::Rows`).
//!
//! [`BatchCache`] holds one cache per layer, of the layer's kind
//! ([`BatchLayerCache`]), with each row's padding, and runs a decode step
//! of the whole batch.

use mlx::{Array, Dtype};

use super::Model;
use super::base::{CacheKind, LayerCache, Positions};
use super::cache::{CACHE_STEP, Cache, KvCache, LayerSnapshot, RecurrentCache};
use super::kv_quant::{KvArray, KvQuant};
use crate::error::{EngineError, Result};

/// Keys and values of one layer for a batch of rows, at full precision or
/// quantized (see [`super::kv_quant`]; all rows alike).
#[derive(Debug, Default, Clone)]
pub struct BatchKvCache {
    keys: Option<KvArray>,
    values: Option<KvArray>,
    rows: i32,
    /// The write column: every row's last cached position is `idx - 1`.
    idx: i32,
    /// How the buffers are quantized once the write column reaches
    /// `quant.start`; `None`: never (unless rows join quantized).
    quant: Option<KvQuant>,
}

/// `n` rounded up to whole growth steps, at least one step.
fn whole_steps(n: i32) -> i32 {
    (n.max(1) + CACHE_STEP - 1) / CACHE_STEP * CACHE_STEP
}

/// How `a` is quantized, if it is.
fn layout(a: &Option<KvArray>) -> Option<KvQuant> {
    match a {
        Some(KvArray::Quantized(q)) => Some(KvQuant {
            bits: q.bits,
            group_size: q.group_size,
            start: 0,
        }),
        _ => None,
    }
}

/// `a` quantized with `q` when it is at full precision.
fn quantize_opt(a: Option<KvArray>, q: KvQuant) -> Result<Option<KvArray>> {
    a.map(|a| a.quantized(q)).transpose()
}

impl BatchKvCache {
    /// An empty cache (no rows) quantized with `quant`.
    pub fn new(quant: Option<KvQuant>) -> BatchKvCache {
        BatchKvCache {
            quant,
            ..BatchKvCache::default()
        }
    }

    /// A cache of `rows` rows with nothing cached yet (a batch prefilled
    /// together).
    pub fn with_rows(rows: i32, quant: Option<KvQuant>) -> BatchKvCache {
        BatchKvCache {
            rows,
            quant,
            ..BatchKvCache::default()
        }
    }

    /// Stores the buffers quantized with `q` (if they are not).
    fn quantize_with(&mut self, q: KvQuant) -> Result<()> {
        self.keys = quantize_opt(self.keys.take(), q)?;
        self.values = quantize_opt(self.values.take(), q)?;
        Ok(())
    }

    /// Appends `other`'s rows after this cache's: both shifted right to
    /// the longer one's write column first (zeros on the left). When
    /// either side is quantized, both are.
    pub fn extend(&mut self, mut other: BatchKvCache) -> Result<()> {
        if other.rows == 0 {
            return Ok(());
        }
        if self.rows == 0 {
            other.quant = other.quant.or(self.quant);
            *self = other;
            return Ok(());
        }
        if let Some(q) = layout(&self.keys).or(layout(&other.keys)) {
            self.quantize_with(q)?;
            other.quantize_with(q)?;
        }
        let idx = self.idx.max(other.idx);
        self.pad_left(idx - self.idx)?;
        other.pad_left(idx - other.idx)?;
        // Up to the write column (capacities may differ); a side without
        // buffers has nothing but zeros there.
        let filled = |a: &Option<KvArray>, rows: i32, like: &KvArray| -> Result<KvArray> {
            match a {
                Some(a) => a.slice_axis(2, 0, idx),
                None => like.zeros(rows, idx),
            }
        };
        let joined = |a: &Option<KvArray>, b: &Option<KvArray>| -> Result<Option<KvArray>> {
            let Some(like) = a.as_ref().or(b.as_ref()) else {
                return Ok(None);
            };
            let (a, b) = (filled(a, self.rows, like)?, filled(b, other.rows, like)?);
            Ok(Some(KvArray::concatenate(&[&a, &b], 0)?))
        };
        self.keys = joined(&self.keys, &other.keys)?;
        self.values = joined(&self.values, &other.values)?;
        self.rows += other.rows;
        self.quant = self.quant.or(other.quant);
        Ok(())
    }

    /// Rows in the batch.
    pub fn rows(&self) -> i32 {
        self.rows
    }

    /// The write column (the length of the longest row).
    pub fn idx(&self) -> i32 {
        self.idx
    }

    /// Shifts every row right by `d` columns (zeros on the left).
    fn pad_left(&mut self, d: i32) -> Result<()> {
        if d <= 0 {
            return Ok(());
        }
        if let (Some(k), Some(v)) = (self.keys.take(), self.values.take()) {
            let k = k.slice_axis(2, 0, self.idx)?;
            let v = v.slice_axis(2, 0, self.idx)?;
            self.keys = Some(KvArray::concatenate(&[&k.zeros(self.rows, d)?, &k], 2)?);
            self.values = Some(KvArray::concatenate(&[&v.zeros(self.rows, d)?, &v], 2)?);
        }
        self.idx += d;
        Ok(())
    }

    /// Adds a row holding `seq`'s positions, right-aligned at the write
    /// column (after shifting the other rows right if `seq` is longer).
    /// Returns the new row's left padding. A quantized row quantizes the
    /// batch, and the batch quantizes a full-precision row, when the other
    /// is.
    ///
    /// The first row of an empty batch takes `seq`'s buffers as they are
    /// (same layout, one row, no padding): no copy, and its steps write in
    /// place as the single-sequence cache's do.
    pub fn push(&mut self, seq: KvCache) -> Result<i32> {
        self.quant = self.quant.or(seq.quant());
        if self.rows == 0 && self.idx == 0 && self.keys.is_none() {
            // Nothing cached: a row of padding until its first write.
            if let Some((keys, values, offset)) = seq.into_buffers() {
                self.keys = Some(keys);
                self.values = Some(values);
                self.idx = offset;
            }
            self.rows = 1;
            return Ok(0);
        }
        let len = seq.offset();
        let filled = seq.filled()?;
        self.pad_left(len - self.idx)?;
        let pad = self.idx - len;
        let Some((mut k, mut v)) = filled else {
            // Nothing cached: the row is all padding until its first write.
            if let (Some(keys), Some(values)) = (self.keys.take(), self.values.take()) {
                let cap = keys.dim(2)?;
                self.keys = Some(KvArray::concatenate(&[&keys, &keys.zeros(1, cap)?], 0)?);
                self.values = Some(KvArray::concatenate(&[&values, &values.zeros(1, cap)?], 0)?);
            }
            self.rows += 1;
            return Ok(pad);
        };
        if let Some(q) = layout(&self.keys).or(layout(&Some(k.clone()))) {
            self.quantize_with(q)?;
            (k, v) = (k.quantized(q)?, v.quantized(q)?);
        }
        let (keys, values) = match (self.keys.take(), self.values.take()) {
            (Some(keys), Some(values)) => (keys, values),
            // No buffers yet (the rows so far are empty): allocate them.
            _ => {
                let cap = whole_steps(self.idx + 1);
                (k.zeros(self.rows, cap)?, v.zeros(self.rows, cap)?)
            }
        };
        let cap = keys.dim(2)?;
        let row_k = k.zeros(1, cap)?.slice_update_axis(&k, 2, pad, self.idx)?;
        let row_v = v.zeros(1, cap)?.slice_update_axis(&v, 2, pad, self.idx)?;
        self.keys = Some(KvArray::concatenate(&[&keys, &row_k], 0)?);
        self.values = Some(KvArray::concatenate(&[&values, &row_v], 0)?);
        self.rows += 1;
        Ok(pad)
    }

    /// Keeps the rows at `indices` (int32 `[n]`, in that order) and drops
    /// the first `trim` columns (padding every kept row has).
    pub fn retain(&mut self, indices: &Array, trim: i32) -> Result<()> {
        let n = indices.size() as i32;
        if n == 0 {
            *self = BatchKvCache::new(self.quant);
            return Ok(());
        }
        if let (Some(k), Some(v)) = (self.keys.take(), self.values.take()) {
            let (mut k, mut v) = (k.take(indices, 0)?, v.take(indices, 0)?);
            if trim > 0 {
                let cap = k.dim(2)?;
                k = k.slice_axis(2, trim, cap)?;
                v = v.slice_axis(2, trim, cap)?;
            }
            self.keys = Some(k);
            self.values = Some(v);
        }
        self.rows = n;
        self.idx -= trim;
        Ok(())
    }

    /// Appends `keys`/`values` (`[rows, H, L, D]`) at the write column and
    /// returns every column so far, including them, stored as the buffers
    /// are. When the batch should be quantized from here on, the buffers
    /// are quantized after the columns are fetched (as
    /// [`KvCache::update_and_fetch`] does).
    pub fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(KvArray, KvArray)> {
        let l = keys.dim(2)?;
        if keys.dim(0)? != self.rows {
            return Err(EngineError::InvalidRequest(format!(
                "{} rows of keys for a batch of {}",
                keys.dim(0)?,
                self.rows
            )));
        }
        let prev = self.idx;
        let (new_k, new_v) = match (&self.keys, &self.values) {
            (Some(k), Some(v)) => (k.stored_like(keys)?, v.stored_like(values)?),
            _ => (KvArray::Full(keys.clone()), KvArray::Full(values.clone())),
        };
        let (k, v) = match (self.keys.take(), self.values.take()) {
            (Some(k), Some(v)) if prev + l <= k.dim(2)? => (k, v),
            (Some(k), Some(v)) => {
                let grow = whole_steps(l);
                let k = k.slice_axis(2, 0, prev)?;
                let v = v.slice_axis(2, 0, prev)?;
                (
                    KvArray::concatenate(&[&k, &k.zeros(self.rows, grow)?], 2)?,
                    KvArray::concatenate(&[&v, &v.zeros(self.rows, grow)?], 2)?,
                )
            }
            _ => {
                let cap = whole_steps(prev + l);
                (new_k.zeros(self.rows, cap)?, new_v.zeros(self.rows, cap)?)
            }
        };
        self.idx += l;
        let k = k.slice_update_axis(&new_k, 2, prev, self.idx)?;
        let v = v.slice_update_axis(&new_v, 2, prev, self.idx)?;
        let out = (k.slice_axis(2, 0, self.idx)?, v.slice_axis(2, 0, self.idx)?);
        self.keys = Some(k);
        self.values = Some(v);
        if let Some(q) = self.quant
            && layout(&self.keys).is_none()
            && self.idx >= q.start
        {
            self.quantize_with(q)?;
        }
        Ok(out)
    }

    /// Moves back the write column by `drop`, then shifts row `b` right by
    /// `shift[b]` columns within what is left: each row then ends at the
    /// write column again, having lost its last `drop + shift[b]` columns
    /// (the caller adds `shift[b]` to the row's left padding). What the
    /// shift moves into a row's first columns is never read (padding).
    pub fn trim_rows(&mut self, drop: i32, shift: &[i32]) -> Result<()> {
        self.idx = (self.idx - drop).max(0);
        let idx = self.idx;
        if shift.iter().all(|&s| s == 0) || idx == 0 {
            return Ok(());
        }
        if shift.len() as i32 != self.rows {
            return Err(EngineError::InvalidRequest(format!(
                "{} shifts for a batch of {}",
                shift.len(),
                self.rows
            )));
        }
        let mut columns = Vec::with_capacity(shift.len() * idx as usize);
        for &s in shift {
            columns.extend((0..idx).map(|c| (c - s).max(0)));
        }
        let columns = Array::from_slice(&columns, &[self.rows, 1, idx, 1])?;
        // Each array of a quantized layout moves alike (positions on axis 2).
        let moved = |a: &Array| -> mlx::Result<Array> {
            let shape = a.shape();
            let at = columns.broadcast_to(&[shape[0], shape[1], idx, shape[3]])?;
            let part = a.slice_axis(2, 0, idx)?.take_along_axis(&at, 2)?;
            a.slice_update_axis(&part, 2, 0, idx)
        };
        if let (Some(k), Some(v)) = (self.keys.take(), self.values.take()) {
            self.keys = Some(k.map(moved)?);
            self.values = Some(v.map(moved)?);
        }
        Ok(())
    }

    /// Row `row`'s columns `from..to` (`to` at most the write column) as
    /// fresh arrays `[1, H, to - from, D]` that share no memory with the
    /// batch (`None` when empty).
    pub fn copy_row(&self, row: i32, from: i32, to: i32) -> Result<Option<(KvArray, KvArray)>> {
        let (Some(k), Some(v)) = (&self.keys, &self.values) else {
            return Ok(None);
        };
        let to = to.min(self.idx);
        if from >= to {
            return Ok(None);
        }
        // A gather always writes a new buffer (a slice could be a view).
        let columns = mlx::arange(f64::from(from), f64::from(to), 1.0, Dtype::I32)?;
        let k = k.slice_axis(0, row, row + 1)?.take(&columns, 2)?;
        let v = v.slice_axis(0, row, row + 1)?.take(&columns, 2)?;
        Ok(Some((k, v)))
    }

    /// How the cache quantizes.
    pub fn quant(&self) -> Option<KvQuant> {
        self.quant
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
}

/// One layer's cache for a batch of rows.
#[derive(Debug, Clone)]
pub enum BatchLayerCache {
    Kv(BatchKvCache),
    Recurrent(RecurrentCache),
}

impl BatchLayerCache {
    /// An empty cache of `kind` for `rows` rows, its KV quantized with
    /// `quant`.
    pub fn new(kind: CacheKind, rows: i32, quant: Option<KvQuant>) -> BatchLayerCache {
        match kind.recurrent_shape() {
            None => BatchLayerCache::Kv(BatchKvCache::with_rows(rows, quant)),
            Some(shape) => BatchLayerCache::Recurrent(RecurrentCache::with_shape(shape, rows)),
        }
    }

    /// The arrays to evaluate to materialize the cache.
    pub fn state(&self) -> Vec<&Array> {
        match self {
            BatchLayerCache::Kv(c) => c.state(),
            BatchLayerCache::Recurrent(c) => c.state(),
        }
    }

    /// Bytes held.
    pub fn nbytes(&self) -> usize {
        match self {
            BatchLayerCache::Kv(c) => c.nbytes(),
            BatchLayerCache::Recurrent(c) => c.nbytes(),
        }
    }
}

/// A layer given a cache of the other kind.
fn mismatch() -> EngineError {
    EngineError::InvalidRequest("a layer was given a cache of another kind".into())
}

impl LayerCache for BatchLayerCache {
    fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(KvArray, KvArray)> {
        match self {
            BatchLayerCache::Kv(c) => c.update_and_fetch(keys, values),
            BatchLayerCache::Recurrent(_) => Err(mismatch()),
        }
    }

    fn recurrent(&mut self) -> Result<&mut RecurrentCache> {
        match self {
            BatchLayerCache::Recurrent(c) => Ok(c),
            BatchLayerCache::Kv(_) => Err(mismatch()),
        }
    }
}

/// The batch's caches: one per layer of the layer's kind, and each row's
/// padding in the KV layers.
pub struct BatchCache {
    layers: Vec<BatchLayerCache>,
    kinds: Vec<CacheKind>,
    left_pad: Vec<i32>,
    idx: i32,
}

impl BatchCache {
    /// An empty batch of a model whose layers have caches of `kinds`, its
    /// KV quantized with `quant`.
    pub fn new(kinds: &[CacheKind], quant: Option<KvQuant>) -> BatchCache {
        BatchCache::empty_rows(kinds, quant, Vec::new(), 0)
    }

    /// `left_pad.len()` rows of `model` with nothing cached, to be filled
    /// together up to column `idx`, each starting after its padding.
    pub fn for_model(model: &Model, left_pad: Vec<i32>, idx: i32) -> BatchCache {
        BatchCache::empty_rows(model.cache_kinds(), model.kv_quant(), left_pad, idx)
    }

    /// `left_pad.len()` rows with nothing cached, to be filled together up
    /// to column `idx`, each starting after its padding.
    pub fn empty_rows(
        kinds: &[CacheKind],
        quant: Option<KvQuant>,
        left_pad: Vec<i32>,
        idx: i32,
    ) -> BatchCache {
        let rows = left_pad.len() as i32;
        BatchCache {
            layers: kinds
                .iter()
                .map(|&k| BatchLayerCache::new(k, rows, quant))
                .collect(),
            kinds: kinds.to_vec(),
            left_pad,
            idx,
        }
    }

    /// The cache kind of each layer.
    pub fn kinds(&self) -> &[CacheKind] {
        &self.kinds
    }

    /// The write column: the longest row's length.
    pub fn idx(&self) -> i32 {
        self.idx
    }

    /// The per-layer caches (to run the model on).
    pub fn layers_mut(&mut self) -> &mut [BatchLayerCache] {
        &mut self.layers
    }

    /// The arrays to evaluate to materialize the cache.
    pub fn state(&self) -> Vec<&Array> {
        self.layers
            .iter()
            .flat_map(BatchLayerCache::state)
            .collect()
    }

    /// Appends a row holding `seq` (one cache per layer).
    pub fn push(&mut self, seq: Vec<Cache>) -> Result<()> {
        if seq.len() != self.layers.len() {
            return Err(EngineError::InvalidRequest(format!(
                "{} caches for {} layers",
                seq.len(),
                self.layers.len()
            )));
        }
        let len = seq.first().map_or(0, Cache::offset);
        if len > self.idx {
            let shift = len - self.idx;
            self.left_pad.iter_mut().for_each(|p| *p += shift);
            self.idx = len;
        }
        for (layer, s) in self.layers.iter_mut().zip(seq) {
            match (layer, s) {
                (BatchLayerCache::Kv(b), Cache::Kv(s)) => {
                    b.push(s)?;
                }
                (BatchLayerCache::Recurrent(b), Cache::Recurrent(s)) => b.extend(s)?,
                _ => return Err(mismatch()),
            }
        }
        self.left_pad.push(self.idx - len);
        Ok(())
    }

    /// Appends `other`'s rows (a batch prefilled together), right-aligned
    /// with these at the longer one's write column.
    pub fn extend(&mut self, other: BatchCache) -> Result<()> {
        let idx = self.idx.max(other.idx);
        let (shift, other_shift) = (idx - self.idx, idx - other.idx);
        for (layer, theirs) in self.layers.iter_mut().zip(other.layers) {
            match (layer, theirs) {
                (BatchLayerCache::Kv(a), BatchLayerCache::Kv(b)) => a.extend(b)?,
                (BatchLayerCache::Recurrent(a), BatchLayerCache::Recurrent(b)) => a.extend(b)?,
                _ => return Err(mismatch()),
            }
        }
        self.left_pad.iter_mut().for_each(|p| *p += shift);
        self.left_pad
            .extend(other.left_pad.iter().map(|p| p + other_shift));
        self.idx = idx;
        Ok(())
    }

    /// Keeps the rows at `keep` (in order), dropping padding columns no
    /// kept row needs.
    pub fn retain(&mut self, keep: &[usize]) -> Result<()> {
        let left_pad: Vec<i32> = keep.iter().map(|&i| self.left_pad[i]).collect();
        let trim = left_pad.iter().copied().min().unwrap_or(self.idx);
        let rows: Vec<i32> = keep.iter().map(|&i| i as i32).collect();
        let indices = Array::from_slice(&rows, &[rows.len() as i32])?;
        for layer in &mut self.layers {
            match layer {
                BatchLayerCache::Kv(c) => c.retain(&indices, trim)?,
                BatchLayerCache::Recurrent(c) => c.retain(&indices)?,
            }
        }
        self.left_pad = left_pad.iter().map(|p| p - trim).collect();
        self.idx = if keep.is_empty() { 0 } else { self.idx - trim };
        Ok(())
    }

    /// Positions cached for row `row`.
    pub fn row_len(&self, row: usize) -> i32 {
        self.idx - self.left_pad[row]
    }

    /// Row `row`'s cache of its first `len` positions, per layer, copied
    /// out of the batch; `None` when nothing is cached, or when a
    /// recurrent layer's state covers more than `len` positions (it cannot
    /// be cut back).
    pub fn copy_row(&self, row: usize, len: i32) -> Result<Option<Vec<LayerSnapshot>>> {
        let from = self.left_pad[row];
        let mut out = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let snapshot = match layer {
                BatchLayerCache::Kv(c) => c
                    .copy_row(row as i32, from, from + len)?
                    .map(|(k, v)| LayerSnapshot::Kv(k, v, c.quant())),
                BatchLayerCache::Recurrent(_) if len != self.row_len(row) => None,
                BatchLayerCache::Recurrent(c) => c
                    .copy_row(row as i32)?
                    .map(|(conv, state)| LayerSnapshot::Recurrent(conv, state)),
            };
            match snapshot {
                Some(s) => out.push(s),
                None => return Ok(None),
            }
        }
        Ok(Some(out))
    }

    /// Logits `[rows, vocab]` for one token per row (`tokens`: `[rows]`).
    pub fn step(&mut self, model: &Model, tokens: &Array) -> Result<Array> {
        let rows = self.left_pad.len() as i32;
        let (offsets, mask);
        let at = if self.left_pad == [0] {
            // One row without padding is one sequence: the single-sequence
            // step's graph (a scalar RoPE offset, no offsets array to copy
            // to the device each step).
            Positions::Sequence { offset: self.idx }
        } else {
            let per_row: Vec<i32> = self.left_pad.iter().map(|p| self.idx - p).collect();
            offsets = Array::from_slice(&per_row, &[rows])?;
            // Row b attends to columns left_pad[b] ..= idx (the new one).
            mask = if self.left_pad.iter().any(|&p| p > 0) {
                let columns = mlx::arange(0.0, f64::from(self.idx + 1), 1.0, Dtype::I32)?
                    .reshape(&[1, 1, 1, -1])?;
                let pad = Array::from_slice(&self.left_pad, &[rows, 1, 1, 1])?;
                Some(columns.greater_equal(&pad)?)
            } else {
                None
            };
            Positions::Rows {
                offsets: &offsets,
                mask: mask.as_ref(),
                valid: None,
            }
        };
        let logits = model.forward_rows(&tokens.reshape(&[rows, 1])?, &mut self.layers, at)?;
        self.idx += 1;
        Ok(logits.squeeze(1)?)
    }

    /// Logits `[rows, L, vocab]` for `L` tokens per row (`tokens`:
    /// `[rows, L]`, a speculative step's verification): row `b`'s query
    /// `i` attends to its columns up to the `i`-th new one, as `L` single
    /// steps would. Only for attention layers (a recurrent state could
    /// not give back the positions a verification rejects).
    pub fn step_many(&mut self, model: &Model, tokens: &Array) -> Result<Array> {
        if !model.trimmable() {
            return Err(EngineError::InvalidRequest(
                "a model with recurrent layers cannot verify several tokens per row".into(),
            ));
        }
        let rows = self.left_pad.len() as i32;
        let l = tokens.dim(1)?;
        let (offsets, mask);
        let at = if self.left_pad == [0] {
            Positions::Sequence { offset: self.idx }
        } else {
            let per_row: Vec<i32> = self.left_pad.iter().map(|p| self.idx - p).collect();
            offsets = Array::from_slice(&per_row, &[rows])?;
            let width = f64::from(self.idx + l);
            let key = mlx::arange(0.0, width, 1.0, Dtype::I32)?.reshape(&[1, 1, 1, -1])?;
            let query =
                mlx::arange(f64::from(self.idx), width, 1.0, Dtype::I32)?.reshape(&[1, 1, l, 1])?;
            let pad = Array::from_slice(&self.left_pad, &[rows, 1, 1, 1])?;
            mask = key
                .greater_equal(&pad)?
                .logical_and(&key.less_equal(&query)?)?;
            Positions::Rows {
                offsets: &offsets,
                mask: Some(&mask),
                valid: None,
            }
        };
        let logits = model.forward_rows(tokens, &mut self.layers, at)?;
        self.idx += l;
        Ok(logits)
    }

    /// Takes back the last `drop[b]` positions of each row `b` (the
    /// rejected tokens of a verification): the write column moves back by
    /// the least of them and the other rows shift right by the rest, their
    /// padding growing by as much. Attention layers only.
    pub fn trim_rows(&mut self, drop: &[i32]) -> Result<()> {
        if drop.len() != self.left_pad.len() {
            return Err(EngineError::InvalidRequest(format!(
                "{} row trims for a batch of {}",
                drop.len(),
                self.left_pad.len()
            )));
        }
        let least = drop.iter().copied().min().unwrap_or(0);
        let shift: Vec<i32> = drop.iter().map(|d| d - least).collect();
        for layer in &mut self.layers {
            match layer {
                BatchLayerCache::Kv(c) => c.trim_rows(least, &shift)?,
                BatchLayerCache::Recurrent(_) => {
                    return Err(EngineError::InvalidRequest(
                        "a recurrent state cannot be cut back to an earlier position".into(),
                    ));
                }
            }
        }
        self.idx = (self.idx - least).max(0);
        for (pad, s) in self.left_pad.iter_mut().zip(&shift) {
            *pad += s;
        }
        Ok(())
    }

    pub fn nbytes(&self) -> usize {
        self.layers.iter().map(BatchLayerCache::nbytes).sum()
    }
}
