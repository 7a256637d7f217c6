//! The prompt (prefix) cache: the keys and values of sequences that
//! finished, kept by their token ids, so that a new prompt starting with one
//! of them (a chat resending its history, a shared system prompt) skips the
//! prefill of that prefix. Entries are evicted least recently used first
//! when their bytes exceed the budget; an entry that is a prefix of a newer
//! one is dropped (the newer one serves every prompt it served).
//!
//! A hit is exact: keys and values of a position depend only on the tokens
//! up to it, so the reused positions hold what a cold prefill would compute
//! (up to float rounding from a different chunking of the same arithmetic).
//! A quantized KV cache (`kv_bits`) is kept as stored, packed codes with
//! their scales and biases, and its bytes counted so; a prompt that reuses
//! it attends over quantized positions where a cold prefill's first chunk
//! would not, so the two agree within the quantization's error.
//!
//! A model with recurrent (linear-attention) layers keeps, for those
//! layers, a snapshot of the state at the end of each entry: a state
//! cannot be cut back to an earlier position, so such a cache reuses an
//! entry only when the prompt starts with the entry's whole sequence (an
//! exact-boundary hit), and an entry a newer one extends stays (it is the
//! only one serving prompts that branch off at its end). The scheduler
//! keeps such a model's prompts when their prefill ends as well as its
//! sequences when they end: a prompt sent again (a retry, a regenerated
//! answer) hits the first, the next turn of a chat resending its history
//! and the answer the second.
//!
//! A second tier on disk ([`DiskTier`], attached with
//! [`PrefixCache::attach_disk`]) takes every entry the memory tier takes
//! and outlives the process; a prompt that finds a longer prefix there
//! than in memory reads it back into memory.

mod disk;
mod files;
mod format;

pub use disk::{DiskConfig, DiskTier, MAX_PENDING, ModelIdentity, PUMP_BYTES};

use crate::error::Result;
use crate::model::{Cache, LayerSnapshot};

/// Reused prefixes shorter than this are not worth a lookup's copies.
pub const MIN_REUSE: usize = 16;

struct Entry {
    ids: Vec<u32>,
    /// Per layer, its cache of `ids` (KV `[1, H, ids.len(), D]` or the
    /// recurrent state at the end).
    layers: Vec<LayerSnapshot>,
    bytes: usize,
    last_used: u64,
}

/// A memory-bounded LRU map from token sequences to their caches.
pub struct PrefixCache {
    entries: Vec<Entry>,
    /// Whether every layer's cache can serve a prefix of its entry.
    trimmable: bool,
    budget: usize,
    used: usize,
    clock: u64,
    disk: Option<DiskTier>,
}

/// A prompt's cached prefix, as caches to prefill the rest into.
pub struct Hit {
    /// Prompt tokens whose KV is already in `caches`.
    pub tokens: usize,
    pub caches: Vec<Cache>,
}

/// Length of the longest common prefix.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl PrefixCache {
    /// A cache of at most `budget` bytes (0 disables it) for a model whose
    /// caches are all KV (`trimmable`: an entry serves any prefix of
    /// itself) or not (an entry serves only prompts it is a prefix of).
    pub fn new(budget: usize, trimmable: bool) -> PrefixCache {
        PrefixCache {
            entries: Vec::new(),
            trimmable,
            budget,
            used: 0,
            clock: 0,
            disk: None,
        }
    }

    /// Adds the disk tier: entries are written to it as they are kept, and
    /// prompts are looked up in it when memory has no longer prefix.
    pub fn attach_disk(&mut self, tier: DiskTier) {
        self.disk = Some(tier);
    }

    /// Reads the bytes of entries staged for the disk tier and hands them
    /// to its writer ([`DiskTier::pump`]): when the step they were queued
    /// behind has been read (a share of them), or when nothing runs (`all`).
    pub fn pump_disk(&mut self, all: bool) {
        if let Some(disk) = &mut self.disk {
            disk.pump(if all { u64::MAX } else { PUMP_BYTES });
        }
    }

    /// The disk tier, if attached.
    pub fn disk(&self) -> Option<&DiskTier> {
        self.disk.as_ref()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.used
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The prefix of `ids` entry `e` can serve (0: none).
    fn reusable(&self, e: &Entry, ids: &[u32]) -> usize {
        let n = common_prefix(&e.ids, ids);
        if n < MIN_REUSE || (!self.trimmable && n != e.ids.len()) {
            return 0;
        }
        n
    }

    /// Whether a lookup of `ids` would hit (nothing is touched).
    pub fn covers(&self, ids: &[u32]) -> bool {
        self.entries.iter().any(|e| self.reusable(e, ids) > 0)
            || self.disk.as_ref().is_some_and(|d| d.best(ids).is_some())
    }

    /// The longest cached prefix of `ids` (at least `MIN_REUSE` tokens),
    /// as fresh caches holding it.
    pub fn lookup(&mut self, ids: &[u32]) -> Result<Option<Hit>> {
        self.clock += 1;
        let best = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (self.reusable(e, ids), i))
            .filter(|(n, _)| *n > 0)
            .max_by_key(|(n, _)| *n);
        let from_disk = self.disk.as_ref().and_then(|d| d.best(ids));
        if let Some((n, at)) = from_disk
            && best.is_none_or(|(m, _)| n > m)
            && let Some(hit) = self.load_from_disk(n, at)?
        {
            return Ok(Some(hit));
        }
        let Some((tokens, at)) = best else {
            return Ok(None);
        };
        let entry = &mut self.entries[at];
        entry.last_used = self.clock;
        let (len, total) = (tokens as i32, entry.ids.len() as i32);
        let caches = entry
            .layers
            .iter()
            .map(|l| l.to_cache(len, total))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Hit { tokens, caches }))
    }

    /// Keeps `layers` (per layer, sharing no memory with anything that
    /// will be written) as the caches of `ids`.
    pub fn insert(&mut self, ids: Vec<u32>, layers: Vec<LayerSnapshot>) {
        if ids.len() < MIN_REUSE {
            return;
        }
        if let Some(disk) = &mut self.disk
            && let Err(e) = disk.store(&ids, &layers)
        {
            tracing::warn!("prompt cache entry not written to disk: {e}");
        }
        self.keep(ids, layers);
    }

    /// A hit of the first `tokens` positions of disk entry `at`, which
    /// memory keeps from now on; `None` when its file is unusable.
    fn load_from_disk(&mut self, tokens: usize, at: usize) -> Result<Option<Hit>> {
        let Some((ids, layers)) = self.disk.as_mut().and_then(|d| d.load(at)) else {
            return Ok(None);
        };
        let (len, total) = (tokens as i32, ids.len() as i32);
        let caches = layers
            .iter()
            .map(|l| l.to_cache(len, total))
            .collect::<Result<Vec<_>>>()?;
        self.keep(ids, layers);
        Ok(Some(Hit { tokens, caches }))
    }

    /// Keeps an entry in memory.
    fn keep(&mut self, ids: Vec<u32>, layers: Vec<LayerSnapshot>) {
        let bytes: usize = layers.iter().map(LayerSnapshot::nbytes).sum();
        if bytes > self.budget {
            return;
        }
        // Already covered by a longer (or equal) entry: refresh it instead
        // (with recurrent layers only an equal one serves the same prompts).
        self.clock += 1;
        let trimmable = self.trimmable;
        if let Some(e) = self.entries.iter_mut().find(|e| {
            let longer = if trimmable {
                e.ids.len() >= ids.len()
            } else {
                e.ids.len() == ids.len()
            };
            longer && e.ids[..ids.len()] == ids[..]
        }) {
            e.last_used = self.clock;
            return;
        }
        // Entries this one extends serve nothing it doesn't (with KV only).
        let mut freed = 0;
        self.entries.retain(|e| {
            let covered = trimmable && e.ids.len() <= ids.len() && ids[..e.ids.len()] == e.ids[..];
            if covered {
                freed += e.bytes;
            }
            !covered
        });
        self.used -= freed;
        while self.used + bytes > self.budget {
            let Some(oldest) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i)
            else {
                break;
            };
            self.used -= self.entries.swap_remove(oldest).bytes;
        }
        self.used += bytes;
        self.entries.push(Entry {
            ids,
            layers,
            bytes,
            last_used: self.clock,
        });
    }

    /// Drops every entry in memory (the disk tier keeps its own).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.used = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KvArray;
    use mlx::Array;

    fn layer(len: usize, fill: f32) -> Vec<LayerSnapshot> {
        let data = vec![fill; len * 2];
        let a = Array::from_slice(&data, &[1, 1, len as i32, 2]).unwrap();
        vec![LayerSnapshot::Kv(
            KvArray::Full(a.clone()),
            KvArray::Full(a),
            None,
        )]
    }

    /// A KV layer and a recurrent layer (whose size does not grow).
    fn hybrid(len: usize, fill: f32) -> Vec<LayerSnapshot> {
        let mut layers = layer(len, fill);
        let conv = Array::from_slice(&[fill; 6], &[1, 3, 2]).unwrap();
        let state = Array::from_slice(&[fill; 8], &[1, 2, 2, 2]).unwrap();
        layers.push(LayerSnapshot::Recurrent(conv, state));
        layers
    }

    fn ids(range: std::ops::Range<u32>) -> Vec<u32> {
        range.collect()
    }

    #[test]
    fn the_longest_common_prefix_is_reused() {
        let mut cache = PrefixCache::new(1 << 20, true);
        cache.insert(ids(0..40), layer(40, 1.0));
        cache.insert(ids(100..160), layer(60, 2.0));
        let mut prompt = ids(0..30);
        prompt.extend(500..510);
        let hit = cache.lookup(&prompt).unwrap().unwrap();
        assert_eq!(hit.tokens, 30);
        assert_eq!(hit.caches[0].offset(), 30);
        let Cache::Kv(kv) = &hit.caches[0] else {
            panic!("a KV layer's hit is a KV cache");
        };
        let (k, _) = kv.filled().unwrap().unwrap();
        let k = k.to_full().unwrap();
        assert!(k.to_vec::<f32>().unwrap().iter().all(|&x| x == 1.0));
        // Too short a match is a miss.
        assert!(cache.lookup(&ids(100..110)).unwrap().is_none());
        assert!(cache.lookup(&ids(7..50)).unwrap().is_none());
    }

    #[test]
    fn an_extended_sequence_replaces_its_prefix_and_lru_bounds_bytes() {
        // Each position: 2 arrays x 2 floats x 4 bytes = 16 bytes.
        let mut cache = PrefixCache::new(16 * 100, true);
        cache.insert(ids(0..40), layer(40, 1.0));
        cache.insert(ids(0..60), layer(60, 1.0));
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.bytes(), 16 * 60);
        // A prefix of an entry adds nothing.
        cache.insert(ids(0..20), layer(20, 1.0));
        assert_eq!(cache.len(), 1);
        // Over budget: the least recently used goes.
        cache.insert(ids(1000..1030), layer(30, 1.0));
        cache.lookup(&ids(0..60)).unwrap().unwrap();
        cache.insert(ids(2000..2030), layer(30, 1.0));
        assert_eq!(cache.bytes(), 16 * 90);
        assert!(cache.lookup(&ids(1000..1030)).unwrap().is_none());
        assert!(cache.lookup(&ids(0..60)).unwrap().is_some());
        // Larger than the whole budget: not kept.
        cache.insert(ids(5000..5200), layer(200, 1.0));
        assert!(cache.lookup(&ids(5000..5200)).unwrap().is_none());
    }

    #[test]
    fn a_recurrent_state_is_reused_only_at_its_entry_boundary() {
        let mut cache = PrefixCache::new(1 << 20, false);
        cache.insert(ids(0..40), hybrid(40, 1.0));
        // A prompt continuing the whole entry: a hit of all 40 positions.
        let hit = cache.lookup(&ids(0..50)).unwrap().unwrap();
        assert_eq!(hit.tokens, 40);
        assert_eq!(hit.caches.len(), 2);
        assert!(hit.caches.iter().all(|c| c.offset() == 40));
        // Branching off inside the entry: the state cannot be cut back.
        let mut branch = ids(0..30);
        branch.extend(500..520);
        assert!(!cache.covers(&branch));
        assert!(cache.lookup(&branch).unwrap().is_none());
        // An extension keeps the shorter entry: both boundaries serve.
        cache.insert(ids(0..60), hybrid(60, 2.0));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.lookup(&ids(0..45)).unwrap().unwrap().tokens, 40);
        assert_eq!(cache.lookup(&ids(0..70)).unwrap().unwrap().tokens, 60);
        // A snapshot of 40 positions does not make a cache of 30.
        assert!(hybrid(40, 1.0)[1].to_cache(30, 40).is_err());
    }
}
