//! Reasoning blocks: `<think>…</think>` (Qwen3, DeepSeek-R1, QwQ) and Gemma
//! 4's thought channel (`<|channel>thought…<channel|>`) split from the
//! answer, as vLLM's `reasoning/` parsers and mlx-lm's `_infer_thinking` do.
//!
//! The markers come from the vocabulary (both tokens present, as mlx-lm
//! checks). A template may open the block in the prompt (DeepSeek-R1,
//! Qwen3 thinking templates): the reply then starts inside it, which the
//! rendered prompt tells ([`ThinkMarkers::prompt_opens`]). One block is
//! recognized, before any answer text; a later `<think>` is answer text.

use super::{Piece, scan};

/// The text that opens and closes a reasoning block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThinkMarkers {
    pub start: String,
    pub end: String,
}

impl ThinkMarkers {
    /// The model's markers, when its vocabulary has them.
    pub fn of_tokenizer(tokenizer: &crate::Tokenizer) -> Option<ThinkMarkers> {
        let has = |t: &str| tokenizer.token_to_id(t).is_some();
        let pair = |s: &str, e: &str| ThinkMarkers {
            start: s.to_owned(),
            end: e.to_owned(),
        };
        if has("<think>") && has("</think>") {
            Some(pair("<think>", "</think>"))
        } else if has("<|channel>") && has("<channel|>") {
            Some(pair("<|channel>thought", "<channel|>"))
        } else {
            None
        }
    }

    /// Whether the rendered prompt ends inside an open block (its last
    /// start marker comes after its last end marker).
    pub fn prompt_opens(&self, prompt: &str) -> bool {
        match (prompt.rfind(&self.start), prompt.rfind(&self.end)) {
            (Some(start), Some(end)) => start > end,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// The marker texts (for keeping special tokens in the decoded text).
    pub fn texts(&self) -> [&str; 2] {
        [&self.start, &self.end]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before any answer text: a start marker opens the block.
    Before,
    Inside,
    /// The block is over, or answer text came first.
    After,
}

/// Splits reasoning from the rest of the reply; the rest goes on as
/// [`Piece::Content`].
#[derive(Debug)]
pub(crate) struct ThinkSplitter {
    markers: ThinkMarkers,
    state: State,
    buf: String,
}

impl ThinkSplitter {
    pub(crate) fn new(markers: ThinkMarkers, starts_inside: bool) -> ThinkSplitter {
        ThinkSplitter {
            markers,
            state: if starts_inside {
                State::Inside
            } else {
                State::Before
            },
            buf: String::new(),
        }
    }

    pub(crate) fn push(&mut self, text: &str, out: &mut Vec<Piece>) {
        self.buf.push_str(text);
        loop {
            match self.state {
                State::After => {
                    out.push(Piece::Content(std::mem::take(&mut self.buf)));
                    return;
                }
                State::Inside => {
                    let (before, found) = scan::take_until(&mut self.buf, &[&self.markers.end]);
                    out.push(Piece::Reasoning(before));
                    if found.is_none() {
                        return;
                    }
                    self.state = State::After;
                }
                State::Before => {
                    let trimmed = self.buf.trim_start();
                    if trimmed.is_empty() {
                        return;
                    }
                    if let Some(rest) = trimmed.strip_prefix(self.markers.start.as_str()) {
                        self.buf = rest.to_owned();
                        self.state = State::Inside;
                        // The block is open: mark it even if still empty.
                        out.push(Piece::Reasoning(String::new()));
                    } else if self.markers.start.starts_with(trimmed) {
                        return;
                    } else {
                        self.state = State::After;
                    }
                }
            }
        }
    }

    pub(crate) fn finish(&mut self, out: &mut Vec<Piece>) {
        let rest = std::mem::take(&mut self.buf);
        match self.state {
            State::Inside => out.push(Piece::Reasoning(rest)),
            _ => out.push(Piece::Content(rest)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{content, merge, run_split};
    use super::super::{OutputOptions, OutputParser, Piece};
    use super::*;

    fn think() -> ThinkMarkers {
        ThinkMarkers {
            start: "<think>".into(),
            end: "</think>".into(),
        }
    }

    fn parser(starts_inside: bool) -> OutputParser {
        OutputParser::new(&OutputOptions {
            reasoning: Some(think()),
            starts_in_reasoning: starts_inside,
            ..OutputOptions::default()
        })
    }

    #[test]
    fn a_think_block_becomes_reasoning() {
        let out = run_split(
            &|| parser(false),
            "<think>\nThe user greets.\n</think>\n\nHello!",
        );
        assert_eq!(
            out,
            vec![
                Piece::Reasoning("\nThe user greets.\n".into()),
                content("Hello!")
            ]
        );
    }

    #[test]
    fn a_prompt_that_opens_the_block_starts_inside_it() {
        let out = run_split(&|| parser(true), "Let me think.\n</think>\n\n42");
        assert_eq!(
            out,
            vec![Piece::Reasoning("Let me think.\n".into()), content("42")]
        );
        assert!(think().prompt_opens("<|im_start|>assistant\n<think>\n"));
        assert!(!think().prompt_opens("assistant\n<think>\n\n</think>\n\n"));
        assert!(!think().prompt_opens("assistant\n"));
    }

    #[test]
    fn a_reply_cut_off_while_thinking_is_all_reasoning() {
        let out = run_split(&|| parser(false), "<think>still going");
        assert_eq!(out, vec![Piece::Reasoning("still going".into())]);
    }

    #[test]
    fn a_think_marker_after_the_answer_began_is_answer_text() {
        let out = run_split(&|| parser(false), "Use <think> tags.");
        assert_eq!(out, vec![content("Use <think> tags.")]);
        let mut p = parser(false);
        let mut all = p.push("<thi");
        all.extend(p.finish());
        assert_eq!(merge(all), vec![content("<thi")]);
    }
}
