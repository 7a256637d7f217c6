//! Workers as real processes: `mlxd worker` children connected through a
//! fresh shared-memory region each, started from a dedicated thread (Linux
//! ties `PR_SET_PDEATHSIG` to the spawning thread, so it must outlive every
//! child), in their own process group, with stderr captured line by line.
//! Stopping is SIGTERM, a grace period, then SIGKILL (as TGI's launcher
//! does); signals go through the task that owns the `Child`, which has not
//! reaped it yet, so a signal never reaches a recycled pid.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use nix::sys::signal::Signal;
use protocol::{
    Delivery, Event, FrameMeta, Hello, PROTOCOL_VERSION, Request, SamplingParams, Submit,
};
use shm_ring::{
    Backing, Connection, ConnectionOptions, Demux, FrameHeader, FrontEnd, OutFrame, RegionConfig,
    RequestEvents, Route,
};
use tokio::sync::{mpsc, oneshot, watch};

use super::worker::{
    EventStream, ExitReport, LaunchError, LaunchSpec, Launcher, LiveStats, Worker, WorkerEvent,
    WorkerGone, WorkerInfo,
};
use super::worker_log::{STDERR_TAIL, forward_stderr};

mod child;
use child::{kill_unexeced_children, own_child};

/// How long a request stream waits for the exit status of a worker whose
/// connection closed, to name the cause.
const EXIT_REPORT_WAIT: Duration = Duration::from_millis(500);

/// Starts `program worker ...` processes.
pub struct ProcessLauncher {
    program: PathBuf,
    load_timeout: Duration,
    heartbeat_timeout: Duration,
    /// Appended to every worker's command line (batch limits).
    worker_args: Vec<String>,
    /// Appended after them for the model of that name, else `model_default`
    /// (settings a model's overrides may change: speculative decoding).
    model_args: std::collections::HashMap<String, Vec<String>>,
    model_default: Vec<String>,
    /// The workers' log filter (`MLXD_LOG`); else they inherit this
    /// process's environment.
    worker_log: Option<String>,
    spawner: Spawner,
}

/// The thread that starts workers: its queue, and its thread id (whose
/// children are the workers).
#[derive(Clone)]
struct Spawner {
    jobs: mpsc::UnboundedSender<SpawnJob>,
    // Read only where children can be found through /proc (Linux).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    tid: Arc<std::sync::atomic::AtomicI32>,
}

/// How long a ready worker may go without a heartbeat before it is
/// declared hung and killed. It writes one per decode step and four a
/// second while idle, but none inside one prefill chunk (2048 tokens), so
/// the timeout must exceed the slowest chunk on the machine.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(120);

type SpawnJob = (
    tokio::process::Command,
    oneshot::Sender<std::io::Result<tokio::process::Child>>,
);

impl ProcessLauncher {
    /// A launcher running `program worker` (normally the current `mlxd`
    /// executable); a load that takes longer than `load_timeout` fails.
    pub fn new(program: PathBuf, load_timeout: Duration) -> std::io::Result<ProcessLauncher> {
        let handle = tokio::runtime::Handle::current();
        let (tx, mut rx) = mpsc::unbounded_channel::<SpawnJob>();
        let tid = Arc::new(std::sync::atomic::AtomicI32::new(0));
        #[cfg(target_os = "linux")]
        let spawner_tid = Arc::clone(&tid);
        std::thread::Builder::new()
            .name("mlxd-spawner".into())
            .spawn(move || {
                #[cfg(target_os = "linux")]
                // Relaxed: read only to find this thread's children later.
                spawner_tid.store(
                    nix::unistd::gettid().as_raw(),
                    std::sync::atomic::Ordering::Relaxed,
                );
                let _runtime = handle.enter();
                while let Some((mut cmd, reply)) = rx.blocking_recv() {
                    let _ = reply.send(cmd.spawn());
                }
            })?;
        Ok(ProcessLauncher {
            program,
            load_timeout,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            worker_args: Vec::new(),
            model_args: std::collections::HashMap::new(),
            model_default: Vec::new(),
            worker_log: None,
            spawner: Spawner { jobs: tx, tid },
        })
    }

    /// Sets how long a ready worker may go without a heartbeat before it is
    /// killed as hung.
    pub fn with_heartbeat_timeout(mut self, timeout: Duration) -> ProcessLauncher {
        self.heartbeat_timeout = timeout;
        self
    }

    /// Passes `args` to every worker (after its own arguments).
    pub fn with_worker_args(mut self, args: Vec<String>) -> ProcessLauncher {
        self.worker_args = args;
        self
    }

    /// Passes `per_model[name]` to the worker of model `name` (after the
    /// arguments of every worker), `default` to a model not in it.
    pub fn with_model_args(
        mut self,
        default: Vec<String>,
        per_model: std::collections::HashMap<String, Vec<String>>,
    ) -> ProcessLauncher {
        self.model_default = default;
        self.model_args = per_model;
        self
    }

    /// Gives every worker the log filter `filter` (the daemon's own, so a
    /// debug daemon gets debug workers). Their lines are forwarded to this
    /// process's log at the level they were written at.
    pub fn with_worker_log(mut self, filter: String) -> ProcessLauncher {
        self.worker_log = Some(filter);
        self
    }
}

impl Launcher for ProcessLauncher {
    fn launch(&self, spec: LaunchSpec) -> BoxFuture<'static, Result<Arc<dyn Worker>, LaunchError>> {
        let program = self.program.clone();
        let spawner = self.spawner.clone();
        let limits = Limits {
            load: self.load_timeout,
            heartbeat: self.heartbeat_timeout,
        };
        let mut extra = self.worker_args.clone();
        extra.extend_from_slice(
            self.model_args
                .get(&spec.model_id)
                .unwrap_or(&self.model_default),
        );
        let log = self.worker_log.clone();
        async move {
            // A worker killed while it loads (a signal, or hung and killed by
            // the watchdog) is started once more at once: the requests
            // waiting for it need not see that crash. A worker that reports
            // why its model does not load, or exits by itself, is not.
            let mut retried = false;
            let worker = loop {
                match start(program.clone(), spawner.clone(), &spec, &extra, log.clone(), limits)
                    .await
                {
                    Ok(worker) => break worker,
                    Err((e, killed)) if killed && !retried => {
                        tracing::warn!(model = %spec.model_id, "restarting a worker killed while loading: {e}");
                        retried = true;
                    }
                    Err((e, _)) => return Err(e),
                }
            };
            tokio::spawn(watch_heartbeat(Arc::downgrade(&worker), limits.heartbeat));
            Ok(worker as Arc<dyn Worker>)
        }
        .boxed()
    }
}

/// Decodes worker events and routes them by request id.
struct ProtocolDemux;

impl Demux for ProtocolDemux {
    type Event = Delivery;

    fn demux(
        &mut self,
        header: &FrameHeader,
        payload: &[u8],
        emit: &mut dyn FnMut(Route<Delivery>),
    ) -> Result<(), String> {
        let meta = FrameMeta {
            kind: header.kind,
            flags: header.flags,
            request_id: header.request_id,
        };
        let event = Event::decode(meta, payload).map_err(|e| e.to_string())?;
        event.deliver(|request_id, event, last| {
            emit(Route {
                request_id,
                event,
                last,
            })
        });
        Ok(())
    }
}

/// A live worker process.
pub struct ProcessWorker {
    info: WorkerInfo,
    conn: Connection<Delivery>,
    signals: mpsc::UnboundedSender<Signal>,
    exit: watch::Receiver<Option<ExitReport>>,
    max_frame: usize,
    /// Why the supervisor killed it, when it did (it hung).
    killed_because: Arc<Mutex<Option<String>>>,
    /// Its latest `Stats` frame.
    live: Arc<Mutex<Option<LiveStats>>>,
}

/// How long a worker may take.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// From spawn to `Ready`.
    load: Duration,
    /// Between heartbeats, loading or ready.
    heartbeat: Duration,
}

/// How often the heartbeat is looked at, for a `timeout`.
fn heartbeat_period(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// Kills a ready worker whose heartbeat is older than `timeout` (a hung
/// process: stopped, deadlocked, or stuck in a kernel), so its requests end
/// and the next one gets a fresh worker. Ends when the worker is gone.
async fn watch_heartbeat(worker: std::sync::Weak<ProcessWorker>, timeout: Duration) {
    loop {
        tokio::time::sleep(heartbeat_period(timeout)).await;
        let Some(worker) = worker.upgrade() else {
            return;
        };
        if worker.conn.closed_reason().is_some() || worker.kill_if_hung(timeout, None) {
            return;
        }
    }
}

async fn start(
    program: PathBuf,
    spawner: Spawner,
    spec: &LaunchSpec,
    extra: &[String],
    log: Option<String>,
    limits: Limits,
) -> Result<Arc<ProcessWorker>, (LaunchError, bool)> {
    start_inner(program, spawner, spec, extra, log, limits)
        .await
        .map_err(|e| match e {
            StartError::Failed(e) => (e, false),
            StartError::Killed(e) => (e, true),
        })
}

/// How a start failed: `Killed` when the worker died of a signal while it
/// loaded (worth one more try), `Failed` otherwise.
enum StartError {
    Failed(LaunchError),
    Killed(LaunchError),
}

impl From<LaunchError> for StartError {
    fn from(e: LaunchError) -> Self {
        StartError::Failed(e)
    }
}

async fn start_inner(
    program: PathBuf,
    spawner: Spawner,
    spec: &LaunchSpec,
    extra: &[String],
    log: Option<String>,
    limits: Limits,
) -> Result<Arc<ProcessWorker>, StartError> {
    let timeout = limits.load;
    let started = Instant::now();
    let region = RegionConfig {
        protocol_version: PROTOCOL_VERSION,
        generation: spec.generation,
        max_kind: protocol::Kind::MAX,
        ..RegionConfig::default()
    };
    let fail = |what: &str, e: &dyn std::fmt::Display| LaunchError(format!("{what}: {e}"));
    let (front, child_fds) = FrontEnd::create(&region, &Backing::default())
        .map_err(|e| fail("creating the shared region", &e))?;
    let mut cmd = tokio::process::Command::new(&program);
    cmd.arg("worker")
        .arg("--model")
        .arg(&spec.path)
        .arg("--model-id")
        .arg(&spec.model_id)
        .arg("--protocol-version")
        .arg(PROTOCOL_VERSION.to_string())
        .env("MLXD_LOG_FORMAT", "text")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    cmd.args(spec.model_flags());
    cmd.args(extra);
    if let Some(filter) = log {
        cmd.env("MLXD_LOG", filter);
    }
    child_fds.configure(cmd.as_std_mut());
    #[cfg(target_os = "linux")]
    shm_ring::die_with_parent(cmd.as_std_mut());
    let (reply_tx, reply_rx) = oneshot::channel();
    spawner
        .jobs
        .send((cmd, reply_tx))
        .map_err(|_| LaunchError("the spawner thread is gone".into()))?;
    // `spawn` returns once the child has exec'd: a child stopped before
    // that would hold it, and every later start, for ever. Such a child is
    // killed when the heartbeat timeout passes; `spawn` then returns.
    tokio::pin!(reply_rx);
    let reply = match tokio::time::timeout(limits.heartbeat, &mut reply_rx).await {
        Ok(reply) => reply,
        Err(_) => {
            kill_unexeced_children(&spawner);
            tokio::time::timeout(limits.load, reply_rx)
                .await
                .map_err(|_| LaunchError("starting the worker did not finish".into()))?
        }
    };
    let mut child = reply
        .map_err(|_| LaunchError("the spawner thread is gone".into()))?
        .map_err(|e| fail(&format!("starting {}", program.display()), &e))?;
    // Our copies of the child's ends must close, or its death never shows
    // as doorbell EOF.
    drop(child_fds);
    let pid = child.id();

    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL)));
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(forward_stderr(
            stderr,
            spec.model_id.clone(),
            Arc::clone(&tail),
        ));
    }
    let (exit_tx, exit) = watch::channel(None);
    let (signals, signal_rx) = mpsc::unbounded_channel();
    let killed_because = Arc::new(Mutex::new(None));
    tokio::spawn(own_child(
        child,
        signal_rx,
        exit_tx,
        tail,
        Arc::clone(&killed_because),
    ));

    let (conn, mut control) = Connection::open(front, ProtocolDemux, ConnectionOptions::default())
        .map_err(|e| fail("opening the connection", &e))?;
    let mut hello = Vec::new();
    let meta = Request::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        generation: spec.generation,
    })
    .encode(&mut hello);
    let worker = ProcessWorker {
        info: WorkerInfo {
            pid,
            context_length: 0,
            vocab_size: 0,
            eos_token_ids: Vec::new(),
            memory_used_bytes: 0,
            load_time: Duration::ZERO,
        },
        conn,
        signals,
        exit,
        max_frame: region.max_frame,
        killed_because,
        live: Arc::new(Mutex::new(None)),
    };
    let loaded = async {
        worker.send_frame(meta, hello).await?;
        await_ready(&worker, &mut control, &spec.model_id).await
    };
    // A worker that stops heart-beating while it loads is killed as a ready
    // one would be; its exit then ends the load with the reason, at once
    // rather than at the load timeout. Before it attaches (its first
    // heartbeat) the time since it was started counts.
    let watched = async {
        loop {
            tokio::time::sleep(heartbeat_period(limits.heartbeat)).await;
            if worker.kill_if_hung(limits.heartbeat, Some(started.elapsed())) {
                return std::future::pending().await;
            }
        }
    };
    let loaded = async {
        tokio::select! {
            result = loaded => result,
            result = watched => result,
        }
    };
    let info = match tokio::time::timeout(timeout, loaded).await {
        Ok(Ok(info)) => info,
        Ok(Err(e)) => {
            let report = worker.stop(Duration::from_secs(2)).await;
            return Err(if report.status.starts_with("killed by") {
                StartError::Killed(e)
            } else {
                StartError::Failed(e)
            });
        }
        Err(_) => {
            let report = worker.stop(Duration::from_secs(2)).await;
            return Err(StartError::Failed(LaunchError(format!(
                "loading {} did not finish within {} s ({report})",
                spec.path.display(),
                timeout.as_secs()
            ))));
        }
    };
    tokio::spawn(drain_control(control, Arc::clone(&worker.live)));
    tracing::info!(
        model = %spec.model_id,
        pid = ?pid,
        load_ms = started.elapsed().as_millis() as u64,
        "worker ready"
    );
    Ok(Arc::new(ProcessWorker {
        info: WorkerInfo {
            pid,
            load_time: started.elapsed(),
            ..info
        },
        ..worker
    }))
}

/// Waits for `Ready`, turning a load error or the worker's death into a
/// `LaunchError` with its reason.
async fn await_ready(
    worker: &ProcessWorker,
    control: &mut mpsc::UnboundedReceiver<Delivery>,
    model_id: &str,
) -> Result<WorkerInfo, LaunchError> {
    loop {
        let event = tokio::select! {
            biased;
            event = control.recv() => event,
            reason = worker.conn.closed() => {
                // Events the worker published before exiting (its load
                // error) are still queued: they name the cause best.
                while let Ok(event) = control.try_recv() {
                    if let Some(done) = ready_or_error(event, model_id) {
                        return done;
                    }
                }
                let report = worker.exit_report().await;
                return Err(LaunchError(format!("the worker exited while loading ({reason}): {report}")));
            }
        };
        let Some(event) = event else {
            let report = worker.exit_report().await;
            return Err(LaunchError(format!(
                "the worker exited while loading: {report}"
            )));
        };
        if let Some(done) = ready_or_error(event, model_id) {
            return done;
        }
    }
}

/// The end of a load, if `event` is one: `Ready`, or a worker-wide error.
fn ready_or_error(event: Delivery, model_id: &str) -> Option<Result<WorkerInfo, LaunchError>> {
    match event {
        Delivery::Ready(r) => Some(Ok(WorkerInfo {
            pid: None,
            context_length: r.context_length,
            vocab_size: r.vocab_size,
            eos_token_ids: r.eos_token_ids,
            memory_used_bytes: r.memory_used_bytes,
            load_time: Duration::from_micros(r.load_time_us),
        })),
        Delivery::Error(e) => Some(Err(LaunchError(e.message))),
        Delivery::LoadProgress(p) => {
            tracing::debug!(model = %model_id, loaded = p.bytes_loaded, total = p.bytes_total, "loading");
            None
        }
        _ => None,
    }
}

/// Keeps the control channel flowing after `Ready`: the latest `Stats`
/// is kept for the admin API and the metrics, worker-wide errors are
/// logged.
async fn drain_control(
    mut control: mpsc::UnboundedReceiver<Delivery>,
    live: Arc<Mutex<Option<LiveStats>>>,
) {
    while let Some(event) = control.recv().await {
        match event {
            Delivery::Error(e) => tracing::warn!(code = ?e.code, "worker error: {}", e.message),
            Delivery::Stats(s) => {
                *live.lock().unwrap_or_else(PoisonError::into_inner) = Some(LiveStats {
                    active_memory: s.active_memory,
                    peak_memory: s.peak_memory,
                    cache_memory: s.cache_memory,
                    active_sequences: s.active_sequences,
                    queue_depth: s.queue_depth,
                    at: Instant::now(),
                });
            }
            _ => {}
        }
    }
}

impl ProcessWorker {
    /// Sends a request's frames and turns the events routed to it into its
    /// stream, which ends after `Done` or when the worker goes.
    async fn send_request(
        &self,
        events: RequestEvents<Delivery>,
        frames: Vec<protocol::EncodedFrame>,
    ) -> Result<EventStream, WorkerGone> {
        let frames = frames
            .into_iter()
            .map(|f| OutFrame {
                kind: f.meta.kind,
                flags: f.meta.flags,
                request_id: f.meta.request_id,
                payload: f.payload,
            })
            .collect();
        if let Err(e) = self.conn.send_all(frames).await {
            return Err(gone_from(&self.exit, e.to_string()).await);
        }
        let exit = self.exit.clone();
        let stream = futures::stream::unfold(
            (events, exit, false),
            |(mut events, exit, ended)| async move {
                if ended {
                    return None;
                }
                let item = match events.recv().await? {
                    Ok(Delivery::Token(t)) => Ok(WorkerEvent::Token(t)),
                    Ok(Delivery::Embedding(e)) => Ok(WorkerEvent::Embedding(e)),
                    Ok(Delivery::Error(e)) => Ok(WorkerEvent::Error {
                        code: e.code,
                        message: e.message,
                    }),
                    Ok(Delivery::Done(d)) => Ok(WorkerEvent::Done(d)),
                    Ok(other) => Err(WorkerGone(format!("unexpected event {other:?}"))),
                    Err(closed) => Err(gone_from(&exit, closed.to_string()).await),
                };
                let ended = item.is_err();
                Some((item, (events, exit, ended)))
            },
        );
        Ok(Box::pin(stream) as EventStream)
    }

    async fn send_frame(&self, meta: FrameMeta, payload: Vec<u8>) -> Result<(), LaunchError> {
        let frame = OutFrame {
            kind: meta.kind,
            flags: meta.flags,
            request_id: meta.request_id,
            payload,
        };
        self.conn
            .send(frame)
            .await
            .map_err(|e| LaunchError(format!("sending to the worker: {e}")))
    }

    /// Whether the process has exited though neither the connection's
    /// reader (doorbell EOF) nor the task that reaps it has noticed yet: a
    /// request leased in that moment would go to a dead worker. `WNOWAIT`
    /// leaves the child for that task to reap, so its pid stays ours.
    #[cfg(target_os = "linux")]
    fn has_exited(&self) -> bool {
        use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
        let Some(pid) = self.info.pid.and_then(|p| i32::try_from(p).ok()) else {
            return false;
        };
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(nix::unistd::Pid::from_raw(pid)), flags) {
            Ok(WaitStatus::StillAlive) => false,
            // Exited, or reaped already (ECHILD): its report is on its way.
            Ok(_) | Err(_) => true,
        }
    }

    /// Elsewhere the doorbell's EOF is the only sign.
    #[cfg(not(target_os = "linux"))]
    fn has_exited(&self) -> bool {
        false
    }

    /// Kills the worker if its heartbeat is older than `timeout` (before its
    /// first heartbeat: if `unattached_for` is), with the reason kept for
    /// its exit report; returns whether it did.
    fn kill_if_hung(&self, timeout: Duration, unattached_for: Option<Duration>) -> bool {
        let Some(age) = self.conn.status().heartbeat_age().or(unattached_for) else {
            return false;
        };
        if age <= timeout {
            return false;
        }
        let why = format!("no heartbeat for {} s", age.as_secs());
        tracing::error!(pid = ?self.info.pid, "worker hung ({why}); killing it");
        *self
            .killed_because
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(why);
        let _ = self.signals.send(Signal::SIGKILL);
        true
    }

    /// How the worker ended; waits for it to be reaped.
    async fn exit_report(&self) -> ExitReport {
        let mut exit = self.exit.clone();
        match exit.wait_for(Option::is_some).await {
            Ok(report) => report.clone().unwrap_or_default(),
            Err(_) => ExitReport {
                status: "the worker's supervisor task ended".into(),
                stderr_tail: Vec::new(),
            },
        }
    }
}

impl Worker for ProcessWorker {
    fn info(&self) -> &WorkerInfo {
        &self.info
    }

    fn submit(
        &self,
        request_id: u64,
        prompt: Vec<u32>,
        params: SamplingParams,
        grammar: Option<protocol::Grammar>,
    ) -> BoxFuture<'_, Result<EventStream, WorkerGone>> {
        async move {
            let events = self
                .conn
                .register(request_id)
                .map_err(|e| WorkerGone(e.to_string()))?;
            let submit = Submit {
                request_id,
                prompt,
                params,
                grammar,
            };
            let frames = submit
                .encode_frames(self.max_frame)
                .map_err(|e| WorkerGone(format!("encoding the request: {e}")))?;
            self.send_request(events, frames).await
        }
        .boxed()
    }

    fn embed(&self, request: protocol::Embed) -> BoxFuture<'_, Result<EventStream, WorkerGone>> {
        async move {
            let events = self
                .conn
                .register(request.request_id)
                .map_err(|e| WorkerGone(e.to_string()))?;
            let frames = request
                .encode_frames(self.max_frame)
                .map_err(|e| WorkerGone(format!("encoding the request: {e}")))?;
            self.send_request(events, frames).await
        }
        .boxed()
    }

    fn cancel(&self, request_id: u64) -> BoxFuture<'_, ()> {
        async move {
            let mut payload = Vec::new();
            let meta = Request::Cancel { request_id }.encode(&mut payload);
            if let Err(e) = self.send_frame(meta, payload).await {
                tracing::debug!("cancel of request {request_id} not sent: {e}");
            }
        }
        .boxed()
    }

    fn is_alive(&self) -> bool {
        self.conn.closed_reason().is_none() && self.exit.borrow().is_none() && !self.has_exited()
    }

    fn live_stats(&self) -> Option<LiveStats> {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn exited(&self) -> BoxFuture<'static, ExitReport> {
        let mut exit = self.exit.clone();
        async move {
            match exit.wait_for(Option::is_some).await {
                Ok(report) => report.clone().unwrap_or_default(),
                Err(_) => ExitReport::default(),
            }
        }
        .boxed()
    }

    fn stop(&self, grace: Duration) -> BoxFuture<'_, ExitReport> {
        async move {
            let _ = self.signals.send(Signal::SIGTERM);
            match tokio::time::timeout(grace, self.exit_report()).await {
                Ok(report) => report,
                Err(_) => {
                    let _ = self.signals.send(Signal::SIGKILL);
                    self.exit_report().await
                }
            }
        }
        .boxed()
    }
}

/// The reason a request's stream broke, with the exit report when the
/// worker is reaped soon enough.
async fn gone_from(exit: &watch::Receiver<Option<ExitReport>>, reason: String) -> WorkerGone {
    let mut exit = exit.clone();
    let report = tokio::time::timeout(EXIT_REPORT_WAIT, async {
        exit.wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|r| r.clone())
    })
    .await;
    match report {
        Ok(Some(report)) => WorkerGone(format!("the worker crashed ({report})")),
        _ => WorkerGone(format!("the worker stopped answering ({reason})")),
    }
}
