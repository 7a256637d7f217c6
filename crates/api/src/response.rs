//! Response bodies: chat completions, text completions and the model list.
//!
//! Follows the OpenAI API reference ("The chat completion object", "The
//! completion object", "The model object") key for key: keys OpenAI always
//! writes are always written, as `null` when empty (`logprobs`,
//! `system_fingerprint`, `message.content`); keys it writes only when present
//! (`tool_calls`) are skipped otherwise. The `object` of each body is fixed
//! by its constructor, so a response cannot carry the wrong one.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

/// The fields every response and chunk of one request shares. Fixed by the
/// caller (ids and clocks are the server's), which keeps tests deterministic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseMeta {
    /// `chatcmpl-…` or `cmpl-…`; see [`response_id`].
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The model name as the client gave it.
    pub model: String,
    pub system_fingerprint: Option<String>,
}

/// An id in OpenAI's form: `chatcmpl-` (chat) or `cmpl-` (completions)
/// followed by 32 hex digits of `unique`.
pub fn response_id(endpoint: crate::Endpoint, unique: u128) -> String {
    match endpoint {
        crate::Endpoint::Chat => format!("chatcmpl-{unique:032x}"),
        crate::Endpoint::Completion => format!("cmpl-{unique:032x}"),
        crate::Endpoint::Responses => format!("resp_{unique:032x}"),
    }
}

/// Why a choice stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence token or a stop sequence.
    Stop,
    /// `max_tokens` or the end of the context.
    Length,
    /// The model called tools.
    ToolCalls,
    ContentFilter,
}

/// Token counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    /// Written only when the worker reported prompt-cache hits, as OpenAI
    /// writes `prompt_tokens_details` only where it has them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    /// Written only when speculative decoding verified draft tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

/// The parts of the completion count (OpenAI's
/// `usage.completion_tokens_details`): the draft tokens of speculative
/// decoding, in the fields OpenAI reports a prediction's tokens in, since
/// they mean the same (proposed tokens the model accepted or rejected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CompletionTokensDetails {
    /// Draft tokens the model accepted (tokens gained by speculation).
    pub accepted_prediction_tokens: u32,
    /// Draft tokens the model rejected (verified in vain).
    pub rejected_prediction_tokens: u32,
}

/// The parts of the prompt count (OpenAI's `usage.prompt_tokens_details`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens whose keys and values came from the prompt cache.
    pub cached_tokens: u32,
}

impl Usage {
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            prompt_tokens_details: None,
            completion_tokens_details: None,
        }
    }

    /// The same counts with `drafted` draft tokens verified, `accepted` of
    /// them accepted (0 drafted: no details written).
    pub fn with_draft_tokens(mut self, drafted: u32, accepted: u32) -> Self {
        self.completion_tokens_details = (drafted > 0).then_some(CompletionTokensDetails {
            accepted_prediction_tokens: accepted,
            rejected_prediction_tokens: drafted.saturating_sub(accepted),
        });
        self
    }

    /// The same counts with `cached` prompt tokens from the prompt cache
    /// (0: none reported, no details written).
    pub fn with_cached_tokens(mut self, cached: u32) -> Self {
        self.prompt_tokens_details = (cached > 0).then_some(PromptTokensDetails {
            cached_tokens: cached,
        });
        self
    }
}

/// A tool call the model made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    pub function: FunctionCall,
}

impl ToolCall {
    /// A `"type": "function"` call; `arguments` is JSON text.
    /// Ids the server makes are `call_` and 24 random letters and digits
    /// ([`tool_call_id`]).
    pub fn function(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        ToolCall {
            id: id.into(),
            kind: "function",
            function: FunctionCall {
                name: name.into(),
                arguments: arguments.into(),
            },
        }
    }
}

/// A tool call id as OpenAI writes them: `call_` and 24 letters and digits
/// drawn from `unique` (each character from a fresh splitmix64 step, so all
/// 24 vary).
pub fn tool_call_id(unique: u128) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut state = (unique as u64) ^ ((unique >> 64) as u64).rotate_left(32);
    let mut id = String::from("call_");
    for _ in 0..24 {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        id.push(ALPHABET[(z % ALPHABET.len() as u64) as usize] as char);
    }
    id
}

/// The function of a [`ToolCall`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FunctionCall {
    pub name: String,
    /// The arguments as JSON text, as OpenAI sends them.
    pub arguments: String,
}

/// One alternative at a token position (chat logprobs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    /// The token's UTF-8 bytes; `null` when it has no text of its own.
    pub bytes: Option<Vec<u8>>,
}

/// The sampled token at one position, with its alternatives (chat logprobs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Option<Vec<u8>>,
    pub top_logprobs: Vec<TopLogprob>,
}

/// A chat choice's `logprobs`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatLogprobs {
    pub content: Vec<TokenLogprob>,
}

/// The assistant's message in a chat choice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssistantMessage {
    role: &'static str,
    pub content: Option<String>,
    /// The model's reasoning, apart from the answer (the extension vLLM
    /// and DeepSeek's API use); written only when there was some.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

impl AssistantMessage {
    /// A message with text content and no tool calls.
    pub fn text(content: impl Into<String>) -> Self {
        AssistantMessage {
            role: "assistant",
            content: Some(content.into()),
            reasoning_content: None,
            tool_calls: Vec::new(),
        }
    }

    /// A message with tool calls; `content` is whatever text came with them.
    pub fn tool_calls(content: Option<String>, calls: Vec<ToolCall>) -> Self {
        AssistantMessage {
            role: "assistant",
            content,
            reasoning_content: None,
            tool_calls: calls,
        }
    }

    /// The same message with the model's reasoning (none when empty).
    pub fn with_reasoning(mut self, reasoning: String) -> Self {
        self.reasoning_content = (!reasoning.is_empty()).then_some(reasoning);
        self
    }
}

/// One choice of a chat completion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatChoice {
    pub index: u32,
    pub message: AssistantMessage,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: FinishReason,
}

/// The body of a non-streamed `POST /v1/chat/completions` response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatCompletion {
    pub id: String,
    object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
    pub system_fingerprint: Option<String>,
}

impl ChatCompletion {
    /// `choices` should be sorted by index.
    pub fn new(meta: ResponseMeta, choices: Vec<ChatChoice>, usage: Usage) -> Self {
        ChatCompletion {
            id: meta.id,
            object: "chat.completion",
            created: meta.created,
            model: meta.model,
            choices,
            usage,
            system_fingerprint: meta.system_fingerprint,
        }
    }
}

/// The top alternatives at one position of a text completion:
/// a `{token: logprob}` object in the given order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TopLogprobMap(pub Vec<(String, f32)>);

impl Serialize for TopLogprobMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (token, logprob) in &self.0 {
            map.serialize_entry(token, logprob)?;
        }
        map.end()
    }
}

/// A text completion choice's `logprobs`: parallel arrays, one entry per
/// token. `token_logprobs` and `top_logprobs` are `null` where the model
/// gave no distribution (the first echoed prompt token).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<Option<f32>>,
    pub top_logprobs: Vec<Option<TopLogprobMap>>,
    /// Character offset of each token in the choice's text.
    pub text_offset: Vec<u32>,
}

/// One choice of a text completion, or of one of its stream chunks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompletionChoice {
    pub text: String,
    pub index: u32,
    pub logprobs: Option<CompletionLogprobs>,
    /// Always set in a complete response; `null` in chunks until the last.
    pub finish_reason: Option<FinishReason>,
}

/// The body of a non-streamed `POST /v1/completions` response, and (with
/// `usage` absent or `null`) of each of its stream chunks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Completion {
    pub id: String,
    object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    #[serde(skip_serializing_if = "UsageField::is_absent")]
    pub usage: UsageField,
    pub system_fingerprint: Option<String>,
}

impl Completion {
    /// A complete response; `choices` should be sorted by index.
    pub fn new(meta: ResponseMeta, choices: Vec<CompletionChoice>, usage: Usage) -> Self {
        Self::with_usage(meta, choices, UsageField::Usage(usage))
    }

    pub(crate) fn with_usage(
        meta: ResponseMeta,
        choices: Vec<CompletionChoice>,
        usage: UsageField,
    ) -> Self {
        Completion {
            id: meta.id,
            object: "text_completion",
            created: meta.created,
            model: meta.model,
            choices,
            usage,
            system_fingerprint: meta.system_fingerprint,
        }
    }
}

/// The `usage` key of a body: absent, `null` (stream chunks with
/// `include_usage`), or the counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageField {
    Absent,
    Null,
    Usage(Usage),
}

impl UsageField {
    fn is_absent(&self) -> bool {
        matches!(self, UsageField::Absent)
    }
}

impl Serialize for UsageField {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            UsageField::Absent | UsageField::Null => serializer.serialize_none(),
            UsageField::Usage(usage) => usage.serialize(serializer),
        }
    }
}

/// One entry of `GET /v1/models`, with mlxd's extension keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Model {
    pub id: String,
    object: &'static str,
    /// Unix seconds (the checkpoint's modification time).
    pub created: u64,
    pub owned_by: String,
    /// Whether a worker holds the model now (extension).
    pub loaded: bool,
    /// The checkpoint format, `mlx` or `gguf` (extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Where the checkpoint lives on disk (extension; admin listings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl Model {
    pub fn new(
        id: impl Into<String>,
        created: u64,
        owned_by: impl Into<String>,
        loaded: bool,
    ) -> Self {
        Model {
            id: id.into(),
            object: "model",
            created,
            owned_by: owned_by.into(),
            loaded,
            format: None,
            path: None,
        }
    }
}

/// The body of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelList {
    object: &'static str,
    pub data: Vec<Model>,
}

impl ModelList {
    pub fn new(data: Vec<Model>) -> Self {
        ModelList {
            object: "list",
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_call_ids_are_call_and_24_varied_letters_and_digits() {
        let a = tool_call_id(u128::MAX / 3);
        let b = tool_call_id(u128::MAX / 3 + 1);
        assert!(a.starts_with("call_") && a.len() == 29, "{a}");
        assert!(a[5..].bytes().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
        assert_ne!(&a[a.len() - 4..], &b[b.len() - 4..], "the tail varies too");
    }

    #[test]
    fn usage_writes_cached_tokens_only_when_reported() {
        let plain = serde_json::to_value(Usage::new(10, 5).with_cached_tokens(0)).unwrap();
        assert_eq!(
            plain,
            serde_json::json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15})
        );
        let cached = serde_json::to_value(Usage::new(10, 5).with_cached_tokens(8)).unwrap();
        assert_eq!(cached["prompt_tokens_details"]["cached_tokens"], 8);
    }

    #[test]
    fn usage_writes_draft_tokens_only_when_drafts_were_verified() {
        let plain = serde_json::to_value(Usage::new(10, 5).with_draft_tokens(0, 0)).unwrap();
        assert!(plain.get("completion_tokens_details").is_none());
        let drafted = serde_json::to_value(Usage::new(10, 5).with_draft_tokens(7, 3)).unwrap();
        assert_eq!(
            drafted["completion_tokens_details"],
            serde_json::json!({"accepted_prediction_tokens": 3, "rejected_prediction_tokens": 4})
        );
    }
}
