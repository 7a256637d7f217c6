//! The suite's Markdown report: per model, end-to-end and streaming tables
//! in the reference's shape (direct / server / overhead %, peers beside
//! them), the full spread per system, concurrency scaling, the daemon's
//! stage breakdown, and the targets checked.

use std::fmt::Write;

use super::stats::Summary;
use super::suite::{ModelReport, SuiteReport, SystemSummary, WorkloadReport};

/// The project's targets for the daemon against the bare engine.
const TARGET_ADDED_TTFT_P50_MS: f64 = 1.0;
const TARGET_ADDED_TTFT_P99_MS: f64 = 3.0;

/// The tok/s overhead target at `tokens` generated, where one is set.
fn overhead_target(tokens: usize) -> Option<f64> {
    match tokens {
        50 => Some(2.0),
        200 => Some(1.0),
        _ => None,
    }
}

/// Stage names of `/admin/timings` and what they cover.
const STAGES: [(&str, &str); 9] = [
    ("http", "HTTP body read, JSON parse, validation"),
    ("tokenize", "model lookup, chat template, tokenize"),
    ("queue", "queue admission and worker lease (+ worker queue)"),
    ("ring", "ring transfer, both ways"),
    ("first_token", "worker prefill and first step (engine)"),
    ("write", "detokenize and write the first SSE chunk"),
    ("submit_to_first_token", "ring + worker queue + engine"),
    ("ttft", "handler start to first chunk written"),
    ("added", "ttft less the engine's first_token"),
];

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |x| format!("{x:.digits$}"))
}

fn spread(s: &Summary, digits: usize) -> String {
    format!(
        "{:.d$} ± {:.d$} ({:.d$})",
        s.mean,
        s.stddev,
        s.median,
        d = digits
    )
}

/// A round-by-round ratio: its median ± the median's standard error.
fn with_error(ratio: &Summary) -> String {
    format!("{:.3} ± {:.3}", ratio.median, ratio.median_error())
}

fn find<'a>(w: &'a WorkloadReport, system: &str) -> Option<&'a SystemSummary> {
    w.summaries.iter().find(|s| s.system == system)
}

/// Systems other than direct and mlxd, in order of appearance.
fn peers(m: &ModelReport) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in &m.workloads {
        for s in &w.summaries {
            let name = s.system.as_str();
            if !matches!(name, "direct" | "mlxd" | "mlxd stream") && !out.iter().any(|o| o == name)
            {
                out.push(name.to_owned());
            }
        }
    }
    out
}

/// The whole report.
pub fn markdown(r: &SuiteReport, plots: &[String]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# mlxd benchmark suite\n");
    let _ = writeln!(
        md,
        "- machine: {} ({} backend, MLX {}), {} CPUs",
        r.machine.device, r.machine.backend, r.machine.mlx_version, r.machine.cpus
    );
    let _ = writeln!(md, "- mlxd {}; command: `{}`", r.mlxd_version, r.command);
    let _ = writeln!(
        md,
        "- {} measured runs per system and length, interleaved (direct, mlxd streamed, mlxd \
         whole, direct scheduler, each peer, each round starting one system later), after one warm-up request \
         per system (not counted); {:.0} s in all{}",
        r.runs,
        r.duration_s,
        if r.smoke {
            "; **smoke run: the figures mean nothing**"
        } else {
            ""
        }
    );
    let _ = writeln!(
        md,
        "- Every request is greedy with one fixed prompt per length and generates exactly the \
         length's tokens: mlxd gets `ignore_eos: true` with `max_tokens`; peers get \
         `max_tokens` and a -100 `logit_bias` on the end-of-sequence ids (llama-server also \
         `ignore_eos`); a peer that still stopped early is marked *. The servers' prompt caches \
         are {} (`--prompt-cache` leaves them on).",
        if r.prompt_cache {
            "on"
        } else {
            "off, so every system prefills the whole prompt as the bare engine does"
        }
    );
    let _ = writeln!(
        md,
        "- direct = the engine in the bench's own process (no HTTP, no IPC); direct scheduler = \
         the same through the continuous-batching scheduler with one sequence (the worker's \
         engine path, in the bench's process); end-to-end tok/s = \
         generated tokens / request time (prefill included); decode tok/s = tokens after the \
         first / time from the first to the last content chunk; TTFT = request sent to first \
         content chunk. Overhead % = tok/s lost against direct (medians); added TTFT = mlxd's \
         median TTFT less direct's.\n"
    );
    for m in &r.models {
        model_section(&mut md, m);
    }
    if !plots.is_empty() {
        let _ = writeln!(md, "## Plots\n");
        for p in plots {
            let _ = writeln!(md, "![{p}]({p})\n");
        }
    }
    md
}

/// The in-process engines' host time per decode step, to set beside the
/// worker's own (its "busy stretch" debug lines).
fn host_section(md: &mut String, m: &ModelReport) {
    let _ = writeln!(
        md,
        "\n### Host time per decode step, in-process (median µs)\n\n\
         The worker logs the same at debug level (`busy stretch`; \
         `--mlxd-log warn,worker=debug,mlxd::worker=debug`).\n"
    );
    let _ = writeln!(
        md,
        "| tokens | system | build | dispatch | wait | step |\n|---:|---|---:|---:|---:|---:|"
    );
    for w in &m.workloads {
        for h in &w.host_steps {
            let (b, d, wait) = (h.build_us.median, h.dispatch_us.median, h.wait_us.median);
            let _ = writeln!(
                md,
                "| {} | {} | {b:.0} | {d:.0} | {wait:.0} | {:.0} |",
                w.tokens,
                h.system,
                b + d + wait
            );
        }
    }
}

fn model_section(md: &mut String, m: &ModelReport) {
    let _ = writeln!(
        md,
        "## {} ({:.1} MB of weights)\n",
        m.name,
        m.weight_bytes as f64 / 1e6
    );
    let systems: Vec<String> = m.systems.iter().map(|(n, s)| format!("{n}: {s}")).collect();
    let _ = writeln!(md, "Systems: {}.\n", systems.join("; "));
    let peers = peers(m);
    let star = |s: &SystemSummary| if s.exact_tokens { "" } else { "*" };

    let _ = writeln!(md, "### End to end (tok/s, median)\n");
    let mut head =
        "| tokens | workload | prompt | direct | mlxd | overhead | mlxd / direct, round by round |"
            .to_owned();
    let mut rule = "|---:|---|---:|---:|---:|---:|---:|".to_owned();
    for p in &peers {
        let _ = write!(head, " {p} | vs direct |");
        rule.push_str("---:|---:|");
    }
    let _ = writeln!(md, "{head}\n{rule}");
    for w in &m.workloads {
        let direct = find(w, "direct");
        let mlxd = find(w, "mlxd");
        let _ = write!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            w.tokens,
            w.workload.name,
            w.prompt_tokens,
            opt(direct.map(|s| s.e2e_tps.median), 2),
            opt(mlxd.map(|s| s.e2e_tps.median), 2),
            opt(mlxd.and_then(|s| s.e2e_overhead_pct), 2) + " %",
            mlxd.and_then(|s| s.e2e_ratio)
                .map_or_else(|| "–".to_owned(), |r| with_error(&r))
        );
        for p in &peers {
            let s = find(w, p);
            let _ = write!(
                md,
                " {}{} | {} |",
                opt(s.map(|s| s.e2e_tps.median), 2),
                s.map_or("", star),
                opt(s.and_then(|s| s.e2e_overhead_pct), 2) + " %"
            );
        }
        md.push('\n');
    }

    let _ = writeln!(md, "\n### Streamed (median)\n");
    let mut head = "| tokens | direct decode tok/s | mlxd decode tok/s | overhead | direct TTFT ms | mlxd TTFT ms | added ms |".to_owned();
    let mut rule = "|---:|---:|---:|---:|---:|---:|---:|".to_owned();
    for p in &peers {
        let _ = write!(head, " {p} decode | {p} TTFT ms |");
        rule.push_str("---:|---:|");
    }
    let _ = writeln!(md, "{head}\n{rule}");
    for w in &m.workloads {
        let direct = find(w, "direct");
        let mlxd = find(w, "mlxd stream");
        let median = |s: Option<&SystemSummary>, f: fn(&SystemSummary) -> Option<Summary>| {
            s.and_then(f).map(|x| x.median)
        };
        let _ = write!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            w.tokens,
            opt(median(direct, |s| s.decode_tps), 2),
            opt(median(mlxd, |s| s.decode_tps), 2),
            opt(mlxd.and_then(|s| s.decode_overhead_pct), 2) + " %",
            opt(median(direct, |s| s.ttft_ms), 1),
            opt(median(mlxd, |s| s.ttft_ms), 1),
            opt(mlxd.and_then(|s| s.added_ttft_ms), 2),
        );
        for p in &peers {
            let s = find(w, p);
            let _ = write!(
                md,
                " {} | {} |",
                opt(median(s, |s| s.decode_tps), 2),
                opt(median(s, |s| s.ttft_ms), 1)
            );
        }
        md.push('\n');
    }

    let _ = writeln!(md, "\n### Every system: mean ± stddev (median)\n");
    let _ = writeln!(
        md,
        "| tokens | system | end-to-end tok/s | decode tok/s | TTFT ms | exact tokens |\n|---:|---|---:|---:|---:|---|"
    );
    for w in &m.workloads {
        for s in &w.summaries {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                w.tokens,
                s.system,
                spread(&s.e2e_tps, 2),
                s.decode_tps.map_or("–".into(), |x| spread(&x, 2)),
                s.ttft_ms.map_or("–".into(), |x| spread(&x, 1)),
                if s.exact_tokens { "yes" } else { "no" }
            );
        }
    }

    host_section(md, m);

    if !m.concurrency.is_empty() {
        let _ = writeln!(
            md,
            "\n### Concurrent streams\n\nEach system first runs one unmeasured round at the widest level.\n"
        );
        let _ = writeln!(
            md,
            "| system | streams | tokens each | aggregate tok/s | per-stream decode tok/s (median) | TTFT p50 ms | TTFT p99 ms | wall s |\n|---|---:|---:|---:|---:|---:|---:|---:|"
        );
        for c in &m.concurrency {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.2} | {} | {} | {} | {:.1} |",
                c.system,
                c.level,
                c.tokens,
                c.aggregate_tps,
                opt(c.per_stream_decode_tps.map(|s| s.median), 2),
                opt(c.ttft_p50_ms, 1),
                opt(c.ttft_p99_ms, 1),
                c.wall_s
            );
        }
    }

    if let Some(b) = &m.breakdown {
        let _ = writeln!(
            md,
            "\n### Where mlxd's time goes (daemon timestamps, streamed requests)\n"
        );
        if !b.worker_reported {
            let _ = writeln!(
                md,
                "The worker did not report its stamps (received, admitted, first token are 0), \
                 so the ring and engine stages are missing and queue is the front-end's part.\n"
            );
        }
        let _ = writeln!(
            md,
            "| stage | covers | n | p50 µs | p99 µs |\n|---|---|---:|---:|---:|"
        );
        for (stage, what) in STAGES {
            let s = &b.stream[stage];
            let _ = writeln!(
                md,
                "| {stage} | {what} | {} | {} | {} |",
                s["count"].as_u64().unwrap_or(0),
                opt(s["p50_us"].as_f64(), 1),
                opt(s["p99_us"].as_f64(), 1)
            );
        }
    }
    targets(md, m);
    md.push('\n');
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**short**" }
}

/// The targets, checked against this model's figures.
fn targets(md: &mut String, m: &ModelReport) {
    let _ = writeln!(md, "\n### Targets\n");
    for w in &m.workloads {
        let Some(target) = overhead_target(w.tokens) else {
            continue;
        };
        if let Some(pct) = find(w, "mlxd").and_then(|s| s.e2e_overhead_pct) {
            let _ = writeln!(
                md,
                "- tok/s overhead at {} tokens (end to end): {pct:.2} % (target ≤ {target} %): {}",
                w.tokens,
                verdict(pct <= target)
            );
        }
        if let Some(ratio) = find(w, "mlxd").and_then(|s| s.e2e_ratio) {
            // Within the error of the target counts as neither met nor short.
            let floor = 1.0 - target / 100.0;
            let verdict = if ratio.median >= floor {
                "met"
            } else if ratio.median + ratio.median_error() >= floor {
                "within the error"
            } else {
                "**short**"
            };
            let _ = writeln!(
                md,
                "- tok/s at {} tokens against direct in the same round (end to end): {} over {} rounds (target ≥ {floor:.2}): {verdict}",
                w.tokens,
                with_error(&ratio),
                ratio.n
            );
        }
        if let Some(pct) = find(w, "mlxd stream").and_then(|s| s.decode_overhead_pct) {
            let _ = writeln!(
                md,
                "- decode tok/s overhead at {} tokens (streamed): {pct:.2} % (target ≤ {target} %): {}",
                w.tokens,
                verdict(pct <= target)
            );
        }
    }
    let added = m.breakdown.as_ref().map(|b| &b.stream["added"]);
    match added.filter(|a| a["count"].as_u64() > Some(0)) {
        Some(a) => {
            let p50 = a["p50_us"].as_f64().unwrap_or(0.0) / 1e3;
            let p99 = a["p99_us"].as_f64().unwrap_or(0.0) / 1e3;
            let _ = writeln!(
                md,
                "- added TTFT, daemon timestamps: p50 {p50:.3} ms (target ≤ {TARGET_ADDED_TTFT_P50_MS} ms): {}; p99 {p99:.3} ms (target ≤ {TARGET_ADDED_TTFT_P99_MS} ms): {}",
                verdict(p50 <= TARGET_ADDED_TTFT_P50_MS),
                verdict(p99 <= TARGET_ADDED_TTFT_P99_MS)
            );
        }
        None => {
            let _ = writeln!(
                md,
                "- added TTFT, daemon timestamps: not measurable (the worker reported no stamps)"
            );
        }
    }
    for w in &m.workloads {
        if let Some(ms) = find(w, "mlxd stream").and_then(|s| s.added_ttft_ms) {
            let _ = writeln!(
                md,
                "- added TTFT seen by the client at {} tokens (median against direct): {ms:.2} ms",
                w.tokens
            );
        }
    }
}
