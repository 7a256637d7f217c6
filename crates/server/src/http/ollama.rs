//! Ollama's native generation routes, `POST /api/chat` and
//! `POST /api/generate`, on the same path as the OpenAI routes: the body
//! becomes a [`GenerationRequest`] ([`api::ollama`]), then
//! [`generate::prepare`], [`generate::admit`] and [`generate::start`] run it
//! and its choice updates are written as Ollama writes them: NDJSON lines
//! (`application/x-ndjson`) of `{"model", "created_at", "message" |
//! "response", "done": false}`, then one `done: true` line with
//! `done_reason` and the counts and durations (nanoseconds), or that last
//! line alone when `stream` is false. Follows Ollama's API reference
//! (`docs/api.md`).
//!
//! Durations: `load_duration` is the time to lease a worker (loading the
//! model when it was not loaded), `prompt_eval_duration` and
//! `eval_duration` the worker's prefill and decode times (when the reply
//! ends at a stop string or end-of-sequence token before the worker's own
//! report, the front-end's: submission to first token, first token to
//! last), `total_duration` from the request's arrival to its last line. A stream that fails after
//! its first line ends with one `{"error": "..."}` line, as Ollama's does.
//! `/api/generate` with an empty prompt, and `/api/chat` without messages,
//! load the model (or, with `keep_alive: 0`, unload it) and answer
//! `done_reason` `load`/`unload`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use api::ollama::{OllamaRequest, error_body};
use api::response::{FinishReason, ToolCall};
use api::{ApiError, GenerationRequest, KeepAlive};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::AppState;
use super::generate::{self, ChoiceUpdate, QueueTicket, TokenInfo};
use super::metrics::{RequestTimeline, now_ns};

/// The generation routes (behind the API key).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/chat", post(chat))
        .route("/api/generate", post(generate_route))
}

/// An error as Ollama answers it: `{"error": "message"}` with the status
/// of the one error table.
pub fn error_response(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(error_body(e))).into_response();
    if let Some(secs) = e.retry_after()
        && let Ok(value) = HeaderValue::from_str(&secs.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// Rewrites OpenAI's error body (`{"error": {"message", ...}}`) into
/// Ollama's (`{"error": "message"}`) on every `/api/` path, for the errors
/// raised before a handler runs (a missing API key, an unknown route, a
/// wrong method); the status stays.
pub async fn ollama_errors(request: Request, next: axum::middleware::Next) -> Response {
    let ollama = request.uri().path().starts_with("/api/");
    let response = next.run(request).await;
    if !ollama || response.status().is_success() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return error_response(&ApiError::Internal {
            message: "reading an error body".into(),
        });
    };
    let rewritten = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| Some(json!({"error": v.get("error")?.get("message")?.as_str()?})));
    let body = match rewritten {
        Some(v) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            Body::from(v.to_string())
        }
        None => Body::from(bytes),
    };
    Response::from_parts(parts, body)
}

/// The name a request's model resolves to: as sent, or without Ollama's
/// `:latest` tag when only the untagged name is known.
pub fn resolve_name(state: &AppState, name: &str) -> String {
    let catalog = state.models.catalog();
    match name.strip_suffix(":latest") {
        Some(bare) if catalog.resolve(name).is_none() && catalog.resolve(bare).is_some() => {
            bare.to_owned()
        }
        _ => name.to_owned(),
    }
}

/// Reads the body within the size and time limits. Ollama's clients do
/// not all declare JSON (`curl -d` sends a form type), and Ollama reads
/// the body as JSON whatever it says, so the type is not checked here.
pub async fn read_body(state: &AppState, request: Request) -> Result<Bytes, ApiError> {
    let limit = state.config.max_body_bytes;
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

/// Which route's lines to write.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Chat,
    Generate,
}

impl Route {
    fn path(self) -> &'static str {
        match self {
            Route::Chat => "/api/chat",
            Route::Generate => "/api/generate",
        }
    }
}

async fn chat(State(state): State<AppState>, request: Request) -> Response {
    serve(state, request, Route::Chat).await
}

async fn generate_route(State(state): State<AppState>, request: Request) -> Response {
    serve(state, request, Route::Generate).await
}

async fn serve(state: AppState, request: Request, route: Route) -> Response {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let timeline = Arc::new(RequestTimeline::start(request_id));
    let result = async {
        let body = read_body(&state, request).await?;
        let default_model = state.models.catalog().default_model();
        let parse = match route {
            Route::Chat => api::ollama::parse_chat,
            Route::Generate => api::ollama::parse_generate,
        };
        let OllamaRequest {
            mut generation,
            load_only,
        } = parse(&body, default_model.as_deref())?;
        let requested = std::mem::take(&mut generation.model);
        generation.model = resolve_name(&state, &requested);
        generation.apply_defaults(&state.models.catalog().defaults(&generation.model));
        timeline.stamp(|t| &mut t.parsed_ns);
        if load_only {
            return load_or_unload(&state, &generation, &requested, route).await;
        }
        respond(&state, generation, requested, route, timeline).await
    }
    .await;
    let response = result.unwrap_or_else(|e| error_response(&e));
    state
        .metrics
        .count_request(route.path(), response.status().as_u16());
    response
}

fn created_at() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}

/// `/api/generate` without a prompt: load the model, or unload it.
async fn load_or_unload(
    state: &AppState,
    req: &GenerationRequest,
    requested: &str,
    route: Route,
) -> Result<Response, ApiError> {
    let model = state.models.get(&req.model).await?;
    let reason = if req.keep_alive == Some(KeepAlive::UnloadAfterRequest) {
        state.supervisor.unload(&model.id).await;
        "unload"
    } else {
        state
            .supervisor
            .load(model.spec(), req.keep_alive.map(generate::keep_alive))
            .await
            .map_err(|e| generate::supervisor_error(&model.id, e))?;
        "load"
    };
    let mut line = Map::new();
    line.insert("model".into(), json!(requested));
    line.insert("created_at".into(), json!(created_at()));
    match route {
        Route::Chat => line.insert(
            "message".into(),
            json!({"role": "assistant", "content": ""}),
        ),
        Route::Generate => line.insert("response".into(), json!("")),
    };
    line.insert("done".into(), json!(true));
    line.insert("done_reason".into(), json!(reason));
    Ok(Json(Value::Object(line)).into_response())
}

async fn respond(
    state: &AppState,
    req: GenerationRequest,
    requested: String,
    route: Route,
    timeline: Arc<RequestTimeline>,
) -> Result<Response, ApiError> {
    let prepared = generate::prepare_timed(state, &req, &timeline).await?;
    let ticket = generate::admit(state, &prepared.model.id)?;
    let leasing = Instant::now();
    let updates = generate::start(state, &req, &prepared, &timeline).await?;
    let lines = Lines {
        state: state.clone(),
        route,
        model: requested,
        prompt_tokens: prepared.prompt_tokens(),
        arrived: prepared.arrived,
        load: leasing.elapsed(),
        timeline,
        updates,
        completion_tokens: 0,
        done: false,
        _ticket: ticket,
    };
    if req.stream {
        return Ok(stream(lines));
    }
    whole(lines).await
}

/// A request's progress and what its lines need.
struct Lines {
    state: AppState,
    route: Route,
    /// The model as the request named it (Ollama echoes the name).
    model: String,
    prompt_tokens: u32,
    arrived: Instant,
    load: Duration,
    timeline: Arc<RequestTimeline>,
    updates: mpsc::Receiver<ChoiceUpdate>,
    completion_tokens: u32,
    done: bool,
    _ticket: QueueTicket,
}

/// What one update adds: text, reasoning, calls; or the end.
enum Step {
    Piece {
        text: String,
        reasoning: String,
        calls: Vec<ToolCall>,
        tokens: Vec<TokenInfo>,
    },
    Finished(FinishReason),
    Failed(ApiError),
}

impl Lines {
    async fn next(&mut self) -> Option<Step> {
        if self.done {
            return None;
        }
        let step = match self.updates.recv().await {
            Some(ChoiceUpdate::Text {
                text,
                reasoning,
                calls,
                tokens,
                ..
            }) => Step::Piece {
                text,
                reasoning,
                calls,
                tokens,
            },
            Some(ChoiceUpdate::Finished {
                reason,
                completion_tokens,
                ..
            }) => {
                self.completion_tokens = completion_tokens;
                self.finished();
                Step::Finished(reason)
            }
            Some(ChoiceUpdate::Failed(e)) => Step::Failed(e),
            None => Step::Failed(ApiError::Internal {
                message: "the generation ended without finishing".into(),
            }),
        };
        if !matches!(step, Step::Piece { .. }) {
            self.done = true;
        }
        Some(step)
    }

    /// Counts the finished request in the metrics and the log.
    fn finished(&self) {
        let completion = self.completion_tokens;
        self.state
            .metrics
            .count_tokens(self.prompt_tokens, completion);
        self.state
            .metrics
            .record_finished(&self.timeline, completion);
        tracing::info!(
            model = self.model,
            prompt_tokens = self.prompt_tokens,
            completion_tokens = completion,
            total_ms = self.arrived.elapsed().as_millis() as u64,
            outcome = "ok",
            "generation"
        );
    }

    /// A line's `model` and `created_at`, its text under `message` or
    /// `response`, and its tokens' `logprobs` when asked for.
    fn line(&self, piece: Piece) -> Map<String, Value> {
        let Piece {
            text,
            reasoning,
            calls,
            tokens,
        } = piece;
        let mut line = Map::new();
        line.insert("model".into(), json!(self.model));
        line.insert("created_at".into(), json!(created_at()));
        match self.route {
            Route::Chat => {
                let mut message = Map::new();
                message.insert("role".into(), json!("assistant"));
                message.insert("content".into(), json!(text));
                if !reasoning.is_empty() {
                    message.insert("thinking".into(), json!(reasoning));
                }
                if !calls.is_empty() {
                    let calls: Vec<Value> = calls.into_iter().enumerate().map(tool_call).collect();
                    message.insert("tool_calls".into(), Value::Array(calls));
                }
                line.insert("message".into(), Value::Object(message));
            }
            Route::Generate => {
                line.insert("response".into(), json!(text));
                if !reasoning.is_empty() {
                    line.insert("thinking".into(), json!(reasoning));
                }
            }
        }
        if !tokens.is_empty() {
            line.insert("logprobs".into(), logprobs(&tokens));
        }
        line.insert("done".into(), json!(false));
        line
    }

    /// The last line's fields: `done`, `done_reason`, counts, durations.
    fn close(&self, line: &mut Map<String, Value>, reason: FinishReason) {
        let t = self.timeline.snapshot();
        let reason = match reason {
            FinishReason::Length => "length",
            _ => "stop",
        };
        line.insert("done".into(), json!(true));
        line.insert("done_reason".into(), json!(reason));
        line.insert(
            "total_duration".into(),
            json!(self.arrived.elapsed().as_nanos() as u64),
        );
        line.insert("load_duration".into(), json!(self.load.as_nanos() as u64));
        line.insert("prompt_eval_count".into(), json!(self.prompt_tokens));
        // The worker's own times when its `Done` came before the reply
        // ended; else as the front-end saw them.
        let seen = |from: u64, to: u64| {
            if from == 0 {
                0
            } else {
                to.saturating_sub(from)
            }
        };
        let prompt_eval = match t.prefill_us {
            0 => seen(t.submitted_ns, t.first_token_ns),
            us => us.saturating_mul(1000),
        };
        let eval = match t.decode_us {
            0 => seen(t.first_token_ns, now_ns()),
            us => us.saturating_mul(1000),
        };
        line.insert("prompt_eval_duration".into(), json!(prompt_eval));
        line.insert("eval_count".into(), json!(self.completion_tokens));
        line.insert("eval_duration".into(), json!(eval));
    }
}

/// What one or more updates carry.
#[derive(Default)]
struct Piece {
    text: String,
    reasoning: String,
    calls: Vec<ToolCall>,
    tokens: Vec<TokenInfo>,
}

/// Ollama's `logprobs`: per token its text, log-probability, UTF-8 bytes
/// and alternatives.
fn logprobs(tokens: &[TokenInfo]) -> Value {
    let entry = |text: &str, logprob: f32| json!({"token": text, "logprob": logprob, "bytes": text.as_bytes()});
    tokens
        .iter()
        .map(|t| {
            let mut e = entry(&t.text, t.logprob);
            e["top_logprobs"] = t.top.iter().map(|(s, lp)| entry(s, *lp)).collect();
            e
        })
        .collect()
}

/// An Ollama tool call: arguments as an object, not JSON text.
fn tool_call((index, call): (usize, ToolCall)) -> Value {
    let arguments = serde_json::from_str::<Value>(&call.function.arguments)
        .unwrap_or(Value::String(call.function.arguments));
    json!({
        "id": call.id,
        "function": {"index": index, "name": call.function.name, "arguments": arguments},
    })
}

/// The whole reply as one object (`stream: false`).
async fn whole(mut lines: Lines) -> Result<Response, ApiError> {
    let mut all = Piece::default();
    loop {
        match lines.next().await {
            Some(Step::Piece {
                text,
                reasoning,
                calls,
                tokens,
            }) => {
                all.text.push_str(&text);
                all.reasoning.push_str(&reasoning);
                all.calls.extend(calls);
                all.tokens.extend(tokens);
            }
            Some(Step::Finished(reason)) => {
                let mut line = lines.line(all);
                lines.close(&mut line, reason);
                return Ok(Json(Value::Object(line)).into_response());
            }
            Some(Step::Failed(e)) => return Err(e),
            None => {
                return Err(ApiError::Internal {
                    message: "the generation ended without finishing".into(),
                });
            }
        }
    }
}

fn ndjson(value: &Value) -> Bytes {
    let mut text = value.to_string();
    text.push('\n');
    Bytes::from(text)
}

/// NDJSON lines as the reply arrives (`stream: true`).
fn stream(lines: Lines) -> Response {
    let body = futures::stream::unfold(lines, |mut lines| async move {
        loop {
            let line = match lines.next().await? {
                Step::Piece {
                    text,
                    reasoning,
                    calls,
                    tokens,
                } => {
                    let empty = text.is_empty() && reasoning.is_empty() && calls.is_empty();
                    if empty && tokens.is_empty() {
                        continue;
                    }
                    if lines.timeline.snapshot().first_write_ns == 0 {
                        lines.timeline.stamp(|t| &mut t.first_write_ns);
                    }
                    Value::Object(lines.line(Piece {
                        text,
                        reasoning,
                        calls,
                        tokens,
                    }))
                }
                Step::Finished(reason) => {
                    let mut line = lines.line(Piece::default());
                    lines.close(&mut line, reason);
                    Value::Object(line)
                }
                Step::Failed(e) => {
                    tracing::info!(model = lines.model, outcome = "error", "generation");
                    error_body(&e)
                }
            };
            return Some((Ok::<_, Infallible>(ndjson(&line)), lines));
        }
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response()
}
