//! Configuration of `mlxd serve`: a TOML file (`~/.config/mlxd/mlxd.toml`
//! or `--config`), `MLXD_*` environment variables and flags, with
//! precedence flag > env > file > default.
//!
//! One set of structs carries every key: [`ServerLayer`], [`ModelsLayer`]
//! and [`LogLayer`] derive both clap's `Args` (flags, with `env = "MLXD_..."`)
//! and serde's `Deserialize` (the file's `[server]`, `[models]`, `[log]`
//! tables), so a key's documentation, flag and file name are written once.
//! Defaults are written once too, in [`Config::defaults`]; what depends on
//! the machine (keep-alive and memory budget, by RAM tier, as the reference
//! Python server chose its idle timeout and memory threshold) comes from
//! [`Auto::for_memory`]. [`load`] merges the layers and records where every
//! value came from in a [`Provenance`], which `mlxd config show` prints.
//! Flag naming follows llama-server and text-generation-inference
//! (`--host`, `--port`, `--api-key`, every flag with an env twin).

mod load;
mod machine;
mod render;
mod speculative;
mod validate;
mod values;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{ArgAction, ArgMatches, Args, CommandFactory, FromArgMatches, Parser};
use serde::Deserialize;

pub use load::load;
#[cfg(test)]
use load::load_for;
#[cfg(test)]
use machine::parse_meminfo;
pub use machine::{Auto, Machine, default_config_path, expand_home, gib, home_dir, total_memory};
pub use render::render;
pub use render::summary;
pub use speculative::{SpecChoice, SpeculativeMode, worker_args as speculative_args};
pub use values::{ByteSize, HumanDuration, KeepAlive, LogFormat, MemoryBudget};

/// The `[server]` table: the HTTP listeners and what they accept.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerLayer {
    /// Address the OpenAI API listens on.
    #[arg(long, env = "MLXD_HOST", value_name = "ADDR")]
    pub host: Option<String>,
    /// Port of the OpenAI API.
    #[arg(long, env = "MLXD_PORT")]
    pub port: Option<u16>,
    /// Port of the admin API (load, unload, list running models).
    #[arg(long, env = "MLXD_ADMIN_PORT", value_name = "PORT")]
    pub admin_port: Option<u16>,
    /// Address the admin API listens on (default: 127.0.0.1, whatever
    /// `--host` is). Any address other than loopback needs an admin key.
    #[arg(long, env = "MLXD_ADMIN_HOST", value_name = "ADDR")]
    pub admin_host: Option<String>,
    /// Whether to serve the admin API.
    #[arg(long, env = "MLXD_ADMIN", value_name = "BOOL", action = ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub admin: Option<bool>,
    /// Bearer tokens the OpenAI API accepts (none: no authentication).
    /// Repeat the flag, or separate with commas in the variable.
    #[arg(
        long = "api-key",
        env = "MLXD_API_KEYS",
        value_name = "KEY",
        value_delimiter = ','
    )]
    pub api_keys: Option<Vec<String>>,
    /// Bearer tokens the admin API accepts (none: no authentication).
    #[arg(
        long = "admin-api-key",
        env = "MLXD_ADMIN_API_KEYS",
        value_name = "KEY",
        value_delimiter = ','
    )]
    pub admin_api_keys: Option<Vec<String>>,
    /// Serve `/metrics` without an API key (for a Prometheus scraper); by
    /// default it takes the API keys like the rest of the API.
    #[arg(long, env = "MLXD_PUBLIC_METRICS", value_name = "BOOL", action = ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub public_metrics: Option<bool>,
    /// Origins browsers may call the API from (CORS); `*` allows any.
    #[arg(
        long = "cors-origin",
        env = "MLXD_CORS_ORIGINS",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub cors_origins: Option<Vec<String>>,
    /// Largest request body accepted (bytes, or e.g. "16MiB").
    #[arg(long, env = "MLXD_MAX_BODY_BYTES", value_name = "SIZE")]
    pub max_body_bytes: Option<ByteSize>,
    /// Longest a request may take, queueing included (e.g. "10m").
    #[arg(long, env = "MLXD_REQUEST_TIMEOUT", value_name = "DURATION")]
    pub request_timeout: Option<HumanDuration>,
    /// Requests that may wait per model before new ones get 429.
    #[arg(long, env = "MLXD_QUEUE_DEPTH", value_name = "N")]
    pub queue_depth: Option<usize>,
    /// Client connections open at once on each listener; further clients
    /// wait to be accepted until one closes.
    #[arg(long, env = "MLXD_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Longest a client may take to send a request's headers (or to start
    /// its next request on a kept-alive connection), and then its body
    /// (e.g. "30s").
    #[arg(long, env = "MLXD_READ_TIMEOUT", value_name = "DURATION")]
    pub read_timeout: Option<HumanDuration>,
    /// Responses API responses kept in memory for `previous_response_id`
    /// and `GET /v1/responses/{id}`; the least recently used go first
    /// (0: none are kept).
    #[arg(long, env = "MLXD_RESPONSES_STORE_MAX", value_name = "N")]
    pub responses_store_max: Option<usize>,
}

/// The `[models]` table: where models are, which to serve, and for how long.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsLayer {
    /// Directory of local models (MLX directories and .gguf files), searched
    /// after the Hugging Face cache.
    #[arg(long = "models-dir", env = "MLXD_MODELS_DIR", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The Hugging Face hub cache (default: HF_HUB_CACHE, else HF_HOME/hub,
    /// else ~/.cache/huggingface/hub).
    #[arg(long, env = "MLXD_HF_CACHE", value_name = "DIR")]
    pub hf_cache: Option<PathBuf>,
    /// The model requests get when they name none (default: the built-in
    /// model when no --model is given, else the one model given).
    #[arg(
        long = "default-model",
        env = "MLXD_DEFAULT_MODEL_NAME",
        value_name = "MODEL"
    )]
    pub default: Option<String>,
    /// Models to load at start-up.
    #[arg(
        long,
        env = "MLXD_PRELOAD",
        value_name = "MODEL",
        value_delimiter = ','
    )]
    pub preload: Option<Vec<String>>,
    /// How long an idle model stays loaded: a duration ("10m"), -1 = forever,
    /// 0 = unload after each request (default: by the machine's memory).
    #[arg(
        long,
        env = "MLXD_KEEP_ALIVE",
        value_name = "DURATION",
        allow_hyphen_values = true
    )]
    pub keep_alive: Option<KeepAlive>,
    /// Context length cap for every model (default: each model's own).
    #[arg(long, env = "MLXD_CONTEXT_LENGTH", value_name = "TOKENS")]
    pub context_length: Option<u32>,
    /// Memory loaded models may use: bytes ("24GB") or a fraction of RAM
    /// (0.75) (default: by the machine's memory).
    #[arg(long, env = "MLXD_MEMORY_BUDGET", value_name = "SIZE|FRACTION")]
    pub memory_budget: Option<MemoryBudget>,
    /// Requests a worker decodes together at most (default: 32).
    #[arg(long, env = "MLXD_MAX_BATCH", value_name = "N")]
    pub max_batch: Option<usize>,
    /// Times one request is resubmitted to a fresh worker after its worker
    /// crashed, before it ends with the crash's error (default: 3; 0 turns
    /// replay off).
    #[arg(long, env = "MLXD_MAX_REPLAYS", value_name = "N")]
    pub max_replays: Option<u32>,
    /// Speculative decoding: off, prompt_lookup or draft_model (default:
    /// off; a model with recurrent layers never speculates).
    #[arg(long, env = "MLXD_SPECULATIVE", value_name = "MODE")]
    pub speculative: Option<SpeculativeMode>,
    /// The draft model of speculative decoding: a model name or path with
    /// the same vocabulary (alone, it means speculative = draft_model).
    #[arg(long, env = "MLXD_DRAFT_MODEL", value_name = "MODEL")]
    pub draft_model: Option<String>,
    /// Draft tokens per step at most (default: 4).
    #[arg(long, env = "MLXD_NUM_DRAFT_TOKENS", value_name = "N")]
    pub num_draft_tokens: Option<usize>,
    /// Speculate only while a worker decodes at most this many sequences
    /// together (default: 4).
    #[arg(long, env = "MLXD_SPEC_MAX_BATCH", value_name = "N")]
    pub spec_max_batch: Option<usize>,
    /// KV cache memory of a worker's batch, the same for every model,
    /// counted against the memory budget (default: sized from each model,
    /// room for max_batch sequences of 1,024 tokens, at least one full
    /// context, at most a quarter of the budget).
    #[arg(long, env = "MLXD_KV_MEMORY", value_name = "SIZE")]
    pub kv_memory: Option<ByteSize>,
    /// KV a worker keeps for reuse by later prompts with the same prefix
    /// (default: a quarter of the worker's KV memory; 0 turns it off).
    #[arg(long, env = "MLXD_PROMPT_CACHE", value_name = "SIZE")]
    pub prompt_cache: Option<ByteSize>,
    /// Where the prompt cache keeps entries on disk, each model's in a
    /// folder of its own (default: ~/.cache/mlxd/prompt-cache).
    #[arg(long, env = "MLXD_PROMPT_CACHE_DIR", value_name = "DIR")]
    pub prompt_cache_dir: Option<PathBuf>,
    /// Bytes of prompt cache each model keeps on disk, so that it outlives
    /// the worker and the daemon (default: 0, off).
    #[arg(long, env = "MLXD_PROMPT_CACHE_DISK", value_name = "SIZE")]
    pub prompt_cache_disk: Option<ByteSize>,
    /// Store the KV cache of attention layers quantized to 4 or 8 bits
    /// (about a quarter or half the memory of 16-bit KV; default: full
    /// precision).
    #[arg(long, env = "MLXD_KV_BITS", value_name = "BITS")]
    pub kv_bits: Option<u32>,
    /// Values per scale and bias of a quantized KV cache: 32, 64 or 128
    /// (default: 64).
    #[arg(long, env = "MLXD_KV_GROUP_SIZE", value_name = "N")]
    pub kv_group_size: Option<u32>,
    /// Names for models: `name = "org/repo"` or a path (file only).
    #[arg(skip)]
    pub aliases: BTreeMap<String, String>,
    /// Per-model settings, by model or alias name (file only).
    #[arg(skip)]
    pub overrides: BTreeMap<String, ModelOverrides>,
}

/// The `[log]` table.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogLayer {
    /// Log filter: a level (error, warn, info, debug, trace) or tracing
    /// directives ("info,server=debug").
    #[arg(long = "log-level", env = "MLXD_LOG", value_name = "FILTER")]
    pub level: Option<String>,
    /// Log line format.
    #[arg(long = "log-format", env = "MLXD_LOG_FORMAT", value_name = "FORMAT")]
    pub format: Option<LogFormat>,
}

/// A `[models.overrides."name"]` table: settings of one model that replace
/// the global ones and the request defaults.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelOverrides {
    /// Context length to serve the model with.
    pub context_length: Option<u32>,
    /// Keep-alive of this model.
    pub keep_alive: Option<KeepAlive>,
    /// Default sampling temperature.
    pub temperature: Option<f32>,
    /// Default nucleus sampling mass.
    pub top_p: Option<f32>,
    /// Default top-k.
    pub top_k: Option<u32>,
    /// Default min-p.
    pub min_p: Option<f32>,
    /// Default repetition penalty.
    pub repetition_penalty: Option<f32>,
    /// Default completion length limit.
    pub max_tokens: Option<u32>,
    /// How embeddings pool the model's hidden states: `last` (token),
    /// `mean` or `cls` (first token); by default its sentence-transformers
    /// `1_Pooling/config.json`, else `last`.
    pub pooling: Option<EmbedPooling>,
    /// Bytes of prompt cache this model keeps on disk (0: none).
    pub prompt_cache_disk: Option<ByteSize>,
    /// Speculative decoding of this model (as `[models]`'s keys).
    pub speculative: Option<SpeculativeMode>,
    pub draft_model: Option<String>,
    pub num_draft_tokens: Option<usize>,
    pub spec_max_batch: Option<usize>,
    /// Bits of this model's quantized KV cache (4 or 8).
    pub kv_bits: Option<u32>,
    /// Group size of this model's quantized KV cache (32, 64 or 128).
    pub kv_group_size: Option<u32>,
}

/// A model's embedding pooling, as the configuration names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbedPooling {
    Last,
    Mean,
    Cls,
}

impl EmbedPooling {
    /// Its name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            EmbedPooling::Last => "last",
            EmbedPooling::Mean => "mean",
            EmbedPooling::Cls => "cls",
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileLayer {
    server: ServerLayer,
    models: ModelsLayer,
    log: LogLayer,
}

/// The flags of every command that reads the configuration (`mlxd serve`,
/// `mlxd config show`): `--config` and one flag per key. Flatten it into a
/// command's arguments and pass it to [`load`].
#[derive(Debug, Clone, Default)]
pub struct ConfigArgs {
    /// The file, if `--config`/`MLXD_CONFIG` named one.
    pub config: Option<PathBuf>,
    pub server: ServerLayer,
    pub models: ModelsLayer,
    pub log: LogLayer,
    /// Arg id → where clap took its value (an env var's name, or a flag).
    sources: BTreeMap<String, Source>,
}

/// The derived half of [`ConfigArgs`]; `ConfigArgs` adds where each value
/// came from, which clap knows only while it holds the matches.
#[derive(Debug, Clone, Parser)]
struct ConfigFlags {
    /// Configuration file (default: ~/.config/mlxd/mlxd.toml, when present).
    #[arg(long, env = "MLXD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    server: ServerLayer,
    #[command(flatten)]
    models: ModelsLayer,
    #[command(flatten)]
    log: LogLayer,
}

impl Args for ConfigArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        ConfigFlags::augment_args(cmd)
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        ConfigFlags::augment_args_for_update(cmd)
    }
}

impl FromArgMatches for ConfigArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let flags = ConfigFlags::from_arg_matches(matches)?;
        let mut args = ConfigArgs {
            config: flags.config,
            server: flags.server,
            models: flags.models,
            log: flags.log,
            sources: BTreeMap::new(),
        };
        args.record_sources(matches);
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl ConfigArgs {
    /// The configuration arguments with no flags: the environment only,
    /// and `file` when given (for commands that take just `--config`).
    pub fn from_env(file: Option<PathBuf>) -> anyhow::Result<Self> {
        let matches = ConfigFlags::command()
            .no_binary_name(true)
            .try_get_matches_from(std::iter::empty::<String>())
            .context("reading MLXD_* environment variables")?;
        let mut args = Self::from_arg_matches(&matches)?;
        if file.is_some() {
            args.config = file;
            args.sources.remove("config");
        }
        Ok(args)
    }

    fn record_sources(&mut self, matches: &ArgMatches) {
        let cmd = ConfigFlags::command();
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            let source = match matches.value_source(id) {
                Some(clap::parser::ValueSource::EnvVariable) => arg
                    .get_env()
                    .map(|e| Source::Env(e.to_string_lossy().into_owned())),
                Some(clap::parser::ValueSource::CommandLine) => {
                    arg.get_long().map(|long| Source::Flag(format!("--{long}")))
                }
                _ => None,
            };
            if let Some(source) = source {
                self.sources.insert(id.to_string(), source);
            }
        }
    }

    /// Where the flag/env value of arg `id` came from (a flag when unknown:
    /// arguments built in code rather than parsed).
    fn source_of(&self, id: &str) -> Source {
        self.sources
            .get(id)
            .cloned()
            .unwrap_or_else(|| Source::Flag(format!("--{}", id.replace('_', "-"))))
    }
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The built-in default.
    Default,
    /// Chosen for this machine; the text says why.
    Auto(String),
    /// The configuration file.
    File(PathBuf),
    /// An environment variable, by name.
    Env(String),
    /// A command-line flag.
    Flag(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::Auto(why) => write!(f, "auto: {why}"),
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Env(var) => write!(f, "env {var}"),
            Source::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// Where every key of a [`Config`] came from, by dotted key
/// (`server.port`, `models.aliases.qwen`).
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// The file that was read, if any.
    pub file: Option<PathBuf>,
    sources: BTreeMap<String, Source>,
}

impl Provenance {
    /// The source of `key`; keys never set report [`Source::Default`].
    pub fn source(&self, key: &str) -> &Source {
        self.sources.get(key).unwrap_or(&Source::Default)
    }

    fn set(&mut self, key: impl Into<String>, source: Source) {
        self.sources.insert(key.into(), source);
    }
}

/// The effective configuration: what `mlxd serve` runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub models: ModelsConfig,
    pub log: LogConfig,
    /// The machine the automatic values were chosen for.
    pub machine: Machine,
}

/// `[server]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub admin_port: u16,
    pub admin_host: String,
    pub admin: bool,
    pub api_keys: Vec<String>,
    pub admin_api_keys: Vec<String>,
    pub public_metrics: bool,
    pub cors_origins: Vec<String>,
    pub max_body_bytes: u64,
    pub request_timeout: Duration,
    pub queue_depth: usize,
    pub max_connections: usize,
    pub read_timeout: Duration,
    pub responses_store_max: usize,
}

/// `[models]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelsConfig {
    pub dir: PathBuf,
    pub hf_cache: PathBuf,
    /// `None`: the built-in default model.
    pub default: Option<String>,
    pub preload: Vec<String>,
    pub keep_alive: KeepAlive,
    pub context_length: Option<u32>,
    /// The budget as configured (or chosen).
    pub memory_budget: MemoryBudget,
    /// The budget in bytes on this machine.
    pub memory_budget_bytes: u64,
    pub max_batch: usize,
    /// Resubmissions of one request after worker crashes.
    pub max_replays: u32,
    /// Speculative decoding (`None`: unset, see `speculative_for`).
    pub speculative: Option<SpeculativeMode>,
    pub draft_model: Option<String>,
    pub num_draft_tokens: Option<usize>,
    pub spec_max_batch: Option<usize>,
    /// `None`: the worker's default.
    pub kv_memory: Option<u64>,
    /// `None`: the worker's default.
    pub prompt_cache: Option<u64>,
    pub prompt_cache_dir: PathBuf,
    /// Bytes on disk per model (0: off).
    pub prompt_cache_disk: u64,
    /// Bits of a quantized KV cache; `None`: full precision.
    pub kv_bits: Option<u32>,
    /// `None`: [`DEFAULT_KV_GROUP_SIZE`].
    pub kv_group_size: Option<u32>,
    pub aliases: BTreeMap<String, String>,
    pub overrides: BTreeMap<String, ModelOverrides>,
}

impl ModelsConfig {
    /// The overrides of model `name` (empty when it has none).
    pub fn overrides_for(&self, name: &str) -> ModelOverrides {
        self.overrides.get(name).cloned().unwrap_or_default()
    }

    /// The keep-alive of model `name`.
    pub fn keep_alive_for(&self, name: &str) -> KeepAlive {
        self.overrides
            .get(name)
            .and_then(|o| o.keep_alive)
            .unwrap_or(self.keep_alive)
    }

    /// The context length cap of model `name` (its override, else the
    /// global cap).
    pub fn context_length_for(&self, name: &str) -> Option<u32> {
        self.overrides
            .get(name)
            .and_then(|o| o.context_length)
            .or(self.context_length)
    }

    /// How model `name`'s KV cache is quantized: its override's
    /// `kv_bits`/`kv_group_size`, else the global ones (`None`: full
    /// precision).
    pub fn kv_bits_for(&self, name: &str) -> Option<server::supervisor::KvBits> {
        let o = self.overrides.get(name);
        let bits = o.and_then(|o| o.kv_bits).or(self.kv_bits)?;
        let group_size = o
            .and_then(|o| o.kv_group_size)
            .or(self.kv_group_size)
            .unwrap_or(DEFAULT_KV_GROUP_SIZE);
        Some(server::supervisor::KvBits { bits, group_size })
    }

    /// The KV each worker's batch is given: `kv_memory` bytes when set,
    /// else sized from its model, [`WorkerKv::Tokens`].
    pub fn worker_kv(&self) -> WorkerKv {
        match self.kv_memory {
            Some(bytes) => WorkerKv::Bytes(bytes),
            None => WorkerKv::Tokens {
                tokens: self.max_batch as u64 * engine::memory::KV_TOKENS_PER_SEQUENCE,
                cap: self.memory_budget_bytes / 4,
            },
        }
    }
}

/// The group size of a quantized KV cache when none is configured
/// (mlx-lm's `kv_group_size`).
pub const DEFAULT_KV_GROUP_SIZE: u32 = 64;

/// The KV of a worker's batch, by configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerKv {
    /// `kv_memory`, the same for every model (at least one full context).
    Bytes(u64),
    /// Room for `max_batch` sequences of
    /// [`engine::memory::KV_TOKENS_PER_SEQUENCE`] positions of the model's
    /// KV, at least one full context, at most `cap` (a quarter of the
    /// memory budget).
    Tokens { tokens: u64, cap: u64 },
}

/// `[log]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

impl Config {
    /// Every default, in one place. `home` is the user's home directory;
    /// values that depend on the machine are filled in by [`load`].
    pub fn defaults(home: &Path, machine: Machine) -> Config {
        let auto = Auto::for_memory(machine.total_memory);
        Config {
            server: ServerConfig {
                host: "127.0.0.1".to_string(),
                port: 11440,
                admin_port: 11441,
                admin_host: "127.0.0.1".to_string(),
                admin: true,
                api_keys: Vec::new(),
                admin_api_keys: Vec::new(),
                public_metrics: false,
                cors_origins: Vec::new(),
                max_body_bytes: 16 << 20,
                request_timeout: Duration::from_secs(10 * 60),
                queue_depth: 64,
                max_connections: 512,
                read_timeout: Duration::from_secs(30),
                responses_store_max: 1024,
            },
            models: ModelsConfig {
                dir: home.join(".cache").join("mlxd").join("models"),
                hf_cache: home.join(".cache").join("huggingface").join("hub"),
                default: None,
                preload: Vec::new(),
                keep_alive: auto.keep_alive,
                context_length: None,
                memory_budget: MemoryBudget::Fraction(auto.memory_fraction),
                memory_budget_bytes: MemoryBudget::Fraction(auto.memory_fraction)
                    .bytes(machine.total_memory),
                max_batch: 32,
                max_replays: 3,
                speculative: None,
                draft_model: None,
                num_draft_tokens: None,
                spec_max_batch: None,
                kv_memory: None,
                prompt_cache: None,
                prompt_cache_dir: home.join(".cache").join("mlxd").join("prompt-cache"),
                prompt_cache_disk: 0,
                kv_bits: None,
                kv_group_size: None,
                aliases: BTreeMap::new(),
                overrides: BTreeMap::new(),
            },
            log: LogConfig {
                level: "info".to_string(),
                format: LogFormat::Text,
            },
            machine,
        }
    }
}

/// `mlxd config ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration (as TOML), each value with where
    /// it came from: default, auto (chosen for this machine), file, env or
    /// flag. Takes every flag `mlxd serve` takes.
    Show(Box<ConfigArgs>),
}

/// Runs `mlxd config ...`.
pub fn run(command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Show(args) => {
            let (config, provenance) = load(&args)?;
            print!("{}", render(&config, &provenance));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests;
