//! Calls written as JSON objects: Hermes / Qwen2.5 / Qwen3
//! (`<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`, one
//! block per call), Llama 3.1-3.3 (the whole reply is `{"name": ...,
//! "parameters": {...}}`, optionally after `<|python_tag|>`, several joined
//! by `;`), and the generic format, which asks a model without a tool
//! format of its own for the Hermes envelope in a system message.
//!
//! Follows mlx-lm's `tool_parsers/json_tools.py` and vLLM's
//! `hermes_tool_parser.py` / `llama_tool_parser.py`: `arguments` (or
//! `parameters`) may also be a JSON string holding the object.

use serde_json::Value;

use super::{Delimited, ParsedCall, ToolSchemas};

/// The Hermes parser (also the generic format's).
pub(crate) fn hermes(tools: ToolSchemas) -> Delimited {
    Delimited::new(&["<tool_call>"], Some("</tool_call>"), hermes_body, tools)
}

/// The Llama 3 parser.
pub(crate) fn llama3(tools: ToolSchemas) -> Delimited {
    Delimited::new(&["<|python_tag|>"], None, llama3_body, tools).with_bare_json()
}

/// One call object, or an array of them (as some models write, e.g.
/// SmolLM2's and xLAM's `<tool_call>[{...}, {...}]</tool_call>`).
fn hermes_body(body: &str, _: &ToolSchemas) -> Result<Vec<ParsedCall>, String> {
    match serde_json::from_str(body.trim()).map_err(|e| e.to_string())? {
        Value::Array(calls) => calls.into_iter().map(object_call).collect(),
        value => Ok(vec![object_call(value)?]),
    }
}

fn llama3_body(body: &str, _: &ToolSchemas) -> Result<Vec<ParsedCall>, String> {
    let mut calls = Vec::new();
    let mut rest = body.trim();
    while !rest.is_empty() {
        let mut values = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        let value = values
            .next()
            .ok_or("no JSON call")?
            .map_err(|e| e.to_string())?;
        calls.push(object_call(value)?);
        rest = rest[values.byte_offset()..].trim_start();
        rest = rest.strip_prefix(';').unwrap_or(rest).trim_start();
    }
    Ok(calls)
}

/// `{"name": ..., "arguments" | "parameters": {...} | "{...}"}`.
pub(crate) fn object_call(value: Value) -> Result<ParsedCall, String> {
    let Value::Object(mut call) = value else {
        return Err("a tool call that is not a JSON object".into());
    };
    let name = match call.remove("name") {
        Some(Value::String(name)) => name,
        _ => return Err("a tool call without a string \"name\"".into()),
    };
    let arguments = call
        .remove("arguments")
        .or_else(|| call.remove("parameters"))
        .unwrap_or(Value::Object(Default::default()));
    ParsedCall::new(&name, string_or_object(arguments))
}

/// A JSON string holding an object becomes that object.
pub(crate) fn string_or_object(value: Value) -> Value {
    match value {
        Value::String(text) => match serde_json::from_str::<Value>(&text) {
            Ok(object @ Value::Object(_)) => object,
            _ => Value::String(text),
        },
        other => other,
    }
}

/// The system message that describes `tools` to a model whose template
/// has no tool format, asking for the Hermes envelope.
pub fn generic_tools_prompt(tools: &[Value]) -> String {
    let mut out = String::from(
        "You may call functions to help answer the user. The functions you may call, \
         as JSON schemas:\n",
    );
    for tool in tools {
        let function = tool.get("function").unwrap_or(tool);
        out.push_str(&function.to_string());
        out.push('\n');
    }
    out.push_str(
        "\nTo call a function, reply with one block per call, and nothing after the blocks:\n\
         <tool_call>\n{\"name\": \"<function name>\", \"arguments\": {<arguments as JSON>}}\n\
         </tool_call>\n\
         When no function is needed, answer the user directly.",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::super::ToolFormat;
    use super::super::testing::{call, content, parser, run_split};
    use super::*;
    use serde_json::json;

    #[test]
    fn hermes_blocks_become_calls_and_the_text_around_them_content() {
        let text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": \
                    {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"time\", \
                    \"arguments\": \"{\\\"tz\\\": \\\"CET\\\"}\"}\n</tool_call>";
        let out = run_split(&|| parser(ToolFormat::Hermes, "", json!([])), text);
        assert_eq!(
            out,
            vec![
                content("Let me check."),
                call("get_weather", json!({"city": "Paris"})),
                call("time", json!({"tz": "CET"})),
            ]
        );
    }

    #[test]
    fn a_hermes_block_may_hold_an_array_of_calls() {
        let text = "<tool_call>[{\"name\": \"a\", \"arguments\": {}}, {\"name\": \"b\", \
                    \"arguments\": {\"x\": [1]}}]</tool_call>";
        let out = run_split(&|| parser(ToolFormat::Hermes, "", json!([])), text);
        assert_eq!(
            out,
            vec![call("a", json!({})), call("b", json!({"x": [1]}))]
        );
        let empty = "<tool_call>[]</tool_call>";
        let out = run_split(&|| parser(ToolFormat::Hermes, "", json!([])), empty);
        assert_eq!(out, vec![content(empty)]);
    }

    #[test]
    fn a_malformed_hermes_call_stays_text() {
        let text = "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": }\n</tool_call>";
        let out = run_split(&|| parser(ToolFormat::Hermes, "", json!([])), text);
        assert_eq!(out, vec![content(text)]);
        let cut = "<tool_call>\n{\"name\": \"f\", \"argu";
        let out = run_split(&|| parser(ToolFormat::Hermes, "", json!([])), cut);
        assert_eq!(out, vec![content(cut)]);
    }

    #[test]
    fn a_hermes_call_without_its_closing_tag_is_read_at_the_end() {
        let text = "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n";
        let out = run_split(&|| parser(ToolFormat::Hermes, "", json!([])), text);
        assert_eq!(out, vec![call("f", json!({}))]);
    }

    #[test]
    fn llama3_replies_that_are_json_calls_become_calls() {
        let p = || parser(ToolFormat::Llama3Json, "", json!([]));
        let text = "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}";
        assert_eq!(
            run_split(&p, text),
            vec![call("get_weather", json!({"city": "Paris"}))]
        );
        let tagged = "<|python_tag|>{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \
                      \"parameters\": {\"n\": 1}}";
        assert_eq!(
            run_split(&p, tagged),
            vec![call("a", json!({})), call("b", json!({"n": 1}))]
        );
        let prose = "The answer is {x}.";
        assert_eq!(run_split(&p, prose), vec![content(prose)]);
        let not_a_call = "{\"answer\": 42}";
        assert_eq!(run_split(&p, not_a_call), vec![content(not_a_call)]);
    }

    #[test]
    fn the_generic_prompt_names_every_function_and_the_envelope() {
        let tools = [
            json!({"type": "function", "function": {"name": "get_weather",
                            "parameters": {"type": "object"}}}),
        ];
        let prompt = generic_tools_prompt(&tools);
        assert!(prompt.contains("\"name\":\"get_weather\""));
        assert!(prompt.contains("<tool_call>\n{\"name\""));
    }
}
