//! Anthropic's `tools` and `tool_choice`, read into the chat route's forms
//! and checked by the chat route's own checks ([`crate::tools`],
//! [`crate::structured`]).
//!
//! Follows Anthropic's Messages API reference: a custom tool is
//! `{"name", "description"?, "input_schema", "type"?: "custom",
//! "cache_control"?}`; Anthropic's own tool types (`bash_20250124`,
//! `web_search_20250305`, ...) run on Anthropic's servers or need
//! Anthropic's client loop, so each is a 400 naming it. `tool_choice` is
//! `{"type": "auto" | "any" | "tool" | "none", "name"?,
//! "disable_parallel_tool_use"?}`. Names keep the chat route's limit of 64
//! characters (Anthropic allows 128).

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::structured::{self, ToolChoice};

/// Anthropic tools as OpenAI function tools (the form templates and the
/// reply parser read); every error names `tools.i...`.
pub(crate) fn function_tools(tools: &[Value]) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let at = format!("tools.{i}");
        let Some(tool) = tool.as_object() else {
            return Err(ApiError::invalid(
                at.clone(),
                format!("{at}: must be an object with a name and an input_schema"),
            ));
        };
        match tool.get("type") {
            None | Some(Value::Null) => {}
            Some(Value::String(t)) if t == "custom" => {}
            Some(other) => {
                return Err(ApiError::invalid(
                    format!("{at}.type"),
                    format!(
                        "{at}.type: only custom tools (a name and an input_schema) are \
                         supported, got {other}"
                    ),
                ));
            }
        }
        let allowed = [
            "type",
            "name",
            "description",
            "input_schema",
            "cache_control",
        ];
        if let Some(key) = tool.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ApiError::invalid(
                format!("{at}.{key}"),
                format!("{at}.{key}: Extra inputs are not permitted"),
            ));
        }
        let Some(schema) = tool.get("input_schema") else {
            return Err(ApiError::invalid(
                format!("{at}.input_schema"),
                format!("{at}.input_schema: Field required"),
            ));
        };
        if schema.get("type").and_then(Value::as_str) != Some("object") {
            return Err(ApiError::invalid(
                format!("{at}.input_schema.type"),
                format!("{at}.input_schema.type: must be 'object'"),
            ));
        }
        let mut function = serde_json::Map::new();
        function.insert(
            "name".into(),
            tool.get("name").cloned().unwrap_or(Value::Null),
        );
        if let Some(description) = tool.get("description") {
            function.insert("description".into(), description.clone());
        }
        function.insert("parameters".into(), schema.clone());
        out.push(json!({"type": "function", "function": function}));
    }
    crate::tools::check_tools(&out).map_err(anthropic_paths)?;
    Ok(out)
}

/// Rewrites the chat route's parameter paths (`tools[0].function.name`)
/// into this API's (`tools.0.name`).
fn anthropic_paths(e: ApiError) -> ApiError {
    let rename = |s: &str| {
        let mut s = s
            .replace(".function.parameters", ".input_schema")
            .replace(".function.", ".")
            .replace(".function", "");
        while let Some(open) = s.find("tools[") {
            let rest = &s[open + 6..];
            let Some(close) = rest.find(']') else { break };
            s = format!(
                "{}tools.{}{}",
                &s[..open],
                &rest[..close],
                &rest[close + 1..]
            );
        }
        s
    };
    match e {
        ApiError::InvalidRequest { message, param } => ApiError::InvalidRequest {
            message: rename(&message),
            param: param.map(|p| rename(&p)),
        },
        other => other,
    }
}

/// `tool_choice` as the chat route's choice, and whether parallel calls
/// are allowed.
pub(crate) fn tool_choice(
    value: Option<&Value>,
    tools: Option<&[Value]>,
) -> Result<(ToolChoice, bool), ApiError> {
    let Some(choice) = value.filter(|v| !v.is_null()) else {
        return Ok((ToolChoice::Auto, true));
    };
    let Some(object) = choice.as_object() else {
        return Err(ApiError::invalid(
            "tool_choice",
            "tool_choice: must be an object such as {\"type\": \"auto\"}",
        ));
    };
    let parallel = match object.get("disable_parallel_tool_use") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(disable)) => !disable,
        Some(_) => {
            return Err(ApiError::invalid(
                "tool_choice.disable_parallel_tool_use",
                "tool_choice.disable_parallel_tool_use: must be a boolean",
            ));
        }
    };
    let kind = object.get("type").and_then(Value::as_str);
    let allowed: &[&str] = match kind {
        Some("tool") => &["type", "name", "disable_parallel_tool_use"],
        Some("none") => &["type"],
        _ => &["type", "disable_parallel_tool_use"],
    };
    if let Some(key) = object.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            format!("tool_choice.{key}"),
            format!("tool_choice.{key}: Extra inputs are not permitted"),
        ));
    }
    let openai = match kind {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => match object.get("name").and_then(Value::as_str) {
            Some(name) => json!({"type": "function", "function": {"name": name}}),
            None => {
                return Err(ApiError::invalid(
                    "tool_choice.name",
                    "tool_choice.name: Field required for a tool_choice of type 'tool'",
                ));
            }
        },
        _ => {
            return Err(ApiError::invalid(
                "tool_choice.type",
                format!(
                    "tool_choice.type: must be 'auto', 'any', 'tool' or 'none', got {}",
                    object.get("type").unwrap_or(&Value::Null)
                ),
            ));
        }
    };
    let choice = structured::tool_choice(Some(&openai), tools).map_err(|e| match e {
        ApiError::InvalidRequest { message, .. } => ApiError::InvalidRequest {
            message: format!("tool_choice: {message}"),
            param: Some("tool_choice".into()),
        },
        other => other,
    })?;
    Ok((choice, parallel))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(e: ApiError) -> String {
        match e {
            ApiError::InvalidRequest { param, .. } => param.unwrap_or_default(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn custom_tools_become_function_tools() {
        let tools = [json!({"name": "get_weather", "description": "Weather.",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            "cache_control": {"type": "ephemeral"}})];
        let out = function_tools(&tools).unwrap();
        assert_eq!(
            out[0],
            json!({"type": "function", "function": {"name": "get_weather",
                "description": "Weather.", "parameters": {"type": "object",
                "properties": {"city": {"type": "string"}}}}})
        );
    }

    #[test]
    fn bad_tools_name_their_field_in_this_apis_paths() {
        let schema = json!({"type": "object"});
        let bad = [
            (json!({"name": "f"}), "tools.0.input_schema"),
            (
                json!({"name": "f", "input_schema": {"type": "string"}}),
                "tools.0.input_schema.type",
            ),
            (
                json!({"name": "a b", "input_schema": schema}),
                "tools.0.name",
            ),
            (json!({"input_schema": schema}), "tools.0.name"),
            (
                json!({"name": "f", "input_schema": schema, "strict": true}),
                "tools.0.strict",
            ),
            (
                json!({"type": "bash_20250124", "name": "bash"}),
                "tools.0.type",
            ),
            (
                json!({"name": "f", "input_schema": {"type": "object", "required": "x"}}),
                "tools.0.input_schema",
            ),
        ];
        for (tool, want) in bad {
            assert_eq!(param(function_tools(&[tool]).unwrap_err()), want);
        }
        let twice = [
            json!({"name": "f", "input_schema": schema}),
            json!({"name": "f", "input_schema": schema}),
        ];
        assert_eq!(param(function_tools(&twice).unwrap_err()), "tools.1.name");
    }

    #[test]
    fn tool_choices_map_onto_the_chat_routes() {
        let tools =
            function_tools(&[json!({"name": "f", "input_schema": {"type": "object"}})]).unwrap();
        let read = |v: Value| tool_choice(Some(&v), Some(&tools));
        assert_eq!(
            read(json!({"type": "auto"})).unwrap(),
            (ToolChoice::Auto, true)
        );
        assert_eq!(
            read(json!({"type": "any", "disable_parallel_tool_use": true})).unwrap(),
            (ToolChoice::Required, false)
        );
        assert_eq!(
            read(json!({"type": "tool", "name": "f"})).unwrap(),
            (ToolChoice::Function("f".into()), true)
        );
        assert_eq!(
            read(json!({"type": "none"})).unwrap(),
            (ToolChoice::None, true)
        );
        assert_eq!(tool_choice(None, None).unwrap(), (ToolChoice::Auto, true));
        assert_eq!(
            param(read(json!({"type": "tool", "name": "g"})).unwrap_err()),
            "tool_choice"
        );
        assert_eq!(
            param(read(json!({"type": "tool"})).unwrap_err()),
            "tool_choice.name"
        );
        assert_eq!(
            param(read(json!({"type": "required"})).unwrap_err()),
            "tool_choice.type"
        );
        assert_eq!(param(read(json!("auto")).unwrap_err()), "tool_choice");
        assert_eq!(
            param(tool_choice(Some(&json!({"type": "any"})), None).unwrap_err()),
            "tool_choice"
        );
    }
}
