//! Tool calls and reasoning through the handlers: a fake worker emits the
//! scripted tokens (real SmolLM2 tokenizer) of a reply in the Hermes
//! envelope, the format SmolLM2's template, which has none of its own,
//! asks for in a system message.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::HttpConfig;
use super::tests::{Harness, call, chat_body, harness, json, post, sse_events};

const CALLS: &str = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \
                     \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \
                     \"arguments\": {\"zone\": \"CET\"}}\n</tool_call>";

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather",
            "description": "The weather in a city.", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}}}},
        {"type": "function", "function": {"name": "get_time",
            "description": "The time in a zone.", "parameters": {
            "type": "object", "properties": {"zone": {"type": "string"}}}}}
    ])
}

/// A harness whose worker replies `reply`.
fn scripted(reply: &str) -> Harness {
    let h = harness(HttpConfig::default());
    let tokenizer = engine::Tokenizer::from_gguf_path(super::tests::gguf()).unwrap();
    *h.launcher.script.lock().unwrap() = Some(tokenizer.encode(reply, false).unwrap());
    *h.launcher.context_length.lock().unwrap() = Some(4096);
    h
}

/// The prompt the worker received, as text.
fn prompt_of(h: &Harness) -> String {
    let worker = std::sync::Arc::clone(&h.launcher.workers.lock().unwrap()[0]);
    let prompts = worker.prompts.lock().unwrap().clone();
    let tokenizer = engine::Tokenizer::from_gguf_path(super::tests::gguf()).unwrap();
    tokenizer.decode(&prompts[0], false).unwrap()
}

#[tokio::test]
async fn a_reply_with_calls_becomes_tool_calls_with_finish_reason_tool_calls() {
    let h = scripted(&format!("Let me look.\n{CALLS}"));
    let body = chat_body(json!({"tools": tools()}));
    let (status, _, text) = call(&h, post("/v1/chat/completions", body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v = json(&text);
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], "Let me look.");
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    for call in calls {
        let id = call["id"].as_str().unwrap();
        assert!(id.starts_with("call_") && id.len() == 29, "{id}");
    }
    assert_ne!(calls[0]["id"], calls[1]["id"]);
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert_eq!(calls[0]["function"]["arguments"], "{\"city\":\"Paris\"}");
    // The template has no tool format: the tools are described to the
    // model in a system message.
    let prompt = prompt_of(&h);
    assert!(
        prompt.contains("<tool_call>") && prompt.contains("get_time"),
        "{prompt}"
    );
    insta::assert_json_snapshot!("chat_completion_tool_calls", v, {
        ".id" => "[id]", ".created" => "[created]", ".usage.prompt_tokens" => "[prompt_tokens]",
        ".usage.total_tokens" => "[total_tokens]",
        ".choices[].message.tool_calls[].id" => "[call id]"
    });
}

#[tokio::test]
async fn streamed_calls_send_id_and_name_then_arguments_and_assemble() {
    let h = scripted(CALLS);
    let body = chat_body(json!({"tools": tools(), "stream": true}));
    let (status, _, text) = call(&h, post("/v1/chat/completions", body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let events = sse_events(&text);
    let deltas: Vec<&Value> = events
        .iter()
        .flat_map(|e| e["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert_eq!(deltas.len(), 4, "{text}");
    assert!(deltas[0]["id"].is_string() && deltas[0]["function"]["name"] == "get_weather");
    assert_eq!(deltas[0]["function"]["arguments"], "");
    assert!(deltas[1].get("id").is_none() && deltas[1]["function"].get("name").is_none());
    // Assembled by index, as the SDKs do.
    let mut assembled = vec![(String::new(), String::new()); 2];
    for d in &deltas {
        let i = d["index"].as_u64().unwrap() as usize;
        if let Some(name) = d["function"]["name"].as_str() {
            assembled[i].0.push_str(name);
        }
        assembled[i]
            .1
            .push_str(d["function"]["arguments"].as_str().unwrap());
    }
    assert_eq!(
        assembled,
        [
            ("get_weather".into(), "{\"city\":\"Paris\"}".into()),
            ("get_time".into(), "{\"zone\":\"CET\"}".into())
        ]
    );
    let content: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "", "no call text leaks into content");
    let finish = &events[events.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
    let chunks: Vec<&Value> = events.iter().filter(|e| e.is_object()).collect();
    insta::assert_json_snapshot!("chat_stream_tool_calls", chunks, {
        "[].id" => "[id]", "[].created" => "[created]",
        "[].choices[].delta.tool_calls[].id" => "[call id]"
    });
}

#[tokio::test]
async fn parallel_tool_calls_false_keeps_the_first_call() {
    let h = scripted(CALLS);
    let body = chat_body(json!({"tools": tools(), "parallel_tool_calls": false}));
    let (status, _, text) = call(&h, post("/v1/chat/completions", body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let calls = json(&text)["choices"][0]["message"]["tool_calls"].clone();
    assert_eq!(calls.as_array().unwrap().len(), 1);
    assert_eq!(calls[0]["function"]["name"], "get_weather");
}

#[tokio::test]
async fn tool_choice_none_offers_no_tools_and_parses_nothing() {
    let h = scripted(CALLS);
    let body = chat_body(json!({"tools": tools(), "tool_choice": "none"}));
    let (status, _, text) = call(&h, post("/v1/chat/completions", body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v = json(&text);
    assert_eq!(v["choices"][0]["message"]["content"], CALLS);
    assert!(v["choices"][0]["message"].get("tool_calls").is_none());
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(!prompt_of(&h).contains("get_weather"));
}

#[tokio::test]
async fn a_malformed_call_stays_content() {
    let broken =
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": }\n</tool_call>";
    let h = scripted(broken);
    let body = chat_body(json!({"tools": tools()}));
    let (status, _, text) = call(&h, post("/v1/chat/completions", body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v = json(&text);
    assert_eq!(v["choices"][0]["message"]["content"], broken);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn a_tool_result_round_trip_renders_through_the_template() {
    let h = scripted("It is sunny in Paris.");
    let body = json!({"model": "smol", "tools": tools(), "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 24 C"}
    ]});
    let (status, _, text) = call(&h, post("/v1/chat/completions", body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(
        json(&text)["choices"][0]["message"]["content"],
        "It is sunny in Paris."
    );
    assert!(prompt_of(&h).contains("sunny, 24 C"));
}

#[tokio::test]
async fn bad_tools_and_tool_choice_are_400s_naming_the_parameter() {
    let h = scripted("x");
    let cases = [
        (
            json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": 3}}]}),
            "tools[0].function.parameters",
        ),
        (
            json!({"tools": tools(),
                   "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
            "tool_choice",
        ),
    ];
    for (extra, param) in cases {
        let (status, _, text) = call(&h, post("/v1/chat/completions", chat_body(extra))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert_eq!(json(&text)["error"]["param"], param, "{text}");
    }
}

/// A model directory with the real Qwen3 tokenizer and template (weights
/// are never read: the worker is fake).
pub(super) fn qwen3_dir() -> tempfile::TempDir {
    let data = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../.cache/test-data/npm/qwen3");
    let dir = tempfile::tempdir().unwrap();
    for file in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(data.join(file), dir.path().join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}: run scripts/test-data.sh"));
    }
    let config = json!({"model_type": "qwen3", "hidden_size": 64, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 128,
        "vocab_size": 151936, "max_position_embeddings": 4096, "head_dim": 32,
        "rms_norm_eps": 1e-6, "rope_theta": 1e6, "tie_word_embeddings": true});
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    std::fs::write(dir.path().join("model.safetensors"), b"").unwrap();
    dir
}

#[tokio::test]
async fn qwen3_thinking_goes_to_reasoning_content_and_its_calls_to_tool_calls() {
    let dir = qwen3_dir();
    let catalog =
        super::catalog::StaticCatalog::new(vec![("qwen".into(), dir.path().into())], None);
    let h = super::tests::harness_with(HttpConfig::default(), catalog);
    let tokenizer = engine::Tokenizer::from_dir(dir.path()).unwrap();
    let reply = "<think>\nThe user wants the weather.\n</think>\n\n<tool_call>\n{\"name\": \
                 \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
    *h.launcher.script.lock().unwrap() = Some(tokenizer.encode(reply, false).unwrap());
    *h.launcher.context_length.lock().unwrap() = Some(4096);
    let body = |stream: bool| {
        json!({"model": "qwen", "stream": stream, "tools": tools(),
               "messages": [{"role": "user", "content": "Weather in Paris?"}]})
    };
    let (status, _, text) = call(&h, post("/v1/chat/completions", body(false))).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let message = json(&text)["choices"][0]["message"].clone();
    assert_eq!(
        message["reasoning_content"],
        "\nThe user wants the weather.\n"
    );
    assert_eq!(message["content"], Value::Null);
    assert_eq!(message["tool_calls"][0]["function"]["name"], "get_weather");
    let (status, _, text) = call(&h, post("/v1/chat/completions", body(true))).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let events = sse_events(&text);
    let reasoning: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["reasoning_content"].as_str())
        .collect();
    assert_eq!(reasoning, "\nThe user wants the weather.\n");
    let content: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "");
    let worker = std::sync::Arc::clone(&h.launcher.workers.lock().unwrap()[0]);
    let prompt = tokenizer
        .decode(&worker.prompts.lock().unwrap()[0], false)
        .unwrap();
    assert!(
        prompt.contains("<tools>") && prompt.contains("get_weather"),
        "{prompt}"
    );
}

#[tokio::test]
async fn a_reply_without_thinking_is_all_content() {
    let dir = qwen3_dir();
    let catalog =
        super::catalog::StaticCatalog::new(vec![("qwen".into(), dir.path().into())], None);
    let h = super::tests::harness_with(HttpConfig::default(), catalog);
    let tokenizer = engine::Tokenizer::from_dir(dir.path()).unwrap();
    *h.launcher.script.lock().unwrap() = Some(tokenizer.encode("Paris.", false).unwrap());
    *h.launcher.context_length.lock().unwrap() = Some(4096);
    let body = json!({"model": "qwen", "chat_template_kwargs": {"enable_thinking": false},
                      "messages": [{"role": "user", "content": "Capital of France?"}]});
    let (status, _, text) = call(&h, post("/v1/chat/completions", body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let message = json(&text)["choices"][0]["message"].clone();
    assert_eq!(message["content"], "Paris.");
    assert!(message.get("reasoning_content").is_none(), "{message}");
}

#[tokio::test]
async fn harmony_channels_split_into_reasoning_and_calls_and_reasoning_returns_as_thinking() {
    // The Qwen3 tokenizer with gpt-oss's template: Harmony's markers are
    // plain text to this tokenizer, which is all a fake worker needs.
    let dir = qwen3_dir();
    let template = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../.cache/test-data/templates/openai-gpt-oss-120b.jinja");
    std::fs::copy(&template, dir.path().join("chat_template.jinja"))
        .unwrap_or_else(|e| panic!("{e}: run scripts/test-data.sh"));
    let catalog = super::catalog::StaticCatalog::new(vec![("oss".into(), dir.path().into())], None);
    let h = super::tests::harness_with(HttpConfig::default(), catalog);
    let tokenizer = engine::Tokenizer::from_dir(dir.path()).unwrap();
    let reply = "<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant\
                 <|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>\
                 {\"city\": \"Paris\"}";
    *h.launcher.script.lock().unwrap() = Some(tokenizer.encode(reply, false).unwrap());
    *h.launcher.context_length.lock().unwrap() = Some(4096);
    let body = json!({"model": "oss", "tools": tools(), "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "reasoning_content": "I should look it up.",
         "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": "{\"city\": \"Rome\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "user", "content": "And Paris?"}
    ]});
    let (status, _, text) = call(&h, post("/v1/chat/completions", body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v = json(&text);
    let message = &v["choices"][0]["message"];
    assert_eq!(message["reasoning_content"], "Need the weather.");
    assert_eq!(message["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(
        message["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Paris\"}"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let worker = std::sync::Arc::clone(&h.launcher.workers.lock().unwrap()[0]);
    let prompt = tokenizer
        .decode(&worker.prompts.lock().unwrap()[0], false)
        .unwrap();
    assert!(
        prompt.contains("<|channel|>analysis<|message|>I should look it up.<|end|>"),
        "{prompt}"
    );
}

#[tokio::test]
async fn a_template_that_refuses_system_messages_gets_the_tools_in_the_first_user_turn() {
    // Gemma 2's template has no tool format and raises on a system role.
    let dir = qwen3_dir();
    let template = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../.cache/test-data/templates/google-gemma-2-2b-it.jinja");
    std::fs::copy(&template, dir.path().join("chat_template.jinja"))
        .unwrap_or_else(|e| panic!("{e}: run scripts/test-data.sh"));
    let catalog =
        super::catalog::StaticCatalog::new(vec![("gemma".into(), dir.path().into())], None);
    let h = super::tests::harness_with(HttpConfig::default(), catalog);
    let tokenizer = engine::Tokenizer::from_dir(dir.path()).unwrap();
    *h.launcher.script.lock().unwrap() = Some(tokenizer.encode(CALLS, false).unwrap());
    *h.launcher.context_length.lock().unwrap() = Some(4096);
    let body = json!({"model": "gemma", "tools": tools(),
                      "messages": [{"role": "user", "content": "Weather in Paris?"}]});
    let (status, _, text) = call(&h, post("/v1/chat/completions", body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v = json(&text);
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let worker = std::sync::Arc::clone(&h.launcher.workers.lock().unwrap()[0]);
    let prompt = tokenizer
        .decode(&worker.prompts.lock().unwrap()[0], false)
        .unwrap();
    let user = prompt.find("<start_of_turn>user").expect("a user turn");
    let tools_at = prompt.find("get_weather").expect("the tools are described");
    let question = prompt.find("Weather in Paris?").expect("the question");
    assert!(user < tools_at && tools_at < question, "{prompt}");
}
