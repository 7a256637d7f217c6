//! Anthropic's Messages API (`POST /v1/messages`,
//! `POST /v1/messages/count_tokens`): the body validated into the chat
//! route's [`crate::GenerationRequest`] (one generation path, one error
//! table), the reply as Anthropic's `message` object or its named SSE
//! events, and every error as Anthropic's error body.
//!
//! Follows Anthropic's Messages API reference; the choices made where this
//! server differs are listed in [`request`].
//!
//! - [`request`]: [`parse_messages_for`], [`parse_count_tokens_for`].
//! - [`tools`]: custom tools and `tool_choice` onto the chat route's forms.
//! - [`response`]: [`Message`], content blocks, stop reasons, the error
//!   body.
//! - [`stream`]: [`MessageStream`], the streamed events.

pub mod request;
pub mod response;
pub mod stream;
#[cfg(test)]
mod tests;
mod tools;

pub use request::{parse_count_tokens_for, parse_messages_for};
pub use response::{
    ContentBlock, Message, MessageUsage, StopReason, error_body_json, error_type, message_id,
    stop_reason,
};
pub use stream::{MessageStream, error_event};
