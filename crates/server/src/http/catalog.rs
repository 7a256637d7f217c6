//! The models the front-end knows: name → path resolution (delegated to a
//! [`ModelCatalog`] the binary provides from its configuration), and, per
//! model, what the front-end itself needs without MLX: the tokenizer (chat
//! template, tokenize, detokenize) and a memory estimate for admission.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use api::{ApiError, ModelDefaults};
use engine::Tokenizer;
use engine::constraint::GrammarCompiler;
use tokio::sync::OnceCell;

/// A model the daemon can serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub id: String,
    pub path: PathBuf,
    /// `mlx` (a checkpoint directory) or `gguf`.
    pub format: &'static str,
    /// Unix seconds (the checkpoint's modification time).
    pub created: u64,
}

/// Where models are: implemented by the binary from its configuration
/// (aliases, models dir, Hugging Face cache, default model).
pub trait ModelCatalog: Send + Sync + 'static {
    /// The path of the model `name` names, or `None` when it is unknown.
    fn resolve(&self, name: &str) -> Option<PathBuf>;
    /// Every model it can serve, for `GET /v1/models`.
    fn list(&self) -> Vec<CatalogEntry>;
    /// The configured context cap of a model, if any.
    fn context_length(&self, _name: &str) -> Option<u32> {
        None
    }
    /// The configured request defaults of a model (none by default).
    fn defaults(&self, _name: &str) -> ModelDefaults {
        ModelDefaults::default()
    }
    /// The KV memory the model's worker is given, which its memory estimate
    /// counts; `None`: one full context (the least a worker keeps).
    fn kv_memory(&self, _name: &str) -> Option<KvMemory> {
        None
    }
}

/// KV cache bytes a worker may hold: its batch's and its prompt cache's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvMemory {
    pub batch: u64,
    pub prompt_cache: u64,
}

/// A fixed list of models (tests, and `--model` flags).
pub struct StaticCatalog {
    entries: Vec<CatalogEntry>,
    context_length: Option<u32>,
    defaults: ModelDefaults,
}

impl StaticCatalog {
    /// A catalog of `(name, path)` pairs, each served with at most
    /// `context_length` tokens when given.
    pub fn new(models: Vec<(String, PathBuf)>, context_length: Option<u32>) -> StaticCatalog {
        let entries = models
            .into_iter()
            .map(|(id, path)| CatalogEntry {
                format: format_of(&path),
                created: modified_secs(&path),
                id,
                path,
            })
            .collect();
        StaticCatalog {
            entries,
            context_length,
            defaults: ModelDefaults::default(),
        }
    }

    /// The same, every model with request defaults `defaults`.
    pub fn with_defaults(self, defaults: ModelDefaults) -> StaticCatalog {
        StaticCatalog { defaults, ..self }
    }
}

impl ModelCatalog for StaticCatalog {
    fn resolve(&self, name: &str) -> Option<PathBuf> {
        self.entries
            .iter()
            .find(|e| e.id == name)
            .map(|e| e.path.clone())
    }

    fn list(&self) -> Vec<CatalogEntry> {
        self.entries.clone()
    }

    fn context_length(&self, _name: &str) -> Option<u32> {
        self.context_length
    }

    fn defaults(&self, _name: &str) -> ModelDefaults {
        self.defaults.clone()
    }
}

/// `gguf` for a `.gguf` file, else `mlx`.
pub fn format_of(path: &Path) -> &'static str {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        "gguf"
    } else {
        "mlx"
    }
}

/// A path's modification time in Unix seconds (0 when unknown).
pub fn modified_secs(path: &Path) -> u64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// What the front-end holds for one model.
pub struct FrontModel {
    pub id: String,
    pub path: PathBuf,
    pub tokenizer: Arc<Tokenizer>,
    /// Context cap from the configuration.
    pub context_length: Option<u32>,
    /// Weights plus the KV cache its worker may hold, in bytes.
    pub estimate_bytes: u64,
    /// The grammar compiler over its tokenizer, built on first use.
    grammars: OnceLock<Result<GrammarCompiler, String>>,
}

impl FrontModel {
    /// The grammar compiler over the tokenizer (its token trie is built on
    /// the first call: call it off the async runtime); 400 when the
    /// tokenizer cannot carry grammars.
    pub fn grammars(&self) -> Result<&GrammarCompiler, ApiError> {
        self.grammars
            .get_or_init(|| {
                GrammarCompiler::new(&self.tokenizer, self.tokenizer.vocab_size())
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| ApiError::InvalidRequest {
                message: format!("model '{}' cannot follow grammars: {e}", self.id),
                param: None,
            })
    }

    /// What the supervisor needs to start this model's worker.
    pub fn spec(&self) -> crate::supervisor::ModelSpec {
        crate::supervisor::ModelSpec {
            id: self.id.clone(),
            path: self.path.clone(),
            context_length: self.context_length,
            estimate_bytes: self.estimate_bytes,
        }
    }
}

type Slot = Arc<OnceCell<Arc<FrontModel>>>;

/// Front-end models by name, each loaded once (concurrent first requests
/// share the load).
pub struct FrontModels {
    catalog: Arc<dyn ModelCatalog>,
    loaded: Mutex<HashMap<String, Slot>>,
}

impl FrontModels {
    pub fn new(catalog: Arc<dyn ModelCatalog>) -> FrontModels {
        FrontModels {
            catalog,
            loaded: Mutex::new(HashMap::new()),
        }
    }

    pub fn catalog(&self) -> &dyn ModelCatalog {
        self.catalog.as_ref()
    }

    /// The model `name`: 404 when the catalog does not know it, 503 when
    /// its tokenizer cannot be read.
    pub async fn get(&self, name: &str) -> Result<Arc<FrontModel>, ApiError> {
        let Some(path) = self.catalog.resolve(name) else {
            return Err(ApiError::ModelNotFound {
                model: name.to_owned(),
            });
        };
        let slot = Arc::clone(
            self.loaded
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(name.to_owned())
                .or_default(),
        );
        let id = name.to_owned();
        let context_length = self.catalog.context_length(name);
        let kv = self.catalog.kv_memory(name);
        let model = slot
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || load(id, path, context_length, kv))
                    .await
                    .map_err(|e| ApiError::Internal {
                        message: format!("loading the tokenizer: {e}"),
                    })?
            })
            .await?;
        Ok(Arc::clone(model))
    }

    /// Forgets a model's front-end state (after its files changed).
    pub fn forget(&self, name: &str) {
        self.loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
    }
}

fn load(
    id: String,
    path: PathBuf,
    context_length: Option<u32>,
    kv: Option<KvMemory>,
) -> Result<Arc<FrontModel>, ApiError> {
    let failed = |reason: String| ApiError::ModelLoadFailed {
        model: id.clone(),
        reason,
    };
    if !path.exists() {
        return Err(failed(format!("{} does not exist", path.display())));
    }
    let tokenizer = if path.is_dir() {
        Tokenizer::from_dir(&path)
    } else {
        Tokenizer::from_gguf_path(&path)
    }
    .map_err(|e| failed(format!("reading the tokenizer: {e}")))?;
    let estimate_bytes = estimate_bytes(&path, context_length, kv).map_err(failed)?;
    Ok(Arc::new(FrontModel {
        id: id.clone(),
        path,
        tokenizer: Arc::new(tokenizer),
        context_length,
        estimate_bytes,
        grammars: OnceLock::new(),
    }))
}

/// The shape facts a KV estimate needs.
struct Shape {
    layers: u64,
    kv_heads: u64,
    head_dim: u64,
    context: u64,
    /// Bytes per cached value.
    value_bytes: u64,
}

/// Weights (bytes on disk) plus the KV cache the worker may hold (its
/// batch's budget, at least one full served context, and its prompt cache;
/// one context when `kv` is `None`), plus a tenth for activations and
/// buffers.
pub fn estimate_bytes(
    path: &Path,
    context_cap: Option<u32>,
    kv: Option<KvMemory>,
) -> Result<u64, String> {
    let (weights, shape) = if path.is_dir() {
        let files = engine::model::Weights::files_in(path).map_err(|e| e.to_string())?;
        let weights = files
            .iter()
            .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
            .sum();
        (weights, dir_shape(path)?)
    } else {
        let weights = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
        (weights, gguf_shape(path)?)
    };
    let context = context_cap.map_or(shape.context, |c| shape.context.min(u64::from(c)));
    let one_context =
        2 * shape.layers * shape.kv_heads * shape.head_dim * shape.value_bytes * context;
    let kv = kv.map_or(one_context, |kv| {
        kv.batch.max(one_context).saturating_add(kv.prompt_cache)
    });
    let total = weights.saturating_add(kv);
    Ok(total.saturating_add(total / 10))
}

fn dir_shape(path: &Path) -> Result<Shape, String> {
    let config_path = path.join("config.json");
    let text = std::fs::read_to_string(&config_path)
        .map_err(|e| format!("{}: {e}", config_path.display()))?;
    let config = engine::ModelConfig::from_json(&text).map_err(|e| e.to_string())?;
    let raw: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let value_bytes = match raw.get("torch_dtype").and_then(|v| v.as_str()) {
        Some("float32") => 4,
        _ => 2,
    };
    Ok(Shape {
        layers: config.num_hidden_layers as u64,
        kv_heads: config.num_kv_heads() as u64,
        head_dim: config.head_dim() as u64,
        context: config.context_length().map_or(4096, |c| c as u64),
        value_bytes,
    })
}

fn gguf_shape(path: &Path) -> Result<Shape, String> {
    let file = engine::GgufFile::open(path).map_err(|e| e.to_string())?;
    let arch = file.architecture().unwrap_or("llama").to_owned();
    let get = |k: &str| file.get(&format!("{arch}.{k}")).and_then(|v| v.as_u64());
    let heads = get("attention.head_count").unwrap_or(1).max(1);
    Ok(Shape {
        layers: get("block_count").unwrap_or(0),
        kv_heads: get("attention.head_count_kv").unwrap_or(heads),
        head_dim: get("attention.key_length")
            .unwrap_or(get("embedding_length").unwrap_or(0) / heads),
        context: get("context_length").unwrap_or(4096),
        value_bytes: 4,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model directory of `weights` bytes: 2 layers, 2 KV heads of 64,
    /// a 1,000-token context and bf16 values, so one context of KV is
    /// 2 · 2 · 2 · 64 · 2 · 1000 = 1,024,000 bytes.
    fn model_dir(weights: usize) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = serde_json::json!({
            "model_type": "llama",
            "hidden_size": 256,
            "intermediate_size": 512,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 64,
            "vocab_size": 1000,
            "max_position_embeddings": 1000,
            "rms_norm_eps": 1e-5,
            "torch_dtype": "bfloat16",
        });
        std::fs::write(dir.path().join("config.json"), config.to_string()).expect("config");
        std::fs::write(dir.path().join("model.safetensors"), vec![0u8; weights]).expect("weights");
        dir
    }

    const ONE_CONTEXT: u64 = 1_024_000;

    #[test]
    fn the_estimate_counts_the_kv_the_worker_is_given() {
        let dir = model_dir(500_000);
        let with = |kv| estimate_bytes(dir.path(), None, kv).expect("estimate");
        let tenth_more = |bytes: u64| bytes + bytes / 10;
        assert_eq!(with(None), tenth_more(500_000 + ONE_CONTEXT));
        let kv = KvMemory {
            batch: 8 << 20,
            prompt_cache: 2 << 20,
        };
        assert_eq!(with(Some(kv)), tenth_more(500_000 + (10 << 20)));
        // A budget under one context: the worker keeps one context anyway.
        let small = KvMemory {
            batch: 1000,
            prompt_cache: 0,
        };
        assert_eq!(with(Some(small)), tenth_more(500_000 + ONE_CONTEXT));
        // A context cap shrinks the one-context floor with it.
        let capped = estimate_bytes(dir.path(), Some(500), Some(small)).expect("estimate");
        assert_eq!(capped, tenth_more(500_000 + ONE_CONTEXT / 2));
    }
}
