//! Stop conditions for streamed generation: stop strings and EOS token ids.
//!
//! [`StopMatcher`] scans streamed text for stop strings as OpenAI's API
//! defines them: the text before the stop string is returned, the stop string
//! and everything after it are not. Any suffix of the text seen so far that
//! could still grow into a stop string is held back until it either
//! completes one or cannot. When several stop strings occur, the one that
//! ends first wins (ties: the one that starts first), which is what a
//! streaming matcher can decide without looking ahead; the result does not
//! depend on how the text was split into deltas. This is the hold-back scheme
//! of text-generation-inference's and vLLM's stop-sequence handling.
//!
//! [`TextStream`] puts a [`StreamingDetokenizer`], the EOS ids and a
//! [`StopMatcher`] together: token ids in, final text deltas and a finish
//! reason out.

use std::sync::Arc;

use crate::detokenizer::StreamingDetokenizer;
use crate::tokenizer::{Tokenizer, TokenizerError};

/// The result of feeding text to a [`StopMatcher`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopMatch {
    /// Text that is safe to emit.
    pub text: String,
    /// Index (into the matcher's stop list) of the stop string that matched;
    /// once set, the stream is over.
    pub stop: Option<usize>,
}

/// Finds stop strings in streamed text.
#[derive(Debug, Clone)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
    stopped: bool,
}

impl StopMatcher {
    /// A matcher for these stop strings (empty strings are ignored).
    pub fn new<I, S>(stops: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        StopMatcher {
            stops: stops.into_iter().map(Into::into).collect(),
            held: String::new(),
            stopped: false,
        }
    }

    /// The stop strings, in the order given.
    pub fn stops(&self) -> &[String] {
        &self.stops
    }

    /// Whether a stop string has matched.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Feeds a text delta. After a match, further input is ignored.
    pub fn push(&mut self, delta: &str) -> StopMatch {
        if self.stopped {
            return StopMatch::default();
        }
        self.held.push_str(delta);
        if let Some((start, index)) = self.first_match() {
            self.stopped = true;
            let mut text = std::mem::take(&mut self.held);
            text.truncate(start);
            return StopMatch {
                text,
                stop: Some(index),
            };
        }
        let keep = self.partial_suffix_len();
        let text = self.held[..self.held.len() - keep].to_owned();
        self.held.drain(..self.held.len() - keep);
        StopMatch { text, stop: None }
    }

    /// Ends the stream: returns the held-back text (no stop string matched).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// The match that ends first (ties: starts first) as (start, stop index).
    fn first_match(&self) -> Option<(usize, usize)> {
        let mut best: Option<(usize, usize, usize)> = None; // (end, start, index)
        for (index, stop) in self.stops.iter().enumerate() {
            if stop.is_empty() {
                continue;
            }
            if let Some(start) = self.held.find(stop.as_str()) {
                let candidate = (start + stop.len(), start, index);
                if best.is_none_or(|b| (candidate.0, candidate.1) < (b.0, b.1)) {
                    best = Some(candidate);
                }
            }
        }
        best.map(|(_, start, index)| (start, index))
    }

    /// Length of the longest suffix of the held text that is a proper
    /// prefix of some stop string.
    fn partial_suffix_len(&self) -> usize {
        let held = self.held.as_bytes();
        let mut keep = 0;
        for stop in &self.stops {
            let stop = stop.as_bytes();
            let longest = held.len().min(stop.len().saturating_sub(1));
            for len in (keep + 1..=longest).rev() {
                if held[held.len() - len..] == stop[..len] {
                    keep = len;
                    break;
                }
            }
        }
        keep
    }
}

/// Why a [`TextStream`] finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token id (not part of the text).
    Eos(u32),
    /// The stop string with this index matched.
    StopString(usize),
}

/// One step of a [`TextStream`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamStep {
    pub text: String,
    pub finish: Option<FinishReason>,
}

/// Token ids in, final text out: detokenization, EOS ids and stop strings.
#[derive(Debug)]
pub struct TextStream {
    tokenizer: Arc<Tokenizer>,
    detokenizer: StreamingDetokenizer,
    eos_ids: Vec<u32>,
    /// Special tokens written into the text (markers a reply parser reads).
    kept_ids: Vec<u32>,
    matcher: StopMatcher,
    finished: Option<FinishReason>,
}

impl TextStream {
    /// A stream that ends on any of the tokenizer's EOS ids plus
    /// `extra_stop_ids`, or on any of `stop_strings`. Special tokens are
    /// skipped in the text.
    pub fn new(
        tokenizer: Arc<Tokenizer>,
        stop_strings: Vec<String>,
        extra_stop_ids: &[u32],
    ) -> Self {
        let mut eos_ids = tokenizer.eos_token_ids().to_vec();
        eos_ids.extend_from_slice(extra_stop_ids);
        TextStream {
            detokenizer: StreamingDetokenizer::new(Arc::clone(&tokenizer), true),
            tokenizer,
            eos_ids,
            kept_ids: Vec::new(),
            matcher: StopMatcher::new(stop_strings),
            finished: None,
        }
    }

    /// Keeps going past EOS ids (exact token counts for measurements); stop
    /// strings still apply.
    pub fn ignore_eos(&mut self) {
        self.eos_ids.clear();
    }

    /// Writes these special tokens into the text instead of skipping them
    /// (the markers of a tool-call or reasoning format that are special
    /// tokens, such as `<|python_tag|>` or Harmony's `<|channel|>`); other
    /// special tokens are still skipped.
    pub fn keep_special_ids(&mut self, ids: Vec<u32>) {
        self.kept_ids = ids;
    }

    /// Feeds one generated id. Once `finish` is set, later ids are ignored.
    pub fn push(&mut self, id: u32) -> Result<StreamStep, TokenizerError> {
        if self.finished.is_some() {
            return Ok(StreamStep::default());
        }
        if self.eos_ids.contains(&id) {
            let mut text = self.detokenizer.finish()?;
            let m = self.matcher.push(&text);
            text = m.text;
            if m.stop.is_none() {
                text.push_str(&self.matcher.finish());
            }
            let reason = m
                .stop
                .map_or(FinishReason::Eos(id), FinishReason::StopString);
            self.finished = Some(reason);
            return Ok(StreamStep {
                text,
                finish: Some(reason),
            });
        }
        let delta = if self.kept_ids.contains(&id) {
            // The text so far, then the marker's own.
            let mut text = self.detokenizer.finish()?;
            text.push_str(&self.tokenizer.decode(&[id], false)?);
            text
        } else {
            self.detokenizer.push(id)?
        };
        let m = self.matcher.push(&delta);
        self.finished = m.stop.map(FinishReason::StopString);
        Ok(StreamStep {
            text: m.text,
            finish: self.finished,
        })
    }

    /// Ends the stream without EOS or stop (e.g. at the token limit):
    /// returns all text still held back.
    pub fn finish(&mut self) -> Result<String, TokenizerError> {
        if self.finished.is_some() {
            return Ok(String::new());
        }
        let tail = self.detokenizer.finish()?;
        let m = self.matcher.push(&tail);
        if let Some(index) = m.stop {
            self.finished = Some(FinishReason::StopString(index));
            return Ok(m.text);
        }
        Ok(m.text + &self.matcher.finish())
    }

    /// Why the stream finished, if it has.
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `chunks`; returns (all emitted text, stop index).
    fn run(stops: &[&str], chunks: &[&str]) -> (String, Option<usize>) {
        let mut m = StopMatcher::new(stops.iter().copied());
        let mut out = String::new();
        for chunk in chunks {
            let r = m.push(chunk);
            out.push_str(&r.text);
            if r.stop.is_some() {
                return (out, r.stop);
            }
        }
        out.push_str(&m.finish());
        (out, None)
    }

    /// The reference: search the whole text at once.
    fn naive(stops: &[&str], text: &str) -> (String, Option<usize>) {
        let best = stops
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_empty())
            .filter_map(|(i, s)| text.find(s).map(|start| (start + s.len(), start, i)))
            .min_by_key(|&(end, start, _)| (end, start));
        match best {
            Some((_, start, i)) => (text[..start].to_owned(), Some(i)),
            None => (text.to_owned(), None),
        }
    }

    #[test]
    fn stop_split_across_many_chunks_is_found_and_not_emitted() {
        let chunks = ["Hello", " wor", "ld", " <", "|e", "nd", "|", "> tail"];
        assert_eq!(
            run(&["<|end|>"], &chunks),
            ("Hello world ".to_owned(), Some(0))
        );
    }

    #[test]
    fn partial_prefix_is_held_then_released() {
        let mut m = StopMatcher::new(["STOP"]);
        assert_eq!(m.push("abc ST").text, "abc ");
        assert_eq!(m.push("O").text, "");
        let r = m.push("P!");
        assert_eq!(r.text, "");
        assert_eq!(r.stop, Some(0));
        let mut m = StopMatcher::new(["STOP"]);
        assert_eq!(m.push("ST").text, "");
        assert_eq!(m.push("ART").text, "START");
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn overlapping_prefixes_are_matched() {
        // "aab" inside "aaab": the first 'a' must be released, not lost.
        assert_eq!(
            run(&["aab"], &["a", "a", "a", "b", "c"]),
            ("a".to_owned(), Some(0))
        );
        assert_eq!(
            run(&["abab"], &["aab", "a", "bab"]),
            ("a".to_owned(), Some(0))
        );
    }

    #[test]
    fn multiple_stops_earliest_end_wins() {
        assert_eq!(
            run(&["abcd", "bc"], &["a", "b", "c", "d"]),
            ("a".to_owned(), Some(1))
        );
        assert_eq!(run(&["xyz", "y"], &["xy"]), ("x".to_owned(), Some(1)));
        assert_eq!(run(&["b", "ab"], &["ab"]), ("".to_owned(), Some(1)));
        assert_eq!(
            run(&["\n\n", "END"], &["one\n", "\ntwo"]),
            ("one".to_owned(), Some(0))
        );
    }

    #[test]
    fn unicode_stops_and_text() {
        assert_eq!(
            run(&["。终"], &["你好", "。", "终", "了"]),
            ("你好".to_owned(), Some(0))
        );
        assert_eq!(
            run(&["👩‍👧"], &["a👩", "\u{200d}", "👧b"]),
            ("a".to_owned(), Some(0))
        );
        // A held multi-byte prefix that does not complete is released whole.
        assert_eq!(run(&["é!"], &["café", "?"]), ("café?".to_owned(), None));
    }

    #[test]
    fn no_stops_passes_everything_through() {
        let mut m = StopMatcher::new(Vec::<String>::new());
        assert_eq!(m.push("abc").text, "abc");
        let mut m = StopMatcher::new([""]);
        assert_eq!(
            m.push("abc"),
            StopMatch {
                text: "abc".into(),
                stop: None
            }
        );
    }

    #[test]
    fn input_after_a_stop_is_ignored() {
        let mut m = StopMatcher::new(["x"]);
        assert_eq!(m.push("axb").stop, Some(0));
        assert!(m.is_stopped());
        assert_eq!(m.push("more"), StopMatch::default());
    }

    fn chunked(text: &str, cuts: &[usize]) -> Vec<String> {
        let bounds: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        let mut points: Vec<usize> = cuts
            .iter()
            .filter_map(|c| bounds.get(c % bounds.len().max(1)).copied())
            .collect();
        points.sort_unstable();
        points.dedup();
        let mut out = Vec::new();
        let mut last = 0;
        for p in points.into_iter().chain([text.len()]) {
            out.push(text[last..p].to_owned());
            last = p;
        }
        out
    }

    proptest! {
        #[test]
        fn streaming_equals_naive_search(
            text in "[ab😀é\n]{0,40}",
            stops in proptest::collection::vec("[ab😀é\n]{0,4}", 0..4),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let stops: Vec<&str> = stops.iter().map(String::as_str).collect();
            let chunks = chunked(&text, &cuts);
            let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
            prop_assert_eq!(run(&stops, &chunks), naive(&stops, &text));
        }
    }
}
