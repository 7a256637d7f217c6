//! GLM-4.5 / 4.6 / 4.7 calls:
//! `<tool_call>NAME\n<arg_key>K</arg_key>\n<arg_value>V</arg_value>\n</tool_call>`
//! (4.7 writes no newlines).
//!
//! Follows mlx-lm's `tool_parsers/glm47.py` (from vLLM's
//! `glm4_moe_tool_parser.py`): the name is the text before the first
//! `<arg_key>`; a value whose schema type is `string` stays text, any other
//! is read as JSON when it parses, else kept as text. A block holding a JSON
//! call (`{"name": ..., "arguments": ...}`) is read as one.

use serde_json::{Map, Value};

use super::json_call::object_call;
use super::{Delimited, ParsedCall, ToolSchemas};

pub(crate) fn parser(tools: ToolSchemas) -> Delimited {
    Delimited::new(&["<tool_call>"], Some("</tool_call>"), body, tools)
}

fn body(body: &str, tools: &ToolSchemas) -> Result<Vec<ParsedCall>, String> {
    let trimmed = body.trim();
    if trimmed.starts_with('{') {
        let value = serde_json::from_str(trimmed).map_err(|e| e.to_string())?;
        return Ok(vec![object_call(value)?]);
    }
    let name_end = trimmed.find("<arg_key>").unwrap_or(trimmed.len());
    let name = trimmed[..name_end].trim();
    if name.contains('<') || name.contains(char::is_whitespace) {
        return Err(format!("{name:?} is not a function name"));
    }
    let mut arguments = Map::new();
    let mut rest = &trimmed[name_end..];
    while !rest.is_empty() {
        let key_body = rest
            .strip_prefix("<arg_key>")
            .ok_or_else(|| format!("unexpected text {rest:?}"))?;
        let key_end = key_body
            .find("</arg_key>")
            .ok_or("<arg_key> without </arg_key>")?;
        let key = key_body[..key_end].trim();
        let after = key_body[key_end + "</arg_key>".len()..].trim_start();
        let value_body = after
            .strip_prefix("<arg_value>")
            .ok_or("<arg_key> without <arg_value>")?;
        let value_end = value_body
            .find("</arg_value>")
            .ok_or("<arg_value> without </arg_value>")?;
        let text = &value_body[..value_end];
        let is_string = tools
            .param(name, key)
            .and_then(|s| s.get("type"))
            .and_then(Value::as_str)
            == Some("string");
        let value = if is_string {
            Value::String(text.to_owned())
        } else {
            serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
        };
        arguments.insert(key.to_owned(), value);
        rest = value_body[value_end + "</arg_value>".len()..].trim_start();
    }
    Ok(vec![ParsedCall::new(name, Value::Object(arguments))?])
}

#[cfg(test)]
mod tests {
    use super::super::ToolFormat;
    use super::super::testing::{call, content, parser, run_split};
    use serde_json::json;

    fn tools() -> serde_json::Value {
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"},
                                             "days": {"type": "integer"}}}}}])
    }

    #[test]
    fn glm_45_and_47_blocks_become_calls() {
        let p = || parser(ToolFormat::Glm45, "", tools());
        let glm45 = "Checking.\n<tool_call>get_weather\n<arg_key>city</arg_key>\n\
                     <arg_value>123</arg_value>\n<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n\
                     </tool_call>";
        assert_eq!(
            run_split(&p, glm45),
            vec![
                content("Checking."),
                call("get_weather", json!({"city": "123", "days": 3}))
            ]
        );
        let glm47 = "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value>\
                     </tool_call><tool_call>get_weather<arg_key>city</arg_key><arg_value>Rome\
                     </arg_value></tool_call>";
        assert_eq!(
            run_split(&p, glm47),
            vec![
                call("get_weather", json!({"city": "Paris"})),
                call("get_weather", json!({"city": "Rome"}))
            ]
        );
    }

    #[test]
    fn a_broken_glm_block_stays_text() {
        let p = || parser(ToolFormat::Glm45, "", tools());
        let text = "<tool_call>get_weather<arg_key>city</arg_key>Paris</tool_call>";
        assert_eq!(run_split(&p, text), vec![content(text)]);
    }
}
