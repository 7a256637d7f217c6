//! Validation: a request body becomes an engine-neutral [`GenerationRequest`].
//!
//! Follows the split of text-generation-inference's `router/src/validation.rs`
//! (a raw request becomes a validated type before it goes further) and the
//! ranges of the OpenAI API reference: `temperature` [0, 2], `top_p` (0, 1],
//! `presence_penalty` and `frequency_penalty` [-2, 2], `logit_bias` values
//! [-100, 100], `n` 1..=128, at most 4 `stop` strings, chat `top_logprobs`
//! 0..=20, completion `logprobs` 0..=5. Extensions, as mlx-lm and vLLM name
//! them: `top_k` (0 or -1 = off), `min_p` [0, 1], `repetition_penalty` (> 0),
//! `keep_alive`, `chat_template_kwargs`, `ignore_eos`. Tools are checked
//! in [`crate::tools`], `tool_choice` and `response_format` in
//! [`crate::structured`].
//!
//! Every error is a 400 naming its parameter. JSON type errors are read with
//! `serde_path_to_error`, so `{"messages": [{"role": "user", "content": 5}]}`
//! is reported against `messages[0].content`.
//!
//! Defaults that OpenAI documents are applied here, once: `temperature` 1,
//! `top_p` 1, `n` 1, and 16 `max_tokens` for `/v1/completions`; chat has no
//! default limit (`max_tokens: None` = until the context is full).

use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::keep_alive::KeepAlive;
use crate::messages::normalize_messages;
use crate::request::{ChatCompletionRequest, CompletionRequest, Endpoint, Prompt, Seed, Stop};
use crate::structured::{self, ResponseFormat, ToolChoice};
use crate::tools;

/// `max_tokens` of `/v1/completions` when the request gives none (OpenAI's).
pub const COMPLETION_DEFAULT_MAX_TOKENS: u32 = 16;
/// The largest `n`.
pub const MAX_N: u32 = 128;
/// The most `stop` sequences.
pub const MAX_STOP: usize = 4;
/// The largest chat `top_logprobs`.
pub const MAX_TOP_LOGPROBS: u32 = 20;
/// The largest completion `logprobs`.
pub const MAX_COMPLETION_LOGPROBS: u32 = 5;

/// One prompt, before templating and tokenization (done by the server).
#[derive(Debug, Clone, PartialEq)]
pub enum PromptInput {
    /// A conversation for the model's chat template.
    Chat {
        /// Normalized messages: `content` is a string (or `null` for an
        /// assistant message with only tool calls), `developer` is `system`.
        messages: Vec<serde_json::Value>,
        /// Tool definitions, as sent.
        tools: Option<Vec<serde_json::Value>>,
        /// `chat_template_kwargs` (`enable_thinking`, ...), with
        /// `reasoning_effort` added when the request sets it.
        template_kwargs: serde_json::Map<String, serde_json::Value>,
    },
    /// A text prompt for `/v1/completions`.
    Text(String),
    /// Token ids for `/v1/completions`.
    Tokens(Vec<u32>),
}

/// Sampling parameters; [`Default`] is OpenAI's: temperature 1, top-p 1,
/// everything else off.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// 0 = greedy.
    pub temperature: f32,
    /// 1 = off.
    pub top_p: f32,
    /// 0 = off.
    pub top_k: u32,
    /// 0 = off.
    pub min_p: f32,
    /// 1 = off.
    pub repetition_penalty: f32,
    /// 0 = off.
    pub presence_penalty: f32,
    /// 0 = off.
    pub frequency_penalty: f32,
    /// (token id, bias) sorted by token id, each id once.
    pub logit_bias: Vec<(u32, f32)>,
    pub seed: Option<u64>,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: None,
        }
    }
}

/// The parameters a request may leave to the model's configured defaults,
/// and whether it left each out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Omitted {
    pub temperature: bool,
    pub top_p: bool,
    pub top_k: bool,
    pub min_p: bool,
    pub repetition_penalty: bool,
    pub max_tokens: bool,
}

/// A model's own request defaults (the daemon's per-model configuration):
/// each one set replaces OpenAI's default for requests to that model that
/// leave the parameter out. Values are in the ranges validation accepts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelDefaults {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub max_tokens: Option<u32>,
}

/// A validated request, engine-neutral; the server maps it onto the engine
/// and the worker protocol.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRequest {
    pub endpoint: Endpoint,
    pub model: String,
    /// Chat: exactly one. Completions: one per prompt of a batch; choice
    /// `i * n + j` is sample `j` of prompt `i` (see [`crate::choice_index`]).
    pub prompts: Vec<PromptInput>,
    pub sampling: Sampling,
    /// `None` = until the context is full (the server clips every value to
    /// the context that remains after the prompt).
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    /// Samples per prompt.
    pub n: u32,
    /// `Some(k)` when log-probabilities were asked for, with `k` top
    /// alternatives per token (0 = only the sampled token's).
    pub logprobs: Option<u32>,
    /// Completions: prepend the prompt to the generated text.
    pub echo: bool,
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    pub user: Option<String>,
    pub keep_alive: Option<KeepAlive>,
    /// Generate exactly `max_tokens`, ignoring end-of-sequence tokens.
    pub ignore_eos: bool,
    /// `response_format`.
    pub response_format: ResponseFormat,
    /// `tool_choice`, checked against the tools (chat; `Auto` otherwise).
    /// With [`ToolChoice::None`] the tools are not offered to the template
    /// and the reply is not parsed for calls.
    pub tool_choice: ToolChoice,
    /// `parallel_tool_calls` (default true): false keeps only a reply's
    /// first call (and a forced call is one call).
    pub parallel_tool_calls: bool,
    /// What the request left out (and so holds OpenAI's default).
    pub omitted: Omitted,
}

impl GenerationRequest {
    /// Replaces OpenAI's defaults with `defaults` where the request left a
    /// parameter out; what it sent stays.
    pub fn apply_defaults(&mut self, defaults: &ModelDefaults) {
        fn fill<T: Copy>(omitted: bool, slot: &mut T, default: Option<T>) {
            if let (true, Some(v)) = (omitted, default) {
                *slot = v;
            }
        }
        let (o, s) = (self.omitted, &mut self.sampling);
        fill(o.temperature, &mut s.temperature, defaults.temperature);
        fill(o.top_p, &mut s.top_p, defaults.top_p);
        fill(o.top_k, &mut s.top_k, defaults.top_k);
        fill(o.min_p, &mut s.min_p, defaults.min_p);
        fill(
            o.repetition_penalty,
            &mut s.repetition_penalty,
            defaults.repetition_penalty,
        );
        if o.max_tokens && defaults.max_tokens.is_some() {
            self.max_tokens = defaults.max_tokens;
        }
    }

    /// How many choices the response has: prompts × `n`.
    pub fn choice_count(&self) -> usize {
        self.prompts.len() * self.n as usize
    }
}

/// Validates the body of `POST /v1/chat/completions`.
pub fn parse_chat(body: &[u8]) -> Result<GenerationRequest, ApiError> {
    parse_chat_for(body, None)
}

/// [`parse_chat`] for a server with a default model: a request that leaves
/// `model` out gets `default_model` (one that sends an empty name is still
/// refused).
pub fn parse_chat_for(
    body: &[u8],
    default_model: Option<&str>,
) -> Result<GenerationRequest, ApiError> {
    let req: ChatCompletionRequest = decode(body)?;
    let model = require_model(req.model, default_model)?;
    let messages = req
        .messages
        .ok_or_else(|| ApiError::invalid("messages", "Missing required parameter: 'messages'."))?;
    let messages = normalize_messages(messages)?;
    if let Some(tools) = &req.tools {
        tools::check_tools(tools)?;
    }
    let mut template_kwargs = req.chat_template_kwargs.unwrap_or_default();
    if let Some(effort) = tools::reasoning_effort(req.reasoning_effort)? {
        template_kwargs
            .entry("reasoning_effort")
            .or_insert(serde_json::Value::String(effort));
    }
    let tool_choice = structured::tool_choice(req.tool_choice.as_ref(), req.tools.as_deref())?;
    let response_format = structured::response_format(req.response_format)?;
    let common = Common {
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        min_p: req.min_p,
        repetition_penalty: req.repetition_penalty,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        logit_bias: req.logit_bias,
        seed: req.seed,
    };
    let max_tokens = match (req.max_completion_tokens, req.max_tokens) {
        (Some(v), other) => {
            other.map(|m| at_least("max_tokens", m, 1)).transpose()?;
            Some(at_least("max_completion_tokens", v, 1)?)
        }
        (None, Some(v)) => Some(at_least("max_tokens", v, 1)?),
        (None, None) => None,
    };
    let logprobs = match (req.logprobs, req.top_logprobs) {
        (Some(true), top) => Some(match top {
            Some(k) => in_range("top_logprobs", k, 0, MAX_TOP_LOGPROBS)?,
            None => 0,
        }),
        (_, Some(k)) if k != 0 => {
            return Err(ApiError::invalid(
                "top_logprobs",
                "top_logprobs requires logprobs to be true",
            ));
        }
        _ => None,
    };
    let stream = req.stream.unwrap_or(false);
    let omitted = Omitted {
        max_tokens: max_tokens.is_none(),
        ..common.omitted()
    };
    Ok(GenerationRequest {
        endpoint: Endpoint::Chat,
        model,
        prompts: vec![PromptInput::Chat {
            messages,
            tools: req.tools,
            template_kwargs,
        }],
        sampling: common.sampling()?,
        max_tokens,
        stop: stop_sequences(req.stop)?,
        n: n_param(req.n)?,
        logprobs,
        echo: false,
        stream,
        include_usage: include_usage(stream, req.stream_options.as_ref())?,
        user: req.user,
        keep_alive: req.keep_alive,
        ignore_eos: req.ignore_eos.unwrap_or(false),
        response_format,
        tool_choice,
        parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
        omitted,
    })
}

/// Validates the body of `POST /v1/completions`.
pub fn parse_completion(body: &[u8]) -> Result<GenerationRequest, ApiError> {
    parse_completion_for(body, None)
}

/// [`parse_completion`] for a server with a default model (see
/// [`parse_chat_for`]).
pub fn parse_completion_for(
    body: &[u8],
    default_model: Option<&str>,
) -> Result<GenerationRequest, ApiError> {
    let req: CompletionRequest = decode(body)?;
    let model = require_model(req.model, default_model)?;
    let prompt = req
        .prompt
        .ok_or_else(|| ApiError::invalid("prompt", "Missing required parameter: 'prompt'."))?;
    let prompts = prompt_inputs(prompt)?;
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid("suffix", "suffix is not supported"));
    }
    let n = n_param(req.n)?;
    if let Some(best_of) = req.best_of {
        if best_of != i64::from(n) {
            return Err(ApiError::invalid(
                "best_of",
                format!("best_of is not supported unless it equals n ({n}), got {best_of}"),
            ));
        }
    }
    let echo = req.echo.unwrap_or(false);
    let max_tokens = match req.max_tokens {
        Some(0) if echo => 0,
        Some(v) => at_least("max_tokens", v, 1)?,
        None => COMPLETION_DEFAULT_MAX_TOKENS,
    };
    let common = Common {
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        min_p: req.min_p,
        repetition_penalty: req.repetition_penalty,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        logit_bias: req.logit_bias,
        seed: req.seed,
    };
    let stream = req.stream.unwrap_or(false);
    let omitted = Omitted {
        max_tokens: req.max_tokens.is_none(),
        ..common.omitted()
    };
    Ok(GenerationRequest {
        endpoint: Endpoint::Completion,
        model,
        prompts,
        sampling: common.sampling()?,
        max_tokens: Some(max_tokens),
        stop: stop_sequences(req.stop)?,
        n,
        logprobs: req
            .logprobs
            .map(|k| in_range("logprobs", k, 0, MAX_COMPLETION_LOGPROBS))
            .transpose()?,
        echo,
        stream,
        include_usage: include_usage(stream, req.stream_options.as_ref())?,
        user: req.user,
        keep_alive: req.keep_alive,
        ignore_eos: req.ignore_eos.unwrap_or(false),
        response_format: structured::response_format(req.response_format)?,
        tool_choice: ToolChoice::Auto,
        parallel_tool_calls: true,
        omitted,
    })
}

/// Deserializes `body`, naming the parameter of a type error.
/// Serde reads a struct from an array too (by position); OpenAI's bodies are
/// objects only, so anything else that is JSON is refused first.
pub(crate) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
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

pub(crate) fn require_model(
    model: Option<String>,
    default: Option<&str>,
) -> Result<String, ApiError> {
    match (model, default) {
        (Some(m), _) if !m.trim().is_empty() => Ok(m),
        (Some(_), _) => Err(ApiError::invalid(
            "model",
            "model must be a non-empty string",
        )),
        (None, Some(default)) => Ok(default.to_owned()),
        (None, None) => Err(ApiError::invalid(
            "model",
            "you must provide a model parameter",
        )),
    }
}

/// The sampling parameters both endpoints share, as sent.
struct Common {
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
    min_p: Option<f64>,
    repetition_penalty: Option<f64>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    logit_bias: Option<std::collections::BTreeMap<String, f64>>,
    seed: Option<Seed>,
}

impl Common {
    /// The defaultable sampling parameters left out (`max_tokens` is the
    /// endpoint's to say).
    fn omitted(&self) -> Omitted {
        Omitted {
            temperature: self.temperature.is_none(),
            top_p: self.top_p.is_none(),
            // -1 is an explicit "off", as 0 is.
            top_k: self.top_k.is_none(),
            min_p: self.min_p.is_none(),
            repetition_penalty: self.repetition_penalty.is_none(),
            max_tokens: false,
        }
    }

    fn sampling(self) -> Result<Sampling, ApiError> {
        let d = Sampling::default();
        let top_k = match self.top_k {
            None | Some(-1) => 0,
            Some(k) => u32::try_from(k).map_err(|_| {
                ApiError::invalid(
                    "top_k",
                    format!("top_k must be a non-negative integer (0 or -1 = off), got {k}"),
                )
            })?,
        };
        let repetition_penalty = match self.repetition_penalty {
            // Beyond f32's range the penalty would become infinite.
            Some(v) if v <= 0.0 || v > f64::from(f32::MAX) => {
                return Err(ApiError::invalid(
                    "repetition_penalty",
                    format!(
                        "repetition_penalty must be greater than 0 and at most {}, got {v}",
                        f32::MAX
                    ),
                ));
            }
            Some(v) => v as f32,
            None => d.repetition_penalty,
        };
        let top_p = match self.top_p {
            Some(v) if v <= 0.0 || v > 1.0 => {
                return Err(ApiError::invalid(
                    "top_p",
                    format!("top_p must be greater than 0 and at most 1, got {v}"),
                ));
            }
            Some(v) => v as f32,
            None => d.top_p,
        };
        Ok(Sampling {
            temperature: float("temperature", self.temperature, 0.0, 2.0)?.unwrap_or(d.temperature),
            top_p,
            top_k,
            min_p: float("min_p", self.min_p, 0.0, 1.0)?.unwrap_or(d.min_p),
            repetition_penalty,
            presence_penalty: float("presence_penalty", self.presence_penalty, -2.0, 2.0)?
                .unwrap_or(d.presence_penalty),
            frequency_penalty: float("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?
                .unwrap_or(d.frequency_penalty),
            logit_bias: logit_bias(self.logit_bias.unwrap_or_default())?,
            seed: self.seed.map(|s| s.0),
        })
    }
}

/// Checks `value` against [lo, hi].
fn float(param: &str, value: Option<f64>, lo: f64, hi: f64) -> Result<Option<f32>, ApiError> {
    match value {
        Some(v) if !(lo..=hi).contains(&v) => Err(ApiError::invalid(
            param,
            format!("{param} must be between {lo} and {hi}, got {v}"),
        )),
        other => Ok(other.map(|v| v as f32)),
    }
}

fn at_least(param: &str, value: i64, lo: u32) -> Result<u32, ApiError> {
    match u32::try_from(value) {
        Ok(v) if v >= lo => Ok(v),
        _ => Err(ApiError::invalid(
            param,
            format!("{param} must be at least {lo}, got {value}"),
        )),
    }
}

fn in_range(param: &str, value: i64, lo: u32, hi: u32) -> Result<u32, ApiError> {
    match u32::try_from(value) {
        Ok(v) if (lo..=hi).contains(&v) => Ok(v),
        _ => Err(ApiError::invalid(
            param,
            format!("{param} must be between {lo} and {hi}, got {value}"),
        )),
    }
}

fn n_param(n: Option<i64>) -> Result<u32, ApiError> {
    n.map_or(Ok(1), |n| in_range("n", n, 1, MAX_N))
}

fn logit_bias(map: std::collections::BTreeMap<String, f64>) -> Result<Vec<(u32, f32)>, ApiError> {
    let mut out = Vec::with_capacity(map.len());
    for (key, bias) in map {
        let Ok(id) = key.trim().parse::<u32>() else {
            return Err(ApiError::invalid(
                "logit_bias",
                format!("logit_bias keys must be token ids (non-negative integers), got {key:?}"),
            ));
        };
        if !(-100.0..=100.0).contains(&bias) {
            return Err(ApiError::invalid(
                "logit_bias",
                format!(
                    "logit_bias values must be between -100 and 100, got {bias} for token {id}"
                ),
            ));
        }
        out.push((id, bias as f32));
    }
    out.sort_by_key(|&(id, _)| id);
    if let Some(pair) = out.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(ApiError::invalid(
            "logit_bias",
            format!("logit_bias names token {} more than once", pair[0].0),
        ));
    }
    Ok(out)
}

fn stop_sequences(stop: Option<Stop>) -> Result<Vec<String>, ApiError> {
    let all = match stop {
        None => return Ok(Vec::new()),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(all)) => all,
    };
    if all.len() > MAX_STOP {
        return Err(ApiError::invalid(
            "stop",
            format!(
                "stop must have at most {MAX_STOP} sequences, got {}",
                all.len()
            ),
        ));
    }
    if all.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            "stop",
            "stop sequences must be non-empty strings",
        ));
    }
    Ok(all)
}

fn include_usage(
    stream: bool,
    options: Option<&crate::request::StreamOptions>,
) -> Result<bool, ApiError> {
    match options {
        None => Ok(false),
        Some(_) if !stream => Err(ApiError::invalid(
            "stream_options",
            "stream_options is only allowed when stream is true",
        )),
        Some(o) => Ok(o.include_usage.unwrap_or(false)),
    }
}

fn prompt_inputs(prompt: Prompt) -> Result<Vec<PromptInput>, ApiError> {
    let prompts: Vec<PromptInput> = match prompt {
        Prompt::Text(s) => vec![PromptInput::Text(s)],
        Prompt::Texts(all) => all.into_iter().map(PromptInput::Text).collect(),
        Prompt::Tokens(ids) => vec![PromptInput::Tokens(ids)],
        Prompt::TokenBatches(all) => all.into_iter().map(PromptInput::Tokens).collect(),
    };
    if prompts.is_empty() {
        return Err(ApiError::invalid(
            "prompt",
            "prompt must not be an empty array",
        ));
    }
    for (i, p) in prompts.iter().enumerate() {
        let empty = match p {
            PromptInput::Text(s) => s.is_empty(),
            PromptInput::Tokens(ids) => ids.is_empty(),
            PromptInput::Chat { .. } => false,
        };
        if empty {
            let param = if prompts.len() == 1 {
                "prompt".to_owned()
            } else {
                format!("prompt[{i}]")
            };
            return Err(ApiError::invalid(
                param.clone(),
                format!("{param} must not be empty"),
            ));
        }
    }
    Ok(prompts)
}
