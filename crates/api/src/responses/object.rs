//! The Response object and its streamed events, built from one generated
//! choice's pieces (reasoning, text, tool calls) in the order they arrive.
//!
//! Follows the OpenAI API reference for the Response object and the event
//! types of the official Python SDK (`openai.types.responses`), in the order
//! its `responses.stream` helper accumulates them: `response.created`,
//! `response.in_progress`; per output item `response.output_item.added`,
//! then for a message `response.content_part.added`,
//! `response.output_text.delta`s, `response.output_text.done`,
//! `response.content_part.done`; for reasoning the same with
//! `response.reasoning_text.*` and a `reasoning_text` part; for a function
//! call `response.function_call_arguments.delta` and `.done`; then
//! `response.output_item.done`; last `response.completed` (or
//! `response.incomplete`, or `error` and `response.failed`). Every event
//! carries a `sequence_number` counting from 0.
//!
//! Reasoning is written as the item's `content` (`reasoning_text` parts), as
//! OpenAI's open-weight models return it; `summary` stays empty (nothing
//! here summarizes). `usage.output_tokens_details.reasoning_tokens` is 0:
//! reasoning tokens are not counted apart from the answer's.

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::{Echo, Item};
use crate::error::ApiError;
use crate::response::{FinishReason, ToolCall};

/// An output item id: `prefix` (`msg`, `rs`, `fc`) and 32 hex digits.
pub fn item_id(prefix: &str, unique: u128) -> String {
    format!("{prefix}_{unique:032x}")
}

/// `usage` of a Response object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ResponseUsage {
    pub input_tokens: u32,
    pub input_tokens_details: InputTokensDetails,
    pub output_tokens: u32,
    pub output_tokens_details: OutputTokensDetails,
    pub total_tokens: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct InputTokensDetails {
    pub cached_tokens: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OutputTokensDetails {
    pub reasoning_tokens: u32,
}

impl ResponseUsage {
    pub fn new(input_tokens: u32, output_tokens: u32, cached_tokens: u32) -> Self {
        ResponseUsage {
            input_tokens,
            input_tokens_details: InputTokensDetails { cached_tokens },
            output_tokens,
            output_tokens_details: OutputTokensDetails {
                reasoning_tokens: 0,
            },
            total_tokens: input_tokens.saturating_add(output_tokens),
        }
    }
}

/// One item of `output`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    Reasoning {
        id: String,
        summary: Vec<Value>,
        content: Vec<Value>,
        status: &'static str,
    },
    Message {
        id: String,
        role: &'static str,
        status: &'static str,
        content: Vec<Value>,
    },
    FunctionCall {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
        status: &'static str,
    },
}

impl OutputItem {
    /// The item as a conversation item, for a follow-up request.
    pub fn to_item(&self) -> Item {
        match self {
            OutputItem::Reasoning { id, content, .. } => Item::Reasoning {
                id: Some(id.clone()),
                text: part_text(content),
            },
            OutputItem::Message { id, content, .. } => Item::Message {
                id: Some(id.clone()),
                role: "assistant".into(),
                text: part_text(content),
            },
            OutputItem::FunctionCall {
                id,
                call_id,
                name,
                arguments,
                ..
            } => Item::FunctionCall {
                id: Some(id.clone()),
                call_id: call_id.clone(),
                name: name.clone(),
                arguments: arguments.clone(),
            },
        }
    }
}

fn part_text(parts: &[Value]) -> String {
    parts
        .iter()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect()
}

/// The Response object (`"object": "response"`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResponseObject {
    pub id: String,
    pub object: &'static str,
    pub created_at: u64,
    /// `in_progress`, `completed`, `incomplete` or `failed`.
    pub status: &'static str,
    pub completed_at: Option<u64>,
    pub error: Option<Value>,
    pub incomplete_details: Option<Value>,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<u32>,
    pub model: String,
    pub output: Vec<OutputItem>,
    pub parallel_tool_calls: bool,
    pub previous_response_id: Option<String>,
    pub reasoning: Value,
    pub store: bool,
    pub temperature: f32,
    pub text: Value,
    pub tool_choice: Value,
    pub tools: Vec<Value>,
    pub top_p: f32,
    pub truncation: &'static str,
    pub usage: Option<ResponseUsage>,
    pub user: Option<String>,
    pub metadata: Map<String, Value>,
}

/// Which output item is open, and its index in `output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Reasoning(usize),
    Message(usize),
}

/// Builds a Response object from generated pieces, and the events that
/// stream it. A non-streamed response uses the same builder and drops the
/// events.
pub struct ResponseBuilder {
    response: ResponseObject,
    open: Open,
    /// The open item's text so far.
    text: String,
    sequence: u64,
    ids: Box<dyn FnMut(&str) -> String + Send>,
}

/// Arguments of [`ResponseBuilder::new`] that name the response.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub id: String,
    pub created_at: u64,
    pub model: String,
    pub instructions: Option<String>,
    pub previous_response_id: Option<String>,
    pub store: bool,
}

impl ResponseBuilder {
    /// A builder for an `in_progress` response; `ids` makes an item id from
    /// its prefix.
    pub fn new(
        meta: ResponseHead,
        echo: &Echo,
        ids: impl FnMut(&str) -> String + Send + 'static,
    ) -> Self {
        let response = ResponseObject {
            id: meta.id,
            object: "response",
            created_at: meta.created_at,
            status: "in_progress",
            completed_at: None,
            error: None,
            incomplete_details: None,
            instructions: meta.instructions,
            max_output_tokens: echo.max_output_tokens,
            model: meta.model,
            output: Vec::new(),
            parallel_tool_calls: echo.parallel_tool_calls,
            previous_response_id: meta.previous_response_id,
            reasoning: echo.reasoning.clone(),
            store: meta.store,
            temperature: echo.temperature,
            text: echo.text.clone(),
            tool_choice: echo.tool_choice.clone(),
            tools: echo.tools.clone(),
            top_p: echo.top_p,
            truncation: "disabled",
            usage: None,
            user: echo.user.clone(),
            metadata: echo.metadata.clone(),
        };
        ResponseBuilder {
            response,
            open: Open::None,
            text: String::new(),
            sequence: 0,
            ids: Box::new(ids),
        }
    }

    fn event(&mut self, kind: &str, mut fields: Value) -> Value {
        if let Value::Object(map) = &mut fields {
            map.insert("type".into(), Value::String(kind.to_owned()));
            map.insert("sequence_number".into(), Value::from(self.sequence));
        }
        self.sequence += 1;
        fields
    }

    fn snapshot(&self) -> Value {
        serde_json::to_value(&self.response).unwrap_or(Value::Null)
    }

    /// `response.created` and `response.in_progress`.
    pub fn start(&mut self) -> Vec<Value> {
        let snapshot = self.snapshot();
        vec![
            self.event("response.created", json!({"response": snapshot})),
            self.event("response.in_progress", json!({"response": snapshot})),
        ]
    }

    /// Reasoning text.
    pub fn reasoning(&mut self, delta: &str) -> Vec<Value> {
        if delta.is_empty() {
            return Vec::new();
        }
        let mut events = Vec::new();
        let index = match self.open {
            Open::Reasoning(i) => i,
            _ => {
                events.extend(self.close());
                let id = (self.ids)("rs");
                let index = self.response.output.len();
                self.response.output.push(OutputItem::Reasoning {
                    id: id.clone(),
                    summary: Vec::new(),
                    content: Vec::new(),
                    status: "in_progress",
                });
                self.open = Open::Reasoning(index);
                events.push(self.item_event("response.output_item.added", index));
                events.push(self.event(
                    "response.content_part.added",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                           "part": {"type": "reasoning_text", "text": ""}}),
                ));
                index
            }
        };
        self.text.push_str(delta);
        let id = self.item_id(index);
        events.push(self.event(
            "response.reasoning_text.delta",
            json!({"item_id": id, "output_index": index, "content_index": 0, "delta": delta}),
        ));
        events
    }

    /// Answer text.
    pub fn text(&mut self, delta: &str) -> Vec<Value> {
        if delta.is_empty() {
            return Vec::new();
        }
        let mut events = Vec::new();
        let index = match self.open {
            Open::Message(i) => i,
            _ => {
                events.extend(self.close());
                let id = (self.ids)("msg");
                let index = self.response.output.len();
                self.response.output.push(OutputItem::Message {
                    id: id.clone(),
                    role: "assistant",
                    status: "in_progress",
                    content: Vec::new(),
                });
                self.open = Open::Message(index);
                events.push(self.item_event("response.output_item.added", index));
                events.push(self.event(
                    "response.content_part.added",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                           "part": {"type": "output_text", "text": "", "annotations": [],
                                    "logprobs": []}}),
                ));
                index
            }
        };
        self.text.push_str(delta);
        let id = self.item_id(index);
        events.push(self.event(
            "response.output_text.delta",
            json!({"item_id": id, "output_index": index, "content_index": 0, "delta": delta,
                   "logprobs": []}),
        ));
        events
    }

    /// Complete tool calls: one `function_call` item each.
    pub fn calls(&mut self, calls: Vec<ToolCall>) -> Vec<Value> {
        let mut events = Vec::new();
        if calls.is_empty() {
            return events;
        }
        events.extend(self.close());
        for call in calls {
            let id = (self.ids)("fc");
            let index = self.response.output.len();
            let arguments = call.function.arguments.clone();
            self.response.output.push(OutputItem::FunctionCall {
                id: id.clone(),
                call_id: call.id,
                name: call.function.name.clone(),
                arguments: String::new(),
                status: "in_progress",
            });
            events.push(self.item_event("response.output_item.added", index));
            events.push(self.event(
                "response.function_call_arguments.delta",
                json!({"item_id": id, "output_index": index, "delta": arguments}),
            ));
            events.push(self.event(
                "response.function_call_arguments.done",
                json!({"item_id": id, "output_index": index, "name": call.function.name,
                       "arguments": arguments}),
            ));
            if let Some(OutputItem::FunctionCall {
                arguments: a,
                status,
                ..
            }) = self.response.output.get_mut(index)
            {
                *a = arguments;
                *status = "completed";
            }
            events.push(self.item_event("response.output_item.done", index));
        }
        events
    }

    fn item_id(&self, index: usize) -> String {
        match self.response.output.get(index) {
            Some(
                OutputItem::Reasoning { id, .. }
                | OutputItem::Message { id, .. }
                | OutputItem::FunctionCall { id, .. },
            ) => id.clone(),
            None => String::new(),
        }
    }

    fn item_event(&mut self, kind: &str, index: usize) -> Value {
        let item = self
            .response
            .output
            .get(index)
            .and_then(|i| serde_json::to_value(i).ok())
            .unwrap_or(Value::Null);
        self.event(kind, json!({"output_index": index, "item": item}))
    }

    /// Ends the open item: its `.done` events, with `status` completed
    /// unless the response ran out of tokens in it.
    fn close_with(&mut self, status: &'static str) -> Vec<Value> {
        let (index, reasoning) = match self.open {
            Open::None => return Vec::new(),
            Open::Reasoning(i) => (i, true),
            Open::Message(i) => (i, false),
        };
        self.open = Open::None;
        let text = std::mem::take(&mut self.text);
        let id = self.item_id(index);
        let (done, part) = if reasoning {
            (
                self.event(
                    "response.reasoning_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                           "text": text}),
                ),
                json!({"type": "reasoning_text", "text": text}),
            )
        } else {
            (
                self.event(
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                           "text": text, "logprobs": []}),
                ),
                json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []}),
            )
        };
        let part_done = self.event(
            "response.content_part.done",
            json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
        );
        match self.response.output.get_mut(index) {
            Some(OutputItem::Reasoning {
                content, status: s, ..
            })
            | Some(OutputItem::Message {
                content, status: s, ..
            }) => {
                *content = vec![part];
                *s = status;
            }
            _ => {}
        }
        let item_done = self.item_event("response.output_item.done", index);
        vec![done, part_done, item_done]
    }

    fn close(&mut self) -> Vec<Value> {
        self.close_with("completed")
    }

    /// Ends the response: `completed`, or `incomplete` when it ran out of
    /// tokens (`max_output_tokens` or the context).
    pub fn finish(&mut self, reason: FinishReason, usage: ResponseUsage, now: u64) -> Vec<Value> {
        let incomplete = reason == FinishReason::Length;
        let mut events = self.close_with(if incomplete {
            "incomplete"
        } else {
            "completed"
        });
        self.response.usage = Some(usage);
        if incomplete {
            self.response.status = "incomplete";
            self.response.incomplete_details = Some(json!({"reason": "max_output_tokens"}));
        } else {
            self.response.status = "completed";
            self.response.completed_at = Some(now);
        }
        let snapshot = self.snapshot();
        let kind = if incomplete {
            "response.incomplete"
        } else {
            "response.completed"
        };
        events.push(self.event(kind, json!({"response": snapshot})));
        events
    }

    /// Ends the response as failed: an `error` event, then
    /// `response.failed` carrying the error.
    pub fn fail(&mut self, error: &ApiError) -> Vec<Value> {
        let body = error.body().error;
        let code = body.code.unwrap_or(body.kind);
        let error_event = self.event(
            "error",
            json!({"code": code, "message": body.message, "param": body.param}),
        );
        self.response.status = "failed";
        self.response.error = Some(json!({"code": code, "message": body.message}));
        let snapshot = self.snapshot();
        vec![
            error_event,
            self.event("response.failed", json!({"response": snapshot})),
        ]
    }

    /// The response as built so far.
    pub fn response(&self) -> &ResponseObject {
        &self.response
    }

    /// The finished response.
    pub fn into_response(self) -> ResponseObject {
        self.response
    }
}

/// An SSE event: `event: <type>` and its JSON `data`.
pub fn sse_event(event: &Value) -> String {
    let kind = event
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    format!("event: {kind}\ndata: {event}\n\n")
}
