//! JSON decoding errors as 400s that name the parameter.
//!
//! `serde_path_to_error` gives the path of a failing value
//! (`messages[1].content`); serde's message names Rust types ("expected
//! f64"), which this module rewrites in JSON's words ("expected a number")
//! and strips of serde_json's line and column, which say nothing useful
//! about a one-line body. Syntax errors keep their position.

use serde_json::error::Category;
use serde_path_to_error::{Path, Segment};

use crate::error::ApiError;

/// The parameter a path names, or `None` for the body itself.
pub(crate) fn param_of(path: &Path) -> Option<String> {
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The 400 for a decoding error at `param`.
pub(crate) fn to_api_error(err: &serde_json::Error, param: Option<String>) -> ApiError {
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::InvalidRequest {
            message: format!("We could not parse the JSON body of your request: {err}"),
            param: None,
        },
        Category::Data => data_error(&strip_position(&err.to_string()), param),
    }
}

fn data_error(detail: &str, param: Option<String>) -> ApiError {
    if let Some(field) = quoted_field(detail, "duplicate field `") {
        let param = join(param.as_deref(), field);
        return ApiError::InvalidRequest {
            message: format!("Duplicate parameter: '{param}'."),
            param: Some(param),
        };
    }
    let Some(param) = param else {
        let message = if detail.starts_with("invalid type") {
            "The request body must be a JSON object".to_owned()
        } else {
            format!("Invalid request body: {detail}")
        };
        return ApiError::InvalidRequest {
            message,
            param: None,
        };
    };
    if let Some(field) = quoted_field(detail, "missing field `") {
        let param = join(Some(&param), field);
        return ApiError::InvalidRequest {
            message: format!("Missing required parameter: '{param}'."),
            param: Some(param),
        };
    }
    ApiError::InvalidRequest {
        message: format!("Invalid '{param}': {}", humanize(detail)),
        param: Some(param),
    }
}

/// `field` from "<prefix>field`".
fn quoted_field<'a>(detail: &'a str, prefix: &str) -> Option<&'a str> {
    detail.strip_prefix(prefix)?.strip_suffix('`')
}

fn join(parent: Option<&str>, field: &str) -> String {
    match parent {
        Some(parent) => format!("{parent}.{field}"),
        None => field.to_owned(),
    }
}

/// serde_json's message without " at line L column C".
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// "invalid type: string \"x\", expected f64" → "expected a number, got a
/// string \"x\"".
fn humanize(detail: &str) -> String {
    let parsed = detail
        .strip_prefix("invalid type: ")
        .or_else(|| detail.strip_prefix("invalid value: "))
        .and_then(|rest| rest.rsplit_once(", expected "));
    match parsed {
        Some((got, expected)) => format!(
            "expected {}, got {}",
            expected_words(expected),
            got_words(got)
        ),
        None => detail.to_owned(),
    }
}

fn expected_words(expected: &str) -> &str {
    match expected {
        "f32" | "f64" => "a number",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer",
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a non-negative integer",
        "a sequence" => "an array",
        "a map" => "an object",
        "a boolean" => "a boolean (true or false)",
        other => other.strip_prefix("struct ").map_or(other, |_| "an object"),
    }
}

fn got_words(got: &str) -> String {
    let got = got.replace('`', "");
    match got.as_str() {
        "sequence" => "an array".to_owned(),
        "map" => "an object".to_owned(),
        "unit value" | "null" => "null".to_owned(),
        _ => match got.strip_prefix("floating point ") {
            Some(number) => format!("number {number}"),
            None => got,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_type_names_become_json_words() {
        assert_eq!(
            humanize("invalid type: string \"hot\", expected f64"),
            "expected a number, got string \"hot\""
        );
        assert_eq!(
            humanize("invalid type: sequence, expected a string"),
            "expected a string, got an array"
        );
        assert_eq!(
            humanize("invalid type: floating point `1.5`, expected i64"),
            "expected an integer, got number 1.5"
        );
        assert_eq!(humanize("something else"), "something else");
    }

    #[test]
    fn positions_are_stripped() {
        assert_eq!(strip_position("oops at line 1 column 7"), "oops");
        assert_eq!(strip_position("oops"), "oops");
    }
}
