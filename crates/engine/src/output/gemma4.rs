//! Gemma 4's calls: `<|tool_call>call:NAME{key:<|"|>text<|"|>,n:5}<tool_call|>`,
//! with bare keys and strings between `<|"|>` delimiters.
//!
//! Follows mlx-lm's `tool_parsers/gemma4.py`: strings are taken out first
//! (so braces and colons inside them are text), bare keys after `{` or `,`
//! are quoted, and the result is read as JSON. A block may hold several
//! `call:` entries.

use serde_json::Value;

use super::{Delimited, ParsedCall, ToolSchemas};

const QUOTE: &str = "<|\"|>";

pub(crate) fn parser(tools: ToolSchemas) -> Delimited {
    Delimited::new(&["<|tool_call>"], Some("<tool_call|>"), body, tools)
}

fn body(body: &str, _: &ToolSchemas) -> Result<Vec<ParsedCall>, String> {
    let mut calls = Vec::new();
    let mut rest = body.trim();
    while !rest.is_empty() {
        let call = rest
            .strip_prefix("call:")
            .ok_or_else(|| format!("expected call:NAME{{...}}, got {rest:?}"))?;
        let open = call.find('{').ok_or("call:NAME without arguments")?;
        let name = &call[..open];
        let (json, used) = to_json(&call[open..])?;
        let arguments: Value = serde_json::from_str(&json).map_err(|e| e.to_string())?;
        calls.push(ParsedCall::new(name, arguments)?);
        rest = call[open + used..].trim_start();
    }
    Ok(calls)
}

/// Converts one balanced `{...}` at the start of `text` to JSON; returns it
/// and the bytes of `text` it covered.
fn to_json(text: &str) -> Result<(String, usize), String> {
    let mut out = String::new();
    let mut depth = 0usize;
    let mut i = 0;
    let mut last_significant = ' ';
    while i < text.len() {
        let rest = &text[i..];
        if let Some(inner) = rest.strip_prefix(QUOTE) {
            let end = inner.find(QUOTE).ok_or("an unterminated <|\"|> string")?;
            out.push_str(&Value::String(inner[..end].to_owned()).to_string());
            i += QUOTE.len() * 2 + end;
            last_significant = '"';
            continue;
        }
        let c = rest.chars().next().ok_or("unexpected end")?;
        if (c.is_alphabetic() || c == '_') && matches!(last_significant, '{' | ',') {
            let len = rest
                .find(|ch: char| !(ch.is_alphanumeric() || ch == '_' || ch == '-'))
                .unwrap_or(rest.len());
            let word = &rest[..len];
            if rest[len..].starts_with(':') {
                out.push_str(&Value::String(word.to_owned()).to_string());
            } else {
                out.push_str(word);
            }
            i += len;
            last_significant = 'w';
            continue;
        }
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => depth = depth.checked_sub(1).ok_or("unbalanced braces")?,
            _ => {}
        }
        out.push(c);
        i += c.len_utf8();
        if !c.is_whitespace() {
            last_significant = c;
        }
        if depth == 0 {
            return Ok((out, i));
        }
    }
    Err("unbalanced braces".into())
}

#[cfg(test)]
mod tests {
    use super::super::ToolFormat;
    use super::super::testing::{call, content, parser, run_split};
    use serde_json::json;

    #[test]
    fn gemma_calls_become_json() {
        let p = || parser(ToolFormat::Gemma4, "", json!([]));
        let text = "<|tool_call>call:get_weather{city:<|\"|>Paris, {FR}: 1<|\"|>,days:3,\
                    units:{metric:true},tags:[<|\"|>a<|\"|>]}<tool_call|>";
        assert_eq!(
            run_split(&p, text),
            vec![call(
                "get_weather",
                json!({"city": "Paris, {FR}: 1", "days": 3, "units": {"metric": true},
                       "tags": ["a"]})
            )]
        );
        let broken = "<|tool_call>call:f{x:<|\"|>open}<tool_call|>";
        assert_eq!(run_split(&p, broken), vec![content(broken)]);
    }
}
