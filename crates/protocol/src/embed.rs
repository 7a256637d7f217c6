//! Embedding requests and their answers. An [`Embed`] carries several
//! inputs (token ids) with a pooling and a normalization flag; it travels
//! as one or more `Embed` frames with the MORE flag, as a long Submit does
//! ([`Embed::encode_frames`], [`EmbedAssembler`]). The worker answers each
//! input's vector in one or more `Embedding` frames (f32 values from an
//! offset, so a wide vector spans frames), then a `Done` for the request;
//! the front-end reassembles them with [`EmbeddingCollector`].

use std::collections::HashMap;

use crate::codec::{Reader, Writer};
use crate::error::ProtocolError;
use crate::messages::{FrameMeta, Kind, Request, flags};
use crate::submit::EncodedFrame;

/// Most inputs one embedding request may carry (OpenAI's limit).
pub const MAX_EMBED_INPUTS: usize = 2048;
/// Widest vector an `Embedding` frame may describe.
pub const MAX_EMBED_DIMS: usize = 1 << 20;

/// How an input's hidden states become one vector.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Pooling {
    /// The last token's (decoder embedding models, Qwen3-Embedding).
    #[default]
    Last = 0,
    /// The mean over every token.
    Mean = 1,
    /// The first token's (BERT's `[CLS]` layout).
    Cls = 2,
}

impl Pooling {
    /// Decodes a pooling byte.
    pub fn from_u8(v: u8) -> Result<Self, ProtocolError> {
        Ok(match v {
            0 => Self::Last,
            1 => Self::Mean,
            2 => Self::Cls,
            other => return Err(ProtocolError::invalid(format!("pooling {other}"))),
        })
    }
}

/// A complete embedding request.
#[derive(Clone, Debug, PartialEq)]
pub struct Embed {
    /// Request id chosen by the front-end (never 0).
    pub request_id: u64,
    /// Token ids of each input (none empty).
    pub inputs: Vec<Vec<u32>>,
    /// How each input's hidden states are pooled.
    pub pooling: Pooling,
    /// Scale each vector to unit L2 norm.
    pub normalize: bool,
}

/// One chunk of an [`Embed`]: the head carries the pooling, the flag and
/// every input's length, then as many tokens as fit; continuations carry
/// more tokens.
#[derive(Clone, Debug, PartialEq)]
pub enum EmbedPart {
    /// First (or only) chunk.
    Head {
        /// The request.
        request_id: u64,
        /// Pooling of every input.
        pooling: Pooling,
        /// L2 normalization.
        normalize: bool,
        /// Tokens of each input.
        lengths: Vec<u32>,
        /// The inputs' tokens, concatenated, from the first.
        tokens: Vec<u32>,
        /// More chunks follow.
        more: bool,
    },
    /// A later chunk of tokens.
    Continuation {
        /// The request.
        request_id: u64,
        /// Tokens in this chunk.
        tokens: Vec<u32>,
        /// More chunks follow.
        more: bool,
    },
}

/// Bytes of a head besides its lengths and tokens: pooling, flag, two counts.
const HEAD_FIXED: usize = 1 + 1 + 4 + 4;
/// Bytes of a continuation besides its tokens: the count.
const CONTINUATION_FIXED: usize = 4;

impl Embed {
    /// Encodes the request as frames of at most `max_payload` bytes each,
    /// all but the last with the MORE flag.
    pub fn encode_frames(&self, max_payload: usize) -> Result<Vec<EncodedFrame>, ProtocolError> {
        if self.request_id == 0 {
            return Err(ProtocolError::invalid("request id 0 is reserved"));
        }
        if self.inputs.is_empty() || self.inputs.len() > MAX_EMBED_INPUTS {
            return Err(ProtocolError::invalid(format!(
                "{} inputs; 1 to {MAX_EMBED_INPUTS} are allowed",
                self.inputs.len()
            )));
        }
        if self.inputs.iter().any(Vec::is_empty) {
            return Err(ProtocolError::invalid("an empty input"));
        }
        let lengths = self
            .inputs
            .iter()
            .map(|i| u32::try_from(i.len()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| ProtocolError::invalid("an input longer than u32::MAX tokens"))?;
        let all: Vec<u32> = self.inputs.concat();
        let head_fixed = HEAD_FIXED + 4 * lengths.len();
        let too_large = |len| ProtocolError::TooLarge {
            len,
            max: max_payload,
        };
        let mut room = max_payload
            .checked_sub(head_fixed)
            .ok_or(too_large(head_fixed))?;
        let mut tokens = &all[..];
        let mut frames = Vec::new();
        loop {
            let take = tokens.len().min(room / 4);
            let (chunk, rest) = tokens.split_at(take);
            tokens = rest;
            let more = !tokens.is_empty();
            if more && chunk.is_empty() {
                return Err(too_large(CONTINUATION_FIXED + 4));
            }
            let part = if frames.is_empty() {
                EmbedPart::Head {
                    request_id: self.request_id,
                    pooling: self.pooling,
                    normalize: self.normalize,
                    lengths: lengths.clone(),
                    tokens: chunk.to_vec(),
                    more,
                }
            } else {
                EmbedPart::Continuation {
                    request_id: self.request_id,
                    tokens: chunk.to_vec(),
                    more,
                }
            };
            let mut payload = Vec::new();
            let meta = Request::Embed(part).encode(&mut payload);
            frames.push(EncodedFrame { meta, payload });
            if !more {
                return Ok(frames);
            }
            room = max_payload.saturating_sub(CONTINUATION_FIXED);
        }
    }
}

impl EmbedPart {
    /// The request this chunk belongs to.
    pub fn request_id(&self) -> u64 {
        match self {
            Self::Head { request_id, .. } | Self::Continuation { request_id, .. } => *request_id,
        }
    }

    pub(crate) fn encode(&self, w: &mut Writer<'_>) -> FrameMeta {
        let (request_id, more, flags) = match self {
            Self::Head {
                request_id,
                pooling,
                normalize,
                lengths,
                tokens,
                more,
            } => {
                w.u8(*pooling as u8);
                w.bool(*normalize);
                w.u32s(lengths);
                w.u32s(tokens);
                (*request_id, *more, 0)
            }
            Self::Continuation {
                request_id,
                tokens,
                more,
            } => {
                w.u32s(tokens);
                (*request_id, *more, flags::CONTINUATION)
            }
        };
        FrameMeta {
            kind: Kind::Embed as u16,
            flags: flags | if more { flags::MORE } else { 0 },
            request_id,
        }
    }

    pub(crate) fn decode(meta: &FrameMeta, r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        let request_id = meta.request_id;
        let more = meta.flags & flags::MORE != 0;
        if meta.flags & flags::CONTINUATION != 0 {
            return Ok(Self::Continuation {
                request_id,
                tokens: r.u32s(usize::MAX)?,
                more,
            });
        }
        let pooling = Pooling::from_u8(r.u8()?)?;
        let normalize = r.bool()?;
        let lengths = r.u32s(MAX_EMBED_INPUTS)?;
        if lengths.is_empty() || lengths.contains(&0) {
            return Err(ProtocolError::invalid("no inputs, or an empty one"));
        }
        Ok(Self::Head {
            request_id,
            pooling,
            normalize,
            lengths,
            tokens: r.u32s(usize::MAX)?,
            more,
        })
    }
}

struct PartialEmbed {
    pooling: Pooling,
    normalize: bool,
    lengths: Vec<usize>,
    total: usize,
    tokens: Vec<u32>,
}

/// Reassembles chunked embedding requests on the worker side, per id.
pub struct EmbedAssembler {
    max_input_tokens: usize,
    pending: HashMap<u64, PartialEmbed>,
}

impl EmbedAssembler {
    /// An assembler refusing inputs longer than `max_input_tokens` (the
    /// model's context), which with [`MAX_EMBED_INPUTS`] bounds its memory.
    pub fn new(max_input_tokens: usize) -> Self {
        Self {
            max_input_tokens,
            pending: HashMap::new(),
        }
    }

    /// Adds a chunk; returns the request once its last chunk arrived. On
    /// error the request's partial state is dropped.
    pub fn push(&mut self, part: EmbedPart) -> Result<Option<Embed>, ProtocolError> {
        let chunk = |request_id: u64, why: String| ProtocolError::BadChunk { request_id, why };
        let (request_id, tokens, more) = match part {
            EmbedPart::Head {
                request_id,
                pooling,
                normalize,
                lengths,
                tokens,
                more,
            } => {
                if self.pending.remove(&request_id).is_some() {
                    return Err(chunk(request_id, "a new head while chunks pending".into()));
                }
                let lengths: Vec<usize> = lengths.into_iter().map(|n| n as usize).collect();
                if let Some(n) = lengths.iter().find(|&&n| n > self.max_input_tokens) {
                    let why = format!("an input of {n} tokens exceeds {}", self.max_input_tokens);
                    return Err(chunk(request_id, why));
                }
                let total = lengths.iter().sum();
                let partial = PartialEmbed {
                    pooling,
                    normalize,
                    lengths,
                    total,
                    tokens: Vec::with_capacity(total),
                };
                self.pending.insert(request_id, partial);
                (request_id, tokens, more)
            }
            EmbedPart::Continuation {
                request_id,
                tokens,
                more,
            } => (request_id, tokens, more),
        };
        let Some(partial) = self.pending.get_mut(&request_id) else {
            return Err(chunk(request_id, "continuation without a head".into()));
        };
        let got = partial.tokens.len() + tokens.len();
        if got > partial.total || (!more && got != partial.total) {
            let total = partial.total;
            self.pending.remove(&request_id);
            return Err(chunk(
                request_id,
                format!("{got} tokens received, {total} announced"),
            ));
        }
        partial.tokens.extend_from_slice(&tokens);
        if more {
            return Ok(None);
        }
        let Some(p) = self.pending.remove(&request_id) else {
            return Err(chunk(request_id, "lost partial state".into()));
        };
        let mut rest = &p.tokens[..];
        let inputs = p
            .lengths
            .iter()
            .map(|&n| {
                let (input, tail) = rest.split_at(n);
                rest = tail;
                input.to_vec()
            })
            .collect();
        Ok(Some(Embed {
            request_id,
            inputs,
            pooling: p.pooling,
            normalize: p.normalize,
        }))
    }

    /// Forgets a partially received request (on Cancel).
    pub fn cancel(&mut self, request_id: u64) -> bool {
        self.pending.remove(&request_id).is_some()
    }
}

/// Part of one input's vector, worker → front-end.
#[derive(Clone, Debug, PartialEq)]
pub struct Embedding {
    /// The request.
    pub request_id: u64,
    /// Which input of the request.
    pub index: u32,
    /// The vector's full width.
    pub dims: u32,
    /// Where `values` start in it.
    pub offset: u32,
    /// Values from `offset`.
    pub values: Vec<f32>,
}

impl Embedding {
    /// Frames of at most `per_frame` values carrying `vector`.
    pub fn chunks(request_id: u64, index: u32, vector: &[f32], per_frame: usize) -> Vec<Self> {
        let dims = vector.len() as u32;
        vector
            .chunks(per_frame.max(1))
            .enumerate()
            .map(|(i, values)| Self {
                request_id,
                index,
                dims,
                offset: (i * per_frame.max(1)) as u32,
                values: values.to_vec(),
            })
            .collect()
    }

    pub(crate) fn encode(&self, w: &mut Writer<'_>) -> FrameMeta {
        w.u32(self.index);
        w.u32(self.dims);
        w.u32(self.offset);
        w.len(self.values.len());
        for &v in &self.values {
            w.f32(v);
        }
        FrameMeta {
            kind: Kind::Embedding as u16,
            flags: 0,
            request_id: self.request_id,
        }
    }

    pub(crate) fn decode(request_id: u64, r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        let index = r.u32()?;
        let dims = r.u32()?;
        let offset = r.u32()?;
        if index as usize >= MAX_EMBED_INPUTS || dims as usize > MAX_EMBED_DIMS {
            return Err(ProtocolError::invalid(format!(
                "embedding {index} of {dims} dimensions"
            )));
        }
        let n = r.len(4, MAX_EMBED_DIMS)?;
        if offset as usize + n > dims as usize {
            return Err(ProtocolError::invalid(format!(
                "values {offset}..{} past {dims} dimensions",
                offset as usize + n
            )));
        }
        let values = (0..n)
            .map(|_| {
                let v = r.f32()?;
                if v.is_finite() {
                    Ok(v)
                } else {
                    Err(ProtocolError::invalid("an embedding value is not finite"))
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            request_id,
            index,
            dims,
            offset,
            values,
        })
    }
}

/// Reassembles a request's vectors from its `Embedding` frames.
#[derive(Debug)]
pub struct EmbeddingCollector {
    vectors: Vec<Vec<f32>>,
    dims: Option<u32>,
}

impl EmbeddingCollector {
    /// A collector for `inputs` vectors.
    pub fn new(inputs: usize) -> Self {
        Self {
            vectors: vec![Vec::new(); inputs],
            dims: None,
        }
    }

    /// Adds a frame's values: in order, of one width for every input.
    pub fn push(&mut self, e: Embedding) -> Result<(), ProtocolError> {
        if *self.dims.get_or_insert(e.dims) != e.dims {
            return Err(ProtocolError::invalid("embeddings of different widths"));
        }
        let Some(vector) = self.vectors.get_mut(e.index as usize) else {
            return Err(ProtocolError::invalid(format!(
                "embedding {} unasked",
                e.index
            )));
        };
        if vector.len() != e.offset as usize {
            return Err(ProtocolError::invalid(format!(
                "embedding {} values at {} after {}",
                e.index,
                e.offset,
                vector.len()
            )));
        }
        vector.extend_from_slice(&e.values);
        Ok(())
    }

    /// Every vector, once each is complete.
    pub fn finish(self) -> Result<Vec<Vec<f32>>, ProtocolError> {
        let dims = self.dims.unwrap_or(0) as usize;
        if dims == 0 || self.vectors.iter().any(|v| v.len() != dims) {
            return Err(ProtocolError::invalid("the embeddings are incomplete"));
        }
        Ok(self.vectors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(inputs: Vec<Vec<u32>>) -> Embed {
        Embed {
            request_id: 7,
            inputs,
            pooling: Pooling::Mean,
            normalize: true,
        }
    }

    fn round_trip(embed: &Embed, max_payload: usize) -> (usize, Embed) {
        let frames = embed.encode_frames(max_payload).unwrap();
        let mut assembler = EmbedAssembler::new(100_000);
        let mut out = None;
        for f in &frames {
            assert!(f.payload.len() <= max_payload);
            let Request::Embed(part) = Request::decode(f.meta, &f.payload).unwrap() else {
                panic!("not an embed frame");
            };
            assert!(out.is_none());
            out = assembler.push(part).unwrap();
        }
        (frames.len(), out.unwrap())
    }

    #[test]
    fn inputs_of_different_lengths_survive_chunking() {
        let embed = request(vec![
            (0..3).collect(),
            (0..1000).collect(),
            vec![9],
            (5..700).collect(),
        ]);
        let (frames, back) = round_trip(&embed, 64 * 1024);
        assert_eq!((frames, &back), (1, &embed));
        let (frames, back) = round_trip(&embed, 256);
        assert!(frames > 25, "{frames}");
        assert_eq!(back, embed);
    }

    #[test]
    fn empty_and_overlong_inputs_are_refused() {
        assert!(request(vec![]).encode_frames(4096).is_err());
        assert!(request(vec![vec![1], vec![]]).encode_frames(4096).is_err());
        let frames = request(vec![vec![1; 50]]).encode_frames(4096).unwrap();
        let Request::Embed(part) = Request::decode(frames[0].meta, &frames[0].payload).unwrap()
        else {
            panic!("not an embed frame");
        };
        let err = EmbedAssembler::new(49).push(part).unwrap_err();
        assert!(err.to_string().contains("exceeds 49"), "{err}");
    }

    #[test]
    fn a_short_continuation_is_refused() {
        let mut assembler = EmbedAssembler::new(100);
        let head = EmbedPart::Head {
            request_id: 3,
            pooling: Pooling::Last,
            normalize: false,
            lengths: vec![4],
            tokens: vec![1, 2],
            more: true,
        };
        assert_eq!(assembler.push(head).unwrap(), None);
        let tail = EmbedPart::Continuation {
            request_id: 3,
            tokens: vec![3],
            more: false,
        };
        assert!(assembler.push(tail).is_err());
        assert!(!assembler.cancel(3));
    }

    #[test]
    fn vectors_reassemble_from_frames_in_order() {
        let a: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..10).map(|i| -(i as f32)).collect();
        let mut collector = EmbeddingCollector::new(2);
        for e in Embedding::chunks(1, 1, &b, 3)
            .into_iter()
            .chain(Embedding::chunks(1, 0, &a, 4))
        {
            let mut buf = Vec::new();
            let meta = crate::Event::Embedding(e.clone()).encode(&mut buf);
            assert_eq!(
                crate::Event::decode(meta, &buf).unwrap(),
                crate::Event::Embedding(e.clone())
            );
            collector.push(e).unwrap();
        }
        assert_eq!(collector.finish().unwrap(), vec![a.clone(), b]);
        let mut collector = EmbeddingCollector::new(2);
        for e in Embedding::chunks(1, 0, &a, 4) {
            collector.push(e).unwrap();
        }
        assert!(collector.finish().is_err(), "input 1 never came");
        let mut skipped = Embedding::chunks(1, 0, &a, 4);
        skipped.remove(1);
        let mut collector = EmbeddingCollector::new(1);
        collector.push(skipped.remove(0)).unwrap();
        assert!(collector.push(skipped.remove(0)).is_err());
    }
}
