//! Tool definitions and `tool_choice`, validated.
//!
//! Follows the OpenAI API reference for `tools` (`{"type": "function",
//! "function": {"name", "description", "parameters", "strict"}}`, names of
//! at most 64 characters from `a-z A-Z 0-9 _ -`, `parameters` a JSON Schema
//! object) and `tool_choice` (`"none"`, `"auto"`, `"required"`, or
//! `{"type": "function", "function": {"name"}}` naming one of the tools).
//! Every error is a 400 naming the parameter (`tools[0].function.parameters`).

use serde_json::Value;

use crate::error::ApiError;

/// The longest function name OpenAI accepts.
pub const MAX_FUNCTION_NAME: usize = 64;

/// What the model may do with the tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// Tools are not offered to the model and its reply is not parsed for
    /// calls (the default without tools).
    None,
    /// The model decides (the default with tools).
    Auto,
    /// The model must call at least one tool.
    Required,
    /// The model must call this function.
    Function(String),
}

impl ToolChoice {
    /// Whether the tools reach the template and calls are parsed.
    pub fn offers_tools(&self) -> bool {
        *self != ToolChoice::None
    }
}

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

/// Reads `tool_choice` against the request's tools.
pub(crate) fn tool_choice(choice: Option<Value>, tools: &[Value]) -> Result<ToolChoice, ApiError> {
    let invalid = |message: String| Err(ApiError::invalid("tool_choice", message));
    let choice = match choice {
        None if tools.is_empty() => return Ok(ToolChoice::None),
        None => return Ok(ToolChoice::Auto),
        Some(choice) => choice,
    };
    let parsed = match &choice {
        Value::String(s) if s == "none" => ToolChoice::None,
        Value::String(s) if s == "auto" => ToolChoice::Auto,
        Value::String(s) if s == "required" => ToolChoice::Required,
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            match o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
            {
                Some(name) => ToolChoice::Function(name.to_owned()),
                None => {
                    return invalid(
                        "tool_choice.function.name is required when tool_choice names a \
                         function"
                            .into(),
                    );
                }
            }
        }
        other => {
            return invalid(format!(
                "tool_choice must be \"none\", \"auto\", \"required\" or {{\"type\": \
                 \"function\", \"function\": {{\"name\": ...}}}}, got {other}"
            ));
        }
    };
    match &parsed {
        ToolChoice::Required | ToolChoice::Function(_) if tools.is_empty() => {
            invalid("tool_choice requires tools".into())
        }
        ToolChoice::Function(name)
            if !tools
                .iter()
                .any(|t| t["function"]["name"].as_str() == Some(name)) =>
        {
            invalid(format!(
                "tool_choice names the function {name:?}, which is not in tools"
            ))
        }
        _ => Ok(parsed),
    }
}

/// `required` and a named function are kept by constraining what the model
/// may sample; until the sampler does so they are refused rather than
/// accepted and left to chance.
pub(crate) fn check_enforceable(choice: &ToolChoice) -> Result<(), ApiError> {
    match choice {
        ToolChoice::Required | ToolChoice::Function(_) => Err(ApiError::invalid(
            "tool_choice",
            "tool_choice \"required\" and named functions are not supported yet: forcing a call \
             needs grammar-constrained sampling; use \"auto\"",
        )),
        ToolChoice::None | ToolChoice::Auto => Ok(()),
    }
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
