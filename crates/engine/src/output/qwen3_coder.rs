//! Qwen3-Coder's XML calls:
//! `<tool_call>\n<function=NAME>\n<parameter=P>\nVALUE\n</parameter>\n</function>\n</tool_call>`.
//!
//! Follows mlx-lm's `tool_parsers/qwen3_coder.py` (from Qwen's own
//! `qwen3coder_tool_parser.py`): one newline after the opening and before
//! the closing parameter tag is dropped; a value is typed by the function's
//! JSON schema: strings stay text, integers and numbers are parsed, booleans
//! are `true`/`false`, objects and arrays are JSON; `null` is null; a
//! parameter without a schema type is JSON when it parses as an object or
//! array, else text.

use serde_json::{Map, Number, Value};

use super::{Delimited, ParsedCall, ToolSchemas};

pub(crate) fn parser(tools: ToolSchemas) -> Delimited {
    Delimited::new(&["<tool_call>"], Some("</tool_call>"), body, tools)
}

fn body(body: &str, tools: &ToolSchemas) -> Result<Vec<ParsedCall>, String> {
    let mut calls = Vec::new();
    let mut rest = body;
    while let Some(start) = rest.find("<function=") {
        let after = &rest[start + "<function=".len()..];
        let end = after
            .find("</function>")
            .ok_or("<function= without </function>")?;
        let inner = &after[..end];
        rest = &after[end + "</function>".len()..];
        let close = inner.find('>').ok_or("<function= without >")?;
        let name = inner[..close].trim();
        let mut arguments = Map::new();
        let mut params = &inner[close + 1..];
        while let Some(p) = params.find("<parameter=") {
            let after = &params[p + "<parameter=".len()..];
            let close = after.find('>').ok_or("<parameter= without >")?;
            let key = after[..close].trim();
            let value_start = &after[close + 1..];
            let end = value_start
                .find("</parameter>")
                .ok_or("<parameter= without </parameter>")?;
            let mut value = &value_start[..end];
            value = value.strip_prefix('\n').unwrap_or(value);
            value = value.strip_suffix('\n').unwrap_or(value);
            arguments.insert(key.to_owned(), typed(value, tools.param(name, key))?);
            params = &value_start[end + "</parameter>".len()..];
        }
        calls.push(ParsedCall::new(name, Value::Object(arguments))?);
    }
    if !rest.trim().is_empty() {
        return Err(format!("text after the function: {:?}", rest.trim()));
    }
    Ok(calls)
}

/// A parameter's text as the JSON value its schema asks for.
pub(crate) fn typed(text: &str, schema: Option<&Value>) -> Result<Value, String> {
    if text.eq_ignore_ascii_case("null") {
        return Ok(Value::Null);
    }
    let kind = schema
        .and_then(|s| s.get("type"))
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase);
    let Some(kind) = kind else {
        return Ok(match serde_json::from_str::<Value>(text) {
            Ok(v @ (Value::Object(_) | Value::Array(_))) => v,
            _ => Value::String(text.to_owned()),
        });
    };
    let bad = |what: &str| format!("{text:?} is not {what}");
    Ok(match kind.as_str() {
        "string" | "str" | "text" | "enum" => Value::String(text.to_owned()),
        "integer" | "int" => {
            let f: f64 = text.trim().parse().map_err(|_| bad("an integer"))?;
            if f.fract() != 0.0 || !f.is_finite() {
                return Err(bad("an integer"));
            }
            match text.trim().parse::<i64>() {
                Ok(i) => Value::from(i),
                Err(_) => Value::from(f as i64),
            }
        }
        "number" | "float" => {
            let f: f64 = text.trim().parse().map_err(|_| bad("a number"))?;
            if f.fract() == 0.0 && f.abs() < 9e15 {
                Value::from(f as i64)
            } else {
                Value::Number(Number::from_f64(f).ok_or_else(|| bad("a finite number"))?)
            }
        }
        "boolean" | "bool" => Value::Bool(text.trim().eq_ignore_ascii_case("true")),
        _ => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())),
    })
}

#[cfg(test)]
mod tests {
    use super::super::ToolFormat;
    use super::super::testing::{call, content, parser as make, run_split};
    use serde_json::json;

    fn tools() -> serde_json::Value {
        json!([{"type": "function", "function": {"name": "search", "parameters": {
            "type": "object", "properties": {
                "query": {"type": "string"}, "limit": {"type": "integer"},
                "ratio": {"type": "number"}, "exact": {"type": "boolean"},
                "tags": {"type": "array"}}}}}])
    }

    #[test]
    fn parameters_are_typed_by_the_schema() {
        let text = "I'll search.\n<tool_call>\n<function=search>\n<parameter=query>\n42 \
                    apples\n</parameter>\n<parameter=limit>\n5\n</parameter>\n<parameter=ratio>\n\
                    0.5\n</parameter>\n<parameter=exact>\ntrue\n</parameter>\n<parameter=tags>\n\
                    [\"a\", \"b\"]\n</parameter>\n<parameter=other>\n{\"k\": 1}\n</parameter>\n\
                    </function>\n</tool_call>";
        let out = run_split(&|| make(ToolFormat::Qwen3CoderXml, "", tools()), text);
        assert_eq!(
            out,
            vec![
                content("I'll search."),
                call(
                    "search",
                    json!({"query": "42 apples", "limit": 5, "ratio": 0.5, "exact": true,
                           "tags": ["a", "b"], "other": {"k": 1}})
                ),
            ]
        );
    }

    #[test]
    fn a_wrongly_typed_value_keeps_the_call_as_text() {
        let text = "<tool_call>\n<function=search>\n<parameter=limit>\nmany\n</parameter>\n\
                    </function>\n</tool_call>";
        let out = run_split(&|| make(ToolFormat::Qwen3CoderXml, "", tools()), text);
        assert_eq!(out, vec![content(text)]);
    }
}
