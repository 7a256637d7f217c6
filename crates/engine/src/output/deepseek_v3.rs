//! DeepSeek-V3 / R1 calls inside
//! `<｜tool▁calls▁begin｜>…<｜tool▁calls▁end｜>`, each
//! `<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{...}<｜tool▁call▁end｜>` (V3.1 and
//! later) or `<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\n{...}\n```<｜tool▁call▁end｜>`
//! (V3, R1).
//!
//! Follows vLLM's `deepseekv3_tool_parser.py` and `deepseekv31_tool_parser.py`.

use serde_json::Value;

use super::{Delimited, ParsedCall, ToolSchemas};

const CALLS_BEGIN: &str = "<｜tool▁calls▁begin｜>";
const CALLS_END: &str = "<｜tool▁calls▁end｜>";
const CALL_BEGIN: &str = "<｜tool▁call▁begin｜>";
const CALL_END: &str = "<｜tool▁call▁end｜>";
const SEP: &str = "<｜tool▁sep｜>";

pub(crate) fn parser(tools: ToolSchemas) -> Delimited {
    Delimited::new(&[CALLS_BEGIN], Some(CALLS_END), body, tools)
}

fn body(body: &str, _: &ToolSchemas) -> Result<Vec<ParsedCall>, String> {
    let mut calls = Vec::new();
    let mut rest = body.trim();
    while !rest.is_empty() {
        let inner = rest
            .strip_prefix(CALL_BEGIN)
            .ok_or_else(|| format!("expected {CALL_BEGIN}, got {rest:?}"))?;
        // A call cut off at the end of the reply has no end marker.
        let (call, after) = inner.split_once(CALL_END).unwrap_or((inner, ""));
        let (head, tail) = call
            .split_once(SEP)
            .ok_or("a call without <｜tool▁sep｜>")?;
        let (name, arguments) = if head.trim() == "function" && tail.contains("```") {
            let (name, fenced) = tail
                .split_once('\n')
                .ok_or("a fenced call without a name")?;
            let json = fenced
                .trim()
                .strip_prefix("```json")
                .and_then(|s| s.trim_end().strip_suffix("```"))
                .ok_or("arguments outside a ```json fence")?;
            (name, json)
        } else {
            (head, tail)
        };
        let value: Value = serde_json::from_str(arguments.trim()).map_err(|e| e.to_string())?;
        calls.push(ParsedCall::new(name, value)?);
        rest = after.trim_start();
    }
    Ok(calls)
}

#[cfg(test)]
mod tests {
    use super::super::ToolFormat;
    use super::super::testing::{call, content, parser, run_split};
    use serde_json::json;

    #[test]
    fn both_deepseek_forms_become_calls() {
        let p = || parser(ToolFormat::DeepSeekV3, "", json!([]));
        let v31 = "On it.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>\
                   {\"city\": \"Paris\"}<｜tool▁call▁end｜><｜tool▁call▁begin｜>time<｜tool▁sep｜>{}\
                   <｜tool▁call▁end｜><｜tool▁calls▁end｜>";
        assert_eq!(
            run_split(&p, v31),
            vec![
                content("On it."),
                call("get_weather", json!({"city": "Paris"})),
                call("time", json!({}))
            ]
        );
        let v3 = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n\
                  ```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
        assert_eq!(
            run_split(&p, v3),
            vec![call("get_weather", json!({"city": "Paris"}))]
        );
    }
}
