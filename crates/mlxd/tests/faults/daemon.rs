//! A real `mlxd serve` for the fault tests, and what they check it by: the
//! descriptors, ring mappings and children the daemon holds, the
//! shared-memory objects left in /dev/shm, and the signals sent to its
//! worker.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use super::HEARTBEAT_TIMEOUT;
use crate::common::*;
use crate::http::{HANG, request};

/// What the daemon holds: descriptors by kind, ring mappings, children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holdings {
    pub fds: BTreeMap<String, usize>,
    pub ring_mappings: usize,
    pub children: usize,
    pub zombies: usize,
}

pub fn holdings(pid: u32) -> Holdings {
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

pub fn dev_shm() -> std::collections::BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("shmr-"))
                .collect()
        })
        .unwrap_or_default()
}

/// A running `mlxd serve` with one model; dropping it kills it and its
/// workers.
pub struct Daemon {
    child: Child,
    pub port: u16,
    pub admin_port: u16,
    /// The name the model is served under.
    pub model: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// The tiny model as `tiny`.
    pub fn start() -> Daemon {
        let model = format!("tiny={}", tiny_model().display());
        Daemon::start_with(Some(&model), "tiny")
    }

    /// `mlxd serve --model <model>` (the built-in default model when
    /// `None`), its model served as `name`.
    pub fn start_with(model: Option<&str>, name: &str) -> Daemon {
        Daemon::start_with_args(model, name, &[])
    }

    /// As `start_with`, with more arguments for `mlxd serve`.
    pub fn start_with_args(model: Option<&str>, name: &str, extra: &[&str]) -> Daemon {
        for _ in 0..3 {
            if let Some(d) = Daemon::try_start(model, name, extra) {
                return d;
            }
        }
        panic!("mlxd serve did not start");
    }

    fn try_start(model: Option<&str>, name: &str, extra: &[&str]) -> Option<Daemon> {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let log = dir.path().join("serve.log");
        let (port, admin_port) = (free_port(), free_port());
        let mut cmd = isolated_serve(&empty, port, admin_port);
        if let Some(model) = model {
            cmd.arg("--model").arg(model);
        }
        cmd.env("RUST_LOG", "info")
            .args(["--heartbeat-timeout", &HEARTBEAT_TIMEOUT.to_string()])
            .args(["--load-timeout", "120"])
            // A prompt-cache hit gives the logits of a cold prefill to about
            // 1e-5, not bit for bit, and the tests compare a request's text
            // with the same request's text undisturbed.
            .args(["--prompt-cache", "0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap());
        let child = cmd.spawn().unwrap();
        let mut d = Daemon {
            child,
            port,
            admin_port,
            model: name.to_owned(),
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

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn health(&self) -> u16 {
        request(self.port, "GET", "/health", None).0
    }

    /// The model's entry in `/admin/status`.
    pub fn worker(&self) -> Value {
        let (_, status) = request(self.admin_port, "GET", "/admin/status", None);
        status["workers"]
            .as_array()
            .and_then(|w| {
                w.iter()
                    .find(|w| w["model"] == self.model.as_str())
                    .cloned()
            })
            .unwrap_or(Value::Null)
    }

    pub fn ready_pid(&self) -> Option<u32> {
        let w = self.worker();
        (w["state"] == "ready")
            .then(|| w["pid"].as_u64())
            .flatten()
            .map(|p| p as u32)
    }

    pub fn holdings(&self) -> Holdings {
        holdings(self.pid())
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

/// Sends the fault. An external SIGSEGV is absorbed once by the Rust
/// runtime's stack-overflow handler (it restores the default action and
/// returns, where a real fault would fault again and die), and a worker
/// caught between fork and exec installs that handler afresh, so SIGSEGV
/// is repeated until the worker is gone, as a real fault would be.
pub fn inject(pid: u32, signal: Signal) {
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
