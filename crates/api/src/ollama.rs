//! Ollama's native generation API (`POST /api/chat`, `POST /api/generate`):
//! the bodies as sent, and their translation into the same validated
//! [`GenerationRequest`] the OpenAI routes produce, so that one validation
//! path checks both. Follows Ollama's API reference (`docs/api.md`) and the
//! `ollama` Python library's request types.
//!
//! The translation:
//! - `messages[].images` and `images` are 400s (no model here reads images);
//!   an assistant's `tool_calls` (arguments as an object) and `thinking`
//!   reach the template as OpenAI's `tool_calls` and `reasoning_content`; a
//!   `tool` message answers the earliest unanswered call of its `tool_name`.
//! - `format`: `"json"` is any JSON object, a JSON schema is that schema
//!   (the grammar the OpenAI routes build), `""` is free text.
//! - `think`: `true`/`false` is the template's `enable_thinking`;
//!   `"low"`/`"medium"`/`"high"` is `reasoning_effort` (and thinking on).
//! - `options`: `temperature`, `top_p`, `top_k`, `min_p`, `seed`, `stop`,
//!   `presence_penalty`, `frequency_penalty` as the OpenAI parameters of the
//!   same names; `repeat_penalty` is `repetition_penalty` over the last
//!   `repeat_last_n` tokens (0: off, -1: the whole context); `num_predict` is
//!   `max_tokens` (-1 and -2: until the context is full). The resource hints
//!   `num_ctx`, `num_batch`, `num_gpu`, `main_gpu`, `num_thread`, `numa`,
//!   `low_vram`, `f16_kv`, `use_mmap`, `use_mlock` and `num_keep` have no
//!   effect here (the worker sizes itself; the context is the model's, a
//!   prompt that does not fit is a 400 and never shifted), so they are
//!   accepted; samplers mlxd does not have (`mirostat`, `typical_p`,
//!   `tfs_z`, `penalize_newline`) are accepted only at their neutral value;
//!   any other option is a 400 naming it.
//! - `logprobs` with `top_logprobs` are chat's `logprobs: true` and
//!   `top_logprobs` (0-20), or for a raw prompt a completion's `logprobs`
//!   (0-5 alternatives).
//! - `stream` defaults to true, as Ollama's does.
//!
//! An error leaves as Ollama's `{"error": "message"}` with the status of the
//! one table in [`crate::error`] ([`error_body`]).

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::keep_alive::KeepAlive;
use crate::request::Endpoint;
use crate::validate::{GenerationRequest, parse_chat_for, parse_completion_for};

/// The body of `POST /api/chat`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Option<Vec<Message>>,
    pub tools: Option<Vec<Value>>,
    pub format: Option<Value>,
    pub options: Option<Map<String, Value>>,
    pub stream: Option<bool>,
    pub keep_alive: Option<KeepAlive>,
    pub think: Option<Value>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
}

/// The body of `POST /api/generate`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GenerateRequest {
    pub model: Option<String>,
    pub prompt: Option<String>,
    pub suffix: Option<String>,
    pub system: Option<String>,
    pub template: Option<String>,
    pub context: Option<Vec<i64>>,
    pub raw: Option<bool>,
    pub images: Option<Vec<Value>>,
    pub format: Option<Value>,
    pub options: Option<Map<String, Value>>,
    pub stream: Option<bool>,
    pub keep_alive: Option<KeepAlive>,
    pub think: Option<Value>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
}

/// One message of `/api/chat`.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub thinking: Option<String>,
    #[serde(default)]
    pub images: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_calls: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_name: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A validated Ollama request: the generation request, and what only the
/// Ollama routes use.
#[derive(Debug, Clone, PartialEq)]
pub struct OllamaRequest {
    pub generation: GenerationRequest,
    /// `/api/generate` with an empty (or absent) prompt, `/api/chat` with
    /// no messages: load the model (or unload it, with `keep_alive` 0) and
    /// generate nothing.
    pub load_only: bool,
}

/// Ollama's error body: `{"error": "message"}`.
pub fn error_body(error: &ApiError) -> Value {
    json!({ "error": error.to_string() })
}

/// Validates the body of `POST /api/chat`.
pub fn parse_chat(body: &[u8], default_model: Option<&str>) -> Result<OllamaRequest, ApiError> {
    let req: ChatRequest = decode(body)?;
    // No messages: load the model (or unload it), as Ollama does.
    let messages = req.messages.unwrap_or_default();
    let load_only = messages.is_empty();
    let messages = if load_only {
        // Validation wants a conversation; a load request never renders it.
        vec![json!({"role": "user", "content": ""})]
    } else {
        chat_messages(messages)?
    };
    let mut openai = Map::new();
    set(&mut openai, "model", req.model.map(Value::String));
    openai.insert("messages".into(), Value::Array(messages));
    set(&mut openai, "tools", req.tools.map(Value::Array));
    logprobs(&mut openai, Endpoint::Chat, req.logprobs, req.top_logprobs)?;
    let generation = translate(openai, req.format, req.options, req.think, Endpoint::Chat)
        .and_then(|o| finish(o, Endpoint::Chat, default_model, req.stream, req.keep_alive))?;
    Ok(OllamaRequest {
        generation,
        load_only,
    })
}

/// Validates the body of `POST /api/generate`: a templated prompt is a chat
/// of the `system` and `prompt` messages; a `raw` one is a completion.
pub fn parse_generate(body: &[u8], default_model: Option<&str>) -> Result<OllamaRequest, ApiError> {
    let req: GenerateRequest = decode(body)?;
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid(
            "suffix",
            "suffix (fill-in-the-middle) is not supported",
        ));
    }
    if req.template.as_deref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::invalid(
            "template",
            "template is not supported: mlxd renders the model's own chat template (send \
             raw: true with a prompt you formatted yourself)",
        ));
    }
    if req.context.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(ApiError::invalid(
            "context",
            "context (deprecated) is not supported: send the conversation to /api/chat",
        ));
    }
    if req.images.as_ref().is_some_and(|i| !i.is_empty()) {
        return Err(ApiError::invalid(
            "images",
            "images are not supported: no model served here reads images",
        ));
    }
    let raw = req.raw.unwrap_or(false);
    let prompt = req.prompt.unwrap_or_default();
    let load_only = prompt.is_empty();
    let mut openai = Map::new();
    set(&mut openai, "model", req.model.map(Value::String));
    let endpoint = if raw {
        if req.system.is_some() {
            return Err(ApiError::invalid(
                "system",
                "system is not applied to a raw prompt: put it in the prompt",
            ));
        }
        // Validation refuses an empty prompt; a load request never reaches
        // a tokenizer.
        let text = if load_only { " ".to_owned() } else { prompt };
        openai.insert("prompt".into(), Value::String(text));
        Endpoint::Completion
    } else {
        let mut messages = Vec::new();
        if let Some(system) = req.system.filter(|s| !s.is_empty()) {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.push(json!({"role": "user", "content": prompt}));
        openai.insert("messages".into(), Value::Array(messages));
        Endpoint::Chat
    };
    logprobs(&mut openai, endpoint, req.logprobs, req.top_logprobs)?;
    let generation = translate(openai, req.format, req.options, req.think, endpoint)
        .and_then(|o| finish(o, endpoint, default_model, req.stream, req.keep_alive))?;
    Ok(OllamaRequest {
        generation,
        load_only,
    })
}

/// Serde's reading of the body, with the parameter of a type error named.
fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(ApiError::InvalidRequest {
            message: "The request body must be a JSON object".to_owned(),
            param: None,
        });
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let param = crate::json_error::param_of(e.path());
        crate::json_error::to_api_error(e.inner(), param)
    })?;
    de.end()
        .map_err(|e| crate::json_error::to_api_error(&e, None))?;
    Ok(value)
}

/// `logprobs` and `top_logprobs` as the OpenAI endpoint names them: chat's
/// `logprobs: true` with `top_logprobs` (0-20), a completion's `logprobs: k`
/// (0-5 alternatives).
fn logprobs(
    openai: &mut Map<String, Value>,
    endpoint: Endpoint,
    logprobs: Option<bool>,
    top: Option<i64>,
) -> Result<(), ApiError> {
    match endpoint {
        // Ollama's routes are chat or completion; a Responses request is
        // chat-shaped.
        Endpoint::Chat | Endpoint::Responses => {
            set(openai, "logprobs", logprobs.map(Value::Bool));
            set(openai, "top_logprobs", top.map(Value::from));
        }
        Endpoint::Completion => match (logprobs, top) {
            (Some(true), top) => {
                openai.insert("logprobs".into(), Value::from(top.unwrap_or(0)));
            }
            (_, Some(k)) if k != 0 => {
                return Err(ApiError::invalid(
                    "top_logprobs",
                    "top_logprobs requires logprobs to be true",
                ));
            }
            _ => {}
        },
    }
    Ok(())
}

fn set(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        map.insert(key.to_owned(), v);
    }
}

/// Ollama's messages as OpenAI's.
fn chat_messages(messages: Vec<Message>) -> Result<Vec<Value>, ApiError> {
    // Calls not yet answered: (id, name).
    let mut open: Vec<(String, String)> = Vec::new();
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.into_iter().enumerate() {
        let at = format!("messages[{i}]");
        if m.images.as_ref().is_some_and(|i| !i.is_empty()) {
            return Err(ApiError::invalid(
                format!("{at}.images"),
                format!("{at}.images: images are not supported: no model served here reads images"),
            ));
        }
        let mut message = m.extra;
        message.insert("role".into(), Value::String(m.role.clone()));
        let content = match m.content {
            Some(text) => Value::String(text),
            None if m.role == "assistant" => Value::Null,
            None => Value::String(String::new()),
        };
        message.insert("content".into(), content);
        if let Some(thinking) = m.thinking.filter(|t| !t.is_empty()) {
            message.insert("reasoning_content".into(), Value::String(thinking));
        }
        if let Some(calls) = m.tool_calls {
            open.clear();
            let calls = calls
                .into_iter()
                .enumerate()
                .map(|(j, call)| openai_call(&format!("{at}.tool_calls[{j}]"), i, j, call))
                .collect::<Result<Vec<_>, _>>()?;
            for call in &calls {
                open.push((
                    call["id"].as_str().unwrap_or_default().to_owned(),
                    call["function"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                ));
            }
            message.insert("tool_calls".into(), Value::Array(calls));
        }
        if m.role == "tool" {
            let name = m.tool_name.clone().unwrap_or_default();
            let answered = open
                .iter()
                .position(|(_, n)| !name.is_empty() && *n == name)
                .or((!open.is_empty()).then_some(0));
            let id = match answered {
                Some(k) => open.remove(k).0,
                None => format!("call_{i}"),
            };
            message.insert("tool_call_id".into(), Value::String(id));
        }
        if let Some(name) = m.tool_name {
            message.insert("name".into(), Value::String(name.clone()));
            message.insert("tool_name".into(), Value::String(name));
        }
        out.push(Value::Object(message));
    }
    Ok(out)
}

/// An Ollama tool call (`{"function": {"name", "arguments": {...}}}`) as
/// OpenAI's, with an id when it has none.
fn openai_call(at: &str, message: usize, index: usize, call: Value) -> Result<Value, ApiError> {
    let function = call.get("function").and_then(Value::as_object);
    let Some(name) = function.and_then(|f| f.get("name")).and_then(Value::as_str) else {
        return Err(ApiError::invalid(
            format!("{at}.function.name"),
            format!("{at}.function.name is required"),
        ));
    };
    let arguments = match function.and_then(|f| f.get("arguments")) {
        None | Some(Value::Null) => json!({}),
        Some(args @ Value::Object(_)) => args.clone(),
        Some(Value::String(text)) => serde_json::from_str(text).map_err(|_| {
            ApiError::invalid(
                format!("{at}.function.arguments"),
                format!("{at}.function.arguments must be an object"),
            )
        })?,
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{at}.function.arguments"),
                format!("{at}.function.arguments must be an object"),
            ));
        }
    };
    let id = call
        .get("id")
        .and_then(Value::as_str)
        .map_or_else(|| format!("call_{message}_{index}"), str::to_owned);
    Ok(json!({
        "id": id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }))
}

/// `format`, `options` and `think` onto the OpenAI body.
fn translate(
    mut openai: Map<String, Value>,
    format: Option<Value>,
    options: Option<Map<String, Value>>,
    think: Option<Value>,
    endpoint: Endpoint,
) -> Result<Translated, ApiError> {
    match format {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() => {}
        Some(Value::String(s)) if s == "json" => {
            openai.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Some(schema @ (Value::Object(_) | Value::Bool(_))) => {
            openai.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": {"name": "format", "schema": schema}}),
            );
        }
        Some(other) => {
            return Err(ApiError::invalid(
                "format",
                format!("format must be \"json\" or a JSON schema object, got {other}"),
            ));
        }
    }
    if let Some(think) = think {
        if endpoint == Endpoint::Completion {
            return Err(ApiError::invalid(
                "think",
                "think needs the chat template, which a raw prompt skips",
            ));
        }
        let (enable, effort) = match think {
            Value::Null => (None, None),
            Value::Bool(b) => (Some(b), None),
            Value::String(s) if matches!(s.as_str(), "low" | "medium" | "high") => {
                (Some(true), Some(s))
            }
            other => {
                return Err(ApiError::invalid(
                    "think",
                    format!(
                        "think must be true, false, \"low\", \"medium\" or \"high\", got {other}"
                    ),
                ));
            }
        };
        if let Some(enable) = enable {
            openai.insert(
                "chat_template_kwargs".into(),
                json!({"enable_thinking": enable}),
            );
        }
        set(&mut openai, "reasoning_effort", effort.map(Value::String));
    }
    let mut repeat_last_n = None;
    let mut max_tokens = None;
    for (key, value) in options.unwrap_or_default() {
        match option(&key, value)? {
            Mapped::To(name, v) => {
                openai.insert(name.to_owned(), v);
            }
            Mapped::MaxTokens(n) => max_tokens = n,
            Mapped::RepeatLastN(n) => repeat_last_n = Some(n),
            Mapped::NoEffect => {}
        }
    }
    set(&mut openai, "max_tokens", max_tokens.map(Value::from));
    Ok(Translated {
        openai,
        max_tokens,
        repeat_last_n,
    })
}

/// The OpenAI body and what it cannot carry.
struct Translated {
    openai: Map<String, Value>,
    /// `num_predict`: `None` = until the context is full.
    max_tokens: Option<u32>,
    /// `repeat_last_n`: `Some(0)` = no repetition penalty.
    repeat_last_n: Option<u32>,
}

/// What one option becomes.
enum Mapped {
    To(&'static str, Value),
    MaxTokens(Option<u32>),
    RepeatLastN(u32),
    NoEffect,
}

/// Options that are OpenAI parameters of the same name.
const SAME_NAME: &[&str] = &[
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "stop",
];

/// Options that only size resources here, or that have nothing to act on.
const NO_EFFECT: &[&str] = &[
    "num_ctx",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "num_thread",
    "numa",
    "low_vram",
    "f16_kv",
    "use_mmap",
    "use_mlock",
    "num_keep",
];

fn option(key: &str, value: Value) -> Result<Mapped, ApiError> {
    let param = format!("options.{key}");
    let integer = |v: &Value| {
        v.as_i64()
            .ok_or_else(|| ApiError::invalid(&param, format!("{param} must be an integer")))
    };
    if value.is_null() {
        return Ok(Mapped::NoEffect);
    }
    if let Some(name) = SAME_NAME.iter().find(|n| **n == key) {
        return Ok(Mapped::To(name, value));
    }
    match key {
        "repeat_penalty" => Ok(Mapped::To("repetition_penalty", value)),
        "num_predict" => match integer(&value)? {
            -2 | -1 => Ok(Mapped::MaxTokens(None)),
            n if n >= 1 => Ok(Mapped::MaxTokens(Some(
                u32::try_from(n).unwrap_or(u32::MAX),
            ))),
            n => Err(ApiError::invalid(
                &param,
                format!("{param} must be at least 1, or -1 (no limit), got {n}"),
            )),
        },
        "repeat_last_n" => match integer(&value)? {
            -1 => Ok(Mapped::RepeatLastN(u32::MAX)),
            n if n >= 0 => Ok(Mapped::RepeatLastN(u32::try_from(n).unwrap_or(u32::MAX))),
            n => Err(ApiError::invalid(
                &param,
                format!("{param} must be at least 0, or -1 (the whole context), got {n}"),
            )),
        },
        k if NO_EFFECT.contains(&k) => Ok(Mapped::NoEffect),
        "mirostat" | "typical_p" | "tfs_z" | "penalize_newline" | "logits_all" | "vocab_only"
        | "embedding_only" => {
            let neutral = match key {
                "mirostat" => value.as_f64() == Some(0.0),
                "typical_p" | "tfs_z" => value.as_f64() == Some(1.0),
                _ => value.as_bool() == Some(false),
            };
            if neutral {
                Ok(Mapped::NoEffect)
            } else {
                Err(ApiError::invalid(
                    &param,
                    format!("{param} is not supported: mlxd has no such sampler"),
                ))
            }
        }
        "mirostat_tau" | "mirostat_eta" => Ok(Mapped::NoEffect),
        _ => Err(ApiError::invalid(
            &param,
            format!("{param} is not a supported option"),
        )),
    }
}

/// Validates the translated body on the OpenAI path and sets what only
/// Ollama's routes have.
fn finish(
    t: Translated,
    endpoint: Endpoint,
    default_model: Option<&str>,
    stream: Option<bool>,
    keep_alive: Option<KeepAlive>,
) -> Result<GenerationRequest, ApiError> {
    let body = serde_json::to_vec(&Value::Object(t.openai)).map_err(|e| ApiError::Internal {
        message: format!("encoding the request: {e}"),
    })?;
    let parse = match endpoint {
        Endpoint::Chat | Endpoint::Responses => parse_chat_for,
        Endpoint::Completion => parse_completion_for,
    };
    let mut req = parse(&body, default_model).map_err(ollama_names)?;
    // A completion's default of 16 tokens is OpenAI's; Ollama's is none.
    req.max_tokens = t.max_tokens;
    req.omitted.max_tokens = t.max_tokens.is_none();
    match t.repeat_last_n {
        Some(0) => req.sampling.repetition_penalty = 1.0,
        Some(n) => req.sampling.repetition_context_size = Some(n),
        None => {}
    }
    req.stream = stream.unwrap_or(true);
    req.keep_alive = keep_alive;
    Ok(req)
}

/// An OpenAI parameter's name in an error, as the Ollama request names it.
fn ollama_names(e: ApiError) -> ApiError {
    let ApiError::InvalidRequest {
        message,
        param: Some(param),
    } = e
    else {
        return e;
    };
    let renamed = match param.as_str() {
        "temperature" | "top_p" | "top_k" | "min_p" | "seed" | "presence_penalty"
        | "frequency_penalty" => Some(format!("options.{param}")),
        "repetition_penalty" => Some("options.repeat_penalty".to_owned()),
        p if p.starts_with("stop") => Some(format!("options.{p}")),
        p if p.starts_with("response_format") => Some("format".to_owned()),
        "reasoning_effort" | "chat_template_kwargs" => Some("think".to_owned()),
        // A raw prompt's alternatives are a completion's `logprobs`.
        "logprobs" => Some("top_logprobs".to_owned()),
        _ => None,
    };
    match renamed {
        Some(name) => ApiError::InvalidRequest {
            message: format!("invalid {name}: {message}"),
            param: Some(name),
        },
        None => ApiError::InvalidRequest {
            message,
            param: Some(param),
        },
    }
}

#[cfg(test)]
#[path = "ollama_tests.rs"]
mod tests;
