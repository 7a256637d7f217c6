//! The supervisor: starts, watches, restarts and stops one worker per model
//! and hands the HTTP layer a lease on a ready worker.
//!
//! It is an actor (text-generation-inference's queue pattern): a cloneable
//! [`Supervisor`] handle sends messages to one task that owns every model's
//! state, so no lock guards it. Policies follow Ollama's scheduler:
//! - a model loads at its first request; concurrent first requests share
//!   one load;
//! - **memory admission**: a model's estimate (weights + KV cache for its
//!   context) must fit the budget beside the loaded ones; idle models are
//!   evicted least-recently-used first; otherwise the request is refused;
//! - **keep-alive** per model (the latest request's wins): unload after
//!   that long idle; zero unloads when the last request ends; forever never;
//! - a count of in-flight requests per worker: unloading waits for it to
//!   reach zero;
//! - **crashes**: a worker's in-flight requests are resubmitted to a fresh
//!   worker as continuations ([`replay`]), which starts at once: the first
//!   crash in the window has no back-off, repeated ones wait a back-off
//!   doubling from 1 s; too many crashes in a window mark the model failed
//!   until it is loaded again explicitly.

mod actor;
pub mod embed;
pub mod process;
pub mod replay;
pub mod worker;
mod worker_log;

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use engine::memory::FreeMemory;
use tokio::sync::{mpsc, oneshot};

pub use embed::{EmbedError, Embeddings};
pub use replay::Generation;
pub use worker::{
    EventStream, ExitReport, KvBits, LaunchError, LaunchSpec, Launcher, LiveStats, Worker,
    WorkerEvent, WorkerGone, WorkerInfo,
};

/// How long an idle model stays loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// Never unload for idleness.
    Forever,
    /// Unload after this long without requests (zero: when the last
    /// request ends).
    For(Duration),
}

/// Times a request is resubmitted after worker crashes, by default.
pub const DEFAULT_MAX_REPLAYS: u32 = 3;

/// Policies of the supervisor.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Keep-alive of models whose requests do not say.
    pub keep_alive: KeepAlive,
    /// Bytes the loaded models' estimates may add up to.
    pub memory_budget: u64,
    /// Where a load reads the memory free on the machine: a model loads
    /// only if its estimate fits what is free (plus what the idle models it
    /// evicts held), leaving the system its reserve.
    pub free_memory: FreeMemory,
    /// Crashes within `crash_window` that mark a model failed.
    pub max_crashes: usize,
    pub crash_window: Duration,
    /// Longest back-off between restarts.
    pub backoff_cap: Duration,
    /// Times one request may be resubmitted to a new worker after crashes.
    pub max_replays: u32,
    /// SIGTERM to SIGKILL when stopping a worker.
    pub stop_grace: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            keep_alive: KeepAlive::For(Duration::from_secs(600)),
            memory_budget: u64::MAX,
            free_memory: FreeMemory::Ignored,
            max_crashes: 5,
            crash_window: Duration::from_secs(300),
            backoff_cap: Duration::from_secs(30),
            max_replays: DEFAULT_MAX_REPLAYS,
            stop_grace: Duration::from_secs(5),
        }
    }
}

/// A model as the supervisor needs it: resolved and estimated by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// The name requests use.
    pub id: String,
    pub path: PathBuf,
    pub context_length: Option<u32>,
    /// How its KV cache is quantized, if configured.
    pub kv_bits: Option<KvBits>,
    /// Weights plus KV cache for the context, in bytes.
    pub estimate_bytes: u64,
}

/// Why a request could not get a worker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SupervisorError {
    #[error("model {model} failed to load: {reason}")]
    LoadFailed { model: String, reason: String },
    #[error(
        "not enough memory for model {model}: it needs about {need} MB, the budget is {budget} MB and {used} MB are held by busy models"
    )]
    InsufficientMemory {
        model: String,
        need: u64,
        budget: u64,
        used: u64,
    },
    #[error(
        "not enough free memory for model {model}: it needs about {need} MB and the machine has {free} MB free (keeping {reserve} MB for the system) with no idle model left to unload"
    )]
    InsufficientFreeMemory {
        model: String,
        need: u64,
        free: u64,
        reserve: u64,
    },
    #[error("model {model} is marked failed: {reason}; load it again to retry")]
    ModelFailed { model: String, reason: String },
    #[error("{0}")]
    WorkerGone(String),
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// One model's state, as reported to the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelStatus {
    pub id: String,
    pub path: PathBuf,
    /// "loading", "ready", "stopping", "idle" (not loaded) or "failed".
    pub state: &'static str,
    pub info: Option<WorkerInfo>,
    /// The ready worker's latest `Stats` report.
    pub live: Option<LiveStats>,
    pub in_flight: usize,
    pub idle_for: Option<Duration>,
    pub keep_alive: KeepAlive,
    pub estimate_bytes: u64,
    pub restarts: u64,
    pub failure: Option<String>,
}

impl ModelStatus {
    /// The worker's memory: MLX's active memory from its latest `Stats`
    /// report, else what it reported when ready.
    pub fn memory_bytes(&self) -> Option<u64> {
        match (&self.live, &self.info) {
            (Some(live), _) => Some(live.active_memory),
            (None, Some(info)) => Some(info.memory_used_bytes),
            (None, None) => None,
        }
    }
}

type LeaseReply = oneshot::Sender<Result<Lease, SupervisorError>>;

enum Msg {
    Acquire {
        spec: ModelSpec,
        keep_alive: Option<KeepAlive>,
        reset_failure: bool,
        reply: LeaseReply,
    },
    Loaded {
        model: String,
        generation: u64,
        result: Result<Arc<dyn Worker>, LaunchError>,
    },
    Exited {
        model: String,
        generation: u64,
        report: ExitReport,
    },
    Release {
        model: String,
        generation: u64,
    },
    Unload {
        model: String,
        reply: oneshot::Sender<bool>,
    },
    Status {
        reply: oneshot::Sender<Vec<ModelStatus>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Counts of requests cancelled before they finished.
#[derive(Debug, Default)]
struct CancelCounts {
    /// Requests the worker confirmed cancelled.
    cancelled: AtomicU64,
    /// Tokens that reached the front-end after it sent the cancel.
    tokens_after_cancel: AtomicU64,
}

/// The handle the HTTP layer holds.
#[derive(Clone)]
pub struct Supervisor {
    tx: mpsc::UnboundedSender<Msg>,
    next_request: Arc<AtomicU64>,
    cancels: Arc<CancelCounts>,
    /// Replayed requests pass these one at a time per model.
    gates: Arc<replay::ProbationGates>,
    max_replays: u32,
}

impl Supervisor {
    /// Starts the actor on the current runtime.
    pub fn start(launcher: Arc<dyn Launcher>, config: SupervisorConfig) -> Supervisor {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = Supervisor {
            tx,
            next_request: Arc::new(AtomicU64::new(1)),
            cancels: Arc::new(CancelCounts::default()),
            gates: Arc::default(),
            max_replays: config.max_replays,
        };
        let actor = actor::Actor::new(launcher, config, handle.clone());
        tokio::spawn(actor.run(rx));
        handle
    }

    async fn ask<T>(&self, msg: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Option<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(msg(reply)).ok()?;
        rx.await.ok()
    }

    /// A lease on a ready worker for `spec`, loading it if needed.
    pub async fn acquire(
        &self,
        spec: ModelSpec,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Lease, SupervisorError> {
        self.acquire_inner(spec, keep_alive, false).await
    }

    /// Loads a model (clearing a failed mark) and returns what its worker
    /// reported; the model then stays for its keep-alive.
    pub async fn load(
        &self,
        spec: ModelSpec,
        keep_alive: Option<KeepAlive>,
    ) -> Result<WorkerInfo, SupervisorError> {
        let lease = self.acquire_inner(spec, keep_alive, true).await?;
        Ok(lease.info().clone())
    }

    async fn acquire_inner(
        &self,
        spec: ModelSpec,
        keep_alive: Option<KeepAlive>,
        reset_failure: bool,
    ) -> Result<Lease, SupervisorError> {
        let reply = self
            .ask(|reply| Msg::Acquire {
                spec,
                keep_alive,
                reset_failure,
                reply,
            })
            .await;
        reply.unwrap_or(Err(SupervisorError::ShuttingDown))
    }

    /// Unloads a model once its in-flight requests end; `false` if it was
    /// not loaded.
    pub async fn unload(&self, model: &str) -> bool {
        let model = model.to_owned();
        self.ask(|reply| Msg::Unload { model, reply })
            .await
            .unwrap_or(false)
    }

    /// Every known model's state.
    pub async fn status(&self) -> Vec<ModelStatus> {
        self.ask(|reply| Msg::Status { reply })
            .await
            .unwrap_or_default()
    }

    /// Refuses new work and stops every worker (SIGTERM, then SIGKILL).
    pub async fn shutdown(&self) {
        self.ask(|reply| Msg::Shutdown { reply }).await;
    }

    /// Requests cancelled so far, and the tokens that still arrived after
    /// their cancel was sent (how quickly a cancel takes effect).
    pub fn cancel_counts(&self) -> (u64, u64) {
        // Relaxed: independent counters read for reporting.
        (
            self.cancels.cancelled.load(Ordering::Relaxed),
            self.cancels.tokens_after_cancel.load(Ordering::Relaxed),
        )
    }

    /// Counts a cancelled request and the tokens that arrived after its
    /// cancel was sent.
    fn count_cancel(&self, late: u64) {
        // Relaxed: independent counters.
        self.cancels.cancelled.fetch_add(1, Ordering::Relaxed);
        self.cancels
            .tokens_after_cancel
            .fetch_add(late, Ordering::Relaxed);
    }

    fn request_id(&self) -> u64 {
        // Relaxed: a unique counter, ordering nothing else.
        self.next_request.fetch_add(1, Ordering::Relaxed)
    }
}

/// A counted claim on a ready worker: while it lives, the model is not
/// unloaded.
pub struct Lease {
    worker: Arc<dyn Worker>,
    model: String,
    /// The model as the supervisor knows it, for a new lease after a crash.
    spec: ModelSpec,
    generation: u64,
    supervisor: Supervisor,
}

impl Lease {
    /// What the worker reported when ready.
    pub fn info(&self) -> &WorkerInfo {
        self.worker.info()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = self.supervisor.tx.send(Msg::Release {
            model: std::mem::take(&mut self.model),
            generation: self.generation,
        });
    }
}
