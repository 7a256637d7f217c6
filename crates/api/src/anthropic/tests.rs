//! Messages bodies into generation requests: the conversation as the
//! template receives it, sampling and limits, and a 400 naming the field
//! for each malformed or unsupported part.

use serde_json::{Value, json};

use super::{parse_count_tokens_for, parse_messages_for};
use crate::error::ApiError;
use crate::validate::{GenerationRequest, PromptInput};
use crate::{Endpoint, ToolChoice};

fn parse(body: Value) -> Result<GenerationRequest, ApiError> {
    parse_messages_for(body.to_string().as_bytes(), None)
}

fn body(extra: Value) -> Value {
    let mut body = json!({"model": "m", "max_tokens": 64,
                          "messages": [{"role": "user", "content": "Hello"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn messages(req: &GenerationRequest) -> &[Value] {
    match &req.prompts[0] {
        PromptInput::Chat { messages, .. } => messages,
        other => panic!("{other:?}"),
    }
}

fn param(e: ApiError) -> String {
    match e {
        ApiError::InvalidRequest { param, .. } => param.unwrap_or_default(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_minimal_body_is_a_chat_request_with_anthropic_defaults() {
    let req = parse(body(json!({}))).unwrap();
    assert_eq!(req.endpoint, Endpoint::Chat);
    assert_eq!(req.model, "m");
    assert_eq!(req.max_tokens, Some(64));
    assert_eq!((req.n, req.stream), (1, false));
    assert_eq!(req.sampling.temperature, 1.0);
    assert!(req.omitted.temperature && !req.omitted.max_tokens);
    assert_eq!(
        messages(&req),
        [json!({"role": "user", "content": "Hello"})]
    );
}

#[test]
fn sampling_stop_sequences_metadata_and_stream_are_read() {
    let req = parse(body(json!({"temperature": 0.0, "top_p": 0.5, "top_k": 3,
        "stop_sequences": ["END"], "stream": true, "metadata": {"user_id": "u1"},
        "service_tier": "auto", "cache_control": {"type": "ephemeral"}})))
    .unwrap();
    assert_eq!(req.sampling.temperature, 0.0);
    assert_eq!(req.sampling.top_p, 0.5);
    assert_eq!(req.sampling.top_k, 3);
    assert_eq!(req.stop, ["END"]);
    assert!(req.stream);
    assert_eq!(req.user.as_deref(), Some("u1"));
    assert!(!req.omitted.temperature && !req.omitted.top_k);
}

#[test]
fn system_blocks_tool_results_and_history_reach_the_template_as_chat_messages() {
    let req = parse(body(json!({
    "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
               {"type": "text", "text": "Use tools."}],
    "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Call it.", "signature": "sig"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
             "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1",
             "content": [{"type": "text", "text": "Sunny"}]},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "boom",
             "is_error": true},
            {"type": "text", "text": "And?"}]}
    ]})))
    .unwrap();
    assert_eq!(
        messages(&req),
        [
            json!({"role": "system", "content": "Be brief.\n\nUse tools."}),
            json!({"role": "user", "content": "Weather?"}),
            json!({"role": "assistant", "content": "Checking.",
                   "tool_calls": [{"id": "toolu_1", "type": "function",
                       "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
                   "reasoning_content": "Call it."}),
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny"}),
            json!({"role": "tool", "tool_call_id": "toolu_2", "content": "Error: boom"}),
            json!({"role": "user", "content": "And?"}),
        ]
    );
    let PromptInput::Chat { tools, .. } = &req.prompts[0] else {
        panic!()
    };
    assert_eq!(
        tools.as_deref().unwrap()[0]["function"]["name"],
        "get_weather"
    );
}

#[test]
fn an_assistant_turn_of_only_tool_uses_has_null_content() {
    let req = parse(body(json!({"messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f",
                                           "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]}]})))
    .unwrap();
    assert_eq!(messages(&req)[1]["content"], Value::Null);
    assert_eq!(messages(&req)[2]["content"], "");
}

#[test]
fn tool_choice_and_thinking_map_onto_the_chat_route() {
    let tools = json!([{"name": "f", "input_schema": {"type": "object"}}]);
    let req = parse(body(json!({"tools": tools,
        "tool_choice": {"type": "tool", "name": "f", "disable_parallel_tool_use": true},
        "thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 2048})))
    .unwrap();
    assert_eq!(req.tool_choice, ToolChoice::Function("f".into()));
    assert!(!req.parallel_tool_calls);
    let PromptInput::Chat {
        template_kwargs, ..
    } = &req.prompts[0]
    else {
        panic!()
    };
    assert_eq!(template_kwargs["enable_thinking"], true);
    let off = parse(body(json!({"thinking": {"type": "disabled"}}))).unwrap();
    let PromptInput::Chat {
        template_kwargs, ..
    } = &off.prompts[0]
    else {
        panic!()
    };
    assert_eq!(template_kwargs["enable_thinking"], false);
    let adaptive = parse(body(json!({"thinking": {"type": "adaptive"}}))).unwrap();
    let PromptInput::Chat {
        template_kwargs, ..
    } = &adaptive.prompts[0]
    else {
        panic!()
    };
    assert_eq!(template_kwargs["enable_thinking"], true);
}

#[test]
fn bad_bodies_are_400s_naming_the_field() {
    let image = json!({"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                   "data": "AA=="}});
    let cases = [
        (json!({"max_tokens": null}), "max_tokens"),
        (json!({"max_tokens": 0}), "max_tokens"),
        (json!({"model": ""}), "model"),
        (json!({"messages": []}), "messages"),
        (json!({"temperature": 1.5}), "temperature"),
        (json!({"top_p": 0}), "top_p"),
        (json!({"top_k": -1}), "top_k"),
        (json!({"stop_sequences": ["a", ""]}), "stop_sequences[1]"),
        (json!({"stop": ["a"]}), "stop"),
        (json!({"service_tier": "priority"}), "service_tier"),
        (
            json!({"metadata": {"user_id": "u", "other": 1}}),
            "metadata.other",
        ),
        (json!({"system": 3}), "system"),
        (
            json!({"messages": [{"role": "user", "content": []}]}),
            "messages.0.content",
        ),
        (json!({"system": [{"type": "image"}]}), "system.0"),
        (
            json!({"messages": [{"role": "user", "content": [image]}]}),
            "messages.0.content.0",
        ),
        (
            json!({"messages": [{"role": "user", "content": [
                {"type": "text", "text": "x", "extra": 1}]}]}),
            "messages.0.content.0.extra",
        ),
        (
            json!({"messages": [{"role": "system", "content": "x"}]}),
            "messages.0.role",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"},
                                {"role": "assistant", "content": "Sure"}]}),
            "messages.1",
        ),
        (
            json!({"messages": [{"role": "user", "content": [
                {"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]}),
            "messages.0.content.0",
        ),
        (
            json!({"messages": [{"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t", "is_error": "yes"}]}]}),
            "messages.0.content.0.is_error",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t",
                                                   "name": "f", "input": "{}"}]},
                {"role": "user", "content": "y"}]}),
            "messages.1.content.0.input",
        ),
        (
            json!({"thinking": {"type": "enabled"}}),
            "thinking.budget_tokens",
        ),
        (
            json!({"thinking": {"type": "enabled", "budget_tokens": 100}}),
            "thinking.budget_tokens",
        ),
        (
            json!({"thinking": {"type": "enabled", "budget_tokens": 2000}}),
            "thinking.budget_tokens",
        ),
        (json!({"thinking": {"type": "on"}}), "thinking.type"),
        (
            json!({"thinking": {"type": "adaptive", "display": "omitted"}}),
            "thinking.display",
        ),
        (json!({"output_config": {}}), "output_config"),
        (json!({"tools": [{"name": "f"}]}), "tools.0.input_schema"),
        (json!({"tool_choice": {"type": "any"}}), "tool_choice"),
        (json!({"temperature": "hot"}), "temperature"),
    ];
    for (extra, want) in cases {
        let e = parse(body(extra.clone())).unwrap_err();
        assert_eq!(e.status(), 400, "{extra}");
        assert_eq!(param(e), want, "{extra}");
    }
    let e = parse_messages_for(b"[1]", None).unwrap_err();
    assert_eq!(e.status(), 400);
}

#[test]
fn a_missing_model_takes_the_default_and_count_tokens_reads_only_the_prompt() {
    let mut b = body(json!({}));
    b.as_object_mut().unwrap().remove("model");
    let req = parse_messages_for(b.to_string().as_bytes(), Some("smol")).unwrap();
    assert_eq!(req.model, "smol");
    let count = json!({"model": "m", "system": "s",
                       "messages": [{"role": "user", "content": "Hi"}],
                       "thinking": {"type": "enabled", "budget_tokens": 4096}});
    let req = parse_count_tokens_for(count.to_string().as_bytes(), None).unwrap();
    assert_eq!(messages(&req).len(), 2);
    let with_max = json!({"model": "m", "max_tokens": 5,
                          "messages": [{"role": "user", "content": "Hi"}]});
    let e = parse_count_tokens_for(with_max.to_string().as_bytes(), None).unwrap_err();
    assert_eq!(param(e), "max_tokens");
}

#[test]
fn hostile_bodies_are_refused_cleanly_or_valid() {
    // The OpenAI parsers' fuzz corpus, and Messages bodies cut at every
    // byte: no panic; a refusal is a 4xx in Anthropic's error shape; an
    // accepted request holds values in Anthropic's ranges.
    let corpus =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/api_request");
    let mut bodies: Vec<Vec<u8>> = std::fs::read_dir(corpus)
        .expect("the corpus folder")
        .map(|e| std::fs::read(e.expect("an entry").path()).expect("a corpus file"))
        .collect();
    let full = body(
        json!({"system": [{"type": "text", "text": "s"}], "stop_sequences": ["x"],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any"}, "thinking": {"type": "disabled"}, "top_k": 2,
        "messages": [{"role": "user", "content": "a"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f",
                                               "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]}]}),
    )
    .to_string();
    bodies.extend((0..=full.len()).map(|n| full.as_bytes()[..n].to_vec()));
    let mut accepted = 0;
    for body in &bodies {
        for parsed in [
            parse_messages_for(body, Some("m")),
            parse_count_tokens_for(body, Some("m")),
        ] {
            match parsed {
                Ok(req) => {
                    accepted += 1;
                    let s = &req.sampling;
                    assert!((0.0..=1.0).contains(&s.temperature), "{s:?}");
                    assert!(s.top_p > 0.0 && s.top_p <= 1.0, "{s:?}");
                    assert!(req.stop.iter().all(|s| !s.is_empty()));
                    assert!(req.max_tokens.is_none_or(|m| m >= 1));
                    assert_eq!((req.n, req.prompts.len()), (1, 1));
                }
                Err(e) => {
                    assert!((400..500).contains(&e.status()), "{e:?}");
                    let v: Value = serde_json::from_str(&super::error_body_json(&e)).unwrap();
                    assert_eq!(v["error"]["type"], "invalid_request_error");
                }
            }
        }
    }
    assert!(accepted >= 1, "the whole body is accepted");
}
