//! The OpenAI-compatible routes: chat and text completions (streamed as
//! Server-Sent Events in OpenAI's chunk format, or whole), the model list,
//! liveness/readiness and metrics, and the JSON 404/405 fallbacks.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use api::response::{
    AssistantMessage, ChatChoice, ChatCompletion, ChatLogprobs, Completion, CompletionChoice,
    CompletionLogprobs, FinishReason, Model, ModelList, ResponseMeta, ToolCall, TopLogprobMap,
    Usage,
};
use api::stream::{ChatStream, CompletionStream, SSE_DONE, sse_data};
use api::{ApiError, parse_chat_for, parse_completion_for};
use api::{Endpoint, GenerationRequest};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{Method, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::mpsc;

use super::generate::{self, ChoiceUpdate, Prepared, QueueTicket, TokenInfo};
use super::metrics::RequestTimeline;
use super::{AppState, HttpError};

/// Routes behind the API key.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/messages", post(super::anthropic::messages))
        .route(
            "/v1/messages/count_tokens",
            post(super::anthropic::count_tokens),
        )
        .route("/v1/embeddings", post(super::embeddings::openai))
        .route("/api/embed", post(super::ollama_embed::embed_route))
        .route(
            "/api/embeddings",
            post(super::ollama_embed::embeddings_route),
        )
        .route("/v1/models", get(list_models))
        .route("/v1/models/{*id}", get(get_model))
        .route("/v1/responses", post(super::responses::create))
        .route(
            "/v1/responses/{id}",
            get(super::responses::retrieve).delete(super::responses::delete),
        )
        .route(
            "/v1/responses/{id}/input_items",
            get(super::responses::input_items),
        )
        .merge(super::ollama::routes())
        .merge(super::ollama_models::routes())
}

/// Routes open to all (liveness, readiness).
pub fn open_routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .merge(super::ollama_models::open_routes())
}

/// Prometheus metrics: behind the API key unless configured open.
pub fn metrics_routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

pub async fn unknown_route(method: Method, uri: Uri) -> Response {
    fallback_error(ApiError::UnknownRoute {
        method: method.to_string(),
        path: uri.path().to_owned(),
    })
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    fallback_error(ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    })
}

/// A fallback's error, in Anthropic's shape under its routes' path.
fn fallback_error(e: ApiError) -> Response {
    match &e {
        ApiError::UnknownRoute { path, .. } | ApiError::MethodNotAllowed { path, .. }
            if super::anthropic::is_route(path) =>
        {
            super::anthropic::error_response(&e)
        }
        _ => HttpError(e).into_response(),
    }
}

async fn health() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn ready(State(state): State<AppState>) -> Response {
    if state.is_draining() {
        return HttpError(ApiError::Unavailable {
            message: "the server is shutting down".into(),
            retry_after_secs: None,
        })
        .into_response();
    }
    axum::Json(serde_json::json!({"status": "ready"})).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let models = state.supervisor.status().await;
    let text = state
        .metrics
        .render(&models, state.queued(), state.supervisor.cancel_counts());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn model_list(state: &AppState) -> Vec<Model> {
    let status = state.supervisor.status().await;
    let loaded = |id: &str| status.iter().any(|s| s.id == id && s.state == "ready");
    state
        .models
        .catalog()
        .list()
        .into_iter()
        .map(|e| {
            let mut m = Model::new(&e.id, e.created, "mlxd", loaded(&e.id));
            m.format = Some(e.format.to_owned());
            m
        })
        .collect()
}

async fn list_models(State(state): State<AppState>) -> Response {
    let list = ModelList::new(model_list(&state).await);
    state.metrics.count_request("/v1/models", 200);
    axum::Json(list).into_response()
}

async fn get_model(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let found = model_list(&state).await.into_iter().find(|m| m.id == id);
    let response = match found {
        Some(model) => axum::Json(model).into_response(),
        None => HttpError(ApiError::ModelNotFound { model: id }).into_response(),
    };
    state
        .metrics
        .count_request("/v1/models/{id}", response.status().as_u16());
    response
}

async fn chat(State(state): State<AppState>, request: Request) -> Response {
    serve(state, request, "/v1/chat/completions", parse_chat_for).await
}

async fn completions(State(state): State<AppState>, request: Request) -> Response {
    serve(state, request, "/v1/completions", parse_completion_for).await
}

async fn serve(
    state: AppState,
    request: Request,
    route: &str,
    parse: fn(&[u8], Option<&str>) -> Result<GenerationRequest, ApiError>,
) -> Response {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let timeline = Arc::new(RequestTimeline::start(request_id));
    let result = async {
        let body = json_body(&state, request).await?;
        let default_model = state.models.catalog().default_model();
        let mut req = parse(&body, default_model.as_deref())?;
        req.apply_defaults(&state.models.catalog().defaults(&req.model));
        timeline.stamp(|t| &mut t.parsed_ns);
        respond(&state, req, timeline).await
    }
    .await;
    let response = result.unwrap_or_else(|e| HttpError(e).into_response());
    state
        .metrics
        .count_request(route, response.status().as_u16());
    response
}

/// The body, if it is JSON and within the size limit.
pub(super) async fn json_body(state: &AppState, request: Request) -> Result<Bytes, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let is_json = content_type.is_some_and(|t| {
        t.trim_start()
            .to_ascii_lowercase()
            .starts_with("application/json")
    });
    if !is_json {
        return Err(ApiError::UnsupportedMediaType {
            content_type: content_type.map(str::to_owned),
        });
    }
    let limit = state.config.max_body_bytes;
    // A body trickled in slowly would hold its connection forever.
    let timeout = state.config.read_timeout;
    tokio::time::timeout(timeout, axum::body::to_bytes(request.into_body(), limit))
        .await
        .map_err(|_| ApiError::BodyTimeout {
            seconds: timeout.as_secs(),
        })?
        .map_err(|_| ApiError::PayloadTooLarge {
            limit_bytes: limit as u64,
        })
}

async fn respond(
    state: &AppState,
    req: GenerationRequest,
    timeline: Arc<RequestTimeline>,
) -> Result<Response, ApiError> {
    let prepared = generate::prepare_timed(state, &req, &timeline).await?;
    let ticket = generate::admit(state, &prepared.model.id)?;
    let updates = generate::start(state, &req, &prepared, &timeline).await?;
    let meta = ResponseMeta {
        id: api::response::response_id(req.endpoint, rand::random()),
        created: unix_now(),
        model: req.model.clone(),
        system_fingerprint: None,
    };
    let choices = req.choice_count() as u32;
    let chunker: Box<dyn Chunker> = match req.endpoint {
        Endpoint::Chat | Endpoint::Responses => Box::new(ChatChunker(ChatStream::new(
            meta.clone(),
            choices,
            req.include_usage,
        ))),
        Endpoint::Completion => Box::new(CompletionChunker::new(meta.clone(), &req, &prepared)),
    };
    if req.stream {
        return Ok(stream_response(
            state.clone(),
            chunker,
            updates,
            choices,
            prepared,
            ticket,
            timeline,
        ));
    }
    let collected = match collect(updates, choices as usize).await {
        Ok(c) => c,
        Err(e) => {
            let usage = Usage::new(prepared.prompt_tokens(), 0);
            log_request(&req.model, prepared.arrived, None, &usage, "error");
            return Err(e);
        }
    };
    let usage = timeline.snapshot().fill_usage(Usage::new(
        prepared.prompt_tokens(),
        collected.completion_tokens,
    ));
    state
        .metrics
        .count_tokens(usage.prompt_tokens, usage.completion_tokens);
    log_request(
        &req.model,
        prepared.arrived,
        collected.first_token,
        &usage,
        "ok",
    );
    drop(ticket);
    let completion_tokens = usage.completion_tokens;
    let response = match req.endpoint {
        Endpoint::Chat | Endpoint::Responses => {
            axum::Json(chat_body(meta, collected, usage, req.logprobs.is_some())).into_response()
        }
        Endpoint::Completion => {
            axum::Json(completion_body(meta, collected, usage, &req, &prepared)).into_response()
        }
    };
    state.metrics.record_finished(&timeline, completion_tokens);
    Ok(response)
}

/// The one log line per generation request: model, tokens, time to first
/// token, speed, outcome.
pub(super) fn log_request(
    model: &str,
    arrived: std::time::Instant,
    first: Option<std::time::Instant>,
    usage: &Usage,
    outcome: &str,
) {
    let total = arrived.elapsed();
    let ttft_ms = first.map(|f| (f - arrived).as_secs_f64() * 1e3);
    let decode = first.map(|f| f.elapsed().as_secs_f64()).unwrap_or(0.0);
    let tps = if decode > 0.0 && usage.completion_tokens > 1 {
        f64::from(usage.completion_tokens - 1) / decode
    } else {
        0.0
    };
    tracing::info!(
        model,
        prompt_tokens = usage.prompt_tokens,
        completion_tokens = usage.completion_tokens,
        ttft_ms = ttft_ms.map(|t| (t * 10.0).round() / 10.0),
        tokens_per_s = (tps * 10.0).round() / 10.0,
        total_ms = total.as_millis() as u64,
        outcome,
        "generation"
    );
}

/// Every choice's result.
struct Collected {
    texts: Vec<String>,
    reasoning: Vec<String>,
    calls: Vec<Vec<ToolCall>>,
    tokens: Vec<Vec<(TokenInfo, usize)>>,
    reasons: Vec<FinishReason>,
    completion_tokens: u32,
    first_token: Option<std::time::Instant>,
}

/// Reads updates until every choice finished (or one failed).
async fn collect(
    mut updates: mpsc::Receiver<ChoiceUpdate>,
    n: usize,
) -> Result<Collected, ApiError> {
    let mut c = Collected {
        texts: vec![String::new(); n],
        reasoning: vec![String::new(); n],
        calls: vec![Vec::new(); n],
        tokens: vec![Vec::new(); n],
        reasons: vec![FinishReason::Stop; n],
        completion_tokens: 0,
        first_token: None,
    };
    let mut finished = 0;
    while finished < n {
        match updates.recv().await {
            Some(ChoiceUpdate::Text {
                index,
                text,
                reasoning,
                calls,
                tokens,
            }) => {
                let i = index as usize;
                for t in tokens {
                    let offset = c.texts[i].chars().count();
                    c.tokens[i].push((t, offset));
                }
                c.texts[i].push_str(&text);
                c.reasoning[i].push_str(&reasoning);
                c.calls[i].extend(calls);
            }
            Some(ChoiceUpdate::Finished {
                index,
                reason,
                completion_tokens,
                ..
            }) => {
                c.reasons[index as usize] = reason;
                c.completion_tokens += completion_tokens;
                finished += 1;
            }
            Some(ChoiceUpdate::Failed(e)) => return Err(e),
            None => {
                return Err(ApiError::Internal {
                    message: "the generation ended without finishing".into(),
                });
            }
        }
    }
    Ok(c)
}

fn chat_body(meta: ResponseMeta, c: Collected, usage: Usage, logprobs: bool) -> ChatCompletion {
    let choices = c
        .texts
        .into_iter()
        .zip(c.tokens)
        .zip(c.reasons)
        .zip(c.reasoning.into_iter().zip(c.calls))
        .enumerate()
        .map(
            |(i, (((text, tokens), reason), (reasoning, calls)))| ChatChoice {
                index: i as u32,
                message: if calls.is_empty() {
                    AssistantMessage::text(text)
                } else {
                    // Content is null when the reply is only calls, as OpenAI writes it.
                    AssistantMessage::tool_calls((!text.is_empty()).then_some(text), calls)
                }
                .with_reasoning(reasoning),
                logprobs: logprobs.then(|| ChatLogprobs {
                    content: generate::chat_logprobs(
                        &tokens.into_iter().map(|(t, _)| t).collect::<Vec<_>>(),
                    ),
                }),
                finish_reason: reason,
            },
        )
        .collect();
    ChatCompletion::new(meta, choices, usage)
}

/// The prompt text a completion choice starts with when echoing.
fn echo_prefix(req: &GenerationRequest, prepared: &Prepared, index: u32) -> String {
    if !req.echo {
        return String::new();
    }
    let prompt = (index / req.n.max(1)) as usize;
    prepared
        .prompt_texts
        .get(prompt)
        .cloned()
        .unwrap_or_default()
}

fn completion_logprobs(tokens: &[(TokenInfo, usize)], shift: usize) -> CompletionLogprobs {
    CompletionLogprobs {
        tokens: tokens.iter().map(|(t, _)| t.text.clone()).collect(),
        token_logprobs: tokens.iter().map(|(t, _)| Some(t.logprob)).collect(),
        top_logprobs: tokens
            .iter()
            .map(|(t, _)| Some(TopLogprobMap(t.top.clone())))
            .collect(),
        text_offset: tokens.iter().map(|(_, o)| (o + shift) as u32).collect(),
    }
}

fn completion_body(
    meta: ResponseMeta,
    c: Collected,
    usage: Usage,
    req: &GenerationRequest,
    prepared: &Prepared,
) -> Completion {
    let choices = c
        .texts
        .into_iter()
        .zip(c.tokens)
        .zip(c.reasons)
        .enumerate()
        .map(|(i, ((text, tokens), reason))| {
            let prefix = echo_prefix(req, prepared, i as u32);
            let shift = prefix.chars().count();
            CompletionChoice {
                text: prefix + &text,
                index: i as u32,
                logprobs: req.logprobs.map(|_| completion_logprobs(&tokens, shift)),
                finish_reason: Some(reason),
            }
        })
        .collect();
    Completion::new(meta, choices, usage)
}

/// Turns choice updates into SSE events of one endpoint's format.
trait Chunker: Send {
    fn start(&mut self) -> Vec<String>;
    fn text(&mut self, index: u32, text: &str, tokens: Vec<TokenInfo>) -> Vec<String>;
    /// Reasoning and tool calls (chat only; completions have neither).
    fn structure(&mut self, _index: u32, _reasoning: &str, _calls: Vec<ToolCall>) -> Vec<String> {
        Vec::new()
    }
    fn finish(&mut self, index: u32, reason: FinishReason) -> Vec<String>;
    fn usage(&mut self, usage: Usage) -> Vec<String>;
}

struct ChatChunker(ChatStream);

impl Chunker for ChatChunker {
    fn start(&mut self) -> Vec<String> {
        self.0.start().iter().map(sse_data).collect()
    }

    fn text(&mut self, index: u32, text: &str, tokens: Vec<TokenInfo>) -> Vec<String> {
        let logprobs = (!tokens.is_empty()).then(|| ChatLogprobs {
            content: generate::chat_logprobs(&tokens),
        });
        self.0
            .content(index, text, logprobs)
            .iter()
            .map(sse_data)
            .collect()
    }

    fn structure(&mut self, index: u32, reasoning: &str, calls: Vec<ToolCall>) -> Vec<String> {
        let mut chunks = self.0.reasoning(index, reasoning);
        chunks.extend(self.0.tool_calls(index, calls));
        chunks.iter().map(sse_data).collect()
    }

    fn finish(&mut self, index: u32, reason: FinishReason) -> Vec<String> {
        self.0.finish(index, reason).iter().map(sse_data).collect()
    }

    fn usage(&mut self, usage: Usage) -> Vec<String> {
        self.0.usage(usage).iter().map(sse_data).collect()
    }
}

struct CompletionChunker {
    stream: CompletionStream,
    /// Per choice: the echo prefix still to send, and characters sent.
    prefixes: Vec<String>,
    sent: Vec<usize>,
    logprobs: bool,
}

impl CompletionChunker {
    fn new(meta: ResponseMeta, req: &GenerationRequest, prepared: &Prepared) -> CompletionChunker {
        let n = req.choice_count();
        CompletionChunker {
            stream: CompletionStream::new(meta, n as u32, req.include_usage),
            prefixes: (0..n as u32)
                .map(|i| echo_prefix(req, prepared, i))
                .collect(),
            sent: vec![0; n],
            logprobs: req.logprobs.is_some(),
        }
    }
}

impl Chunker for CompletionChunker {
    fn start(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for i in 0..self.prefixes.len() {
            let prefix = std::mem::take(&mut self.prefixes[i]);
            if !prefix.is_empty() {
                self.sent[i] += prefix.chars().count();
                out.extend(
                    self.stream
                        .text(i as u32, &prefix, None)
                        .iter()
                        .map(sse_data),
                );
            }
        }
        out
    }

    fn text(&mut self, index: u32, text: &str, tokens: Vec<TokenInfo>) -> Vec<String> {
        let i = index as usize;
        let offset = self.sent.get(i).copied().unwrap_or(0);
        let logprobs = (self.logprobs && !tokens.is_empty()).then(|| {
            let with_offsets: Vec<(TokenInfo, usize)> =
                tokens.into_iter().map(|t| (t, offset)).collect();
            completion_logprobs(&with_offsets, 0)
        });
        if let Some(sent) = self.sent.get_mut(i) {
            *sent += text.chars().count();
        }
        self.stream
            .text(index, text, logprobs)
            .iter()
            .map(sse_data)
            .collect()
    }

    fn finish(&mut self, index: u32, reason: FinishReason) -> Vec<String> {
        self.stream
            .finish(index, reason)
            .iter()
            .map(sse_data)
            .collect()
    }

    fn usage(&mut self, usage: Usage) -> Vec<String> {
        self.stream.usage(usage).iter().map(sse_data).collect()
    }
}

/// The state of a streamed response.
struct SseState {
    state: AppState,
    chunker: Box<dyn Chunker>,
    updates: mpsc::Receiver<ChoiceUpdate>,
    pending: VecDeque<String>,
    remaining: u32,
    prompt_tokens: u32,
    completion_tokens: u32,
    done: bool,
    model: String,
    arrived: std::time::Instant,
    first_token: Option<std::time::Instant>,
    _ticket: QueueTicket,
    timeline: Arc<RequestTimeline>,
    /// The first content chunk is in `pending`: stamp it when handed over.
    first_write_pending: bool,
    first_write_seen: bool,
    /// Every choice finished and the usage was sent.
    succeeded: bool,
}

impl SseState {
    /// Handles the next update; `false` when the stream is complete.
    async fn advance(&mut self) -> bool {
        if self.done {
            return false;
        }
        let update = if self.remaining == 0 {
            None
        } else {
            self.updates.recv().await
        };
        match update {
            Some(ChoiceUpdate::Text {
                index,
                text,
                reasoning,
                calls,
                tokens,
            }) => {
                let mut events = self.chunker.structure(index, &reasoning, Vec::new());
                events.extend(self.chunker.text(index, &text, tokens));
                events.extend(self.chunker.structure(index, "", calls));
                if self.first_token.is_none() {
                    self.first_token = Some(std::time::Instant::now());
                }
                if !events.is_empty() && !self.first_write_seen {
                    self.first_write_seen = true;
                    self.first_write_pending = true;
                }
                self.pending.extend(events);
            }
            Some(ChoiceUpdate::Finished {
                index,
                reason,
                completion_tokens,
                ..
            }) => {
                self.completion_tokens += completion_tokens;
                self.remaining -= 1;
                self.pending.extend(self.chunker.finish(index, reason));
            }
            Some(ChoiceUpdate::Failed(e)) => {
                let usage = Usage::new(self.prompt_tokens, self.completion_tokens);
                log_request(&self.model, self.arrived, self.first_token, &usage, "error");
                // After the first byte the status is sent: one error event.
                self.pending.push_back(e.sse_event());
                self.pending.push_back(SSE_DONE.to_owned());
                self.done = true;
            }
            None => {
                if self.remaining > 0 {
                    let e = ApiError::Internal {
                        message: "the generation ended without finishing".into(),
                    };
                    self.pending.push_back(e.sse_event());
                } else {
                    let usage = self
                        .timeline
                        .snapshot()
                        .fill_usage(Usage::new(self.prompt_tokens, self.completion_tokens));
                    self.state
                        .metrics
                        .count_tokens(usage.prompt_tokens, usage.completion_tokens);
                    self.pending.extend(self.chunker.usage(usage));
                    self.succeeded = true;
                }
                self.pending.push_back(SSE_DONE.to_owned());
                self.done = true;
            }
        }
        true
    }
}

impl Drop for SseState {
    fn drop(&mut self) {
        if !self.done {
            let usage = Usage::new(self.prompt_tokens, self.completion_tokens);
            log_request(
                &self.model,
                self.arrived,
                self.first_token,
                &usage,
                "client gone",
            );
        }
    }
}

fn stream_response(
    state: AppState,
    mut chunker: Box<dyn Chunker>,
    updates: mpsc::Receiver<ChoiceUpdate>,
    choices: u32,
    prepared: Prepared,
    ticket: QueueTicket,
    timeline: Arc<RequestTimeline>,
) -> Response {
    let pending: VecDeque<String> = chunker.start().into();
    let sse = SseState {
        state,
        chunker,
        updates,
        pending,
        remaining: choices,
        prompt_tokens: prepared.prompt_tokens(),
        completion_tokens: 0,
        done: false,
        model: prepared.model.id.clone(),
        arrived: prepared.arrived,
        first_token: None,
        _ticket: ticket,
        timeline,
        first_write_pending: false,
        first_write_seen: false,
        succeeded: false,
    };
    let body = futures::stream::unfold(sse, |mut sse| async move {
        loop {
            if let Some(event) = sse.pending.pop_front() {
                if sse.first_write_pending && sse.pending.is_empty() {
                    sse.first_write_pending = false;
                    sse.timeline.stamp(|t| &mut t.first_write_ns);
                }
                return Some((Ok::<_, Infallible>(Bytes::from(event)), sse));
            }
            if !sse.advance().await {
                if sse.succeeded {
                    sse.state
                        .metrics
                        .record_finished(&sse.timeline, sse.completion_tokens);
                }
                return None;
            }
        }
    });
    super::sse_response(body)
}
