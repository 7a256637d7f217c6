//! Validation of the tool fields of a chat body (`tools`, `tool_choice`,
//! `parallel_tool_calls`) and of the template kwargs they travel with.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;

use api::{PromptInput, ToolChoice};
use serde_json::json;

#[test]
fn tool_choice_and_parallel_tool_calls_are_read() {
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let req = chat(json!({"tools": tools})).unwrap();
    assert_eq!(
        (req.tool_choice, req.parallel_tool_calls),
        (ToolChoice::Auto, true)
    );
    let req =
        chat(json!({"tools": tools, "tool_choice": "none", "parallel_tool_calls": false})).unwrap();
    assert_eq!(
        (req.tool_choice, req.parallel_tool_calls),
        (ToolChoice::None, false)
    );
}

#[test]
fn malformed_tools_and_tool_choice_are_400s_naming_the_parameter() {
    let f = |function: serde_json::Value| json!({"tools": [{"type": "function", "function": function}]});
    assert_invalid(
        chat(f(json!({"name": "f", "parameters": "object"}))),
        "tools[0].function.parameters",
        "JSON Schema object",
    );
    assert_invalid(
        chat(f(json!({"name": "f", "parameters": {"type": "array"}}))),
        "tools[0].function.parameters",
        "\"type\": \"object\"",
    );
    assert_invalid(
        chat(f(
            json!({"name": "f", "parameters": {"properties": {"x": 3}}}),
        )),
        "tools[0].function.parameters",
        "properties.x",
    );
    assert_invalid(
        chat(f(json!({"name": "f", "parameters": {"required": "x"}}))),
        "tools[0].function.parameters",
        "required",
    );
    assert_invalid(
        chat(f(json!({"name": "a b"}))),
        "tools[0].function.name",
        "characters",
    );
    assert_invalid(chat(f(json!({}))), "tools[0].function.name", "nothing");
    assert_invalid(
        chat(json!({"tools": [{"type": "custom", "function": {"name": "f"}}]})),
        "tools[0].type",
        "\"function\"",
    );
    assert_invalid(
        chat(json!({"tools": [{"type": "function"}]})),
        "tools[0].function",
        "object",
    );
    let two = json!({"tools": [{"type": "function", "function": {"name": "f"}},
                                 {"type": "function", "function": {"name": "f"}}]});
    assert_invalid(chat(two), "tools[1].function.name", "twice");
    let tools = json!([{"type": "function", "function": {"name": "f"}}]);
    assert_invalid(
        chat(json!({"tools": tools,
                    "tool_choice": {"type": "function", "function": {"name": "g"}}})),
        "tool_choice",
        "not among the tools",
    );
    assert_invalid(
        chat(json!({"tool_choice": "required"})),
        "tool_choice",
        "requires tools",
    );
    assert_invalid(
        chat(json!({"tools": tools, "tool_choice": "any"})),
        "tool_choice",
        "'auto'",
    );
    assert_invalid(
        chat(json!({"reasoning_effort": "extreme"})),
        "reasoning_effort",
        "one of",
    );
}

#[test]
fn reasoning_effort_reaches_the_template_unless_the_kwargs_set_it() {
    let kwargs = |body: serde_json::Value| match chat(body).unwrap().prompts.remove(0) {
        PromptInput::Chat {
            template_kwargs, ..
        } => template_kwargs,
        _ => panic!("not a chat prompt"),
    };
    assert_eq!(
        kwargs(json!({"reasoning_effort": "low"}))["reasoning_effort"],
        "low"
    );
    let both = json!({"reasoning_effort": "low",
                      "chat_template_kwargs": {"reasoning_effort": "high"}});
    assert_eq!(kwargs(both)["reasoning_effort"], "high");
}
