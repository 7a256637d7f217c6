//! Chat messages and tools, normalized for the chat template.
//!
//! Follows the OpenAI API reference for message objects and what Hugging Face
//! chat templates expect (`transformers`' chat-template documentation):
//! content parts of type `text` are joined into one string (with no
//! separator, as mlx-lm's server and the engine do); other part types are
//! rejected naming the part, since no model here reads images or audio; the
//! `developer` role becomes `system`, which templates know; an assistant's
//! `tool_calls[].function.arguments` given as a JSON string holding an object
//! becomes that object, the form templates render with `tojson`. Every other
//! key of a message passes through unchanged.

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::request::{Message, MessageContent, Role};

/// Turns the request's messages into template-ready JSON objects.
pub(crate) fn normalize_messages(messages: Vec<Message>) -> Result<Vec<Value>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "messages must be a non-empty array",
        ));
    }
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| normalize_message(i, m))
        .collect()
}

fn normalize_message(index: usize, message: Message) -> Result<Value, ApiError> {
    let at = format!("messages[{index}]");
    let content = match message.content {
        Some(content) => Value::String(content_text(&at, content)?),
        None if message.role == Role::Assistant => Value::Null,
        None => {
            return Err(ApiError::invalid(
                format!("{at}.content"),
                format!(
                    "{at}.content is required for a message of role {:?}",
                    role_name(message.role)
                ),
            ));
        }
    };
    let role = match message.role {
        Role::Developer => Role::System,
        role => role,
    };
    let mut out = Map::new();
    out.insert("role".into(), Value::String(role_name(role).into()));
    out.insert("content".into(), content);
    if let Some(calls) = message.tool_calls {
        if message.role != Role::Assistant {
            return Err(ApiError::invalid(
                format!("{at}.tool_calls"),
                format!("{at}.tool_calls is only allowed in assistant messages"),
            ));
        }
        let calls = calls.into_iter().map(parse_tool_arguments).collect();
        out.insert("tool_calls".into(), Value::Array(calls));
    }
    match (message.role, message.tool_call_id) {
        (Role::Tool, Some(id)) => {
            out.insert("tool_call_id".into(), Value::String(id));
        }
        (Role::Tool, None) => {
            return Err(ApiError::invalid(
                format!("{at}.tool_call_id"),
                format!("{at}.tool_call_id is required for a message of role \"tool\""),
            ));
        }
        (_, Some(id)) => {
            out.insert("tool_call_id".into(), Value::String(id));
        }
        (_, None) => {}
    }
    for (key, value) in message.extra {
        out.entry(key).or_insert(value);
    }
    Ok(Value::Object(out))
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::Developer => "developer",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

/// The content as one string; `at` is the message's parameter path.
fn content_text(at: &str, content: MessageContent) -> Result<String, ApiError> {
    let parts = match content {
        MessageContent::Text(text) => return Ok(text),
        MessageContent::Parts(parts) => parts,
    };
    let mut text = String::new();
    for (j, part) in parts.into_iter().enumerate() {
        let param = format!("{at}.content[{j}]");
        let what = match part.kind.as_str() {
            "text" => match part.text {
                Some(t) => {
                    text.push_str(&t);
                    continue;
                }
                None => {
                    return Err(ApiError::invalid(
                        format!("{param}.text"),
                        format!("{param}.text is required for a part of type \"text\""),
                    ));
                }
            },
            "image_url" | "input_image" | "image" => "image",
            "input_audio" | "audio" => "audio",
            "file" | "input_file" => "file",
            "video" | "video_url" => "video",
            other => {
                return Err(ApiError::invalid(
                    param.clone(),
                    format!("{param}: content parts of type {other:?} are not supported"),
                ));
            }
        };
        return Err(ApiError::invalid(
            param.clone(),
            format!("{param}: {what} content is not supported; only text parts are accepted"),
        ));
    }
    Ok(text)
}

/// Parses `function.arguments` when it is a JSON string holding an object.
fn parse_tool_arguments(mut call: Value) -> Value {
    if let Some(arguments) = call
        .get_mut("function")
        .and_then(|f| f.get_mut("arguments"))
    {
        if let Value::String(text) = arguments {
            if let Ok(parsed @ Value::Object(_)) = serde_json::from_str::<Value>(text) {
                *arguments = parsed;
            }
        }
    }
    call
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn string_arguments_holding_an_object_are_parsed() {
        let call = json!({"id": "c1", "type": "function",
                          "function": {"name": "f", "arguments": "{\"x\": 1}"}});
        assert_eq!(
            parse_tool_arguments(call)["function"]["arguments"],
            json!({"x": 1})
        );
    }

    #[test]
    fn other_arguments_are_left_alone() {
        for arguments in [json!("not json"), json!("[1, 2]"), json!({"x": 1})] {
            let call = json!({"function": {"name": "f", "arguments": arguments.clone()}});
            assert_eq!(
                parse_tool_arguments(call)["function"]["arguments"],
                arguments
            );
        }
    }
}
