//! The supervisor's actor: the one task that owns every model's state and
//! applies the policies described in the parent module (loads, admission
//! and eviction, keep-alive, crashes and back-off, shutdown).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use engine::memory::SYSTEM_RESERVE;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{
    ExitReport, KeepAlive, LaunchError, LaunchSpec, Launcher, Lease, LeaseReply, ModelSpec,
    ModelStatus, Msg, Supervisor, SupervisorConfig, SupervisorError, Worker,
};

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

pub(super) struct Actor {
    launcher: Arc<dyn Launcher>,
    config: SupervisorConfig,
    slots: HashMap<String, Slot>,
    /// The handle leases carry (its sender reaches this actor).
    handle: Supervisor,
    shutting_down: bool,
}

impl Actor {
    pub(super) fn new(
        launcher: Arc<dyn Launcher>,
        config: SupervisorConfig,
        handle: Supervisor,
    ) -> Actor {
        Actor {
            launcher,
            config,
            slots: HashMap::new(),
            handle,
            shutting_down: false,
        }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
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
            spec: slot.spec.clone(),
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
        // A worker that died a moment ago, before its exit reached us, gets
        // no new request: its exit is handled now, as `Exited` would.
        if let SlotState::Ready(worker) = &slot.state
            && !worker.is_alive()
        {
            let generation = slot.generation;
            self.exited(
                &id,
                generation,
                ExitReport {
                    status: "exited".into(),
                    stderr_tail: Vec::new(),
                },
            );
        }
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
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

    /// Makes room for `model`'s estimate, evicting idle models LRU first,
    /// within the memory budget and within what the machine has free now
    /// (counting what the evicted models held as freed, and leaving the
    /// system its reserve); returns the exits of the evicted workers, which
    /// the load awaits.
    fn admit(
        &mut self,
        model: &str,
    ) -> Result<Vec<BoxFuture<'static, ExitReport>>, SupervisorError> {
        let need = self.slots[model].spec.estimate_bytes;
        let budget = self.config.memory_budget;
        let free = self.config.free_memory.bytes();
        let mut freed = 0u64;
        let mut evicted = Vec::new();
        loop {
            let used: u64 = self
                .slots
                .iter()
                .filter(|(id, s)| id.as_str() != model && s.holds_memory())
                .map(|(_, s)| s.spec.estimate_bytes)
                .sum();
            let within_budget = used.saturating_add(need) <= budget;
            let within_free = free.is_none_or(|free| {
                need.saturating_add(SYSTEM_RESERVE) <= free.saturating_add(freed)
            });
            if within_budget && within_free {
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
                    freed = freed.saturating_add(self.slots[&victim].spec.estimate_bytes);
                    if let Some(exit) = self.stop(&victim) {
                        evicted.push(exit);
                    }
                }
                None if !within_budget => {
                    return Err(SupervisorError::InsufficientMemory {
                        model: model.to_owned(),
                        need: need >> 20,
                        budget: budget >> 20,
                        used: used >> 20,
                    });
                }
                None => {
                    return Err(SupervisorError::InsufficientFreeMemory {
                        model: model.to_owned(),
                        need: need >> 20,
                        free: free.unwrap_or(0).saturating_add(freed) >> 20,
                        reserve: SYSTEM_RESERVE >> 20,
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
            kv_bits: slot.spec.kv_bits,
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
                self.record_crash(model, &e.0, false);
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
                // Its leases' releases name its generation and are ignored
                // from here on; their requests are resubmitted on new leases.
                slot.in_flight = 0;
                self.record_crash(model, &report.to_string(), true);
            }
            SlotState::Stopping => {
                tracing::info!(model = %model, "worker stopped ({})", report.status);
                slot.state = SlotState::Idle;
            }
            _ => {}
        }
    }

    /// Counts a crash, sets the back-off, and marks the model failed after
    /// too many in the window. A ready worker's first crash in the window
    /// (`first_is_free`) restarts at once, since its requests are being
    /// replayed; a failed load always backs off.
    fn record_crash(&mut self, model: &str, reason: &str, first_is_free: bool) {
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
        let doublings = if first_is_free {
            n.checked_sub(2)
        } else {
            n.checked_sub(1)
        };
        let backoff = doublings.map_or(Duration::ZERO, |d| {
            Duration::from_secs(1u64 << d.min(16)).min(config.backoff_cap)
        });
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
                live: match &s.state {
                    SlotState::Ready(w) => w.live_stats(),
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
