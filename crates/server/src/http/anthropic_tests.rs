//! Anthropic's Messages routes through the handlers, against the fake
//! worker and the real SmolLM2 (and Qwen3) tokenizers: the message object,
//! the named stream events, tool use, stop reasons, token counting, errors
//! and keys in Anthropic's shape, and the routes' metrics.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};

use super::HttpConfig;
use super::tests::{Harness, call, gguf, harness, json, post};

const CALLS: &str = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \
                     \"Paris\"}}\n</tool_call>";

fn body(extra: Value) -> Value {
    let mut body = json!({"model": "smol", "max_tokens": 64,
        "messages": [{"role": "user", "content": "What is the capital of France?"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn tools() -> Value {
    json!([{"name": "get_weather", "description": "The weather in a city.",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                             "required": ["city"]}}])
}

/// A harness whose worker replies `reply`.
fn scripted(reply: &str) -> Harness {
    let h = harness(HttpConfig::default());
    let tokenizer = engine::Tokenizer::from_gguf_path(gguf()).unwrap();
    *h.launcher.script.lock().unwrap() = Some(tokenizer.encode(reply, false).unwrap());
    *h.launcher.context_length.lock().unwrap() = Some(4096);
    h
}

/// The token ids of the prompt the worker received.
fn prompt_ids(h: &Harness) -> Vec<u32> {
    let worker = std::sync::Arc::clone(&h.launcher.workers.lock().unwrap()[0]);
    let prompts = worker.prompts.lock().unwrap().clone();
    prompts[0].clone()
}

/// (event name, data) of each SSE event; panics on bad framing.
fn named_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, data) = e
                .strip_prefix("event: ")
                .and_then(|e| e.split_once("\ndata: "))
                .unwrap_or_else(|| panic!("not a named SSE event: {e:?}"));
            let data = json(data);
            assert_eq!(data["type"], name, "{e}");
            (name.to_owned(), data)
        })
        .collect()
}

#[tokio::test]
async fn a_message_has_the_text_the_stop_reason_and_real_usage() {
    let h = harness(HttpConfig::default());
    let (status, _, text) = call(&h, post("/v1/messages", body(json!({})))).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v = json(&text);
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": " The capital of France is Paris."}])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["input_tokens"], prompt_ids(&h).len());
    assert!(v["usage"]["output_tokens"].as_u64().unwrap() > 0);
    insta::assert_json_snapshot!("anthropic_message", v, {
        ".id" => "[id]", ".usage.input_tokens" => "[input_tokens]"
    });
}

#[tokio::test]
async fn a_stream_sends_anthropics_events_in_order() {
    let h = harness(HttpConfig::default());
    let (status, headers, text) =
        call(&h, post("/v1/messages", body(json!({"stream": true})))).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(headers[header::CONTENT_TYPE], "text/event-stream");
    let events = named_events(&text);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names[..4],
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta"
        ]
    );
    assert_eq!(
        names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let streamed: String = events
        .iter()
        .filter_map(|(_, e)| e["delta"]["text"].as_str())
        .collect();
    assert_eq!(streamed, " The capital of France is Paris.");
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert!(delta["usage"]["output_tokens"].as_u64().unwrap() > 0);
    let data: Vec<&Value> = events.iter().map(|(_, e)| e).take(3).collect();
    insta::assert_json_snapshot!("anthropic_stream_head", data, {
        "[0].message.id" => "[id]", "[0].message.usage.input_tokens" => "[input_tokens]"
    });
}

#[tokio::test]
async fn a_stop_sequence_and_max_tokens_are_the_stop_reasons() {
    let h = harness(HttpConfig::default());
    let stop = body(json!({"stop_sequences": ["END", " Paris"]}));
    let (_, _, text) = call(&h, post("/v1/messages", stop)).await;
    let v = json(&text);
    assert_eq!(v["stop_reason"], "stop_sequence");
    assert_eq!(v["stop_sequence"], " Paris");
    assert_eq!(v["content"][0]["text"], " The capital of France is");
    let (_, _, text) = call(&h, post("/v1/messages", body(json!({"max_tokens": 2})))).await;
    let v = json(&text);
    assert_eq!(
        (v["stop_reason"].clone(), v["stop_sequence"].clone()),
        (json!("max_tokens"), Value::Null)
    );
    assert_eq!(v["usage"]["output_tokens"], 2);
}

#[tokio::test]
async fn a_tool_call_is_a_tool_use_block_whole_and_streamed() {
    let h = scripted(&format!("Let me check.\n{CALLS}"));
    let req = body(json!({"tools": tools()}));
    let (status, _, text) = call(&h, post("/v1/messages", req)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v = json(&text);
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(
        v["content"][0],
        json!({"type": "text", "text": "Let me check."})
    );
    let tool_use = &v["content"][1];
    assert_eq!(tool_use["type"], "tool_use");
    assert!(tool_use["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(tool_use["input"], json!({"city": "Paris"}));
    insta::assert_json_snapshot!("anthropic_tool_use", v, {
        ".id" => "[id]", ".usage.input_tokens" => "[input_tokens]",
        ".content[1].id" => "[tool use id]"
    });
    let (_, _, text) = call(
        &h,
        post(
            "/v1/messages",
            body(json!({"tools": tools(), "stream": true})),
        ),
    )
    .await;
    let events = named_events(&text);
    let start = events
        .iter()
        .find(|(_, e)| e["content_block"]["type"] == "tool_use")
        .expect("a tool_use block");
    assert_eq!(start.1["content_block"]["name"], "get_weather");
    assert_eq!(start.1["content_block"]["input"], json!({}));
    let partial: String = events
        .iter()
        .filter(|(_, e)| e["index"] == start.1["index"])
        .filter_map(|(_, e)| e["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(json(&partial), json!({"city": "Paris"}));
    assert_eq!(
        events[events.len() - 2].1["delta"]["stop_reason"],
        "tool_use"
    );
}

#[tokio::test]
async fn a_tool_result_turn_reaches_the_template_and_count_tokens_matches_it() {
    let h = scripted("It is sunny in Paris.");
    let messages = json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1",
            "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
            "content": [{"type": "text", "text": "sunny, 24 C"}]}]}
    ]);
    let system = json!([{"type": "text", "text": "Be brief.",
                         "cache_control": {"type": "ephemeral"}}]);
    let req = body(
        json!({"tools": tools(), "messages": messages, "system": system,
                          "tool_choice": {"type": "auto"}}),
    );
    let (status, _, text) = call(&h, post("/v1/messages", req)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(json(&text)["content"][0]["text"], "It is sunny in Paris.");
    let ids = prompt_ids(&h);
    let tokenizer = engine::Tokenizer::from_gguf_path(gguf()).unwrap();
    let prompt = tokenizer.decode(&ids, false).unwrap();
    assert!(
        prompt.contains("sunny, 24 C") && prompt.contains("Be brief."),
        "{prompt}"
    );
    let count = json!({"model": "smol", "tools": tools(), "messages": messages,
                       "system": system, "tool_choice": {"type": "auto"}});
    let (status, _, text) = call(&h, post("/v1/messages/count_tokens", count)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(json(&text), json!({"input_tokens": ids.len()}));
}

#[tokio::test]
async fn thinking_is_a_thinking_block_and_the_switch_reaches_the_template() {
    let dir = super::tool_tests::qwen3_dir();
    let catalog =
        super::catalog::StaticCatalog::new(vec![("qwen".into(), dir.path().into())], None);
    let h = super::tests::harness_with(HttpConfig::default(), catalog);
    let tokenizer = engine::Tokenizer::from_dir(dir.path()).unwrap();
    let reply = "<think>\nParis, surely.\n</think>\n\nParis.";
    *h.launcher.script.lock().unwrap() = Some(tokenizer.encode(reply, false).unwrap());
    *h.launcher.context_length.lock().unwrap() = Some(4096);
    let req = |thinking: Value, stream: bool| {
        json!({"model": "qwen", "max_tokens": 2048, "thinking": thinking, "stream": stream,
               "messages": [{"role": "user", "content": "Capital of France?"}]})
    };
    let enabled = json!({"type": "enabled", "budget_tokens": 1024});
    let (status, _, text) = call(&h, post("/v1/messages", req(enabled.clone(), false))).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v = json(&text);
    assert_eq!(v["content"][0]["type"], "thinking");
    assert_eq!(v["content"][0]["thinking"], "\nParis, surely.\n");
    assert_eq!(v["content"][1], json!({"type": "text", "text": "Paris."}));
    let (_, _, text) = call(&h, post("/v1/messages", req(enabled, true))).await;
    let events = named_events(&text);
    let thinking: String = events
        .iter()
        .filter_map(|(_, e)| e["delta"]["thinking"].as_str())
        .collect();
    assert_eq!(thinking, "\nParis, surely.\n");
    // Disabled: Qwen3's template closes an empty think block itself.
    call(
        &h,
        post("/v1/messages", req(json!({"type": "disabled"}), false)),
    )
    .await;
    let worker = std::sync::Arc::clone(&h.launcher.workers.lock().unwrap()[0]);
    let prompts = worker.prompts.lock().unwrap().clone();
    let last = tokenizer.decode(prompts.last().unwrap(), false).unwrap();
    assert!(last.ends_with("<think>\n\n</think>\n\n"), "{last:?}");
    let first = tokenizer.decode(&prompts[0], false).unwrap();
    assert!(!first.ends_with("</think>\n\n"), "{first:?}");
}

#[tokio::test]
async fn errors_have_anthropics_shape_and_the_tables_status() {
    let h = harness(HttpConfig::default());
    let cases = [
        (
            body(json!({"model": "nope"})),
            404,
            "not_found_error",
            "nope",
        ),
        (
            body(json!({"max_tokens": null})),
            400,
            "invalid_request_error",
            "max_tokens",
        ),
        (
            body(json!({"temperature": 3})),
            400,
            "invalid_request_error",
            "temperature",
        ),
        (
            body(
                json!({"messages": [{"role": "user", "content": [{"type": "image",
                "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}]}]}),
            ),
            400,
            "invalid_request_error",
            "messages.0.content.0",
        ),
        (
            body(json!({"tool_choice": {"type": "any"}})),
            400,
            "invalid_request_error",
            "tool_choice",
        ),
    ];
    for (req, code, kind, mention) in cases {
        let (status, _, text) = call(&h, post("/v1/messages", req)).await;
        assert_eq!(status.as_u16(), code, "{text}");
        let v = json(&text);
        assert_eq!(v["type"], "error", "{text}");
        assert_eq!(v["error"]["type"], kind, "{text}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(mention),
            "{text}"
        );
    }
    for req in [
        Request::get("/v1/messages").body(Body::empty()).unwrap(),
        post("/v1/messages/batches", body(json!({}))),
    ] {
        let (status, _, text) = call(&h, req).await;
        assert!([404, 405].contains(&status.as_u16()), "{text}");
        assert_eq!(json(&text)["type"], "error", "{text}");
    }
    let count = json!({"model": "smol", "max_tokens": 5, "messages": []});
    let (status, _, text) = call(&h, post("/v1/messages/count_tokens", count)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json(&text)["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn keys_come_as_x_api_key_or_bearer_and_refusals_are_anthropics() {
    let h = harness(HttpConfig {
        api_keys: vec!["sk-right".into()],
        ..HttpConfig::default()
    });
    let keyed = |path: &str, header: Option<(&str, &str)>| {
        let mut req = post(path, body(json!({})));
        if let Some((name, value)) = header {
            req.headers_mut().insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        req
    };
    for (header, code, kind) in [
        (None, 401, Some("authentication_error")),
        (
            Some(("x-api-key", "sk-wrong")),
            401,
            Some("authentication_error"),
        ),
        (Some(("x-api-key", "sk-right")), 200, None),
        (Some(("authorization", "Bearer sk-right")), 200, None),
    ] {
        let (status, _, text) = call(&h, keyed("/v1/messages", header)).await;
        assert_eq!(status.as_u16(), code, "{header:?}: {text}");
        if let Some(kind) = kind {
            assert_eq!(json(&text)["error"]["type"], kind, "{text}");
        }
    }
    // The OpenAI routes keep to bearer keys and OpenAI's shape.
    let (status, _, text) = call(
        &h,
        keyed("/v1/chat/completions", Some(("x-api-key", "sk-right"))),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(json(&text)["error"]["message"].is_string());
}

#[tokio::test]
async fn the_routes_have_their_own_metrics_labels() {
    let h = harness(HttpConfig::default());
    call(&h, post("/v1/messages", body(json!({})))).await;
    let count = json!({"model": "smol", "messages": [{"role": "user", "content": "Hi"}]});
    call(&h, post("/v1/messages/count_tokens", count)).await;
    call(&h, post("/v1/messages", body(json!({"model": "nope"})))).await;
    let (_, _, text) = call(&h, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    for line in [
        "mlxd_http_requests_total{route=\"/v1/messages\",status=\"200\"} 1",
        "mlxd_http_requests_total{route=\"/v1/messages\",status=\"404\"} 1",
        "mlxd_http_requests_total{route=\"/v1/messages/count_tokens\",status=\"200\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing: {text}");
    }
}

#[tokio::test]
async fn a_browsers_preflight_may_send_anthropics_headers() {
    let h = harness(HttpConfig {
        cors_origins: vec!["http://app.example".into()],
        ..HttpConfig::default()
    });
    let preflight = Request::options("/v1/messages")
        .header(header::ORIGIN, "http://app.example")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "x-api-key,anthropic-version,content-type",
        )
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = call(&h, preflight).await;
    assert_eq!(status, StatusCode::OK);
    let allowed = headers[header::ACCESS_CONTROL_ALLOW_HEADERS]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed.contains("x-api-key") && allowed.contains("anthropic-version"),
        "{allowed}"
    );
}
