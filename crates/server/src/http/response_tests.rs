//! Handler tests of the Responses API routes against the fake worker (its
//! scripted SmolLM2 tokens), with JSON snapshots of the Response object,
//! the event sequence and the error bodies.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};

use super::HttpConfig;
use super::tests::{Harness, call, harness, post};

const ANSWER: &str = " The capital of France is Paris.";

fn body(extra: Value) -> Value {
    let mut body = json!({"model": "smol", "input": "What is the capital of France?"});
    for (k, v) in extra.as_object().into_iter().flatten() {
        body[k] = v.clone();
    }
    body
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Each SSE event's `event:` name and JSON data; the name must be the
/// data's `type`.
fn events(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, data) = e
                .strip_prefix("event: ")
                .and_then(|e| e.split_once("\ndata: "))
                .unwrap_or_else(|| panic!("not an SSE event: {e:?}"));
            let data = parse(data);
            assert_eq!(data["type"], name, "{e}");
            data
        })
        .collect()
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

async fn create(h: &Harness, extra: Value) -> Value {
    let (status, _, text) = call(h, post("/v1/responses", body(extra))).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    parse(&text)
}

#[tokio::test]
async fn a_response_has_the_message_and_real_usage() {
    let h = harness(HttpConfig::default());
    let v = create(
        &h,
        json!({"instructions": "Be brief.", "metadata": {"k": "v"},
               "tools": [{"type": "web_search"}]}),
    )
    .await;
    assert_eq!(v["output"][0]["content"][0]["text"], ANSWER);
    assert!(v["usage"]["input_tokens"].as_u64().unwrap() > 20, "{v}");
    insta::assert_json_snapshot!("response", v, {
        ".id" => "[id]", ".created_at" => "[created]", ".completed_at" => "[completed]",
        ".output[].id" => "[item id]", ".usage.input_tokens" => "[input_tokens]",
        ".usage.total_tokens" => "[total_tokens]"
    });
}

#[tokio::test]
async fn a_streamed_response_sends_the_event_sequence() {
    let h = harness(HttpConfig::default());
    let (status, headers, text) =
        call(&h, post("/v1/responses", body(json!({"stream": true})))).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(headers[header::CONTENT_TYPE], "text/event-stream");
    let events = events(&text);
    let deltas: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .filter_map(|e| e["delta"].as_str())
        .collect();
    assert_eq!(deltas, ANSWER);
    let numbers: Vec<u64> = events
        .iter()
        .map(|e| e["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (0..events.len() as u64).collect::<Vec<_>>());
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .filter(|k| *k != "response.output_text.delta")
        .collect();
    insta::assert_json_snapshot!("response_stream_kinds", kinds);
    let last = &events[events.len() - 1]["response"];
    assert_eq!(last["status"], "completed");
    assert_eq!(last["output"][0]["content"][0]["text"], ANSWER);
    // Streamed and stored: the same object is retrieved.
    let id = last["id"].as_str().unwrap();
    let (status, _, got) = call(&h, get(&format!("/v1/responses/{id}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&parse(&got), last);
    let (status, _, refused) = call(&h, get(&format!("/v1/responses/{id}?stream=true"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(parse(&refused)["error"]["param"], "stream");
}

#[tokio::test]
async fn stored_responses_are_retrieved_listed_and_deleted() {
    let h = harness(HttpConfig::default());
    let first = create(&h, json!({})).await;
    let id = first["id"].as_str().unwrap();
    let follow = create(
        &h,
        json!({"previous_response_id": id, "input": [{"role": "user", "content": "And Italy?"}]}),
    )
    .await;
    assert_eq!(follow["previous_response_id"], id);
    // The follow-up's prompt holds the whole first exchange.
    assert!(
        follow["usage"]["input_tokens"].as_u64() > first["usage"]["total_tokens"].as_u64(),
        "{follow}"
    );
    let follow_id = follow["id"].as_str().unwrap();
    let (status, _, items) = call(
        &h,
        get(&format!("/v1/responses/{follow_id}/input_items?order=asc")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{items}");
    insta::assert_json_snapshot!("response_input_items", parse(&items), {
        ".data[].id" => "[item id]", ".first_id" => "[item id]", ".last_id" => "[item id]"
    });
    let delete = || {
        Request::delete(format!("/v1/responses/{id}"))
            .body(Body::empty())
            .unwrap()
    };
    let (status, _, deleted) = call(&h, delete()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        parse(&deleted),
        json!({"id": id, "object": "response", "deleted": true})
    );
    let (status, _, missing) = call(&h, delete()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    insta::assert_json_snapshot!("response_not_found", parse(&missing), {
        ".error.message" => "[message]"
    });
    let (status, _, missing) = call(
        &h,
        post("/v1/responses", body(json!({"previous_response_id": id}))),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    insta::assert_json_snapshot!("previous_response_not_found", parse(&missing), {
        ".error.message" => "[message]"
    });
    let (status, _, bad) = call(
        &h,
        get(&format!("/v1/responses/{follow_id}/input_items?limit=0")),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(parse(&bad)["error"]["param"], "limit");
}

#[tokio::test]
async fn a_store_of_zero_keeps_nothing_and_store_false_is_not_kept() {
    let off = harness(HttpConfig {
        responses_store_max: 0,
        ..HttpConfig::default()
    });
    let v = create(&off, json!({})).await;
    assert_eq!(v["store"], false);
    let (status, _, _) = call(
        &off,
        get(&format!("/v1/responses/{}", v["id"].as_str().unwrap())),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let on = harness(HttpConfig::default());
    let v = create(&on, json!({"store": false})).await;
    assert_eq!(v["store"], false);
    let (status, _, _) = call(
        &on,
        get(&format!("/v1/responses/{}", v["id"].as_str().unwrap())),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_requests_are_openai_errors_naming_the_parameter() {
    let h = harness(HttpConfig::default());
    let (status, _, text) = call(
        &h,
        post(
            "/v1/responses",
            body(json!({"input": [{"type": "message", "role": "user",
                                   "content": [{"type": "input_audio"}]}]})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    insta::assert_json_snapshot!("response_bad_input", parse(&text));
    // A conversation longer than the context names `input`.
    *h.launcher.context_length.lock().unwrap() = Some(8);
    let (status, _, text) = call(&h, post("/v1/responses", body(json!({})))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    let error = &parse(&text)["error"];
    assert_eq!(error["param"], "input");
    assert_eq!(error["code"], "context_length_exceeded");
}

#[tokio::test]
async fn the_routes_take_the_api_keys_and_are_counted_in_metrics() {
    let h = harness(HttpConfig {
        api_keys: vec!["sk-right".into()],
        ..HttpConfig::default()
    });
    let (status, _, _) = call(&h, post("/v1/responses", body(json!({})))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = call(&h, get("/v1/responses/resp_1")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let keyed = |req: Request<Body>| {
        let (mut parts, body) = req.into_parts();
        parts
            .headers
            .insert(header::AUTHORIZATION, "Bearer sk-right".parse().unwrap());
        Request::from_parts(parts, body)
    };
    let (status, _, _) = call(&h, keyed(post("/v1/responses", body(json!({}))))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(&h, keyed(get("/v1/responses/resp_1"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, _, metrics) = call(&h, keyed(get("/metrics"))).await;
    for line in [
        r#"route="/v1/responses",status="200""#,
        r#"route="/v1/responses/{id}",status="404""#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}

#[tokio::test]
async fn qwen3_reasoning_and_calls_become_output_items_and_come_back_to_the_template() {
    let dir = super::tool_tests::qwen3_dir();
    let catalog =
        super::catalog::StaticCatalog::new(vec![("qwen".into(), dir.path().into())], None);
    let h = super::tests::harness_with(HttpConfig::default(), catalog);
    let tokenizer = engine::Tokenizer::from_dir(dir.path()).unwrap();
    let reply = "<think>\nThe user wants the weather.\n</think>\n\n<tool_call>\n{\"name\": \
                 \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
    *h.launcher.script.lock().unwrap() = Some(tokenizer.encode(reply, false).unwrap());
    *h.launcher.context_length.lock().unwrap() = Some(4096);
    let tools = json!([{"type": "function", "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
        {"type": "web_search"}]);
    let request = |stream: bool, input: Value| json!({"model": "qwen", "stream": stream, "tools": tools, "input": input});
    let question = json!([{"role": "user", "content": "Weather in Paris?"}]);
    let v = {
        let (status, _, text) =
            call(&h, post("/v1/responses", request(false, question.clone()))).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        parse(&text)
    };
    let output = v["output"].as_array().unwrap();
    assert_eq!(output.len(), 2, "{v}");
    assert_eq!(output[0]["type"], "reasoning");
    assert_eq!(
        output[0]["content"][0],
        json!({"type": "reasoning_text", "text": "\nThe user wants the weather.\n"})
    );
    assert_eq!(output[1]["type"], "function_call");
    assert_eq!(output[1]["name"], "get_weather");
    assert_eq!(output[1]["arguments"], r#"{"city":"Paris"}"#);
    assert_eq!(v["tools"].as_array().unwrap().len(), 1);

    let (status, _, text) = call(&h, post("/v1/responses", request(true, question))).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let events = events(&text);
    let reasoning: String = events
        .iter()
        .filter(|e| e["type"] == "response.reasoning_text.delta")
        .filter_map(|e| e["delta"].as_str())
        .collect();
    assert_eq!(reasoning, "\nThe user wants the weather.\n");
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .filter(|k| *k != "response.reasoning_text.delta")
        .collect();
    insta::assert_json_snapshot!("response_stream_reasoning_and_call_kinds", kinds);

    // The follow-up continues the stored response with the call's result:
    // the template renders the reasoning, the call and the result.
    let call_id = output[1]["call_id"].as_str().unwrap();
    let follow = json!({"model": "qwen", "tools": tools, "previous_response_id": v["id"],
        "input": [{"type": "function_call_output", "call_id": call_id, "output": "sunny, 24 C"}]});
    let (status, _, text) = call(&h, post("/v1/responses", follow)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let worker = std::sync::Arc::clone(&h.launcher.workers.lock().unwrap()[0]);
    let prompts = worker.prompts.lock().unwrap();
    let prompt = tokenizer
        .decode(&prompts[prompts.len() - 1], false)
        .unwrap();
    for part in [
        "<tools>",
        "Weather in Paris?",
        "The user wants the weather.",
        "\"name\": \"get_weather\"",
        "<tool_response>\nsunny, 24 C\n</tool_response>",
    ] {
        assert!(prompt.contains(part), "{part} in {prompt}");
    }
}

#[tokio::test]
async fn cors_allows_deleting_a_stored_response() {
    let h = harness(HttpConfig {
        cors_origins: vec!["https://app.example".into()],
        ..HttpConfig::default()
    });
    let preflight = Request::options("/v1/responses/resp_1")
        .header(header::ORIGIN, "https://app.example")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "DELETE")
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = call(&h, preflight).await;
    assert_eq!(status, StatusCode::OK);
    let methods = headers[header::ACCESS_CONTROL_ALLOW_METHODS]
        .to_str()
        .unwrap();
    assert!(methods.contains("DELETE"), "{methods}");
}
