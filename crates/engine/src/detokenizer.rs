//! Streaming detokenization: token ids in, text deltas out.
//!
//! The same scheme as the incremental detokenizers of text-generation-
//! inference and vLLM (prefix offset / read offset), which mlx-lm's
//! `NaiveStreamingDetokenizer` also approximates: each step decodes a short
//! window of recent ids twice, once up to the last emitted token
//! (`prefix_offset..read_offset`) and once to the newest token
//! (`prefix_offset..`), and emits the difference. The window keeps the
//! context the decoder needs (SentencePiece's `▁` spaces and leading-space
//! strip, multi-token UTF-8 characters, byte-fallback runs) while staying a
//! few tokens long, so each step costs O(1) amortized.
//!
//! Text is held back while the window's decoded tail ends in U+FFFD (an
//! incomplete UTF-8 sequence), so a character split across tokens is emitted
//! whole once its last byte arrives. For valid text the concatenated deltas
//! equal `decode(all_ids)`; [`StreamingDetokenizer::finish`] releases what is
//! still held when generation stops mid-character.

use std::sync::Arc;

use crate::tokenizer::{Tokenizer, TokenizerError};

const REPLACEMENT: char = '\u{FFFD}';

/// Incremental decoder for one generated sequence.
#[derive(Debug)]
pub struct StreamingDetokenizer {
    tokenizer: Arc<Tokenizer>,
    skip_special_tokens: bool,
    /// The window of ids not yet out of context: `ids[..prefix_offset]` is
    /// dropped once it can no longer affect the decoding of later ids.
    ids: Vec<u32>,
    /// Start of the decoding window within `ids`.
    prefix_offset: usize,
    /// End of the ids whose text has been emitted.
    read_offset: usize,
    /// How many ids were dropped from the front of `ids`.
    dropped: usize,
}

impl StreamingDetokenizer {
    /// A detokenizer whose output equals
    /// `tokenizer.decode(ids, skip_special_tokens)`.
    pub fn new(tokenizer: Arc<Tokenizer>, skip_special_tokens: bool) -> Self {
        StreamingDetokenizer {
            tokenizer,
            skip_special_tokens,
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
            dropped: 0,
        }
    }

    /// Feeds one id; returns the text that became final (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String, TokenizerError> {
        self.ids.push(id);
        let prefix = self.decode(self.prefix_offset, self.read_offset)?;
        let full = self.decode(self.prefix_offset, self.ids.len())?;
        if full.ends_with(REPLACEMENT) {
            return Ok(String::new());
        }
        let Some(delta) = full.strip_prefix(prefix.as_str()) else {
            // The window decodes differently once extended (a decoder that
            // rewrites earlier text); wait for a stable prefix.
            return Ok(String::new());
        };
        let delta = delta.to_owned();
        if !delta.is_empty() {
            self.advance();
        }
        Ok(delta)
    }

    /// Feeds several ids; returns the concatenated deltas.
    pub fn push_all(&mut self, ids: &[u32]) -> Result<String, TokenizerError> {
        let mut out = String::new();
        for &id in ids {
            out.push_str(&self.push(id)?);
        }
        Ok(out)
    }

    /// Ends the sequence: returns held-back text (an incomplete character
    /// decodes as U+FFFD, as `decode` would write it).
    pub fn finish(&mut self) -> Result<String, TokenizerError> {
        let prefix = self.decode(self.prefix_offset, self.read_offset)?;
        let full = self.decode(self.prefix_offset, self.ids.len())?;
        let delta = match full.strip_prefix(prefix.as_str()) {
            Some(d) => d.to_owned(),
            None => full,
        };
        self.advance();
        Ok(delta)
    }

    /// Number of ids fed so far.
    pub fn len(&self) -> usize {
        self.dropped + self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ids currently kept as decoding context. It stays a few ids long for
    /// valid text, which is what makes each step O(1).
    pub fn window_len(&self) -> usize {
        self.ids.len()
    }

    fn decode(&self, start: usize, end: usize) -> Result<String, TokenizerError> {
        self.tokenizer
            .decode(&self.ids[start..end], self.skip_special_tokens)
    }

    /// Marks everything fed as emitted; the window now starts at the old
    /// read offset, and ids before it are dropped.
    fn advance(&mut self) {
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        if self.prefix_offset > 0 {
            self.ids.drain(..self.prefix_offset);
            self.dropped += self.prefix_offset;
            self.read_offset -= self.prefix_offset;
            self.prefix_offset = 0;
        }
    }
}
