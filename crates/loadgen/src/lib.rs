//! A load generator for a running `mlxd serve`: `requests` requests over
//! `concurrency` connections (one task each, keep-alive), a seeded mix of
//! streamed and whole chat and text completions with short and longer
//! prompts and 1 to `max_tokens` tokens. Every answer is checked: a whole
//! one has a finish reason, a stream ends with `[DONE]` after a finish
//! reason and carries no error event. 429s (the bounded queue refusing
//! work, by design) are counted apart; anything else that is not a checked
//! answer is an unexpected error.
//!
//! With the admin API's address it also samples the resident memory
//! (`VmRSS`) of the daemon and its workers (pids from `/admin/status`)
//! after a warm-up, right after the run, and after a settle period.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};

/// What to send, and where.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The OpenAI API, e.g. `http://127.0.0.1:11440`.
    pub url: String,
    /// The admin API, for memory figures (none: no memory figures).
    pub admin_url: Option<String>,
    pub model: String,
    pub requests: usize,
    pub concurrency: usize,
    /// Requests sent (and not counted) before the run, to warm up.
    pub warmup: usize,
    /// Largest `max_tokens` of a request (each draws 1..=this).
    pub max_tokens: u32,
    /// Share of streamed requests.
    pub stream_share: f64,
    pub seed: u64,
    /// Longest one request may take.
    pub request_timeout: Duration,
    /// Wait after the run before the last memory sample.
    pub settle: Duration,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            url: "http://127.0.0.1:11440".into(),
            admin_url: Some("http://127.0.0.1:11441".into()),
            model: "SmolLM2-135M-Instruct".into(),
            requests: 10_000,
            concurrency: 64,
            warmup: 64,
            max_tokens: 16,
            stream_share: 0.5,
            seed: 1,
            request_timeout: Duration::from_secs(300),
            settle: Duration::from_secs(10),
        }
    }
}

/// Why the load could not run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("a request task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Resident memory of one process, in bytes.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Rss {
    pub pid: u32,
    pub bytes: u64,
}

/// Resident memory of the daemon and its workers at one moment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MemorySample {
    pub daemon: Option<Rss>,
    pub workers: Vec<Rss>,
}

impl MemorySample {
    /// Daemon plus workers, in bytes.
    pub fn total(&self) -> u64 {
        self.daemon.as_ref().map_or(0, |d| d.bytes)
            + self.workers.iter().map(|w| w.bytes).sum::<u64>()
    }
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn of(mut samples: Vec<Duration>) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i].as_secs_f64() * 1e3
        };
        Latency {
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// The figures of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub requests: usize,
    pub concurrency: usize,
    pub seed: u64,
    pub seconds: f64,
    /// Answers by HTTP status.
    pub by_status: BTreeMap<u16, usize>,
    /// Checked answers.
    pub ok: usize,
    pub streamed: usize,
    pub completion_tokens: u64,
    /// 429s (the queue was full).
    pub rejected: usize,
    /// Everything else, by description (must be empty).
    pub errors: BTreeMap<String, usize>,
    /// Latency of checked answers, request sent to last byte.
    pub latency: Latency,
    pub memory_before: MemorySample,
    pub memory_after: MemorySample,
    pub memory_settled: MemorySample,
}

impl Report {
    /// Requests that ended neither with a checked answer nor a 429.
    pub fn unexpected_errors(&self) -> usize {
        self.errors.values().sum()
    }

    /// Relative change of the daemon's and workers' memory from before the
    /// run to after the settle period (`None` without memory figures or
    /// when the worker was replaced meanwhile).
    pub fn memory_drift(&self) -> Option<f64> {
        let pids = |m: &MemorySample| m.workers.iter().map(|w| w.pid).collect::<Vec<_>>();
        if pids(&self.memory_before) != pids(&self.memory_settled) {
            return None;
        }
        let (before, after) = (self.memory_before.total(), self.memory_settled.total());
        (before > 0).then(|| (after as f64 - before as f64) / before as f64)
    }

    /// The figures as a plain-text table.
    pub fn table(&self) -> String {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let mem = |m: &MemorySample| {
            let workers: Vec<String> = m
                .workers
                .iter()
                .map(|w| format!("{:.1}", mib(w.bytes)))
                .collect();
            format!(
                "daemon {:>7.1} MiB, workers [{}] MiB",
                m.daemon.as_ref().map_or(0.0, |d| mib(d.bytes)),
                workers.join(", ")
            )
        };
        let mut out = String::new();
        let mut row = |k: &str, v: String| out.push_str(&format!("{k:<22} {v}\n"));
        row(
            "requests",
            format!(
                "{} over {} connections in {:.1} s ({:.1} req/s), seed {}",
                self.requests,
                self.concurrency,
                self.seconds,
                self.requests as f64 / self.seconds.max(1e-9),
                self.seed
            ),
        );
        row("by status", format!("{:?}", self.by_status));
        row(
            "answers",
            format!(
                "{} checked ({} streamed), {} tokens",
                self.ok, self.streamed, self.completion_tokens
            ),
        );
        row("429 (queue full)", self.rejected.to_string());
        row(
            "unexpected errors",
            format!("{} {:?}", self.unexpected_errors(), self.errors),
        );
        row(
            "latency",
            format!(
                "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                self.latency.p50_ms, self.latency.p99_ms, self.latency.max_ms
            ),
        );
        row("memory before", mem(&self.memory_before));
        row("memory after", mem(&self.memory_after));
        row("memory settled", mem(&self.memory_settled));
        row(
            "memory drift",
            self.memory_drift()
                .map_or("n/a".into(), |d| format!("{:+.2}%", d * 100.0)),
        );
        out
    }
}

/// How one request ended.
enum Outcome {
    Ok {
        latency: Duration,
        streamed: bool,
        tokens: u64,
    },
    Status(u16, Option<String>),
    Error(String),
}

/// A request of the mix.
fn draw_request(rng: &mut StdRng, config: &LoadConfig) -> (&'static str, Value) {
    const WORDS: [&str; 12] = [
        "the", "river", "carried", "a", "lantern", "past", "old", "stone", "bridges", "into",
        "quiet", "harbours",
    ];
    let prompt = if rng.random_bool(0.6) {
        [
            "Hi",
            "What is the capital of France?",
            "Name three colours.",
        ][rng.random_range(0..3)]
        .to_owned()
    } else {
        let n = rng.random_range(50..400);
        (0..n)
            .map(|_| WORDS[rng.random_range(0..WORDS.len())])
            .collect::<Vec<_>>()
            .join(" ")
    };
    let max_tokens = rng.random_range(1..=config.max_tokens.max(1));
    let stream = rng.random_bool(config.stream_share.clamp(0.0, 1.0));
    let temperature = if rng.random_bool(0.5) { 0.0 } else { 0.8 };
    if rng.random_bool(0.7) {
        (
            "/v1/chat/completions",
            json!({
                "model": config.model,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": max_tokens,
                "temperature": temperature,
                "stream": stream,
                "stream_options": stream.then(|| json!({"include_usage": true})),
            }),
        )
    } else {
        (
            "/v1/completions",
            json!({
                "model": config.model,
                "prompt": prompt,
                "max_tokens": max_tokens,
                "temperature": temperature,
                "stream": stream,
                "stream_options": stream.then(|| json!({"include_usage": true})),
            }),
        )
    }
}

/// Checks a whole answer; the completion tokens.
fn check_whole(body: &[u8], max_tokens: u64) -> Result<u64, String> {
    let value: Value = serde_json::from_slice(body).map_err(|_| "a body that is not JSON")?;
    if !value["choices"][0]["finish_reason"].is_string() {
        return Err("an answer without a finish reason".into());
    }
    let tokens = value["usage"]["completion_tokens"]
        .as_u64()
        .ok_or("an answer without usage")?;
    if tokens > max_tokens {
        return Err("more tokens than max_tokens".into());
    }
    Ok(tokens)
}

/// Checks a whole event stream: a finish reason, no error event, the usage
/// chunk, `[DONE]` last. Returns the completion tokens.
fn check_stream(body: &[u8], max_tokens: u64) -> Result<u64, String> {
    let text = std::str::from_utf8(body).map_err(|_| "a stream that is not UTF-8")?;
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    let Some((last, rest)) = events.split_last() else {
        return Err("an empty stream".into());
    };
    if *last != "data: [DONE]" {
        return Err("a stream not ending with [DONE]".into());
    }
    let mut finished = false;
    let mut tokens = None;
    for event in rest {
        let data = event
            .strip_prefix("data: ")
            .ok_or("an event without data")?;
        let chunk: Value = serde_json::from_str(data).map_err(|_| "an event that is not JSON")?;
        if let Some(code) = chunk["error"]["code"].as_str() {
            return Err(format!("an error event ({code})"));
        }
        if chunk.get("error").is_some() {
            return Err("an error event".into());
        }
        if let Some(choices) = chunk["choices"].as_array() {
            finished |= choices.iter().any(|c| c["finish_reason"].is_string());
        }
        if let Some(n) = chunk["usage"]["completion_tokens"].as_u64() {
            tokens = Some(n);
        }
    }
    if !finished {
        return Err("a stream without a finish reason".into());
    }
    let tokens = tokens.ok_or("a stream without usage")?;
    if tokens > max_tokens {
        return Err("more tokens than max_tokens".into());
    }
    Ok(tokens)
}

async fn send_one(
    client: &reqwest::Client,
    config: &LoadConfig,
    path: &str,
    body: Value,
) -> Outcome {
    let streamed = body["stream"] == true;
    let max_tokens = body["max_tokens"].as_u64().unwrap_or(u64::MAX);
    let started = Instant::now();
    let response = match client
        .post(format!("{}{path}", config.url))
        .json(&body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return Outcome::Error(transport(&e)),
    };
    let status = response.status().as_u16();
    let mut bytes = Vec::new();
    let mut response = response;
    loop {
        match response.chunk().await {
            Ok(Some(piece)) => bytes.extend_from_slice(&piece),
            Ok(None) => break,
            Err(e) => return Outcome::Error(format!("{} (status {status})", transport(&e))),
        }
    }
    if status != 200 {
        let code = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
        return Outcome::Status(status, code);
    }
    let checked = if streamed {
        check_stream(&bytes, max_tokens)
    } else {
        check_whole(&bytes, max_tokens)
    };
    match checked {
        Ok(tokens) => Outcome::Ok {
            latency: started.elapsed(),
            streamed,
            tokens,
        },
        Err(e) => Outcome::Error(e),
    }
}

fn transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection refused or reset".into()
    } else {
        format!("transport: {e}")
    }
}

/// The pids `/admin/status` names: the daemon's and its workers'.
async fn pids(client: &reqwest::Client, admin: &str) -> Option<(u32, Vec<u32>)> {
    let status: Value = client
        .get(format!("{admin}/admin/status"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let daemon = status["daemon"]["pid"].as_u64()? as u32;
    let mut workers: Vec<u32> = status["workers"]
        .as_array()?
        .iter()
        .filter_map(|w| w["pid"].as_u64().map(|p| p as u32))
        .collect();
    workers.sort_unstable();
    Some((daemon, workers))
}

/// `VmRSS` of `pid`, in bytes (Linux's `/proc`).
pub fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

async fn sample(client: &reqwest::Client, admin: Option<&str>) -> MemorySample {
    let Some((daemon, workers)) = (match admin {
        Some(a) => pids(client, a).await,
        None => None,
    }) else {
        return MemorySample::default();
    };
    let of = |pid: u32| rss(pid).map(|bytes| Rss { pid, bytes });
    MemorySample {
        daemon: of(daemon),
        workers: workers.into_iter().filter_map(of).collect(),
    }
}

/// Sends `count` requests over `concurrency` tasks; the outcomes.
async fn drive(
    client: &reqwest::Client,
    config: &Arc<LoadConfig>,
    count: usize,
    seed: u64,
) -> Result<Vec<Outcome>, LoadError> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..config.concurrency.max(1) {
        let (client, config, next) = (client.clone(), Arc::clone(config), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            loop {
                // Relaxed: a ticket counter; nothing else is published.
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return outcomes;
                }
                // Request `i` is the same whichever task sends it.
                let mut rng =
                    StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                let (path, body) = draw_request(&mut rng, &config);
                outcomes.push(send_one(&client, &config, path, body).await);
            }
        }));
    }
    let mut all = Vec::with_capacity(count);
    for task in tasks {
        all.extend(task.await?);
    }
    Ok(all)
}

/// Runs the load and gathers the figures.
pub async fn run(config: LoadConfig) -> Result<Report, LoadError> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(config.concurrency)
        .timeout(config.request_timeout)
        .build()?;
    let config = Arc::new(config);
    let admin = config.admin_url.as_deref();
    drive(&client, &config, config.warmup, !config.seed).await?;
    let memory_before = sample(&client, admin).await;
    let started = Instant::now();
    let outcomes = drive(&client, &config, config.requests, config.seed).await?;
    let seconds = started.elapsed().as_secs_f64();
    let memory_after = sample(&client, admin).await;
    tokio::time::sleep(config.settle).await;
    let memory_settled = sample(&client, admin).await;

    let mut report = Report {
        requests: config.requests,
        concurrency: config.concurrency,
        seed: config.seed,
        seconds,
        by_status: BTreeMap::new(),
        ok: 0,
        streamed: 0,
        completion_tokens: 0,
        rejected: 0,
        errors: BTreeMap::new(),
        latency: Latency::default(),
        memory_before,
        memory_after,
        memory_settled,
    };
    let mut latencies = Vec::new();
    for outcome in outcomes {
        match outcome {
            Outcome::Ok {
                latency,
                streamed,
                tokens,
            } => {
                *report.by_status.entry(200).or_insert(0) += 1;
                report.ok += 1;
                report.streamed += usize::from(streamed);
                report.completion_tokens += tokens;
                latencies.push(latency);
            }
            Outcome::Status(429, _) => {
                *report.by_status.entry(429).or_insert(0) += 1;
                report.rejected += 1;
            }
            Outcome::Status(status, code) => {
                *report.by_status.entry(status).or_insert(0) += 1;
                let what = format!("status {status} ({})", code.as_deref().unwrap_or("no code"));
                *report.errors.entry(what).or_insert(0) += 1;
            }
            Outcome::Error(e) => {
                *report.errors.entry(e).or_insert(0) += 1;
            }
        }
    }
    report.latency = Latency::of(latencies);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let samples = (1..=100).map(Duration::from_millis).collect();
        let l = Latency::of(samples);
        assert_eq!((l.p50_ms, l.p99_ms, l.max_ms), (50.0, 99.0, 100.0));
    }

    #[test]
    fn a_stream_must_finish_and_end_with_done() {
        let start = "data: {\"choices\":[{\"delta\":{}}]}\n\n";
        let finish = "data: {\"choices\":[{\"finish_reason\":\"length\"}]}\n\n";
        let usage = "data: {\"choices\":[],\"usage\":{\"completion_tokens\":2}}\n\n";
        let done = "data: [DONE]\n\n";
        let good = format!("{start}{finish}{usage}{done}");
        assert_eq!(check_stream(good.as_bytes(), 2), Ok(2));
        assert!(check_stream(good.as_bytes(), 1).is_err());
        let cut = format!("{start}{finish}");
        assert!(check_stream(cut.as_bytes(), 2).is_err());
        let unfinished = format!("{start}{usage}{done}");
        assert!(check_stream(unfinished.as_bytes(), 2).is_err());
        let failed =
            format!("{start}data: {{\"error\":{{\"code\":\"worker_crashed\"}}}}\n\n{done}");
        assert_eq!(
            check_stream(failed.as_bytes(), 2),
            Err("an error event (worker_crashed)".into())
        );
    }

    #[test]
    fn a_whole_answer_needs_a_finish_reason_and_at_most_max_tokens() {
        let ok = br#"{"choices":[{"finish_reason":"stop"}],"usage":{"completion_tokens":3}}"#;
        assert_eq!(check_whole(ok, 4), Ok(3));
        assert!(check_whole(ok, 2).is_err());
        assert!(check_whole(br#"{"choices":[{}]}"#, 4).is_err());
    }

    #[test]
    fn drift_is_relative_to_the_memory_before() {
        let sample = |bytes| MemorySample {
            daemon: Some(Rss { pid: 1, bytes }),
            workers: vec![Rss { pid: 2, bytes }],
        };
        let mut report = Report {
            requests: 0,
            concurrency: 1,
            seed: 0,
            seconds: 1.0,
            by_status: BTreeMap::new(),
            ok: 0,
            streamed: 0,
            completion_tokens: 0,
            rejected: 0,
            errors: BTreeMap::new(),
            latency: Latency::default(),
            memory_before: sample(100),
            memory_after: sample(200),
            memory_settled: sample(103),
        };
        assert!((report.memory_drift().unwrap() - 0.03).abs() < 1e-9);
        report.memory_settled.workers[0].pid = 3;
        assert_eq!(report.memory_drift(), None);
    }
}
