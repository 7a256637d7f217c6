//! Whole generation requests: chunking a long prompt into frames with the
//! MORE flag, and reassembling the chunks on the worker side.

use std::collections::HashMap;

use crate::codec::Writer;
use crate::error::ProtocolError;
use crate::messages::{
    FrameMeta, Grammar, GrammarKind, MAX_GRAMMAR_BYTES, Request, SamplingParams, SubmitPart,
};

/// A frame ready for the transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedFrame {
    /// Header fields.
    pub meta: FrameMeta,
    /// Payload bytes.
    pub payload: Vec<u8>,
}

/// A complete generation request.
#[derive(Clone, Debug, PartialEq)]
pub struct Submit {
    /// Request id chosen by the front-end (never 0).
    pub request_id: u64,
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// Sampling parameters.
    pub params: SamplingParams,
    /// The grammar the output must follow, if any.
    pub grammar: Option<Grammar>,
}

/// Bytes of a Submit head besides the parameters and its tokens and
/// grammar bytes: prompt length, grammar kind and length, two counts.
const HEAD_FIXED: usize = 4 + 1 + 4 + 4 + 4;
/// Bytes of a continuation besides its tokens and grammar bytes.
const CONTINUATION_FIXED: usize = 4 + 4;

impl Submit {
    /// Encodes the request as one or more frames of at most `max_payload`
    /// bytes each: the first carries the parameters, all but the last carry
    /// the MORE flag; the prompt's tokens go first, then the grammar's
    /// bytes.
    pub fn encode_frames(&self, max_payload: usize) -> Result<Vec<EncodedFrame>, ProtocolError> {
        if self.request_id == 0 {
            return Err(ProtocolError::invalid("request id 0 is reserved"));
        }
        self.params.validate()?;
        let prompt_len = u32::try_from(self.prompt.len())
            .map_err(|_| ProtocolError::invalid("prompt longer than u32::MAX tokens"))?;
        let text = self.grammar.as_ref().map_or(&[][..], |g| g.text.as_bytes());
        if text.len() > MAX_GRAMMAR_BYTES {
            return Err(ProtocolError::invalid(format!(
                "a grammar of {} bytes exceeds {MAX_GRAMMAR_BYTES}",
                text.len()
            )));
        }
        let grammar = self.grammar.as_ref().map(|g| (g.kind, text.len() as u32));
        let mut params = Vec::new();
        self.params.encode(&mut Writer(&mut params));
        let head_fixed = params.len() + HEAD_FIXED;
        let too_large = |len| ProtocolError::TooLarge {
            len,
            max: max_payload,
        };
        let mut room = max_payload
            .checked_sub(head_fixed)
            .ok_or(too_large(head_fixed))?;
        let (mut tokens, mut bytes) = (&self.prompt[..], text);
        let mut frames = Vec::new();
        loop {
            let take = tokens.len().min(room / 4);
            let (chunk, rest) = tokens.split_at(take);
            tokens = rest;
            let byte_room = if tokens.is_empty() {
                room - 4 * take
            } else {
                0
            };
            let (piece, rest) = bytes.split_at(bytes.len().min(byte_room));
            bytes = rest;
            let more = !tokens.is_empty() || !bytes.is_empty();
            if more && chunk.is_empty() && piece.is_empty() {
                return Err(too_large(CONTINUATION_FIXED + 4));
            }
            let part = if frames.is_empty() {
                SubmitPart::Head {
                    request_id: self.request_id,
                    params: self.params.clone(),
                    prompt_len,
                    grammar,
                    tokens: chunk.to_vec(),
                    grammar_bytes: piece.to_vec(),
                    more,
                }
            } else {
                SubmitPart::Continuation {
                    request_id: self.request_id,
                    tokens: chunk.to_vec(),
                    grammar_bytes: piece.to_vec(),
                    more,
                }
            };
            let mut payload = Vec::new();
            let meta = Request::Submit(part).encode(&mut payload);
            frames.push(EncodedFrame { meta, payload });
            if !more {
                return Ok(frames);
            }
            room = max_payload.saturating_sub(CONTINUATION_FIXED);
        }
    }
}

struct Partial {
    params: SamplingParams,
    prompt_len: usize,
    prompt: Vec<u32>,
    grammar: Option<(GrammarKind, usize)>,
    grammar_bytes: Vec<u8>,
}

/// Reassembles chunked Submits on the worker side, per request id.
pub struct SubmitAssembler {
    max_prompt_tokens: usize,
    pending: HashMap<u64, Partial>,
}

impl SubmitAssembler {
    /// An assembler refusing prompts longer than `max_prompt_tokens`
    /// (typically the model's context length), which bounds its memory.
    pub fn new(max_prompt_tokens: usize) -> Self {
        Self {
            max_prompt_tokens,
            pending: HashMap::new(),
        }
    }

    /// Adds a chunk; returns the request once its last chunk arrived.
    /// On error the request's partial state is dropped.
    pub fn push(&mut self, part: SubmitPart) -> Result<Option<Submit>, ProtocolError> {
        let chunk = |request_id: u64, why: String| ProtocolError::BadChunk { request_id, why };
        let (request_id, more, tokens, bytes) = match part {
            SubmitPart::Head {
                request_id,
                params,
                prompt_len,
                grammar,
                tokens,
                grammar_bytes,
                more,
            } => {
                if self.pending.remove(&request_id).is_some() {
                    return Err(chunk(request_id, "a new head while chunks pending".into()));
                }
                let prompt_len = prompt_len as usize;
                if prompt_len > self.max_prompt_tokens {
                    return Err(chunk(
                        request_id,
                        format!(
                            "prompt of {prompt_len} tokens exceeds {}",
                            self.max_prompt_tokens
                        ),
                    ));
                }
                self.pending.insert(
                    request_id,
                    Partial {
                        params,
                        prompt_len,
                        prompt: Vec::with_capacity(prompt_len),
                        grammar: grammar.map(|(k, n)| (k, n as usize)),
                        grammar_bytes: Vec::new(),
                    },
                );
                (request_id, more, tokens, grammar_bytes)
            }
            SubmitPart::Continuation {
                request_id,
                tokens,
                grammar_bytes,
                more,
            } => {
                if !self.pending.contains_key(&request_id) {
                    return Err(chunk(request_id, "continuation without a head".into()));
                }
                (request_id, more, tokens, grammar_bytes)
            }
        };
        let Some(partial) = self.pending.get_mut(&request_id) else {
            return Err(chunk(request_id, "lost partial state".into()));
        };
        let checked = partial.add(&tokens, &bytes, more);
        if let Err(why) = checked {
            self.pending.remove(&request_id);
            return Err(chunk(request_id, why));
        }
        if more {
            return Ok(None);
        }
        let Some(p) = self.pending.remove(&request_id) else {
            return Err(chunk(request_id, "lost partial state".into()));
        };
        let grammar = match p.grammar {
            None => None,
            Some((kind, _)) => match String::from_utf8(p.grammar_bytes) {
                Ok(text) => Some(Grammar { kind, text }),
                Err(_) => return Err(chunk(request_id, "the grammar is not UTF-8".into())),
            },
        };
        Ok(Some(Submit {
            request_id,
            prompt: p.prompt,
            params: p.params,
            grammar,
        }))
    }

    /// Forgets a partially received request (on Cancel).
    pub fn cancel(&mut self, request_id: u64) -> bool {
        self.pending.remove(&request_id).is_some()
    }

    /// Requests whose chunks are still arriving.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

impl Partial {
    /// Appends a chunk's tokens and grammar bytes: no more than announced,
    /// bytes only after the last token, and everything by the last chunk.
    fn add(&mut self, tokens: &[u32], bytes: &[u8], more: bool) -> Result<(), String> {
        let want_tokens = self.prompt_len;
        let want_bytes = self.grammar.map_or(0, |(_, n)| n);
        if self.prompt.len() + tokens.len() > want_tokens {
            let got = self.prompt.len() + tokens.len();
            return Err(format!("{got} tokens received, {want_tokens} announced"));
        }
        self.prompt.extend_from_slice(tokens);
        if !bytes.is_empty() && self.prompt.len() < want_tokens {
            return Err("grammar bytes before the last prompt token".into());
        }
        if self.grammar_bytes.len() + bytes.len() > want_bytes {
            let got = self.grammar_bytes.len() + bytes.len();
            return Err(format!(
                "{got} grammar bytes received, {want_bytes} announced"
            ));
        }
        self.grammar_bytes.extend_from_slice(bytes);
        if !more && (self.prompt.len() != want_tokens || self.grammar_bytes.len() != want_bytes) {
            return Err(format!(
                "{} tokens and {} grammar bytes received, {want_tokens} and {want_bytes} announced",
                self.prompt.len(),
                self.grammar_bytes.len()
            ));
        }
        Ok(())
    }
}
