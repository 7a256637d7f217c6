//! Loading a checkpoint's tensors and handing them to layers by name,
//! strictly: a tensor a layer asks for and does not find, or one left over
//! after the model is built, is an error that names it (mlx-lm's
//! `model.load_weights(..., strict=True)`).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use mlx::Array;
use serde::Deserialize;

use crate::error::{EngineError, Result};

/// The named tensors of a checkpoint, consumed as layers are built.
#[derive(Debug, Default)]
pub struct Weights {
    tensors: HashMap<String, Array>,
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: HashMap<String, String>,
}

impl Weights {
    /// Wraps already loaded tensors.
    pub fn new(tensors: HashMap<String, Array>) -> Weights {
        Weights { tensors }
    }

    /// The safetensors files of a model directory: the shards listed in
    /// `model.safetensors.index.json`, else every `model*.safetensors`.
    pub fn files_in(dir: &Path) -> Result<Vec<PathBuf>> {
        let index = dir.join("model.safetensors.index.json");
        let mut files: Vec<PathBuf> = if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| EngineError::io(&index, e))?;
            let index: ShardIndex = serde_json::from_str(&text)
                .map_err(|e| EngineError::Weights(format!("{}: {e}", index.display())))?;
            let names: BTreeSet<String> = index.weight_map.into_values().collect();
            names.into_iter().map(|n| dir.join(n)).collect()
        } else {
            let entries = std::fs::read_dir(dir).map_err(|e| EngineError::io(dir, e))?;
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("model") && n.ends_with(".safetensors"))
                })
                .collect()
        };
        files.sort();
        if files.is_empty() {
            return Err(EngineError::Weights(format!(
                "no model*.safetensors in {}",
                dir.display()
            )));
        }
        Ok(files)
    }

    /// Loads every tensor of the model directory's safetensors files.
    pub fn load_dir(dir: &Path) -> Result<Weights> {
        let mut tensors = HashMap::new();
        for file in Weights::files_in(dir)? {
            if !file.exists() {
                return Err(EngineError::Weights(format!(
                    "missing shard {}",
                    file.display()
                )));
            }
            let loaded = mlx::io::load_safetensors(&file)?;
            for (name, array) in loaded.arrays {
                if tensors.insert(name.clone(), array).is_some() {
                    return Err(EngineError::Weights(format!(
                        "tensor {name} is in two shards"
                    )));
                }
            }
        }
        Ok(Weights { tensors })
    }

    /// Whether a tensor is present (and not yet taken).
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Takes a tensor that must exist.
    pub fn take(&mut self, name: &str) -> Result<Array> {
        self.tensors
            .remove(name)
            .ok_or_else(|| EngineError::Weights(format!("missing tensor {name}")))
    }

    /// Takes a tensor if it exists.
    pub fn take_opt(&mut self, name: &str) -> Option<Array> {
        self.tensors.remove(name)
    }

    /// Adds a tensor (one a family's sanitizing derived from others, such
    /// as experts stacked into one array), replacing one of the same name.
    pub fn insert(&mut self, name: String, array: Array) {
        self.tensors.insert(name, array);
    }

    /// Drops every tensor whose name matches (for tensors a checkpoint may
    /// carry that the model does not use, like rotary `inv_freq`).
    pub fn discard(&mut self, matches: impl Fn(&str) -> bool) {
        self.tensors.retain(|name, _| !matches(name));
    }

    /// Renames tensors: `rename` gives a tensor's new name, or `None` to
    /// keep it (mlx-lm's key rewriting in `sanitize`).
    pub fn rename(&mut self, rename: impl Fn(&str) -> Option<String>) -> Result<()> {
        let names: Vec<String> = self.tensors.keys().cloned().collect();
        for name in names {
            if let Some(to) = rename(&name)
                && to != name
            {
                let array = self.tensors.remove(&name).ok_or_else(|| {
                    EngineError::Weights(format!("tensor {name} vanished while renaming"))
                })?;
                if self.tensors.insert(to.clone(), array).is_some() {
                    return Err(EngineError::Weights(format!(
                        "tensor {name} renamed to {to}, which exists"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Replaces tensors: `f` gives a tensor's new value, or `None` to keep
    /// it (mlx-lm's value rewriting in `sanitize`).
    pub fn map(&mut self, f: impl Fn(&str, &Array) -> Result<Option<Array>>) -> Result<()> {
        for (name, array) in self.tensors.iter_mut() {
            if let Some(new) = f(name, array)? {
                *array = new;
            }
        }
        Ok(())
    }

    /// Drops the tensors a checkpoint carries for parts the engine does
    /// not run (`what`: e.g. "multi-token prediction"), logging how many.
    pub fn skip(&mut self, what: &str, matches: impl Fn(&str) -> bool) {
        let before = self.tensors.len();
        self.discard(matches);
        let skipped = before - self.tensors.len();
        if skipped > 0 {
            tracing::info!(
                tensors = skipped,
                "skipping the checkpoint's {what} tensors"
            );
        }
    }

    /// Takes a tensor that must exist with shape `shape`.
    pub fn take_shaped(&mut self, name: &str, shape: &[i32]) -> Result<Array> {
        let array = self.take(name)?;
        if array.shape() != shape {
            return Err(EngineError::Weights(format!(
                "tensor {name} has shape {:?}, expected {shape:?}",
                array.shape()
            )));
        }
        Ok(array)
    }

    /// Succeeds when every tensor was taken; else names the leftovers.
    pub fn finish(self) -> Result<()> {
        if self.tensors.is_empty() {
            return Ok(());
        }
        let mut names: Vec<_> = self.tensors.into_keys().collect();
        names.sort();
        let shown = names.iter().take(8).cloned().collect::<Vec<_>>().join(", ");
        let more = names.len().saturating_sub(8);
        Err(EngineError::Weights(if more > 0 {
            format!("unexpected tensors: {shown} and {more} more")
        } else {
            format!("unexpected tensors: {shown}")
        }))
    }

    /// The remaining tensors, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Array)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Total bytes of the remaining tensors.
    pub fn nbytes(&self) -> usize {
        self.tensors.values().map(Array::nbytes).sum()
    }
}
