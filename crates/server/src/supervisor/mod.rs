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

pub mod process;
pub mod worker;

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use futures::StreamExt;
use futures::future::BoxFuture;
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
        let actor = Actor {
            launcher,
            config,
            slots: HashMap::new(),
            handle: handle.clone(),
            shutting_down: false,
        };
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
        let request_id = self.supervisor.request_id();
        let stream = self
            .worker
            .submit(request_id, prompt, params)
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

enum SlotState {
    Idle,
    Loading(Vec<LeaseReply>),
    Ready(Arc<dyn Worker>),
    Stopping,
}

struct Slot {
    spec: ModelSpec,
    state: SlotState,
    in_flight: usize,
    last_used: Instant,
    keep_alive: KeepAlive,
    generation: u64,
    crashes: VecDeque<Instant>,
    next_start: Option<Instant>,
    failure: Option<String>,
    unload_when_idle: bool,
}

impl Slot {
    fn new(spec: ModelSpec, keep_alive: KeepAlive) -> Slot {
        Slot {
            spec,
            state: SlotState::Idle,
            in_flight: 0,
            last_used: Instant::now(),
            keep_alive,
            generation: 0,
            crashes: VecDeque::new(),
            next_start: None,
            failure: None,
            unload_when_idle: false,
        }
    }

    /// Whether the model's memory counts against the budget (a stopping
    /// worker's does not: a load that needs its room waits for its exit).
    fn holds_memory(&self) -> bool {
        matches!(self.state, SlotState::Loading(_) | SlotState::Ready(_))
    }

    fn state_name(&self) -> &'static str {
        match (&self.state, &self.failure) {
            (SlotState::Idle, Some(_)) => "failed",
            (SlotState::Idle, None) => "idle",
            (SlotState::Loading(_), _) => "loading",
            (SlotState::Ready(_), _) => "ready",
            (SlotState::Stopping, _) => "stopping",
        }
    }
}

struct Actor {
    launcher: Arc<dyn Launcher>,
    config: SupervisorConfig,
    slots: HashMap<String, Slot>,
    /// The handle leases carry (its sender reaches this actor).
    handle: Supervisor,
    shutting_down: bool,
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Msg::Shutdown { reply }) => {
                        self.shut_down(&mut rx).await;
                        let _ = reply.send(());
                    }
                    Some(msg) => self.handle(msg),
                    None => return,
                },
                _ = tick.tick() => self.expire_idle(),
            }
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Acquire {
                spec,
                keep_alive,
                reset_failure,
                reply,
            } => self.acquire(spec, keep_alive, reset_failure, reply),
            Msg::Loaded {
                model,
                generation,
                result,
            } => self.loaded(&model, generation, result),
            Msg::Exited {
                model,
                generation,
                report,
            } => self.exited(&model, generation, report),
            Msg::Release { model, generation } => self.release(&model, generation),
            Msg::Unload { model, reply } => {
                let _ = reply.send(self.unload(&model));
            }
            Msg::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Msg::Shutdown { .. } => unreachable!("handled in run"),
        }
    }

    fn lease(&self, model: &str, slot: &Slot, worker: &Arc<dyn Worker>) -> Lease {
        Lease {
            worker: Arc::clone(worker),
            model: model.to_owned(),
            generation: slot.generation,
            supervisor: self.handle.clone(),
        }
    }

    fn acquire(
        &mut self,
        spec: ModelSpec,
        keep_alive: Option<KeepAlive>,
        reset_failure: bool,
        reply: LeaseReply,
    ) {
        if self.shutting_down {
            let _ = reply.send(Err(SupervisorError::ShuttingDown));
            return;
        }
        let id = spec.id.clone();
        let default_keep_alive = self.config.keep_alive;
        let slot = self
            .slots
            .entry(id.clone())
            .or_insert_with(|| Slot::new(spec.clone(), default_keep_alive));
        if let Some(k) = keep_alive {
            slot.keep_alive = k;
        }
        if reset_failure {
            slot.failure = None;
            slot.crashes.clear();
            slot.next_start = None;
        }
        if let Some(reason) = &slot.failure {
            let _ = reply.send(Err(SupervisorError::ModelFailed {
                model: id,
                reason: reason.clone(),
            }));
            return;
        }
        slot.unload_when_idle = false;
        slot.last_used = Instant::now();
        match &mut slot.state {
            SlotState::Ready(worker) => {
                let worker = Arc::clone(worker);
                slot.in_flight += 1;
                let lease = self.lease(&id, &self.slots[&id], &worker);
                let _ = reply.send(Ok(lease));
            }
            SlotState::Loading(waiters) => waiters.push(reply),
            SlotState::Idle | SlotState::Stopping => {
                if !matches!(slot.state, SlotState::Idle) {
                    // Stopping: start a new incarnation beside the old one's
                    // exit; its memory is counted until it exits.
                    tracing::debug!(model = %id, "reloading a stopping model");
                }
                slot.spec = spec;
                match self.admit(&id) {
                    Ok(evicted) => self.start_load(&id, reply, evicted),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
        }
    }

    /// Makes room for `model`'s estimate, evicting idle models LRU first;
    /// returns the exits of the evicted workers, which the load awaits.
    fn admit(
        &mut self,
        model: &str,
    ) -> Result<Vec<BoxFuture<'static, ExitReport>>, SupervisorError> {
        let need = self.slots[model].spec.estimate_bytes;
        let budget = self.config.memory_budget;
        let mut evicted = Vec::new();
        loop {
            let used: u64 = self
                .slots
                .iter()
                .filter(|(id, s)| id.as_str() != model && s.holds_memory())
                .map(|(_, s)| s.spec.estimate_bytes)
                .sum();
            if used.saturating_add(need) <= budget {
                return Ok(evicted);
            }
            let victim = self
                .slots
                .iter()
                .filter(|(id, s)| {
                    id.as_str() != model
                        && s.in_flight == 0
                        && matches!(s.state, SlotState::Ready(_))
                })
                .min_by_key(|(_, s)| s.last_used)
                .map(|(id, _)| id.clone());
            match victim {
                Some(victim) => {
                    tracing::info!(model = %victim, for_model = %model, "evicting an idle model to make room");
                    if let Some(exit) = self.stop(&victim) {
                        evicted.push(exit);
                    }
                }
                None => {
                    return Err(SupervisorError::InsufficientMemory {
                        model: model.to_owned(),
                        need: need >> 20,
                        budget: budget >> 20,
                        used: used >> 20,
                    });
                }
            }
        }
    }

    fn start_load(
        &mut self,
        model: &str,
        first: LeaseReply,
        evicted: Vec<BoxFuture<'static, ExitReport>>,
    ) {
        let Some(slot) = self.slots.get_mut(model) else {
            return;
        };
        slot.generation += 1;
        slot.state = SlotState::Loading(vec![first]);
        let spec = LaunchSpec {
            model_id: model.to_owned(),
            path: slot.spec.path.clone(),
            context_length: slot.spec.context_length,
            generation: slot.generation,
        };
        let delay = slot
            .next_start
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or_default();
        let launch = self.launcher.launch(spec);
        let tx = self.handle.tx.clone();
        let (model, generation) = (model.to_owned(), slot.generation);
        tokio::spawn(async move {
            futures::future::join_all(evicted).await;
            if !delay.is_zero() {
                tracing::info!(model = %model, delay_ms = delay.as_millis() as u64, "restart back-off");
                tokio::time::sleep(delay).await;
            }
            let result = launch.await;
            let _ = tx.send(Msg::Loaded {
                model,
                generation,
                result,
            });
        });
    }

    fn loaded(
        &mut self,
        model: &str,
        generation: u64,
        result: Result<Arc<dyn Worker>, LaunchError>,
    ) {
        let Some(slot) = self.slots.get_mut(model) else {
            return;
        };
        let current = slot.generation == generation && matches!(slot.state, SlotState::Loading(_));
        let worker = match (current, result) {
            (true, Ok(worker)) => worker,
            (false, Ok(worker)) => {
                // Unloaded or superseded while loading.
                let grace = self.config.stop_grace;
                tokio::spawn(async move { worker.stop(grace).await });
                return;
            }
            (false, Err(_)) => return,
            (true, Err(e)) => {
                let waiters = match std::mem::replace(&mut slot.state, SlotState::Idle) {
                    SlotState::Loading(w) => w,
                    _ => Vec::new(),
                };
                self.record_crash(model, &e.0);
                for w in waiters {
                    let _ = w.send(Err(SupervisorError::LoadFailed {
                        model: model.to_owned(),
                        reason: e.0.clone(),
                    }));
                }
                return;
            }
        };
        let waiters =
            match std::mem::replace(&mut slot.state, SlotState::Ready(Arc::clone(&worker))) {
                SlotState::Loading(w) => w,
                _ => Vec::new(),
            };
        slot.last_used = Instant::now();
        let exited = worker.exited();
        let tx = self.handle.tx.clone();
        let name = model.to_owned();
        tokio::spawn(async move {
            let report = exited.await;
            let _ = tx.send(Msg::Exited {
                model: name,
                generation,
                report,
            });
        });
        for w in waiters {
            let slot = self
                .slots
                .get_mut(model)
                .expect("slot exists: it was just updated");
            slot.in_flight += 1;
            let lease = self.lease(model, &self.slots[model], &worker);
            // A waiter that gave up drops the lease, which releases it.
            let _ = w.send(Ok(lease));
        }
    }

    fn exited(&mut self, model: &str, generation: u64, report: ExitReport) {
        let Some(slot) = self.slots.get_mut(model) else {
            return;
        };
        if slot.generation != generation {
            return;
        }
        match slot.state {
            SlotState::Ready(_) => {
                tracing::warn!(model = %model, "worker exited unexpectedly: {report}");
                slot.state = SlotState::Idle;
                self.record_crash(model, &report.to_string());
            }
            SlotState::Stopping => {
                tracing::info!(model = %model, "worker stopped ({})", report.status);
                slot.state = SlotState::Idle;
            }
            _ => {}
        }
    }

    /// Counts a crash, sets the back-off, and marks the model failed after
    /// too many in the window.
    fn record_crash(&mut self, model: &str, reason: &str) {
        let config = &self.config;
        let Some(slot) = self.slots.get_mut(model) else {
            return;
        };
        let now = Instant::now();
        slot.crashes.push_back(now);
        while slot
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > config.crash_window)
        {
            slot.crashes.pop_front();
        }
        let n = slot.crashes.len();
        let backoff = Duration::from_secs(1u64 << (n - 1).min(16)).min(config.backoff_cap);
        slot.next_start = Some(now + backoff);
        if n >= config.max_crashes {
            slot.failure = Some(format!(
                "{n} failures within {} s, the last: {reason}",
                config.crash_window.as_secs()
            ));
        }
    }

    fn release(&mut self, model: &str, generation: u64) {
        let Some(slot) = self.slots.get_mut(model) else {
            return;
        };
        if slot.generation != generation {
            return;
        }
        slot.in_flight = slot.in_flight.saturating_sub(1);
        slot.last_used = Instant::now();
        let unload = slot.in_flight == 0
            && (slot.unload_when_idle || slot.keep_alive == KeepAlive::For(Duration::ZERO));
        if unload {
            self.stop(model);
        }
    }

    fn expire_idle(&mut self) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, s)| {
                s.in_flight == 0
                    && matches!(s.state, SlotState::Ready(_))
                    && match s.keep_alive {
                        KeepAlive::Forever => false,
                        KeepAlive::For(d) => now.duration_since(s.last_used) >= d,
                    }
            })
            .map(|(id, _)| id.clone())
            .collect();
        for model in expired {
            tracing::info!(model = %model, "unloading an idle model (keep-alive expired)");
            self.stop(&model);
        }
    }

    fn unload(&mut self, model: &str) -> bool {
        let Some(slot) = self.slots.get_mut(model) else {
            return false;
        };
        match slot.state {
            SlotState::Ready(_) if slot.in_flight == 0 => {
                self.stop(model);
                true
            }
            SlotState::Ready(_) => {
                slot.unload_when_idle = true;
                true
            }
            SlotState::Loading(_) => {
                // The load finishes, its waiters get their leases, then it
                // unloads when they are done.
                slot.unload_when_idle = true;
                true
            }
            SlotState::Idle | SlotState::Stopping => false,
        }
    }

    /// Stops a ready worker (its exit is reported through `Exited`);
    /// returns a future of that exit.
    fn stop(&mut self, model: &str) -> Option<BoxFuture<'static, ExitReport>> {
        let slot = self.slots.get_mut(model)?;
        if !matches!(slot.state, SlotState::Ready(_)) {
            return None;
        }
        let SlotState::Ready(worker) = std::mem::replace(&mut slot.state, SlotState::Stopping)
        else {
            return None;
        };
        let exited = worker.exited();
        let grace = self.config.stop_grace;
        tokio::spawn(async move { worker.stop(grace).await });
        Some(exited)
    }

    fn status(&self) -> Vec<ModelStatus> {
        let now = Instant::now();
        let mut out: Vec<ModelStatus> = self
            .slots
            .iter()
            .map(|(id, s)| ModelStatus {
                id: id.clone(),
                path: s.spec.path.clone(),
                state: s.state_name(),
                info: match &s.state {
                    SlotState::Ready(w) => Some(w.info().clone()),
                    _ => None,
                },
                in_flight: s.in_flight,
                idle_for: (s.in_flight == 0 && matches!(s.state, SlotState::Ready(_)))
                    .then(|| now.duration_since(s.last_used)),
                keep_alive: s.keep_alive,
                estimate_bytes: s.spec.estimate_bytes,
                restarts: s.generation.saturating_sub(1),
                failure: s.failure.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    async fn shut_down(&mut self, rx: &mut mpsc::UnboundedReceiver<Msg>) {
        self.shutting_down = true;
        let grace = self.config.stop_grace;
        let mut stops = Vec::new();
        for slot in self.slots.values_mut() {
            match std::mem::replace(&mut slot.state, SlotState::Idle) {
                SlotState::Ready(worker) => stops.push(async move { worker.stop(grace).await }),
                SlotState::Loading(waiters) => {
                    for w in waiters {
                        let _ = w.send(Err(SupervisorError::ShuttingDown));
                    }
                }
                _ => {}
            }
        }
        // Loads in progress finish into `Loaded`, which stops their worker
        // (the slot is no longer loading); drain those while waiting.
        let all = futures::future::join_all(stops);
        tokio::pin!(all);
        loop {
            tokio::select! {
                _ = &mut all => break,
                Some(msg) = rx.recv() => match msg {
                    Msg::Shutdown { reply } => { let _ = reply.send(()); }
                    other => self.handle(other),
                },
            }
        }
    }
}
