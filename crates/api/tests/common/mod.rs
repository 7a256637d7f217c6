//! Request builders and assertions the validation tests share.
#![allow(clippy::unwrap_used, dead_code)]

use api::{ApiError, GenerationRequest, PromptInput};
use serde_json::{Value, json};

pub fn chat(extra: Value) -> Result<GenerationRequest, ApiError> {
    let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    merge(&mut body, extra);
    api::parse_chat(body.to_string().as_bytes())
}

pub fn completion(extra: Value) -> Result<GenerationRequest, ApiError> {
    let mut body = json!({"model": "m", "prompt": "Once"});
    merge(&mut body, extra);
    api::parse_completion(body.to_string().as_bytes())
}

pub fn merge(body: &mut Value, extra: Value) {
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
}

/// Asserts a 400 naming `param` whose message contains `needle`.
#[track_caller]
pub fn assert_invalid<T: std::fmt::Debug>(result: Result<T, ApiError>, param: &str, needle: &str) {
    let err = result.expect_err("the request was accepted");
    assert_eq!(err.status(), 400, "{err:?}");
    assert_eq!(err.param(), Some(param), "{err:?}");
    assert!(
        err.to_string().contains(needle),
        "{err} does not contain {needle:?}"
    );
}

pub fn chat_messages(req: &GenerationRequest) -> &[Value] {
    match &req.prompts[..] {
        [PromptInput::Chat { messages, .. }] => messages,
        other => panic!("not one chat prompt: {other:?}"),
    }
}
