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
//! - **crashes**: a worker's in-flight requests end with the reason (from
//!   the transport); the next request starts a fresh worker after a
//!   back-off doubling from 1 s; too many crashes in a window mark the model
//!   failed until it is loaded again explicitly.

mod actor;
pub mod process;
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

use futures::StreamExt;

use tokio::sync::{mpsc, oneshot};

pub use worker::{
    EventStream, ExitReport, LaunchError, LaunchSpec, Launcher, Worker, WorkerEvent, WorkerGone,
    WorkerInfo,
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

/// Policies of the supervisor.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Keep-alive of models whose requests do not say.
    pub keep_alive: KeepAlive,
    /// Bytes the loaded models' estimates may add up to.
    pub memory_budget: u64,
    /// Crashes within `crash_window` that mark a model failed.
    pub max_crashes: usize,
    pub crash_window: Duration,
    /// Longest back-off between restarts.
    pub backoff_cap: Duration,
    /// SIGTERM to SIGKILL when stopping a worker.
    pub stop_grace: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            keep_alive: KeepAlive::For(Duration::from_secs(600)),
            memory_budget: u64::MAX,
            max_crashes: 5,
            crash_window: Duration::from_secs(300),
            backoff_cap: Duration::from_secs(30),
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
    pub in_flight: usize,
    pub idle_for: Option<Duration>,
    pub keep_alive: KeepAlive,
    pub estimate_bytes: u64,
    pub restarts: u64,
    pub failure: Option<String>,
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
}

impl Supervisor {
    /// Starts the actor on the current runtime.
    pub fn start(launcher: Arc<dyn Launcher>, config: SupervisorConfig) -> Supervisor {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = Supervisor {
            tx,
            next_request: Arc::new(AtomicU64::new(1)),
            cancels: Arc::new(CancelCounts::default()),
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
    generation: u64,
    supervisor: Supervisor,
}

impl Lease {
    /// What the worker reported when ready.
    pub fn info(&self) -> &WorkerInfo {
        self.worker.info()
    }

    /// Starts a generation; the lease is held until the stream is dropped.
    pub async fn generate(
        self,
        prompt: Vec<u32>,
        params: protocol::SamplingParams,
    ) -> Result<Generation, SupervisorError> {
        self.generate_constrained(prompt, params, None).await
    }

    /// Starts a generation whose output follows `grammar` (none: free).
    pub async fn generate_constrained(
        self,
        prompt: Vec<u32>,
        params: protocol::SamplingParams,
        grammar: Option<protocol::Grammar>,
    ) -> Result<Generation, SupervisorError> {
        let request_id = self.supervisor.request_id();
        let stream = self
            .worker
            .submit(request_id, prompt, params, grammar)
            .await
            .map_err(|e| SupervisorError::WorkerGone(e.0))?;
        Ok(Generation {
            stream,
            request_id,
            finished: false,
            worker: Arc::clone(&self.worker),
            lease: Some(self),
        })
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

/// A running request's events. Dropping it before `Done` cancels the
/// request in the worker.
pub struct Generation {
    stream: EventStream,
    request_id: u64,
    finished: bool,
    worker: Arc<dyn Worker>,
    /// Held until the request is over (taken by `drop` to follow a
    /// cancelled request to its end).
    lease: Option<Lease>,
}

impl Generation {
    /// The next event; `None` after `Done` or a worker failure.
    pub async fn next(&mut self) -> Option<Result<WorkerEvent, WorkerGone>> {
        if self.finished {
            return None;
        }
        let item = self.stream.next().await;
        if matches!(item, None | Some(Ok(WorkerEvent::Done(_))) | Some(Err(_))) {
            self.finished = true;
        }
        item
    }

    /// The worker-assigned request id.
    pub fn request_id(&self) -> u64 {
        self.request_id
    }

    /// What the worker reported when ready.
    pub fn info(&self) -> &WorkerInfo {
        self.worker.info()
    }
}

impl Drop for Generation {
    /// Cancels an unfinished request and follows it to its `Done`, counting
    /// the tokens that still arrive (the lease is held until then, so the
    /// model is not unloaded under it).
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let worker = Arc::clone(&self.worker);
        let id = self.request_id;
        let mut stream = std::mem::replace(&mut self.stream, Box::pin(futures::stream::empty()));
        let Some(lease) = self.lease.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            worker.cancel(id).await;
            let mut late = 0u64;
            while let Some(event) = stream.next().await {
                match event {
                    Ok(WorkerEvent::Token(_)) => late += 1,
                    Ok(WorkerEvent::Done(_)) | Err(_) => break,
                    Ok(WorkerEvent::Error { .. }) => {}
                }
            }
            let counts = &lease.supervisor.cancels;
            // Relaxed: independent counters.
            counts.cancelled.fetch_add(1, Ordering::Relaxed);
            counts
                .tokens_after_cancel
                .fetch_add(late, Ordering::Relaxed);
            drop(lease);
        });
    }
}
