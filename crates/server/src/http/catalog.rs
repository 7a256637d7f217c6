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

use crate::supervisor::KvBits;

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
    /// The model a request that names none gets (`None`: such a request
    /// is refused with a 400 naming `model`).
    fn default_model(&self) -> Option<String> {
        None
    }
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
    /// The draft model its worker loads beside it for speculative
    /// decoding, whose weights and one context of KV its memory estimate
    /// counts too.
    fn draft_model(&self, _name: &str) -> Option<PathBuf> {
        None
    }
    /// The configured pooling of a model's embeddings (`None`: from its
    /// files, else the last token).
    fn pooling(&self, _name: &str) -> Option<protocol::Pooling> {
        None
    }
    /// Whether [`ModelCatalog::pull`] can download models (Ollama's
    /// `/api/pull`); `false` by default.
    fn pulls(&self) -> bool {
        false
    }
    /// Downloads the hub repository `repo` (`org/name`) at `revision` into
    /// the store the catalog lists, sending progress to `events`; blocks
    /// until done. Returns where the model is, or why it failed.
    fn pull(
        &self,
        repo: &str,
        _revision: &str,
        _events: tokio::sync::mpsc::UnboundedSender<PullEvent>,
    ) -> Result<PathBuf, String> {
        Err(format!("this daemon cannot pull models ({repo})"))
    }
}

/// A pull's progress, as [`ModelCatalog::pull`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullEvent {
    /// The repository's file list was read.
    Manifest { files: usize },
    /// A file's bytes so far; `digest` is its SHA-256 when the hub lists
    /// one, else its name.
    File {
        name: String,
        digest: String,
        total: u64,
        completed: u64,
    },
}

/// KV cache a worker may hold: its batch's and its prompt cache's, and how
/// it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvMemory {
    pub batch: KvBatch,
    /// Bytes of the prompt cache; `None`: a quarter of the batch's.
    pub prompt_cache: Option<u64>,
    /// Quantized (`kv_bits`), which the estimate's bytes per position
    /// follow and the worker is told; `None`: full precision.
    pub quant: Option<KvBits>,
}

/// The KV of a worker's batch, as the worker is told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvBatch {
    /// These many bytes (at least one full context).
    Bytes(u64),
    /// Sized from the model: room for `tokens` positions, at most `cap`
    /// bytes, at least one full context ([`engine::memory::batch_kv_bytes`]).
    Tokens { tokens: u64, cap: u64 },
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
    /// Its KV cache quantized, by the configuration.
    pub kv_bits: Option<KvBits>,
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
            kv_bits: self.kv_bits,
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
        let draft = self.catalog.draft_model(name);
        let model = slot
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || load(id, path, context_length, kv, draft))
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
    draft: Option<PathBuf>,
) -> Result<Arc<FrontModel>, ApiError> {
    let failed = |reason: String| ApiError::ModelLoadFailed {
        model: id.clone(),
        reason,
    };
    if !path.exists() {
        return Err(failed(format!("{} does not exist", path.display())));
    }
    // What the admin status shows: no `..`, no symbolic links.
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    let tokenizer = if path.is_dir() {
        Tokenizer::from_dir(&path)
    } else {
        Tokenizer::from_gguf_path(&path)
    }
    .map_err(|e| failed(format!("reading the tokenizer: {e}")))?;
    let mut estimate_bytes = estimate_bytes(&path, context_length, kv).map_err(failed)?;
    if let Some(draft) = draft {
        let bytes = estimate_bytes_of_draft(&draft, context_length)
            .map_err(|e| failed(format!("the draft model {}: {e}", draft.display())))?;
        estimate_bytes = estimate_bytes.saturating_add(bytes);
    }
    Ok(Arc::new(FrontModel {
        id: id.clone(),
        path,
        tokenizer: Arc::new(tokenizer),
        context_length,
        kv_bits: kv.and_then(|kv| kv.quant),
        estimate_bytes,
        grammars: OnceLock::new(),
    }))
}

/// A draft model's weights and one context of its KV (as a model with no
/// batch of its own: its caches are those of the rows that speculate).
fn estimate_bytes_of_draft(path: &Path, context_cap: Option<u32>) -> Result<u64, String> {
    estimate_bytes(path, context_cap, None)
}

/// The shape facts a KV estimate needs.
struct Shape {
    /// Layers that keep KV (attention layers).
    layers: u64,
    /// Bytes of fixed recurrent state a sequence holds (linear-attention
    /// layers), whatever its length.
    state_bytes: u64,
    /// Values each attention layer caches per position (keys and values:
    /// `2 * kv_heads * head_dim`).
    kv_width: u64,
    /// Values per head (the unit a quantized cache's groups divide).
    head_dim: u64,
    context: u64,
    /// Bytes per cached value.
    value_bytes: u64,
}

/// Weights (bytes on disk; a GGUF's bytes once loaded) plus the KV cache the worker may hold (its
/// batch's, at least one full served context, and its prompt cache; one
/// context when `kv` is `None`), plus a tenth for activations and buffers.
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
        let file = engine::GgufFile::open(path).map_err(|e| e.to_string())?;
        (engine::model::gguf::loaded_bytes(&file), gguf_shape(path)?)
    };
    let context = context_cap.map_or(shape.context, |c| shape.context.min(u64::from(c)));
    // A quantized cache stores each head's values packed, with a scale
    // and a bias per group.
    let per_position = match kv.and_then(|kv| kv.quant) {
        Some(q) if shape.head_dim > 0 => {
            shape.layers
                * (shape.kv_width / shape.head_dim)
                * q.head_bytes(shape.head_dim, shape.value_bytes)
        }
        _ => shape.layers * shape.kv_width * shape.value_bytes,
    };
    let one_context = per_position * context + shape.state_bytes;
    let kv = kv.map_or(one_context, |kv| {
        let batch = match kv.batch {
            KvBatch::Bytes(bytes) => bytes.max(one_context),
            // The recurrent state of each row the tokens are sized for.
            KvBatch::Tokens { tokens, cap } => {
                engine::memory::batch_kv_bytes(per_position, context, tokens, cap).saturating_add(
                    shape.state_bytes * (tokens / engine::memory::KV_TOKENS_PER_SEQUENCE).max(1),
                )
            }
        };
        batch.saturating_add(kv.prompt_cache.unwrap_or(batch / 4))
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
    // A model_type the engine does not run: every layer counted as
    // attention (the worker's load reports the type).
    let kinds = engine::model::cache_kinds(&config).unwrap_or_else(|_| {
        vec![engine::model::CacheKind::Kv; config.num_hidden_layers.max(0) as usize]
    });
    let layers = kinds
        .iter()
        .filter(|k| **k == engine::model::CacheKind::Kv)
        .count() as u64;
    let dtype = if value_bytes == 4 {
        mlx::Dtype::F32
    } else {
        mlx::Dtype::Bf16
    };
    let state_bytes = kinds.iter().map(|k| k.state_bytes(dtype) as u64).sum();
    Ok(Shape {
        layers,
        state_bytes,
        kv_width: engine::model::kv_width(&config)
            .unwrap_or_else(|_| 2 * config.num_kv_heads() * config.head_dim())
            .max(0) as u64,
        head_dim: config.head_dim().max(0) as u64,
        context: config.context_length().map_or(4096, |c| c as u64),
        value_bytes,
    })
}

fn gguf_shape(path: &Path) -> Result<Shape, String> {
    let file = engine::GgufFile::open(path).map_err(|e| e.to_string())?;
    let arch = file.architecture().unwrap_or("llama").to_owned();
    let get = |k: &str| file.get(&format!("{arch}.{k}")).and_then(|v| v.as_u64());
    let heads = get("attention.head_count").unwrap_or(1).max(1);
    let head_dim =
        get("attention.key_length").unwrap_or(get("embedding_length").unwrap_or(0) / heads);
    Ok(Shape {
        layers: get("block_count").unwrap_or(0),
        state_bytes: 0,
        kv_width: 2 * get("attention.head_count_kv").unwrap_or(heads) * head_dim,
        head_dim,
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
            batch: KvBatch::Bytes(8 << 20),
            prompt_cache: Some(2 << 20),
            quant: None,
        };
        assert_eq!(with(Some(kv)), tenth_more(500_000 + (10 << 20)));
        // The prompt cache defaults to a quarter of the batch's KV.
        let quarter = KvMemory {
            batch: KvBatch::Bytes(8 << 20),
            prompt_cache: None,
            quant: None,
        };
        assert_eq!(with(Some(quarter)), tenth_more(500_000 + (10 << 20)));
        // A budget under one context: the worker keeps one context anyway.
        let small = KvMemory {
            batch: KvBatch::Bytes(1000),
            prompt_cache: Some(0),
            quant: None,
        };
        assert_eq!(with(Some(small)), tenth_more(500_000 + ONE_CONTEXT));
        // A context cap shrinks the one-context floor with it.
        let capped = estimate_bytes(dir.path(), Some(500), Some(small)).expect("estimate");
        assert_eq!(capped, tenth_more(500_000 + ONE_CONTEXT / 2));
        // Sized from the model: 1,024 bytes a position, between one context
        // and the cap.
        let tokens = |tokens, cap| KvMemory {
            batch: KvBatch::Tokens { tokens, cap },
            prompt_cache: Some(0),
            quant: None,
        };
        assert_eq!(
            with(Some(tokens(4000, u64::MAX))),
            tenth_more(500_000 + 4000 * 1024)
        );
        // A quantized KV: per head of 64 values, the codes and a bf16 scale
        // and bias per group of 64 (8 bits: 68 bytes, 4 bits: 36).
        for (bits, head) in [(8, 68), (4, 36)] {
            let quantized = KvMemory {
                quant: Some(KvBits {
                    bits,
                    group_size: 64,
                }),
                ..tokens(4000, u64::MAX)
            };
            assert_eq!(
                with(Some(quantized)),
                tenth_more(500_000 + 4000 * 2 * 2 * 2 * head)
            );
        }
        assert_eq!(
            with(Some(tokens(4000, 2_000_000))),
            tenth_more(500_000 + 2_000_000)
        );
        assert_eq!(
            with(Some(tokens(10, u64::MAX))),
            tenth_more(500_000 + ONE_CONTEXT)
        );
    }

    #[test]
    fn a_hybrid_model_counts_kv_for_its_attention_layers_and_a_fixed_state() {
        // Four layers, full attention every fourth: one KV layer (2 heads
        // of 64, bf16, 1,000 positions) and three recurrent states of a
        // 3 x 128 bf16 convolution window and 2 x 16 x 16 f32 values.
        let dir = tempfile::tempdir().expect("tempdir");
        let config = serde_json::json!({
            "model_type": "qwen3_next",
            "hidden_size": 256,
            "intermediate_size": 512,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 64,
            "vocab_size": 1000,
            "max_position_embeddings": 1000,
            "rms_norm_eps": 1e-5,
            "torch_dtype": "bfloat16",
            "linear_num_value_heads": 2,
            "linear_num_key_heads": 2,
            "linear_key_head_dim": 16,
            "linear_value_head_dim": 64,
            "full_attention_interval": 4,
        });
        std::fs::write(dir.path().join("config.json"), config.to_string()).expect("config");
        std::fs::write(dir.path().join("model.safetensors"), vec![0u8; 1000]).expect("weights");
        let kv = 2 * 2 * 64 * 2 * 1000;
        let conv = 3 * (2 * 2 * 16 + 2 * 64) * 2;
        let state = 2 * 64 * 16 * 4;
        let want = 1000 + kv + 3 * (conv + state);
        let got = estimate_bytes(dir.path(), None, None).expect("estimate");
        assert_eq!(got, want + want / 10);
    }

    #[test]
    fn a_mixture_of_experts_counts_every_expert_as_resident() {
        // A Qwen3-MoE checkpoint in two shards, the experts in the second:
        // all experts are loaded whatever a token is routed to, so every
        // shard the index lists counts, and the KV cache is that of the
        // attention layers alone (the experts hold none).
        let dir = tempfile::tempdir().expect("tempdir");
        let config = serde_json::json!({
            "model_type": "qwen3_moe",
            "hidden_size": 256,
            "intermediate_size": 512,
            "moe_intermediate_size": 128,
            "num_experts": 60,
            "num_experts_per_tok": 4,
            "decoder_sparse_step": 1,
            "mlp_only_layers": [],
            "norm_topk_prob": true,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 64,
            "vocab_size": 1000,
            "max_position_embeddings": 1000,
            "rms_norm_eps": 1e-6,
            "torch_dtype": "bfloat16",
        });
        std::fs::write(dir.path().join("config.json"), config.to_string()).expect("config");
        let index = serde_json::json!({"weight_map": {
            "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
            "model.layers.0.mlp.switch_mlp.up_proj.weight": "model-00002-of-00002.safetensors",
        }});
        std::fs::write(
            dir.path().join("model.safetensors.index.json"),
            index.to_string(),
        )
        .expect("index");
        let shards = [
            ("model-00001-of-00002.safetensors", 300_000),
            ("model-00002-of-00002.safetensors", 6_000_000),
        ];
        for (name, bytes) in shards {
            std::fs::write(dir.path().join(name), vec![0u8; bytes]).expect("shard");
        }
        let estimate = estimate_bytes(dir.path(), None, None).expect("estimate");
        let total = 6_300_000 + ONE_CONTEXT;
        assert_eq!(estimate, total + total / 10);
    }
}
