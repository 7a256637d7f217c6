//! Fault injection against a real `mlxd serve` (the binary, the tiny model,
//! real worker processes): the worker is sent SIGKILL, SIGSEGV or SIGSTOP
//! while it loads, while it prefills a long prompt, while it decodes, while
//! it is idle between requests, and while a streaming client has stopped
//! reading (the server's writes back up). After each fault:
//!
//! - every request in flight ended with a complete answer or a clear error
//!   (a JSON error with a code, or an SSE error event followed by
//!   `[DONE]`), never a hang, never a truncated body or stream;
//! - the daemon answers `/health` and the next request succeeds;
//! - the daemon holds as many descriptors (by kind: sockets, pipes,
//!   memfds, /dev/shm objects), ring mappings and children as before the
//!   first fault, and no zombie.
//!
//! A stopped worker must be found by its missing heartbeats (the daemon runs
//! with `--heartbeat-timeout 2`). After each trial `POST /admin/load` clears
//! the model's crash history, as an operator would, so the five-crashes
//! failure mark does not end the run.
//!
//! `MLXD_FAULT_TRIALS` sets the number of trials (default 10: every phase
//! twice, every signal at least three times); `MLXD_FAULT_SEED` replays a
//! run (the seed is printed at the start and in every failure);
//! `MLXD_FAULT_REPORT` names a JSON file the figures are written to.
//!
//! The event ring itself never fills because of a slow client: the
//! front-end drains it into per-request queues as frames arrive, so the
//! "stalled client" phase exercises the queues and sockets behind it.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]
// It counts a process's descriptors, mappings and children in /proc.
#![cfg(target_os = "linux")]

mod common;
#[path = "faults/http.rs"]
mod http;

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use http::{HANG, request, send};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// The daemon's heartbeat timeout, in seconds.
const HEARTBEAT_TIMEOUT: u64 = 2;
/// Error codes a request may end with after a fault.
const EXPECTED_CODES: [&str; 2] = ["worker_crashed", "model_load_failed"];

// ------------------------------------------------------------ requests

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// A whole answer (a finish reason, and `[DONE]` for a stream).
    Complete,
    /// A clear error: the HTTP status (200 for an SSE error event) and code.
    Failed { status: u16, code: String },
    /// Neither: hung, truncated, malformed.
    Violation(String),
}

/// One request a trial runs beside the fault.
struct Job {
    path: &'static str,
    body: Value,
    /// For streams: tell the driver after this many events.
    notify_after: Option<usize>,
    /// For streams: stop reading this long after notifying.
    stall: Duration,
    /// A small receive buffer (a client that backs the server up).
    small_rcvbuf: bool,
}

fn error_code(value: &Value) -> Option<String> {
    value["error"]["code"].as_str().map(str::to_owned)
}

/// Runs `job` on a thread; `notify` is sent once when the job's stream
/// reached its notification point (or when it ended before it).
fn spawn_job(port: u16, job: Job, notify: mpsc::Sender<()>) -> JoinHandle<Outcome> {
    std::thread::spawn(move || {
        let outcome = run_job(port, &job, &notify);
        let _ = notify.send(());
        outcome
    })
}

fn run_job(port: u16, job: &Job, notify: &mpsc::Sender<()>) -> Outcome {
    let rcvbuf = job.small_rcvbuf.then_some(4096);
    let (status, mut body) = match send(port, "POST", job.path, Some(&job.body), rcvbuf) {
        Ok(r) => r,
        Err(e) => return Outcome::Violation(format!("no response head: {e}")),
    };
    let streamed = job.body["stream"] == true;
    if status != 200 || !streamed {
        let bytes = match body.read_all() {
            Ok(b) => b,
            Err(e) => return Outcome::Violation(format!("status {status}, body cut: {e}")),
        };
        let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
            return Outcome::Violation(format!(
                "status {status}, not JSON: {}",
                String::from_utf8_lossy(&bytes)
            ));
        };
        if status == 200 {
            return match value["choices"][0]["finish_reason"].as_str() {
                Some(_) => Outcome::Complete,
                None => Outcome::Violation(format!("200 without a finish reason: {value}")),
            };
        }
        return match error_code(&value) {
            Some(code) => Outcome::Failed { status, code },
            None => Outcome::Violation(format!("status {status} without an error code: {value}")),
        };
    }
    // Server-Sent Events.
    let mut buf: Vec<u8> = Vec::new();
    let mut events = 0usize;
    let mut finished = false;
    let mut error: Option<String> = None;
    loop {
        let event = loop {
            if let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = buf.drain(..end + 2).collect();
                break Some(event);
            }
            match body.piece() {
                Ok(Some(piece)) => buf.extend(piece),
                Ok(None) => break None,
                Err(e) => {
                    return Outcome::Violation(format!("stream cut after {events} events: {e}"));
                }
            }
        };
        let Some(event) = event else {
            return Outcome::Violation(format!(
                "stream ended after {events} events without [DONE] (partial: {:?})",
                String::from_utf8_lossy(&buf)
            ));
        };
        let text = String::from_utf8_lossy(&event).into_owned();
        let Some(data) = text.trim_end().strip_prefix("data: ") else {
            return Outcome::Violation(format!("not a data event: {text:?}"));
        };
        if data == "[DONE]" {
            // Nothing may follow.
            return match body.read_all() {
                Ok(rest) if rest.is_empty() && buf.is_empty() => match error {
                    Some(code) => Outcome::Failed { status, code },
                    None if finished => Outcome::Complete,
                    None => Outcome::Violation(format!(
                        "[DONE] after {events} events without a finish reason or an error"
                    )),
                },
                Ok(rest) => Outcome::Violation(format!(
                    "bytes after [DONE]: {:?}",
                    String::from_utf8_lossy(&rest)
                )),
                Err(e) => Outcome::Violation(format!("after [DONE]: {e}")),
            };
        }
        if error.is_some() {
            return Outcome::Violation(format!("an event after the error event: {data}"));
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            return Outcome::Violation(format!("not JSON: {data}"));
        };
        if chunk.get("error").is_some() {
            match error_code(&chunk) {
                Some(code) => error = Some(code),
                None => return Outcome::Violation(format!("an error without a code: {chunk}")),
            }
        } else if chunk["choices"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["finish_reason"].is_string()))
        {
            finished = true;
        }
        events += 1;
        if job.notify_after == Some(events) {
            let _ = notify.send(());
            std::thread::sleep(job.stall);
        }
    }
}

fn chat(max_tokens: u32, stream: bool) -> Value {
    json!({
        "model": "tiny",
        "messages": [{"role": "user", "content": "Tell a long story."}],
        "max_tokens": max_tokens,
        "ignore_eos": true,
        "stream": stream,
    })
}

/// A completion whose prompt takes a while to prefill.
fn long_prompt(rng: &mut StdRng, stream: bool) -> Value {
    let words = rng.random_range(800..2500);
    let prompt: Vec<&str> = (0..words)
        .map(|i| ["river", "stone", "lantern", "harbour", "copper"][i % 5])
        .collect();
    json!({
        "model": "tiny",
        "prompt": prompt.join(" "),
        "max_tokens": rng.random_range(1..64),
        "ignore_eos": true,
        "stream": stream,
    })
}

// -------------------------------------------------------------- daemon

/// What the daemon holds: descriptors by kind, ring mappings, children.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Holdings {
    fds: BTreeMap<String, usize>,
    ring_mappings: usize,
    children: usize,
    zombies: usize,
}

fn holdings(pid: u32) -> Holdings {
    let mut fds = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for entry in dir.filter_map(Result::ok) {
            let Ok(target) = std::fs::read_link(entry.path()) else {
                continue;
            };
            let target = target.to_string_lossy().into_owned();
            let kind = if target.starts_with("/memfd:") {
                "memfd"
            } else if target.starts_with("/dev/shm/") {
                "dev-shm"
            } else if target.starts_with("socket:") {
                "socket"
            } else if target.starts_with("pipe:") {
                "pipe"
            } else if target.starts_with("anon_inode:") {
                "anon-inode"
            } else {
                "file"
            };
            *fds.entry(kind.to_owned()).or_insert(0) += 1;
        }
    }
    let ring_mappings = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("memfd:shm-ring") || l.contains("/dev/shm/"))
        .count();
    let kids = child_processes(pid);
    Holdings {
        fds,
        ring_mappings,
        children: kids.iter().filter(|(_, s)| *s != 'Z').count(),
        zombies: kids.iter().filter(|(_, s)| *s == 'Z').count(),
    }
}

fn dev_shm() -> std::collections::BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("shmr-"))
                .collect()
        })
        .unwrap_or_default()
}

/// A running `mlxd serve` with the tiny model as `tiny`; dropping it kills
/// it and its workers.
struct Daemon {
    child: Child,
    port: u16,
    admin_port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start() -> Daemon {
        for _ in 0..3 {
            if let Some(d) = Daemon::try_start() {
                return d;
            }
        }
        panic!("mlxd serve did not start");
    }

    fn try_start() -> Option<Daemon> {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let log = dir.path().join("serve.log");
        let (port, admin_port) = (free_port(), free_port());
        let mut cmd = isolated_serve(&empty, port, admin_port);
        cmd.env("RUST_LOG", "info")
            .arg("--model")
            .arg(format!("tiny={}", tiny_model().display()))
            .args(["--heartbeat-timeout", &HEARTBEAT_TIMEOUT.to_string()])
            .args(["--load-timeout", "120"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap());
        let child = cmd.spawn().unwrap();
        let mut d = Daemon {
            child,
            port,
            admin_port,
            log,
            _dir: dir,
        };
        let up = wait_until(HANG, || {
            d.child.try_wait().unwrap().is_some()
                || (TcpStream::connect(("127.0.0.1", port)).is_ok()
                    && TcpStream::connect(("127.0.0.1", admin_port)).is_ok())
        });
        if d.child.try_wait().unwrap().is_some() {
            // Another process took a port between the probe and the bind.
            return None;
        }
        assert!(up, "mlxd serve did not answer:\n{}", d.log_tail(40));
        Some(d)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn health(&self) -> u16 {
        request(self.port, "GET", "/health", None).0
    }

    /// The model's entry in `/admin/status`.
    fn worker(&self) -> Value {
        let (_, status) = request(self.admin_port, "GET", "/admin/status", None);
        status["workers"]
            .as_array()
            .and_then(|w| w.iter().find(|w| w["model"] == "tiny").cloned())
            .unwrap_or(Value::Null)
    }

    fn ready_pid(&self) -> Option<u32> {
        let w = self.worker();
        (w["state"] == "ready")
            .then(|| w["pid"].as_u64())
            .flatten()
            .map(|p| p as u32)
    }

    /// A short request; its status and body.
    fn short_request(&self) -> (u16, Value) {
        request(
            self.port,
            "POST",
            "/v1/chat/completions",
            Some(&chat(4, false)),
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        for (pid, _) in child_processes(self.pid()) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// -------------------------------------------------------------- trials

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Load,
    Prefill,
    Decode,
    Idle,
    Stalled,
}

const PHASES: [Phase; 5] = [
    Phase::Load,
    Phase::Prefill,
    Phase::Decode,
    Phase::Idle,
    Phase::Stalled,
];
const FAULTS: [Signal; 3] = [Signal::SIGKILL, Signal::SIGSEGV, Signal::SIGSTOP];

/// Trial `i`'s phase and signal: every five trials cover each phase, the
/// first ten every signal (a worker stopped while loading among them), and
/// three rounds every pair.
fn schedule(i: usize) -> (Phase, Signal) {
    (PHASES[i % 5], FAULTS[(2 * (i / 5) + i % 5) % 3])
}

/// Sends the fault. An external SIGSEGV is absorbed once by the Rust
/// runtime's stack-overflow handler (it restores the default action and
/// returns, where a real fault would fault again and die), and a worker
/// caught between fork and exec installs that handler afresh, so SIGSEGV
/// is repeated until the worker is gone, as a real fault would be.
fn inject(pid: u32, signal: Signal) {
    let target = Pid::from_raw(pid as i32);
    let _ = kill(target, signal);
    if signal == Signal::SIGSEGV {
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(50));
            if !process_alive(pid) {
                break;
            }
            let _ = kill(target, signal);
        }
    }
}

/// What one trial saw.
struct Trial {
    phase: Phase,
    signal: Signal,
    outcomes: Vec<Outcome>,
    recovered_in: Duration,
}

/// Runs one trial; `Err` describes the first broken promise.
fn run_trial(d: &Daemon, rng: &mut StdRng, phase: Phase, signal: Signal) -> Result<Trial, String> {
    let (tx, rx) = mpsc::channel();
    let mut jobs = Vec::new();
    let spawn = |job: Job, jobs: &mut Vec<JoinHandle<Outcome>>| {
        jobs.push(spawn_job(d.port, job, tx.clone()));
    };
    let victim = match phase {
        Phase::Load => {
            let (status, body) = request(
                d.admin_port,
                "POST",
                "/admin/unload",
                Some(&json!({"model": "tiny"})),
            );
            if status != 200 {
                return Err(format!("unload: {status} {body}"));
            }
            // Reaped, so the next child is the new worker.
            if !wait_until(HANG, || child_processes(d.pid()).is_empty()) {
                return Err("the unloaded worker did not exit".into());
            }
            spawn(
                Job {
                    path: "/v1/chat/completions",
                    body: chat(rng.random_range(1..32), rng.random_bool(0.5)),
                    notify_after: None,
                    stall: Duration::ZERO,
                    small_rcvbuf: false,
                },
                &mut jobs,
            );
            let mut pid = None;
            if !wait_until(HANG, || {
                pid = child_processes(d.pid())
                    .iter()
                    .find(|c| c.1 != 'Z')
                    .map(|c| c.0);
                pid.is_some()
            }) {
                return Err("no worker started".into());
            }
            // Loading the tiny model takes a few hundred milliseconds.
            std::thread::sleep(Duration::from_millis(rng.random_range(0..300)));
            pid.unwrap()
        }
        Phase::Idle => d.ready_pid().ok_or("no ready worker")?,
        Phase::Prefill => {
            let pid = d.ready_pid().ok_or("no ready worker")?;
            for _ in 0..rng.random_range(1..=2) {
                let stream = rng.random_bool(0.5);
                spawn(
                    Job {
                        path: "/v1/completions",
                        body: long_prompt(rng, stream),
                        notify_after: None,
                        stall: Duration::ZERO,
                        small_rcvbuf: false,
                    },
                    &mut jobs,
                );
            }
            std::thread::sleep(Duration::from_millis(rng.random_range(5..150)));
            pid
        }
        Phase::Decode => {
            let pid = d.ready_pid().ok_or("no ready worker")?;
            spawn(
                Job {
                    path: "/v1/chat/completions",
                    body: chat(100_000, true),
                    notify_after: Some(rng.random_range(1..40)),
                    stall: Duration::ZERO,
                    small_rcvbuf: false,
                },
                &mut jobs,
            );
            if rng.random_bool(0.5) {
                // A second request, queued behind or beside the first.
                spawn(
                    Job {
                        path: "/v1/chat/completions",
                        body: chat(rng.random_range(1..200), rng.random_bool(0.5)),
                        notify_after: None,
                        stall: Duration::ZERO,
                        small_rcvbuf: false,
                    },
                    &mut jobs,
                );
            }
            rx.recv_timeout(HANG)
                .map_err(|_| "the stream sent no events".to_string())?;
            pid
        }
        Phase::Stalled => {
            let pid = d.ready_pid().ok_or("no ready worker")?;
            let stall = Duration::from_millis(rng.random_range(300..1500));
            spawn(
                Job {
                    path: "/v1/chat/completions",
                    body: chat(100_000, true),
                    notify_after: Some(2),
                    stall,
                    small_rcvbuf: true,
                },
                &mut jobs,
            );
            rx.recv_timeout(HANG)
                .map_err(|_| "the stream sent no events".to_string())?;
            std::thread::sleep(stall / 2);
            pid
        }
    };
    inject(victim, signal);
    let faulted = Instant::now();
    if d.health() != 200 {
        return Err("/health failed right after the fault".into());
    }
    let mut outcomes = Vec::new();
    for job in jobs {
        outcomes.push(job.join().map_err(|_| "a request thread panicked")?);
    }
    for outcome in &outcomes {
        match outcome {
            Outcome::Complete => {}
            Outcome::Failed { code, .. } if EXPECTED_CODES.contains(&code.as_str()) => {}
            other => return Err(format!("a request in flight ended badly: {other:?}")),
        }
    }
    // A stopped worker goes only when the watchdog sees its heartbeat stale.
    // Gone means reaped by the daemon: a request that arrives while the
    // kernel still tears the process down (its main thread a zombie, other
    // threads exiting) is in flight on a dying worker and may fail.
    let limit = Duration::from_secs(HEARTBEAT_TIMEOUT * 3 + 10);
    let proc_dir = PathBuf::from(format!("/proc/{victim}"));
    if !wait_until(limit, || !proc_dir.exists()) {
        return Err(format!(
            "worker {victim} not reaped {limit:?} after {signal}"
        ));
    }
    if d.health() != 200 {
        return Err("/health failed after the worker died".into());
    }
    let (status, body) = d.short_request();
    if status != 200 {
        return Err(format!("the next request failed: {status} {body}"));
    }
    let recovered_in = faulted.elapsed();
    // Forget the crash (an operator's `load`), so the failure mark after
    // five crashes in five minutes does not end the run.
    let (status, body) = request(
        d.admin_port,
        "POST",
        "/admin/load",
        Some(&json!({"model": "tiny"})),
    );
    if status != 200 {
        return Err(format!("admin load: {status} {body}"));
    }
    Ok(Trial {
        phase,
        signal,
        outcomes,
        recovered_in,
    })
}

impl Daemon {
    fn holdings(&self) -> Holdings {
        holdings(self.pid())
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[test]
fn workers_killed_segfaulted_or_stopped_at_any_point_lose_no_request_and_leak_nothing() {
    // SIGSEGV must not leave core files behind.
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads the struct it is given and nothing else.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
    let trials = env_u64("MLXD_FAULT_TRIALS").unwrap_or(10) as usize;
    let seed = env_u64("MLXD_FAULT_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    eprintln!("fault injection: {trials} trials, MLXD_FAULT_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let shm_before = dev_shm();
    let d = Daemon::start();
    let (status, body) = d.short_request();
    assert_eq!(status, 200, "{body}");
    let first_worker = d.ready_pid().expect("a ready worker");
    // Connections of the requests just made may still be closing.
    let mut baseline = d.holdings();
    let mut same = 0;
    while same < 5 {
        std::thread::sleep(Duration::from_millis(100));
        let now = d.holdings();
        same = if now == baseline { same + 1 } else { 0 };
        baseline = now;
    }
    assert_eq!(baseline.children, 1, "{baseline:?}");

    let started = Instant::now();
    let mut done: Vec<Trial> = Vec::new();
    for i in 0..trials {
        let (phase, signal) = schedule(i);
        let trial = run_trial(&d, &mut rng, phase, signal).unwrap_or_else(|e| {
            panic!(
                "trial {i} ({phase:?}, {signal}) failed: {e}\nreplay with MLXD_FAULT_SEED={seed} \
                 MLXD_FAULT_TRIALS={trials}\n--- mlxd serve log ---\n{}",
                d.log_tail(40)
            )
        });
        // Back to the state before the first fault: one ready worker, the
        // same descriptors and mappings, no zombie.
        let mut now = d.holdings();
        let settled = wait_until(Duration::from_secs(10), || {
            now = d.holdings();
            now == baseline
        });
        if !settled {
            panic!(
                "trial {i} ({phase:?}, {signal}) left the daemon holding {now:?}, \
                 before the first fault {baseline:?}\nreplay with MLXD_FAULT_SEED={seed} \
                 MLXD_FAULT_TRIALS={trials}\n--- mlxd serve log ---\n{}",
                d.log_tail(40)
            );
        }
        eprintln!(
            "trial {i:>3}: {:<8} {:<8} recovered in {:>5} ms  {:?}",
            format!("{:?}", trial.phase),
            trial.signal.as_str(),
            trial.recovered_in.as_millis(),
            trial.outcomes
        );
        done.push(trial);
    }
    let worker = d.worker();
    assert_ne!(d.ready_pid(), Some(first_worker));
    assert_eq!(d.health(), 200);
    drop(d);
    let leaked: Vec<_> = dev_shm().difference(&shm_before).cloned().collect();
    assert!(leaked.is_empty(), "left in /dev/shm: {leaked:?}");

    let requests: usize = done.iter().map(|t| t.outcomes.len()).sum();
    let complete = done
        .iter()
        .flat_map(|t| &t.outcomes)
        .filter(|o| **o == Outcome::Complete)
        .count();
    let slowest = done
        .iter()
        .map(|t| t.recovered_in)
        .max()
        .unwrap_or_default();
    eprintln!(
        "fault injection: {} trials survived in {:.0} s; {requests} requests in flight \
         ({complete} complete, {} clear errors, 0 lost); 0 leaks; slowest recovery {} ms; \
         worker restarts {}",
        done.len(),
        started.elapsed().as_secs_f64(),
        requests - complete,
        slowest.as_millis(),
        worker["restarts"]
    );
    if let Ok(path) = std::env::var("MLXD_FAULT_REPORT") {
        let by_kind: BTreeMap<String, usize> = done.iter().fold(BTreeMap::new(), |mut m, t| {
            *m.entry(format!("{:?}/{}", t.phase, t.signal.as_str()))
                .or_insert(0) += 1;
            m
        });
        let report = json!({
            "seed": seed,
            "trials": trials,
            "survived": done.len(),
            "by_phase_and_signal": by_kind,
            "requests_in_flight": requests,
            "complete": complete,
            "clear_errors": requests - complete,
            "lost": 0,
            "leaks": 0,
            "slowest_recovery_ms": slowest.as_millis() as u64,
            "seconds": started.elapsed().as_secs_f64(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    }
}
