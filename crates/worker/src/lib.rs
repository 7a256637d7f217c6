//! The worker process (`mlxd worker`): hosts one model's engine on one OS
//! thread behind the shared-memory transport, so that whatever the model
//! does to its process never reaches the HTTP front-end.
//!
//! Life of a worker:
//! 1. attach to the region and doorbell the supervisor handed down;
//! 2. wait for `Hello` and check the protocol version;
//! 3. load the model (reporting `LoadProgress`), reply `Ready` with the
//!    model's facts, or an `Error` with the reason and exit;
//! 4. serve: `Submit` requests queue up and run one after another (FIFO),
//!    each emitting one `Tokens` frame per decode step and a `Done`;
//!    between steps the request ring is polled, so `Cancel` takes effect
//!    within one step; `Embed` requests run between the steps, one chunk
//!    at a time; heartbeats are written while idle and while busy;
//! 5. exit when the front-end goes away (doorbell EOF; on Linux the kernel
//!    also kills it with its parent), or, on SIGTERM or `Shutdown`, after
//!    the current step, ending every request it holds with an error.

mod disk_cache;
mod embed;
mod serve;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use protocol::{ErrorCode, ErrorMsg, Event, PROTOCOL_VERSION, Ready, Request};
use shm_ring::{RingError, WorkerEndpoint};

#[cfg(feature = "fault-injection")]
pub use serve::FAULT_TRIGGER;
pub use serve::{BatchLimits, Server, SpecOptions};

/// How long a worker waits for `Hello` before giving up.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// What the supervisor tells a worker on its command line.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The model file or directory.
    pub model_path: PathBuf,
    /// The name requests use for the model (reported in `Ready`).
    pub model_id: String,
    /// Context length to serve (tokens); the model's own when `None`.
    pub context_length: Option<u32>,
    /// The protocol version the supervisor speaks.
    pub protocol_version: u32,
    /// Limits of continuous batching.
    pub batch: BatchLimits,
    /// The prompt cache's disk tier: the folder shared by all models and
    /// the bytes this model's entries may take there (`None`: off).
    pub prompt_cache_disk: Option<(PathBuf, u64)>,
    /// Speculative decoding, when on.
    pub speculative: Option<SpecOptions>,
    /// Bits of a quantized KV cache (4 or 8; `None`: full precision),
    /// which the model is set to before the KV is sized from it.
    pub kv_bits: Option<i32>,
    /// Its group size (`None`: 64).
    pub kv_group_size: Option<i32>,
}

/// Why a worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("transport: {0}")]
    Ring(#[from] RingError),
    #[error("protocol: {0}")]
    Protocol(#[from] protocol::ProtocolError),
    #[error("loading {path}: {source}")]
    Load {
        path: PathBuf,
        source: engine::EngineError,
    },
    #[error("{0}")]
    Handshake(String),
}

/// Set by SIGTERM: finish the current step and exit.
fn install_sigterm() -> Result<Arc<AtomicBool>, WorkerError> {
    let flag = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&flag))
        .map_err(|e| WorkerError::Handshake(format!("installing the SIGTERM handler: {e}")))?;
    Ok(flag)
}

/// Runs a worker to completion on the transport the supervisor set up in
/// this process's environment.
pub fn run(config: WorkerConfig) -> Result<(), WorkerError> {
    let stop = install_sigterm()?;
    if config.protocol_version != PROTOCOL_VERSION {
        return Err(WorkerError::Handshake(format!(
            "the supervisor speaks protocol {}, this worker {PROTOCOL_VERSION}",
            config.protocol_version
        )));
    }
    // SAFETY: called once, in a process the supervisor started with
    // `ChildFds::configure`, which put the two inherited descriptors in the
    // environment; nothing else in this process owns them.
    let mut endpoint = unsafe { WorkerEndpoint::from_env()? };
    await_hello(&mut endpoint)?;
    let started = Instant::now();
    engine::use_dedicated_stream()
        .and_then(|()| engine::wire_working_set())
        .map_err(|source| WorkerError::Load {
            path: config.model_path.clone(),
            source,
        })?;
    let mut send_progress = |loaded: u64, total: u64| {
        let event = Event::LoadProgress(protocol::LoadProgress {
            bytes_loaded: loaded,
            bytes_total: total,
        });
        if let Err(e) = send_event(&mut endpoint, &event) {
            tracing::warn!("cannot report load progress: {e}");
        }
        endpoint.heartbeat();
    };
    // A model that cannot load (or run its warm-up) is reported to the
    // supervisor before the worker exits.
    let fail = |endpoint: &mut WorkerEndpoint, path: PathBuf, doing: &str, source| {
        let message = format!("{doing} {}: {source}", path.display());
        let event = Event::Error(ErrorMsg {
            request_id: 0,
            code: ErrorCode::LoadFailed,
            message: truncate(&message),
        });
        match send_event(endpoint, &event) {
            Ok(()) => WorkerError::Load { path, source },
            Err(e) => e.into(),
        }
    };
    let mut loaded =
        match engine::loader::load_with_progress(&config.model_path, &mut send_progress) {
            Ok(loaded) => loaded,
            Err(source) => return Err(fail(&mut endpoint, config.model_path, "loading", source)),
        };
    // The whole context quantized (`quantized_kv_start` 0), as admission
    // counts it.
    let kv_quant = config
        .kv_bits
        .map(|bits| {
            let group = config
                .kv_group_size
                .unwrap_or(engine::model::kv_quant::DEFAULT_KV_GROUP_SIZE);
            engine::model::KvQuant::new(bits, group, 0)
        })
        .transpose()
        .and_then(|quant| loaded.model.set_kv_quant(quant));
    if let Err(source) = kv_quant {
        return Err(fail(
            &mut endpoint,
            config.model_path,
            "quantizing the KV cache of",
            source,
        ));
    }
    let disk = disk_cache::open(&loaded, &config.batch, config.prompt_cache_disk);
    let mut server = Server::new(loaded, config.context_length, config.batch);
    if let Some(spec) = config.speculative {
        let draft = match &spec.draft_model {
            Some(path) => {
                match engine::loader::load_with_progress(path, &mut |_, _| endpoint.heartbeat()) {
                    Ok(loaded) => Some(loaded.model),
                    Err(source) => {
                        return Err(fail(
                            &mut endpoint,
                            path.clone(),
                            "loading the draft model",
                            source,
                        ));
                    }
                }
            }
            None => None,
        };
        let path = spec
            .draft_model
            .clone()
            .unwrap_or_else(|| config.model_path.clone());
        server = match server.with_speculation(spec, draft) {
            Ok(server) => server,
            Err(source) => return Err(fail(&mut endpoint, path, "speculating with", source)),
        };
    }
    if let Err(source) = server.warm_up(&mut || endpoint.heartbeat()) {
        return Err(fail(&mut endpoint, config.model_path, "warming up", source));
    }
    let ready = Ready {
        protocol_version: PROTOCOL_VERSION,
        model_id: truncate(&config.model_id),
        context_length: server.context_length(),
        vocab_size: server.vocab_size(),
        eos_token_ids: server.eos_token_ids(),
        memory_used_bytes: mlx::memory::stats().active as u64,
        load_time_us: started.elapsed().as_micros() as u64,
    };
    send_event(&mut endpoint, &Event::Ready(ready))?;
    tracing::info!(
        model = %config.model_id,
        load_ms = started.elapsed().as_millis() as u64,
        "ready"
    );
    server.serve(&mut endpoint, &stop, disk)
}

/// Waits for the supervisor's `Hello` and checks its version.
fn await_hello(endpoint: &mut WorkerEndpoint) -> Result<(), WorkerError> {
    let mut buf = Vec::new();
    let deadline = Instant::now() + HELLO_TIMEOUT;
    loop {
        endpoint.heartbeat();
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(WorkerError::Handshake(
                "no Hello from the supervisor".into(),
            ));
        }
        let Some(header) = endpoint.recv_timeout(&mut buf, left.min(Duration::from_secs(1)))?
        else {
            continue;
        };
        let meta = protocol::FrameMeta {
            kind: header.kind,
            flags: header.flags,
            request_id: header.request_id,
        };
        match Request::decode(meta, &buf)? {
            Request::Hello(hello) => {
                if let Err(e) = protocol::check_version(hello.protocol_version) {
                    let event = Event::Error(ErrorMsg {
                        request_id: 0,
                        code: ErrorCode::VersionMismatch,
                        message: e.to_string(),
                    });
                    send_event(endpoint, &event)?;
                    return Err(e.into());
                }
                return Ok(());
            }
            other => {
                return Err(WorkerError::Handshake(format!(
                    "expected Hello first, got {other:?}"
                )));
            }
        }
    }
}

/// Encodes and publishes one event, waking the front-end if it sleeps.
pub(crate) fn send_event(endpoint: &mut WorkerEndpoint, event: &Event) -> Result<(), RingError> {
    let mut buf = Vec::new();
    let meta = event.encode(&mut buf);
    endpoint.send(meta.kind, meta.flags, meta.request_id, &buf)
}

/// Keeps a message within the protocol's string limit.
pub(crate) fn truncate(message: &str) -> String {
    let limit = protocol::MAX_STRING;
    if message.len() <= limit {
        return message.to_owned();
    }
    let mut end = limit;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_owned()
}

/// Whether SIGTERM arrived.
pub(crate) fn stopping(stop: &AtomicBool) -> bool {
    stop.load(Ordering::Relaxed)
}
