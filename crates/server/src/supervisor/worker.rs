//! What the supervisor needs of a worker, as a trait, so that its logic is
//! tested with an in-memory fake (as Ollama's scheduler swaps its runner
//! constructor) and runs in production with real processes
//! ([`super::process`]).

use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use futures::future::BoxFuture;
use protocol::{Done, SamplingParams, TokenEntry};

/// How to start a worker for one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    /// The name requests use.
    pub model_id: String,
    /// The model file or directory.
    pub path: PathBuf,
    /// Context length to serve, if the configuration limits it.
    pub context_length: Option<u32>,
    /// How its KV cache is quantized, if configured.
    pub kv_bits: Option<KvBits>,
    /// Incarnation counter for this model (1 for the first worker).
    pub generation: u64,
}

impl LaunchSpec {
    /// The worker's command-line flags for this model's settings: its
    /// context cap and KV quantization, when configured.
    pub fn model_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(ctx) = self.context_length {
            flags.extend(["--context-length".to_owned(), ctx.to_string()]);
        }
        if let Some(kv) = self.kv_bits {
            flags.extend(["--kv-bits".to_owned(), kv.bits.to_string()]);
            flags.extend(["--kv-group-size".to_owned(), kv.group_size.to_string()]);
        }
        flags
    }
}

/// A quantized KV cache, as configured (`kv_bits`, `kv_group_size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvBits {
    /// 4 or 8.
    pub bits: u32,
    /// 32, 64 or 128.
    pub group_size: u32,
}

impl KvBits {
    /// Bytes one `head_dim`-wide head of one position takes (the engine's
    /// rule, [`engine::memory::kv_head_bytes`]).
    pub fn head_bytes(&self, head_dim: u64, value_bytes: u64) -> u64 {
        engine::memory::kv_head_bytes(head_dim, value_bytes, Some((self.bits, self.group_size)))
    }
}

/// What a worker reported once its model was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    pub pid: Option<u32>,
    pub context_length: u32,
    pub vocab_size: u32,
    pub eos_token_ids: Vec<u32>,
    pub memory_used_bytes: u64,
    pub load_time: Duration,
}

/// What a worker last reported of itself (its `Stats` frames).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveStats {
    /// MLX's active memory, bytes.
    pub active_memory: u64,
    /// The peak of it since the worker started, bytes.
    pub peak_memory: u64,
    /// MLX's buffer cache, bytes.
    pub cache_memory: u64,
    pub active_sequences: u32,
    pub queue_depth: u32,
    /// When the report arrived.
    pub at: std::time::Instant,
}

/// How a worker went away: exit status and the last lines it wrote to
/// stderr, for error messages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExitReport {
    /// "exit status 1", "killed by SIGKILL", "protocol violation: ...".
    pub status: String,
    /// Its last stderr lines, oldest first.
    pub stderr_tail: Vec<String>,
}

impl fmt::Display for ExitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.status)?;
        if !self.stderr_tail.is_empty() {
            write!(f, "; last output: {}", self.stderr_tail.join(" | "))?;
        }
        Ok(())
    }
}

/// One event of a request's stream.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEvent {
    Token(TokenEntry),
    /// The request failed in the worker (followed by `Done`).
    Error {
        code: protocol::ErrorCode,
        message: String,
    },
    /// The request finished; the stream ends after it.
    Done(Done),
    /// Part of one input's vector (embedding requests).
    Embedding(protocol::Embedding),
}

/// The worker died while the request was in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerGone(pub String);

/// A request's events from its worker.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<WorkerEvent, WorkerGone>> + Send>>;

/// Why a worker could not be started or loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LaunchError(pub String);

/// A running worker with its model loaded.
pub trait Worker: Send + Sync + 'static {
    /// What it reported when ready.
    fn info(&self) -> &WorkerInfo;

    /// Sends a generation request (with the grammar its output must
    /// follow, if any); its events arrive on the stream.
    fn submit(
        &self,
        request_id: u64,
        prompt: Vec<u32>,
        params: SamplingParams,
        grammar: Option<protocol::Grammar>,
    ) -> BoxFuture<'_, Result<EventStream, WorkerGone>>;

    /// Sends an embedding request; its vectors and `Done` arrive on the
    /// stream.
    fn embed(&self, request: protocol::Embed) -> BoxFuture<'_, Result<EventStream, WorkerGone>>;

    /// Asks the worker to stop the request (it answers with `Done`).
    fn cancel(&self, request_id: u64) -> BoxFuture<'_, ()>;

    /// Whether the worker is still there (its exit may not have been
    /// reported to the supervisor yet).
    fn is_alive(&self) -> bool;

    /// Its latest `Stats` report (live memory, batch), if one came.
    fn live_stats(&self) -> Option<LiveStats> {
        None
    }

    /// Resolves when the worker is gone, with how it went.
    fn exited(&self) -> BoxFuture<'static, ExitReport>;

    /// Stops the worker: SIGTERM, then SIGKILL after `grace`; resolves when
    /// it is gone and its resources are released.
    fn stop(&self, grace: Duration) -> BoxFuture<'_, ExitReport>;
}

/// Starts workers. `launch` resolves once the model is loaded (or failed).
pub trait Launcher: Send + Sync + 'static {
    fn launch(&self, spec: LaunchSpec) -> BoxFuture<'static, Result<Arc<dyn Worker>, LaunchError>>;
}
