//! A worker's stderr: each line forwarded to the daemon's log at the level
//! the worker wrote it at, the last few kept for error messages.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncBufReadExt, BufReader};

/// Stderr lines kept for error messages.
pub(super) const STDERR_TAIL: usize = 12;

/// Forwards the worker's stderr to the log and keeps its last lines.
pub(super) async fn forward_stderr(
    stderr: tokio::process::ChildStderr,
    model: String,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        forward_line(&model, &line);
        let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
        if tail.len() == STDERR_TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

/// Logs one line of a worker's stderr at the level the worker wrote it at,
/// under the target `mlxd::worker`.
fn forward_line(model: &str, line: &str) {
    let (level, message) = split_level(line);
    // The level of an event is static: one call per level.
    match level {
        tracing::Level::ERROR => tracing::error!(target: "mlxd::worker", model, "{message}"),
        tracing::Level::WARN => tracing::warn!(target: "mlxd::worker", model, "{message}"),
        tracing::Level::INFO => tracing::info!(target: "mlxd::worker", model, "{message}"),
        tracing::Level::DEBUG => tracing::debug!(target: "mlxd::worker", model, "{message}"),
        tracing::Level::TRACE => tracing::trace!(target: "mlxd::worker", model, "{message}"),
    }
}

/// The level a worker's log line starts with, and the rest of it; a line
/// without one (a panic, a library writing to stderr) is a warning, whole.
fn split_level(line: &str) -> (tracing::Level, &str) {
    let level = |word: &str| match word {
        "ERROR" => Some(tracing::Level::ERROR),
        "WARN" => Some(tracing::Level::WARN),
        "INFO" => Some(tracing::Level::INFO),
        "DEBUG" => Some(tracing::Level::DEBUG),
        "TRACE" => Some(tracing::Level::TRACE),
        _ => None,
    };
    line.trim_start()
        .split_once(' ')
        .and_then(|(word, rest)| Some((level(word)?, rest.trim_start())))
        .unwrap_or((tracing::Level::WARN, line))
}

#[cfg(test)]
mod tests {
    use super::split_level;
    use tracing::Level;

    #[test]
    fn a_worker_line_keeps_its_level_and_anything_else_is_a_warning() {
        assert_eq!(
            split_level(" INFO ready model=m"),
            (Level::INFO, "ready model=m")
        );
        assert_eq!(
            split_level("DEBUG busy stretch steps=3"),
            (Level::DEBUG, "busy stretch steps=3")
        );
        assert_eq!(
            split_level("ERROR engine step failed"),
            (Level::ERROR, "engine step failed")
        );
        let panic = "thread 'main' panicked at src/lib.rs:1:1:";
        assert_eq!(split_level(panic), (Level::WARN, panic));
        assert_eq!(
            split_level("1 kernel failed"),
            (Level::WARN, "1 kernel failed")
        );
        assert_eq!(split_level("INFO"), (Level::WARN, "INFO"));
    }
}
