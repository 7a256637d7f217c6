//! The payloads of requests and events: encoding each message into its
//! frame and decoding a frame back, with the checks every frame gets
//! (flags, request id, value ranges).

use super::*;
use crate::codec::{Reader, Writer};
use crate::error::ProtocolError;

fn check_flags(meta: &FrameMeta, allowed: u16) -> Result<(), ProtocolError> {
    if meta.flags & !allowed != 0 {
        return Err(ProtocolError::invalid(format!(
            "flags {:#06x} on kind {}",
            meta.flags, meta.kind
        )));
    }
    Ok(())
}

fn no_request_id(meta: &FrameMeta) -> Result<(), ProtocolError> {
    if meta.request_id != 0 {
        return Err(ProtocolError::invalid(format!(
            "kind {} carries request id {}",
            meta.kind, meta.request_id
        )));
    }
    Ok(())
}

fn some_request_id(meta: &FrameMeta) -> Result<u64, ProtocolError> {
    if meta.request_id == 0 {
        return Err(ProtocolError::invalid(format!(
            "kind {} needs a request id",
            meta.kind
        )));
    }
    Ok(meta.request_id)
}

fn check_finite_or_neg_inf(x: f32) -> Result<f32, ProtocolError> {
    if x.is_nan() || x == f32::INFINITY {
        return Err(ProtocolError::invalid("logprob is NaN or +inf"));
    }
    Ok(x)
}

impl Request {
    /// Appends the payload to `buf` and returns the frame header to send it
    /// with. A [`Request::Submit`] part is encoded as given; use
    /// [`crate::Submit::encode_frames`] to chunk a whole prompt.
    pub fn encode(&self, buf: &mut Vec<u8>) -> FrameMeta {
        let mut w = Writer(buf);
        match self {
            Self::Hello(h) => {
                w.u32(h.protocol_version);
                w.u64(h.generation);
                FrameMeta::new(Kind::Hello, 0)
            }
            Self::Submit(part) => part.encode(&mut w),
            Self::Cancel { request_id } => FrameMeta::new(Kind::Cancel, *request_id),
            Self::Heartbeat(h) => {
                w.u64(h.monotonic_ns);
                FrameMeta::new(Kind::Heartbeat, 0)
            }
            Self::Shutdown => FrameMeta::new(Kind::Shutdown, 0),
            Self::Embed(part) => part.encode(&mut w),
        }
    }

    /// Decodes a request frame from the (untrusted) front-end side.
    pub fn decode(meta: FrameMeta, payload: &[u8]) -> Result<Self, ProtocolError> {
        let kind = Kind::from_u16(meta.kind)?;
        let mut r = Reader::new(payload);
        let allowed = if matches!(kind, Kind::Submit | Kind::Embed) {
            flags::ALL
        } else {
            0
        };
        check_flags(&meta, allowed)?;
        let req = match kind {
            Kind::Hello => {
                no_request_id(&meta)?;
                Self::Hello(Hello {
                    protocol_version: r.u32()?,
                    generation: r.u64()?,
                })
            }
            Kind::Submit => Self::Submit(SubmitPart::decode(&meta, &mut r)?),
            Kind::Embed => {
                some_request_id(&meta)?;
                Self::Embed(crate::embed::EmbedPart::decode(&meta, &mut r)?)
            }
            Kind::Cancel => Self::Cancel {
                request_id: some_request_id(&meta)?,
            },
            Kind::Heartbeat => {
                no_request_id(&meta)?;
                Self::Heartbeat(Heartbeat {
                    monotonic_ns: r.u64()?,
                })
            }
            Kind::Shutdown => {
                no_request_id(&meta)?;
                Self::Shutdown
            }
            other => return Err(ProtocolError::UnknownKind(other as u16)),
        };
        r.finish()?;
        Ok(req)
    }
}

impl SubmitPart {
    fn encode(&self, w: &mut Writer<'_>) -> FrameMeta {
        let (request_id, more, flags) = match self {
            Self::Head {
                request_id,
                params,
                prompt_len,
                grammar,
                tokens,
                grammar_bytes,
                more,
            } => {
                params.encode(w);
                w.u32(*prompt_len);
                let (kind, len) = grammar.map_or((0, 0), |(k, n)| (k as u8, n));
                w.u8(kind);
                w.u32(len);
                w.u32s(tokens);
                w.bytes(grammar_bytes);
                (*request_id, *more, 0)
            }
            Self::Continuation {
                request_id,
                tokens,
                grammar_bytes,
                more,
            } => {
                w.u32s(tokens);
                w.bytes(grammar_bytes);
                (*request_id, *more, flags::CONTINUATION)
            }
        };
        FrameMeta {
            kind: Kind::Submit as u16,
            flags: flags | if more { flags::MORE } else { 0 },
            request_id,
        }
    }

    fn decode(meta: &FrameMeta, r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        let request_id = some_request_id(meta)?;
        let more = meta.flags & flags::MORE != 0;
        if meta.flags & flags::CONTINUATION != 0 {
            return Ok(Self::Continuation {
                request_id,
                tokens: r.u32s(usize::MAX)?,
                grammar_bytes: r.bytes(MAX_GRAMMAR_BYTES)?,
                more,
            });
        }
        let params = SamplingParams::decode(r)?;
        let prompt_len = r.u32()?;
        let kind = r.u8()?;
        let len = r.u32()?;
        let grammar = match kind {
            0 if len == 0 => None,
            0 => return Err(ProtocolError::invalid("a grammar length without a grammar")),
            k => {
                if len as usize > MAX_GRAMMAR_BYTES {
                    return Err(ProtocolError::invalid(format!(
                        "a grammar of {len} bytes exceeds {MAX_GRAMMAR_BYTES}"
                    )));
                }
                Some((GrammarKind::from_u8(k)?, len))
            }
        };
        let tokens = r.u32s(usize::MAX)?;
        let grammar_bytes = r.bytes(MAX_GRAMMAR_BYTES)?;
        if grammar.is_none() && !grammar_bytes.is_empty() {
            return Err(ProtocolError::invalid("grammar bytes without a grammar"));
        }
        Ok(Self::Head {
            request_id,
            params,
            prompt_len,
            grammar,
            tokens,
            grammar_bytes,
            more,
        })
    }
}

impl Event {
    /// Appends the payload to `buf` and returns the frame header.
    pub fn encode(&self, buf: &mut Vec<u8>) -> FrameMeta {
        let mut w = Writer(buf);
        match self {
            Self::Ready(m) => {
                w.u32(m.protocol_version);
                w.str(&m.model_id);
                w.u32(m.context_length);
                w.u32(m.vocab_size);
                w.u32s(&m.eos_token_ids);
                w.u64(m.memory_used_bytes);
                w.u64(m.load_time_us);
                FrameMeta::new(Kind::Ready, 0)
            }
            Self::LoadProgress(p) => {
                w.u64(p.bytes_loaded);
                w.u64(p.bytes_total);
                FrameMeta::new(Kind::LoadProgress, 0)
            }
            Self::Tokens(t) => {
                w.len(t.entries.len());
                for e in &t.entries {
                    w.u64(e.request_id);
                    w.u32(e.token_id);
                    w.bool(e.logprob.is_some());
                    w.f32(e.logprob.unwrap_or(0.0));
                    // More than the limit is never valid: send the best 20.
                    let top = &e.top_logprobs[..e.top_logprobs.len().min(MAX_TOP_LOGPROBS)];
                    w.u8(top.len() as u8);
                    for &(t, l) in top {
                        w.u32(t);
                        w.f32(l);
                    }
                }
                FrameMeta::new(Kind::Tokens, 0)
            }
            Self::Done(d) => {
                w.u8(d.finish_reason as u8);
                w.u32(d.prompt_tokens);
                w.u32(d.completion_tokens);
                w.u64(d.prefill_us);
                w.u64(d.decode_us);
                w.u32(d.cached_tokens);
                w.u64(d.received_ns);
                w.u64(d.admitted_ns);
                w.u64(d.first_token_ns);
                w.u32(d.draft_tokens);
                w.u32(d.accepted_draft_tokens);
                FrameMeta::new(Kind::Done, d.request_id)
            }
            Self::Error(e) => {
                w.u16(e.code as u16);
                w.str(&e.message);
                FrameMeta::new(Kind::Error, e.request_id)
            }
            Self::Stats(s) => {
                w.u64(s.active_memory);
                w.u64(s.peak_memory);
                w.u64(s.cache_memory);
                w.u32(s.active_sequences);
                w.u32(s.queue_depth);
                FrameMeta::new(Kind::Stats, 0)
            }
            Self::Heartbeat(h) => {
                w.u64(h.monotonic_ns);
                FrameMeta::new(Kind::Heartbeat, 0)
            }
            Self::Embedding(e) => e.encode(&mut w),
        }
    }

    /// Decodes an event frame from the (untrusted) worker side.
    pub fn decode(meta: FrameMeta, payload: &[u8]) -> Result<Self, ProtocolError> {
        let kind = Kind::from_u16(meta.kind)?;
        check_flags(&meta, 0)?;
        let mut r = Reader::new(payload);
        let ev = match kind {
            Kind::Ready => {
                no_request_id(&meta)?;
                Self::Ready(Ready {
                    protocol_version: r.u32()?,
                    model_id: r.str(MAX_STRING)?,
                    context_length: r.u32()?,
                    vocab_size: r.u32()?,
                    eos_token_ids: r.u32s(MAX_EOS_TOKENS)?,
                    memory_used_bytes: r.u64()?,
                    load_time_us: r.u64()?,
                })
            }
            Kind::LoadProgress => {
                no_request_id(&meta)?;
                Self::LoadProgress(LoadProgress {
                    bytes_loaded: r.u64()?,
                    bytes_total: r.u64()?,
                })
            }
            Kind::Tokens => {
                no_request_id(&meta)?;
                Self::Tokens(decode_tokens(&mut r)?)
            }
            Kind::Done => Self::Done(Done {
                request_id: some_request_id(&meta)?,
                finish_reason: FinishReason::from_u8(r.u8()?)?,
                prompt_tokens: r.u32()?,
                completion_tokens: r.u32()?,
                prefill_us: r.u64()?,
                decode_us: r.u64()?,
                cached_tokens: r.u32()?,
                received_ns: r.u64()?,
                admitted_ns: r.u64()?,
                first_token_ns: r.u64()?,
                draft_tokens: r.u32()?,
                accepted_draft_tokens: r.u32()?,
            }),
            Kind::Error => Self::Error(ErrorMsg {
                request_id: meta.request_id,
                code: ErrorCode::from_u16(r.u16()?)?,
                message: r.str(MAX_STRING)?,
            }),
            Kind::Stats => {
                no_request_id(&meta)?;
                Self::Stats(Stats {
                    active_memory: r.u64()?,
                    peak_memory: r.u64()?,
                    cache_memory: r.u64()?,
                    active_sequences: r.u32()?,
                    queue_depth: r.u32()?,
                })
            }
            Kind::Heartbeat => {
                no_request_id(&meta)?;
                Self::Heartbeat(Heartbeat {
                    monotonic_ns: r.u64()?,
                })
            }
            Kind::Embedding => Self::Embedding(crate::embed::Embedding::decode(
                some_request_id(&meta)?,
                &mut r,
            )?),
            other => return Err(ProtocolError::UnknownKind(other as u16)),
        };
        r.finish()?;
        Ok(ev)
    }
}

/// Smallest encoding of a token entry: id, token, flag, logprob, count.
const MIN_ENTRY: usize = 8 + 4 + 1 + 4 + 1;

fn decode_tokens(r: &mut Reader<'_>) -> Result<Tokens, ProtocolError> {
    let n = r.len(MIN_ENTRY, MAX_STEP_ENTRIES)?;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let request_id = r.u64()?;
        if request_id == 0 {
            return Err(ProtocolError::invalid("token entry for request 0"));
        }
        let token_id = r.u32()?;
        let has_logprob = r.bool()?;
        let logprob = check_finite_or_neg_inf(r.f32()?)?;
        let top = usize::from(r.u8()?);
        if top > MAX_TOP_LOGPROBS {
            return Err(ProtocolError::invalid(format!("{top} top logprobs")));
        }
        let top_logprobs = (0..top)
            .map(|_| Ok((r.u32()?, check_finite_or_neg_inf(r.f32()?)?)))
            .collect::<Result<Vec<_>, ProtocolError>>()?;
        entries.push(TokenEntry {
            request_id,
            token_id,
            logprob: has_logprob.then_some(logprob),
            top_logprobs,
        });
    }
    Ok(Tokens { entries })
}
