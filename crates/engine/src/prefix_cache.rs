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

use mlx::Array;

use crate::error::Result;
use crate::model::KvCache;

/// Reused prefixes shorter than this are not worth a lookup's copies.
const MIN_REUSE: usize = 16;

struct Entry {
    ids: Vec<u32>,
    /// Per layer, keys and values `[1, H, ids.len(), D]`.
    layers: Vec<(Array, Array)>,
    bytes: usize,
    last_used: u64,
}

/// A memory-bounded LRU map from token sequences to their KV.
pub struct PrefixCache {
    entries: Vec<Entry>,
    budget: usize,
    used: usize,
    clock: u64,
}

/// A prompt's cached prefix, as caches to prefill the rest into.
pub struct Hit {
    /// Prompt tokens whose KV is already in `caches`.
    pub tokens: usize,
    pub caches: Vec<KvCache>,
}

/// Length of the longest common prefix.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl PrefixCache {
    /// A cache of at most `budget` bytes (0 disables it).
    pub fn new(budget: usize) -> PrefixCache {
        PrefixCache {
            entries: Vec::new(),
            budget,
            used: 0,
            clock: 0,
        }
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

    /// Whether a lookup of `ids` would hit (nothing is touched).
    pub fn covers(&self, ids: &[u32]) -> bool {
        self.entries
            .iter()
            .any(|e| common_prefix(&e.ids, ids) >= MIN_REUSE)
    }

    /// The longest cached prefix of `ids` (at least `MIN_REUSE` tokens),
    /// as fresh caches holding it.
    pub fn lookup(&mut self, ids: &[u32]) -> Result<Option<Hit>> {
        self.clock += 1;
        let best = self
            .entries
            .iter_mut()
            .map(|e| (common_prefix(&e.ids, ids), e))
            .filter(|(n, _)| *n >= MIN_REUSE)
            .max_by_key(|(n, _)| *n);
        let Some((tokens, entry)) = best else {
            return Ok(None);
        };
        entry.last_used = self.clock;
        let len = tokens as i32;
        let caches = entry
            .layers
            .iter()
            .map(|(k, v)| KvCache::from_prefix(k.slice_axis(2, 0, len)?, v.slice_axis(2, 0, len)?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Hit { tokens, caches }))
    }

    /// Keeps `layers` (per layer `[1, H, ids.len(), D]`, sharing no memory
    /// with anything that will be written) as the KV of `ids`.
    pub fn insert(&mut self, ids: Vec<u32>, layers: Vec<(Array, Array)>) {
        let bytes: usize = layers.iter().map(|(k, v)| k.nbytes() + v.nbytes()).sum();
        if ids.len() < MIN_REUSE || bytes > self.budget {
            return;
        }
        // Already covered by a longer (or equal) entry: refresh it instead.
        self.clock += 1;
        if let Some(e) = self
            .entries
            .iter_mut()
            .find(|e| e.ids.len() >= ids.len() && e.ids[..ids.len()] == ids[..])
        {
            e.last_used = self.clock;
            return;
        }
        // Entries this one extends serve nothing it doesn't.
        let mut freed = 0;
        self.entries.retain(|e| {
            let covered = e.ids.len() <= ids.len() && ids[..e.ids.len()] == e.ids[..];
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

    /// Drops every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.used = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(len: usize, fill: f32) -> Vec<(Array, Array)> {
        let data = vec![fill; len * 2];
        let a = Array::from_slice(&data, &[1, 1, len as i32, 2]).unwrap();
        vec![(a.clone(), a)]
    }

    fn ids(range: std::ops::Range<u32>) -> Vec<u32> {
        range.collect()
    }

    #[test]
    fn the_longest_common_prefix_is_reused() {
        let mut cache = PrefixCache::new(1 << 20);
        cache.insert(ids(0..40), layer(40, 1.0));
        cache.insert(ids(100..160), layer(60, 2.0));
        let mut prompt = ids(0..30);
        prompt.extend(500..510);
        let hit = cache.lookup(&prompt).unwrap().unwrap();
        assert_eq!(hit.tokens, 30);
        assert_eq!(hit.caches[0].offset(), 30);
        let (k, _) = hit.caches[0].filled().unwrap().unwrap();
        assert!(k.to_vec::<f32>().unwrap().iter().all(|&x| x == 1.0));
        // Too short a match is a miss.
        assert!(cache.lookup(&ids(100..110)).unwrap().is_none());
        assert!(cache.lookup(&ids(7..50)).unwrap().is_none());
    }

    #[test]
    fn an_extended_sequence_replaces_its_prefix_and_lru_bounds_bytes() {
        // Each position: 2 arrays x 2 floats x 4 bytes = 16 bytes.
        let mut cache = PrefixCache::new(16 * 100);
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
}
