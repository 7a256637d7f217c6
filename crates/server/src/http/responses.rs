//! The OpenAI Responses API routes: `POST /v1/responses` (whole, or
//! streamed as Server-Sent Events of OpenAI's Responses event types),
//! `GET` and `DELETE /v1/responses/{id}` and
//! `GET /v1/responses/{id}/input_items` over the [`ResponseStore`].
//!
//! A request is read by [`api::responses`] into the chat route's
//! [`api::GenerationRequest`] and runs the chat route's path: [`generate`]
//! renders the conversation with the model's template, admits, leases and
//! generates; the choice's reasoning, text and tool calls become output
//! items through [`ResponseBuilder`]. Follows the OpenAI API reference for
//! the routes and bodies, and the event order of the official Python SDK's
//! `responses.stream`.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use api::ApiError;
use api::response::FinishReason;
use api::responses::{
    Item, OutputItem, ResponseBuilder, ResponseHead, ResponseUsage, ResponsesRequest, item_id,
    parse_responses_for, sse_event,
};
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::generate::{self, ChoiceUpdate, QueueTicket};
use super::handlers::json_body;
use super::metrics::RequestTimeline;
use super::response_store::Stored;
use super::{AppState, HttpError};

const ROUTE: &str = "/v1/responses";
const ROUTE_ID: &str = "/v1/responses/{id}";
const ROUTE_ITEMS: &str = "/v1/responses/{id}/input_items";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `POST /v1/responses`.
pub async fn create(State(state): State<AppState>, request: Request) -> Response {
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
        let parsed = parse_responses_for(&body, default_model.as_deref())?;
        if !parsed.ignored_tools.is_empty() {
            tracing::info!(
                tools = ?parsed.ignored_tools,
                "responses: tools of these types are not served here and were left out"
            );
        }
        let history = match &parsed.previous_response_id {
            Some(id) => state
                .responses
                .get(id)
                .ok_or_else(|| ApiError::PreviousResponseNotFound { id: id.clone() })?
                .conversation
                .clone(),
            None => Vec::new(),
        };
        run(&state, parsed, history, timeline).await
    }
    .await;
    let response = result.unwrap_or_else(|e| HttpError(e).into_response());
    state
        .metrics
        .count_request(ROUTE, response.status().as_u16());
    response
}

/// What a finished response is stored with.
struct Record {
    store: bool,
    history: Vec<Item>,
    input: Vec<Item>,
}

impl Record {
    fn keep(self, state: &AppState, builder: &ResponseBuilder) {
        if !self.store {
            return;
        }
        let response = builder.response().clone();
        let mut conversation = self.history;
        conversation.extend(self.input.iter().cloned());
        conversation.extend(response.output.iter().map(OutputItem::to_item));
        state.responses.insert(Stored {
            response,
            input: self.input,
            conversation,
        });
    }
}

/// The id prefix of an input item kept without an id.
fn prefix(item: &Item) -> &'static str {
    match item {
        Item::Message { .. } => "msg",
        Item::FunctionCall { .. } => "fc",
        Item::FunctionCallOutput { .. } => "fco",
        Item::Reasoning { .. } => "rs",
    }
}

async fn run(
    state: &AppState,
    mut parsed: ResponsesRequest,
    history: Vec<Item>,
    timeline: Arc<RequestTimeline>,
) -> Result<Response, ApiError> {
    let mut req = parsed.generation(&history);
    req.apply_defaults(&state.models.catalog().defaults(&req.model));
    // The response shows the sampling used, the model's defaults included.
    parsed.echo.temperature = req.sampling.temperature;
    parsed.echo.top_p = req.sampling.top_p;
    timeline.stamp(|t| &mut t.parsed_ns);
    let prepared = generate::prepare_timed(state, &req, &timeline).await?;
    let ticket = generate::admit(state, &prepared.model.id)?;
    let updates = generate::start(state, &req, &prepared, &timeline).await?;
    let store = parsed.store && state.responses.enabled();
    let head = ResponseHead {
        id: api::response::response_id(req.endpoint, rand::random()),
        created_at: unix_now(),
        model: req.model.clone(),
        instructions: parsed.instructions.clone(),
        previous_response_id: parsed.previous_response_id.clone(),
        store,
    };
    let builder = ResponseBuilder::new(head, &parsed.echo, |p| item_id(p, rand::random()));
    let record = Record {
        store,
        history,
        input: parsed
            .input
            .into_iter()
            .map(|i| {
                let p = prefix(&i);
                i.with_id(|| item_id(p, rand::random()))
            })
            .collect(),
    };
    let run = Run {
        state: state.clone(),
        builder,
        updates,
        record: Some(record),
        prompt_tokens: prepared.prompt_tokens(),
        completion_tokens: 0,
        model: prepared.model.id.clone(),
        arrived: prepared.arrived,
        first_token: None,
        timeline,
        _ticket: ticket,
        pending: VecDeque::new(),
        streamed: req.stream,
        done: false,
    };
    if req.stream {
        return Ok(stream(run));
    }
    whole(run).await
}

/// One response being generated.
struct Run {
    state: AppState,
    builder: ResponseBuilder,
    updates: mpsc::Receiver<ChoiceUpdate>,
    /// Taken when the response finishes.
    record: Option<Record>,
    prompt_tokens: u32,
    completion_tokens: u32,
    model: String,
    arrived: Instant,
    first_token: Option<Instant>,
    timeline: Arc<RequestTimeline>,
    _ticket: QueueTicket,
    /// Events not yet written; only a streamed response keeps them.
    pending: VecDeque<String>,
    streamed: bool,
    done: bool,
}

/// How a step of a run ended.
enum Step {
    /// More updates to come.
    Going,
    /// The response finished (completed or incomplete).
    Finished,
    Failed(ApiError),
}

impl Run {
    /// Reads the next update into the builder; its events go to `pending`.
    async fn step(&mut self) -> Step {
        let events = match self.updates.recv().await {
            Some(ChoiceUpdate::Text {
                text,
                reasoning,
                calls,
                ..
            }) => {
                if self.first_token.is_none() {
                    self.first_token = Some(Instant::now());
                }
                let mut events = self.builder.reasoning(&reasoning);
                events.extend(self.builder.text(&text));
                events.extend(self.builder.calls(calls));
                events
            }
            Some(ChoiceUpdate::Finished {
                reason,
                completion_tokens,
                ..
            }) => {
                self.completion_tokens += completion_tokens;
                let events = self.finish(reason);
                self.queue(&events);
                return Step::Finished;
            }
            Some(ChoiceUpdate::Failed(e)) => return Step::Failed(e),
            None => {
                return Step::Failed(ApiError::Internal {
                    message: "the generation ended without finishing".into(),
                });
            }
        };
        self.queue(&events);
        Step::Going
    }

    fn queue(&mut self, events: &[Value]) {
        if self.streamed {
            self.pending.extend(events.iter().map(sse_event));
        }
    }

    fn finish(&mut self, reason: FinishReason) -> Vec<Value> {
        let cached = self.timeline.snapshot().cached_tokens;
        let usage = ResponseUsage::new(self.prompt_tokens, self.completion_tokens, cached);
        let events = self.builder.finish(reason, usage, unix_now());
        self.state
            .metrics
            .count_tokens(self.prompt_tokens, self.completion_tokens);
        if let Some(record) = self.record.take() {
            record.keep(&self.state, &self.builder);
        }
        self.done = true;
        self.log("ok");
        let completion_tokens = self.completion_tokens;
        self.state
            .metrics
            .record_finished(&self.timeline, completion_tokens);
        events
    }

    /// The one log line per generation request, as on the chat route.
    fn log(&self, outcome: &str) {
        let ttft_ms = self
            .first_token
            .map(|f| ((f - self.arrived).as_secs_f64() * 1e4).round() / 10.0);
        tracing::info!(
            model = self.model,
            prompt_tokens = self.prompt_tokens,
            completion_tokens = self.completion_tokens,
            ttft_ms,
            total_ms = self.arrived.elapsed().as_millis() as u64,
            outcome,
            "generation"
        );
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if !self.done {
            self.log("client gone");
        }
    }
}

/// A non-streamed response: the finished Response object.
async fn whole(mut run: Run) -> Result<Response, ApiError> {
    loop {
        match run.step().await {
            Step::Going => {}
            Step::Finished => break,
            Step::Failed(e) => {
                run.done = true;
                run.log("error");
                return Err(e);
            }
        }
    }
    Ok(axum::Json(run.builder.response()).into_response())
}

/// A streamed response: every event as it is made.
fn stream(mut run: Run) -> Response {
    let start = run.builder.start();
    run.queue(&start);
    let body = futures::stream::unfold(run, |mut run| async move {
        loop {
            if let Some(event) = run.pending.pop_front() {
                if run.first_token.is_some() {
                    run.timeline.stamp(|t| &mut t.first_write_ns);
                }
                return Some((Ok::<_, Infallible>(Bytes::from(event)), run));
            }
            if run.done {
                return None;
            }
            match run.step().await {
                Step::Going | Step::Finished => {}
                Step::Failed(e) => {
                    // After the first byte the status is sent: error events.
                    let events = run.builder.fail(&e);
                    run.queue(&events);
                    run.done = true;
                    run.log("error");
                }
            }
        }
    });
    super::sse_response(body)
}

/// `GET /v1/responses/{id}`; `stream=true` (replaying a background
/// response's events) is refused, as nothing runs in the background here.
pub async fn retrieve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let stored = state.responses.get(&id);
    let response = match (query.get("stream").map(String::as_str), stored) {
        (Some("true"), _) => HttpError(ApiError::invalid(
            "stream",
            "streaming a stored response is not supported: it is complete",
        ))
        .into_response(),
        (_, Some(stored)) => axum::Json(&stored.response).into_response(),
        (_, None) => HttpError(ApiError::ResponseNotFound { id }).into_response(),
    };
    state
        .metrics
        .count_request(ROUTE_ID, response.status().as_u16());
    response
}

/// `DELETE /v1/responses/{id}`.
pub async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let response = if state.responses.remove(&id) {
        axum::Json(json!({"id": id, "object": "response", "deleted": true})).into_response()
    } else {
        HttpError(ApiError::ResponseNotFound { id }).into_response()
    };
    state
        .metrics
        .count_request(ROUTE_ID, response.status().as_u16());
    response
}

/// `GET /v1/responses/{id}/input_items`: `limit` (1 to 100, default 20),
/// `order` (`desc`, the default, or `asc`), `after` (an item id).
pub async fn input_items(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let response = match list_items(&state, id, &query) {
        Ok(list) => axum::Json(list).into_response(),
        Err(e) => HttpError(e).into_response(),
    };
    state
        .metrics
        .count_request(ROUTE_ITEMS, response.status().as_u16());
    response
}

fn list_items(
    state: &AppState,
    id: String,
    query: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    let limit = match query.get("limit") {
        None => 20,
        Some(l) => match l.parse::<usize>() {
            Ok(l) if (1..=100).contains(&l) => l,
            _ => {
                return Err(ApiError::invalid(
                    "limit",
                    format!("limit must be an integer from 1 to 100, got '{l}'"),
                ));
            }
        },
    };
    let descending = match query.get("order").map(String::as_str) {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(other) => {
            return Err(ApiError::invalid(
                "order",
                format!("order must be 'asc' or 'desc', got '{other}'"),
            ));
        }
    };
    let stored = state
        .responses
        .get(&id)
        .ok_or(ApiError::ResponseNotFound { id })?;
    let mut items: Vec<&Item> = stored.input.iter().collect();
    if descending {
        items.reverse();
    }
    if let Some(after) = query.get("after") {
        let Some(at) = items.iter().position(|i| i.id() == Some(after.as_str())) else {
            return Err(ApiError::invalid(
                "after",
                format!("after names no input item of this response: '{after}'"),
            ));
        };
        items.drain(..=at);
    }
    let has_more = items.len() > limit;
    items.truncate(limit);
    let data: Vec<Value> = items.iter().map(|i| i.to_json()).collect();
    Ok(json!({
        "object": "list",
        "data": data,
        "first_id": items.first().and_then(|i| i.id()),
        "last_id": items.last().and_then(|i| i.id()),
        "has_more": has_more,
    }))
}
