//! Memory, against a real `mlxd serve` with the tiny model: a worker's
//! live memory (its `Stats` frames, one a second) reaches `/admin/status`
//! and `mlxd_model_memory_bytes` in `/metrics`; a burst of requests whose
//! KV does not fit the worker's KV memory together queues and completes.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]
// The daemon's helpers read /proc (descriptors, mappings, children).
#![cfg(target_os = "linux")]

mod common;
// Only some of the fault tests' helpers are used here.
#[allow(dead_code)]
#[path = "faults/daemon.rs"]
mod daemon;
#[path = "faults/http.rs"]
mod http;

use std::time::Duration;

use common::{tiny_model, wait_until};
use daemon::Daemon;
use http::{request, send};
use serde_json::{Value, json};

/// The daemon's heartbeat timeout, in seconds (no worker is stopped here).
const HEARTBEAT_TIMEOUT: u64 = 60;

fn metric(port: u16, name: &str, model: &str) -> Option<u64> {
    let (status, mut body) = send(port, "GET", "/metrics", None, None).unwrap();
    assert_eq!(status, 200);
    let text = String::from_utf8(body.read_all().unwrap()).unwrap();
    let prefix = format!("{name}{{model=\"{model}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn admin_status_and_metrics_report_the_workers_live_memory() {
    let d = Daemon::start();
    let body = json!({
        "model": "tiny",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 3,
    });
    let (status, answer) = request(d.port, "POST", "/v1/chat/completions", Some(&body));
    assert_eq!(status, 200, "{answer}");
    let mut live = Value::Null;
    assert!(
        wait_until(Duration::from_secs(10), || {
            live = d.worker()["live"].clone();
            live.is_object()
        }),
        "no live report in {}",
        d.worker()
    );
    let active = live["active_memory_bytes"].as_u64().unwrap();
    assert!(active > 0, "{live}");
    assert!(
        live["peak_memory_bytes"].as_u64().unwrap() >= active,
        "{live}"
    );
    assert!(live["age_seconds"].as_f64().unwrap() < 5.0, "{live}");
    // The reported memory is the live one, here and in the metrics (a
    // report a second: they may differ by the report between the reads).
    let w = d.worker();
    assert_eq!(w["memory_bytes"], w["live"]["active_memory_bytes"], "{w}");
    let live_now = || d.worker()["live"]["active_memory_bytes"].as_u64().unwrap();
    let matched = wait_until(Duration::from_secs(10), || {
        let before = live_now();
        let gauge = metric(d.port, "mlxd_model_memory_bytes", "tiny");
        gauge == Some(before) && live_now() == before
    });
    assert!(matched, "the gauge does not follow the live report");
}

#[test]
fn a_burst_over_the_kv_memory_queues_and_completes() {
    // The smallest KV memory a worker takes: one full context (512
    // positions), room for two of these requests at once.
    let model = format!("tiny={}", tiny_model().display());
    let d = Daemon::start_with_args(
        Some(&model),
        "tiny",
        &["--kv-memory", "1KiB", "--context-length", "512"],
    );
    let body = |i: usize| {
        json!({
            "model": "tiny",
            "messages": [{"role": "user", "content": format!("Story {i}.")}],
            "max_tokens": 200,
            "ignore_eos": true,
        })
    };
    let port = d.port;
    let burst: Vec<_> = (0..10)
        .map(|i| {
            std::thread::spawn(move || {
                request(port, "POST", "/v1/chat/completions", Some(&body(i)))
            })
        })
        .collect();
    for handle in burst {
        let (status, answer) = handle.join().unwrap();
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["usage"]["completion_tokens"], 200, "{answer}");
    }
    assert_eq!(d.worker()["restarts"], 0, "nothing aborted");
}
