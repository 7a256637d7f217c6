//! A streamed Messages reply: Anthropic's named SSE events
//! (`event: <name>\ndata: <json>\n\n`).
//!
//! Follows Anthropic's "Streaming Messages" reference: `message_start`
//! (the message with empty content and the input tokens), `ping`, then per
//! content block `content_block_start`, `content_block_delta`s
//! (`thinking_delta`, `text_delta`, `input_json_delta`) and
//! `content_block_stop`, then `message_delta` (stop reason, stop sequence,
//! output tokens) and `message_stop`. A failure after the first event is
//! one `error` event. Blocks follow the reply's order: reasoning and text
//! open a block when they start and close it when the other kind (or a
//! tool use) begins; each tool use is one block whose input arrives whole
//! in one `input_json_delta`, since calls are parsed complete.

use serde::Serialize;
use serde_json::{Value, json};

use super::response::{ContentBlock, Message, MessageUsage, StopReason};
use crate::error::ApiError;
use crate::response::ToolCall;

/// One SSE event with its name.
pub fn sse_event(name: &str, data: &impl Serialize) -> String {
    match serde_json::to_string(data) {
        Ok(text) => format!("event: {name}\ndata: {text}\n\n"),
        Err(e) => error_event(&ApiError::Internal {
            message: format!("could not serialize a stream event: {e}"),
        }),
    }
}

/// The `error` event that ends a stream failing after its first event.
pub fn error_event(e: &ApiError) -> String {
    format!("event: error\ndata: {}\n\n", super::error_body_json(e))
}

/// The kind of the open text-like block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Thinking,
    Text,
}

/// The events of one streamed reply.
#[derive(Debug)]
pub struct MessageStream {
    id: String,
    model: String,
    input_tokens: u32,
    /// The open block and its index.
    open: Option<(Open, u32)>,
    /// Blocks started so far.
    blocks: u32,
}

impl MessageStream {
    pub fn new(id: String, model: String, input_tokens: u32) -> MessageStream {
        MessageStream {
            id,
            model,
            input_tokens,
            open: None,
            blocks: 0,
        }
    }

    /// `message_start` and a `ping`.
    pub fn start(&self) -> Vec<String> {
        let usage = MessageUsage {
            input_tokens: self.input_tokens,
            output_tokens: 0,
        };
        let message =
            Message::started(self.id.clone(), self.model.clone(), Vec::new(), None, usage);
        vec![
            sse_event(
                "message_start",
                &json!({"type": "message_start", "message": message}),
            ),
            sse_event("ping", &json!({"type": "ping"})),
        ]
    }

    /// Reasoning text.
    pub fn thinking(&mut self, text: &str) -> Vec<String> {
        self.delta(Open::Thinking, text)
    }

    /// Answer text.
    pub fn text(&mut self, text: &str) -> Vec<String> {
        self.delta(Open::Text, text)
    }

    fn delta(&mut self, kind: Open, text: &str) -> Vec<String> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let index = match self.open {
            Some((open, index)) if open == kind => index,
            _ => {
                out.extend(self.close());
                let block = match kind {
                    Open::Thinking => ContentBlock::Thinking {
                        thinking: String::new(),
                        signature: String::new(),
                    },
                    Open::Text => ContentBlock::Text {
                        text: String::new(),
                    },
                };
                let index = self.begin(&block, &mut out);
                self.open = Some((kind, index));
                index
            }
        };
        let delta = match kind {
            Open::Thinking => json!({"type": "thinking_delta", "thinking": text}),
            Open::Text => json!({"type": "text_delta", "text": text}),
        };
        out.push(block_delta(index, delta));
        out
    }

    /// One complete tool call: its block, its input, its end.
    pub fn tool_use(&mut self, call: &ToolCall) -> Vec<String> {
        let mut out = self.close();
        let ContentBlock::ToolUse { id, name, input } = ContentBlock::tool_use(call) else {
            return out;
        };
        let start = ContentBlock::ToolUse {
            id,
            name,
            input: Value::Object(serde_json::Map::new()),
        };
        let index = self.begin(&start, &mut out);
        let partial = serde_json::to_string(&input).unwrap_or_default();
        out.push(block_delta(
            index,
            json!({"type": "input_json_delta", "partial_json": partial}),
        ));
        out.push(block_stop(index));
        out
    }

    /// The last events: the open block's end, `message_delta`,
    /// `message_stop`.
    pub fn finish(
        &mut self,
        stop: (StopReason, Option<String>),
        output_tokens: u32,
    ) -> Vec<String> {
        let mut out = self.close();
        out.push(sse_event(
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": stop.0, "stop_sequence": stop.1},
                "usage": {"output_tokens": output_tokens},
            }),
        ));
        out.push(sse_event("message_stop", &json!({"type": "message_stop"})));
        out
    }

    fn begin(&mut self, block: &ContentBlock, out: &mut Vec<String>) -> u32 {
        let index = self.blocks;
        self.blocks += 1;
        out.push(sse_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        index
    }

    fn close(&mut self) -> Vec<String> {
        match self.open.take() {
            Some((_, index)) => vec![block_stop(index)],
            None => Vec::new(),
        }
    }
}

fn block_delta(index: u32, delta: Value) -> String {
    sse_event(
        "content_block_delta",
        &json!({"type": "content_block_delta", "index": index, "delta": delta}),
    )
}

fn block_stop(index: u32) -> String {
    sse_event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": index}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (event name, data) of each framed event; panics on bad framing.
    fn parse(events: &[String]) -> Vec<(String, Value)> {
        events
            .iter()
            .map(|e| {
                let (name, rest) = e
                    .strip_prefix("event: ")
                    .and_then(|e| e.split_once("\ndata: "))
                    .unwrap_or_else(|| panic!("bad framing: {e:?}"));
                let data = rest.strip_suffix("\n\n").expect("ends with a blank line");
                assert!(!data.contains('\n'), "one data line: {e:?}");
                let value: Value = serde_json::from_str(data).unwrap();
                assert_eq!(value["type"], name, "the data's type is the event's name");
                (name.to_owned(), value)
            })
            .collect()
    }

    #[test]
    fn a_reply_streams_its_blocks_in_order_with_indices() {
        let mut s = MessageStream::new("msg_1".into(), "m".into(), 7);
        let mut events = s.start();
        events.extend(s.thinking("hmm"));
        events.extend(s.thinking(" ok"));
        events.extend(s.text(""));
        events.extend(s.text("Hi"));
        events.extend(s.tool_use(&ToolCall::function("call_x", "f", "{\"a\":1}")));
        events.extend(s.finish((StopReason::ToolUse, None), 12));
        let parsed = parse(&events);
        let names: Vec<&str> = parsed.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        let start = &parsed[0].1["message"];
        assert_eq!(
            start["usage"],
            json!({"input_tokens": 7, "output_tokens": 0})
        );
        assert_eq!(start["content"], json!([]));
        assert_eq!(start["stop_reason"], Value::Null);
        assert_eq!(parsed[2].1["content_block"]["type"], "thinking");
        assert_eq!(
            parsed[4].1["delta"],
            json!({"type": "thinking_delta", "thinking": " ok"})
        );
        assert_eq!(parsed[6].1["index"], 1);
        assert_eq!(
            parsed[7].1["delta"],
            json!({"type": "text_delta", "text": "Hi"})
        );
        assert_eq!(
            parsed[9].1["content_block"],
            json!({"type": "tool_use", "id": "toolu_x", "name": "f", "input": {}})
        );
        assert_eq!(
            parsed[10].1["delta"],
            json!({"type": "input_json_delta", "partial_json": "{\"a\":1}"})
        );
        assert_eq!(parsed[11].1["index"], 2);
        assert_eq!(
            parsed[12].1,
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use",
                   "stop_sequence": null}, "usage": {"output_tokens": 12}})
        );
    }

    #[test]
    fn an_empty_reply_has_no_blocks_and_errors_are_one_event() {
        let mut s = MessageStream::new("msg_1".into(), "m".into(), 1);
        let events = s.finish((StopReason::StopSequence, Some("END".into())), 0);
        let parsed = parse(&events);
        assert_eq!(parsed[0].1["delta"]["stop_sequence"], "END");
        assert_eq!(parsed.len(), 2);
        let error = error_event(&ApiError::Timeout { seconds: 3 });
        let parsed = parse(&[error]);
        assert_eq!(parsed[0].1["error"]["type"], "api_error");
    }
}
