//! Responses API conversation items: the `input` list (or a string) read
//! into [`Item`]s, and items turned into chat-template messages.
//!
//! Follows the OpenAI API reference for `POST /v1/responses` input items:
//! a message (`{"type": "message"}` or the short `{"role", "content"}`
//! form) with role `user`, `assistant`, `system` or `developer` and content
//! as a string or `input_text` / `output_text` / `refusal` parts;
//! `function_call` (`call_id`, `name`, `arguments`), `function_call_output`
//! (`call_id`, `output`) and `reasoning` (`summary` / `content` text).
//! Image, file and audio parts are 400s naming the part, as on the chat
//! route; so is an item type this server cannot read (`item_reference`,
//! hosted-tool calls).
//!
//! Into messages, the way Hugging Face chat templates read a conversation:
//! `developer` becomes `system`; consecutive `function_call` items become
//! one assistant message's `tool_calls` (joining the assistant message just
//! before them, if any), with `arguments` holding a JSON object parsed into
//! it as on the chat route; `function_call_output` becomes a `tool` message.
//! A `reasoning` item's text (its `content`, else its `summary` parts
//! joined by blank lines) becomes the `reasoning_content` of the assistant
//! message that follows it, the key reasoning templates (Qwen3, DeepSeek)
//! render; reasoning with no assistant turn after it is dropped, and so is a
//! reasoning item carrying only `encrypted_content`, which nothing here can
//! read.

use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// One conversation item, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A message; `role` is `user`, `assistant`, `system` or `developer`.
    Message {
        id: Option<String>,
        role: String,
        text: String,
    },
    /// A call the model made.
    FunctionCall {
        id: Option<String>,
        call_id: String,
        name: String,
        arguments: String,
    },
    /// A call's result, from the client.
    FunctionCallOutput {
        id: Option<String>,
        call_id: String,
        output: String,
    },
    /// The model's reasoning (empty when it came encrypted only).
    Reasoning { id: Option<String>, text: String },
}

impl Item {
    /// The item as the Responses API writes it (input item listings).
    pub fn to_json(&self) -> Value {
        let mut v = match self {
            Item::Message { role, text, .. } => {
                let part = if role == "assistant" {
                    json!({"type": "output_text", "text": text, "annotations": []})
                } else {
                    json!({"type": "input_text", "text": text})
                };
                json!({"type": "message", "role": role, "status": "completed",
                       "content": [part]})
            }
            Item::FunctionCall {
                call_id,
                name,
                arguments,
                ..
            } => json!({"type": "function_call", "call_id": call_id, "name": name,
                        "arguments": arguments, "status": "completed"}),
            Item::FunctionCallOutput {
                call_id, output, ..
            } => json!({"type": "function_call_output", "call_id": call_id,
                        "output": output, "status": "completed"}),
            Item::Reasoning { text, .. } => json!({"type": "reasoning", "summary": [],
                "content": [{"type": "reasoning_text", "text": text}]}),
        };
        if let (Some(id), Value::Object(map)) = (self.id(), &mut v) {
            map.insert("id".into(), Value::String(id.to_owned()));
        }
        v
    }

    /// The item's id, if it has one.
    pub fn id(&self) -> Option<&str> {
        match self {
            Item::Message { id, .. }
            | Item::FunctionCall { id, .. }
            | Item::FunctionCallOutput { id, .. }
            | Item::Reasoning { id, .. } => id.as_deref(),
        }
    }

    /// Gives the item `id` unless it has one.
    pub fn with_id(mut self, new: impl FnOnce() -> String) -> Item {
        let slot = match &mut self {
            Item::Message { id, .. }
            | Item::FunctionCall { id, .. }
            | Item::FunctionCallOutput { id, .. }
            | Item::Reasoning { id, .. } => id,
        };
        if slot.is_none() {
            *slot = Some(new());
        }
        self
    }
}

/// Reads `input`: a string is one user message.
pub(crate) fn read_input(input: Value) -> Result<Vec<Item>, ApiError> {
    match input {
        Value::String(text) => Ok(vec![Item::Message {
            id: None,
            role: "user".into(),
            text,
        }]),
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| read_item(&format!("input[{i}]"), item))
            .collect(),
        _ => Err(ApiError::invalid(
            "input",
            "input must be a string or an array of input items",
        )),
    }
}

fn read_item(at: &str, item: Value) -> Result<Item, ApiError> {
    let Value::Object(mut item) = item else {
        return Err(ApiError::invalid(at, format!("{at} must be an object")));
    };
    let kind = match item.get("type") {
        None | Some(Value::Null) => "message".to_owned(),
        Some(Value::String(kind)) => kind.clone(),
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{at}.type"),
                format!("{at}.type must be a string"),
            ));
        }
    };
    let id = optional_string(at, &mut item, "id")?;
    match kind.as_str() {
        "message" => {
            let role = match item.remove("role") {
                Some(Value::String(r))
                    if ["user", "assistant", "system", "developer"].contains(&r.as_str()) =>
                {
                    r
                }
                other => {
                    return Err(ApiError::invalid(
                        format!("{at}.role"),
                        format!(
                            "{at}.role must be 'user', 'assistant', 'system' or 'developer', got {}",
                            shown(other.as_ref())
                        ),
                    ));
                }
            };
            let content = item.remove("content").unwrap_or(Value::Null);
            let text = content_text(&format!("{at}.content"), content)?;
            Ok(Item::Message { id, role, text })
        }
        "function_call" => Ok(Item::FunctionCall {
            id,
            call_id: required_string(at, &mut item, "call_id")?,
            name: required_string(at, &mut item, "name")?,
            arguments: required_string(at, &mut item, "arguments")?,
        }),
        "function_call_output" => {
            let call_id = required_string(at, &mut item, "call_id")?;
            let output = match item.remove("output") {
                Some(Value::String(s)) => s,
                Some(parts @ Value::Array(_)) => content_text(&format!("{at}.output"), parts)?,
                other => {
                    return Err(ApiError::invalid(
                        format!("{at}.output"),
                        format!(
                            "{at}.output must be a string or an array of input_text parts, got {}",
                            shown(other.as_ref())
                        ),
                    ));
                }
            };
            Ok(Item::FunctionCallOutput {
                id,
                call_id,
                output,
            })
        }
        "reasoning" => {
            let content = part_texts(&format!("{at}.content"), item.remove("content"))?;
            let summary = part_texts(&format!("{at}.summary"), item.remove("summary"))?;
            let text = if content.is_empty() {
                summary.join("\n\n")
            } else {
                content.concat()
            };
            Ok(Item::Reasoning { id, text })
        }
        other => Err(ApiError::invalid(
            format!("{at}.type"),
            format!(
                "{at}.type {other:?} is not supported; the items accepted are message, \
                 function_call, function_call_output and reasoning"
            ),
        )),
    }
}

/// A message's content as one string: parts are joined with no separator,
/// as on the chat route.
fn content_text(at: &str, content: Value) -> Result<String, ApiError> {
    let parts = match content {
        Value::String(text) => return Ok(text),
        Value::Array(parts) => parts,
        other => {
            return Err(ApiError::invalid(
                at,
                format!(
                    "{at} must be a string or an array of content parts, got {}",
                    shown(Some(&other))
                ),
            ));
        }
    };
    let mut text = String::new();
    for (j, part) in parts.iter().enumerate() {
        let param = format!("{at}[{j}]");
        let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
        let key = match kind {
            "input_text" | "output_text" | "text" => "text",
            "refusal" => "refusal",
            "input_image" | "image_url" => return Err(unsupported(&param, "image")),
            "input_file" | "file" => return Err(unsupported(&param, "file")),
            "input_audio" | "audio" => return Err(unsupported(&param, "audio")),
            other => {
                return Err(ApiError::invalid(
                    format!("{param}.type"),
                    format!("{param}: content parts of type {other:?} are not supported"),
                ));
            }
        };
        match part.get(key) {
            Some(Value::String(s)) => text.push_str(s),
            _ => {
                return Err(ApiError::invalid(
                    format!("{param}.{key}"),
                    format!("{param}.{key} must be a string for a part of type {kind:?}"),
                ));
            }
        }
    }
    Ok(text)
}

fn unsupported(param: &str, what: &str) -> ApiError {
    ApiError::invalid(
        param,
        format!("{param}: {what} content is not supported; only text parts are accepted"),
    )
}

/// The `text` of each part of a reasoning item's `content` or `summary`.
fn part_texts(at: &str, parts: Option<Value>) -> Result<Vec<String>, ApiError> {
    let parts = match parts {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(parts)) => parts,
        Some(_) => return Err(ApiError::invalid(at, format!("{at} must be an array"))),
    };
    parts
        .into_iter()
        .enumerate()
        .map(|(j, part)| match part.get("text") {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => Err(ApiError::invalid(
                format!("{at}[{j}].text"),
                format!("{at}[{j}].text must be a string"),
            )),
        })
        .collect()
}

fn required_string(at: &str, item: &mut Map<String, Value>, key: &str) -> Result<String, ApiError> {
    match item.remove(key) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(ApiError::invalid(
            format!("{at}.{key}"),
            format!("Missing required parameter: '{at}.{key}'."),
        )),
        Some(_) => Err(ApiError::invalid(
            format!("{at}.{key}"),
            format!("{at}.{key} must be a string"),
        )),
    }
}

fn optional_string(
    at: &str,
    item: &mut Map<String, Value>,
    key: &str,
) -> Result<Option<String>, ApiError> {
    match item.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::invalid(
            format!("{at}.{key}"),
            format!("{at}.{key} must be a string"),
        )),
    }
}

fn shown(value: Option<&Value>) -> String {
    value.map_or_else(|| "nothing".to_owned(), Value::to_string)
}

/// The conversation as chat-template messages, `instructions` first as a
/// system message.
pub(crate) fn to_messages(instructions: Option<&str>, items: &[Item]) -> Vec<Value> {
    let mut messages: Vec<Value> = Vec::new();
    if let Some(text) = instructions {
        messages.push(json!({"role": "system", "content": text}));
    }
    let mut reasoning: Vec<&str> = Vec::new();
    for item in items {
        match item {
            Item::Reasoning { text, .. } => {
                if !text.is_empty() {
                    reasoning.push(text);
                }
            }
            Item::Message { role, text, .. } => {
                let role = if role == "developer" { "system" } else { role };
                let mut m = json!({"role": role, "content": text});
                if role == "assistant" {
                    attach_reasoning(&mut m, &mut reasoning);
                } else {
                    reasoning.clear();
                }
                messages.push(m);
            }
            Item::FunctionCall {
                call_id,
                name,
                arguments,
                ..
            } => {
                let call = json!({"id": call_id, "type": "function",
                                  "function": {"name": name, "arguments": parsed(arguments)}});
                let joins = messages.last().is_some_and(|m| m["role"] == "assistant");
                if !joins {
                    messages.push(json!({"role": "assistant", "content": null}));
                }
                if let Some(Value::Object(last)) = messages.last_mut() {
                    let calls = last
                        .entry("tool_calls")
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if let Value::Array(calls) = calls {
                        calls.push(call);
                    }
                }
                if let Some(last) = messages.last_mut() {
                    attach_reasoning(last, &mut reasoning);
                }
            }
            Item::FunctionCallOutput {
                call_id, output, ..
            } => {
                reasoning.clear();
                messages.push(json!({"role": "tool", "tool_call_id": call_id,
                                     "content": output}));
            }
        }
    }
    messages
}

/// Sets the pending reasoning on an assistant message.
fn attach_reasoning(message: &mut Value, reasoning: &mut Vec<&str>) {
    if reasoning.is_empty() {
        return;
    }
    if let Value::Object(m) = message {
        m.insert(
            "reasoning_content".into(),
            Value::String(reasoning.join("\n\n")),
        );
    }
    reasoning.clear();
}

/// `arguments` parsed when it is a JSON string holding an object (the form
/// templates render with `tojson`), else as sent.
fn parsed(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => Value::String(arguments.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(e: ApiError) -> Option<String> {
        e.param().map(str::to_owned)
    }

    #[test]
    fn a_string_is_one_user_message() {
        let items = read_input(json!("hi")).expect("valid");
        assert_eq!(
            to_messages(Some("be brief"), &items),
            vec![
                json!({"role": "system", "content": "be brief"}),
                json!({"role": "user", "content": "hi"})
            ]
        );
    }

    #[test]
    fn calls_join_the_assistant_turn_and_outputs_become_tool_messages() {
        let items = read_input(json!([
            {"role": "developer", "content": "rules"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"},
                                                              {"type": "input_text", "text": "b"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "s1"},
                                                            {"type": "summary_text", "text": "s2"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{\"x\": 1}"},
            {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "not json"},
            {"type": "function_call_output", "call_id": "c1", "output": "one"},
            {"type": "function_call_output", "call_id": "c2",
             "output": [{"type": "input_text", "text": "two"}]},
        ]))
        .expect("valid");
        let messages = to_messages(None, &items);
        assert_eq!(
            messages,
            vec![
                json!({"role": "system", "content": "rules"}),
                json!({"role": "user", "content": "ab"}),
                json!({"role": "assistant", "content": "ok", "reasoning_content": "s1\n\ns2",
                       "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}},
                    {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "not json"}}
                ]}),
                json!({"role": "tool", "tool_call_id": "c1", "content": "one"}),
                json!({"role": "tool", "tool_call_id": "c2", "content": "two"}),
            ]
        );
    }

    #[test]
    fn a_call_after_a_tool_result_starts_a_new_assistant_turn() {
        let items = read_input(json!([
            {"role": "user", "content": "q"},
            {"type": "reasoning", "content": [{"type": "reasoning_text", "text": "think"}],
             "summary": [{"type": "summary_text", "text": "ignored"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "r"},
            {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{}"},
        ]))
        .expect("valid");
        let messages = to_messages(None, &items);
        assert_eq!(messages.len(), 4);
        assert_eq!(messages[1]["content"], Value::Null);
        assert_eq!(messages[1]["reasoning_content"], "think");
        assert_eq!(messages[3]["role"], "assistant");
        assert_eq!(messages[3]["tool_calls"][0]["id"], "c2");
        assert!(messages[3].get("reasoning_content").is_none());
    }

    #[test]
    fn reasoning_before_a_user_turn_is_dropped() {
        let items = read_input(json!([
            {"type": "reasoning", "summary": [], "encrypted_content": "opaque"},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "x"}]},
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a"},
        ]))
        .expect("valid");
        let messages = to_messages(None, &items);
        assert!(
            messages
                .iter()
                .all(|m| m.get("reasoning_content").is_none())
        );
    }

    #[test]
    fn bad_items_name_their_parameter() {
        let cases = [
            (json!(5), "input"),
            (json!([7]), "input[0]"),
            (json!([{"role": "tool", "content": "x"}]), "input[0].role"),
            (json!([{"role": "user", "content": 3}]), "input[0].content"),
            (
                json!([{"role": "user", "content": [{"type": "input_image", "image_url": "u"}]}]),
                "input[0].content[0]",
            ),
            (
                json!([{"role": "user", "content": [{"type": "input_text"}]}]),
                "input[0].content[0].text",
            ),
            (
                json!([{"role": "user", "content": "ok"},
                       {"type": "function_call", "name": "f", "arguments": "{}"}]),
                "input[1].call_id",
            ),
            (
                json!([{"type": "function_call_output", "call_id": "c", "output": 5}]),
                "input[0].output",
            ),
            (
                json!([{"type": "item_reference", "id": "msg_1"}]),
                "input[0].type",
            ),
            (
                json!([{"type": "reasoning", "summary": [{"type": "summary_text"}]}]),
                "input[0].summary[0].text",
            ),
        ];
        for (input, expected) in cases {
            let e = read_input(input.clone()).expect_err("invalid");
            assert_eq!(param(e), Some(expected.to_owned()), "{input}");
        }
    }

    #[test]
    fn items_write_back_in_the_api_shape() {
        let item = Item::FunctionCall {
            id: None,
            call_id: "c".into(),
            name: "f".into(),
            arguments: "{}".into(),
        }
        .with_id(|| "fc_1".into());
        assert_eq!(
            item.to_json(),
            json!({"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}",
                   "status": "completed", "id": "fc_1"})
        );
        let back = read_input(json!([item.to_json()])).expect("valid");
        assert_eq!(back, vec![item]);
    }
}
