//! The OpenAI Responses API (`POST /v1/responses`): the request read and
//! checked into the same [`GenerationRequest`] the chat route makes (with
//! endpoint [`Endpoint::Responses`], so a context overflow names `input`),
//! the Response object and its streamed events.
//!
//! Follows the OpenAI API reference for `POST /v1/responses` and the event
//! types of the official Python SDK (`openai.types.responses`). Each
//! Responses parameter is translated to its chat counterpart and checked by
//! the chat route's own code, with the error's `param` renamed to the
//! Responses name: function `tools` (`{"type": "function", "name",
//! "description", "parameters", "strict"}`) by [`crate::tools`],
//! `tool_choice` and `text.format` by [`crate::structured`], sampling by the
//! chat route's ranges, `reasoning.effort` as `reasoning_effort`.
//!
//! Choices of this module:
//! - Tools of other types (`web_search`, `file_search`, `code_interpreter`,
//!   `computer_use_preview`, `image_generation`, `mcp`, `local_shell`,
//!   `custom`, ...) are left out of the prompt and listed in
//!   [`ResponsesRequest::ignored_tools`] for the server to log, since agents
//!   (Codex) send them with every request; a `tool_choice` forcing one is a
//!   400.
//! - `truncation: "auto"`, `background: true`, `conversation`, `prompt`,
//!   `top_logprobs` above 0 and `include: ["message.output_text.logprobs"]`
//!   are 400s naming the parameter. Other `include` values name outputs of
//!   hosted tools or encrypted reasoning, which this server never produces:
//!   accepted, with nothing to include.
//! - `text.verbosity` is accepted and echoed; no model here reads it.
//! - `previous_response_id` is the server's to resolve (it keeps the
//!   store): it calls [`ResponsesRequest::generation`] with the stored
//!   conversation.
//! - Extensions shared with the chat route: `top_k`, `min_p`,
//!   `repetition_penalty`, `seed`, `keep_alive`, `chat_template_kwargs`.

mod items;
mod object;

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};

pub use items::Item;
pub use object::{
    OutputItem, ResponseBuilder, ResponseHead, ResponseObject, ResponseUsage, item_id, sse_event,
};

use crate::error::ApiError;
use crate::keep_alive::KeepAlive;
use crate::request::{Endpoint, Seed};
use crate::structured::{self, ToolChoice};
use crate::tools;
use crate::validate::{
    Common, GenerationRequest, Omitted, PromptInput, at_least, decode, require_model,
};

/// The most `metadata` keys, and their lengths, as OpenAI limits them.
const METADATA_KEYS: usize = 16;
const METADATA_KEY_LEN: usize = 64;
const METADATA_VALUE_LEN: usize = 512;

/// The body of `POST /v1/responses`, as sent.
#[derive(Debug, Clone, Default, Deserialize)]
struct CreateResponse {
    model: Option<String>,
    input: Option<Value>,
    instructions: Option<String>,
    previous_response_id: Option<String>,
    max_output_tokens: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
    min_p: Option<f64>,
    repetition_penalty: Option<f64>,
    seed: Option<Seed>,
    text: Option<Value>,
    tools: Option<Vec<Value>>,
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<bool>,
    reasoning: Option<Value>,
    store: Option<bool>,
    metadata: Option<Map<String, Value>>,
    user: Option<String>,
    stream: Option<bool>,
    truncation: Option<String>,
    include: Option<Vec<String>>,
    top_logprobs: Option<i64>,
    background: Option<bool>,
    conversation: Option<Value>,
    prompt: Option<Value>,
    keep_alive: Option<KeepAlive>,
    chat_template_kwargs: Option<Map<String, Value>>,
}

/// A validated `POST /v1/responses`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponsesRequest {
    pub model: String,
    /// This request's `input` items.
    pub input: Vec<Item>,
    pub instructions: Option<String>,
    pub previous_response_id: Option<String>,
    /// `store` (default true).
    pub store: bool,
    /// The types of the tools left out (not `function`), in order.
    pub ignored_tools: Vec<String>,
    /// The request's settings as the Response object echoes them.
    pub echo: Echo,
    /// Everything but the prompt, checked; [`Self::generation`] adds it.
    template: GenerationRequest,
    tools: Option<Vec<Value>>,
    template_kwargs: Map<String, Value>,
}

/// The settings a Response object repeats from its request.
#[derive(Debug, Clone, PartialEq)]
pub struct Echo {
    pub max_output_tokens: Option<u32>,
    pub metadata: Map<String, Value>,
    pub parallel_tool_calls: bool,
    /// `{"effort", "summary"}`.
    pub reasoning: Value,
    pub temperature: f32,
    pub top_p: f32,
    /// `{"format": ..., "verbosity"?}`.
    pub text: Value,
    /// As sent (`"auto"` when absent).
    pub tool_choice: Value,
    /// The function tools, in the Responses shape.
    pub tools: Vec<Value>,
    pub user: Option<String>,
}

impl ResponsesRequest {
    /// The generation request for this response, continuing `history` (the
    /// items of the conversation before this request's `input`).
    pub fn generation(&self, history: &[Item]) -> GenerationRequest {
        let mut all = history.to_vec();
        all.extend(self.input.iter().cloned());
        let mut req = self.template.clone();
        req.prompts = vec![PromptInput::Chat {
            messages: items::to_messages(self.instructions.as_deref(), &all),
            tools: self.tools.clone(),
            template_kwargs: self.template_kwargs.clone(),
        }];
        req
    }

    /// Whether the reply streams as events.
    pub fn stream(&self) -> bool {
        self.template.stream
    }
}

/// Validates the body of `POST /v1/responses`; a request that leaves
/// `model` out gets `default_model` when there is one.
pub fn parse_responses_for(
    body: &[u8],
    default_model: Option<&str>,
) -> Result<ResponsesRequest, ApiError> {
    let req: CreateResponse = decode(body)?;
    let model = require_model(req.model, default_model)?;
    let input = match req.input {
        Some(input) => items::read_input(input)?,
        None => {
            return Err(ApiError::invalid(
                "input",
                "Missing required parameter: 'input'.",
            ));
        }
    };
    if input.is_empty() && req.previous_response_id.is_none() {
        return Err(ApiError::invalid(
            "input",
            "input must not be an empty array",
        ));
    }
    refuse_unsupported(
        &req.truncation,
        req.background,
        &req.conversation,
        &req.prompt,
    )?;
    if let Some(k) = req.top_logprobs.filter(|k| *k != 0) {
        return Err(ApiError::invalid(
            "top_logprobs",
            format!("top_logprobs is not supported on /v1/responses, got {k}"),
        ));
    }
    check_include(req.include.as_deref().unwrap_or_default())?;
    let metadata = check_metadata(req.metadata.unwrap_or_default())?;
    let (function_tools, chat_tools, ignored_tools) = read_tools(req.tools.unwrap_or_default())?;
    let tools = (!chat_tools.is_empty()).then_some(chat_tools);
    let tool_choice = read_tool_choice(req.tool_choice.as_ref(), tools.as_deref())?;
    let (response_format, text) = read_text(req.text)?;
    let (effort, reasoning) = read_reasoning(req.reasoning)?;
    let mut template_kwargs = req.chat_template_kwargs.unwrap_or_default();
    if let Some(effort) = effort {
        template_kwargs
            .entry("reasoning_effort")
            .or_insert(Value::String(effort));
    }
    let common = Common {
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        min_p: req.min_p,
        repetition_penalty: req.repetition_penalty,
        presence_penalty: None,
        frequency_penalty: None,
        logit_bias: None,
        seed: req.seed,
    };
    let max_tokens = req
        .max_output_tokens
        .map(|v| at_least("max_output_tokens", v, 1))
        .transpose()?;
    let omitted = Omitted {
        max_tokens: max_tokens.is_none(),
        ..common.omitted()
    };
    let sampling = common.sampling()?;
    let parallel_tool_calls = req.parallel_tool_calls.unwrap_or(true);
    let echo = Echo {
        max_output_tokens: max_tokens,
        metadata,
        parallel_tool_calls,
        reasoning,
        temperature: sampling.temperature,
        top_p: sampling.top_p,
        text,
        tool_choice: req.tool_choice.unwrap_or_else(|| json!("auto")),
        tools: function_tools,
        user: req.user.clone(),
    };
    let template = GenerationRequest {
        endpoint: Endpoint::Responses,
        model: model.clone(),
        prompts: Vec::new(),
        sampling,
        max_tokens,
        stop: Vec::new(),
        n: 1,
        logprobs: None,
        echo: false,
        stream: req.stream.unwrap_or(false),
        include_usage: false,
        user: req.user,
        keep_alive: req.keep_alive,
        ignore_eos: false,
        response_format,
        tool_choice,
        parallel_tool_calls,
        omitted,
    };
    Ok(ResponsesRequest {
        model,
        input,
        instructions: req.instructions,
        previous_response_id: req.previous_response_id,
        store: req.store.unwrap_or(true),
        ignored_tools,
        echo,
        template,
        tools,
        template_kwargs,
    })
}

fn refuse_unsupported(
    truncation: &Option<String>,
    background: Option<bool>,
    conversation: &Option<Value>,
    prompt: &Option<Value>,
) -> Result<(), ApiError> {
    match truncation.as_deref() {
        None | Some("disabled") => {}
        Some("auto") => {
            return Err(ApiError::invalid(
                "truncation",
                "truncation 'auto' is not supported: a conversation longer than the context \
                 is refused ('disabled')",
            ));
        }
        Some(other) => {
            return Err(ApiError::invalid(
                "truncation",
                format!("truncation must be 'auto' or 'disabled', got '{other}'"),
            ));
        }
    }
    if background == Some(true) {
        return Err(ApiError::invalid(
            "background",
            "background responses are not supported",
        ));
    }
    if conversation.as_ref().is_some_and(|c| !c.is_null()) {
        return Err(ApiError::invalid(
            "conversation",
            "conversations are not supported; use previous_response_id",
        ));
    }
    if prompt.as_ref().is_some_and(|p| !p.is_null()) {
        return Err(ApiError::invalid(
            "prompt",
            "prompt templates are not supported",
        ));
    }
    Ok(())
}

/// `include`: what the Response object should carry besides its default.
fn check_include(include: &[String]) -> Result<(), ApiError> {
    const NOTHING_TO_ADD: [&str; 8] = [
        "reasoning.encrypted_content",
        "web_search_call.results",
        "web_search_call.action.sources",
        "file_search_call.results",
        "code_interpreter_call.outputs",
        "computer_call_output.output.image_url",
        "message.input_image.image_url",
        "mcp_call.outputs",
    ];
    for (i, value) in include.iter().enumerate() {
        if value == "message.output_text.logprobs" {
            return Err(ApiError::invalid(
                format!("include[{i}]"),
                "message.output_text.logprobs is not supported on /v1/responses",
            ));
        }
        if !NOTHING_TO_ADD.contains(&value.as_str()) {
            return Err(ApiError::invalid(
                format!("include[{i}]"),
                format!("include[{i}]: unknown value '{value}'"),
            ));
        }
    }
    Ok(())
}

fn check_metadata(metadata: Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    if metadata.len() > METADATA_KEYS {
        return Err(ApiError::invalid(
            "metadata",
            format!(
                "metadata may have at most {METADATA_KEYS} keys, got {}",
                metadata.len()
            ),
        ));
    }
    for (key, value) in &metadata {
        let ok = key.chars().count() <= METADATA_KEY_LEN
            && value
                .as_str()
                .is_some_and(|v| v.chars().count() <= METADATA_VALUE_LEN);
        if !ok {
            return Err(ApiError::invalid(
                format!("metadata.{key}"),
                format!(
                    "metadata keys are strings of at most {METADATA_KEY_LEN} characters and \
                     values strings of at most {METADATA_VALUE_LEN}"
                ),
            ));
        }
    }
    Ok(metadata)
}

/// Renames a chat parameter path in an error to its Responses path.
fn renamed(e: ApiError, from: &str, to: &str) -> ApiError {
    match e {
        ApiError::InvalidRequest { message, param } => ApiError::InvalidRequest {
            message: message.replace(from, to),
            param: param.map(|p| p.replacen(from, to, 1)),
        },
        other => other,
    }
}

/// The function tools (Responses shape, chat shape) and the types of the
/// others.
type Tools = (Vec<Value>, Vec<Value>, Vec<String>);

fn read_tools(tools: Vec<Value>) -> Result<Tools, ApiError> {
    let (mut function, mut chat, mut ignored) = (Vec::new(), Vec::new(), Vec::new());
    for (i, tool) in tools.into_iter().enumerate() {
        let at = format!("tools[{i}]");
        let kind = match tool.get("type") {
            Some(Value::String(kind)) => kind.clone(),
            _ => {
                return Err(ApiError::invalid(
                    format!("{at}.type"),
                    format!("{at}.type must be a string such as \"function\""),
                ));
            }
        };
        if kind != "function" {
            ignored.push(kind);
            continue;
        }
        let mut spec = Map::new();
        for key in ["name", "description", "parameters", "strict"] {
            if let Some(v) = tool.get(key).filter(|v| !v.is_null()) {
                spec.insert(key.into(), v.clone());
            }
        }
        let as_chat = json!({"type": "function", "function": spec});
        let mut both = chat.clone();
        both.push(as_chat.clone());
        // Checked with those before it, so a repeated name is found; the
        // chat path names it `tools[j].function.name`.
        tools::check_tools(&both)
            .map_err(|e| renamed(e, &format!("tools[{}].function", chat.len()), &at))?;
        chat.push(as_chat);
        function.push(tool);
    }
    Ok((function, chat, ignored))
}

fn read_tool_choice(
    value: Option<&Value>,
    tools: Option<&[Value]>,
) -> Result<ToolChoice, ApiError> {
    let chat_value = match value {
        Some(Value::Object(o)) => match o.get("type").and_then(Value::as_str) {
            Some("function") => json!({"type": "function",
                                       "function": {"name": o.get("name").cloned()}}),
            other => {
                return Err(ApiError::invalid(
                    "tool_choice.type",
                    format!(
                        "tool_choice may force only a function tool ({{\"type\": \"function\", \
                         \"name\": ...}}), got type {}",
                        other.map_or_else(|| "nothing".to_owned(), |t| format!("'{t}'"))
                    ),
                ));
            }
        },
        other => other.cloned().unwrap_or(Value::Null),
    };
    structured::tool_choice(Some(&chat_value), tools)
        .map_err(|e| renamed(e, "tool_choice.function.name", "tool_choice.name"))
}

/// `text`: its `format` as a `response_format`, and the echo.
fn read_text(text: Option<Value>) -> Result<(structured::ResponseFormat, Value), ApiError> {
    let text = match text {
        None | Some(Value::Null) => {
            return Ok((Default::default(), json!({"format": {"type": "text"}})));
        }
        Some(Value::Object(text)) => text,
        Some(_) => return Err(ApiError::invalid("text", "text must be an object")),
    };
    let mut echo = Map::new();
    let format = match text.get("format") {
        None | Some(Value::Null) => json!({"type": "text"}),
        Some(f) => f.clone(),
    };
    let as_chat = match &format {
        Value::Object(f) if f.get("type").and_then(Value::as_str) == Some("json_schema") => {
            let mut spec = f.clone();
            spec.remove("type");
            json!({"type": "json_schema", "json_schema": spec})
        }
        other => other.clone(),
    };
    let response_format = structured::response_format(Some(as_chat)).map_err(|e| {
        let e = renamed(e, "response_format.json_schema", "text.format");
        renamed(e, "response_format", "text.format")
    })?;
    echo.insert("format".into(), format);
    match text.get("verbosity") {
        None | Some(Value::Null) => {}
        Some(Value::String(v)) if ["low", "medium", "high"].contains(&v.as_str()) => {
            echo.insert("verbosity".into(), Value::String(v.clone()));
        }
        Some(other) => {
            return Err(ApiError::invalid(
                "text.verbosity",
                format!("text.verbosity must be 'low', 'medium' or 'high', got {other}"),
            ));
        }
    }
    Ok((response_format, Value::Object(echo)))
}

/// `reasoning`: the effort for the template, and the echo.
fn read_reasoning(reasoning: Option<Value>) -> Result<(Option<String>, Value), ApiError> {
    let mut r = match reasoning {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(r)) => r.into_iter().collect(),
        Some(_) => {
            return Err(ApiError::invalid(
                "reasoning",
                "reasoning must be an object",
            ));
        }
    };
    let effort = match r.remove("effort") {
        None | Some(Value::Null) => None,
        Some(Value::String(e)) => Some(e),
        Some(_) => {
            return Err(ApiError::invalid(
                "reasoning.effort",
                "reasoning.effort must be a string",
            ));
        }
    };
    let effort = tools::reasoning_effort(effort)
        .map_err(|e| renamed(e, "reasoning_effort", "reasoning.effort"))?;
    let summary = match r.remove("summary").or_else(|| r.remove("generate_summary")) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if ["auto", "concise", "detailed"].contains(&s.as_str()) => Some(s),
        Some(other) => {
            return Err(ApiError::invalid(
                "reasoning.summary",
                format!("reasoning.summary must be 'auto', 'concise' or 'detailed', got {other}"),
            ));
        }
    };
    Ok((
        effort.clone(),
        json!({"effort": effort, "summary": summary}),
    ))
}

#[cfg(test)]
mod tests;
