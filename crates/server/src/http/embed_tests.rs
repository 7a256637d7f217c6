//! Handler tests of the embedding routes (`/v1/embeddings`, Ollama's
//! `/api/embed` and `/api/embeddings`) against the fake worker, whose
//! vector for an input is `[pooling + 1, length, first id, last id]`
//! (normalized when asked): response shapes as snapshots, validation,
//! `dimensions`, base64, a crashed worker, API keys and metrics.

use axum::http::StatusCode;
use base64::Engine as _;
use serde_json::json;

use super::HttpConfig;
use super::catalog::StaticCatalog;
use super::tests::{call, gguf, harness, harness_with, json, post};

fn smol_ids(text: &str) -> Vec<u32> {
    let tokenizer = engine::Tokenizer::from_gguf_path(gguf()).unwrap();
    tokenizer.encode(text, true).unwrap()
}

fn unit(v: [f32; 4]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / norm).collect()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[tokio::test]
async fn openai_embeddings_come_in_input_order_with_usage() {
    let h = harness(HttpConfig::default());
    let body = json!({"model": "smol", "input": ["Hello there", "Paris"], "user": "u1"});
    let (status, _, text) = call(&h, post("/v1/embeddings", body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v = json(&text);
    insta::assert_json_snapshot!("embeddings", v);
    let (a, b) = (smol_ids("Hello there"), smol_ids("Paris"));
    let vector = |ids: &[u32]| {
        unit([
            1.0,
            ids.len() as f32,
            ids[0] as f32,
            ids[ids.len() - 1] as f32,
        ])
    };
    assert_eq!(floats(&v["data"][0]["embedding"]), vector(&a));
    assert_eq!(floats(&v["data"][1]["embedding"]), vector(&b));
    assert_eq!(v["usage"]["prompt_tokens"], (a.len() + b.len()) as u64);
}

#[tokio::test]
async fn token_inputs_base64_and_dimensions_are_honoured() {
    let h = harness(HttpConfig::default());
    let body = json!({"model": "smol", "input": [[3, 4, 5], [6]], "encoding_format": "base64", "dimensions": 2});
    let (status, _, text) = call(&h, post("/v1/embeddings", body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v = json(&text);
    let decoded: Vec<Vec<f32>> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(d["embedding"].as_str().unwrap())
                .unwrap();
            bytes
                .chunks(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect()
        })
        .collect();
    // [1, 3, 3, 5] → [1, 3] → unit; [1, 1, 6, 6] → [1, 1] → unit.
    let want = |a: f32, b: f32| {
        let n = (a * a + b * b).sqrt();
        vec![a / n, b / n]
    };
    for (got, want) in decoded.iter().zip([want(1.0, 3.0), want(1.0, 1.0)]) {
        assert!(
            got.iter().zip(&want).all(|(g, w)| (g - w).abs() < 1e-6),
            "{got:?} {want:?}"
        );
    }
    assert_eq!(v["usage"]["total_tokens"], 4);
}

#[tokio::test]
async fn bad_embedding_requests_are_400s_naming_the_parameter() {
    let h = harness(HttpConfig::default());
    let long: Vec<u32> = vec![5; 65];
    let cases = [
        (json!({"model": "smol"}), "input"),
        (json!({"model": "smol", "input": ""}), "input"),
        (json!({"model": "smol", "input": ["a", ""]}), "input[1]"),
        (
            json!({"model": "smol", "input": "a", "dimensions": 0}),
            "dimensions",
        ),
        (
            json!({"model": "smol", "input": "a", "dimensions": 5}),
            "dimensions",
        ),
        (
            json!({"model": "smol", "input": "a", "encoding_format": "hex"}),
            "encoding_format",
        ),
        (json!({"model": "smol", "input": [[1], long]}), "input[1]"),
        (json!({"model": "smol", "input": [[49152]]}), "input"),
    ];
    for (body, param) in cases {
        let (status, _, text) = call(&h, post("/v1/embeddings", body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {text}");
        assert_eq!(json(&text)["error"]["param"], param, "{body}: {text}");
    }
    // The worker's own refusal (the fake refuses a first token 0).
    let (status, _, text) = call(
        &h,
        post(
            "/v1/embeddings",
            json!({"model": "smol", "input": [[0, 1]]}),
        ),
    )
    .await;
    assert_eq!(
        (status, json(&text)["error"]["param"].clone()),
        (StatusCode::BAD_REQUEST, json!("input"))
    );
    let (status, _, _) = call(
        &h,
        post("/v1/embeddings", json!({"model": "nope", "input": "a"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_worker_crash_is_a_503_worker_crashed() {
    let launcher = crate::supervisor::fake::FakeLauncher {
        poison: Some(7),
        ..Default::default()
    };
    let h = super::tests::harness_with_launcher(HttpConfig::default(), launcher);
    let (status, _, text) = call(
        &h,
        post(
            "/v1/embeddings",
            json!({"model": "smol", "input": [[1, 7]]}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    let v = json(&text);
    assert_eq!(v["error"]["code"], "worker_crashed");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("SIGABRT"),
        "{v}"
    );
    let (status, _, _) = call(
        &h,
        post(
            "/v1/embeddings",
            json!({"model": "smol", "input": [[1, 2]]}),
        ),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the next request gets a fresh worker"
    );
}

#[tokio::test]
async fn ollama_embed_answers_in_ollamas_shape_and_truncates_by_default() {
    let h = harness(HttpConfig::default());
    let body = json!({"model": "smol", "input": ["Hello there", "Paris"], "keep_alive": "1m"});
    let (status, _, text) = call(&h, post("/api/embed", body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v = json(&text);
    insta::assert_json_snapshot!("ollama_embed", v, {
        ".total_duration" => "[ns]", ".load_duration" => "[ns]"
    });
    let long = "word ".repeat(100);
    let (status, _, text) = call(
        &h,
        post("/api/embed", json!({"model": "smol", "input": long})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(
        json(&text)["prompt_eval_count"],
        64,
        "truncated to the context"
    );
    let body = json!({"model": "smol", "input": long, "truncate": false});
    let (status, _, text) = call(&h, post("/api/embed", body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        json(&text)["error"].as_str().unwrap().contains("context"),
        "{text}"
    );
    let (status, _, text) = call(&h, post("/api/embed", json!({"model": "smol"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        json(&text)["error"].is_string(),
        "Ollama's error shape: {text}"
    );
    let (status, _, text) = call(
        &h,
        post("/api/embed", json!({"model": "nope", "input": "a"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(json(&text)["error"].as_str().unwrap().contains("nope"));
}

#[tokio::test]
async fn ollama_legacy_embeddings_are_raw_and_an_empty_prompt_is_empty() {
    let h = harness(HttpConfig::default());
    let (status, _, text) = call(
        &h,
        post(
            "/api/embeddings",
            json!({"model": "smol", "prompt": "Paris"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v = json(&text);
    insta::assert_json_snapshot!("ollama_embeddings", v);
    let ids = smol_ids("Paris");
    let raw = vec![
        1.0,
        ids.len() as f32,
        ids[0] as f32,
        ids[ids.len() - 1] as f32,
    ];
    assert_eq!(floats(&v["embedding"]), raw, "not normalized");
    let (status, _, text) = call(
        &h,
        post("/api/embeddings", json!({"model": "smol", "prompt": ""})),
    )
    .await;
    assert_eq!(
        (status, json(&text)),
        (StatusCode::OK, json!({"embedding": []}))
    );
}

#[tokio::test]
async fn embeddings_take_the_api_keys_and_count_in_metrics() {
    let config = HttpConfig {
        api_keys: vec!["sk-right".into()],
        ..HttpConfig::default()
    };
    let h = harness_with(
        config,
        StaticCatalog::new(vec![("smol".into(), gguf())], None),
    );
    for path in ["/v1/embeddings", "/api/embed"] {
        let (status, _, _) = call(&h, post(path, json!({"model": "smol", "input": "a"}))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let mut req = post("/v1/embeddings", json!({"model": "smol", "input": "a"}));
    req.headers_mut()
        .insert("authorization", "Bearer sk-right".parse().unwrap());
    let (status, _, _) = call(&h, req).await;
    assert_eq!(status, StatusCode::OK);
    let mut req = axum::http::Request::get("/metrics")
        .body(axum::body::Body::empty())
        .unwrap();
    req.headers_mut()
        .insert("authorization", "Bearer sk-right".parse().unwrap());
    let (_, _, text) = call(&h, req).await;
    assert!(
        text.contains(r#"route="/v1/embeddings",status="200""#),
        "{text}"
    );
}

#[tokio::test]
async fn an_embedding_past_the_request_timeout_is_a_504() {
    let config = HttpConfig {
        request_timeout: std::time::Duration::from_millis(1),
        ..HttpConfig::default()
    };
    let h = harness(config);
    let (status, _, text) = call(
        &h,
        post(
            "/v1/embeddings",
            json!({"model": "smol", "input": [[1, 2]]}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{text}");
    assert!(
        json(&text)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{text}"
    );
}
