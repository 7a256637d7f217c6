//! Ollama's model routes: `GET /api/tags` (the models mlxd can serve),
//! `GET /api/ps` (the loaded ones), `POST /api/show`, `GET /api/version`,
//! `GET`/`HEAD /` (liveness), `POST /api/pull` (`mlxd pull`'s download
//! from the Hugging Face hub, through [`super::catalog::ModelCatalog::pull`],
//! with Ollama's NDJSON progress), and the model-management routes mlxd does
//! not have (`/api/delete`, `/api/copy`, `/api/create`, `/api/push`),
//! answered with a 501 in Ollama's error shape that says what to do
//! instead. Follows
//! Ollama's API reference (`docs/api.md`) and the `ollama` Python
//! library's response types.
//!
//! What the checkpoint does not state is derived, and said so here:
//! `digest` is the SHA-256 of the checkpoint's `config.json` and its files'
//! names and sizes (a cheap identity, not a hash of the weights);
//! `parameter_size` is, for a checkpoint directory, estimated from the
//! weights' bytes and their bits per value (the quantization's `bits`, else
//! the dtype's), and for a GGUF file counted from its tensors' shapes, whose
//! metadata also gives the family, `general.file_type` and `model_info`;
//! `size_vram` is the
//! worker's MLX memory (unified memory: all of it is the GPU's). A model
//! name without a tag is listed with Ollama's `:latest`, which requests may
//! send back ([`super::ollama::resolve_name`]).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use api::ApiError;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use engine::output::{ThinkMarkers, ToolFormat, ToolSyntax};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::AppState;
use super::catalog::{CatalogEntry, PullEvent, format_of};
use super::ollama::{error_response, read_body, resolve_name};
use crate::supervisor::KeepAlive;

/// The model routes behind the API key.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/tags", get(tags))
        .route("/api/ps", get(ps))
        .route("/api/show", post(show))
        .route("/api/version", get(version))
        .route("/api/delete", delete(unsupported))
        .route("/api/copy", post(unsupported))
        .route("/api/create", post(unsupported))
        .route("/api/push", post(unsupported))
        .route("/api/pull", post(pull))
}

#[derive(Deserialize)]
struct PullRequest {
    model: Option<String>,
    /// The older name of `model`.
    name: Option<String>,
    stream: Option<bool>,
    insecure: Option<bool>,
}

/// The hub repository and revision a pull names: `org/name`, with an
/// optional `:revision` (`:latest` is the default branch, `main`).
fn pull_target(model: &str) -> Result<(String, String), ApiError> {
    let (repo, revision) = match model.rsplit_once(':') {
        Some((repo, "latest")) => (repo, "main"),
        Some((repo, revision)) if !revision.is_empty() => (repo, revision),
        _ => (model, "main"),
    };
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(ApiError::invalid(
            "model",
            format!(
                "{model} is not a Hugging Face repository: mlxd pulls `org/name` (e.g. \
                 mlx-community/Qwen3-4B-4bit) from the hub"
            ),
        ));
    }
    Ok((repo.to_owned(), revision.to_owned()))
}

/// `POST /api/pull`: `mlxd pull`'s download (through the catalog), with
/// Ollama's NDJSON progress: `pulling manifest`, a `pulling <digest>` line
/// per file update with `digest`, `total` and `completed`, then `success`
/// (or one `{"error": ...}` line).
async fn pull(State(state): State<AppState>, request: Request) -> Response {
    let result = async {
        let body = read_body(&state, request).await?;
        let req: PullRequest = serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid("model", format!("invalid body: {e}")))?;
        if req.insecure == Some(true) {
            return Err(ApiError::invalid(
                "insecure",
                "insecure pulls are not supported: mlxd pulls from the hub at HF_ENDPOINT",
            ));
        }
        let model = req
            .model
            .or(req.name)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| ApiError::invalid("model", "model is required"))?;
        if !state.models.catalog().pulls() {
            return Err(ApiError::NotImplemented {
                message: "this daemon cannot pull models".into(),
            });
        }
        let (repo, revision) = pull_target(&model)?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let puller = state.clone();
        let name = repo.clone();
        let task = tokio::task::spawn_blocking(move || {
            let result = puller.models.catalog().pull(&name, &revision, tx);
            if result.is_ok() {
                puller.models.forget(&name);
            }
            result
        });
        if req.stream.unwrap_or(true) {
            return Ok(pull_stream(rx, task));
        }
        drop(rx);
        finished(task.await)?;
        Ok(Json(json!({"status": "success"})).into_response())
    }
    .await;
    let response = result.unwrap_or_else(|e| error_response(&e));
    state
        .metrics
        .count_request("/api/pull", response.status().as_u16());
    response
}

type PullTask = tokio::task::JoinHandle<Result<std::path::PathBuf, String>>;

/// A pull's outcome as an error, if it failed.
fn finished(
    joined: Result<Result<std::path::PathBuf, String>, tokio::task::JoinError>,
) -> Result<(), ApiError> {
    match joined {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(reason)) => Err(ApiError::Internal {
            message: format!("pulling failed: {reason}"),
        }),
        Err(e) => Err(ApiError::Internal {
            message: format!("the pull stopped: {e}"),
        }),
    }
}

/// A progress event as Ollama's line.
fn pull_line(event: PullEvent) -> Value {
    match event {
        PullEvent::Manifest { files } => json!({"status": format!("pulling {files} files")}),
        PullEvent::File {
            name,
            digest,
            total,
            completed,
        } => {
            let hashed = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
            let (status, digest) = if hashed {
                (
                    format!("pulling {}", &digest[..12]),
                    format!("sha256:{digest}"),
                )
            } else {
                (format!("pulling {name}"), name)
            };
            json!({"status": status, "digest": digest, "total": total, "completed": completed})
        }
    }
}

fn pull_stream(rx: tokio::sync::mpsc::UnboundedReceiver<PullEvent>, task: PullTask) -> Response {
    let first = json!({"status": "pulling manifest"});
    let state = (rx, Some(task), Some(first));
    let body = futures::stream::unfold(state, |(mut rx, mut task, pending)| async move {
        if let Some(line) = pending {
            return Some((line_bytes(&line), (rx, task, None)));
        }
        if let Some(mut event) = rx.recv().await {
            // Only the latest of a file's waiting updates.
            while let Ok(next) = rx.try_recv() {
                let same = matches!((&event, &next),
                    (PullEvent::File { name: a, .. }, PullEvent::File { name: b, .. }) if a == b);
                if !same {
                    let line = pull_line(event);
                    return Some((line_bytes(&line), (rx, task, Some(pull_line(next)))));
                }
                event = next;
            }
            return Some((line_bytes(&pull_line(event)), (rx, task, None)));
        }
        let line = match finished(task.take()?.await) {
            Ok(()) => json!({"status": "success"}),
            Err(e) => api::ollama::error_body(&e),
        };
        Some((line_bytes(&line), (rx, None, None)))
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

fn line_bytes(line: &Value) -> Result<axum::body::Bytes, std::convert::Infallible> {
    let mut text = line.to_string();
    text.push('\n');
    Ok(axum::body::Bytes::from(text))
}

/// `GET`/`HEAD /`: liveness, open to all like `/health`.
pub fn open_routes() -> Router<AppState> {
    Router::new().route("/", get(root))
}

async fn root() -> &'static str {
    "mlxd is running"
}

async fn version(State(state): State<AppState>) -> Response {
    state.metrics.count_request("/api/version", 200);
    Json(json!({"version": env!("CARGO_PKG_VERSION")})).into_response()
}

async fn unsupported(State(state): State<AppState>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let what = match path.as_str() {
        "/api/delete" => "deleting models: remove the checkpoint directory from the models dir",
        "/api/copy" => "copying models: add an alias in the configuration instead",
        "/api/create" => {
            "creating models from a Modelfile: set per-model defaults in the configuration"
        }
        _ => "pushing models to a registry",
    };
    let e = ApiError::NotImplemented {
        message: format!("{path} is not supported by mlxd ({what})"),
    };
    let response = error_response(&e);
    state
        .metrics
        .count_request(&path, response.status().as_u16());
    response
}

/// What `config.json` says about a checkpoint (empty for a GGUF file).
struct Config(Map<String, Value>);

impl Config {
    fn read(path: &Path) -> Config {
        let text = std::fs::read(path.join("config.json")).unwrap_or_default();
        match serde_json::from_slice(&text) {
            Ok(Value::Object(map)) => Config(map),
            _ => Config(Map::new()),
        }
    }

    fn family(&self) -> String {
        self.0
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }

    fn u64(&self, key: &str) -> Option<u64> {
        self.0.get(key).and_then(Value::as_u64).or_else(|| {
            self.0
                .get("text_config")
                .and_then(|t| t.get(key))
                .and_then(Value::as_u64)
        })
    }

    /// Bits per weight: the quantization's, else the dtype's.
    fn bits(&self) -> Option<u64> {
        let quantized = ["quantization", "quantization_config"]
            .iter()
            .find_map(|k| self.0.get(*k)?.get("bits")?.as_u64());
        quantized.or_else(|| {
            let dtype = self
                .0
                .get("torch_dtype")
                .or_else(|| self.0.get("dtype"))?
                .as_str()?;
            match dtype {
                "float32" => Some(32),
                "float16" | "bfloat16" => Some(16),
                _ => None,
            }
        })
    }

    fn quantization_level(&self) -> String {
        let quantized = ["quantization", "quantization_config"]
            .iter()
            .find_map(|k| self.0.get(*k)?.get("bits")?.as_u64());
        if let Some(bits) = quantized {
            return format!("Q{bits}");
        }
        match self.0.get("torch_dtype").or_else(|| self.0.get("dtype")) {
            Some(Value::String(d)) if d == "bfloat16" => "BF16".into(),
            Some(Value::String(d)) if d == "float16" => "F16".into(),
            Some(Value::String(d)) if d == "float32" => "F32".into(),
            _ => String::new(),
        }
    }
}

/// A checkpoint's files (name, bytes): the directory's, or the one file.
fn files(path: &Path) -> Vec<(String, u64)> {
    let entries: Vec<(String, u64)> = if path.is_dir() {
        std::fs::read_dir(path)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter_map(|e| {
                        let meta = e.metadata().ok().filter(|m| m.is_file())?;
                        Some((e.file_name().to_string_lossy().into_owned(), meta.len()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    } else {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        vec![(name, size)]
    };
    let mut entries = entries;
    entries.sort();
    entries
}

/// What `/api/tags`, `/api/ps` and `/api/show` say of a checkpoint.
struct Facts {
    size: u64,
    digest: String,
    details: Value,
    /// `model_info`, under GGUF's key names.
    info: Map<String, Value>,
}

/// A checkpoint's family, quantization, parameter count and `model_info`.
#[derive(Default)]
struct Meta {
    family: String,
    quantization: String,
    parameters: Option<u64>,
    info: Map<String, Value>,
}

fn facts(path: &Path) -> Facts {
    let files = files(path);
    let size = files.iter().map(|(_, s)| s).sum();
    let weights: u64 = files
        .iter()
        .filter(|(n, _)| n.ends_with(".safetensors") || n.ends_with(".gguf"))
        .map(|(_, s)| s)
        .sum();
    let mut hasher = Sha256::new();
    if path.is_dir() {
        hasher.update(std::fs::read(path.join("config.json")).unwrap_or_default());
    }
    for (name, size) in &files {
        hasher.update(format!("{name}\0{size}\0").as_bytes());
    }
    let digest: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let meta = if format_of(path) == "gguf" {
        gguf_meta(path)
    } else {
        config_meta(path, weights)
    };
    let family = &meta.family;
    let details = json!({
        "parent_model": "",
        "format": format_of(path),
        "family": family,
        "families": if family.is_empty() { json!(null) } else { json!([family]) },
        "parameter_size": meta.parameters.map(parameter_size).unwrap_or_default(),
        "quantization_level": meta.quantization,
    });
    Facts {
        size,
        digest,
        details,
        info: meta.info,
    }
}

/// From `config.json`; the parameter count is estimated from the weights'
/// bytes and bits per value.
fn config_meta(path: &Path, weight_bytes: u64) -> Meta {
    let config = Config::read(path);
    let arch = config.family();
    let parameters = config.bits().map(|bits| weight_bytes * 8 / bits);
    let mut info = Map::new();
    info.insert("general.architecture".into(), json!(arch));
    if let Some(n) = parameters {
        info.insert("general.parameter_count".into(), json!(n));
    }
    for (ours, theirs) in [
        ("max_position_embeddings", "context_length"),
        ("hidden_size", "embedding_length"),
        ("num_hidden_layers", "block_count"),
        ("num_attention_heads", "attention.head_count"),
        ("num_key_value_heads", "attention.head_count_kv"),
        ("intermediate_size", "feed_forward_length"),
        ("vocab_size", "vocab_size"),
    ] {
        if let Some(v) = config.u64(ours) {
            info.insert(format!("{arch}.{theirs}"), json!(v));
        }
    }
    Meta {
        family: arch,
        quantization: config.quantization_level(),
        parameters,
        info,
    }
}

/// From a GGUF file's metadata: the parameter count is exact (its
/// tensors' shapes), `model_info` the architecture's numeric keys.
fn gguf_meta(path: &Path) -> Meta {
    let Ok(file) = engine::GgufFile::open(path) else {
        return Meta::default();
    };
    let family = file.architecture().unwrap_or_default().to_owned();
    let parameters: u64 = file
        .tensors
        .iter()
        .map(|t| t.shape.iter().product::<u64>())
        .sum();
    let mut info = Map::new();
    info.insert("general.architecture".into(), json!(family));
    info.insert("general.parameter_count".into(), json!(parameters));
    let prefix = format!("{family}.");
    for (key, value) in &file.metadata {
        if !key.starts_with(&prefix) {
            continue;
        }
        if let Some(n) = value.as_u64() {
            info.insert(key.clone(), json!(n));
        } else if let Some(x) = value.as_f64() {
            info.insert(key.clone(), json!(x));
        }
    }
    let quantization = file
        .get("general.file_type")
        .and_then(engine::GgufValue::as_u64)
        .map(file_type_name)
        .unwrap_or_default();
    Meta {
        family,
        quantization,
        parameters: Some(parameters),
        info,
    }
}

/// llama.cpp's name of a `general.file_type` (`llama_ftype`).
fn file_type_name(t: u64) -> String {
    let name = match t {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        32 => "BF16",
        other => return format!("file type {other}"),
    };
    name.to_owned()
}

/// `135000000` → `"135.0M"`, as Ollama writes sizes.
fn parameter_size(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.1}B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1}M", n / 1e6)
    } else {
        format!("{:.1}K", n / 1e3)
    }
}

/// A name as Ollama lists it: with a tag.
fn tagged(id: &str) -> String {
    if id.rsplit('/').next().is_some_and(|last| last.contains(':')) {
        id.to_owned()
    } else {
        format!("{id}:latest")
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

fn tag_entry(e: &CatalogEntry) -> Value {
    let f = facts(&e.path);
    let name = tagged(&e.id);
    json!({
        "name": name,
        "model": name,
        "modified_at": rfc3339(UNIX_EPOCH + Duration::from_secs(e.created)),
        "size": f.size,
        "digest": f.digest,
        "details": f.details,
    })
}

async fn tags(State(state): State<AppState>) -> Response {
    let catalog = state.models.catalog();
    let entries = catalog.list();
    let models = tokio::task::spawn_blocking(move || entries.iter().map(tag_entry).collect())
        .await
        .unwrap_or_else(|_| Vec::<Value>::new());
    state.metrics.count_request("/api/tags", 200);
    Json(json!({ "models": models })).into_response()
}

async fn ps(State(state): State<AppState>) -> Response {
    let now = SystemTime::now();
    let mut models = Vec::new();
    for m in state.supervisor.status().await {
        if m.state != "ready" {
            continue;
        }
        let left = match m.keep_alive {
            // Ollama writes a far future for a model kept forever.
            KeepAlive::Forever => Duration::from_secs(100 * 365 * 24 * 3600),
            KeepAlive::For(d) => d.saturating_sub(m.idle_for.unwrap_or_default()),
        };
        let path = m.path.clone();
        let f = tokio::task::spawn_blocking(move || facts(&path)).await.ok();
        let name = tagged(&m.id);
        let memory = m.memory_bytes().unwrap_or(m.estimate_bytes);
        models.push(json!({
            "name": name,
            "model": name,
            "size": memory,
            "digest": f.as_ref().map(|f| f.digest.clone()),
            "details": f.as_ref().map(|f| f.details.clone()),
            "expires_at": rfc3339(now + left),
            "size_vram": memory,
            "context_length": m.info.as_ref().map(|i| i.context_length),
        }));
    }
    state.metrics.count_request("/api/ps", 200);
    Json(json!({ "models": models })).into_response()
}

#[derive(Deserialize)]
struct ShowRequest {
    model: Option<String>,
    /// The older name of `model`.
    name: Option<String>,
    /// Ollama's full tokenizer arrays in `model_info`: not given here.
    verbose: Option<bool>,
}

async fn show(State(state): State<AppState>, request: Request) -> Response {
    let result = async {
        let body = read_body(&state, request).await?;
        let req: ShowRequest = serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid("model", format!("invalid body: {e}")))?;
        if req.verbose == Some(true) {
            return Err(ApiError::invalid(
                "verbose",
                "verbose is not supported: model_info holds the architecture's numbers only",
            ));
        }
        let requested = req
            .model
            .or(req.name)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| ApiError::invalid("model", "model is required"))?;
        let name = resolve_name(&state, &requested);
        let model = state.models.get(&name).await?;
        let defaults = state.models.catalog().defaults(&name);
        let path = model.path.clone();
        let f = tokio::task::spawn_blocking(move || facts(&path))
            .await
            .map_err(|e| ApiError::Internal {
                message: format!("reading the checkpoint: {e}"),
            })?;
        let template = model
            .tokenizer
            .select_chat_template(&engine::RenderOptions::default())
            .source()
            .to_owned();
        let mut capabilities = vec!["completion", "tools"];
        let harmony = ToolSyntax::of_tokenizer(&model.tokenizer).format == ToolFormat::Harmony;
        if harmony || ThinkMarkers::of_tokenizer(&model.tokenizer).is_some() {
            capabilities.push("thinking");
        }
        let parameters: Vec<String> = [
            ("temperature", defaults.temperature.map(|v| v.to_string())),
            ("top_p", defaults.top_p.map(|v| v.to_string())),
            ("top_k", defaults.top_k.map(|v| v.to_string())),
            ("min_p", defaults.min_p.map(|v| v.to_string())),
            (
                "repeat_penalty",
                defaults.repetition_penalty.map(|v| v.to_string()),
            ),
            ("num_predict", defaults.max_tokens.map(|v| v.to_string())),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some(format!("{k} {}", v?)))
        .collect();
        let modelfile = format!(
            "# The checkpoint mlxd serves as {requested}\nFROM {}\n{}",
            model.path.display(),
            parameters
                .iter()
                .map(|p| format!("PARAMETER {p}\n"))
                .collect::<String>()
        );
        Ok(json!({
            "modelfile": modelfile,
            "parameters": parameters.join("\n"),
            "template": template,
            "details": f.details,
            "model_info": Value::Object(f.info),
            "capabilities": capabilities,
            "modified_at": rfc3339(
                UNIX_EPOCH + Duration::from_secs(super::catalog::modified_secs(&model.path))
            ),
        }))
    }
    .await;
    let response = match result {
        Ok(body) => Json(body).into_response(),
        Err(e) => error_response(&e),
    };
    state
        .metrics
        .count_request("/api/show", response.status().as_u16());
    response
}
