//! Anthropic's reply shapes: the `message` object, its content blocks and
//! stop reasons, and the error body.
//!
//! Follows Anthropic's Messages API reference ("Messages", "Errors"). The
//! error body is `{"type": "error", "error": {"type", "message"}}`, its
//! `type` read off the status of the one [`ApiError`] table: 400, 405, 408,
//! 415, 422 `invalid_request_error`; 401 `authentication_error`; 404
//! `not_found_error`; 413 `request_too_large`; 429 `rate_limit_error`; 503
//! `overloaded_error`; other 5xx `api_error`. The status itself is the
//! table's, so every route answers one failure with one status.

use serde::Serialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::response::{FinishReason, ToolCall};

/// A reply's content block.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    /// Reasoning. `signature` is always empty: Anthropic signs its own
    /// reasoning so that it can verify it when sent back; this server reads
    /// returned reasoning as plain text and needs no signature.
    Thinking {
        thinking: String,
        signature: String,
    },
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
}

impl ContentBlock {
    /// A `tool_use` block of a parsed call: the id's `call_` prefix becomes
    /// Anthropic's `toolu_`, and the arguments (JSON text) the `input`
    /// object.
    pub fn tool_use(call: &ToolCall) -> ContentBlock {
        ContentBlock::ToolUse {
            id: tool_use_id(&call.id),
            name: call.function.name.clone(),
            input: tool_input(&call.function.arguments),
        }
    }
}

/// `toolu_` and the call id's random part.
pub fn tool_use_id(call_id: &str) -> String {
    format!("toolu_{}", call_id.strip_prefix("call_").unwrap_or(call_id))
}

/// A call's arguments as `input`: the object they hold, or `{}` for none.
/// Arguments that are not a JSON object (a model that wrote no valid call
/// under `tool_choice: auto`) stay as their text, so nothing is lost.
pub fn tool_input(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return Value::Object(serde_json::Map::new());
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(object @ Value::Object(_)) => object,
        _ => Value::String(arguments.to_owned()),
    }
}

/// Why the reply ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    EndTurn,
    MaxTokens,
    StopSequence,
    ToolUse,
}

/// The stop reason and matched stop sequence of a finished reply;
/// `stop_index` is the index into `stop` of the sequence that matched.
pub fn stop_reason(
    reason: FinishReason,
    stop_index: Option<usize>,
    stop: &[String],
) -> (StopReason, Option<String>) {
    match reason {
        FinishReason::Length => (StopReason::MaxTokens, None),
        FinishReason::ToolCalls => (StopReason::ToolUse, None),
        FinishReason::Stop | FinishReason::ContentFilter => {
            match stop_index.and_then(|i| stop.get(i)) {
                Some(sequence) => (StopReason::StopSequence, Some(sequence.clone())),
                None => (StopReason::EndTurn, None),
            }
        }
    }
}

/// Token counts: the whole prompt and the generated tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MessageUsage {
    pub input_tokens: u32,
    pub output_tokens: u32,
}

/// The reply of `POST /v1/messages`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    pub model: String,
    pub content: Vec<ContentBlock>,
    pub stop_reason: Option<StopReason>,
    pub stop_sequence: Option<String>,
    pub usage: MessageUsage,
}

impl Message {
    /// A whole reply; content blocks in order thinking, text, tool uses
    /// (empty ones left out).
    pub fn new(
        id: String,
        model: String,
        reasoning: String,
        text: String,
        calls: &[ToolCall],
        stop: (StopReason, Option<String>),
        usage: MessageUsage,
    ) -> Message {
        let mut content = Vec::with_capacity(2 + calls.len());
        if !reasoning.is_empty() {
            content.push(ContentBlock::Thinking {
                thinking: reasoning,
                signature: String::new(),
            });
        }
        if !text.is_empty() {
            content.push(ContentBlock::Text { text });
        }
        content.extend(calls.iter().map(ContentBlock::tool_use));
        Message::started(id, model, content, Some(stop), usage)
    }

    /// The message as `message_start` shows it (no content, no stop).
    pub(crate) fn started(
        id: String,
        model: String,
        content: Vec<ContentBlock>,
        stop: Option<(StopReason, Option<String>)>,
        usage: MessageUsage,
    ) -> Message {
        let (stop_reason, stop_sequence) = match stop {
            Some((reason, sequence)) => (Some(reason), sequence),
            None => (None, None),
        };
        Message {
            id,
            kind: "message",
            role: "assistant",
            model,
            content,
            stop_reason,
            stop_sequence,
            usage,
        }
    }
}

/// `msg_` and 128 random bits in hex.
pub fn message_id(unique: u128) -> String {
    format!("msg_{unique:032x}")
}

/// Anthropic's error `type` for an error.
pub fn error_type(e: &ApiError) -> &'static str {
    match e.status() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// The error's message in this API's words where they differ (the key
/// headers Anthropic's clients send).
fn error_message(e: &ApiError) -> String {
    match e {
        ApiError::MissingApiKey => "x-api-key header is required (or an Authorization header \
                                    using Bearer auth)"
            .to_owned(),
        ApiError::InvalidApiKey => "invalid x-api-key".to_owned(),
        other => other.to_string(),
    }
}

/// Anthropic's error body as JSON text.
pub fn error_body_json(e: &ApiError) -> String {
    serde_json::json!({
        "type": "error",
        "error": {"type": error_type(e), "message": error_message(e)},
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_types_follow_the_status_table() {
        let cases = [
            (ApiError::invalid("x", "bad"), "invalid_request_error"),
            (ApiError::MissingApiKey, "authentication_error"),
            (ApiError::InvalidApiKey, "authentication_error"),
            (
                ApiError::ModelNotFound { model: "m".into() },
                "not_found_error",
            ),
            (
                ApiError::PayloadTooLarge { limit_bytes: 1 },
                "request_too_large",
            ),
            (
                ApiError::QueueFull {
                    model: "m".into(),
                    retry_after_secs: 1,
                },
                "rate_limit_error",
            ),
            (
                ApiError::Internal {
                    message: "x".into(),
                },
                "api_error",
            ),
            (
                ApiError::Unavailable {
                    message: "x".into(),
                    retry_after_secs: None,
                },
                "overloaded_error",
            ),
            (ApiError::Timeout { seconds: 1 }, "api_error"),
        ];
        for (e, want) in cases {
            let body: Value = serde_json::from_str(&error_body_json(&e)).unwrap();
            assert_eq!(body["type"], "error");
            assert_eq!(body["error"]["type"], want, "{e:?}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
        }
    }

    #[test]
    fn stop_reasons_name_the_matched_sequence() {
        let stop = ["END".to_owned(), "STOP".to_owned()];
        assert_eq!(
            stop_reason(FinishReason::Stop, Some(1), &stop),
            (StopReason::StopSequence, Some("STOP".into()))
        );
        assert_eq!(
            stop_reason(FinishReason::Stop, None, &stop),
            (StopReason::EndTurn, None)
        );
        assert_eq!(
            stop_reason(FinishReason::Length, None, &stop).0,
            StopReason::MaxTokens
        );
        assert_eq!(
            stop_reason(FinishReason::ToolCalls, None, &stop).0,
            StopReason::ToolUse
        );
    }

    #[test]
    fn tool_calls_become_tool_use_blocks() {
        let call = ToolCall::function("call_abc", "f", "{\"x\": 1}");
        assert_eq!(
            serde_json::to_value(ContentBlock::tool_use(&call)).unwrap(),
            serde_json::json!({"type": "tool_use", "id": "toolu_abc", "name": "f",
                               "input": {"x": 1}})
        );
        assert_eq!(tool_input(""), serde_json::json!({}));
        assert_eq!(tool_input("[1]"), serde_json::json!("[1]"));
    }
}
