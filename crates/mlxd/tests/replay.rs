//! Requests survive their worker's crash, against a real `mlxd serve`:
//!
//! - streamed requests (greedy and seeded-sampled) against the built-in
//!   model, whose worker is SIGKILLed twice at random moments while they
//!   stream, all complete without an error event, each with the text the
//!   same request has undisturbed; the daemon is left holding what it held
//!   before (descriptors, mappings, one child, no zombie, nothing in
//!   /dev/shm);
//! - a request that crashes its worker (the test build's fault trigger, a
//!   token sequence that makes the worker abort) ends alone with a
//!   `worker_crashed` error naming the signal and the worker's last words,
//!   while the requests beside it complete with their undisturbed text;
//! - streams killed past 256 delivered tokens (the new worker prefills
//!   their earlier output rather than decoding it again) complete.
//!
//! `MLXD_FAULT_SEED` replays the random moments (the seed is printed).

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]
// The daemon's helpers read /proc (descriptors, mappings, children).
#![cfg(target_os = "linux")]

mod common;
#[path = "faults/daemon.rs"]
mod daemon;
#[path = "faults/http.rs"]
mod http;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use common::*;
use daemon::{Daemon, Holdings, dev_shm, inject};
use http::{HANG, request, send};
use nix::sys::signal::Signal;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// The daemon's heartbeat timeout, in seconds: above the built-in model's
/// load and prefill on this machine (no test here stops a worker).
const HEARTBEAT_TIMEOUT: u64 = 60;

/// The fault trigger of the worker's `fault-injection` feature.
const FAULT_TRIGGER: [u32; 8] = worker::FAULT_TRIGGER;

/// A streamed request on its own thread: its SSE events are counted as
/// they arrive; it ends with its text, or why it is not a whole answer.
struct Stream {
    events: Arc<AtomicUsize>,
    handle: JoinHandle<Result<String, String>>,
}

fn stream(port: u16, body: Value) -> Stream {
    let events = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&events);
    let handle = std::thread::spawn(move || read_stream(port, &body, &counter));
    Stream { events, handle }
}

fn read_stream(port: u16, body: &Value, events: &AtomicUsize) -> Result<String, String> {
    let (status, mut body) =
        send(port, "POST", "/v1/chat/completions", Some(body), None).map_err(|e| e.to_string())?;
    if status != 200 {
        let text = body.read_all().unwrap_or_default();
        return Err(format!("{status}: {}", String::from_utf8_lossy(&text)));
    }
    let mut buf = Vec::new();
    let mut text = String::new();
    let mut finished = false;
    loop {
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..end + 2).collect();
            let event = String::from_utf8_lossy(&event).into_owned();
            let data = event
                .trim_end()
                .strip_prefix("data: ")
                .ok_or_else(|| format!("not a data event: {event:?}"))?;
            if data == "[DONE]" {
                return if finished {
                    Ok(text)
                } else {
                    Err(format!("[DONE] without a finish reason: {text:?}"))
                };
            }
            let chunk: Value = serde_json::from_str(data).map_err(|e| format!("{e}: {data}"))?;
            if chunk.get("error").is_some() {
                return Err(format!("an error event: {chunk}"));
            }
            let choice = &chunk["choices"][0];
            if let Some(piece) = choice["delta"]["content"].as_str() {
                text.push_str(piece);
            }
            finished |= choice["finish_reason"].is_string();
            events.fetch_add(1, Ordering::SeqCst);
        }
        match body.piece() {
            Ok(Some(piece)) => buf.extend(piece),
            Ok(None) => return Err(format!("the stream ended without [DONE]: {text:?}")),
            Err(e) => return Err(format!("the stream broke: {e}")),
        }
    }
}

/// Runs every body as a stream at once; their texts.
fn texts(port: u16, bodies: &[Value]) -> Vec<Result<String, String>> {
    let streams: Vec<Stream> = bodies.iter().map(|b| stream(port, b.clone())).collect();
    streams
        .into_iter()
        .map(|s| s.handle.join().unwrap())
        .collect()
}

/// Waits until every stream has `at_least[i]` events or has ended.
fn wait_for_events(streams: &[Stream], at_least: &[usize]) -> bool {
    wait_until(HANG, || {
        streams
            .iter()
            .zip(at_least)
            .all(|(s, &n)| s.handle.is_finished() || s.events.load(Ordering::SeqCst) >= n)
    })
}

fn seed() -> u64 {
    let seed = std::env::var("MLXD_FAULT_SEED")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    eprintln!("MLXD_FAULT_SEED={seed}");
    seed
}

/// What the daemon holds once it has been still for half a second.
fn settled(d: &Daemon) -> Holdings {
    let mut last = d.holdings();
    let mut same = 0;
    while same < 5 {
        std::thread::sleep(Duration::from_millis(100));
        let now = d.holdings();
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    last
}

/// Back to `baseline`, and the next request answers.
fn assert_recovered(d: &Daemon, baseline: &Holdings) {
    assert_eq!(d.health(), 200);
    let body = json!({
        "model": d.model,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 2,
    });
    let (status, answer) = request(d.port, "POST", "/v1/chat/completions", Some(&body));
    assert_eq!(status, 200, "{answer}");
    let mut now = d.holdings();
    let back = wait_until(Duration::from_secs(10), || {
        now = d.holdings();
        now == *baseline
    });
    assert!(
        back,
        "the daemon holds {now:?}, before the faults {baseline:?}\n{}",
        d.log_tail(30)
    );
}

#[test]
fn streams_outlive_two_worker_kills_with_their_undisturbed_text() {
    let mut rng = StdRng::seed_from_u64(seed());
    let shm_before = dev_shm();
    let d = Daemon::start_with(None, "SmolLM2-135M-Instruct");
    let topics = ["the sea", "a lighthouse", "bread", "winter"];
    let bodies: Vec<Value> = topics
        .iter()
        .enumerate()
        .map(|(i, topic)| {
            let mut body = json!({
                "model": d.model,
                "messages": [{"role": "user", "content": format!("Write about {topic}.")}],
                "max_tokens": 64,
                "ignore_eos": true,
                "stream": true,
            });
            // Two greedy, two sampled with a seed.
            if i % 2 == 0 {
                body["temperature"] = json!(0);
            } else {
                body["temperature"] = json!(0.8);
                body["seed"] = json!(100 + i);
            }
            body
        })
        .collect();
    let undisturbed: Vec<String> = texts(d.port, &bodies)
        .into_iter()
        .map(|t| t.unwrap_or_else(|e| panic!("undisturbed: {e}")))
        .collect();
    let baseline = settled(&d);
    assert_eq!(baseline.children, 1, "{baseline:?}");

    let streams: Vec<Stream> = bodies.iter().map(|b| stream(d.port, b.clone())).collect();
    let mut pids = Vec::new();
    for kill in 0..2 {
        // A random moment mid-stream: every stream a few events further
        // than now (after the first kill: resubmitted and producing again).
        let at_least: Vec<usize> = streams
            .iter()
            .map(|s| s.events.load(Ordering::SeqCst) + rng.random_range(2..12))
            .collect();
        assert!(wait_for_events(&streams, &at_least), "the streams stalled");
        let mut pid = None;
        assert!(
            wait_until(HANG, || {
                pid = d.ready_pid().filter(|p| !pids.contains(p));
                pid.is_some()
            }),
            "no fresh worker before kill {kill}\n{}",
            d.log_tail(30)
        );
        let pid = pid.unwrap();
        let moving = streams.iter().filter(|s| !s.handle.is_finished()).count();
        eprintln!("kill {kill}: worker {pid}, {moving} streams in flight");
        inject(pid, Signal::SIGKILL);
        pids.push(pid);
    }
    for (i, s) in streams.into_iter().enumerate() {
        let got = s.handle.join().unwrap();
        match got {
            Ok(text) => assert_eq!(text, undisturbed[i], "request {i}: {}", d.log_tail(30)),
            Err(e) => panic!("request {i} did not complete: {e}\n{}", d.log_tail(40)),
        }
    }
    assert_recovered(&d, &baseline);
    let restarts = d.worker()["restarts"].as_u64().unwrap();
    assert!(restarts >= 2, "restarts {restarts}");
    drop(d);
    let leaked: Vec<_> = dev_shm().difference(&shm_before).cloned().collect();
    assert!(leaked.is_empty(), "left in /dev/shm: {leaked:?}");
}

#[test]
fn a_request_that_crashes_its_worker_ends_alone_with_the_crash() {
    let d = Daemon::start();
    let bodies: Vec<Value> = (0..3)
        .map(|i| {
            json!({
                "model": "tiny",
                "messages": [{"role": "user", "content": format!("Story {i}.")}],
                "max_tokens": 600,
                "ignore_eos": true,
                "seed": 40 + i,
                "stream": true,
            })
        })
        .collect();
    let undisturbed: Vec<String> = texts(d.port, &bodies)
        .into_iter()
        .map(|t| t.unwrap_or_else(|e| panic!("undisturbed: {e}")))
        .collect();
    let baseline = settled(&d);

    let streams: Vec<Stream> = bodies.iter().map(|b| stream(d.port, b.clone())).collect();
    assert!(wait_for_events(&streams, &[3, 3, 3]));
    let mut prompt = vec![9u32, 8, 7];
    prompt.extend(FAULT_TRIGGER);
    let poison = json!({"model": "tiny", "prompt": prompt, "max_tokens": 5});
    let (status, answer) = request(d.port, "POST", "/v1/completions", Some(&poison));
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "worker_crashed", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("SIGABRT"), "names the signal: {message}");
    assert!(
        message.contains("fault trigger"),
        "names the worker's last words: {message}"
    );
    assert!(message.contains("crashes in a row"), "{message}");
    for (i, s) in streams.into_iter().enumerate() {
        let got = s.handle.join().unwrap();
        assert_eq!(
            got.as_deref(),
            Ok(undisturbed[i].as_str()),
            "request {i}\n{}",
            d.log_tail(30)
        );
    }
    assert_recovered(&d, &baseline);
    assert_eq!(d.worker()["restarts"], 2, "two crashes, no more");
    assert_eq!(d.worker()["state"], "ready");
}

#[test]
fn a_stream_past_the_redecode_limit_resumes_by_prefill() {
    // Past 256 delivered tokens the new worker prefills the earlier output
    // and its sampler starts at that token index. Prefill equals step-by-
    // step decoding only to rounding, so the text after the kill may
    // differ; the stream must go on without an error to its full length.
    let mut rng = StdRng::seed_from_u64(seed());
    let d = Daemon::start();
    let bodies: Vec<Value> = [json!(0), json!(0.7)]
        .into_iter()
        .enumerate()
        .map(|(i, temperature)| {
            json!({
                "model": "tiny",
                "messages": [{"role": "user", "content": format!("Long story {i}.")}],
                "max_tokens": 1500,
                "ignore_eos": true,
                "temperature": temperature,
                "seed": 7 + i,
                "stream": true,
            })
        })
        .collect();
    // The worker up before the baseline.
    let warm = json!({"model": "tiny", "prompt": "Hi", "max_tokens": 1});
    assert_eq!(
        request(d.port, "POST", "/v1/completions", Some(&warm)).0,
        200
    );
    let baseline = settled(&d);
    let streams: Vec<Stream> = bodies.iter().map(|b| stream(d.port, b.clone())).collect();
    let past = 300 + rng.random_range(0..100);
    assert!(
        wait_for_events(&streams, &[past, past]),
        "the streams stalled"
    );
    assert!(
        streams.iter().all(|s| !s.handle.is_finished()),
        "a stream ended before the kill"
    );
    let pid = d.ready_pid().unwrap();
    inject(pid, Signal::SIGKILL);
    for (i, s) in streams.into_iter().enumerate() {
        let got = s.handle.join().unwrap();
        if let Err(e) = got {
            panic!("request {i} did not complete: {e}\n{}", d.log_tail(30));
        }
    }
    let log = d.log_tail(200);
    let resumed: Vec<u32> = log
        .lines()
        .filter(|l| l.contains("resubmitting a request"))
        .filter_map(|l| l.split("delivered=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(resumed.len(), 2, "{log}");
    assert!(resumed.iter().all(|&n| n > 256), "{resumed:?}\n{log}");
    assert_recovered(&d, &baseline);
}
