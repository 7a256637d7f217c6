//! Prometheus metrics (`GET /metrics`, text exposition format): requests by
//! route and status, tokens in and out, time to first token and time
//! between tokens, and, read from the supervisor at scrape time, queue
//! depth, loaded models, worker restarts and memory estimates.
//!
//! Also the per-request timelines behind `GET /admin/timings`: each
//! generation request records `CLOCK_MONOTONIC` stamps as it passes the
//! front-end's stages, the worker adds its own (received, admitted, first
//! token) in `Done` on the same clock, and the finished timeline goes into
//! a ring of the last [`TIMELINE_CAPACITY`] requests. Recording costs a
//! few clock reads and one short lock per request; the ring is read on the
//! admin listener, never in a measured response.

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::supervisor::ModelStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

/// The daemon's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    prompt_tokens: Counter,
    completion_tokens: Counter,
    draft_tokens: Counter,
    accepted_draft_tokens: Counter,
    ttft: Histogram,
    inter_token: Histogram,
    queue_depth: Gauge,
    loaded_models: Gauge,
    restarts: Family<ModelLabels, Gauge>,
    cancelled: Gauge<u64, AtomicU64>,
    tokens_after_cancel: Gauge<u64, AtomicU64>,
    memory: Family<ModelLabels, Gauge<u64, AtomicU64>>,
    /// The last requests' timelines (`GET /admin/timings`).
    pub timings: Timings,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Closes a request's timeline (finished now; written first now too if
    /// nothing was written before) with its completion tokens, and keeps it
    /// for `GET /admin/timings`.
    pub fn record_finished(&self, timeline: &RequestTimeline, completion_tokens: u32) {
        timeline.update(|t| {
            let now = now_ns();
            t.finished_ns = now;
            if t.first_write_ns == 0 {
                t.first_write_ns = now;
            }
            t.completion_tokens = completion_tokens;
        });
        let snapshot = timeline.snapshot();
        self.draft_tokens.inc_by(u64::from(snapshot.draft_tokens));
        self.accepted_draft_tokens
            .inc_by(u64::from(snapshot.accepted_draft_tokens));
        self.timings.record(snapshot);
    }

    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("mlxd");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        let prompt_tokens = Counter::default();
        registry.register(
            "prompt_tokens",
            "Prompt tokens processed",
            prompt_tokens.clone(),
        );
        let completion_tokens = Counter::default();
        registry.register(
            "completion_tokens",
            "Tokens generated",
            completion_tokens.clone(),
        );
        let draft_tokens = Counter::default();
        registry.register(
            "draft_tokens",
            "Draft tokens speculative decoding proposed and the models verified",
            draft_tokens.clone(),
        );
        let accepted_draft_tokens = Counter::default();
        registry.register(
            "accepted_draft_tokens",
            "Draft tokens the models accepted (tokens gained by speculative decoding)",
            accepted_draft_tokens.clone(),
        );
        let ttft = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "time_to_first_token_seconds",
            "From request arrival to the first generated token",
            ttft.clone(),
        );
        let inter_token = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "inter_token_latency_seconds",
            "Time between consecutive tokens of a stream",
            inter_token.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Requests admitted and not finished",
            queue_depth.clone(),
        );
        let loaded_models = Gauge::default();
        registry.register(
            "loaded_models",
            "Models with a ready worker",
            loaded_models.clone(),
        );
        let restarts = Family::<ModelLabels, Gauge>::default();
        registry.register(
            "worker_restarts",
            "Worker incarnations after the first",
            restarts.clone(),
        );
        let cancelled = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "cancelled_requests",
            "Requests cancelled before they finished (client gone, stop string)",
            cancelled.clone(),
        );
        let tokens_after_cancel = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "tokens_after_cancel",
            "Tokens that still arrived from workers after a cancel was sent",
            tokens_after_cancel.clone(),
        );
        let memory = Family::<ModelLabels, Gauge<u64, AtomicU64>>::default();
        registry.register(
            "model_memory_bytes",
            "Memory a loaded model's worker uses: MLX's active memory from its latest stats report (every second), else what it reported when ready",
            memory.clone(),
        );
        Metrics {
            registry,
            requests,
            prompt_tokens,
            completion_tokens,
            draft_tokens,
            accepted_draft_tokens,
            ttft,
            inter_token,
            queue_depth,
            loaded_models,
            restarts,
            cancelled,
            tokens_after_cancel,
            memory,
            timings: Timings::new(TIMELINE_CAPACITY),
        }
    }

    pub fn count_request(&self, route: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                status,
            })
            .inc();
    }

    pub fn count_tokens(&self, prompt: u32, completion: u32) {
        self.prompt_tokens.inc_by(u64::from(prompt));
        self.completion_tokens.inc_by(u64::from(completion));
    }

    pub fn observe_ttft(&self, d: Duration) {
        self.ttft.observe(d.as_secs_f64());
    }

    pub fn observe_token(&self, d: Duration) {
        self.inter_token.observe(d.as_secs_f64());
    }

    /// The exposition text, with the supervisor's state as of now.
    pub fn render(&self, models: &[ModelStatus], queued: usize, cancels: (u64, u64)) -> String {
        self.cancelled.set(cancels.0);
        self.tokens_after_cancel.set(cancels.1);
        self.queue_depth.set(queued as i64);
        self.loaded_models
            .set(models.iter().filter(|m| m.state == "ready").count() as i64);
        for m in models {
            let labels = ModelLabels {
                model: m.id.clone(),
            };
            self.restarts.get_or_create(&labels).set(m.restarts as i64);
            let bytes = m.memory_bytes().unwrap_or(0);
            self.memory.get_or_create(&labels).set(bytes);
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Timelines kept for `GET /admin/timings`.
pub const TIMELINE_CAPACITY: usize = 1024;

/// Nanoseconds of `CLOCK_MONOTONIC`, the clock the worker stamps `Done` with.
pub fn now_ns() -> u64 {
    shm_ring::monotonic_ns()
}

/// One generation request's way through the daemon: `CLOCK_MONOTONIC`
/// nanoseconds at each stage (0: not reached, or not reported by the
/// worker), the worker's `Done` figures, and the token counts.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Timeline {
    /// The request's `x-request-id`.
    pub request_id: String,
    pub model: String,
    pub stream: bool,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Prompt tokens served from the worker's prompt cache.
    pub cached_tokens: u32,
    /// Draft tokens of speculative decoding verified, and accepted.
    pub draft_tokens: u32,
    pub accepted_draft_tokens: u32,
    /// The handler began (headers read, body not yet).
    pub arrived_ns: u64,
    /// The body was read, parsed and validated.
    pub parsed_ns: u64,
    /// The model was resolved and the prompts rendered and tokenized.
    pub tokenized_ns: u64,
    /// Admitted to the model's queue and a worker leased; the request is
    /// about to be framed into the ring.
    pub submitted_ns: u64,
    /// The worker read the request off the ring.
    pub worker_received_ns: u64,
    /// The worker began its prefill.
    pub worker_admitted_ns: u64,
    /// The worker wrote the first token to the ring.
    pub worker_first_token_ns: u64,
    /// The front-end received the first token.
    pub first_token_ns: u64,
    /// The first content chunk (streaming) or the whole body was handed to
    /// the HTTP connection.
    pub first_write_ns: u64,
    /// The front-end received the worker's `Done`.
    pub done_ns: u64,
    /// The last byte of the response was handed to the connection.
    pub finished_ns: u64,
    /// The worker's prefill and decode times (µs; 0: not reported).
    pub prefill_us: u64,
    pub decode_us: u64,
}

/// A timeline's stages in microseconds; `None` where a stamp is missing.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Stages {
    /// Body read, JSON parse and validation.
    pub http_us: Option<f64>,
    /// Model lookup, chat template and tokenization.
    pub tokenize_us: Option<f64>,
    /// Waiting: the front-end's queue and lease, plus the worker's queue
    /// between reading the request and starting its prefill when the worker
    /// reports it.
    pub queue_us: Option<f64>,
    /// The ring, both ways: Submit to the worker's read, and the first
    /// token's write to the front-end's read (worker stamps needed).
    pub ring_us: Option<f64>,
    /// The worker's prefill and first step (engine time, not overhead).
    pub first_token_us: Option<f64>,
    /// Detokenizing the first token and writing its SSE chunk (or, whole,
    /// from the first token to the body).
    pub write_us: Option<f64>,
    /// From handing the request to the ring to the first token back:
    /// ring, worker queue and engine together (needs no worker stamps).
    pub submit_to_first_token_us: Option<f64>,
    /// From the handler's start to the first content written: what the
    /// daemon's time to first token is, HTTP included.
    pub ttft_us: Option<f64>,
    /// What the daemon adds to the engine's time to first token: `ttft`
    /// less the worker's prefill and first step (worker stamps needed).
    pub added_us: Option<f64>,
}

/// `to - from` in microseconds when both stamps exist and are ordered.
fn span(from: u64, to: u64) -> Option<f64> {
    (from > 0 && to >= from).then(|| (to - from) as f64 / 1e3)
}

impl Timeline {
    /// `usage` with this request's prompt-cache hits and draft tokens.
    pub fn fill_usage(&self, usage: api::Usage) -> api::Usage {
        usage
            .with_cached_tokens(self.cached_tokens)
            .with_draft_tokens(self.draft_tokens, self.accepted_draft_tokens)
    }

    /// The stages between the stamps.
    pub fn stages(&self) -> Stages {
        let worker_queue = span(self.worker_received_ns, self.worker_admitted_ns);
        let ring_in = span(self.submitted_ns, self.worker_received_ns);
        let ring_out = span(self.worker_first_token_ns, self.first_token_ns);
        let front_queue = span(self.tokenized_ns, self.submitted_ns);
        let ttft = span(self.arrived_ns, self.first_write_ns);
        let engine = span(self.worker_admitted_ns, self.worker_first_token_ns);
        Stages {
            http_us: span(self.arrived_ns, self.parsed_ns),
            tokenize_us: span(self.parsed_ns, self.tokenized_ns),
            queue_us: front_queue.map(|q| q + worker_queue.unwrap_or(0.0)),
            ring_us: ring_in.zip(ring_out).map(|(a, b)| a + b),
            first_token_us: engine,
            write_us: span(self.first_token_ns, self.first_write_ns),
            submit_to_first_token_us: span(self.submitted_ns, self.first_token_ns),
            ttft_us: ttft,
            added_us: ttft.zip(engine).map(|(t, e)| t - e),
        }
    }
}

/// A request's timeline while it runs, shared by its handler, its choices'
/// tasks and its SSE body.
#[derive(Debug, Default)]
pub struct RequestTimeline(Mutex<Timeline>);

impl RequestTimeline {
    /// A timeline that began now.
    pub fn start(request_id: String) -> RequestTimeline {
        RequestTimeline(Mutex::new(Timeline {
            request_id,
            arrived_ns: now_ns(),
            ..Timeline::default()
        }))
    }

    /// Changes the timeline.
    pub fn update(&self, f: impl FnOnce(&mut Timeline)) {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Stamps `field` with now unless it was stamped before.
    pub fn stamp(&self, field: fn(&mut Timeline) -> &mut u64) {
        self.update(|t| {
            let slot = field(t);
            if *slot == 0 {
                *slot = now_ns();
            }
        });
    }

    /// The timeline as of now.
    pub fn snapshot(&self) -> Timeline {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The last finished requests' timelines.
#[derive(Debug)]
pub struct Timings {
    capacity: usize,
    recent: Mutex<VecDeque<Timeline>>,
}

/// A stage's percentiles over the timelines that have it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct StageSummary {
    pub count: usize,
    pub p50_us: f64,
    pub p99_us: f64,
}

impl Timings {
    pub fn new(capacity: usize) -> Timings {
        Timings {
            capacity: capacity.max(1),
            recent: Mutex::new(VecDeque::with_capacity(capacity)),
        }
    }

    /// Keeps a finished request's timeline (the oldest goes when full).
    pub fn record(&self, timeline: Timeline) {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() == self.capacity {
            recent.pop_front();
        }
        recent.push_back(timeline);
    }

    /// The last `n` timelines, oldest first.
    pub fn recent(&self, n: usize) -> Vec<Timeline> {
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        recent
            .iter()
            .skip(recent.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Reads one stage of a timeline.
type StageOf = fn(&Stages) -> Option<f64>;

/// p50 and p99 (nearest rank) of each stage over `timelines`, by the
/// stage's name without the `_us` suffix.
pub fn summarize(timelines: &[Timeline]) -> Vec<(&'static str, StageSummary)> {
    let stages: Vec<Stages> = timelines.iter().map(Timeline::stages).collect();
    let pick: [(&'static str, StageOf); 9] = [
        ("http", |s| s.http_us),
        ("tokenize", |s| s.tokenize_us),
        ("queue", |s| s.queue_us),
        ("ring", |s| s.ring_us),
        ("first_token", |s| s.first_token_us),
        ("write", |s| s.write_us),
        ("submit_to_first_token", |s| s.submit_to_first_token_us),
        ("ttft", |s| s.ttft_us),
        ("added", |s| s.added_us),
    ];
    pick.iter()
        .map(|(name, get)| {
            let mut values: Vec<f64> = stages.iter().filter_map(get).collect();
            values.sort_by(f64::total_cmp);
            let rank = |q: f64| -> f64 {
                if values.is_empty() {
                    return 0.0;
                }
                let i = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
                values[i - 1]
            };
            let summary = StageSummary {
                count: values.len(),
                p50_us: rank(0.5),
                p99_us: rank(0.99),
            };
            (*name, summary)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeline(base: u64, worker: bool) -> Timeline {
        let us = |n: u64| base + n * 1_000;
        Timeline {
            arrived_ns: us(0),
            parsed_ns: us(10),
            tokenized_ns: us(30),
            submitted_ns: us(35),
            worker_received_ns: if worker { us(40) } else { 0 },
            worker_admitted_ns: if worker { us(42) } else { 0 },
            worker_first_token_ns: if worker { us(1042) } else { 0 },
            first_token_ns: us(1050),
            first_write_ns: us(1060),
            ..Timeline::default()
        }
    }

    #[test]
    fn stages_are_the_gaps_between_stamps() {
        let s = timeline(1_000_000, true).stages();
        assert_eq!(s.http_us, Some(10.0));
        assert_eq!(s.tokenize_us, Some(20.0));
        assert_eq!(s.queue_us, Some(5.0 + 2.0));
        assert_eq!(s.ring_us, Some(5.0 + 8.0));
        assert_eq!(s.first_token_us, Some(1000.0));
        assert_eq!(s.write_us, Some(10.0));
        assert_eq!(s.submit_to_first_token_us, Some(1015.0));
        assert_eq!(s.ttft_us, Some(1060.0));
        assert_eq!(s.added_us, Some(60.0));
    }

    #[test]
    fn stages_needing_worker_stamps_are_absent_without_them() {
        let s = timeline(1_000_000, false).stages();
        assert_eq!(s.queue_us, Some(5.0));
        assert_eq!((s.ring_us, s.first_token_us), (None, None));
        assert_eq!(s.submit_to_first_token_us, Some(1015.0));
    }

    #[test]
    fn the_ring_keeps_the_last_timelines_and_summarizes_them() {
        let timings = Timings::new(3);
        for i in 0..5 {
            timings.record(Timeline {
                completion_tokens: i,
                ..timeline(1_000_000, i % 2 == 0)
            });
        }
        let recent = timings.recent(10);
        assert_eq!(
            recent
                .iter()
                .map(|t| t.completion_tokens)
                .collect::<Vec<_>>(),
            [2, 3, 4]
        );
        assert_eq!(timings.recent(1)[0].completion_tokens, 4);
        let summary = summarize(&recent);
        let ring = summary.iter().find(|(n, _)| *n == "ring").map(|(_, s)| *s);
        assert_eq!(ring.map(|s| s.count), Some(2));
        let http = summary.iter().find(|(n, _)| *n == "http").map(|(_, s)| *s);
        assert_eq!(
            http.map(|s| (s.count, s.p50_us, s.p99_us)),
            Some((3, 10.0, 10.0))
        );
    }
}
