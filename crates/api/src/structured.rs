//! What a request asks of its output's structure: `response_format` (free
//! text, any JSON object, or JSON that satisfies a schema) and
//! `tool_choice` with `parallel_tool_calls`, checked against the OpenAI
//! API reference's shapes. Each malformed value is a 400 naming the exact
//! parameter (`response_format.json_schema.name`, `tool_choice`, ...).
//!
//! Whether a schema compiles is the server's to check (it compiles the
//! grammar against the model's tokenizer before a worker is involved).

use serde_json::Value;

use crate::error::ApiError;

/// `response_format`.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum ResponseFormat {
    /// `{"type": "text"}` or absent.
    #[default]
    Text,
    /// `{"type": "json_object"}`: any JSON object.
    JsonObject,
    /// `{"type": "json_schema", "json_schema": {...}}`.
    JsonSchema {
        name: String,
        /// The schema, as sent (an object or a boolean).
        schema: Value,
        strict: bool,
    },
}

/// `tool_choice`, checked against `tools`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ToolChoice {
    /// `"none"`: the model must not call tools.
    None,
    /// `"auto"` or absent: the model decides.
    #[default]
    Auto,
    /// `"required"`: at least one call.
    Required,
    /// `{"type": "function", "function": {"name": ...}}`: this function.
    Function(String),
}

impl ToolChoice {
    /// Whether the tools reach the template and the reply is parsed for
    /// calls (all but `"none"`).
    pub fn offers_tools(&self) -> bool {
        *self != ToolChoice::None
    }

    /// Whether the output must be tool calls.
    pub fn forces_call(&self) -> bool {
        matches!(self, ToolChoice::Required | ToolChoice::Function(_))
    }
}

/// Reads `response_format`.
pub fn response_format(value: Option<Value>) -> Result<ResponseFormat, ApiError> {
    let Some(value) = value else {
        return Ok(ResponseFormat::Text);
    };
    let Value::Object(mut format) = value else {
        return Err(ApiError::invalid(
            "response_format",
            "response_format must be an object such as {\"type\": \"json_object\"}",
        ));
    };
    let kind = match format.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        Some(_) => {
            return Err(ApiError::invalid(
                "response_format.type",
                "response_format.type must be a string",
            ));
        }
        None => {
            return Err(ApiError::invalid(
                "response_format.type",
                "Missing required parameter: 'response_format.type'.",
            ));
        }
    };
    match kind.as_str() {
        "text" => Ok(ResponseFormat::Text),
        "json_object" => Ok(ResponseFormat::JsonObject),
        "json_schema" => json_schema(format.remove("json_schema")),
        other => Err(ApiError::invalid(
            "response_format.type",
            format!(
                "response_format.type must be 'text', 'json_object' or 'json_schema', got '{other}'"
            ),
        )),
    }
}

fn json_schema(value: Option<Value>) -> Result<ResponseFormat, ApiError> {
    const PARAM: &str = "response_format.json_schema";
    let Some(Value::Object(mut spec)) = value else {
        return Err(ApiError::invalid(
            PARAM,
            "response_format.json_schema must be an object with a name and a schema",
        ));
    };
    let name = match spec.remove("name") {
        Some(Value::String(name)) if valid_name(&name) => name,
        _ => {
            return Err(ApiError::invalid(
                "response_format.json_schema.name",
                "response_format.json_schema.name must be 1 to 64 letters, digits, '_' or '-'",
            ));
        }
    };
    let schema = match spec.remove("schema") {
        Some(schema @ (Value::Object(_) | Value::Bool(_))) => schema,
        Some(_) => {
            return Err(ApiError::invalid(
                "response_format.json_schema.schema",
                "response_format.json_schema.schema must be a JSON schema object",
            ));
        }
        None => {
            return Err(ApiError::invalid(
                "response_format.json_schema.schema",
                "Missing required parameter: 'response_format.json_schema.schema'.",
            ));
        }
    };
    let strict = match spec.remove("strict") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => {
            return Err(ApiError::invalid(
                "response_format.json_schema.strict",
                "response_format.json_schema.strict must be a boolean",
            ));
        }
    };
    Ok(ResponseFormat::JsonSchema {
        name,
        schema,
        strict,
    })
}

/// OpenAI's rule for schema and function names.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The function name of each tool (`tools[i].function.name`).
pub fn tool_names(tools: &[Value]) -> Result<Vec<&str>, ApiError> {
    tools
        .iter()
        .enumerate()
        .map(|(i, tool)| {
            tool.pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ApiError::invalid(
                        format!("tools[{i}].function.name"),
                        format!("tools[{i}].function.name must be a string"),
                    )
                })
        })
        .collect()
}

/// Reads `tool_choice` against the request's `tools`.
pub fn tool_choice(value: Option<&Value>, tools: Option<&[Value]>) -> Result<ToolChoice, ApiError> {
    const PARAM: &str = "tool_choice";
    let tools = tools.unwrap_or_default();
    let choice = match value {
        None | Some(Value::Null) => return Ok(ToolChoice::Auto),
        Some(Value::String(s)) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => {
                return Err(ApiError::invalid(
                    PARAM,
                    format!(
                        "tool_choice must be 'none', 'auto', 'required' or an object naming a function, got '{other}'"
                    ),
                ));
            }
        },
        Some(Value::Object(o)) => {
            if o.get("type").and_then(Value::as_str) != Some("function") {
                return Err(ApiError::invalid(
                    "tool_choice.type",
                    "tool_choice.type must be 'function'",
                ));
            }
            let Some(name) = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
            else {
                return Err(ApiError::invalid(
                    "tool_choice.function.name",
                    "Missing required parameter: 'tool_choice.function.name'.",
                ));
            };
            ToolChoice::Function(name.to_owned())
        }
        Some(_) => {
            return Err(ApiError::invalid(
                PARAM,
                "tool_choice must be a string or an object naming a function",
            ));
        }
    };
    if choice.forces_call() && tools.is_empty() {
        return Err(ApiError::invalid(
            PARAM,
            "tool_choice requires tools: none were given",
        ));
    }
    if let ToolChoice::Function(name) = &choice {
        if !tool_names(tools)?.contains(&name.as_str()) {
            return Err(ApiError::invalid(
                PARAM,
                format!("tool_choice names the function '{name}', which is not among the tools"),
            ));
        }
    }
    Ok(choice)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn param(e: ApiError) -> String {
        match e {
            ApiError::InvalidRequest { param, .. } => param.unwrap_or_default(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn response_formats_are_read_and_bad_ones_name_their_field() {
        assert_eq!(response_format(None).unwrap(), ResponseFormat::Text);
        assert_eq!(
            response_format(Some(json!({"type": "json_object"}))).unwrap(),
            ResponseFormat::JsonObject
        );
        let schema = json!({"type": "object"});
        assert_eq!(
            response_format(Some(json!({"type": "json_schema",
                "json_schema": {"name": "w_1", "schema": schema, "strict": true}})))
            .unwrap(),
            ResponseFormat::JsonSchema {
                name: "w_1".into(),
                schema,
                strict: true
            }
        );
        let bad = [
            (json!("json"), "response_format"),
            (json!({}), "response_format.type"),
            (json!({"type": "yaml"}), "response_format.type"),
            (
                json!({"type": "json_schema"}),
                "response_format.json_schema",
            ),
            (
                json!({"type": "json_schema", "json_schema": {"schema": {}}}),
                "response_format.json_schema.name",
            ),
            (
                json!({"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}),
                "response_format.json_schema.name",
            ),
            (
                json!({"type": "json_schema", "json_schema": {"name": "a"}}),
                "response_format.json_schema.schema",
            ),
            (
                json!({"type": "json_schema", "json_schema": {"name": "a", "schema": 3}}),
                "response_format.json_schema.schema",
            ),
            (
                json!({"type": "json_schema", "json_schema": {"name": "a", "schema": {}, "strict": "yes"}}),
                "response_format.json_schema.strict",
            ),
        ];
        for (value, want) in bad {
            assert_eq!(param(response_format(Some(value)).unwrap_err()), want);
        }
    }

    #[test]
    fn tool_choices_are_checked_against_the_tools() {
        let tools = [json!({"type": "function", "function": {"name": "get_weather"}})];
        let named = json!({"type": "function", "function": {"name": "get_weather"}});
        assert_eq!(
            tool_choice(Some(&named), Some(&tools)).unwrap(),
            ToolChoice::Function("get_weather".into())
        );
        assert_eq!(
            tool_choice(Some(&json!("required")), Some(&tools)).unwrap(),
            ToolChoice::Required
        );
        assert_eq!(tool_choice(None, None).unwrap(), ToolChoice::Auto);
        assert_eq!(
            tool_choice(Some(&json!("none")), None).unwrap(),
            ToolChoice::None
        );
        let unknown = json!({"type": "function", "function": {"name": "nope"}});
        assert_eq!(
            param(tool_choice(Some(&unknown), Some(&tools)).unwrap_err()),
            "tool_choice"
        );
        assert_eq!(
            param(tool_choice(Some(&json!("required")), None).unwrap_err()),
            "tool_choice"
        );
        assert_eq!(
            param(tool_choice(Some(&json!("always")), Some(&tools)).unwrap_err()),
            "tool_choice"
        );
        assert_eq!(
            param(tool_choice(Some(&json!({"type": "function"})), Some(&tools)).unwrap_err()),
            "tool_choice.function.name"
        );
    }
}
