//! Mistral's calls, after `[TOOL_CALLS]` to the end of the reply (the
//! format has no closing marker): a JSON array of `{"name", "arguments"}`
//! objects (Mistral 7B v0.3, Nemo), or `NAME[ARGS]{...}` per call, each
//! after its own `[TOOL_CALLS]` and optionally with `[CALL_ID]id` before
//! `[ARGS]` (Small 3.2, Devstral, Ministral 3).
//!
//! Follows mlx-lm's `tool_parsers/mistral.py`: the array form is tried
//! first, then the `[ARGS]` form; arguments given as a JSON string are read.

use serde_json::Value;

use super::json_call::object_call;
use super::{Delimited, MistralStyle, ParsedCall, ToolSchemas};

/// Both styles read either form; the style only decides the grammar's
/// envelope.
pub(crate) fn parser(_style: MistralStyle, tools: ToolSchemas) -> Delimited {
    Delimited::new(&["[TOOL_CALLS]"], None, body, tools)
}

fn body(body: &str, _: &ToolSchemas) -> Result<Vec<ParsedCall>, String> {
    let trimmed = body.trim();
    if trimmed.starts_with('[') {
        if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(trimmed) {
            return items.into_iter().map(object_call).collect();
        }
    }
    let mut calls = Vec::new();
    for segment in trimmed.split("[TOOL_CALLS]") {
        let segment = segment.trim();
        if segment.is_empty() {
            continue;
        }
        let (head, arguments) = segment
            .split_once("[ARGS]")
            .ok_or_else(|| format!("no [ARGS] in {segment:?}"))?;
        let name = head.split_once("[CALL_ID]").map_or(head, |(n, _)| n).trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_alphanumeric() || "_-.".contains(c))
        {
            return Err(format!("{name:?} is not a function name"));
        }
        let value: Value = serde_json::from_str(arguments.trim()).map_err(|e| e.to_string())?;
        calls.push(ParsedCall::new(
            name,
            super::json_call::string_or_object(value),
        )?);
    }
    Ok(calls)
}

#[cfg(test)]
mod tests {
    use super::super::ToolFormat;
    use super::super::testing::{call, content, parser, run_split};
    use serde_json::json;

    #[test]
    fn the_json_array_form_becomes_calls() {
        let p = || parser(ToolFormat::Mistral, "[TOOL_CALLS][", json!([]));
        let text = "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"x\": 1}}, {\"name\": \"b\", \
                    \"arguments\": {}}]";
        assert_eq!(
            run_split(&p, text),
            vec![call("a", json!({"x": 1})), call("b", json!({}))]
        );
    }

    #[test]
    fn the_args_form_becomes_calls() {
        let p = || parser(ToolFormat::Mistral, "[ARGS]", json!([]));
        let text = "Sure.[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}[TOOL_CALLS]time\
                    [CALL_ID]abc123XYZ[ARGS]{}";
        assert_eq!(
            run_split(&p, text),
            vec![
                content("Sure."),
                call("get_weather", json!({"city": "Paris"})),
                call("time", json!({}))
            ]
        );
        let cut = "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Pa";
        assert_eq!(run_split(&p, cut), vec![content(cut)]);
    }
}
