//! `mlxd serve`: the daemon. The OpenAI-compatible API on one listener,
//! the admin API on another, one worker process per loaded model under the
//! supervisor, and a graceful shutdown on SIGTERM/SIGINT: stop accepting,
//! let in-flight requests finish, stop the workers (SIGTERM, then SIGKILL).
//! Settings come from the layered configuration (`config`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use server::http::catalog::{
    CatalogEntry, KvBatch, KvMemory, ModelCatalog, format_of, modified_secs,
};
use server::http::{self, AppState, HttpConfig, admin_router, router};
use server::supervisor::process::ProcessLauncher;
use server::supervisor::{KeepAlive, Launcher, Supervisor, SupervisorConfig};

use crate::config::{self, Config, ConfigArgs, ModelsConfig, WorkerKv};
use crate::{logging, models, sampling};

/// The name the built-in default model is served under.
pub const DEFAULT_MODEL_NAME: &str = "SmolLM2-135M-Instruct";

/// Arguments of `mlxd serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// A model to serve: a directory, a .gguf file, an alias, or org/name in
    /// the Hugging Face cache (repeatable; `name=path` sets the name it is
    /// served under). Default: the configured default, else the built-in
    /// model. Models in the cache and models dir are served too.
    #[arg(short, long = "model", env = "MLXD_MODELS", value_delimiter = ',')]
    models: Vec<String>,
    /// Longest a model may take to load, in seconds.
    #[arg(long, env = "MLXD_LOAD_TIMEOUT", default_value_t = 300)]
    load_timeout: u64,
    /// Seconds a worker may go without a heartbeat before it is killed as
    /// hung (it writes one per decode step and while idle; keep this above
    /// the slowest 2048-token prefill chunk).
    #[arg(long, env = "MLXD_HEARTBEAT_TIMEOUT", default_value_t = 120)]
    heartbeat_timeout: u64,
    /// Seconds in-flight requests get to finish at shutdown.
    #[arg(long, env = "MLXD_SHUTDOWN_GRACE", default_value_t = 30)]
    shutdown_grace: u64,
}

fn keep_alive(k: config::KeepAlive) -> KeepAlive {
    match k {
        config::KeepAlive::Forever => KeepAlive::Forever,
        config::KeepAlive::Unload => KeepAlive::For(Duration::ZERO),
        config::KeepAlive::For(d) => KeepAlive::For(d),
    }
}

/// The models named on the command line (or the default one), as
/// `(name, path)`.
fn served_models(
    specs: &[String],
    models: &ModelsConfig,
) -> anyhow::Result<Vec<(String, PathBuf)>> {
    if specs.is_empty() {
        return Ok(vec![match &models.default {
            Some(name) => (
                name.clone(),
                canonical(models::resolve_in(models, Some(name))?),
            ),
            None => (
                DEFAULT_MODEL_NAME.to_owned(),
                canonical(models::default_model()?),
            ),
        }]);
    }
    specs
        .iter()
        .map(|spec| {
            let (name, reference) = match spec.split_once('=') {
                Some((name, reference)) => (Some(name.to_owned()), reference),
                None => (None, spec.as_str()),
            };
            let path = models::resolve_in(models, Some(reference))?;
            let name = name.unwrap_or_else(|| default_name(reference, &path));
            Ok((name, canonical(path)))
        })
        .collect()
}

/// `path` without `..`, `.` or symbolic links (as `/admin/status` shows
/// it), or as given when it cannot be resolved.
fn canonical(path: PathBuf) -> PathBuf {
    std::fs::canonicalize(&path).unwrap_or(path)
}

/// The model requests that name none get: `models.default` (served from
/// then on, if `--model` did not name it), else the one model served.
fn default_model(
    served: &mut Vec<(String, PathBuf)>,
    models: &ModelsConfig,
) -> anyhow::Result<Option<String>> {
    match &models.default {
        Some(name) => {
            if !served.iter().any(|(n, _)| n == name) {
                let path = models::resolve_in(models, Some(name))
                    .with_context(|| format!("the default model {name}"))?;
                served.push((name.clone(), canonical(path)));
            }
            Ok(Some(name.clone()))
        }
        None => Ok(match served.as_slice() {
            [(name, _)] => Some(name.clone()),
            _ => None,
        }),
    }
}

/// `org/name` and aliases stay as given; a path is named after its file or
/// folder.
fn default_name(reference: &str, path: &Path) -> String {
    if !Path::new(reference).exists() {
        return reference.to_owned();
    }
    let stem = if path.is_dir() {
        path.file_name()
    } else {
        path.file_stem()
    };
    stem.map_or_else(
        || reference.to_owned(),
        |s| s.to_string_lossy().into_owned(),
    )
}

/// What the daemon serves: the models given at start, then whatever the
/// Hugging Face cache and the models dir hold now (so a `mlxd pull` while
/// it runs is served without a restart). Requests name models; they never
/// reach arbitrary filesystem paths.
struct ConfigCatalog {
    served: Vec<CatalogEntry>,
    models: ModelsConfig,
    /// What requests that name no model get.
    default: Option<String>,
    /// Each checkpoint's own sampling defaults, read once (by path).
    own_defaults: std::sync::Mutex<std::collections::HashMap<PathBuf, api::ModelDefaults>>,
}

impl ConfigCatalog {
    fn entries(&self) -> Vec<CatalogEntry> {
        let mut entries = self.served.clone();
        for m in models::discover(&self.models) {
            if !entries.iter().any(|e| e.id == m.name) {
                entries.push(CatalogEntry {
                    format: format_of(&m.path),
                    created: modified_secs(&m.path),
                    id: m.name,
                    path: m.path,
                });
            }
        }
        entries
    }
}

impl ModelCatalog for ConfigCatalog {
    fn resolve(&self, name: &str) -> Option<PathBuf> {
        if let Some(e) = self.served.iter().find(|e| e.id == name) {
            return Some(e.path.clone());
        }
        // Per request: names and paths only (`entries` reads every model's
        // metadata for the listing).
        models::locate(&self.models)
            .into_iter()
            .find(|(id, _)| id == name)
            .map(|(_, path)| path)
    }

    fn list(&self) -> Vec<CatalogEntry> {
        self.entries()
    }

    fn context_length(&self, name: &str) -> Option<u32> {
        self.models.context_length_for(name)
    }

    fn default_model(&self) -> Option<String> {
        self.default.clone()
    }

    fn pulls(&self) -> bool {
        true
    }

    /// Ollama's `/api/pull`: `mlxd pull`'s download into the configured hub
    /// cache, from `HF_ENDPOINT` (default: the Hugging Face hub) with
    /// `HF_TOKEN` (default: the token file `huggingface-cli login` writes).
    fn pull(
        &self,
        repo: &str,
        revision: &str,
        events: tokio::sync::mpsc::UnboundedSender<server::http::catalog::PullEvent>,
    ) -> Result<PathBuf, String> {
        let endpoint =
            std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".to_owned());
        let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty());
        let target = crate::pull::Target {
            repo: repo.to_owned(),
            revision: revision.to_owned(),
            endpoint,
            token,
        };
        crate::pull::pull_repo(&target, &self.models.hf_cache, Some(events))
            .map_err(|e| format!("{e:#}"))
    }

    fn kv_memory(&self, name: &str) -> Option<KvMemory> {
        Some(KvMemory {
            batch: match self.models.worker_kv() {
                WorkerKv::Bytes(bytes) => KvBatch::Bytes(bytes),
                WorkerKv::Tokens { tokens, cap } => KvBatch::Tokens { tokens, cap },
            },
            prompt_cache: self.models.prompt_cache,
            quant: self.models.kv_bits_for(name),
        })
    }

    fn draft_model(&self, name: &str) -> Option<PathBuf> {
        let draft = self.models.speculative_for(name).ok()??.draft_model?;
        Some(
            locate_draft(&self.models, &draft)
                .unwrap_or_else(|| config::expand_home(Path::new(&draft))),
        )
    }

    fn pooling(&self, name: &str) -> Option<protocol::Pooling> {
        self.models.overrides_for(name).pooling.map(|p| match p {
            config::EmbedPooling::Last => protocol::Pooling::Last,
            config::EmbedPooling::Mean => protocol::Pooling::Mean,
            config::EmbedPooling::Cls => protocol::Pooling::Cls,
        })
    }

    /// The configured overrides, else the model's `generation_config.json`,
    /// else [`sampling::SMALL_MODEL_DEFAULTS`].
    fn defaults(&self, name: &str) -> api::ModelDefaults {
        let o = self.models.overrides_for(name);
        let configured = api::ModelDefaults {
            temperature: o.temperature,
            top_p: o.top_p,
            top_k: o.top_k,
            min_p: o.min_p,
            repetition_penalty: o.repetition_penalty,
            max_tokens: o.max_tokens,
        };
        let own = self
            .resolve(name)
            .map(|path| {
                let mut cache = self
                    .own_defaults
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                cache
                    .entry(path)
                    .or_insert_with_key(|path| sampling::of_model(path))
                    .clone()
            })
            .unwrap_or_default();
        sampling::layered(configured, own)
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let (config, provenance) = config::load(&args.config)?;
    logging::init(Some(&config.log));
    tracing::info!("{}", config::summary(&config, &provenance));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("mlxd-serve")
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(args, config))
}

/// The batch limits every worker gets on its command line: the KV rule
/// the catalog's estimates count (`ConfigCatalog::kv_memory`), always
/// given, so that admission and the worker agree. Sized from the model, the
/// worker takes `--kv-tokens` positions of its KV with `--kv-memory` as the
/// cap; the prompt cache is a quarter of the batch's KV unless configured.
fn worker_args(models: &config::ModelsConfig) -> Vec<String> {
    let mut args = vec![("--max-batch", models.max_batch as u64)];
    match models.worker_kv() {
        WorkerKv::Bytes(bytes) => args.push(("--kv-memory", bytes)),
        WorkerKv::Tokens { tokens, cap } => {
            args.extend([("--kv-tokens", tokens), ("--kv-memory", cap)]);
        }
    }
    if let Some(bytes) = models.prompt_cache {
        args.push(("--prompt-cache-memory", bytes));
    }
    let mut args: Vec<String> = args
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
        .collect();
    if models.prompt_cache_disk > 0 {
        args.extend(disk_cache_args(models, models.prompt_cache_disk));
    }
    args
}

/// The arguments of each model with overrides, by model name (after
/// [`worker_args`], whose flags they override): its speculative decoding
/// (replacing the default's) and its prompt cache on disk.
fn model_worker_args(models: &config::ModelsConfig) -> HashMap<String, Vec<String>> {
    models
        .overrides
        .iter()
        .map(|(name, o)| {
            let mut args = spec_args(models, models.speculative_for(name));
            if let Some(bytes) = o.prompt_cache_disk {
                args.extend(disk_cache_args(models, bytes.0));
            }
            (name.clone(), args)
        })
        .collect()
}

fn disk_cache_args(models: &config::ModelsConfig, bytes: u64) -> [String; 4] {
    [
        "--prompt-cache-dir".to_string(),
        models.prompt_cache_dir.display().to_string(),
        "--prompt-cache-disk".to_string(),
        bytes.to_string(),
    ]
}

/// The speculative decoding arguments of a worker (`choice`, checked when
/// the configuration was loaded: an error is none), its draft model's name
/// resolved to a path.
fn spec_args(
    models: &config::ModelsConfig,
    choice: Result<Option<config::SpecChoice>, String>,
) -> Vec<String> {
    let choice = choice.ok().flatten();
    config::speculative_args(choice.as_ref(), |draft| locate_draft(models, draft))
}

/// The path of the draft model `name` names, if it is a model name.
fn locate_draft(models: &config::ModelsConfig, name: &str) -> Option<PathBuf> {
    models::locate(models)
        .into_iter()
        .find(|(id, _)| id == name)
        .map(|(_, path)| path)
}

async fn serve(args: ServeArgs, config: Config) -> anyhow::Result<()> {
    let mut served = served_models(&args.models, &config.models)?;
    let default = default_model(&mut served, &config.models)?;
    let program = std::env::current_exe().context("locating the mlxd executable")?;
    let launcher = ProcessLauncher::new(program, Duration::from_secs(args.load_timeout))?
        .with_heartbeat_timeout(Duration::from_secs(args.heartbeat_timeout.max(1)))
        .with_worker_args(worker_args(&config.models))
        .with_model_args(
            spec_args(&config.models, config.models.speculative_default()),
            model_worker_args(&config.models),
        )
        .with_worker_log(config.log.level.clone());
    let supervisor = Supervisor::start(
        Arc::new(launcher) as Arc<dyn Launcher>,
        SupervisorConfig {
            keep_alive: keep_alive(config.models.keep_alive),
            memory_budget: config.models.memory_budget_bytes,
            free_memory: free_memory(),
            max_replays: config.models.max_replays,
            ..SupervisorConfig::default()
        },
    );
    let s = &config.server;
    let summary = serde_json::json!({
        "host": s.host,
        "port": s.port,
        "admin_host": s.admin.then_some(&s.admin_host),
        "admin_port": s.admin.then_some(s.admin_port),
        "default_model": default,
        "models": served.iter().map(|(n, p)| serde_json::json!({"name": n, "path": p})).collect::<Vec<_>>(),
        "keep_alive": format!("{:?}", config.models.keep_alive),
        "memory_budget_bytes": config.models.memory_budget_bytes,
        "context_length": config.models.context_length,
        "queue_depth": s.queue_depth,
        "request_timeout_seconds": s.request_timeout.as_secs(),
        "max_connections": s.max_connections,
        "read_timeout_seconds": s.read_timeout.as_secs(),
        "responses_store_max": s.responses_store_max,
        "api_keys": !s.api_keys.is_empty(),
        "admin_api_keys": !s.admin_api_keys.is_empty(),
        "public_metrics": s.public_metrics,
    });
    let catalog = ConfigCatalog {
        served: served
            .iter()
            .map(|(id, path)| CatalogEntry {
                id: id.clone(),
                format: format_of(path),
                created: modified_secs(path),
                path: path.clone(),
            })
            .collect(),
        models: config.models.clone(),
        default,
        own_defaults: Default::default(),
    };
    let http = HttpConfig {
        api_keys: s.api_keys.clone(),
        admin_api_keys: s.admin_api_keys.clone(),
        public_metrics: s.public_metrics,
        cors_origins: s.cors_origins.clone(),
        max_body_bytes: usize::try_from(s.max_body_bytes).unwrap_or(usize::MAX),
        request_timeout: s.request_timeout,
        queue_depth: s.queue_depth,
        max_connections: s.max_connections,
        read_timeout: s.read_timeout,
        responses_store_max: s.responses_store_max,
    };
    let state = AppState::new(supervisor.clone(), Arc::new(catalog), http, summary);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let addr = listen_addr(&s.host, s.port)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    tracing::info!(%addr, models = ?served.iter().map(|(n, _)| n).collect::<Vec<_>>(), "serving the OpenAI API");
    let main = tokio::spawn(http::serve(
        listener,
        router(state.clone()),
        &state.config,
        stopped(stop_rx.clone()),
    ));
    let admin = if s.admin {
        let addr = listen_addr(&s.admin_host, s.admin_port)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr} (admin)"))?;
        tracing::info!(%addr, "serving the admin API");
        Some(tokio::spawn(http::serve(
            listener,
            admin_router(state.clone()),
            &state.config,
            stopped(stop_rx.clone()),
        )))
    } else {
        None
    };
    for name in &config.models.preload {
        if let Err(e) = preload(&state, name, &config.models).await {
            tracing::error!(model = %name, "preloading failed: {e}");
        }
    }
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    state.start_draining();
    let _ = stop_tx.send(true);
    let grace = Duration::from_secs(args.shutdown_grace);
    if tokio::time::timeout(grace, main).await.is_err() {
        tracing::warn!(
            "in-flight requests did not finish within {} s",
            grace.as_secs()
        );
    }
    if let Some(admin) = admin {
        let _ = tokio::time::timeout(Duration::from_secs(1), admin).await;
    }
    supervisor.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

fn listen_addr(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = host
        .parse()
        .with_context(|| format!("invalid listen address {host}"))?;
    Ok(SocketAddr::new(ip, port))
}

async fn preload(state: &AppState, name: &str, models: &ModelsConfig) -> anyhow::Result<()> {
    let model = state
        .models
        .get(name)
        .await
        .map_err(|e| anyhow::anyhow!(e.to_string()))?;
    let info = state
        .supervisor
        .load(model.spec(), Some(keep_alive(models.keep_alive_for(name))))
        .await?;
    tracing::info!(model = %name, pid = ?info.pid, "preloaded");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Where model loads read the machine's free memory: the system's report
/// on macOS (unified memory) and on Linux machines without an NVIDIA GPU;
/// on a CUDA machine the weights live in the GPU's memory, which the
/// system does not report, so only the budget counts there.
fn free_memory() -> engine::memory::FreeMemory {
    use engine::memory::FreeMemory;
    if cfg!(target_os = "linux") && std::path::Path::new("/dev/nvidiactl").exists() {
        tracing::info!(
            "an NVIDIA GPU is present: model loads count the memory budget, not the system's free memory"
        );
        FreeMemory::Ignored
    } else {
        FreeMemory::System
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use server::http::catalog::estimate_bytes;

    const GIB: u64 = 1 << 30;

    /// A checkpoint directory with `model`'s shape (config.json as its
    /// authors ship it) and a sparse weights file of `weights` bytes.
    fn checkpoint(
        root: &Path,
        name: &str,
        (layers, kv_heads, head_dim, context): (u64, u64, u64, u64),
        weights: u64,
    ) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir(&dir).unwrap();
        let heads = kv_heads * 3;
        let config = serde_json::json!({
            "model_type": "llama",
            "hidden_size": heads * head_dim,
            "intermediate_size": 4 * heads * head_dim,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "head_dim": head_dim,
            "vocab_size": 32000,
            "max_position_embeddings": context,
            "rms_norm_eps": 1e-5,
            "torch_dtype": "bfloat16",
        });
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let file = std::fs::File::create(dir.join("model.safetensors")).unwrap();
        file.set_len(weights).unwrap();
        dir
    }

    fn catalog(total_memory: u64) -> ConfigCatalog {
        let machine = config::Machine { total_memory };
        ConfigCatalog {
            served: Vec::new(),
            models: Config::defaults(Path::new("/home/u"), machine).models,
            default: None,
            own_defaults: Default::default(),
        }
    }

    #[test]
    fn the_prompt_cache_on_disk_goes_to_the_workers_with_per_model_sizes() {
        let mut catalog = catalog(24 * GIB);
        assert!(!worker_args(&catalog.models).contains(&"--prompt-cache-disk".to_string()));
        catalog.models.prompt_cache_disk = 2 * GIB;
        let args = worker_args(&catalog.models);
        let tail = &args[args.len() - 4..];
        assert_eq!(
            tail,
            [
                "--prompt-cache-dir",
                "/home/u/.cache/mlxd/prompt-cache",
                "--prompt-cache-disk",
                "2147483648"
            ]
        );
        catalog.models.overrides.insert(
            "small".into(),
            config::ModelOverrides {
                prompt_cache_disk: Some(config::ByteSize(0)),
                ..Default::default()
            },
        );
        let per_model = model_worker_args(&catalog.models);
        assert_eq!(per_model.len(), 1);
        assert_eq!(per_model["small"][3], "0");
    }

    #[test]
    fn four_small_models_fit_a_24_gib_machines_default_budget() {
        let root = tempfile::tempdir().unwrap();
        let catalog = catalog(24 * GIB);
        let budget = catalog.models.memory_budget_bytes;
        // (layers, KV heads, head size, context) and 4-bit weights of
        // SmolLM2-135M and -360M, Qwen2.5-0.5B and -1.5B, Llama-3.2-1B.
        let small = [
            ("smollm2-135m", (30, 3, 64, 8192), 90 << 20),
            ("smollm2-360m", (32, 5, 64, 8192), 230 << 20),
            ("qwen2.5-0.5b", (24, 2, 64, 32768), 280 << 20),
            ("qwen2.5-1.5b", (28, 2, 128, 32768), 870 << 20),
            ("llama-3.2-1b", (16, 8, 64, 131072), 700 << 20),
        ];
        let kv = catalog.kv_memory("any");
        let estimates: Vec<u64> = small
            .iter()
            .map(|(name, shape, weights)| {
                let dir = checkpoint(root.path(), name, *shape, *weights);
                estimate_bytes(&dir, None, kv).unwrap()
            })
            .collect();
        let total: u64 = estimates.iter().sum();
        assert!(
            total <= budget,
            "{estimates:?} add up to more than {budget}"
        );
        // Each counts KV for its own shape: the 8K-context models room for
        // 32 sequences of 1,024 tokens, the 128K-context one a full context.
        let batch = 2 * 30 * 3 * 64 * 2 * 32 * 1024; // K and V, bf16
        let smollm2 = (90 << 20) + batch + batch / 4;
        assert_eq!(estimates[0], smollm2 + smollm2 / 10);
        assert!(estimates[4] > 4 * GIB, "{estimates:?}");
        // A quarter of the budget per model, as every model counted before,
        // let two of them in.
        let quarter = KvMemory {
            batch: KvBatch::Bytes(budget / 4),
            prompt_cache: None,
            quant: None,
        };
        let dir = root.path().join("smollm2-135m");
        let old = estimate_bytes(&dir, None, Some(quarter)).unwrap();
        assert!(3 * old > budget);

        // What does not fit is still counted as it is: a 14B model with a
        // 32K context needs more than the whole budget, and the supervisor
        // refuses a model whose estimate exceeds it.
        let big = checkpoint(root.path(), "qwen2.5-14b", (48, 8, 128, 32768), 8300 << 20);
        assert!(estimate_bytes(&big, None, kv).unwrap() > budget);
    }

    #[test]
    fn a_configured_kv_memory_is_the_same_for_every_model() {
        let mut catalog = catalog(24 * GIB);
        catalog.models.kv_memory = Some(GIB);
        catalog.models.prompt_cache = Some(0);
        let kv = catalog.kv_memory("any").unwrap();
        assert_eq!(kv.batch, KvBatch::Bytes(GIB));
        assert_eq!(kv.prompt_cache, Some(0));
        assert_eq!(
            worker_args(&catalog.models),
            [
                "--max-batch",
                "32",
                "--kv-memory",
                "1073741824",
                "--prompt-cache-memory",
                "0"
            ]
        );
        catalog.models.kv_memory = None;
        catalog.models.prompt_cache = None;
        let cap = (catalog.models.memory_budget_bytes / 4).to_string();
        assert_eq!(
            worker_args(&catalog.models),
            [
                "--max-batch",
                "32",
                "--kv-tokens",
                "32768",
                "--kv-memory",
                cap.as_str()
            ]
        );
    }
}
