//! The prompt cache's second tier, on disk: entries that outlive the
//! worker (a crash, an idle unload, a daemon restart), as llama.cpp's slot
//! save/restore keeps a slot's cache in a file.
//!
//! Every entry the memory tier takes is also written here (write-through:
//! a worker killed without warning leaves its entries behind), one file
//! per token sequence, named by a hash of the model identity and the token
//! ids, in a folder of the model's own (`<dir>/<model identity>/`). With
//! KV only, an entry that shares a prefix with one on disk (the next turn
//! of a chat, which shares the history up to where the answer was
//! re-tokenized) holds only the positions past that prefix and names that
//! one its parent: each turn writes what it added, and a hit reads the
//! chain, root first, each file's positions after the prefix it takes of
//! the ones before. The index
//! (the token ids of every file, its parent, size and last use) is kept
//! in memory, built at start from the files' headers; a prompt the memory
//! tier misses is looked up in it for the longest stored prefix, under the
//! memory tier's rules (with recurrent layers, only an entry's whole
//! sequence), and a hit is read, checked and handed back to the memory
//! tier.
//!
//! An entry is indexed and staged when kept; the engine thread reads its
//! arrays' bytes out later (MLX arrays are evaluated on the thread that
//! builds them), when the scheduler has read the step they were queued
//! behind, so that the copy waits for no computation and the next step
//! already runs ([`DiskTier::pump`], [`PUMP_BYTES`] between two steps);
//! hashing, writing (to a temporary file renamed into place, so a file
//! is whole or absent) and deleting happen on a writer thread. A write is
//! skipped, never waited for, when the writes queued would hold more than
//! [`MAX_PENDING`] bytes with it (one write of any size is always taken
//! when none is queued). A hit is read and checked on the engine thread:
//! it replaces a prefill that costs more.
//!
//! Each file carries a SHA-256 of its header (model identity, token ids,
//! dtypes, shapes) and arrays ([`format`](super::format)); a file of
//! another model, truncated, misnamed or whose checksum fails is logged,
//! deleted (with the entries extending it) and treated as a miss. The
//! folder's bytes stay within the budget: every write first deletes the
//! least recently used entries (last use is the file's modification time,
//! refreshed along the whole chain on a hit) until it fits, never one the
//! new entry extends. The folder of a checkpoint that changed (or of an
//! older mlxd, whose identity differs) is left as it is: no worker opens
//! it again.

use std::collections::{HashSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::SystemTime;

use mlx::{Array, Dtype};
use sha2::{Digest, Sha256};

use super::files::{self, EXT, Job};
use super::format;
use crate::error::{EngineError, Result};
use crate::model::{KvArray, LayerSnapshot};

/// Bytes of writes queued beyond which a new write is dropped rather than
/// holding more memory.
pub const MAX_PENDING: u64 = 2 << 30;

/// What identifies a checkpoint: a hash of its configuration and of its
/// weight files' names, sizes and modification times (a changed or
/// replaced checkpoint is another model), and of the cache format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModelIdentity([u8; 32]);

impl ModelIdentity {
    /// The identity of the checkpoint in folder `dir` (or the file `dir`,
    /// a GGUF).
    pub fn of_path(dir: &Path) -> std::io::Result<ModelIdentity> {
        let mut h = Sha256::new();
        h.update(format::MAGIC);
        h.update(env!("CARGO_PKG_VERSION").as_bytes());
        let mut files: Vec<PathBuf> = if dir.is_dir() {
            fs::read_dir(dir)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect()
        } else {
            vec![dir.to_path_buf()]
        };
        files.sort();
        for path in files {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name == "config.json" {
                h.update(b"config");
                h.update(fs::read(&path)?);
            } else if name.ends_with(".safetensors") || name.ends_with(".gguf") {
                let meta = fs::metadata(&path)?;
                let mtime = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                h.update(name.as_bytes());
                h.update(meta.len().to_le_bytes());
                h.update(mtime.to_le_bytes());
            }
        }
        Ok(ModelIdentity(h.finalize().into()))
    }

    /// An identity given by its bytes (a model that has no folder).
    pub fn from_bytes(bytes: [u8; 32]) -> ModelIdentity {
        ModelIdentity(bytes)
    }

    pub fn hex(&self) -> String {
        hex(&self.0)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where and how much the disk tier keeps.
#[derive(Debug, Clone)]
pub struct DiskConfig {
    /// The folder shared by all models; each model's entries go in a
    /// folder of its own under it.
    pub dir: PathBuf,
    /// Bytes the model's folder may hold.
    pub budget: u64,
    pub model: ModelIdentity,
}

struct DiskEntry {
    ids: Vec<u32>,
    name: String,
    /// The entry whose first `start` positions this one's come after
    /// (`None`: a whole entry, `start` 0).
    parent: Option<String>,
    start: usize,
    bytes: u64,
    last_used: u64,
    /// The writer's job that writes it (the file exists once the writer
    /// finished it); [`STAGED`] until its bytes are read.
    job: u64,
}

/// The job of an entry whose bytes are not read yet.
const STAGED: u64 = u64::MAX;

/// Bytes of staged entries the scheduler has [`DiskTier::pump`] read
/// between two decode steps (whole arrays: at least one).
pub const PUMP_BYTES: u64 = 64 << 20;

/// An entry indexed whose arrays are still to be read.
struct Staged {
    name: String,
    head: Vec<u8>,
    /// Its arrays not read yet, in the header's order.
    arrays: VecDeque<Array>,
    /// The bytes of those read.
    payload: Vec<Vec<u8>>,
    bytes: u64,
}

/// The disk tier of one model's prompt cache.
pub struct DiskTier {
    dir: PathBuf,
    model: String,
    budget: u64,
    trimmable: bool,
    entries: Vec<DiskEntry>,
    used: u64,
    clock: u64,
    jobs: u64,
    /// Jobs the writer finished.
    done: Arc<AtomicU64>,
    /// Payload bytes of writes queued.
    pending: Arc<AtomicU64>,
    staged: VecDeque<Staged>,
    /// Payload bytes of `staged`.
    staged_bytes: u64,
    tx: Option<mpsc::Sender<(u64, Job)>>,
    writer: Option<JoinHandle<()>>,
}

/// Length of the longest common prefix.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The file name of the entry of `ids` for `model` (hex identity).
pub fn entry_name(model: &str, ids: &[u32]) -> String {
    let mut h = Sha256::new();
    h.update(model.as_bytes());
    for id in ids {
        h.update(id.to_le_bytes());
    }
    format!("{}.{EXT}", &hex(&h.finalize())[..40])
}

/// Positions `start..` of a whole entry's KV layers (`None` when a layer
/// is not KV): new arrays, scheduled, that share no memory with it.
fn tail(layers: &[LayerSnapshot], start: usize) -> Result<Option<Vec<LayerSnapshot>>> {
    let mut out = Vec::with_capacity(layers.len());
    for layer in layers {
        let LayerSnapshot::Kv(k, v, quant) = layer else {
            return Ok(None);
        };
        let at = mlx::arange(start as f64, f64::from(k.dim(2)?), 1.0, Dtype::I32)?;
        out.push(LayerSnapshot::Kv(k.take(&at, 2)?, v.take(&at, 2)?, *quant));
    }
    let arrays: Vec<&Array> = out.iter().flat_map(LayerSnapshot::arrays).collect();
    mlx::async_eval(&arrays)?;
    Ok(Some(out))
}

/// The layers of a chain of entries, root first, each with the position
/// it starts at: per KV layer, each part's keys and values after the first
/// `start` positions of the parts before.
fn join(parts: Vec<(usize, Vec<LayerSnapshot>)>) -> mlx::Result<Vec<LayerSnapshot>> {
    let mut parts = parts.into_iter();
    let Some((_, mut joined)) = parts.next() else {
        return Ok(Vec::new());
    };
    for (start, part) in parts {
        let start = start as i32;
        joined = joined
            .iter()
            .zip(part)
            .map(|(before, own)| match (before, own) {
                (
                    LayerSnapshot::Kv(KvArray::Full(k0), KvArray::Full(v0), None),
                    LayerSnapshot::Kv(KvArray::Full(k), KvArray::Full(v), None),
                ) => {
                    let (k0, v0) = (k0.slice_axis(2, 0, start)?, v0.slice_axis(2, 0, start)?);
                    Ok(LayerSnapshot::Kv(
                        KvArray::Full(mlx::concatenate(&[&k0, &k], 2)?),
                        KvArray::Full(mlx::concatenate(&[&v0, &v], 2)?),
                        None,
                    ))
                }
                _ => Err(mlx::MlxError::InvalidArgument(
                    "a chain of prompt-cache entries holds a recurrent or quantized layer".into(),
                )),
            })
            .collect::<mlx::Result<_>>()?;
    }
    Ok(joined)
}

impl DiskTier {
    /// Opens (creating) the model's folder, indexes its entries (deleting
    /// what is not an entry of this model) and starts the writer.
    pub fn open(config: DiskConfig, trimmable: bool) -> Result<DiskTier> {
        let model = config.model.hex();
        let dir = config.dir.join(&model[..32]);
        fs::create_dir_all(&dir).map_err(|e| EngineError::io(&dir, e))?;
        let mut scanned = files::scan(&dir, &model)?;
        scanned.sort_by_key(|s| s.mtime);
        let (done, pending) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (tx, rx) = mpsc::channel();
        let writer = {
            let (at, done, pending) = (dir.clone(), done.clone(), pending.clone());
            std::thread::Builder::new()
                .name("prompt-cache-writer".into())
                .spawn(move || files::write_loop(&at, &rx, &done, &pending))
                .map_err(|e| EngineError::io(&dir, e))?
        };
        let mut tier = DiskTier {
            dir,
            model,
            budget: config.budget,
            trimmable,
            entries: Vec::new(),
            used: 0,
            clock: 0,
            jobs: 0,
            done,
            pending,
            staged: VecDeque::new(),
            staged_bytes: 0,
            tx: Some(tx),
            writer: Some(writer),
        };
        for found in scanned {
            tier.clock += 1;
            tier.used += found.bytes;
            tier.entries.push(DiskEntry {
                ids: found.ids,
                name: found.name,
                parent: found.parent,
                start: found.start,
                bytes: found.bytes,
                last_used: tier.clock,
                job: 0,
            });
        }
        tier.drop_orphans();
        tier.evict_to(tier.budget, &HashSet::new());
        tracing::info!(
            dir = %tier.dir.display(),
            entries = tier.entries.len(),
            mb = tier.used >> 20,
            "prompt cache on disk"
        );
        Ok(tier)
    }

    /// The model's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of the entries indexed (written or queued).
    pub fn bytes(&self) -> u64 {
        self.used
    }

    /// Entries indexed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The prefix of `ids` entry `e` serves (0: none).
    fn reusable(&self, e: &DiskEntry, ids: &[u32]) -> usize {
        let n = common_prefix(&e.ids, ids);
        if n < super::MIN_REUSE || (!self.trimmable && n != e.ids.len()) {
            return 0;
        }
        n
    }

    /// The longest prefix of `ids` an entry serves, and that entry.
    pub fn best(&self, ids: &[u32]) -> Option<(usize, usize)> {
        self.entries
            .iter()
            .enumerate()
            .map(|(i, e)| (self.reusable(e, ids), i))
            .filter(|(n, _)| *n > 0)
            .max_by_key(|(n, _)| *n)
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.name == name)
    }

    /// Entry `at` and its ancestors, root first; `None` when one is gone.
    fn chain(&self, at: usize) -> Option<Vec<usize>> {
        let mut chain = vec![at];
        while let Some(parent) = &self.entries[*chain.last()?].parent {
            chain.push(self.position(parent)?);
        }
        chain.reverse();
        Some(chain)
    }

    /// Marks the entries `chain` used now (their files' mtimes too).
    fn touch(&mut self, chain: &[usize]) {
        self.clock += 1;
        for &i in chain {
            self.entries[i].last_used = self.clock;
            let name = self.entries[i].name.clone();
            self.send(Job::Touch(name));
        }
    }

    /// Reads entry `at` (from [`DiskTier::best`]) and the entries it
    /// extends: its token ids and layers; `None` when one is still being
    /// written, or (the entry dropped, its file deleted) when a file is
    /// missing, corrupt or not this model's entry of those ids.
    pub fn load(&mut self, at: usize) -> Option<(Vec<u32>, Vec<LayerSnapshot>)> {
        if at >= self.entries.len() {
            return None;
        }
        let Some(chain) = self.chain(at) else {
            self.remove(at);
            return None;
        };
        let done = self.done.load(Ordering::Acquire);
        if chain.iter().any(|&i| self.entries[i].job > done) {
            // Still being written: a miss this time.
            return None;
        }
        let mut parts = Vec::with_capacity(chain.len());
        for &i in &chain {
            match self.read(i) {
                Ok(layers) => parts.push((self.entries[i].start, layers)),
                Err(why) => {
                    let file = self.dir.join(&self.entries[i].name);
                    tracing::warn!(file = %file.display(), "prompt cache entry dropped: {why}");
                    self.remove(i);
                    return None;
                }
            }
        }
        let layers = match join(parts) {
            Ok(layers) => layers,
            Err(why) => {
                tracing::warn!(file = %self.entries[at].name, "prompt cache entry dropped: {why}");
                self.remove(at);
                return None;
            }
        };
        tracing::debug!(
            tokens = self.entries[at].ids.len(),
            files = chain.len(),
            "prompt cache hit on disk"
        );
        self.touch(&chain);
        Some((self.entries[at].ids.clone(), layers))
    }

    /// The layers of entry `i`'s own file, checked.
    fn read(&self, i: usize) -> std::result::Result<Vec<LayerSnapshot>, String> {
        let e = &self.entries[i];
        let start = e.start;
        let bytes = fs::read(self.dir.join(&e.name)).map_err(|err| format!("reading: {err}"))?;
        let (header, layers) = format::decode(&bytes)?;
        if header.model != self.model
            || header.tokens != e.ids
            || header.start != start
            || header.parent != e.parent
        {
            return Err("its header names other tokens or another model".into());
        }
        let positions = (e.ids.len() - start) as i32;
        let kv_positions = |l: &LayerSnapshot| match l {
            LayerSnapshot::Kv(k, ..) => k.dim(2).ok() == Some(positions),
            LayerSnapshot::Recurrent(..) => start == 0,
        };
        if !layers.iter().all(kv_positions) {
            return Err("its arrays do not hold its positions".into());
        }
        Ok(layers)
    }

    /// Indexes `layers`, the caches of `ids`, to be written, unless an
    /// entry already serves every prompt it would; with KV only, as the
    /// positions past the longest entry it extends. Drops, to stay within
    /// the budget, the least recently used entries (never that one's
    /// chain). Nothing is read or written here: [`DiskTier::pump`] reads
    /// the arrays' bytes later (when they are computed), the writer writes
    /// them.
    pub fn store(&mut self, ids: &[u32], layers: &[LayerSnapshot]) -> Result<()> {
        // Entries hold full-precision arrays only (the configuration
        // refuses a disk tier beside a quantized KV cache).
        let quantized = |l: &LayerSnapshot| matches!(l, LayerSnapshot::Kv(k, v, q) if q.is_some() || k.is_quantized() || v.is_quantized());
        if layers.iter().any(quantized) {
            return Ok(());
        }
        let trimmable = self.trimmable;
        let covering = self.entries.iter().position(|e| {
            let longer = if trimmable {
                e.ids.len() >= ids.len()
            } else {
                e.ids.len() == ids.len()
            };
            longer && e.ids[..ids.len()] == ids[..]
        });
        if let Some(at) = covering {
            if let Some(chain) = self.chain(at) {
                self.touch(&chain);
            }
            return Ok(());
        }
        // The entry sharing the longest prefix: this one's parent.
        let parent = trimmable
            .then(|| {
                self.entries
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (common_prefix(&e.ids, ids), i))
                    .filter(|(n, _)| *n >= super::MIN_REUSE)
                    .max_by_key(|(n, _)| *n)
                    .and_then(|(n, i)| Some((n, self.chain(i)?)))
            })
            .flatten();
        let delta = match &parent {
            Some((start, _)) => tail(layers, *start)?,
            None => None,
        };
        let (start, layers, keep, parent) = match (delta, parent) {
            (Some(delta), Some((start, chain))) => {
                let keep: HashSet<String> = chain
                    .iter()
                    .map(|&i| self.entries[i].name.clone())
                    .collect();
                let name = chain.last().map(|&p| self.entries[p].name.clone());
                self.touch(&chain);
                (start, delta, keep, name)
            }
            _ => (0, layers.to_vec(), HashSet::new(), None),
        };
        let payload: u64 = layers.iter().map(|l| l.nbytes() as u64).sum();
        let queued = self.pending.load(Ordering::Acquire) + self.staged_bytes;
        if payload > self.budget || (queued > 0 && queued + payload > MAX_PENDING) {
            tracing::debug!(tokens = ids.len(), "prompt cache entry not written to disk");
            return Ok(());
        }
        let head = format::header(&self.model, ids, start, parent.as_deref(), &layers)?;
        let bytes = (format::PREAMBLE + head.len()) as u64 + payload;
        if bytes > self.budget || !self.evict_to(self.budget - bytes, &keep) {
            return Ok(());
        }
        if parent.as_ref().is_some_and(|p| self.position(p).is_none()) {
            // Its parent went with entries the eviction dropped.
            return Ok(());
        }
        let name = entry_name(&self.model, ids);
        self.clock += 1;
        self.used += bytes;
        self.entries.push(DiskEntry {
            ids: ids.to_vec(),
            name: name.clone(),
            parent,
            start,
            bytes,
            last_used: self.clock,
            job: STAGED,
        });
        self.staged_bytes += payload;
        self.staged.push_back(Staged {
            name,
            head,
            arrays: layers.iter().flat_map(|l| l.arrays()).cloned().collect(),
            payload: Vec::new(),
            bytes: payload,
        });
        Ok(())
    }

    /// Reads the bytes of staged entries (array by array, until `limit`
    /// bytes are read) and hands them to the writer: on the engine thread,
    /// when their arrays are computed (after the step they were queued
    /// behind was read), so that reading them waits for nothing else.
    pub fn pump(&mut self, limit: u64) {
        let mut read = 0;
        while read < limit {
            let Some(st) = self.staged.front_mut() else {
                return;
            };
            let Some(at) = self
                .entries
                .iter()
                .position(|e| e.name == st.name && e.job == STAGED)
            else {
                // Evicted or replaced before it was written.
                self.drop_staged();
                continue;
            };
            let Some(array) = st.arrays.pop_front() else {
                let Some(st) = self.staged.pop_front() else {
                    return;
                };
                self.staged_bytes -= st.bytes;
                self.pending.fetch_add(st.bytes, Ordering::AcqRel);
                let head = format::frame(&st.head, &st.payload);
                let job = self.send(Job::Write {
                    name: st.name,
                    head,
                    payload: st.payload,
                });
                self.entries[at].job = job;
                continue;
            };
            match array.to_bytes() {
                Ok(bytes) => {
                    read += bytes.len() as u64;
                    st.payload.push(bytes);
                }
                Err(e) => {
                    tracing::warn!("prompt cache entry not written to disk: {e}");
                    self.remove(at);
                    self.drop_staged();
                }
            }
        }
    }

    /// Forgets the first staged entry.
    fn drop_staged(&mut self) {
        if let Some(st) = self.staged.pop_front() {
            self.staged_bytes -= st.bytes;
        }
    }

    /// Deletes entry `at` and every entry that extends it.
    fn remove(&mut self, at: usize) {
        let e = self.entries.swap_remove(at);
        self.used -= e.bytes;
        self.send(Job::Delete(e.name));
        self.drop_orphans();
    }

    /// Deletes every entry whose parent is gone or does not hold the
    /// positions it takes (to a fixed point: their children go too).
    fn drop_orphans(&mut self) {
        loop {
            let orphan = self.entries.iter().position(|e| {
                e.parent.as_ref().is_some_and(|p| {
                    self.entries.iter().find(|q| &q.name == p).is_none_or(|q| {
                        q.ids.len() < e.start || q.ids[..e.start] != e.ids[..e.start]
                    })
                })
            });
            let Some(orphan) = orphan else {
                return;
            };
            let e = self.entries.swap_remove(orphan);
            tracing::debug!(file = %e.name, "prompt cache entry dropped: its parent is gone");
            self.used -= e.bytes;
            self.send(Job::Delete(e.name));
        }
    }

    /// Deletes least recently used entries (and those extending them), none
    /// named in `keep`, until at most `budget` bytes are left; false when
    /// that cannot be done.
    fn evict_to(&mut self, budget: u64, keep: &HashSet<String>) -> bool {
        while self.used > budget {
            let Some(oldest) = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| !keep.contains(&e.name))
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i)
            else {
                return false;
            };
            self.remove(oldest);
        }
        true
    }

    /// Queues a job; its number.
    fn send(&mut self, job: Job) -> u64 {
        self.jobs += 1;
        if let Some(tx) = &self.tx
            && tx.send((self.jobs, job)).is_err()
        {
            tracing::warn!("the prompt cache writer has stopped");
        }
        self.jobs
    }

    /// Writes every entry staged and waits until the writer is done
    /// (tests; shutdown).
    pub fn flush(&mut self) {
        self.pump(u64::MAX);
        while self.done.load(Ordering::Acquire) < self.jobs {
            if self.writer.as_ref().is_none_or(JoinHandle::is_finished) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

impl Drop for DiskTier {
    /// Lets the writer finish what was queued (a worker exiting in order
    /// keeps its last entries).
    fn drop(&mut self) {
        self.pump(u64::MAX);
        self.tx = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}
