//! JSON snapshots of every response shape, stream sequence and error body.
//! Ids and timestamps are fixed through the constructors, so the snapshots
//! are byte-for-byte stable; review a change with `cargo insta review`.
#![allow(clippy::unwrap_used)]

use api::{
    ApiError, AssistantMessage, ChatChoice, ChatCompletion, ChatLogprobs, ChatStream, Completion,
    CompletionChoice, CompletionLogprobs, CompletionStream, Endpoint, FinishReason, Model,
    ModelList, ResponseMeta, TokenLogprob, ToolCall, TopLogprob, TopLogprobMap, Usage, response_id,
};
use insta::assert_json_snapshot;
use serde_json::{Value, json};

fn meta(endpoint: Endpoint) -> ResponseMeta {
    ResponseMeta {
        id: response_id(endpoint, 0x1234_5678_9abc_def0),
        created: 1_700_000_000,
        model: "mlx-community/Qwen3-0.6B-4bit".into(),
        system_fingerprint: Some("mlxd-0.1.0".into()),
    }
}

fn token(text: &str, logprob: f32) -> TopLogprob {
    TopLogprob {
        token: text.into(),
        logprob,
        bytes: Some(text.as_bytes().to_vec()),
    }
}

#[test]
fn chat_completion() {
    let logprobs = ChatLogprobs {
        content: vec![TokenLogprob {
            token: "Hi".into(),
            logprob: -0.25,
            bytes: Some(b"Hi".to_vec()),
            top_logprobs: vec![token("Hi", -0.25), token("Hello", -1.5)],
        }],
    };
    let body = ChatCompletion::new(
        meta(Endpoint::Chat),
        vec![
            ChatChoice {
                index: 0,
                message: AssistantMessage::text("Hi"),
                logprobs: Some(logprobs),
                finish_reason: FinishReason::Stop,
            },
            ChatChoice {
                index: 1,
                message: AssistantMessage::text("Hello there"),
                logprobs: None,
                finish_reason: FinishReason::Length,
            },
        ],
        Usage::new(12, 3),
    );
    assert_json_snapshot!(body);
}

#[test]
fn chat_completion_with_tool_calls() {
    let message = AssistantMessage::tool_calls(
        None,
        vec![ToolCall::function(
            "call_0",
            "get_weather",
            "{\"city\":\"Paris\"}",
        )],
    );
    let mut meta = meta(Endpoint::Chat);
    meta.system_fingerprint = None;
    let body = ChatCompletion::new(
        meta,
        vec![ChatChoice {
            index: 0,
            message,
            logprobs: None,
            finish_reason: FinishReason::ToolCalls,
        }],
        Usage::new(40, 18),
    );
    assert_json_snapshot!(body);
}

#[test]
fn chat_stream_sequence() {
    let mut s = ChatStream::new(meta(Endpoint::Chat), 1, false);
    let mut chunks = s.start();
    chunks.extend(s.content(0, "Hel", None));
    chunks.extend(s.content(0, "lo", None));
    chunks.extend(s.finish(0, FinishReason::Stop));
    assert_json_snapshot!(chunks);
}

#[test]
fn chat_stream_sequence_with_usage_and_two_choices() {
    let mut s = ChatStream::new(meta(Endpoint::Chat), 2, true);
    let mut chunks = s.start();
    let logprobs = ChatLogprobs {
        content: vec![TokenLogprob {
            token: "A".into(),
            logprob: -0.5,
            bytes: Some(b"A".to_vec()),
            top_logprobs: vec![token("A", -0.5)],
        }],
    };
    chunks.extend(s.content(0, "A", Some(logprobs)));
    chunks.extend(s.content(1, "B", None));
    chunks.extend(s.finish(0, FinishReason::Stop));
    chunks.extend(s.finish(1, FinishReason::Length));
    chunks.extend(s.usage(Usage::new(5, 2)));
    assert_json_snapshot!(chunks);
}

fn completion_logprobs() -> CompletionLogprobs {
    CompletionLogprobs {
        tokens: vec!["Once".into(), " upon".into()],
        token_logprobs: vec![None, Some(-0.75)],
        top_logprobs: vec![
            None,
            Some(TopLogprobMap(vec![
                (" upon".into(), -0.75),
                (" there".into(), -2.0),
            ])),
        ],
        text_offset: vec![0, 4],
    }
}

#[test]
fn completion() {
    let body = Completion::new(
        meta(Endpoint::Completion),
        vec![
            CompletionChoice {
                text: "Once upon".into(),
                index: 0,
                logprobs: Some(completion_logprobs()),
                finish_reason: Some(FinishReason::Length),
            },
            CompletionChoice {
                text: "Once more".into(),
                index: 1,
                logprobs: None,
                finish_reason: Some(FinishReason::Stop),
            },
        ],
        Usage::new(1, 1),
    );
    assert_json_snapshot!(body);
}

#[test]
fn completion_stream_sequence() {
    let mut s = CompletionStream::new(meta(Endpoint::Completion), 1, true);
    let mut chunks = Vec::new();
    chunks.extend(s.text(0, "Once", None));
    chunks.extend(s.text(0, " upon", None));
    chunks.extend(s.finish(0, FinishReason::Stop));
    chunks.extend(s.usage(Usage::new(3, 2)));
    assert_json_snapshot!(chunks);
}

#[test]
fn model_list() {
    let mut loaded = Model::new("mlx-community/Qwen3-0.6B-4bit", 1_700_000_000, "mlxd", true);
    loaded.format = Some("mlx".into());
    loaded.path = Some("/models/qwen3".into());
    let idle = Model::new("llama-3.2-1b", 1_690_000_000, "mlxd", false);
    assert_json_snapshot!(ModelList::new(vec![loaded, idle]));
}

fn request_errors() -> Vec<(&'static str, ApiError)> {
    vec![
        (
            "invalid_request",
            ApiError::invalid(
                "temperature",
                "temperature must be between 0 and 2, got 3.5",
            ),
        ),
        (
            "invalid_json",
            api::parse_chat(b"{\"model\": ").unwrap_err(),
        ),
        (
            "context_length_with_max_tokens",
            ApiError::ContextLengthExceeded {
                endpoint: Endpoint::Chat,
                max_context: 4096,
                prompt_tokens: 4000,
                max_tokens: Some(200),
            },
        ),
        (
            "context_length_prompt_only",
            ApiError::ContextLengthExceeded {
                endpoint: Endpoint::Completion,
                max_context: 2048,
                prompt_tokens: 3000,
                max_tokens: None,
            },
        ),
    ]
}

fn http_errors() -> Vec<(&'static str, ApiError)> {
    vec![
        ("missing_api_key", ApiError::MissingApiKey),
        ("invalid_api_key", ApiError::InvalidApiKey),
        (
            "model_not_found",
            ApiError::ModelNotFound {
                model: "gpt-9".into(),
            },
        ),
        (
            "unknown_route",
            ApiError::UnknownRoute {
                method: "POST".into(),
                path: "/v1/frobnicate".into(),
            },
        ),
        (
            "method_not_allowed",
            ApiError::MethodNotAllowed {
                method: "GET".into(),
                path: "/v1/chat/completions".into(),
            },
        ),
        (
            "payload_too_large",
            ApiError::PayloadTooLarge {
                limit_bytes: 1 << 20,
            },
        ),
        (
            "unsupported_media_type",
            ApiError::UnsupportedMediaType {
                content_type: Some("text/plain".into()),
            },
        ),
        (
            "unsupported_media_type_absent",
            ApiError::UnsupportedMediaType { content_type: None },
        ),
        (
            "unprocessable",
            ApiError::Unprocessable {
                message: "the chat template failed: Conversation roles must alternate".into(),
                param: Some("messages".into()),
            },
        ),
    ]
}

fn server_errors() -> Vec<(&'static str, ApiError)> {
    vec![
        (
            "queue_full",
            ApiError::QueueFull {
                model: "m".into(),
                retry_after_secs: 2,
            },
        ),
        (
            "internal",
            ApiError::Internal {
                message: "tokenizer missing".into(),
            },
        ),
        (
            "model_load_failed",
            ApiError::ModelLoadFailed {
                model: "m".into(),
                reason: "config.json: unknown model_type \"mamba\"".into(),
            },
        ),
        (
            "worker_crashed",
            ApiError::WorkerCrashed {
                model: "m".into(),
                reason: "killed by signal 9 (out of memory?)".into(),
            },
        ),
        (
            "unavailable",
            ApiError::Unavailable {
                message: "not enough memory to load m".into(),
                retry_after_secs: Some(30),
            },
        ),
        ("timeout", ApiError::Timeout { seconds: 600 }),
    ]
}

/// Every variant once (two for those whose message has two forms).
fn error_cases() -> Vec<(&'static str, ApiError)> {
    let mut all = request_errors();
    all.extend(http_errors());
    all.extend(server_errors());
    all
}

#[test]
fn error_bodies() {
    let all: Vec<Value> = error_cases()
        .into_iter()
        .map(|(name, e)| {
            json!({"case": name, "status": e.status(), "retry_after": e.retry_after(),
                   "body": e.body()})
        })
        .collect();
    assert_json_snapshot!(all);
}

#[test]
fn error_body_json_matches_body() {
    for (name, e) in error_cases() {
        let text: Value = serde_json::from_str(&e.body_json()).unwrap();
        assert_eq!(text, serde_json::to_value(e.body()).unwrap(), "{name}");
        let event = e.sse_event();
        let data = event
            .strip_prefix("data: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        assert_eq!(serde_json::from_str::<Value>(data).unwrap(), text, "{name}");
        let keys: Vec<&String> = text["error"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["message", "type", "param", "code"], "{name}");
    }
}
