//! Streaming: chunk types, per-request builders that emit them in OpenAI's
//! order, and the server-sent-events framing.
//!
//! Follows the OpenAI API reference ("The chat completion chunk object",
//! "Streaming"): each choice of a chat stream opens with a delta carrying
//! `role: "assistant"` and empty content, continues with `content` deltas
//! (and `reasoning_content` deltas, the extension vLLM and DeepSeek's API
//! use), and closes with an empty delta carrying `finish_reason`. A tool
//! call streams as OpenAI streams it: a delta with its `index`, `id`, `type`
//! and `function.name` (arguments empty), then deltas with its `index` and
//! argument text, which a client concatenates. With
//! `stream_options.include_usage`, every chunk has `"usage": null` and one
//! last chunk has `choices: []` and the usage. Text completion streams have
//! no role chunk; a choice's last chunk has empty text and the reason. The
//! stream ends with `data: [DONE]`.
//!
//! [`ChatStream`] and [`CompletionStream`] hold each choice's state, so the
//! server only reports events ("choice 1 produced text", "choice 1
//! finished") and cannot emit a sequence a client would reject. Events for a
//! choice that has finished, or an index out of range, produce nothing.

use serde::Serialize;

use crate::error::ApiError;
use crate::response::{
    ChatLogprobs, Completion, CompletionChoice, CompletionLogprobs, FinishReason, ResponseMeta,
    ToolCall, Usage, UsageField,
};

/// The stream's final event.
pub const SSE_DONE: &str = "data: [DONE]\n\n";

/// `data: <json>\n\n`. A value that fails to serialize (none of this
/// crate's types can) becomes the stream's error event.
pub fn sse_data(json: &impl Serialize) -> String {
    match serde_json::to_string(json) {
        Ok(text) => format!("data: {text}\n\n"),
        Err(e) => ApiError::Internal {
            message: format!("could not serialize a stream chunk: {e}"),
        }
        .sse_event(),
    }
}

/// The index of sample `sample` of prompt `prompt` when each prompt has `n`
/// samples: choices are ordered by prompt, then sample.
pub fn choice_index(prompt: u32, sample: u32, n: u32) -> u32 {
    prompt * n + sample
}

/// One `chat.completion.chunk`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    object: &'static str,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: Option<String>,
    pub choices: Vec<ChunkChoice>,
    #[serde(skip_serializing_if = "is_absent")]
    pub usage: UsageField,
}

fn is_absent(usage: &UsageField) -> bool {
    matches!(usage, UsageField::Absent)
}

/// One choice of a chat chunk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: ChatDelta,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<FinishReason>,
}

/// What a chat chunk adds to a choice's message.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ChatDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallDelta>,
}

/// A piece of a tool call in a delta, at its position in the message's
/// `tool_calls`: the first carries the id, type and name, later ones
/// argument text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolCallDelta {
    pub index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: FunctionDelta,
}

/// The function part of a [`ToolCallDelta`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FunctionDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub arguments: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChoiceState {
    NotStarted,
    Open { tool_calls: u32 },
    Finished,
}

/// The chunks of one streamed chat completion.
#[derive(Debug, Clone)]
pub struct ChatStream {
    meta: ResponseMeta,
    include_usage: bool,
    choices: Vec<ChoiceState>,
    usage_sent: bool,
}

impl ChatStream {
    /// A stream of `choices` choices (the request's `n`).
    pub fn new(meta: ResponseMeta, choices: u32, include_usage: bool) -> Self {
        ChatStream {
            meta,
            include_usage,
            choices: vec![ChoiceState::NotStarted; choices as usize],
            usage_sent: false,
        }
    }

    /// The role chunk of every choice not yet started; sending these at once
    /// tells the client the request was accepted.
    pub fn start(&mut self) -> Vec<ChatCompletionChunk> {
        (0..self.choices.len() as u32)
            .filter_map(|i| self.open(i))
            .collect()
    }

    /// Text generated for choice `index`, with its tokens' logprobs when
    /// they were asked for. Empty text without logprobs produces nothing.
    pub fn content(
        &mut self,
        index: u32,
        text: &str,
        logprobs: Option<ChatLogprobs>,
    ) -> Vec<ChatCompletionChunk> {
        if !self.is_live(index) || (text.is_empty() && logprobs.is_none()) {
            return Vec::new();
        }
        let mut out: Vec<_> = self.open(index).into_iter().collect();
        let delta = ChatDelta {
            content: Some(text.to_owned()),
            ..ChatDelta::default()
        };
        out.push(self.chunk(index, delta, logprobs, None));
        out
    }

    /// Reasoning text generated for choice `index`. Empty text produces
    /// nothing.
    pub fn reasoning(&mut self, index: u32, text: &str) -> Vec<ChatCompletionChunk> {
        if !self.is_live(index) || text.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<_> = self.open(index).into_iter().collect();
        let delta = ChatDelta {
            reasoning_content: Some(text.to_owned()),
            ..ChatDelta::default()
        };
        out.push(self.chunk(index, delta, None, None));
        out
    }

    /// Tool calls parsed from choice `index`'s output, numbered after the
    /// ones it already sent: per call, a chunk with its id and name, then
    /// one with its arguments.
    pub fn tool_calls(&mut self, index: u32, calls: Vec<ToolCall>) -> Vec<ChatCompletionChunk> {
        if !self.is_live(index) || calls.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<_> = self.open(index).into_iter().collect();
        let Some(ChoiceState::Open { tool_calls }) = self.choices.get_mut(index as usize) else {
            return out;
        };
        let first = *tool_calls;
        *tool_calls += calls.len() as u32;
        for (call, position) in calls.into_iter().zip(first..) {
            let head = ToolCallDelta {
                index: position,
                id: Some(call.id),
                kind: Some("function"),
                function: FunctionDelta {
                    name: Some(call.function.name),
                    arguments: String::new(),
                },
            };
            let arguments = ToolCallDelta {
                index: position,
                id: None,
                kind: None,
                function: FunctionDelta {
                    name: None,
                    arguments: call.function.arguments,
                },
            };
            for part in [head, arguments] {
                let delta = ChatDelta {
                    tool_calls: vec![part],
                    ..ChatDelta::default()
                };
                out.push(self.chunk(index, delta, None, None));
            }
        }
        out
    }

    /// Choice `index` is done: its last chunk, an empty delta with the
    /// reason (preceded by its role chunk if it produced nothing).
    pub fn finish(&mut self, index: u32, reason: FinishReason) -> Vec<ChatCompletionChunk> {
        if !self.is_live(index) {
            return Vec::new();
        }
        let mut out: Vec<_> = self.open(index).into_iter().collect();
        out.push(self.chunk(index, ChatDelta::default(), None, Some(reason)));
        self.choices[index as usize] = ChoiceState::Finished;
        out
    }

    /// Whether every choice has finished.
    pub fn is_finished(&self) -> bool {
        self.choices.iter().all(|c| *c == ChoiceState::Finished)
    }

    /// The usage chunk (`choices: []`), once, when the request asked for it;
    /// send it after every choice finished and before [`SSE_DONE`].
    pub fn usage(&mut self, usage: Usage) -> Option<ChatCompletionChunk> {
        if !self.include_usage || self.usage_sent {
            return None;
        }
        self.usage_sent = true;
        Some(ChatCompletionChunk {
            id: self.meta.id.clone(),
            object: "chat.completion.chunk",
            created: self.meta.created,
            model: self.meta.model.clone(),
            system_fingerprint: self.meta.system_fingerprint.clone(),
            choices: Vec::new(),
            usage: UsageField::Usage(usage),
        })
    }

    fn is_live(&self, index: u32) -> bool {
        matches!(
            self.choices.get(index as usize),
            Some(ChoiceState::NotStarted | ChoiceState::Open { .. })
        )
    }

    /// The role chunk of choice `index` if it has not started.
    fn open(&mut self, index: u32) -> Option<ChatCompletionChunk> {
        let state = self.choices.get_mut(index as usize)?;
        if *state != ChoiceState::NotStarted {
            return None;
        }
        *state = ChoiceState::Open { tool_calls: 0 };
        let delta = ChatDelta {
            role: Some("assistant"),
            content: Some(String::new()),
            ..ChatDelta::default()
        };
        Some(self.chunk(index, delta, None, None))
    }

    fn chunk(
        &self,
        index: u32,
        delta: ChatDelta,
        logprobs: Option<ChatLogprobs>,
        finish_reason: Option<FinishReason>,
    ) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.meta.id.clone(),
            object: "chat.completion.chunk",
            created: self.meta.created,
            model: self.meta.model.clone(),
            system_fingerprint: self.meta.system_fingerprint.clone(),
            choices: vec![ChunkChoice {
                index,
                delta,
                logprobs,
                finish_reason,
            }],
            usage: if self.include_usage {
                UsageField::Null
            } else {
                UsageField::Absent
            },
        }
    }
}

/// The chunks of one streamed text completion (object `text_completion`).
#[derive(Debug, Clone)]
pub struct CompletionStream {
    meta: ResponseMeta,
    include_usage: bool,
    finished: Vec<bool>,
    usage_sent: bool,
}

impl CompletionStream {
    /// A stream of `choices` choices (prompts × `n`).
    pub fn new(meta: ResponseMeta, choices: u32, include_usage: bool) -> Self {
        CompletionStream {
            meta,
            include_usage,
            finished: vec![false; choices as usize],
            usage_sent: false,
        }
    }

    /// Text generated (or echoed) for choice `index`. Empty text without
    /// logprobs produces nothing.
    pub fn text(
        &mut self,
        index: u32,
        text: &str,
        logprobs: Option<CompletionLogprobs>,
    ) -> Option<Completion> {
        if !self.is_live(index) || (text.is_empty() && logprobs.is_none()) {
            return None;
        }
        Some(self.chunk(index, text, logprobs, None))
    }

    /// Choice `index` is done: a chunk with empty text and the reason.
    pub fn finish(&mut self, index: u32, reason: FinishReason) -> Option<Completion> {
        if !self.is_live(index) {
            return None;
        }
        self.finished[index as usize] = true;
        Some(self.chunk(index, "", None, Some(reason)))
    }

    /// Whether every choice has finished.
    pub fn is_finished(&self) -> bool {
        self.finished.iter().all(|f| *f)
    }

    /// The usage chunk (`choices: []`), once, when the request asked for it.
    pub fn usage(&mut self, usage: Usage) -> Option<Completion> {
        if !self.include_usage || self.usage_sent {
            return None;
        }
        self.usage_sent = true;
        Some(Completion::with_usage(
            self.meta.clone(),
            Vec::new(),
            UsageField::Usage(usage),
        ))
    }

    fn is_live(&self, index: u32) -> bool {
        self.finished.get(index as usize) == Some(&false)
    }

    fn chunk(
        &self,
        index: u32,
        text: &str,
        logprobs: Option<CompletionLogprobs>,
        finish_reason: Option<FinishReason>,
    ) -> Completion {
        let choice = CompletionChoice {
            text: text.to_owned(),
            index,
            logprobs,
            finish_reason,
        };
        let usage = if self.include_usage {
            UsageField::Null
        } else {
            UsageField::Absent
        };
        Completion::with_usage(self.meta.clone(), vec![choice], usage)
    }
}
