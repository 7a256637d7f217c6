//! Prometheus metrics (`GET /metrics`, text exposition format): requests by
//! route and status, tokens in and out, time to first token and time
//! between tokens, and, read from the supervisor at scrape time, queue
//! depth, loaded models, worker restarts and memory estimates.

use std::sync::atomic::AtomicU64;
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
    ttft: Histogram,
    inter_token: Histogram,
    queue_depth: Gauge,
    loaded_models: Gauge,
    restarts: Family<ModelLabels, Gauge>,
    cancelled: Gauge<u64, AtomicU64>,
    tokens_after_cancel: Gauge<u64, AtomicU64>,
    memory: Family<ModelLabels, Gauge<u64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
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
            "Memory a loaded model's worker reported using",
            memory.clone(),
        );
        Metrics {
            registry,
            requests,
            prompt_tokens,
            completion_tokens,
            ttft,
            inter_token,
            queue_depth,
            loaded_models,
            restarts,
            cancelled,
            tokens_after_cancel,
            memory,
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
            let bytes = m.info.as_ref().map_or(0, |i| i.memory_used_bytes);
            self.memory.get_or_create(&labels).set(bytes);
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
