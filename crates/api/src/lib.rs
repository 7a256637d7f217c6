//! OpenAI-compatible HTTP API types for mlxd: request bodies, validation
//! into engine-neutral requests, response bodies, stream chunks and the
//! error body. Pure types and logic: no HTTP framework, no async runtime, no
//! MLX, so the server, the CLI's clients and the tests share one definition.
//!
//! Follows the OpenAI API reference for every wire shape, and
//! text-generation-inference's `router/src/validation.rs` for the split
//! between a raw request and a validated one.
//!
//! # Flow
//!
//! ```text
//! body bytes ──parse_chat / parse_completion──▶ GenerationRequest ──▶ (server: template,
//!    │                                                                  tokenize, queue, worker)
//!    └──▶ ApiError (400, param named)
//!
//! worker events ──ChatStream / CompletionStream──▶ chunks ──sse_data──▶ "data: {...}\n\n"
//!                 ChatCompletion / Completion::new ──▶ one JSON body
//! any failure ──ApiError::status / body / retry_after / sse_event──▶ OpenAI error
//! ```
//!
//! # Modules
//!
//! - [`request`]: the bodies as sent (`ChatCompletionRequest`,
//!   `CompletionRequest`); unknown keys ignored, `null` = absent.
//! - [`validate`]: ranges and defaults; [`parse_chat`] and
//!   [`parse_completion`] return a [`GenerationRequest`].
//! - [`keep_alive`]: the `keep_alive` extension (`"5m"`, `300`, `-1`, `0`).
//! - [`response`]: `ChatCompletion`, `Completion`, `ModelList`, usage,
//!   logprobs and tool calls.
//! - [`stream`]: chunk types, [`ChatStream`] and [`CompletionStream`], SSE
//!   framing.
//! - [`tools`]: tool definitions, `reasoning_effort`.
//! - [`responses`]: the Responses API: request, conversation items, the
//!   Response object and its stream events.
//! - [`embeddings`]: OpenAI's and Ollama's embedding requests and bodies.
//! - [`error`]: [`ApiError`] and its one status/type/code table.
//! - [`anthropic`]: Anthropic's Messages API onto the same request, reply
//!   and error types.
//! - [`ollama`]: Ollama's `/api/chat` and `/api/generate` bodies, onto the
//!   same validation.
//!
//! # Choices of this crate
//!
//! - Chat `max_completion_tokens` wins over `max_tokens`; both are checked.
//! - `/v1/completions` defaults to 16 `max_tokens` as OpenAI's does; chat has
//!   no default (until the context is full).
//! - `developer` messages reach the template as `system`.
//! - Image, audio, file and video content parts are 400s naming the part.
//! - A `stop` or `prompt` that is an empty string is a 400 (an empty prompt
//!   gives the model nothing to continue).
//! - `top_k: -1` means off, as vLLM reads it; `seed` may be negative.
//! - `stream_options` without `stream: true` is a 400, as OpenAI answers.
//! - `best_of` is accepted only when equal to `n`; a non-empty `suffix` is a
//!   400. Unknown keys are ignored.
//! - `response_format` and a forcing `tool_choice` are read and checked here
//!   ([`structured`]); the server turns them into a grammar the output
//!   follows. `tool_choice: "none"` hides the tools from the template.

pub mod anthropic;
pub mod embeddings;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
mod json_error;
pub mod keep_alive;
mod messages;
pub mod ollama;
pub mod request;
pub mod response;
pub mod responses;
pub mod stream;
pub mod structured;
pub mod tools;
pub mod validate;

pub use error::{ApiError, ErrorBody, ErrorObject};
pub use keep_alive::KeepAlive;
pub use request::{ChatCompletionRequest, CompletionRequest, Endpoint};
pub use response::{
    AssistantMessage, ChatChoice, ChatCompletion, ChatLogprobs, Completion, CompletionChoice,
    CompletionLogprobs, FinishReason, FunctionCall, Model, ModelList, ResponseMeta, TokenLogprob,
    ToolCall, TopLogprob, TopLogprobMap, Usage, UsageField, response_id, tool_call_id,
};
pub use stream::{
    ChatCompletionChunk, ChatDelta, ChatStream, ChunkChoice, CompletionStream, FunctionDelta,
    SSE_DONE, ToolCallDelta, choice_index, sse_data,
};
pub use structured::ToolChoice;
pub use validate::{
    GenerationRequest, ModelDefaults, Omitted, PromptInput, Sampling, parse_chat, parse_chat_for,
    parse_completion, parse_completion_for,
};
