//! The chunk builders emit OpenAI's sequence: a role chunk first for each
//! choice, content deltas, an empty delta with the finish reason last, and a
//! usage chunk with no choices when `include_usage` was asked.
#![allow(clippy::unwrap_used)]

use api::{
    ChatCompletionChunk, ChatStream, CompletionStream, FinishReason, ResponseMeta, SSE_DONE,
    ToolCall, Usage, sse_data,
};
use serde_json::{Value, json};

fn meta() -> ResponseMeta {
    ResponseMeta {
        id: "chatcmpl-1".into(),
        created: 1_700_000_000,
        model: "m".into(),
        system_fingerprint: None,
    }
}

fn to_json(chunks: &[ChatCompletionChunk]) -> Vec<Value> {
    chunks
        .iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .collect()
}

#[test]
fn a_choice_opens_with_the_role_and_closes_with_an_empty_delta() {
    let mut s = ChatStream::new(meta(), 1, false);
    let mut chunks = s.start();
    chunks.extend(s.content(0, "Hel", None));
    chunks.extend(s.content(0, "lo", None));
    chunks.extend(s.finish(0, FinishReason::Stop));
    let got: Vec<Value> = to_json(&chunks)
        .into_iter()
        .map(|c| json!([c["choices"][0]["delta"], c["choices"][0]["finish_reason"]]))
        .collect();
    assert_eq!(
        got,
        [
            json!([{"role": "assistant", "content": ""}, null]),
            json!([{"content": "Hel"}, null]),
            json!([{"content": "lo"}, null]),
            json!([{}, "stop"]),
        ]
    );
    assert!(s.is_finished());
    assert!(to_json(&chunks).iter().all(|c| c.get("usage").is_none()));
    assert_eq!(s.usage(Usage::new(3, 2)), None);
}

#[test]
fn content_before_start_opens_the_choice_first() {
    let mut s = ChatStream::new(meta(), 2, false);
    let chunks = to_json(&s.content(1, "x", None));
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[0]["choices"][0]["index"], 1);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[1]["choices"][0]["delta"], json!({"content": "x"}));
    // Only choice 0 is still unopened.
    let started = to_json(&s.start());
    assert_eq!(started.len(), 1);
    assert_eq!(started[0]["choices"][0]["index"], 0);
    assert!(s.start().is_empty());
}

#[test]
fn finishing_an_empty_choice_still_sends_its_role() {
    let mut s = ChatStream::new(meta(), 1, false);
    let chunks = to_json(&s.finish(0, FinishReason::Length));
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[1]["choices"][0]["finish_reason"], "length");
}

#[test]
fn events_after_finish_or_out_of_range_produce_nothing() {
    let mut s = ChatStream::new(meta(), 1, false);
    s.finish(0, FinishReason::Stop);
    assert!(s.content(0, "late", None).is_empty());
    assert!(s.finish(0, FinishReason::Length).is_empty());
    assert!(s.content(5, "x", None).is_empty());
    assert!(s.finish(5, FinishReason::Stop).is_empty());
}

#[test]
fn empty_text_without_logprobs_is_skipped() {
    let mut s = ChatStream::new(meta(), 1, false);
    s.start();
    assert!(s.content(0, "", None).is_empty());
}

#[test]
fn with_include_usage_every_chunk_has_null_usage_and_a_final_usage_chunk() {
    let mut s = ChatStream::new(meta(), 2, true);
    let mut chunks = s.start();
    chunks.extend(s.content(0, "a", None));
    chunks.extend(s.content(1, "b", None));
    chunks.extend(s.finish(1, FinishReason::Stop));
    assert!(!s.is_finished());
    chunks.extend(s.finish(0, FinishReason::Length));
    assert!(s.is_finished());
    let body = to_json(&chunks);
    assert!(
        body.iter()
            .all(|c| c["usage"].is_null() && c.get("usage").is_some())
    );
    assert!(
        body.iter()
            .all(|c| c["choices"].as_array().unwrap().len() == 1)
    );
    let last = serde_json::to_value(s.usage(Usage::new(10, 2)).unwrap()).unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        last["usage"],
        json!({"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12})
    );
    assert_eq!(s.usage(Usage::new(10, 2)), None, "usage is sent once");
}

#[test]
fn tool_calls_stream_their_name_then_their_arguments_numbered_across_deltas() {
    let mut s = ChatStream::new(meta(), 1, false);
    s.start();
    let first = to_json(&s.tool_calls(0, vec![ToolCall::function("c1", "f", "{}")]));
    let second = to_json(&s.tool_calls(
        0,
        vec![
            ToolCall::function("c2", "g", "{\"x\":1}"),
            ToolCall::function("c3", "h", "{}"),
        ],
    ));
    let deltas: Vec<&Value> = first
        .iter()
        .map(|c| &c["choices"][0]["delta"]["tool_calls"])
        .collect();
    assert_eq!(
        deltas,
        [
            &json!([{"index": 0, "id": "c1", "type": "function",
                     "function": {"name": "f", "arguments": ""}}]),
            &json!([{"index": 0, "function": {"arguments": "{}"}}]),
        ]
    );
    let indexes: Vec<&Value> = second
        .iter()
        .map(|c| &c["choices"][0]["delta"]["tool_calls"][0]["index"])
        .collect();
    assert_eq!(indexes, [&json!(1), &json!(1), &json!(2), &json!(2)]);
    let end = to_json(&s.finish(0, FinishReason::ToolCalls));
    assert_eq!(end[0]["choices"][0]["finish_reason"], "tool_calls");
}

#[test]
fn reasoning_streams_as_reasoning_content() {
    let mut s = ChatStream::new(meta(), 1, false);
    let chunks = to_json(&s.reasoning(0, "Hmm."));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(
        chunks[1]["choices"][0]["delta"],
        json!({"reasoning_content": "Hmm."})
    );
    assert!(s.reasoning(0, "").is_empty());
}

#[test]
fn completion_stream_has_no_role_chunk_and_ends_with_empty_text() {
    let meta = ResponseMeta {
        id: "cmpl-1".into(),
        ..meta()
    };
    let mut s = CompletionStream::new(meta, 2, true);
    let a = serde_json::to_value(s.text(1, " upon", None).unwrap()).unwrap();
    assert_eq!(a["object"], "text_completion");
    assert_eq!(
        a["choices"],
        json!([{"text": " upon", "index": 1, "logprobs": null, "finish_reason": null}])
    );
    assert!(a["usage"].is_null() && a.get("usage").is_some());
    assert!(s.text(1, "", None).is_none());
    let end = serde_json::to_value(s.finish(1, FinishReason::Length).unwrap()).unwrap();
    assert_eq!(
        end["choices"],
        json!([{"text": "", "index": 1, "logprobs": null, "finish_reason": "length"}])
    );
    assert!(s.text(1, "late", None).is_none());
    assert!(!s.is_finished());
    assert!(s.finish(0, FinishReason::Stop).is_some());
    assert!(s.is_finished());
    let usage = serde_json::to_value(s.usage(Usage::new(4, 9)).unwrap()).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["total_tokens"], 13);
    assert!(s.usage(Usage::new(4, 9)).is_none());
}

#[test]
fn completion_stream_without_usage_has_no_usage_key() {
    let mut s = CompletionStream::new(meta(), 1, false);
    let chunk = serde_json::to_value(s.text(0, "x", None).unwrap()).unwrap();
    assert!(chunk.get("usage").is_none());
    assert!(s.usage(Usage::new(1, 1)).is_none());
}

#[test]
fn sse_framing() {
    assert_eq!(sse_data(&json!({"a": 1})), "data: {\"a\":1}\n\n");
    assert_eq!(SSE_DONE, "data: [DONE]\n\n");
    let mut s = ChatStream::new(meta(), 1, false);
    let event = sse_data(&s.start()[0]);
    assert!(event.starts_with("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\""));
    assert!(event.ends_with("}\n\n") && !event[..event.len() - 2].contains('\n'));
}

#[test]
fn choices_are_ordered_by_prompt_then_sample() {
    assert_eq!(api::choice_index(0, 0, 3), 0);
    assert_eq!(api::choice_index(0, 2, 3), 2);
    assert_eq!(api::choice_index(1, 0, 3), 3);
    assert_eq!(api::choice_index(2, 1, 3), 7);
}
