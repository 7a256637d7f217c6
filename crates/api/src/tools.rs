//! Tool definitions and `reasoning_effort`, validated.
//!
//! Follows the OpenAI API reference for `tools` (`{"type": "function",
//! "function": {"name", "description", "parameters", "strict"}}`, names of
//! at most 64 characters from `a-z A-Z 0-9 _ -`, `parameters` a JSON Schema
//! object). Every error is a 400 naming the parameter
//! (`tools[0].function.parameters`). `tool_choice` is read in
//! [`crate::structured`].

use serde_json::Value;

use crate::error::ApiError;

/// The longest function name OpenAI accepts.
pub const MAX_FUNCTION_NAME: usize = 64;

/// Checks each tool definition.
pub(crate) fn check_tools(tools: &[Value]) -> Result<(), ApiError> {
    let mut names: Vec<&str> = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        let at = format!("tools[{i}]");
        let Some(tool) = tool.as_object() else {
            return Err(ApiError::invalid(
                at.clone(),
                format!(
                    "{at} must be an object such as {{\"type\": \"function\", \"function\": {{...}}}}"
                ),
            ));
        };
        match tool.get("type") {
            Some(Value::String(t)) if t == "function" => {}
            other => {
                return Err(ApiError::invalid(
                    format!("{at}.type"),
                    format!("{at}.type must be \"function\", got {}", shown(other)),
                ));
            }
        }
        let Some(function) = tool.get("function").and_then(Value::as_object) else {
            return Err(ApiError::invalid(
                format!("{at}.function"),
                format!("{at}.function must be an object with a name"),
            ));
        };
        let name = match function.get("name") {
            Some(Value::String(name)) if valid_name(name) => name.as_str(),
            other => {
                return Err(ApiError::invalid(
                    format!("{at}.function.name"),
                    format!(
                        "{at}.function.name must be 1 to {MAX_FUNCTION_NAME} characters of \
                         a-z, A-Z, 0-9, underscores and dashes, got {}",
                        shown(other)
                    ),
                ));
            }
        };
        if names.contains(&name) {
            return Err(ApiError::invalid(
                format!("{at}.function.name"),
                format!("{at}.function.name {name:?} is defined twice"),
            ));
        }
        names.push(name);
        if let Some(description) = function.get("description") {
            if !description.is_string() && !description.is_null() {
                return Err(ApiError::invalid(
                    format!("{at}.function.description"),
                    format!("{at}.function.description must be a string"),
                ));
            }
        }
        if let Some(parameters) = function.get("parameters") {
            check_parameters(&format!("{at}.function.parameters"), parameters)?;
        }
    }
    Ok(())
}

/// `parameters`: a JSON Schema object describing an object.
fn check_parameters(at: &str, parameters: &Value) -> Result<(), ApiError> {
    let fail = |why: &str| Err(ApiError::invalid(at, format!("{at} {why}")));
    let Some(schema) = parameters.as_object() else {
        return fail("must be a JSON Schema object");
    };
    match schema.get("type") {
        None => {}
        Some(Value::String(t)) if t == "object" => {}
        Some(other) => return fail(&format!("must have \"type\": \"object\", got {other}")),
    }
    if let Some(properties) = schema.get("properties") {
        let Some(properties) = properties.as_object() else {
            return fail("properties must be an object");
        };
        if let Some((key, _)) = properties
            .iter()
            .find(|(_, v)| !v.is_object() && !v.is_boolean())
        {
            return fail(&format!("properties.{key} must be a JSON Schema"));
        }
    }
    if let Some(required) = schema.get("required") {
        if !required
            .as_array()
            .is_some_and(|r| r.iter().all(Value::is_string))
        {
            return fail("required must be an array of strings");
        }
    }
    Ok(())
}

fn valid_name(name: &str) -> bool {
    (1..=MAX_FUNCTION_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn shown(value: Option<&Value>) -> String {
    value.map_or_else(|| "nothing".to_owned(), Value::to_string)
}

/// `reasoning_effort`, passed to the template (gpt-oss reads it).
pub(crate) fn reasoning_effort(effort: Option<String>) -> Result<Option<String>, ApiError> {
    const LEVELS: [&str; 5] = ["none", "minimal", "low", "medium", "high"];
    match effort {
        Some(e) if !LEVELS.contains(&e.as_str()) => Err(ApiError::invalid(
            "reasoning_effort",
            format!("reasoning_effort must be one of {LEVELS:?}, got {e:?}"),
        )),
        other => Ok(other),
    }
}
