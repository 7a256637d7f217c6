//! gpt-oss's Harmony format: the reply is a run of messages, each a header
//! (`<|channel|>CHANNEL`, optionally ` to=functions.NAME` and
//! ` <|constrain|>json`, in either order) then `<|message|>`, the body, and
//! `<|end|>` (the next message opens with `<|start|>assistant`), or
//! `<|call|>` / `<|return|>`, which end the reply as end-of-sequence tokens.
//!
//! Follows OpenAI's Harmony response format and vLLM's
//! `openai_tool_parser.py`: the `analysis` channel is reasoning; a message
//! addressed `to=functions.NAME` is a call of NAME whose body is its JSON
//! arguments; `final`, and `commentary` without a recipient (a preamble to
//! the user), are the answer. A reply that opens with no header is answer
//! text. With no tools offered, an addressed message is answer text too.

use serde_json::Value;

use super::{ParsedCall, Piece, ToolParser, scan};

const MESSAGE: &str = "<|message|>";
const BODY_ENDS: [&str; 4] = ["<|end|>", "<|call|>", "<|return|>", "<|start|>"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Header,
    Reasoning,
    Content,
    Call { name: String, header: String },
}

/// The Harmony parser.
#[derive(Debug)]
pub struct Harmony {
    tools: bool,
    buf: String,
    state: State,
}

impl Harmony {
    /// `tools`: whether tools were offered (addressed messages are calls).
    pub fn new(tools: bool) -> Harmony {
        Harmony {
            tools,
            buf: String::new(),
            state: State::Header,
        }
    }

    /// Where a message with this header goes.
    fn route(&self, header: &str) -> State {
        let channel = header
            .split_once("<|channel|>")
            .map(|(_, rest)| {
                let end = rest
                    .find(|c: char| c.is_whitespace() || c == '<')
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .unwrap_or("");
        let recipient = header.split_once("to=").map(|(_, rest)| {
            let end = rest
                .find(|c: char| c.is_whitespace() || c == '<')
                .unwrap_or(rest.len());
            &rest[..end]
        });
        match recipient.and_then(|r| r.strip_prefix("functions.")) {
            Some(name) if self.tools => State::Call {
                name: name.to_owned(),
                header: header.to_owned(),
            },
            _ if channel == "analysis" => State::Reasoning,
            _ => State::Content,
        }
    }
}

/// Whether `text` (no leading blanks) is, or may become, a message header.
fn looks_like_header(text: &str) -> bool {
    ["<|", "to="]
        .iter()
        .any(|m| text.starts_with(m) || m.starts_with(text))
}

impl ToolParser for Harmony {
    fn push(&mut self, text: &str, out: &mut Vec<Piece>) {
        self.buf.push_str(text);
        loop {
            match &self.state {
                State::Header => {
                    let trimmed = self.buf.trim_start();
                    if trimmed.is_empty() {
                        return;
                    }
                    if !looks_like_header(trimmed) {
                        self.state = State::Content;
                        continue;
                    }
                    let Some(at) = self.buf.find(MESSAGE) else {
                        return;
                    };
                    let header = self.buf[..at].to_owned();
                    self.buf.drain(..at + MESSAGE.len());
                    self.state = self.route(&header);
                }
                State::Reasoning | State::Content => {
                    let (before, found) = scan::take_until(&mut self.buf, &BODY_ENDS);
                    out.push(if self.state == State::Reasoning {
                        Piece::Reasoning(before)
                    } else {
                        Piece::Content(before)
                    });
                    match found {
                        Some(_) => self.state = State::Header,
                        None => return,
                    }
                }
                State::Call { .. } => {
                    let Some((at, index)) = scan::find_first(&self.buf, &BODY_ENDS) else {
                        return;
                    };
                    let body = self.buf[..at].to_owned();
                    self.buf.drain(..at + BODY_ENDS[index].len());
                    let state = std::mem::replace(&mut self.state, State::Header);
                    close_call(state, &body, BODY_ENDS[index], out);
                }
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<Piece>) {
        let rest = std::mem::take(&mut self.buf);
        match std::mem::replace(&mut self.state, State::Header) {
            State::Reasoning => out.push(Piece::Reasoning(rest)),
            call @ State::Call { .. } => close_call(call, &rest, "", out),
            // A header never finished, or answer text.
            State::Header | State::Content => out.push(Piece::Content(rest)),
        }
    }
}

fn close_call(state: State, body: &str, end: &str, out: &mut Vec<Piece>) {
    let State::Call { name, header } = state else {
        return;
    };
    let parsed = serde_json::from_str::<Value>(body.trim())
        .map_err(|e| e.to_string())
        .and_then(|arguments| ParsedCall::new(&name, arguments));
    match parsed {
        Ok(call) => out.push(Piece::Call(call)),
        Err(why) => {
            tracing::warn!(reason = %why, "the model's tool call does not parse; kept as text");
            out.push(Piece::Content(format!("{header}{MESSAGE}{body}{end}")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ToolFormat;
    use super::super::testing::{call, content, parser, run_split};
    use super::super::{OutputOptions, OutputParser, Piece};
    use serde_json::json;

    #[test]
    fn channels_become_reasoning_calls_and_content() {
        let p = || parser(ToolFormat::Harmony, "", json!([]));
        let text = "<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant\
                    <|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>\
                    {\"city\": \"Paris\"}";
        assert_eq!(
            run_split(&p, text),
            vec![
                Piece::Reasoning("Need the weather.".into()),
                call("get_weather", json!({"city": "Paris"}))
            ]
        );
        let recipient_first = "<|channel|>analysis<|message|>x<|end|><|start|>assistant \
                               to=functions.f<|channel|>commentary json<|message|>{}";
        assert_eq!(
            run_split(&p, recipient_first),
            vec![Piece::Reasoning("x".into()), call("f", json!({}))]
        );
        let answer = "<|channel|>analysis<|message|>Simple.<|end|><|start|>assistant\
                      <|channel|>final<|message|>Paris.";
        assert_eq!(
            run_split(&p, answer),
            vec![Piece::Reasoning("Simple.".into()), content("Paris.")]
        );
    }

    #[test]
    fn without_tools_channels_still_split_and_plain_text_is_content() {
        let p = || {
            OutputParser::new(&OutputOptions {
                harmony: true,
                ..OutputOptions::default()
            })
        };
        let text = "<|channel|>analysis<|message|>Hmm.<|end|><|start|>assistant<|channel|>final\
                    <|message|>Hi.";
        assert_eq!(
            run_split(&p, text),
            vec![Piece::Reasoning("Hmm.".into()), content("Hi.")]
        );
        assert_eq!(run_split(&p, "Just text."), vec![content("Just text.")]);
    }

    #[test]
    fn a_broken_call_body_stays_text() {
        let p = || parser(ToolFormat::Harmony, "", json!([]));
        let text = "<|channel|>commentary to=functions.f <|constrain|>json<|message|>{\"a\": ";
        assert_eq!(run_split(&p, text), vec![content(text)]);
    }
}
