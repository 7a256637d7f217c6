//! The prompt cache's second tier, on disk: entries that outlive the
//! worker (a crash, an idle unload, a daemon restart), as llama.cpp's slot
//! save/restore keeps a slot's cache in a file.
//!
//! Every entry the memory tier takes is also written here (write-through:
//! a worker killed without warning leaves its entries behind), one file
//! per token sequence, named by a hash of the model identity and the token
//! ids, in a folder of the model's own (`<dir>/<model identity>/`). The
//! index (the token ids of every file, its size and last use) is kept in
//! memory, built at start from the files' headers; a prompt the memory
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
//! is whole or absent) and deleting happen on a writer thread. A write is skipped, never waited for, when the
//! writes queued would hold more than [`MAX_PENDING`] bytes with it (one
//! write of any size is always taken when none is queued). A hit is read
//! and checked on the engine thread: it replaces a prefill that costs
//! more.
//!
//! The folder of a checkpoint that changed (or of an older mlxd, whose
//! identity differs) is left as it is: no worker opens it again.
//!
//! Each file carries a SHA-256 of its header (model identity, token ids,
//! dtypes, shapes) and arrays ([`format`](super::format)); a file of
//! another model, truncated, or whose checksum fails is logged, deleted
//! and treated as a miss. The folder's bytes stay within the budget: every
//! write first deletes the least recently used entries (last use is the
//! file's modification time, refreshed on a hit) until it fits.

use std::collections::{HashSet, VecDeque};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::SystemTime;

use mlx::Array;
use sha2::{Digest, Sha256};

use super::format;
use crate::error::{EngineError, Result};
use crate::model::LayerSnapshot;

/// Bytes of writes queued beyond which a new write is dropped rather than
/// holding more memory.
pub const MAX_PENDING: u64 = 2 << 30;

/// Entry files end with this.
const EXT: &str = "kv";

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

enum Job {
    Write {
        name: String,
        head: Vec<u8>,
        payload: Vec<Vec<u8>>,
    },
    Delete(String),
    Touch(String),
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

/// A file the scan keeps: its header's token ids, size, modification time.
type Scanned = (String, Vec<u32>, u64, SystemTime);

impl DiskTier {
    /// Opens (creating) the model's folder, indexes its entries (deleting
    /// what is not an entry of this model) and starts the writer.
    pub fn open(config: DiskConfig, trimmable: bool) -> Result<DiskTier> {
        let model = config.model.hex();
        let dir = config.dir.join(&model[..32]);
        fs::create_dir_all(&dir).map_err(|e| EngineError::io(&dir, e))?;
        let mut scanned = scan(&dir, &model)?;
        scanned.sort_by_key(|s| s.3);
        let (done, pending) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (tx, rx) = mpsc::channel();
        let writer = {
            let (at, done, pending) = (dir.clone(), done.clone(), pending.clone());
            std::thread::Builder::new()
                .name("prompt-cache-writer".into())
                .spawn(move || write_loop(&at, &rx, &done, &pending))
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
        for (name, ids, bytes, _) in scanned {
            tier.clock += 1;
            tier.used += bytes;
            tier.entries.push(DiskEntry {
                ids,
                name,
                bytes,
                last_used: tier.clock,
                job: 0,
            });
        }
        tier.evict_to(tier.budget);
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

    /// Reads entry `at` (from [`DiskTier::best`]): its token ids and
    /// layers; `None` (the entry dropped, its file deleted) when the file
    /// is missing, corrupt or not this model's entry of those ids.
    pub fn load(&mut self, at: usize) -> Option<(Vec<u32>, Vec<LayerSnapshot>)> {
        let e = self.entries.get(at)?;
        if e.job > self.done.load(Ordering::Acquire) {
            // Still being written: a miss this time.
            return None;
        }
        let path = self.dir.join(&e.name);
        let checked = fs::read(&path)
            .map_err(|err| format!("reading: {err}"))
            .and_then(|bytes| format::decode(&bytes))
            .and_then(|(header, layers)| {
                if header.model != self.model || header.tokens != e.ids {
                    Err("its header names other tokens or another model".to_owned())
                } else {
                    Ok(layers)
                }
            });
        match checked {
            Ok(layers) => {
                tracing::debug!(tokens = e.ids.len(), file = %path.display(), "prompt cache hit on disk");
                self.clock += 1;
                let e = &mut self.entries[at];
                e.last_used = self.clock;
                let (ids, name) = (e.ids.clone(), e.name.clone());
                self.send(Job::Touch(name));
                Some((ids, layers))
            }
            Err(why) => {
                tracing::warn!(file = %path.display(), "prompt cache entry dropped: {why}");
                let e = self.entries.swap_remove(at);
                self.used -= e.bytes;
                self.send(Job::Delete(e.name));
                None
            }
        }
    }

    /// Indexes `layers`, the caches of `ids`, to be written, unless an
    /// entry already serves every prompt it would; drops the entries it
    /// makes useless and, to stay within the budget, the least recently
    /// used ones. Nothing is read or written here: [`DiskTier::pump`]
    /// reads the arrays' bytes later (when they are computed), the writer
    /// writes them.
    pub fn store(&mut self, ids: &[u32], layers: &[LayerSnapshot]) -> Result<()> {
        let trimmable = self.trimmable;
        let covering = self.entries.iter_mut().find(|e| {
            let longer = if trimmable {
                e.ids.len() >= ids.len()
            } else {
                e.ids.len() == ids.len()
            };
            longer && e.ids[..ids.len()] == ids[..]
        });
        if let Some(e) = covering {
            self.clock += 1;
            e.last_used = self.clock;
            let name = e.name.clone();
            self.send(Job::Touch(name));
            return Ok(());
        }
        let payload: u64 = layers.iter().map(|l| l.nbytes() as u64).sum();
        let queued = self.pending.load(Ordering::Acquire) + self.staged_bytes;
        if payload > self.budget || (queued > 0 && queued + payload > MAX_PENDING) {
            tracing::debug!(tokens = ids.len(), "prompt cache entry not written to disk");
            return Ok(());
        }
        let head = format::header(&self.model, ids, layers)?;
        let bytes = (format::PREAMBLE + head.len()) as u64 + payload;
        if bytes > self.budget {
            return Ok(());
        }
        // Entries this one extends serve nothing it doesn't (with KV only).
        if trimmable {
            let mut i = 0;
            while i < self.entries.len() {
                let e = &self.entries[i];
                if e.ids.len() <= ids.len() && ids[..e.ids.len()] == e.ids[..] {
                    let e = self.entries.swap_remove(i);
                    self.used -= e.bytes;
                    self.send(Job::Delete(e.name));
                } else {
                    i += 1;
                }
            }
        }
        self.evict_to(self.budget - bytes);
        let name = self.name_of(ids);
        self.clock += 1;
        self.used += bytes;
        self.entries.push(DiskEntry {
            ids: ids.to_vec(),
            name: name.clone(),
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
                    self.used -= self.entries.swap_remove(at).bytes;
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

    /// The file name of the entry of `ids`.
    fn name_of(&self, ids: &[u32]) -> String {
        let mut h = Sha256::new();
        h.update(self.model.as_bytes());
        for id in ids {
            h.update(id.to_le_bytes());
        }
        format!("{}.{EXT}", &hex(&h.finalize())[..40])
    }

    /// Deletes least recently used entries until at most `budget` bytes
    /// are left.
    fn evict_to(&mut self, budget: u64) {
        while self.used > budget {
            let Some(oldest) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i)
            else {
                break;
            };
            let e = self.entries.swap_remove(oldest);
            self.used -= e.bytes;
            self.send(Job::Delete(e.name));
        }
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

/// The entries of `dir` for `model`; deletes every other file in it (other
/// models' entries, unreadable or truncated files, temporary files a
/// killed writer left).
fn scan(dir: &Path, model: &str) -> Result<Vec<Scanned>> {
    let read = fs::read_dir(dir).map_err(|e| EngineError::io(dir, e))?;
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for entry in read.flatten() {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if !path.is_file() {
            continue;
        }
        match read_index(&path, model) {
            Ok((ids, bytes, mtime)) if name.ends_with(&format!(".{EXT}")) => {
                if seen.insert(ids.clone()) {
                    out.push((name, ids, bytes, mtime));
                    continue;
                }
                tracing::warn!(file = %path.display(), "prompt cache entry dropped: a duplicate");
            }
            Ok(_) => {}
            Err(why) => {
                tracing::warn!(file = %path.display(), "prompt cache entry dropped: {why}");
            }
        }
        if let Err(e) = fs::remove_file(&path) {
            tracing::warn!(file = %path.display(), "cannot delete: {e}");
        }
    }
    Ok(out)
}

/// A file's token ids, size and modification time, from its header; an
/// error when it is not a whole entry of `model`.
fn read_index(
    path: &Path,
    model: &str,
) -> std::result::Result<(Vec<u32>, u64, SystemTime), String> {
    let mut file = fs::File::open(path).map_err(|e| format!("opening: {e}"))?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    let mut pre = [0u8; format::PREAMBLE];
    file.read_exact(&mut pre)
        .map_err(|_| "shorter than a header".to_owned())?;
    let len = format::header_len(&pre)?;
    let mut head = vec![0u8; len];
    file.read_exact(&mut head)
        .map_err(|_| "truncated header".to_owned())?;
    let header = format::parse_header(&head)?;
    if header.model != model {
        return Err("an entry of another model".into());
    }
    let whole = (format::PREAMBLE + len) as u64 + header.payload_bytes();
    if meta.len() != whole {
        return Err(format!("{} bytes, its header says {whole}", meta.len()));
    }
    let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    Ok((header.tokens, meta.len(), mtime))
}

/// The writer thread: runs jobs in order until the tier is dropped.
fn write_loop(dir: &Path, rx: &mpsc::Receiver<(u64, Job)>, done: &AtomicU64, pending: &AtomicU64) {
    for (n, job) in rx {
        match job {
            Job::Write {
                name,
                head,
                payload,
            } => {
                let bytes: u64 = payload.iter().map(|p| p.len() as u64).sum();
                if let Err(e) = write_entry(dir, &name, &head, &payload) {
                    tracing::warn!(file = %name, "prompt cache entry not written: {e}");
                }
                pending.fetch_sub(bytes, Ordering::AcqRel);
            }
            Job::Delete(name) => match fs::remove_file(dir.join(&name)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(file = %name, "cannot delete: {e}");
                }
                _ => {}
            },
            Job::Touch(name) => {
                let touched = fs::File::options()
                    .append(true)
                    .open(dir.join(&name))
                    .and_then(|f| f.set_modified(SystemTime::now()));
                if let Err(e) = touched {
                    tracing::debug!(file = %name, "cannot touch: {e}");
                }
            }
        }
        done.store(n, Ordering::Release);
    }
}

/// Writes an entry to a temporary file, then renames it into place.
fn write_entry(dir: &Path, name: &str, head: &[u8], payload: &[Vec<u8>]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(head)?;
        for p in payload {
            file.write_all(p)?;
        }
        file.sync_data()
    })();
    match written {
        Ok(()) => fs::rename(&tmp, dir.join(name)),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}
