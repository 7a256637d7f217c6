//! `mlxd serve` as a child process with real workers and the tiny model,
//! over HTTP on loopback: a worker killed mid-stream, the daemon killed, a
//! client that goes away, keep-alive, two models, load failures over HTTP,
//! graceful shutdown.
//!
//! Each test starts its own daemon on free ports; a guard kills the daemon
//! and its workers when the test ends, failed or not. The HTTP client is a
//! small HTTP/1.1 one over `TcpStream` (`Connection: close`, chunked bodies
//! decoded as they arrive), enough for JSON and Server-Sent Events.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// Generous: a loaded 2-core machine runs the suites in parallel.
const TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------- HTTP

/// A response read to its end.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A response body as it arrives (chunked or delimited by EOF).
struct Body {
    reader: BufReader<TcpStream>,
    chunked: bool,
    eof: bool,
}

impl Body {
    /// The next piece of the body; empty at its end.
    fn read_piece(&mut self) -> Vec<u8> {
        if self.eof {
            return Vec::new();
        }
        if !self.chunked {
            let mut buf = vec![0; 8192];
            let n = self.reader.read(&mut buf).unwrap();
            buf.truncate(n);
            self.eof = n == 0;
            return buf;
        }
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
        let mut piece = vec![0; size + 2];
        self.reader.read_exact(&mut piece).unwrap();
        piece.truncate(size);
        if size == 0 {
            self.eof = true;
        }
        piece
    }

    fn read_all(mut self) -> String {
        let mut all = Vec::new();
        loop {
            let piece = self.read_piece();
            if piece.is_empty() {
                break;
            }
            all.extend(piece);
        }
        String::from_utf8(all).unwrap()
    }
}

/// Sends a request; returns the status, headers and the unread body.
fn send(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Vec<(String, String)>, Body) {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    common::write_request(&stream, port, method, path, body).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').unwrap();
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = Body {
        reader,
        chunked,
        eof: false,
    };
    (status, headers, body)
}

fn request(port: u16, method: &str, path: &str, body: Option<&Value>) -> Response {
    let (status, headers, body) = send(port, method, path, body);
    Response {
        status,
        headers,
        body: body.read_all(),
    }
}

/// A Server-Sent Events stream: `data:` payloads one by one.
struct Sse {
    body: Body,
    buf: Vec<u8>,
}

impl Sse {
    /// The next event's data (`[DONE]` included); `None` at the end.
    fn next(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8(event).unwrap();
                let data = text.trim_end().strip_prefix("data: ").unwrap_or_else(|| {
                    panic!("not a data event: {text:?}");
                });
                return Some(data.to_owned());
            }
            let piece = self.body.read_piece();
            if piece.is_empty() {
                assert!(
                    self.buf.is_empty(),
                    "a partial event at the end: {:?}",
                    self.buf
                );
                return None;
            }
            self.buf.extend(piece);
        }
    }

    /// The next event as JSON (panics on `[DONE]` or the end).
    fn next_json(&mut self) -> Value {
        let data = self.next().expect("another event");
        serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {data}"))
    }
}

fn stream(port: u16, path: &str, body: &Value) -> Sse {
    let (status, _, body) = send(port, "POST", path, Some(body));
    assert_eq!(status, 200);
    Sse {
        body,
        buf: Vec::new(),
    }
}

// -------------------------------------------------------------- daemon

/// A running `mlxd serve`; dropping it kills it and its workers.
struct Daemon {
    child: Child,
    port: u16,
    admin_port: u16,
    log: PathBuf,
    /// Workers seen, killed on drop if still alive.
    workers: Vec<u32>,
    dir: tempfile::TempDir,
}

impl Daemon {
    /// `mlxd serve` with `args` on free ports, once both APIs answer.
    fn start(args: &[String]) -> Daemon {
        for _ in 0..3 {
            if let Some(daemon) = Daemon::try_start(args) {
                return daemon;
            }
        }
        panic!("mlxd serve did not start");
    }

    fn try_start(args: &[String]) -> Option<Daemon> {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let log = dir.path().join("serve.log");
        let (port, admin_port) = (free_port(), free_port());
        let mut cmd = isolated_serve(&empty, port, admin_port);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap());
        let child = cmd.spawn().unwrap();
        let mut daemon = Daemon {
            child,
            port,
            admin_port,
            log,
            workers: Vec::new(),
            dir,
        };
        let ready = wait_until(TIMEOUT, || {
            if daemon.child.try_wait().unwrap().is_some() {
                return true;
            }
            let up = |p| {
                TcpStream::connect(("127.0.0.1", p)).is_ok()
                    && request(
                        p,
                        "GET",
                        if p == port {
                            "/health"
                        } else {
                            "/admin/health"
                        },
                        None,
                    )
                    .status
                        == 200
            };
            up(port) && up(admin_port)
        });
        if let Some(status) = daemon.child.try_wait().unwrap() {
            let log = daemon.log_text();
            // Another process took a port between the probe and the bind.
            assert!(
                log.contains("listening on"),
                "mlxd serve exited ({status}):\n{log}"
            );
            return None;
        }
        assert!(ready, "mlxd serve did not answer:\n{}", daemon.log_text());
        Some(daemon)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn get(&self, path: &str) -> Response {
        request(self.port, "GET", path, None)
    }

    fn post(&self, path: &str, body: Value) -> Response {
        request(self.port, "POST", path, Some(&body))
    }

    fn stream(&self, path: &str, body: Value) -> Sse {
        stream(self.port, path, &body)
    }

    fn admin_post(&self, path: &str, body: Value) -> Response {
        request(self.admin_port, "POST", path, Some(&body))
    }

    /// `/admin/status` entry of `model`, if any.
    fn worker(&self, model: &str) -> Option<Value> {
        let status = request(self.admin_port, "GET", "/admin/status", None).json();
        status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["model"] == model)
            .cloned()
    }

    /// The pid of `model`'s worker, once it is ready.
    fn worker_pid(&mut self, model: &str) -> u32 {
        let mut pid = None;
        let ready = wait_until(TIMEOUT, || {
            pid = self
                .worker(model)
                .filter(|w| w["state"] == "ready")
                .and_then(|w| w["pid"].as_u64());
            pid.is_some()
        });
        assert!(ready, "{model} has no ready worker:\n{}", self.log_text());
        let pid = pid.unwrap() as u32;
        self.workers.push(pid);
        pid
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid() as i32), signal).unwrap();
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let mut pids = live_children(self.pid());
            pids.extend(self.workers.iter().copied().filter(|p| process_alive(*p)));
            for pid in pids {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        } else {
            for pid in self.workers.iter().copied().filter(|p| process_alive(*p)) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "--- mlxd serve log (last lines, {}) ---",
                self.dir.path().display()
            );
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

fn model_arg(name: &str, path: &Path) -> [String; 2] {
    ["--model".into(), format!("{name}={}", path.display())]
}

/// A long streamed chat request for `model` (`ignore_eos`, many tokens).
fn long_chat(model: &str) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "Tell a long story."}],
        "max_tokens": 100_000,
        "ignore_eos": true,
        "stream": true,
    })
}

/// A short chat request for `model`.
fn short_chat(model: &str) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 4,
        "ignore_eos": true,
    })
}

/// Mappings of shared-memory rings in `pid` (memfds on Linux, or named
/// objects under /dev/shm).
fn ring_mappings(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("memfd:shm-ring") || l.contains("/dev/shm/"))
        .count()
}

fn dev_shm() -> std::collections::BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

// --------------------------------------------------------------- tests

#[test]
fn a_worker_killed_mid_stream_is_replaced_and_the_stream_goes_on() {
    let shm_before = dev_shm();
    let mut d = Daemon::start(&model_arg("tiny", tiny_model()));
    let mut sse = d.stream("/v1/chat/completions", long_chat("tiny"));
    for _ in 0..4 {
        let chunk = sse.next_json();
        assert!(chunk.get("error").is_none(), "{chunk}");
    }
    let pid = d.worker_pid("tiny");
    let rings = ring_mappings(d.pid());
    assert!(rings > 0, "the daemon maps no ring");

    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let killed = Instant::now();
    // The request is resubmitted to a fresh worker: the stream goes on,
    // without an error event.
    for _ in 0..40 {
        let chunk = sse.next_json();
        assert!(chunk.get("error").is_none(), "{chunk}");
        assert!(killed.elapsed() < TIMEOUT, "the stream stalled");
    }
    drop(sse);

    assert_eq!(d.get("/health").status, 200);
    assert!(
        wait_until(Duration::from_secs(5), || !process_alive(pid)),
        "the killed worker is a zombie"
    );
    // The same model again: the fresh worker.
    let r = d.post("/v1/chat/completions", short_chat("tiny"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["choices"][0]["finish_reason"], "length");
    let fresh = d.worker_pid("tiny");
    assert_ne!(fresh, pid);
    assert_eq!(d.worker("tiny").unwrap()["restarts"], 1);
    // The dead worker's ring is unmapped; nothing named was left behind.
    assert!(
        wait_until(Duration::from_secs(5), || ring_mappings(d.pid()) == rings),
        "the daemon still maps the dead worker's ring"
    );
    let leaked: Vec<_> = dev_shm().difference(&shm_before).cloned().collect();
    assert!(
        leaked.iter().all(|n| !n.starts_with("shmr-")),
        "left in /dev/shm: {leaked:?}"
    );
}

#[test]
fn the_workers_of_a_killed_daemon_exit_within_two_seconds() {
    let tiny = tiny_model();
    let mut args = model_arg("a", tiny).to_vec();
    args.extend(model_arg("b", tiny));
    let mut d = Daemon::start(&args);
    for model in ["a", "b"] {
        let r = d.post("/v1/chat/completions", short_chat(model));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let workers = [d.worker_pid("a"), d.worker_pid("b")];
    assert_ne!(workers[0], workers[1]);
    assert!(workers.iter().all(|p| process_alive(*p)));

    d.signal(Signal::SIGKILL);
    let killed = Instant::now();
    let gone = wait_until(Duration::from_secs(2), || {
        workers.iter().all(|p| !process_alive(*p))
    });
    assert!(
        gone,
        "workers still alive {:?} after the daemon was killed",
        killed.elapsed()
    );
}

#[test]
fn a_client_that_goes_away_frees_its_sequence() {
    let mut d = Daemon::start(&model_arg("tiny", tiny_model()));
    // The decode rate, from a whole request (an upper bound per token).
    let mut timed = short_chat("tiny");
    timed["max_tokens"] = json!(300);
    let asked = Instant::now();
    let r = d.post("/v1/chat/completions", timed);
    assert_eq!(r.json()["usage"]["completion_tokens"], 300, "{}", r.body);
    let per_token = asked.elapsed() / 300;

    let mut sse = d.stream("/v1/chat/completions", long_chat("tiny"));
    sse.next_json(); // the role
    for _ in 0..3 {
        assert!(sse.next_json().get("error").is_none());
    }
    let pid = d.worker_pid("tiny");
    assert_eq!(d.worker("tiny").unwrap()["in_flight"], 1);
    drop(sse);

    assert!(
        wait_until(TIMEOUT, || d.worker("tiny").unwrap()["in_flight"] == 0),
        "the request is still in flight after the client left"
    );
    // The worker confirmed the cancel, and at most the step in flight and
    // the one being read reached the front-end after it was sent.
    let metrics = d.get("/metrics").body;
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in {metrics}"))
    };
    assert_eq!(value("mlxd_cancelled_requests "), 1);
    let late = value("mlxd_tokens_after_cancel ");
    assert!(late <= 2, "{late} tokens arrived after the cancel");
    // The worker decodes one sequence at a time: had it kept generating the
    // abandoned one (100 000 tokens), this request would wait behind it.
    let remaining = per_token * 99_000;
    let asked = Instant::now();
    let r = d.post("/v1/chat/completions", short_chat("tiny"));
    let waited = asked.elapsed();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        waited * 10 < remaining && waited < TIMEOUT,
        "the next request waited {waited:?} (the abandoned one had {remaining:?} to go)"
    );
    assert_eq!(d.worker_pid("tiny"), pid, "the worker was not replaced");
    assert_eq!(d.worker("tiny").unwrap()["in_flight"], 0);
}

#[test]
fn a_model_idle_past_its_keep_alive_is_unloaded_and_reloads_on_demand() {
    let mut args = model_arg("tiny", tiny_model()).to_vec();
    args.extend(["--keep-alive".into(), "1s".into()]);
    let mut d = Daemon::start(&args);
    let r = d.post("/v1/chat/completions", short_chat("tiny"));
    assert_eq!(r.status, 200, "{}", r.body);
    let pid = d.worker_pid("tiny");
    assert_eq!(d.worker("tiny").unwrap()["keep_alive_seconds"], 1.0);

    assert!(
        wait_until(TIMEOUT, || !process_alive(pid)),
        "the idle worker is still running"
    );
    let state = d.worker("tiny").map(|w| w["state"].clone());
    assert!(
        state.as_ref().is_none_or(|s| s != "ready"),
        "state {state:?}"
    );
    let listed = d.get("/v1/models/tiny").json();
    assert_eq!(listed["loaded"], false);

    let r = d.post("/v1/chat/completions", short_chat("tiny"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_ne!(d.worker_pid("tiny"), pid);
}

#[test]
fn a_models_configured_max_tokens_applies_when_a_request_sets_none() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mlxd.toml");
    std::fs::write(&config, "[models.overrides.tiny]\nmax_tokens = 3\n").unwrap();
    let mut args = model_arg("tiny", tiny_model()).to_vec();
    args.extend(["--config".into(), config.display().to_string()]);
    let d = Daemon::start(&args);
    let chat = |max_tokens: Option<u32>| {
        let mut body = short_chat("tiny");
        match max_tokens {
            Some(n) => body["max_tokens"] = json!(n),
            None => drop(body.as_object_mut().unwrap().remove("max_tokens")),
        }
        let r = d.post("/v1/chat/completions", body);
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        (
            v["usage"]["completion_tokens"].as_u64().unwrap(),
            v["choices"][0]["finish_reason"]
                .as_str()
                .unwrap()
                .to_owned(),
        )
    };
    assert_eq!(chat(None), (3, "length".to_owned()));
    assert_eq!(chat(Some(5)), (5, "length".to_owned()));
}

#[test]
fn speculation_reports_draft_tokens_in_usage_and_metrics() {
    // The model as its own draft: every draft token is accepted, and the
    // text is the text of the same model without speculation.
    let tiny = tiny_model();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mlxd.toml");
    let toml = format!(
        "[models.overrides.spec]\nspeculative = \"draft_model\"\ndraft_model = \"{}\"\nnum_draft_tokens = 3\n",
        tiny.display()
    );
    std::fs::write(&config, toml).unwrap();
    let mut args = model_arg("spec", tiny).to_vec();
    args.extend(model_arg("plain", tiny));
    args.extend(["--config".into(), config.display().to_string()]);
    let d = Daemon::start(&args);
    let chat = |model: &str| {
        let mut body = short_chat(model);
        body["max_tokens"] = json!(12);
        body["temperature"] = json!(0);
        let r = d.post("/v1/chat/completions", body);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    };
    let (spec, plain) = (chat("spec"), chat("plain"));
    let text = |v: &Value| v["choices"][0]["message"]["content"].clone();
    assert_eq!(text(&spec), text(&plain));
    let details = &spec["usage"]["completion_tokens_details"];
    let accepted = details["accepted_prediction_tokens"].as_u64().unwrap();
    assert!(accepted > 0, "{spec}");
    assert_eq!(details["rejected_prediction_tokens"], 0, "{spec}");
    assert_eq!(spec["usage"]["completion_tokens"], 12);
    assert!(plain["usage"].get("completion_tokens_details").is_none());
    let metrics = d.get("/metrics");
    assert!(
        metrics
            .body
            .contains(&format!("mlxd_accepted_draft_tokens_total {accepted}")),
        "{}",
        metrics.body
    );
}

#[test]
fn two_models_run_in_two_processes_and_unload_separately() {
    let tiny = tiny_model();
    let mut args = model_arg("a", tiny).to_vec();
    args.extend(model_arg("b", tiny));
    let mut d = Daemon::start(&args);
    for model in ["a", "b"] {
        let r = d.post("/v1/chat/completions", short_chat(model));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let (a, b) = (d.worker_pid("a"), d.worker_pid("b"));
    assert_ne!(a, b);
    let workers = live_children(d.pid());
    assert!(workers.contains(&a) && workers.contains(&b), "{workers:?}");

    let r = d.admin_post("/admin/unload", json!({"model": "a"}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["unloaded"], true);
    assert!(
        wait_until(TIMEOUT, || !process_alive(a)),
        "a's worker is still running"
    );
    let r = d.post("/v1/chat/completions", short_chat("b"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(d.worker_pid("b"), b, "b was not left alone");
    assert_eq!(d.get("/v1/models/a").json()["loaded"], false);
    assert_eq!(d.get("/v1/models/b").json()["loaded"], true);
}

/// A copy of the tiny model that `edit` then breaks.
fn broken_copy(root: &Path, name: &str, edit: impl FnOnce(&Path)) -> PathBuf {
    let path = root.join(name);
    std::fs::create_dir(&path).unwrap();
    for entry in std::fs::read_dir(tiny_model()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), path.join(entry.file_name())).unwrap();
    }
    edit(&path);
    path
}

#[test]
fn models_that_cannot_load_fail_over_http_with_the_reason() {
    let root = tempfile::tempdir().unwrap();
    let vanished = broken_copy(root.path(), "vanished", |_| {});
    let corrupt = broken_copy(root.path(), "corrupt", |p| {
        let weights = p.join("model.safetensors");
        let bytes = std::fs::read(&weights).unwrap();
        std::fs::write(&weights, &bytes[..100]).unwrap();
    });
    let unsupported = broken_copy(root.path(), "unsupported", |p| {
        let path = p.join("config.json");
        let mut config: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        config["model_type"] = json!("mamba");
        std::fs::write(&path, config.to_string()).unwrap();
    });
    let mut args = model_arg("tiny", tiny_model()).to_vec();
    for (name, path) in [
        ("vanished", &vanished),
        ("corrupt", &corrupt),
        ("unsupported", &unsupported),
    ] {
        args.extend(model_arg(name, path));
    }
    args.extend(["--load-timeout".into(), "60".into()]);
    let d = Daemon::start(&args);
    // Valid when the daemon started; gone by the first request.
    std::fs::remove_dir_all(&vanished).unwrap();

    for (model, reason) in [
        ("vanished", "does not exist"),
        ("corrupt", "corrupt file"),
        ("unsupported", "mamba"),
    ] {
        let asked = Instant::now();
        let r = d.post("/v1/chat/completions", short_chat(model));
        assert!(asked.elapsed() < TIMEOUT);
        assert_eq!(r.status, 503, "{model}: {}", r.body);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let error = &r.json()["error"];
        assert_eq!(error["code"], "model_load_failed", "{model}: {error}");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("Model `{model}` failed to load: ")),
            "{message}"
        );
        assert!(message.contains(reason), "{model}: {message}");
        assert_eq!(d.get("/health").status, 200);
    }
    let r = d.post("/v1/chat/completions", short_chat("tiny"));
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_and_stops_the_workers() {
    let mut d = Daemon::start(&model_arg("tiny", tiny_model()));
    let mut sse = d.stream(
        "/v1/chat/completions",
        json!({
            "model": "tiny",
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 200,
            "ignore_eos": true,
            "stream": true,
            "stream_options": {"include_usage": true},
        }),
    );
    sse.next_json();
    sse.next_json();
    let pid = d.worker_pid("tiny");
    d.signal(Signal::SIGTERM);

    let mut finish = None;
    let mut usage = None;
    loop {
        let data = sse.next().expect("the stream ends with [DONE]");
        if data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(&data).unwrap();
        assert!(chunk.get("error").is_none(), "{chunk}");
        if let Some(reason) = chunk["choices"][0]["finish_reason"].as_str() {
            finish = Some(reason.to_owned());
        }
        if !chunk["usage"].is_null() {
            usage = Some(chunk["usage"].clone());
        }
    }
    assert_eq!(finish.as_deref(), Some("length"));
    assert_eq!(usage.unwrap()["completion_tokens"], 200);
    let status = d.wait_exit(TIMEOUT).expect("the daemon exits");
    assert!(status.success(), "{status}:\n{}", d.log_text());
    assert!(
        wait_until(Duration::from_secs(10), || !process_alive(pid)),
        "the worker outlived the daemon"
    );
}
