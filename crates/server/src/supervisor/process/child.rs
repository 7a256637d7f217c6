//! A worker's child process: the task that owns it (signals, reaping, how
//! it ended) and the clean-up of children that never ran their program.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};

use super::Spawner;
use crate::supervisor::worker::ExitReport;

/// Kills the spawner thread's children that have not exec'd yet (their
/// command line is still this process's). They are unreaped children of
/// this process, so their pids cannot have been recycled.
#[cfg(target_os = "linux")]
pub(super) fn kill_unexeced_children(spawner: &Spawner) {
    // Relaxed: written once when the thread started.
    let tid = spawner.tid.load(std::sync::atomic::Ordering::Relaxed);
    let Ok(own) = std::fs::read("/proc/self/cmdline") else {
        return;
    };
    let Ok(children) = std::fs::read_to_string(format!("/proc/self/task/{tid}/children")) else {
        return;
    };
    for pid in children
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        if std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == own) {
            tracing::error!(
                pid,
                "a worker stopped before it ran its program; killing it"
            );
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Elsewhere such a child is left to the load timeout.
#[cfg(not(target_os = "linux"))]
pub(super) fn kill_unexeced_children(_: &Spawner) {}

/// Owns the child: delivers signals while it runs, reaps it, publishes how
/// it ended.
pub(super) async fn own_child(
    mut child: tokio::process::Child,
    mut signals: mpsc::UnboundedReceiver<Signal>,
    exit: watch::Sender<Option<ExitReport>>,
    tail: Arc<Mutex<VecDeque<String>>>,
    killed_because: Arc<Mutex<Option<String>>>,
) {
    let pid = child.id().and_then(|p| i32::try_from(p).ok());
    let status = loop {
        tokio::select! {
            biased;
            status = child.wait() => break status,
            Some(signal) = signals.recv() => {
                // The child has not been reaped (its wait is still pending
                // above), so the pid is still ours.
                if let Some(pid) = pid {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
                }
            }
        }
    };
    let status = match status {
        Ok(s) => describe_status(s),
        Err(e) => format!("waiting for the worker failed: {e}"),
    };
    let status = match killed_because
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
    {
        Some(why) => format!("{status} by the supervisor: the worker hung, {why}"),
        None => status,
    };
    // Let the stderr reader catch the last lines.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stderr_tail = tail
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .cloned()
        .collect();
    let _ = exit.send(Some(ExitReport {
        status,
        stderr_tail,
    }));
}

fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(signal) = status.signal() {
        let name = Signal::try_from(signal).map_or_else(|_| signal.to_string(), |s| s.to_string());
        format!("killed by {name}")
    } else {
        format!("exit status {}", status.code().unwrap_or(-1))
    }
}
