//! The files of the disk tier: the scan that indexes a model's folder at
//! start, and the writer thread that writes, deletes and touches them.

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::SystemTime;

use super::disk::entry_name;
use super::format;
use crate::error::{EngineError, Result};

/// Entry files end with this.
pub const EXT: &str = "kv";

/// What the writer thread does, in the order sent.
pub enum Job {
    Write {
        name: String,
        head: Vec<u8>,
        payload: Vec<Vec<u8>>,
    },
    Delete(String),
    Touch(String),
}

/// A file the scan keeps: its name, its header's token ids and start, its
/// size and modification time.
pub struct Scanned {
    pub name: String,
    pub ids: Vec<u32>,
    pub start: usize,
    pub parent: Option<String>,
    pub bytes: u64,
    pub mtime: SystemTime,
}

/// The entries of `dir` for `model`; deletes every other file in it (other
/// models' entries, unreadable, truncated or misnamed files, temporary
/// files a killed writer left).
pub fn scan(dir: &Path, model: &str) -> Result<Vec<Scanned>> {
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
            Ok(mut found) if name.ends_with(&format!(".{EXT}")) => {
                if name == entry_name(model, &found.ids) && seen.insert(found.ids.clone()) {
                    found.name = name;
                    out.push(found);
                    continue;
                }
                tracing::warn!(file = %path.display(), "prompt cache entry dropped: misnamed");
            }
            Ok(_) => {}
            Err(why) => {
                tracing::warn!(file = %path.display(), "prompt cache entry dropped: {why}");
            }
        }
        remove(&path);
    }
    Ok(out)
}

fn remove(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        tracing::warn!(file = %path.display(), "cannot delete: {e}");
    }
}

/// A file's token ids, start, size and modification time, from its
/// header (its name left empty); an error when it is not a whole entry of
/// `model`.
fn read_index(path: &Path, model: &str) -> std::result::Result<Scanned, String> {
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
    if header.start >= header.tokens.len() || (header.start > 0) != header.parent.is_some() {
        return Err(format!(
            "starts at {} of {}",
            header.start,
            header.tokens.len()
        ));
    }
    Ok(Scanned {
        name: String::new(),
        ids: header.tokens,
        start: header.start,
        parent: header.parent,
        bytes: meta.len(),
        mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    })
}

/// The writer thread: runs jobs in order until the tier is dropped.
pub fn write_loop(
    dir: &Path,
    rx: &mpsc::Receiver<(u64, Job)>,
    done: &AtomicU64,
    pending: &AtomicU64,
) {
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
