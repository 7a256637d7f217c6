use serde_json::json;

use super::*;
use crate::response::{FinishReason, ToolCall};
use crate::structured::ResponseFormat;

fn parse(body: Value) -> Result<ResponsesRequest, ApiError> {
    parse_responses_for(body.to_string().as_bytes(), None)
}

fn param_of(body: Value) -> String {
    let e = parse(body.clone()).expect_err("invalid");
    assert_eq!(e.status(), 400, "{body}");
    e.param().unwrap_or_default().to_owned()
}

#[test]
fn a_string_input_becomes_a_chat_request() {
    let req = parse(
        json!({"model": "m", "input": "hi", "instructions": "be brief",
                           "max_output_tokens": 20, "temperature": 0.5, "top_p": 0.9,
                           "reasoning": {"effort": "low"}, "stream": true}),
    )
    .expect("valid");
    let generation = req.generation(&[]);
    assert_eq!(generation.endpoint, Endpoint::Responses);
    assert_eq!(generation.max_tokens, Some(20));
    assert_eq!(generation.sampling.temperature, 0.5);
    assert!(generation.stream);
    let PromptInput::Chat {
        messages,
        tools,
        template_kwargs,
    } = &generation.prompts[0]
    else {
        panic!("a chat prompt");
    };
    assert_eq!(
        messages,
        &vec![
            json!({"role": "system", "content": "be brief"}),
            json!({"role": "user", "content": "hi"})
        ]
    );
    assert_eq!(tools, &None);
    assert_eq!(template_kwargs["reasoning_effort"], "low");
    assert!(req.store);
    assert_eq!(
        req.echo.reasoning,
        json!({"effort": "low", "summary": null})
    );
}

#[test]
fn history_comes_before_the_input_and_after_the_instructions() {
    let req = parse(json!({"model": "m", "instructions": "sys",
                           "input": [{"role": "user", "content": "again"}]}))
    .expect("valid");
    let history = [
        Item::Message {
            id: None,
            role: "user".into(),
            text: "first".into(),
        },
        Item::Message {
            id: Some("msg_1".into()),
            role: "assistant".into(),
            text: "answer".into(),
        },
    ];
    let PromptInput::Chat { messages, .. } = &req.generation(&history).prompts[0] else {
        panic!("a chat prompt");
    };
    let contents: Vec<_> = messages.iter().map(|m| m["content"].clone()).collect();
    assert_eq!(
        contents,
        [
            json!("sys"),
            json!("first"),
            json!("answer"),
            json!("again")
        ]
    );
}

#[test]
fn function_tools_are_kept_and_others_ignored() {
    let req = parse(json!({
        "model": "m", "input": "x",
        "tools": [
            {"type": "web_search"},
            {"type": "function", "name": "get_weather", "description": "d",
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
             "strict": true},
            {"type": "custom", "name": "apply_patch"},
            {"type": "local_shell"},
        ],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "parallel_tool_calls": false,
    }))
    .expect("valid");
    assert_eq!(req.ignored_tools, ["web_search", "custom", "local_shell"]);
    assert_eq!(req.echo.tools.len(), 1);
    let generation = req.generation(&[]);
    assert_eq!(
        generation.tool_choice,
        ToolChoice::Function("get_weather".into())
    );
    assert!(!generation.parallel_tool_calls);
    let PromptInput::Chat { tools, .. } = &generation.prompts[0] else {
        panic!("a chat prompt");
    };
    assert_eq!(
        tools.as_deref().expect("tools")[0],
        json!({"type": "function", "function": {"name": "get_weather", "description": "d",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
               "strict": true}})
    );
}

#[test]
fn text_format_becomes_the_response_format() {
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
    let req = parse(json!({"model": "m", "input": "x",
        "text": {"format": {"type": "json_schema", "name": "thing", "schema": schema,
                            "strict": true}, "verbosity": "low"}}))
    .expect("valid");
    assert_eq!(
        req.generation(&[]).response_format,
        ResponseFormat::JsonSchema {
            name: "thing".into(),
            schema,
            strict: true
        }
    );
    assert_eq!(req.echo.text["verbosity"], "low");
    let req =
        parse(json!({"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}}))
            .expect("valid");
    assert_eq!(
        req.generation(&[]).response_format,
        ResponseFormat::JsonObject
    );
}

#[test]
fn bad_parameters_name_the_responses_parameter() {
    let base = |extra: Value| {
        let mut body = json!({"model": "m", "input": "x"});
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        body
    };
    assert_eq!(param_of(json!({"model": "m"})), "input");
    assert_eq!(param_of(json!({"model": "m", "input": []})), "input");
    assert_eq!(param_of(json!({"input": "x"})), "model");
    let cases = [
        (json!({"max_output_tokens": 0}), "max_output_tokens"),
        (json!({"temperature": 3}), "temperature"),
        (json!({"top_p": 0}), "top_p"),
        (json!({"truncation": "auto"}), "truncation"),
        (json!({"background": true}), "background"),
        (json!({"top_logprobs": 3}), "top_logprobs"),
        (
            json!({"include": ["reasoning.encrypted_content", "message.output_text.logprobs"]}),
            "include[1]",
        ),
        (json!({"include": ["nonsense"]}), "include[0]"),
        (json!({"metadata": {"k": 5}}), "metadata.k"),
        (json!({"tools": [{"name": "f"}]}), "tools[0].type"),
        (
            json!({"tools": [{"type": "web_search"}, {"type": "function", "name": "bad name"}]}),
            "tools[1].name",
        ),
        (
            json!({"tools": [{"type": "function", "name": "f", "parameters": {"type": "array"}}]}),
            "tools[0].parameters",
        ),
        (
            json!({"tools": [{"type": "function", "name": "f"}, {"type": "function", "name": "f"}]}),
            "tools[1].name",
        ),
        (json!({"tool_choice": "required"}), "tool_choice"),
        (
            json!({"tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "function"}}),
            "tool_choice.name",
        ),
        (
            json!({"tools": [{"type": "function", "name": "f"}],
                "tool_choice": {"type": "function", "name": "g"}}),
            "tool_choice",
        ),
        (
            json!({"tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search"}}),
            "tool_choice.type",
        ),
        (
            json!({"text": {"format": {"type": "xml"}}}),
            "text.format.type",
        ),
        (
            json!({"text": {"format": {"type": "json_schema", "name": "n"}}}),
            "text.format.schema",
        ),
        (
            json!({"text": {"format": {"type": "json_schema", "schema": {}}}}),
            "text.format.name",
        ),
        (json!({"text": {"verbosity": "loud"}}), "text.verbosity"),
        (
            json!({"reasoning": {"effort": "extreme"}}),
            "reasoning.effort",
        ),
        (
            json!({"reasoning": {"summary": "long"}}),
            "reasoning.summary",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_file"}]}]}),
            "input[0].content[0]",
        ),
        (json!({"temperature": "hot"}), "temperature"),
    ];
    for (extra, expected) in cases {
        assert_eq!(param_of(base(extra.clone())), expected, "{extra}");
    }
}

#[test]
fn an_empty_input_may_continue_a_stored_response() {
    let req =
        parse(json!({"model": "m", "input": [], "previous_response_id": "resp_1"})).expect("valid");
    assert_eq!(req.previous_response_id.as_deref(), Some("resp_1"));
    assert!(req.input.is_empty());
}

fn builder() -> ResponseBuilder {
    let req = parse(json!({"model": "m", "input": "x", "metadata": {"k": "v"}})).expect("valid");
    let mut n = 0;
    ResponseBuilder::new(
        ResponseHead {
            id: "resp_1".into(),
            created_at: 7,
            model: "m".into(),
            instructions: None,
            previous_response_id: None,
            store: true,
        },
        &req.echo,
        move |prefix| {
            n += 1;
            format!("{prefix}_{n}")
        },
    )
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or(""))
        .collect()
}

#[test]
fn events_follow_the_sdk_sequence() {
    let mut b = builder();
    let mut events = b.start();
    events.extend(b.reasoning("thinking"));
    events.extend(b.text("Hel"));
    events.extend(b.text("lo"));
    events.extend(b.calls(vec![ToolCall::function("call_1", "f", "{\"a\":1}")]));
    events.extend(b.finish(FinishReason::ToolCalls, ResponseUsage::new(5, 9, 2), 8));
    assert_eq!(
        kinds(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.reasoning_text.delta",
            "response.reasoning_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let numbers: Vec<u64> = events
        .iter()
        .filter_map(|e| e["sequence_number"].as_u64())
        .collect();
    assert_eq!(numbers, (0..events.len() as u64).collect::<Vec<_>>());
    let done = &events[events.len() - 1]["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["text"], "thinking");
    assert_eq!(done["output"][1]["content"][0]["text"], "Hello");
    assert_eq!(done["output"][1]["status"], "completed");
    assert_eq!(done["output"][2]["call_id"], "call_1");
    assert_eq!(done["output"][2]["arguments"], "{\"a\":1}");
    assert_eq!(done["usage"]["total_tokens"], 14);
    assert_eq!(done["usage"]["input_tokens_details"]["cached_tokens"], 2);
    assert_eq!(done["metadata"], json!({"k": "v"}));
    assert_eq!(events[12]["text"], "Hello");
    let items: Vec<Item> = b
        .response()
        .output
        .iter()
        .map(OutputItem::to_item)
        .collect();
    assert_eq!(
        items[1],
        Item::Message {
            id: Some("msg_2".into()),
            role: "assistant".into(),
            text: "Hello".into()
        }
    );
}

#[test]
fn running_out_of_tokens_is_incomplete() {
    let mut b = builder();
    b.start();
    b.text("partial");
    let events = b.finish(FinishReason::Length, ResponseUsage::new(1, 1, 0), 9);
    assert_eq!(
        kinds(&events),
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.incomplete"
        ]
    );
    let response = b.into_response();
    assert_eq!(response.status, "incomplete");
    assert_eq!(
        response.incomplete_details,
        Some(json!({"reason": "max_output_tokens"}))
    );
    assert_eq!(response.completed_at, None);
}

#[test]
fn a_failure_is_an_error_event_then_response_failed() {
    let mut b = builder();
    b.start();
    let events = b.fail(&ApiError::Timeout { seconds: 3 });
    assert_eq!(kinds(&events), ["error", "response.failed"]);
    assert_eq!(events[0]["code"], "timeout");
    assert_eq!(events[1]["response"]["error"]["code"], "timeout");
    assert!(sse_event(&events[0]).starts_with("event: error\ndata: {"));
}

#[test]
fn the_responses_corpus_seeds_are_accepted() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/api_request");
    for name in ["seed-responses-codex", "seed-responses-items"] {
        let body = std::fs::read(dir.join(name)).expect("a corpus seed");
        let req = parse_responses_for(&body, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!req.generation(&[]).prompts.is_empty(), "{name}");
    }
}
