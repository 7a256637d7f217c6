//! The body of `POST /v1/messages` (and of `/v1/messages/count_tokens`)
//! validated into the same [`GenerationRequest`] the chat route makes.
//!
//! Follows Anthropic's Messages API reference for every key and block, and
//! its rules where they differ from OpenAI's: `max_tokens` is required,
//! `temperature` is in [0, 1], a top-level key the API does not define is a
//! 400 naming it (Anthropic answers "Extra inputs are not permitted").
//!
//! How the conversation reaches the chat template (the chat route's
//! normalized messages):
//! - `system` (a string, or text blocks joined by a blank line) is a
//!   leading `system` message.
//! - A user message's `tool_result` blocks become `tool` messages (with
//!   `tool_call_id` = `tool_use_id`), in order, before one `user` message
//!   holding its text blocks joined by a blank line. A result with
//!   `is_error: true` reaches the model with `Error: ` before its text.
//! - An assistant message's text blocks are its `content`, its `tool_use`
//!   blocks its `tool_calls` (`arguments` = `input`), its `thinking` blocks
//!   its `reasoning_content` (the key Qwen3-style templates read, and which
//!   the chat route maps to gpt-oss's `thinking`). `redacted_thinking`
//!   holds another server's encrypted reasoning that no model here can
//!   read, so it is dropped.
//! - `cache_control` (top-level, or on a block or tool) is accepted: a hint
//!   with no effect, since the server's prompt cache reuses every shared
//!   prefix on its own.
//! - Image, document and other block types are 400s naming the block; so
//!   is a final assistant message (a prefill), which the templates here
//!   cannot continue.
//! - `tools` become function tools, checked as the chat route checks them;
//!   `tool_choice` maps `auto`/`any`/`tool`/`none` onto the chat route's
//!   choices (so `any` and `tool` force calls through the same grammar),
//!   and `disable_parallel_tool_use` onto `parallel_tool_calls: false`.
//! - `thinking` sets the template's `enable_thinking` switch (read by the
//!   templates that have one): `enabled` and `adaptive` (the model decides
//!   how much to think) on, `disabled` off; `budget_tokens` is checked as
//!   Anthropic checks it (at least 1024, below `max_tokens`) and is a
//!   target only: `max_tokens` bounds reasoning and answer together.
//!   `display: "omitted"` is a 400 (reasoning is returned as text).
//! - `metadata.user_id` is the request's user (logged as the chat route's
//!   `user`); `service_tier` `auto` and `standard_only` both mean the one
//!   tier there is.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::request::Endpoint;
use crate::structured::ResponseFormat;
use crate::validate::{GenerationRequest, Omitted, PromptInput, Sampling, decode};

/// The keys a Messages body may have.
const MESSAGE_KEYS: [&str; 13] = [
    "model",
    "max_tokens",
    "messages",
    "system",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "tools",
    "tool_choice",
    "thinking",
];
/// Keys of a Messages body beyond [`MESSAGE_KEYS`].
const MESSAGE_EXTRA_KEYS: [&str; 2] = ["service_tier", "cache_control"];
/// The keys a count_tokens body may have.
const COUNT_KEYS: [&str; 7] = [
    "cache_control",
    "model",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "thinking",
];
/// The smallest `thinking.budget_tokens` Anthropic accepts.
pub const MIN_THINKING_BUDGET: i64 = 1024;

/// The body as sent; every key optional on the wire, checked afterwards.
#[derive(Debug, Default, Deserialize)]
struct MessagesBody {
    model: Option<String>,
    max_tokens: Option<i64>,
    messages: Option<Vec<InputMessage>>,
    system: Option<Value>,
    metadata: Option<Metadata>,
    stop_sequences: Option<Vec<String>>,
    stream: Option<bool>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
    tools: Option<Vec<Value>>,
    tool_choice: Option<Value>,
    thinking: Option<Value>,
    service_tier: Option<String>,
}

#[derive(Debug, Deserialize)]
struct InputMessage {
    role: String,
    content: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    user_id: Option<String>,
}

/// Validates the body of `POST /v1/messages`; a request without `model`
/// gets `default_model` when the server has one.
pub fn parse_messages_for(
    body: &[u8],
    default_model: Option<&str>,
) -> Result<GenerationRequest, ApiError> {
    let mut allowed: Vec<&str> = MESSAGE_KEYS.to_vec();
    allowed.extend(MESSAGE_EXTRA_KEYS);
    check_keys(body, &allowed)?;
    let req: MessagesBody = decode(body)?;
    let max_tokens = match req.max_tokens {
        None => {
            return Err(ApiError::invalid(
                "max_tokens",
                "max_tokens: Field required",
            ));
        }
        Some(v) => u32::try_from(v).ok().filter(|v| *v >= 1).ok_or_else(|| {
            ApiError::invalid(
                "max_tokens",
                format!("max_tokens: must be at least 1, got {v}"),
            )
        })?,
    };
    if let Some(tier) = req.service_tier.as_deref() {
        if !["auto", "standard_only"].contains(&tier) {
            return Err(ApiError::invalid(
                "service_tier",
                format!("service_tier: must be 'auto' or 'standard_only', got '{tier}'"),
            ));
        }
    }
    let stop = stop_sequences(req.stop_sequences)?;
    let sampling = Sampling {
        temperature: unit("temperature", req.temperature, true)?.unwrap_or(1.0),
        top_p: unit("top_p", req.top_p, false)?.unwrap_or(1.0),
        top_k: match req.top_k {
            None => 0,
            Some(k) => u32::try_from(k).map_err(|_| {
                ApiError::invalid(
                    "top_k",
                    format!("top_k: must be a non-negative integer, got {k}"),
                )
            })?,
        },
        ..Sampling::default()
    };
    let omitted = Omitted {
        temperature: req.temperature.is_none(),
        top_p: req.top_p.is_none(),
        top_k: req.top_k.is_none(),
        min_p: true,
        repetition_penalty: true,
        max_tokens: false,
    };
    let user = req.metadata.and_then(|m| m.user_id);
    let conversation = Conversation {
        model: req.model,
        messages: req.messages,
        system: req.system,
        tools: req.tools,
        tool_choice: req.tool_choice,
        thinking: req.thinking,
    };
    let mut generation = conversation.into_request(default_model, Some(max_tokens))?;
    generation.sampling = sampling;
    generation.max_tokens = Some(max_tokens);
    generation.stop = stop;
    generation.stream = req.stream.unwrap_or(false);
    generation.user = user;
    generation.omitted = omitted;
    Ok(generation)
}

/// Validates the body of `POST /v1/messages/count_tokens`: the prompt part
/// of a Messages body (the answer needs no sampling).
pub fn parse_count_tokens_for(
    body: &[u8],
    default_model: Option<&str>,
) -> Result<GenerationRequest, ApiError> {
    check_keys(body, &COUNT_KEYS)?;
    let req: MessagesBody = decode(body)?;
    Conversation {
        model: req.model,
        messages: req.messages,
        system: req.system,
        tools: req.tools,
        tool_choice: req.tool_choice,
        thinking: req.thinking,
    }
    .into_request(default_model, None)
}

/// A 400 naming the first key that is not in `allowed`.
fn check_keys(body: &[u8], allowed: &[&str]) -> Result<(), ApiError> {
    let keys: Map<String, Value> = decode(body)?;
    match keys.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(key) => Err(ApiError::invalid(
            key.clone(),
            format!("{key}: Extra inputs are not permitted"),
        )),
        None => Ok(()),
    }
}

/// `temperature` in [0, 1] or `top_p` in (0, 1].
fn unit(param: &str, value: Option<f64>, zero_ok: bool) -> Result<Option<f32>, ApiError> {
    match value {
        Some(v) if !(0.0..=1.0).contains(&v) || (v == 0.0 && !zero_ok) => {
            let low = if zero_ok {
                "at least 0"
            } else {
                "greater than 0"
            };
            Err(ApiError::invalid(
                param,
                format!("{param}: must be {low} and at most 1, got {v}"),
            ))
        }
        other => Ok(other.map(|v| v as f32)),
    }
}

fn stop_sequences(stop: Option<Vec<String>>) -> Result<Vec<String>, ApiError> {
    let stop = stop.unwrap_or_default();
    if let Some(i) = stop.iter().position(String::is_empty) {
        let param = format!("stop_sequences[{i}]");
        return Err(ApiError::invalid(
            param.clone(),
            format!("{param}: stop sequences must be non-empty strings"),
        ));
    }
    Ok(stop)
}

/// What a Messages body and a count_tokens body share: the prompt.
struct Conversation {
    model: Option<String>,
    messages: Option<Vec<InputMessage>>,
    system: Option<Value>,
    tools: Option<Vec<Value>>,
    tool_choice: Option<Value>,
    thinking: Option<Value>,
}

impl Conversation {
    fn into_request(
        self,
        default_model: Option<&str>,
        max_tokens: Option<u32>,
    ) -> Result<GenerationRequest, ApiError> {
        let model = match (self.model, default_model) {
            (Some(m), _) if !m.trim().is_empty() => m,
            (Some(_), _) => {
                return Err(ApiError::invalid(
                    "model",
                    "model: must be a non-empty string",
                ));
            }
            (None, Some(default)) => default.to_owned(),
            (None, None) => return Err(ApiError::invalid("model", "model: Field required")),
        };
        let Some(input) = self.messages else {
            return Err(ApiError::invalid("messages", "messages: Field required"));
        };
        let mut messages = Vec::with_capacity(input.len() + 1);
        if let Some(system) = system_text(self.system)? {
            messages.push(json!({"role": "system", "content": system}));
        }
        if input.is_empty() {
            return Err(ApiError::invalid(
                "messages",
                "messages: at least one message is required",
            ));
        }
        let last = input.len() - 1;
        for (i, message) in input.into_iter().enumerate() {
            let at = format!("messages.{i}");
            if message.content.as_array().is_some_and(Vec::is_empty) {
                return Err(ApiError::invalid(
                    format!("{at}.content"),
                    format!("{at}.content: must have at least one content block"),
                ));
            }
            match message.role.as_str() {
                "user" => user_messages(&at, message.content, &mut messages)?,
                "assistant" if i == last => {
                    return Err(ApiError::invalid(
                        at.clone(),
                        format!(
                            "{at}: a final assistant message (a prefill) is not supported; \
                             the conversation must end with a user message"
                        ),
                    ));
                }
                "assistant" => messages.push(assistant_message(&at, message.content)?),
                other => {
                    return Err(ApiError::invalid(
                        format!("{at}.role"),
                        format!("{at}.role: must be 'user' or 'assistant', got '{other}'"),
                    ));
                }
            }
        }
        let tools = self
            .tools
            .map(|t| super::tools::function_tools(&t))
            .transpose()?;
        let (tool_choice, parallel) =
            super::tools::tool_choice(self.tool_choice.as_ref(), tools.as_deref())?;
        let mut template_kwargs = Map::new();
        if let Some(enabled) = thinking(self.thinking, max_tokens)? {
            template_kwargs.insert("enable_thinking".into(), Value::Bool(enabled));
        }
        Ok(GenerationRequest {
            endpoint: Endpoint::Chat,
            model,
            prompts: vec![PromptInput::Chat {
                messages,
                tools,
                template_kwargs,
            }],
            sampling: Sampling::default(),
            max_tokens,
            stop: Vec::new(),
            n: 1,
            logprobs: None,
            echo: false,
            stream: false,
            include_usage: false,
            user: None,
            keep_alive: None,
            ignore_eos: false,
            response_format: ResponseFormat::Text,
            tool_choice,
            parallel_tool_calls: parallel,
            omitted: Omitted::default(),
        })
    }
}

/// `thinking`: `Some(true)` enabled, `Some(false)` disabled, `None` absent.
fn thinking(value: Option<Value>, max_tokens: Option<u32>) -> Result<Option<bool>, ApiError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let kind = value.get("type").and_then(Value::as_str);
    match value.get("display").and_then(Value::as_str) {
        Some("omitted") => {
            return Err(ApiError::invalid(
                "thinking.display",
                "thinking.display: 'omitted' is not supported (reasoning is returned as text)",
            ));
        }
        None | Some("summarized") => {}
        Some(other) => {
            return Err(ApiError::invalid(
                "thinking.display",
                format!("thinking.display: must be 'summarized' or 'omitted', got '{other}'"),
            ));
        }
    }
    match kind {
        Some("disabled") => Ok(Some(false)),
        Some("adaptive") => Ok(Some(true)),
        Some("enabled") => {
            let budget = value.get("budget_tokens").and_then(Value::as_i64);
            let Some(budget) = budget else {
                return Err(ApiError::invalid(
                    "thinking.budget_tokens",
                    "thinking.budget_tokens: Field required (an integer)",
                ));
            };
            if budget < MIN_THINKING_BUDGET {
                return Err(ApiError::invalid(
                    "thinking.budget_tokens",
                    format!(
                        "thinking.budget_tokens: must be at least {MIN_THINKING_BUDGET}, got {budget}"
                    ),
                ));
            }
            if let Some(max) = max_tokens.filter(|m| budget >= i64::from(*m)) {
                return Err(ApiError::invalid(
                    "thinking.budget_tokens",
                    format!(
                        "thinking.budget_tokens: must be less than max_tokens ({max}), got {budget}"
                    ),
                ));
            }
            Ok(Some(true))
        }
        _ => Err(ApiError::invalid(
            "thinking.type",
            format!(
                "thinking.type: must be 'enabled', 'adaptive' or 'disabled', got {}",
                value.get("type").unwrap_or(&Value::Null)
            ),
        )),
    }
}

/// `system`: a string or an array of text blocks.
fn system_text(system: Option<Value>) -> Result<Option<String>, ApiError> {
    match system {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok((!s.is_empty()).then_some(s)),
        Some(Value::Array(blocks)) => {
            let mut texts = Vec::with_capacity(blocks.len());
            for (j, block) in blocks.iter().enumerate() {
                let at = format!("system.{j}");
                match block_of(&at, block)? {
                    ("text", b) => texts.push(text_of(&at, b)?),
                    (other, _) => return Err(unsupported(&at, other)),
                }
            }
            Ok((!texts.is_empty()).then(|| texts.join("\n\n")))
        }
        Some(_) => Err(ApiError::invalid(
            "system",
            "system: must be a string or an array of text blocks",
        )),
    }
}

/// A block as an object with its `type`.
fn block_of<'a>(at: &str, block: &'a Value) -> Result<(&'a str, &'a Map<String, Value>), ApiError> {
    let Some(object) = block.as_object() else {
        return Err(ApiError::invalid(
            at,
            format!("{at}: must be a content block object"),
        ));
    };
    match object.get("type").and_then(Value::as_str) {
        Some(kind) => Ok((kind, object)),
        None => Err(ApiError::invalid(
            format!("{at}.type"),
            format!("{at}.type: Field required (a string)"),
        )),
    }
}

/// Checks a block's keys against `allowed` (`type` and `cache_control`
/// are always allowed).
fn check_block_keys(
    at: &str,
    block: &Map<String, Value>,
    allowed: &[&str],
) -> Result<(), ApiError> {
    match block.keys().find(|k| {
        !["type", "cache_control"].contains(&k.as_str()) && !allowed.contains(&k.as_str())
    }) {
        Some(key) => Err(ApiError::invalid(
            format!("{at}.{key}"),
            format!("{at}.{key}: Extra inputs are not permitted"),
        )),
        None => Ok(()),
    }
}

/// The string field `key` of a block.
fn string_field(at: &str, block: &Map<String, Value>, key: &str) -> Result<String, ApiError> {
    match block.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(ApiError::invalid(
            format!("{at}.{key}"),
            format!("{at}.{key}: Field required (a string)"),
        )),
    }
}

/// A text block's text (`citations` may only be absent, null or empty).
fn text_of(at: &str, block: &Map<String, Value>) -> Result<String, ApiError> {
    check_block_keys(at, block, &["text", "citations"])?;
    match block.get("citations") {
        None | Some(Value::Null) => {}
        Some(Value::Array(c)) if c.is_empty() => {}
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{at}.citations"),
                format!("{at}.citations: citations are not supported"),
            ));
        }
    }
    string_field(at, block, "text")
}

fn unsupported(at: &str, kind: &str) -> ApiError {
    ApiError::invalid(
        at,
        format!("{at}: content blocks of type '{kind}' are not supported here"),
    )
}

/// One user message: its `tool_result` blocks as `tool` messages, then its
/// text as one `user` message.
fn user_messages(at: &str, content: Value, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let blocks = match content {
        Value::String(text) => {
            out.push(json!({"role": "user", "content": text}));
            return Ok(());
        }
        Value::Array(blocks) => blocks,
        _ => return Err(content_type_error(at)),
    };
    let mut texts = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("{at}.content.{j}");
        match block_of(&at, block)? {
            ("text", b) => texts.push(text_of(&at, b)?),
            ("tool_result", b) => out.push(tool_result(&at, b)?),
            (kind @ ("tool_use" | "thinking" | "redacted_thinking"), _) => {
                return Err(ApiError::invalid(
                    at.clone(),
                    format!("{at}: '{kind}' blocks are only allowed in assistant messages"),
                ));
            }
            (other, _) => return Err(unsupported(&at, other)),
        }
    }
    if !texts.is_empty() {
        out.push(json!({"role": "user", "content": texts.join("\n\n")}));
    }
    Ok(())
}

fn content_type_error(at: &str) -> ApiError {
    ApiError::invalid(
        format!("{at}.content"),
        format!("{at}.content: must be a string or an array of content blocks"),
    )
}

/// A `tool_result` block as a `tool` message.
fn tool_result(at: &str, block: &Map<String, Value>) -> Result<Value, ApiError> {
    check_block_keys(at, block, &["tool_use_id", "content", "is_error"])?;
    let id = string_field(at, block, "tool_use_id")?;
    let text = match block.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (k, part) in parts.iter().enumerate() {
                let at = format!("{at}.content.{k}");
                match block_of(&at, part)? {
                    ("text", b) => texts.push(text_of(&at, b)?),
                    (other, _) => return Err(unsupported(&at, other)),
                }
            }
            texts.join("\n\n")
        }
        Some(_) => return Err(content_type_error(at)),
    };
    let is_error = match block.get("is_error") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{at}.is_error"),
                format!("{at}.is_error: must be a boolean"),
            ));
        }
    };
    let content = if is_error {
        format!("Error: {text}")
    } else {
        text
    };
    Ok(json!({"role": "tool", "tool_call_id": id, "content": content}))
}

/// An assistant message: text, tool calls and reasoning.
fn assistant_message(at: &str, content: Value) -> Result<Value, ApiError> {
    let blocks = match content {
        Value::String(text) => return Ok(json!({"role": "assistant", "content": text})),
        Value::Array(blocks) => blocks,
        _ => return Err(content_type_error(at)),
    };
    let (mut texts, mut calls, mut reasoning) = (Vec::new(), Vec::new(), Vec::new());
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("{at}.content.{j}");
        match block_of(&at, block)? {
            ("text", b) => texts.push(text_of(&at, b)?),
            ("tool_use", b) => {
                check_block_keys(&at, b, &["id", "name", "input"])?;
                let id = string_field(&at, b, "id")?;
                let name = string_field(&at, b, "name")?;
                let input = match b.get("input") {
                    Some(input @ Value::Object(_)) => input.clone(),
                    _ => {
                        return Err(ApiError::invalid(
                            format!("{at}.input"),
                            format!("{at}.input: Field required (an object)"),
                        ));
                    }
                };
                calls.push(json!({"id": id, "type": "function",
                                  "function": {"name": name, "arguments": input}}));
            }
            ("thinking", b) => {
                check_block_keys(&at, b, &["thinking", "signature"])?;
                reasoning.push(string_field(&at, b, "thinking")?);
            }
            ("redacted_thinking", b) => check_block_keys(&at, b, &["data"])?,
            ("tool_result", _) => {
                return Err(ApiError::invalid(
                    at.clone(),
                    format!("{at}: 'tool_result' blocks are only allowed in user messages"),
                ));
            }
            (other, _) => return Err(unsupported(&at, other)),
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), Value::String("assistant".into()));
    let content = if texts.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        Value::String(texts.join("\n\n"))
    };
    message.insert("content".into(), content);
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    if !reasoning.is_empty() {
        message.insert(
            "reasoning_content".into(),
            Value::String(reasoning.join("\n\n")),
        );
    }
    Ok(Value::Object(message))
}
