//! What a new user meets first, against a real `mlxd serve` with real
//! workers: requests that name no model get the default one; the admin
//! status shows resolved paths; several small models stay loaded at once
//! under the memory budget a 24 GiB machine gets by default, while a model
//! that does not fit is refused; sampling a request leaves out follows the
//! model's `generation_config.json`, else is greedy; a client that leaves a
//! non-streamed request frees its sequence; CORS answers a browser's
//! preflight for the configured origins only.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;
mod support;

use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

/// The memory budget a 24 GiB machine gets by default (0.65 of its RAM).
const BUDGET_24_GIB: &str = "16750372454";

fn chat(model: Option<&str>) -> Vec<u8> {
    let mut body = json!({
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 2,
        "temperature": 0,
    });
    if let Some(model) = model {
        body["model"] = json!(model);
    }
    body.to_string().into_bytes()
}

fn status(d: &Daemon) -> Value {
    let reply = get(d.admin_port, "/admin/status", &[]);
    assert_eq!(reply.status, 200);
    reply.json()
}

fn worker<'a>(status: &'a Value, model: &str) -> Option<&'a Value> {
    status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["model"] == model)
}

#[test]
fn requests_without_a_model_get_the_default_one() {
    // One model served: it is the default.
    let d = Daemon::start(&[], &[], &[]);
    let reply = post_bytes(d.port, "/v1/chat/completions", &[], &chat(None));
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json()["model"], "tiny");
    drop(d);

    // Two models and `--default-model`: requests without one get it, for
    // chat and completions alike; naming a model still picks it.
    let tiny = common::tiny_model().display().to_string();
    let other = format!("other={tiny}");
    let d = Daemon::start(&["--model", &other, "--default-model", "other"], &[], &[]);
    let reply = post_bytes(d.port, "/v1/chat/completions", &[], &chat(None));
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json()["model"], "other");
    let completion = br#"{"prompt": "Hello", "max_tokens": 2, "temperature": 0}"#;
    let reply = post_bytes(d.port, "/v1/completions", &[], completion);
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json()["model"], "other");
    let reply = post_bytes(d.port, "/v1/chat/completions", &[], &chat(Some("tiny")));
    assert_eq!(reply.json()["model"], "tiny");
    // An empty name is still an error, not a request for the default.
    let reply = post_bytes(d.port, "/v1/chat/completions", &[], &chat(Some("")));
    assert_eq!(reply.openai_error(400)["param"], "model");
    drop(d);

    // Two models and no default: the request must name one.
    let d = Daemon::start(&["--model", &other], &[], &[]);
    let reply = post_bytes(d.port, "/v1/chat/completions", &[], &chat(None));
    let error = reply.openai_error(400);
    assert_eq!(error["param"], "model");
}

#[test]
fn the_admin_status_shows_resolved_paths() {
    let tiny = common::tiny_model();
    let parent = tiny.parent().unwrap();
    // `<dir>/./tiny/../tiny`, as a relative build path would give.
    let winding = parent.join(".").join("tiny").join("..").join("tiny");
    let arg = format!("winding={}", winding.display());
    let d = Daemon::start(&["--model", &arg], &[], &[]);
    let reply = post_bytes(d.port, "/v1/chat/completions", &[], &chat(Some("winding")));
    assert_eq!(reply.status, 200);
    let status = status(&d);
    let canonical = std::fs::canonicalize(tiny).unwrap();
    assert_eq!(
        worker(&status, "winding").unwrap()["path"],
        canonical.display().to_string()
    );
    for model in status["config"]["models"].as_array().unwrap() {
        let path = model["path"].as_str().unwrap();
        assert!(!path.contains("/./") && !path.contains("/../"), "{path}");
    }
}

#[test]
fn four_small_models_stay_loaded_under_a_24_gib_machines_budget() {
    let tiny = common::tiny_model().display().to_string();
    let models: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|name| format!("{name}={tiny}"))
        .collect();
    let mut args = vec!["--memory-budget", BUDGET_24_GIB];
    for m in &models {
        args.extend(["--model", m.as_str()]);
    }
    let d = Daemon::start(&args, &[], &[]);
    for model in ["tiny", "a", "b", "c"] {
        let reply = post_bytes(d.port, "/v1/chat/completions", &[], &chat(Some(model)));
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
    }
    let status = status(&d);
    let ready: Vec<&Value> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["state"] == "ready")
        .collect();
    assert_eq!(ready.len(), 4, "{status:#}");
    assert_eq!(d.worker_pids().len(), 4);
    // Each counts what its own model needs, far under the quarter of the
    // budget every model used to count.
    let budget: u64 = BUDGET_24_GIB.parse().unwrap();
    for w in ready {
        let estimate = w["estimate_bytes"].as_u64().unwrap();
        assert!(estimate < budget / 16, "{w:#}");
    }
}

#[test]
fn a_model_that_does_not_fit_the_budget_is_refused() {
    let d = Daemon::start(&["--memory-budget", "1MiB"], &[], &[]);
    let reply = post_bytes(d.port, "/v1/chat/completions", &[], &chat(Some("tiny")));
    let error = reply.openai_error(503);
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("not enough memory"), "{message}");
    assert!(d.worker_pids().is_empty());
}

#[test]
fn a_client_that_leaves_a_non_streamed_request_frees_its_sequence() {
    let d = Daemon::start(&[], &[], &[]);
    let body = json!({
        "model": "tiny",
        "messages": [{"role": "user", "content": "Tell a long story."}],
        "max_tokens": 100_000,
        "ignore_eos": true,
    });
    let stream = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    common::write_request(&stream, d.port, "POST", "/v1/chat/completions", Some(&body)).unwrap();
    let in_flight =
        |d: &Daemon| worker(&status(d), "tiny").map_or(0, |w| w["in_flight"].as_u64().unwrap());
    assert!(
        wait_until(TIMEOUT, || in_flight(&d) == 1),
        "the request never started"
    );
    // Let it decode a while, then go away without reading anything.
    std::thread::sleep(Duration::from_millis(300));
    stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop(stream);
    assert!(
        wait_until(TIMEOUT, || in_flight(&d) == 0),
        "the abandoned request is still in flight"
    );
    let metrics = get(d.port, "/metrics", &[]);
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    let cancelled = text.lines().find_map(|l| {
        l.strip_prefix("mlxd_cancelled_requests ")?
            .trim()
            .parse::<u64>()
            .ok()
    });
    assert_eq!(cancelled, Some(1), "{text}");
    // The worker is free for the next request at once.
    let reply = post_bytes(d.port, "/v1/chat/completions", &[], &chat(Some("tiny")));
    assert_eq!(reply.status, 200);
}

#[test]
fn cors_answers_the_configured_origins_only() {
    let allowed = "https://app.example";
    let d = Daemon::start(&["--cors-origin", allowed], &[], &[]);
    let preflight = |origin: &str| {
        let request = format!(
            "OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
             Origin: {origin}\r\nAccess-Control-Request-Method: POST\r\n\
             Access-Control-Request-Headers: authorization, content-type\r\n\r\n"
        );
        raw(d.port, request.as_bytes()).unwrap()
    };
    let ok = preflight(allowed);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("access-control-allow-origin"), Some(allowed));
    let methods = ok.header("access-control-allow-methods").unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let headers = ok
        .header("access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        headers.contains("authorization") && headers.contains("content-type"),
        "{headers}"
    );
    let other = preflight("https://elsewhere.example");
    assert_eq!(other.header("access-control-allow-origin"), None);
    // A request itself carries the header back for the allowed origin.
    let reply = get(d.port, "/v1/models", &[("Origin", allowed)]);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("access-control-allow-origin"), Some(allowed));
    let reply = get(
        d.port,
        "/v1/models",
        &[("Origin", "https://elsewhere.example")],
    );
    assert_eq!(reply.header("access-control-allow-origin"), None);
    // Without configured origins, no CORS headers at all.
    drop(d);
    let d = Daemon::start(&[], &[], &[]);
    let reply = get(d.port, "/v1/models", &[("Origin", allowed)]);
    assert_eq!(reply.header("access-control-allow-origin"), None);
}

#[test]
fn sampling_left_out_follows_the_models_generation_config_else_greedy() {
    // The tiny model as shipped (no generation_config.json), and a copy
    // whose authors recommend sampling at temperature 1.
    let dir = tempfile::tempdir().unwrap();
    let sampled = dir.path().join("sampled");
    std::fs::create_dir(&sampled).unwrap();
    for entry in std::fs::read_dir(common::tiny_model()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, sampled.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        sampled.join("generation_config.json"),
        r#"{"do_sample": true, "temperature": 1.0}"#,
    )
    .unwrap();
    let arg = format!("sampled={}", sampled.display());
    let d = Daemon::start(&["--model", &arg], &[], &[]);
    let text = |model: &str, seed: u64| {
        let body = json!({
            "model": model,
            "messages": [{"role": "user", "content": "Hello"}],
            "max_tokens": 12,
            "ignore_eos": true,
            "seed": seed,
        });
        let reply = post_bytes(
            d.port,
            "/v1/chat/completions",
            &[],
            body.to_string().as_bytes(),
        );
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        reply.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // No recommended values: greedy, whatever the seed.
    let greedy: Vec<String> = (1..=3).map(|seed| text("tiny", seed)).collect();
    assert!(greedy.iter().all(|t| *t == greedy[0]), "{greedy:?}");
    // The copy samples: other seeds, other texts; the same seed, the same.
    let sampled: Vec<String> = (1..=3).map(|seed| text("sampled", seed)).collect();
    assert!(sampled.iter().any(|t| *t != sampled[0]), "{sampled:?}");
    assert_eq!(text("sampled", 2), sampled[1]);
}
