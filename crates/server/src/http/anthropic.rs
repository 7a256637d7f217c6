//! Anthropic's Messages API: `POST /v1/messages` (whole or streamed as
//! Anthropic's named SSE events) and `POST /v1/messages/count_tokens`.
//!
//! Follows Anthropic's Messages API reference. A body is validated by
//! `api::anthropic` into the chat route's `GenerationRequest` and runs
//! through the same [`generate`] path (template, tokenizer, admission,
//! grammar for a forced tool call, worker); only the wire shapes differ.
//! Every error on these routes, the API key's included ([`super::auth`]),
//! leaves as Anthropic's error body with the status of the one `ApiError`
//! table.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use api::anthropic::{self, Message, MessageStream, MessageUsage};
use api::response::{FinishReason, ToolCall, Usage};
use api::{ApiError, GenerationRequest};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::AppState;
use super::generate::{self, ChoiceUpdate, Prepared, QueueTicket};
use super::handlers::{json_body, log_request};
use super::metrics::RequestTimeline;

const MESSAGES: &str = "/v1/messages";
const COUNT_TOKENS: &str = "/v1/messages/count_tokens";

/// Whether `path` is one of these routes (whose errors take Anthropic's
/// shape, and which take `x-api-key`).
pub(super) fn is_route(path: &str) -> bool {
    path == MESSAGES || path.starts_with("/v1/messages/")
}

/// An error as Anthropic's body with the table's status.
pub(super) fn error_response(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        anthropic::error_body_json(e),
    )
        .into_response();
    if let Some(secs) = e.retry_after()
        && let Ok(value) = HeaderValue::from_str(&secs.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// `POST /v1/messages`.
pub(super) async fn messages(State(state): State<AppState>, request: Request) -> Response {
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
        let mut req = anthropic::parse_messages_for(&body, default_model.as_deref())?;
        req.apply_defaults(&state.models.catalog().defaults(&req.model));
        timeline.stamp(|t| &mut t.parsed_ns);
        respond(&state, req, timeline).await
    }
    .await;
    let response = result.unwrap_or_else(|e| error_response(&e));
    state
        .metrics
        .count_request(MESSAGES, response.status().as_u16());
    response
}

/// `POST /v1/messages/count_tokens`: the prompt's tokens, rendered and
/// tokenized exactly as generation renders and tokenizes it.
pub(super) async fn count_tokens(State(state): State<AppState>, request: Request) -> Response {
    let result = async {
        let body = json_body(&state, request).await?;
        let default_model = state.models.catalog().default_model();
        let req = anthropic::parse_count_tokens_for(&body, default_model.as_deref())?;
        let prepared = generate::prepare(&state, &req).await?;
        Ok::<_, ApiError>(
            axum::Json(serde_json::json!({"input_tokens": prepared.prompt_tokens()}))
                .into_response(),
        )
    }
    .await;
    let response = result.unwrap_or_else(|e| error_response(&e));
    state
        .metrics
        .count_request(COUNT_TOKENS, response.status().as_u16());
    response
}

async fn respond(
    state: &AppState,
    req: GenerationRequest,
    timeline: Arc<RequestTimeline>,
) -> Result<Response, ApiError> {
    let prepared = generate::prepare_timed(state, &req, &timeline).await?;
    let ticket = generate::admit(state, &prepared.model.id)?;
    let updates = generate::start(state, &req, &prepared, &timeline).await?;
    let id = anthropic::message_id(rand::random());
    if req.stream {
        let stream = MessageStream::new(id, req.model.clone(), prepared.prompt_tokens());
        return Ok(stream_response(
            state.clone(),
            stream,
            updates,
            req,
            prepared,
            ticket,
            timeline,
        ));
    }
    let reply = match collect(updates).await {
        Ok(reply) => reply,
        Err(e) => {
            let usage = Usage::new(prepared.prompt_tokens(), 0);
            log_request(&req.model, prepared.arrived, None, &usage, "error");
            return Err(e);
        }
    };
    let usage = Usage::new(prepared.prompt_tokens(), reply.completion_tokens);
    state
        .metrics
        .count_tokens(usage.prompt_tokens, usage.completion_tokens);
    log_request(
        &req.model,
        prepared.arrived,
        reply.first_token,
        &usage,
        "ok",
    );
    drop(ticket);
    let stop = anthropic::stop_reason(reply.reason, reply.stop_sequence, &req.stop);
    let message = Message::new(
        id,
        req.model.clone(),
        reply.reasoning,
        reply.text,
        &reply.calls,
        stop,
        MessageUsage {
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
        },
    );
    state
        .metrics
        .record_finished(&timeline, usage.completion_tokens);
    Ok(axum::Json(message).into_response())
}

/// The one choice of a whole reply.
struct Reply {
    text: String,
    reasoning: String,
    calls: Vec<ToolCall>,
    reason: FinishReason,
    stop_sequence: Option<usize>,
    completion_tokens: u32,
    first_token: Option<Instant>,
}

async fn collect(mut updates: mpsc::Receiver<ChoiceUpdate>) -> Result<Reply, ApiError> {
    let mut reply = Reply {
        text: String::new(),
        reasoning: String::new(),
        calls: Vec::new(),
        reason: FinishReason::Stop,
        stop_sequence: None,
        completion_tokens: 0,
        first_token: None,
    };
    loop {
        match updates.recv().await {
            Some(ChoiceUpdate::Text {
                text,
                reasoning,
                calls,
                ..
            }) => {
                reply.first_token.get_or_insert_with(Instant::now);
                reply.text.push_str(&text);
                reply.reasoning.push_str(&reasoning);
                reply.calls.extend(calls);
            }
            Some(ChoiceUpdate::Finished {
                reason,
                completion_tokens,
                stop_sequence,
                ..
            }) => {
                reply.reason = reason;
                reply.stop_sequence = stop_sequence;
                reply.completion_tokens = completion_tokens;
                return Ok(reply);
            }
            Some(ChoiceUpdate::Failed(e)) => return Err(e),
            None => {
                return Err(ApiError::Internal {
                    message: "the generation ended without finishing".into(),
                });
            }
        }
    }
}

/// The state of a streamed reply.
struct Streaming {
    state: AppState,
    stream: MessageStream,
    updates: mpsc::Receiver<ChoiceUpdate>,
    pending: VecDeque<String>,
    stop: Vec<String>,
    model: String,
    prompt_tokens: u32,
    completion_tokens: u32,
    arrived: Instant,
    first_token: Option<Instant>,
    done: bool,
    succeeded: bool,
    _ticket: QueueTicket,
    timeline: Arc<RequestTimeline>,
}

impl Streaming {
    /// Handles the next update; `false` once the stream is complete.
    async fn advance(&mut self) -> bool {
        if self.done {
            return false;
        }
        match self.updates.recv().await {
            Some(ChoiceUpdate::Text {
                text,
                reasoning,
                calls,
                ..
            }) => {
                if self.first_token.is_none() {
                    self.first_token = Some(Instant::now());
                    self.timeline.stamp(|t| &mut t.first_write_ns);
                }
                self.pending.extend(self.stream.thinking(&reasoning));
                self.pending.extend(self.stream.text(&text));
                for call in &calls {
                    self.pending.extend(self.stream.tool_use(call));
                }
            }
            Some(ChoiceUpdate::Finished {
                reason,
                completion_tokens,
                stop_sequence,
                ..
            }) => {
                self.completion_tokens = completion_tokens;
                let stop = anthropic::stop_reason(reason, stop_sequence, &self.stop);
                self.pending
                    .extend(self.stream.finish(stop, completion_tokens));
                let usage = Usage::new(self.prompt_tokens, completion_tokens);
                self.state
                    .metrics
                    .count_tokens(usage.prompt_tokens, usage.completion_tokens);
                log_request(&self.model, self.arrived, self.first_token, &usage, "ok");
                self.done = true;
                self.succeeded = true;
            }
            Some(ChoiceUpdate::Failed(e)) => self.fail(&e),
            None => self.fail(&ApiError::Internal {
                message: "the generation ended without finishing".into(),
            }),
        }
        true
    }

    /// After the first event the status is sent: one `error` event.
    fn fail(&mut self, e: &ApiError) {
        let usage = Usage::new(self.prompt_tokens, self.completion_tokens);
        log_request(&self.model, self.arrived, self.first_token, &usage, "error");
        self.pending.push_back(anthropic::error_event(e));
        self.done = true;
    }
}

impl Drop for Streaming {
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
    stream: MessageStream,
    updates: mpsc::Receiver<ChoiceUpdate>,
    req: GenerationRequest,
    prepared: Prepared,
    ticket: QueueTicket,
    timeline: Arc<RequestTimeline>,
) -> Response {
    let streaming = Streaming {
        state,
        pending: stream.start().into(),
        stream,
        updates,
        stop: req.stop,
        model: prepared.model.id.clone(),
        prompt_tokens: prepared.prompt_tokens(),
        completion_tokens: 0,
        arrived: prepared.arrived,
        first_token: None,
        done: false,
        succeeded: false,
        _ticket: ticket,
        timeline,
    };
    let body = futures::stream::unfold(streaming, |mut s| async move {
        loop {
            if let Some(event) = s.pending.pop_front() {
                return Some((Ok::<_, Infallible>(Bytes::from(event)), s));
            }
            if !s.advance().await {
                if s.succeeded {
                    s.state
                        .metrics
                        .record_finished(&s.timeline, s.completion_tokens);
                }
                return None;
            }
        }
    });
    super::sse_response(body)
}
