//! `mlxd bench --suite --smoke` with the tiny model and the built-in
//! default model: the suite runs the engine in-process and `mlxd serve` over
//! HTTP, and writes a Markdown report, JSON with every sample and the
//! daemon's stage timings, and SVG plots. Only their shape is checked, never
//! a speed.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::Value;

#[test]
fn the_smoke_suite_writes_a_report_json_and_plots() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("suite");
    let run = mlxd()
        .args(["bench", "--suite", "--smoke", "-m"])
        .arg(tiny_model())
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    assert_success(&run);

    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    for heading in [
        "# mlxd benchmark suite",
        "### End to end",
        "### Streamed",
        "### Concurrent streams",
        "### Where mlxd's time goes",
        "### Targets",
        "### Host time per decode step, in-process",
    ] {
        assert!(report.contains(heading), "{heading:?} missing:\n{report}");
    }
    assert!(report.contains("| 8 | short question |"), "{report}");

    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    assert_eq!(json["smoke"], true);
    let model = &json["models"][0];
    let workload = &model["workloads"][0];
    assert_eq!(workload["tokens"], 8);
    let systems: Vec<&str> = workload["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[0].as_str().unwrap())
        .collect();
    assert_eq!(
        systems,
        ["direct", "mlxd stream", "mlxd", "direct scheduler"]
    );
    for entry in workload["samples"].as_array().unwrap() {
        let samples = entry[1].as_array().unwrap();
        assert_eq!(samples.len(), 1, "{entry}");
        // Exactly the tokens asked for, end-of-sequence or not.
        assert_eq!(samples[0]["completion_tokens"], 8, "{entry}");
    }
    // The in-process engines' host time per decode step, one run each.
    let host = workload["host_steps"].as_array().unwrap();
    let host_systems: Vec<&str> = host.iter().map(|h| h["system"].as_str().unwrap()).collect();
    assert_eq!(host_systems, ["direct", "direct scheduler"]);
    for h in host {
        assert_eq!(h["dispatch_us"]["n"], 1, "{h}");
        assert!(h["dispatch_us"]["median"].as_f64().unwrap() > 0.0, "{h}");
    }
    let stream = &workload["samples"][1][1][0];
    assert!(stream["ttft_ms"].as_f64().unwrap() > 0.0, "{stream}");
    let summaries = workload["summaries"].as_array().unwrap();
    assert!(
        summaries[1]["e2e_overhead_pct"].is_number(),
        "{summaries:?}"
    );
    // Each round's mlxd against the same round's direct; none for direct.
    assert!(summaries[0]["e2e_ratio"].is_null(), "{summaries:?}");
    let ratio = &summaries[2]["e2e_ratio"];
    assert_eq!(ratio["n"], 1, "{summaries:?}");
    let expected = samples_of(workload, "mlxd")["e2e_tps"].as_f64().unwrap()
        / samples_of(workload, "direct")["e2e_tps"].as_f64().unwrap();
    assert!(
        (ratio["median"].as_f64().unwrap() - expected).abs() < 1e-9,
        "{ratio} against {expected}"
    );
    assert!(report.contains("mlxd / direct, round by round"), "{report}");

    let levels: Vec<u64> = model["concurrency"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["level"].as_u64().unwrap())
        .collect();
    assert_eq!(levels, [1, 2]);
    assert_eq!(
        model["concurrency"][1]["samples"].as_array().unwrap().len(),
        2
    );

    // The daemon's timeline of the measured streamed request.
    let breakdown = &model["breakdown"];
    assert_eq!(breakdown["stream"]["http"]["count"], 1, "{breakdown}");
    assert_eq!(breakdown["stream"]["ttft"]["count"], 1, "{breakdown}");
    let timeline = &breakdown["stream_timelines"][0];
    assert_eq!(timeline["request_id"], "s-0-8-0");
    assert_eq!(timeline["completion_tokens"], 8);
    for stamp in ["arrived_ns", "parsed_ns", "tokenized_ns", "submitted_ns"] {
        assert!(timeline[stamp].as_u64().unwrap() > 0, "{stamp}: {timeline}");
    }
    // Prompt-cache hits reach the client's usage exactly when the worker
    // reports them (the suite turns the cache off, so none here).
    let cached = timeline["cached_tokens"].as_u64().unwrap();
    let reported = stream["cached_tokens"].as_u64();
    assert_eq!(reported, (cached > 0).then_some(cached), "{stream}");

    for plot in [
        "tps_vs_model_size.svg",
        "overhead_vs_tokens.svg",
        "ttft_distribution.svg",
        "concurrency_scaling.svg",
    ] {
        let svg = std::fs::read_to_string(dir.join(plot)).unwrap();
        assert!(svg.starts_with("<svg"), "{plot}");
        assert!(svg.trim_end().ends_with("</svg>"), "{plot}");
        assert_eq!(
            svg.matches("<text").count(),
            svg.matches("</text>").count(),
            "{plot}"
        );
        assert!(report.contains(plot), "{plot} not in the report");
    }
}

/// The built-in default model (no `-m`) through the same smoke suite: every
/// system generates exactly the tokens asked for and the report names it.
#[test]
fn the_smoke_suite_runs_the_default_model() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("suite");
    let run = mlxd()
        .args(["bench", "--suite", "--smoke", "--no-peers", "--out"])
        .arg(&dir)
        .env_remove("MLXD_CONFIG")
        .output()
        .unwrap();
    assert_success(&run);
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("SmolLM2-135M-Instruct"), "{report}");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    let workload = &json["models"][0]["workloads"][0];
    for entry in workload["samples"].as_array().unwrap() {
        for sample in entry[1].as_array().unwrap() {
            assert_eq!(sample["completion_tokens"], 8, "{entry}");
        }
    }
}

/// The first sample of `system` in a workload of results.json.
fn samples_of<'a>(workload: &'a Value, system: &str) -> &'a Value {
    let entry = workload["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s[0] == system)
        .unwrap();
    &entry[1][0]
}
