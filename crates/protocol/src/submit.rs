//! Whole generation requests: chunking a long prompt into frames with the
//! MORE flag, and reassembling the chunks on the worker side.

use std::collections::HashMap;

use crate::codec::Writer;
use crate::error::ProtocolError;
use crate::messages::{FrameMeta, Request, SamplingParams, SubmitPart};

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
}

impl Submit {
    /// Encodes the request as one or more frames of at most `max_payload`
    /// bytes each: the first carries the parameters, all but the last carry
    /// the MORE flag.
    pub fn encode_frames(&self, max_payload: usize) -> Result<Vec<EncodedFrame>, ProtocolError> {
        if self.request_id == 0 {
            return Err(ProtocolError::invalid("request id 0 is reserved"));
        }
        self.params.validate()?;
        let prompt_len = u32::try_from(self.prompt.len())
            .map_err(|_| ProtocolError::invalid("prompt longer than u32::MAX tokens"))?;
        // Fixed bytes: the head chunk without tokens, and a continuation's
        // token count.
        let mut head_fixed = Vec::new();
        self.params.encode(&mut Writer(&mut head_fixed));
        let head_room =
            max_payload
                .checked_sub(head_fixed.len() + 4 + 4)
                .ok_or(ProtocolError::TooLarge {
                    len: head_fixed.len() + 8,
                    max: max_payload,
                })?
                / 4;
        let cont_room = max_payload.saturating_sub(4) / 4;
        if cont_room == 0 && self.prompt.len() > head_room {
            return Err(ProtocolError::TooLarge {
                len: 8,
                max: max_payload,
            });
        }
        let mut frames = Vec::new();
        let (first, mut rest) = self.prompt.split_at(head_room.min(self.prompt.len()));
        let mut part = SubmitPart::Head {
            request_id: self.request_id,
            params: self.params.clone(),
            prompt_len,
            tokens: first.to_vec(),
            more: !rest.is_empty(),
        };
        loop {
            let mut payload = Vec::new();
            let meta = Request::Submit(part).encode(&mut payload);
            frames.push(EncodedFrame { meta, payload });
            if rest.is_empty() {
                return Ok(frames);
            }
            let (chunk, tail) = rest.split_at(cont_room.min(rest.len()));
            rest = tail;
            part = SubmitPart::Continuation {
                request_id: self.request_id,
                tokens: chunk.to_vec(),
                more: !rest.is_empty(),
            };
        }
    }
}

struct Partial {
    params: SamplingParams,
    prompt_len: usize,
    prompt: Vec<u32>,
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
        let (request_id, more) = match part {
            SubmitPart::Head {
                request_id,
                params,
                prompt_len,
                tokens,
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
                let mut prompt = Vec::with_capacity(prompt_len);
                prompt.extend_from_slice(&tokens);
                self.pending.insert(
                    request_id,
                    Partial {
                        params,
                        prompt_len,
                        prompt,
                    },
                );
                (request_id, more)
            }
            SubmitPart::Continuation {
                request_id,
                tokens,
                more,
            } => {
                let Some(partial) = self.pending.get_mut(&request_id) else {
                    return Err(chunk(request_id, "continuation without a head".into()));
                };
                partial.prompt.extend_from_slice(&tokens);
                (request_id, more)
            }
        };
        let Some(partial) = self.pending.get(&request_id) else {
            return Err(chunk(request_id, "lost partial state".into()));
        };
        let got = partial.prompt.len();
        if got > partial.prompt_len || (!more && got != partial.prompt_len) {
            let want = partial.prompt_len;
            self.pending.remove(&request_id);
            return Err(chunk(
                request_id,
                format!("{got} tokens received, {want} announced"),
            ));
        }
        if more {
            return Ok(None);
        }
        Ok(self.pending.remove(&request_id).map(|p| Submit {
            request_id,
            prompt: p.prompt,
            params: p.params,
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
