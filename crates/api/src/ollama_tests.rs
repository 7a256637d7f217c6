use serde_json::json;

use super::*;
use crate::structured::ResponseFormat;
use crate::validate::PromptInput;

fn chat(body: Value) -> Result<OllamaRequest, ApiError> {
    parse_chat(body.to_string().as_bytes(), None)
}

fn generate(body: Value) -> Result<OllamaRequest, ApiError> {
    parse_generate(body.to_string().as_bytes(), None)
}

fn messages(req: &OllamaRequest) -> Vec<Value> {
    match &req.generation.prompts[0] {
        PromptInput::Chat { messages, .. } => messages.clone(),
        other => panic!("not a chat: {other:?}"),
    }
}

#[test]
fn chat_streams_by_default_and_maps_options() {
    let req = chat(json!({
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "options": {"temperature": 0.5, "top_k": 7, "num_predict": 12, "repeat_penalty": 1.2,
                    "repeat_last_n": 32, "seed": 3, "stop": ["x"], "num_ctx": 4096, "mirostat": 0}
    }))
    .expect("valid");
    let g = &req.generation;
    assert!(g.stream);
    assert_eq!(g.sampling.temperature, 0.5);
    assert_eq!(g.sampling.top_k, 7);
    assert_eq!(g.max_tokens, Some(12));
    assert_eq!(g.sampling.repetition_penalty, 1.2);
    assert_eq!(g.sampling.repetition_context_size, Some(32));
    assert_eq!(g.sampling.seed, Some(3));
    assert_eq!(g.stop, vec!["x".to_owned()]);
    assert!(!g.omitted.temperature && g.omitted.top_p);
}

#[test]
fn num_predict_minus_one_is_no_limit_and_repeat_last_n_zero_is_off() {
    let req = generate(json!({
        "model": "m", "prompt": "p", "raw": true, "stream": false,
        "options": {"num_predict": -1, "repeat_penalty": 1.3, "repeat_last_n": 0}
    }))
    .expect("valid");
    assert_eq!(req.generation.max_tokens, None, "not OpenAI's 16");
    assert!(req.generation.omitted.max_tokens);
    assert_eq!(req.generation.sampling.repetition_penalty, 1.0);
    assert!(!req.generation.stream);
    assert_eq!(req.generation.prompts, vec![PromptInput::Text("p".into())]);
}

#[test]
fn unknown_and_unsupported_options_are_named() {
    for (options, param) in [
        (json!({"bogus": 1}), "options.bogus"),
        (json!({"mirostat": 2}), "options.mirostat"),
        (json!({"typical_p": 0.5}), "options.typical_p"),
        (json!({"num_predict": 0}), "options.num_predict"),
        (json!({"repeat_last_n": -3}), "options.repeat_last_n"),
        (json!({"temperature": 9}), "options.temperature"),
        (json!({"repeat_penalty": 0}), "options.repeat_penalty"),
    ] {
        let e = chat(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                            "options": options}),
        )
        .expect_err("refused");
        assert_eq!(e.status(), 400);
        assert_eq!(e.param(), Some(param), "{e}");
        assert!(e.to_string().contains(param), "{e}");
    }
}

#[test]
fn format_json_and_schema_become_response_formats() {
    let base = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
    let mut with = base.clone();
    with["format"] = json!("json");
    assert_eq!(
        chat(with).expect("json").generation.response_format,
        ResponseFormat::JsonObject
    );
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
    let mut with = base.clone();
    with["format"] = schema.clone();
    match chat(with).expect("schema").generation.response_format {
        ResponseFormat::JsonSchema { schema: s, .. } => assert_eq!(s, schema),
        other => panic!("{other:?}"),
    }
    let mut with = base;
    with["format"] = json!("yaml");
    assert_eq!(chat(with).expect_err("bad").param(), Some("format"));
}

#[test]
fn think_sets_the_template_switch_or_effort() {
    let base = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
    let kwargs = |think: Value| {
        let mut body = base.clone();
        body["think"] = think;
        match chat(body).map(|r| r.generation.prompts[0].clone()) {
            Ok(PromptInput::Chat {
                template_kwargs, ..
            }) => Ok(Value::Object(template_kwargs)),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        }
    };
    assert_eq!(
        kwargs(json!(false)).expect("bool"),
        json!({"enable_thinking": false})
    );
    assert_eq!(
        kwargs(json!("high")).expect("effort"),
        json!({"enable_thinking": true, "reasoning_effort": "high"})
    );
    assert_eq!(
        kwargs(json!("max")).expect_err("bad").param(),
        Some("think")
    );
}

#[test]
fn tool_turns_become_openai_messages() {
    let req = chat(json!({
        "model": "m",
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "", "thinking": "hmm",
             "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "tool_name": "get_weather", "content": "sunny"}
        ]
    }))
    .expect("valid");
    let m = messages(&req);
    assert_eq!(m[1]["reasoning_content"], "hmm");
    assert_eq!(
        m[1]["tool_calls"][0]["function"]["arguments"],
        json!({"city": "Paris"})
    );
    let id = m[1]["tool_calls"][0]["id"].as_str().expect("an id");
    assert_eq!(m[2]["tool_call_id"], id);
    assert_eq!(m[2]["name"], "get_weather");
}

#[test]
fn images_suffix_template_and_context_are_refused() {
    let e = chat(json!({"model": "m", "messages": [
        {"role": "user", "content": "x", "images": ["aGVsbG8="]}]}))
    .expect_err("images");
    assert_eq!(e.param(), Some("messages[0].images"));
    assert!(e.to_string().contains("images"));
    for (key, value) in [
        ("images", json!(["aGVsbG8="])),
        ("suffix", json!("end")),
        ("template", json!("{{ .Prompt }}")),
        ("context", json!([1, 2])),
    ] {
        let mut body = json!({"model": "m", "prompt": "x"});
        body[key] = value;
        assert_eq!(generate(body).expect_err(key).param(), Some(key));
    }
}

#[test]
fn generate_renders_system_and_prompt_as_a_chat() {
    let req = generate(json!({"model": "m", "prompt": "hi", "system": "be brief"})).expect("ok");
    assert!(!req.load_only);
    assert_eq!(
        messages(&req),
        vec![
            json!({"role": "system", "content": "be brief"}),
            json!({"role": "user", "content": "hi"})
        ]
    );
    let load = generate(json!({"model": "m", "keep_alive": 0})).expect("load request");
    assert!(load.load_only);
    assert_eq!(
        load.generation.keep_alive,
        Some(KeepAlive::UnloadAfterRequest)
    );
}

#[test]
fn errors_read_as_ollama_bodies() {
    let e = ApiError::ModelNotFound { model: "x".into() };
    assert_eq!(e.status(), 404);
    assert_eq!(error_body(&e), json!({"error": e.to_string()}));
    assert!(chat(json!({"model": "m"})).expect("a load").load_only);
    assert!(
        chat(json!({"model": "m", "messages": []}))
            .expect("a load")
            .load_only
    );
    assert_eq!(
        chat(json!({"model": "m", "messages": [{"content": "x"}]}))
            .expect_err("no role")
            .param(),
        Some("messages[0].role")
    );
}

#[test]
fn logprobs_map_onto_each_endpoints_form() {
    let req = chat(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                          "logprobs": true, "top_logprobs": 3}),
    )
    .expect("chat");
    assert_eq!(req.generation.logprobs, Some(3));
    let raw = generate(json!({"model": "m", "prompt": "x", "raw": true,
                              "logprobs": true, "top_logprobs": 2}))
    .expect("raw");
    assert_eq!(raw.generation.logprobs, Some(2));
    let e = generate(json!({"model": "m", "prompt": "x", "raw": true,
                            "logprobs": true, "top_logprobs": 9}))
    .expect_err("a completion has at most 5");
    assert_eq!(e.param(), Some("top_logprobs"));
    let e = chat(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                        "top_logprobs": 2}),
    )
    .expect_err("without logprobs");
    assert_eq!(e.param(), Some("top_logprobs"));
}
