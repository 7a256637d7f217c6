//! The prompt cache on disk against a real `mlxd serve`: a long prompt's
//! cache outlives its worker (SIGKILLed) and its daemon (killed and
//! started again on the same folder): the same prompt with more after it
//! reports cached prompt tokens and gets the text of a cold run.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]
#![cfg(target_os = "linux")]

mod common;
#[path = "faults/http.rs"]
mod http;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;
use http::request;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(120);

/// A running `mlxd serve` of the tiny model as `tiny`, killed (with its
/// workers) when dropped.
struct Serve {
    child: Child,
    port: u16,
    admin_port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Serve {
    /// With the prompt cache on disk in `cache` when given, else with no
    /// prompt cache at all (the cold reference).
    fn start(cache: Option<&Path>) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let log = dir.path().join("serve.log");
        let (port, admin_port) = (free_port(), free_port());
        let mut cmd = isolated_serve(&empty, port, admin_port);
        cmd.arg("--model")
            .arg(format!("tiny={}", tiny_model().display()))
            .args(["--load-timeout", "120"]);
        match cache {
            Some(cache) => cmd
                .arg("--prompt-cache-dir")
                .arg(cache)
                .args(["--prompt-cache-disk", "256MiB"]),
            None => cmd.args(["--prompt-cache", "0"]),
        };
        let child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap())
            .spawn()
            .unwrap();
        let mut s = Serve {
            child,
            port,
            admin_port,
            log,
            _dir: dir,
        };
        let up = wait_until(WAIT, || {
            s.child.try_wait().unwrap().is_some()
                || (TcpStream::connect(("127.0.0.1", port)).is_ok()
                    && TcpStream::connect(("127.0.0.1", admin_port)).is_ok())
        });
        assert!(
            up && s.child.try_wait().unwrap().is_none(),
            "mlxd serve did not start:\n{}",
            s.log()
        );
        s
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A greedy completion of `prompt`: its text and cached prompt tokens.
    fn complete(&self, prompt: &str) -> (String, u64) {
        let body = json!({
            "model": "tiny",
            "prompt": prompt,
            "max_tokens": 12,
            "temperature": 0.0,
        });
        let (status, out) = request(self.port, "POST", "/v1/completions", Some(&body));
        assert_eq!(status, 200, "{out}\n{}", self.log());
        let text = out["choices"][0]["text"].as_str().unwrap().to_owned();
        let cached = out["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap_or(0);
        (text, cached)
    }

    /// The pid of the model's worker, when it is ready.
    fn worker_pid(&self) -> Option<u32> {
        let (_, status) = request(self.admin_port, "GET", "/admin/status", None);
        status["workers"].as_array().and_then(|w| {
            w.iter()
                .find(|w| w["model"] == "tiny" && w["state"] == "ready")
                .and_then(|w| w["pid"].as_u64())
                .map(|p| p as u32)
        })
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        for (pid, _) in child_processes(self.child.id()) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Entry files under the cache folder (in its model's folder).
fn entries(cache: &Path) -> usize {
    let Ok(models) = std::fs::read_dir(cache) else {
        return 0;
    };
    models
        .flatten()
        .filter_map(|m| std::fs::read_dir(m.path()).ok())
        .flat_map(|files| files.flatten())
        .filter(|f| f.path().extension().is_some_and(|e| e == "kv"))
        .count()
}

#[test]
fn a_prompts_cache_outlives_its_worker_and_its_daemon() {
    let history = "The quick brown fox jumps over the lazy dog near the river bank. ".repeat(24);
    let first = history.trim_end().to_owned();
    let next = format!("{first} Then the dog woke up and");

    let cold = Serve::start(None);
    let (cold_text, cached) = cold.complete(&next);
    assert_eq!(cached, 0);
    drop(cold);

    let cache = tempfile::tempdir().unwrap();
    let serve = Serve::start(Some(cache.path()));
    let (_, cached) = serve.complete(&first);
    assert_eq!(cached, 0);
    // Written through when the sequence ended, by the worker's writer.
    assert!(
        wait_until(WAIT, || entries(cache.path()) > 0),
        "nothing written:\n{}",
        serve.log()
    );
    let pid = serve.worker_pid().unwrap();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    assert!(
        wait_until(WAIT, || serve.worker_pid() != Some(pid)),
        "the worker did not go"
    );
    // A fresh worker: memory is empty, the disk tier serves the history.
    let (text, cached) = serve.complete(&next);
    assert!(cached > 100, "cached {cached}:\n{}", serve.log());
    assert_eq!(text, cold_text);
    drop(serve);

    // A fresh daemon on the same folder.
    let serve = Serve::start(Some(cache.path()));
    let (text, cached) = serve.complete(&next);
    assert!(cached > 100, "cached {cached}:\n{}", serve.log());
    assert_eq!(text, cold_text);
}
