//! Ollama's routes through the handlers, against the fake worker of
//! [`super::tests`] (scripted tokens of the real SmolLM2 tokenizer), with
//! JSON snapshots of the response shapes.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};

use super::HttpConfig;
use super::tests::{Harness, call, harness, post};

const ANSWER: &str = " The capital of France is Paris.";

fn chat(extra: Value) -> Value {
    let mut body = json!({
        "model": "smol",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
    });
    for (k, v) in extra.as_object().expect("an object") {
        body[k] = v.clone();
    }
    body
}

fn lines(body: &str) -> Vec<Value> {
    body.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).expect("a request")
}

/// The durations and times a snapshot cannot hold.
macro_rules! snapshot {
    ($name:expr, $value:expr) => {
        insta::assert_json_snapshot!($name, $value, {
            ".created_at" => "[created_at]",
            ".total_duration" => "[ns]",
            ".load_duration" => "[ns]",
            ".prompt_eval_duration" => "[ns]",
            ".eval_duration" => "[ns]",
            ".prompt_eval_count" => "[count]",
        })
    };
}

#[tokio::test]
async fn a_whole_chat_is_one_done_object() {
    let h = harness(HttpConfig::default());
    let (status, _, text) = call(&h, post("/api/chat", chat(json!({"stream": false})))).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(v["message"]["content"], ANSWER);
    assert_eq!(v["done"], true);
    assert_eq!(v["done_reason"], "stop");
    assert!(v["prompt_eval_count"].as_u64().expect("a count") > 20);
    assert!(v["eval_count"].as_u64().expect("a count") > 0);
    snapshot!("ollama_chat", v);
}

#[tokio::test]
async fn a_chat_streams_ndjson_by_default_and_ends_with_the_counts() {
    let h = harness(HttpConfig::default());
    let (status, headers, text) = call(&h, post("/api/chat", chat(json!({})))).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(headers[header::CONTENT_TYPE], "application/x-ndjson");
    let lines = lines(&text);
    assert!(lines.len() > 2, "{text}");
    let (last, pieces) = lines.split_last().expect("lines");
    assert!(pieces.iter().all(|l| l["done"] == false));
    let content: String = pieces
        .iter()
        .map(|l| l["message"]["content"].as_str().expect("content"))
        .collect();
    assert_eq!(content, ANSWER);
    assert_eq!(last["done"], true);
    assert_eq!(last["message"]["content"], "");
    assert!(last["total_duration"].as_u64().expect("ns") > 0);
    snapshot!("ollama_chat_stream_last", last);
}

#[tokio::test]
async fn generate_streams_response_pieces() {
    let h = harness(HttpConfig::default());
    let body = json!({"model": "smol:latest", "prompt": "Capital of France?"});
    let (status, _, text) = call(&h, post("/api/generate", body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let lines = lines(&text);
    let content: String = lines
        .iter()
        .filter_map(|l| l["response"].as_str())
        .collect();
    assert_eq!(content, ANSWER);
    let last = lines.last().expect("a last line");
    assert_eq!(last["model"], "smol:latest", "the name as sent");
    snapshot!("ollama_generate_stream_last", last);
}

#[tokio::test]
async fn options_reach_the_worker_under_their_sampling_names() {
    let h = harness(HttpConfig::default());
    let options = json!({"temperature": 0.25, "top_k": 5, "num_predict": 3, "seed": 9,
                         "repeat_penalty": 1.5, "repeat_last_n": 16, "num_ctx": 8192});
    let body = chat(json!({"stream": false, "options": options}));
    let (status, _, text) = call(&h, post("/api/chat", body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let worker = Arc::clone(&h.launcher.workers.lock().expect("workers")[0]);
    let p = worker.params.lock().expect("params")[0].clone();
    assert_eq!(
        (p.temperature, p.top_k, p.max_tokens, p.seed),
        (0.25, 5, 3, Some(9))
    );
    assert_eq!((p.repetition_penalty, p.repetition_context_size), (1.5, 16));
}

/// A harness whose worker replies `reply` with a 4096-token context.
fn scripted(reply: &str) -> Harness {
    let h = harness(HttpConfig::default());
    let tokenizer = engine::Tokenizer::from_gguf_path(super::tests::gguf()).expect("tokenizer");
    *h.launcher.script.lock().expect("script") = Some(tokenizer.encode(reply, false).expect("ids"));
    *h.launcher.context_length.lock().expect("context") = Some(4096);
    h
}

#[tokio::test]
async fn tool_calls_carry_their_arguments_as_objects() {
    let h = scripted(
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
    );
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let body = chat(json!({"stream": false, "tools": tools}));
    let (status, _, text) = call(&h, post("/api/chat", body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v: Value = serde_json::from_str(&text).expect("JSON");
    let call = &v["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], json!({"city": "Paris"}));
    assert_eq!(v["done_reason"], "stop");
}

#[tokio::test]
async fn errors_have_ollamas_shape_and_status() {
    let h = harness(HttpConfig::default());
    for (path, body, status, words) in [
        ("/api/chat", chat(json!({"model": "nope"})), 404, "nope"),
        (
            "/api/chat",
            json!({"model": "smol", "messages": [{"role": "user", "content": "x",
                   "images": ["aGk="]}]}),
            400,
            "images",
        ),
        (
            "/api/chat",
            chat(json!({"options": {"mirostat": 2}})),
            400,
            "options.mirostat",
        ),
        (
            "/api/generate",
            json!({"model": "smol", "prompt": "x", "suffix": "y"}),
            400,
            "suffix",
        ),
        ("/api/show", json!({"model": "nope"}), 404, "nope"),
        (
            "/api/show",
            json!({"model": "smol", "verbose": true}),
            400,
            "verbose",
        ),
        (
            "/api/copy",
            json!({"source": "a", "destination": "b"}),
            501,
            "alias",
        ),
    ] {
        let (got, _, text) = call(&h, post(path, body)).await;
        assert_eq!(got.as_u16(), status, "{path}: {text}");
        let v: Value = serde_json::from_str(&text).expect("JSON");
        let message = v["error"].as_str().unwrap_or_else(|| panic!("{text}"));
        assert!(message.contains(words), "{message}");
    }
    let (status, _, text) = call(&h, get("/api/nothing")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(serde_json::from_str::<Value>(&text).expect("JSON")["error"].is_string());
}

#[tokio::test]
async fn a_body_without_a_json_content_type_is_read_as_json() {
    let h = harness(HttpConfig::default());
    let request = Request::post("/api/chat")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(chat(json!({"stream": false})).to_string()))
        .expect("a request");
    let (status, _, text) = call(&h, request).await;
    assert_eq!(status, StatusCode::OK, "{text}");
}

#[tokio::test]
async fn api_keys_guard_the_routes_but_not_the_root() {
    let h = harness(HttpConfig {
        api_keys: vec!["sk-test".into()],
        ..HttpConfig::default()
    });
    let (status, _, text) = call(&h, get("/api/tags")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(serde_json::from_str::<Value>(&text).expect("JSON")["error"].is_string());
    let (status, _, text) = call(&h, get("/")).await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "mlxd is running"));
    let head = Request::head("/").body(Body::empty()).expect("a request");
    assert_eq!(call(&h, head).await.0, StatusCode::OK);
    let request = Request::get("/api/tags")
        .header(header::AUTHORIZATION, "Bearer sk-test")
        .body(Body::empty())
        .expect("a request");
    assert_eq!(call(&h, request).await.0, StatusCode::OK);
}

#[tokio::test]
async fn tags_show_ps_and_version_describe_the_models() {
    let h = harness(HttpConfig::default());
    let (status, _, text) = call(&h, get("/api/tags")).await;
    assert_eq!(status, StatusCode::OK);
    let tags: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(tags["models"][0]["name"], "smol:latest");
    insta::assert_json_snapshot!("ollama_tags", tags, {
        ".models[].modified_at" => "[time]",
    });
    let (status, _, text) = call(&h, post("/api/show", json!({"model": "smol:latest"}))).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let show: Value = serde_json::from_str(&text).expect("JSON");
    assert!(
        show["template"]
            .as_str()
            .expect("a template")
            .contains("im_start")
    );
    assert_eq!(show["capabilities"], json!(["completion", "tools"]));
    assert_eq!(show["details"], tags["models"][0]["details"]);
    assert_eq!(tags["models"][0]["details"]["family"], "llama");
    assert_eq!(tags["models"][0]["details"]["quantization_level"], "Q4_1");
    assert_eq!(show["model_info"]["general.architecture"], "llama");
    assert_eq!(show["model_info"]["llama.block_count"], 30);
    let (_, _, text) = call(&h, get("/api/ps")).await;
    assert_eq!(
        serde_json::from_str::<Value>(&text).expect("JSON")["models"],
        json!([])
    );
    call(
        &h,
        post(
            "/api/generate",
            json!({"model": "smol", "keep_alive": "5m"}),
        ),
    )
    .await;
    let (_, _, text) = call(&h, get("/api/ps")).await;
    let ps: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(ps["models"][0]["name"], "smol:latest");
    assert!(ps["models"][0]["expires_at"].is_string());
    assert!(ps["models"][0]["size_vram"].as_u64().is_some(), "{ps}");
    let (_, _, text) = call(&h, get("/api/version")).await;
    assert!(serde_json::from_str::<Value>(&text).expect("JSON")["version"].is_string());
}

#[tokio::test]
async fn an_empty_generate_loads_and_keep_alive_zero_unloads() {
    let h = harness(HttpConfig::default());
    let (status, _, text) = call(&h, post("/api/generate", json!({"model": "smol"}))).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        (v["done"].clone(), v["done_reason"].clone()),
        (json!(true), json!("load"))
    );
    assert_eq!(
        h.launcher
            .launches
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    // A chat without messages unloads as well, answering as a chat.
    let body = json!({"model": "smol", "messages": [], "keep_alive": 0});
    let (_, _, text) = call(&h, post("/api/chat", body)).await;
    let v: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(v["done_reason"], "unload");
    assert_eq!(v["message"]["content"], "");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(h.launcher.workers.lock().expect("workers")[0].is_stopped());
}

#[tokio::test]
async fn metrics_count_the_ollama_routes() {
    let h = harness(HttpConfig::default());
    call(&h, post("/api/chat", chat(json!({"stream": false})))).await;
    call(&h, get("/api/tags")).await;
    let (_, _, text) = call(&h, get("/metrics")).await;
    for route in ["/api/chat", "/api/tags"] {
        let line = format!("mlxd_http_requests_total{{route=\"{route}\",status=\"200\"}} 1");
        assert!(text.contains(&line), "{text}");
    }
}

/// A checkpoint directory the fake worker "serves": Qwen3's tokenizer and
/// chat template, a config, and an empty weights file.
fn qwen3_dir(dir: &std::path::Path) -> std::path::PathBuf {
    let tokenizer = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../.cache/test-data/npm/qwen3");
    for file in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(tokenizer.join(file), dir.join(file)).expect("run scripts/test-data.sh");
    }
    let config = json!({"model_type": "qwen3", "hidden_size": 8, "num_hidden_layers": 1,
        "num_attention_heads": 1, "num_key_value_heads": 1, "head_dim": 8,
        "intermediate_size": 8, "vocab_size": 151936, "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6, "torch_dtype": "float32"});
    std::fs::write(dir.join("config.json"), config.to_string()).expect("config");
    let header = b"{}";
    let mut weights = (header.len() as u64).to_le_bytes().to_vec();
    weights.extend_from_slice(header);
    std::fs::write(dir.join("model.safetensors"), weights).expect("weights");
    dir.to_path_buf()
}

#[tokio::test]
async fn reasoning_goes_to_thinking_and_think_false_reaches_the_template() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = qwen3_dir(dir.path());
    let catalog = super::catalog::StaticCatalog::new(vec![("qwen".into(), path.clone())], None);
    let h = super::tests::harness_with(HttpConfig::default(), catalog);
    let tokenizer = engine::Tokenizer::from_dir(&path).expect("tokenizer");
    let reply = tokenizer
        .encode("<think>\nThe capital.\n</think>\n\nParis.", false)
        .expect("ids");
    *h.launcher.script.lock().expect("script") = Some(reply);
    *h.launcher.context_length.lock().expect("context") = Some(4096);
    let body = json!({"model": "qwen", "stream": false, "think": true,
                      "messages": [{"role": "user", "content": "Capital of France?"}]});
    let (status, _, text) = call(&h, post("/api/chat", body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(v["message"]["thinking"], "\nThe capital.\n");
    assert_eq!(v["message"]["content"], "Paris.");

    let body = json!({"model": "qwen", "think": false, "prompt": "Capital of France?"});
    let (status, _, text) = call(&h, post("/api/generate", body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let thinking: String = lines(&text)
        .iter()
        .filter_map(|l| l["thinking"].as_str())
        .collect();
    assert_eq!(thinking, "\nThe capital.\n", "{text}");
    let worker = Arc::clone(&h.launcher.workers.lock().expect("workers")[0]);
    let prompts = worker.prompts.lock().expect("prompts").clone();
    let rendered = |i: usize| tokenizer.decode(&prompts[i], false).expect("text");
    assert!(!rendered(0).contains("<think>"), "{}", rendered(0));
    assert!(
        rendered(1).ends_with("<think>\n\n</think>\n\n"),
        "{}",
        rendered(1)
    );
}

#[tokio::test]
async fn logprobs_come_back_per_token() {
    let h = harness(HttpConfig::default());
    let body = chat(json!({"stream": false, "logprobs": true, "top_logprobs": 0}));
    let (status, _, text) = call(&h, post("/api/chat", body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v: Value = serde_json::from_str(&text).expect("JSON");
    let logprobs = v["logprobs"].as_array().expect("logprobs");
    assert_eq!(
        logprobs.len() as u64,
        v["eval_count"].as_u64().expect("a count")
    );
    let joined: String = logprobs
        .iter()
        .map(|l| l["token"].as_str().expect("a token"))
        .collect();
    assert!(joined.contains("Paris"), "{joined}");
    assert_eq!(logprobs[0]["logprob"], -0.5);
    let worker = Arc::clone(&h.launcher.workers.lock().expect("workers")[0]);
    assert!(worker.params.lock().expect("params")[0].logprobs);
}
