//! Message types and their fixed little-endian payload layouts.
//!
//! Each message travels as one transport frame `(kind, flags, request id,
//! payload)`; [`FrameMeta`] is that triple. The request id lives in the frame
//! header, not the payload, so the transport can route without decoding,
//! except for [`Tokens`], which carries one entry for every sequence active
//! in a decode step. Layouts are listed in `docs/transport.md`.

mod encoding;

use crate::codec::{Reader, Writer};
use crate::error::ProtocolError;

/// Version of this protocol, checked in both directions at the handshake.
pub const PROTOCOL_VERSION: u32 = 5;
/// Most alternatives a token may report (OpenAI's `top_logprobs` limit).
pub const MAX_TOP_LOGPROBS: usize = 20;
/// Most `logit_bias` entries in one request.
pub const MAX_LOGIT_BIAS: usize = 1024;
/// Most stop token ids in one request.
pub const MAX_STOP_TOKENS: usize = 256;
/// Most EOS ids a model announces.
pub const MAX_EOS_TOKENS: usize = 64;
/// Longest string field (model id, error message), in bytes.
pub const MAX_STRING: usize = 16 * 1024;
/// Most entries in one token frame.
pub const MAX_STEP_ENTRIES: usize = 65_536;
/// Longest grammar a request may carry, in bytes.
pub const MAX_GRAMMAR_BYTES: usize = 4 << 20;

/// Frame flags.
pub mod flags {
    /// More chunks of this message follow (long prompts).
    pub const MORE: u16 = 1 << 0;
    /// This frame continues a message begun in an earlier frame.
    pub const CONTINUATION: u16 = 1 << 1;
    /// Every flag this version defines.
    pub const ALL: u16 = MORE | CONTINUATION;
}

/// Frame kinds. `0` is the transport's padding and never a message.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Front-end → worker: protocol version and incarnation.
    Hello = 1,
    /// Worker → front-end: the model is loaded; its facts.
    Ready = 2,
    /// Worker → front-end: weight-loading progress.
    LoadProgress = 3,
    /// Front-end → worker: a generation request (possibly chunked).
    Submit = 4,
    /// Front-end → worker: stop a request.
    Cancel = 5,
    /// Both directions: liveness with a monotonic timestamp.
    Heartbeat = 6,
    /// Worker → front-end: one decode step's tokens.
    Tokens = 7,
    /// Worker → front-end: a request finished.
    Done = 8,
    /// Worker → front-end: a request (or the worker) failed.
    Error = 9,
    /// Worker → front-end: memory and queue figures.
    Stats = 10,
    /// Front-end → worker: finish cleanly and exit.
    Shutdown = 11,
    /// Front-end → worker: an embedding request (possibly chunked).
    Embed = 12,
    /// Worker → front-end: (part of) one input's embedding vector.
    Embedding = 13,
}

impl Kind {
    /// Largest kind defined; the transport rejects anything above it.
    pub const MAX: u16 = Kind::Embedding as u16;

    /// Decodes a frame kind.
    pub fn from_u16(v: u16) -> Result<Self, ProtocolError> {
        Ok(match v {
            1 => Self::Hello,
            2 => Self::Ready,
            3 => Self::LoadProgress,
            4 => Self::Submit,
            5 => Self::Cancel,
            6 => Self::Heartbeat,
            7 => Self::Tokens,
            8 => Self::Done,
            9 => Self::Error,
            10 => Self::Stats,
            11 => Self::Shutdown,
            12 => Self::Embed,
            13 => Self::Embedding,
            other => return Err(ProtocolError::UnknownKind(other)),
        })
    }
}

/// The frame header fields a message is sent with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameMeta {
    /// Frame kind.
    pub kind: u16,
    /// Frame flags ([`flags`]).
    pub flags: u16,
    /// Request the frame is for (0: none / worker-wide).
    pub request_id: u64,
}

impl FrameMeta {
    fn new(kind: Kind, request_id: u64) -> Self {
        Self {
            kind: kind as u16,
            flags: 0,
            request_id,
        }
    }
}

/// Handshake, front-end → worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The front-end's [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// Worker incarnation (matches the region header).
    pub generation: u64,
}

/// Handshake reply, worker → front-end, once the model is loaded.
#[derive(Clone, Debug, PartialEq)]
pub struct Ready {
    /// The worker's [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// Model identifier as resolved by the worker.
    pub model_id: String,
    /// Maximum context length in tokens.
    pub context_length: u32,
    /// Vocabulary size.
    pub vocab_size: u32,
    /// End-of-sequence token ids.
    pub eos_token_ids: Vec<u32>,
    /// Accelerator memory in use after loading, in bytes.
    pub memory_used_bytes: u64,
    /// Time spent loading, in microseconds.
    pub load_time_us: u64,
}

/// Weight-loading progress, worker → front-end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadProgress {
    /// Bytes loaded so far.
    pub bytes_loaded: u64,
    /// Bytes to load in all.
    pub bytes_total: u64,
}

/// Liveness ping or reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// Sender's `CLOCK_MONOTONIC` in nanoseconds.
    pub monotonic_ns: u64,
}

/// Sampling parameters of a request.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature (0: greedy).
    pub temperature: f32,
    /// Nucleus sampling mass in (0, 1].
    pub top_p: f32,
    /// Keep the k most likely tokens (0: off).
    pub top_k: u32,
    /// Minimum probability relative to the best token, in [0, 1].
    pub min_p: f32,
    /// Repetition penalty (1: off).
    pub repetition_penalty: f32,
    /// Tokens the repetition penalty looks back over.
    pub repetition_context_size: u32,
    /// OpenAI presence penalty.
    pub presence_penalty: f32,
    /// OpenAI frequency penalty.
    pub frequency_penalty: f32,
    /// `(token, bias)` added to logits.
    pub logit_bias: Vec<(u32, f32)>,
    /// Seed for reproducible sampling.
    pub seed: Option<u64>,
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// Token ids that end generation.
    pub stop_token_ids: Vec<u32>,
    /// Report the chosen token's logprob.
    pub logprobs: bool,
    /// Report this many alternatives (≤ [`MAX_TOP_LOGPROBS`]).
    pub top_logprobs: u8,
    /// Keep generating past EOS.
    pub ignore_eos: bool,
    /// Tokens at the end of the prompt that this request generated before
    /// it was resubmitted (0: a new request). The sampler resumes at that
    /// token index, and the presence and frequency penalties count those
    /// tokens as generated, so a seeded request continues as it would have.
    pub generated: u32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            repetition_context_size: 20,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: None,
            max_tokens: 256,
            stop_token_ids: Vec::new(),
            logprobs: false,
            top_logprobs: 0,
            ignore_eos: false,
            generated: 0,
        }
    }
}

impl SamplingParams {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        let bad = |what: &str| Err(ProtocolError::invalid(what.to_owned()));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad("temperature must be finite and >= 0");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p must be in (0, 1]");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p must be in [0, 1]");
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad("repetition_penalty must be finite and > 0");
        }
        if !(self.presence_penalty.is_finite() && self.frequency_penalty.is_finite()) {
            return bad("penalties must be finite");
        }
        if self.logit_bias.len() > MAX_LOGIT_BIAS
            || self.logit_bias.iter().any(|b| !b.1.is_finite())
        {
            return bad("logit_bias too long or not finite");
        }
        if self.stop_token_ids.len() > MAX_STOP_TOKENS {
            return bad("too many stop token ids");
        }
        if usize::from(self.top_logprobs) > MAX_TOP_LOGPROBS {
            return bad("top_logprobs above 20");
        }
        Ok(())
    }

    pub(crate) fn encode(&self, w: &mut Writer<'_>) {
        w.f32(self.temperature);
        w.f32(self.top_p);
        w.u32(self.top_k);
        w.f32(self.min_p);
        w.f32(self.repetition_penalty);
        w.u32(self.repetition_context_size);
        w.f32(self.presence_penalty);
        w.f32(self.frequency_penalty);
        w.pairs(&self.logit_bias);
        w.bool(self.seed.is_some());
        w.u64(self.seed.unwrap_or(0));
        w.u32(self.max_tokens);
        w.u32s(&self.stop_token_ids);
        w.bool(self.logprobs);
        w.u8(self.top_logprobs);
        w.bool(self.ignore_eos);
        w.u32(self.generated);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        let params = Self {
            temperature: r.f32()?,
            top_p: r.f32()?,
            top_k: r.u32()?,
            min_p: r.f32()?,
            repetition_penalty: r.f32()?,
            repetition_context_size: r.u32()?,
            presence_penalty: r.f32()?,
            frequency_penalty: r.f32()?,
            logit_bias: r.pairs(MAX_LOGIT_BIAS)?,
            seed: {
                let has = r.bool()?;
                let seed = r.u64()?;
                has.then_some(seed)
            },
            max_tokens: r.u32()?,
            stop_token_ids: r.u32s(MAX_STOP_TOKENS)?,
            logprobs: r.bool()?,
            top_logprobs: r.u8()?,
            ignore_eos: r.bool()?,
            generated: r.u32()?,
        };
        params.validate()?;
        Ok(params)
    }
}

/// One sequence's token of a decode step.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenEntry {
    /// Request the token belongs to.
    pub request_id: u64,
    /// Sampled token id.
    pub token_id: u32,
    /// Its log-probability, when asked for.
    pub logprob: Option<f32>,
    /// The most likely alternatives `(token, logprob)`, when asked for.
    pub top_logprobs: Vec<(u32, f32)>,
}

/// Every active sequence's token of one decode step.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Tokens {
    /// One entry per sequence.
    pub entries: Vec<TokenEntry>,
}

/// Why a request stopped.
#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// EOS or a stop token.
    #[default]
    Stop = 0,
    /// `max_tokens` or the context length reached.
    Length = 1,
    /// Cancelled by the front-end.
    Cancelled = 2,
    /// Ended by an error (an `Error` message precedes it).
    Error = 3,
}

impl FinishReason {
    fn from_u8(v: u8) -> Result<Self, ProtocolError> {
        Ok(match v {
            0 => Self::Stop,
            1 => Self::Length,
            2 => Self::Cancelled,
            3 => Self::Error,
            other => return Err(ProtocolError::invalid(format!("finish reason {other}"))),
        })
    }
}

/// A request finished.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Done {
    /// The request.
    pub request_id: u64,
    /// Why it stopped.
    pub finish_reason: FinishReason,
    /// Prompt tokens processed.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// Prefill time, microseconds.
    pub prefill_us: u64,
    /// Decode time, microseconds.
    pub decode_us: u64,
    /// Prompt tokens whose keys and values came from the prompt cache.
    pub cached_tokens: u32,
    /// When the worker read the request off the ring (`CLOCK_MONOTONIC`
    /// ns, one clock for both processes; 0: never).
    pub received_ns: u64,
    /// When its prefill began (0: never).
    pub admitted_ns: u64,
    /// When its first token was written to the ring (0: never).
    pub first_token_ns: u64,
    /// Draft tokens speculative decoding proposed and the model verified
    /// (0 without speculation).
    pub draft_tokens: u32,
    /// Of those, the ones accepted (tokens gained over normal decoding).
    pub accepted_draft_tokens: u32,
}

/// Error classes.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A bug or an unexpected engine failure.
    Internal = 1,
    /// The request cannot be served as asked.
    InvalidRequest = 2,
    /// Out of accelerator memory.
    OutOfMemory = 3,
    /// The prompt plus `max_tokens` exceeds the context length.
    ContextOverflow = 4,
    /// The model could not be loaded.
    LoadFailed = 5,
    /// The worker is at capacity.
    Busy = 6,
    /// The peer speaks another protocol version.
    VersionMismatch = 7,
}

impl ErrorCode {
    fn from_u16(v: u16) -> Result<Self, ProtocolError> {
        Ok(match v {
            1 => Self::Internal,
            2 => Self::InvalidRequest,
            3 => Self::OutOfMemory,
            4 => Self::ContextOverflow,
            5 => Self::LoadFailed,
            6 => Self::Busy,
            7 => Self::VersionMismatch,
            other => return Err(ProtocolError::invalid(format!("error code {other}"))),
        })
    }
}

/// A failure of one request (`request_id` ≠ 0) or of the worker (0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorMsg {
    /// The request, or 0 for the worker as a whole.
    pub request_id: u64,
    /// Class of error.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
}

/// Memory and queue figures of the worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Stats {
    /// Accelerator memory in use, bytes.
    pub active_memory: u64,
    /// Peak accelerator memory, bytes.
    pub peak_memory: u64,
    /// Allocator cache, bytes.
    pub cache_memory: u64,
    /// Sequences being decoded.
    pub active_sequences: u32,
    /// Requests waiting for a slot.
    pub queue_depth: u32,
}

/// The language of a request's grammar.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GrammarKind {
    /// A JSON schema (JSON text).
    JsonSchema = 1,
    /// A grammar in llguidance's Lark dialect.
    Lark = 2,
    /// A regular expression.
    Regex = 3,
}

impl GrammarKind {
    /// Decodes a kind; 0 (no grammar) is not a kind.
    pub fn from_u8(v: u8) -> Result<Self, ProtocolError> {
        Ok(match v {
            1 => Self::JsonSchema,
            2 => Self::Lark,
            3 => Self::Regex,
            other => {
                return Err(ProtocolError::invalid(format!("grammar kind {other}")));
            }
        })
    }
}

/// A grammar a request's output must follow (see the engine's
/// `constraint` module).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grammar {
    /// Its language.
    pub kind: GrammarKind,
    /// Its text (at most [`MAX_GRAMMAR_BYTES`]).
    pub text: String,
}

/// One chunk of a Submit (see [`crate::Submit::encode_frames`]). The
/// prompt's tokens come first, then the grammar's bytes, each chunk
/// carrying what fits.
#[derive(Clone, Debug, PartialEq)]
pub enum SubmitPart {
    /// First (or only) chunk: parameters, total prompt length, the
    /// grammar's kind and length, first tokens and grammar bytes.
    Head {
        /// The request.
        request_id: u64,
        /// Sampling parameters.
        params: SamplingParams,
        /// Tokens of the whole prompt.
        prompt_len: u32,
        /// The grammar's kind and total length in bytes, if it has one.
        grammar: Option<(GrammarKind, u32)>,
        /// Tokens in this chunk.
        tokens: Vec<u32>,
        /// Grammar bytes in this chunk (only once every token was sent).
        grammar_bytes: Vec<u8>,
        /// More chunks follow.
        more: bool,
    },
    /// A later chunk: more prompt tokens, then grammar bytes.
    Continuation {
        /// The request.
        request_id: u64,
        /// Tokens in this chunk.
        tokens: Vec<u32>,
        /// Grammar bytes in this chunk.
        grammar_bytes: Vec<u8>,
        /// More chunks follow.
        more: bool,
    },
}

/// Messages from the front-end to a worker.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// Handshake.
    Hello(Hello),
    /// A chunk of a generation request.
    Submit(SubmitPart),
    /// Stop a request.
    Cancel {
        /// The request.
        request_id: u64,
    },
    /// Liveness ping.
    Heartbeat(Heartbeat),
    /// Finish and exit.
    Shutdown,
    /// A chunk of an embedding request.
    Embed(crate::embed::EmbedPart),
}

/// Messages from a worker to the front-end.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Handshake reply.
    Ready(Ready),
    /// Loading progress.
    LoadProgress(LoadProgress),
    /// One decode step.
    Tokens(Tokens),
    /// A request finished.
    Done(Done),
    /// A request or the worker failed.
    Error(ErrorMsg),
    /// Figures.
    Stats(Stats),
    /// Liveness reply.
    Heartbeat(Heartbeat),
    /// Part of an embedding vector.
    Embedding(crate::embed::Embedding),
}

/// Checks the peer's protocol version at the handshake.
pub fn check_version(theirs: u32) -> Result<(), ProtocolError> {
    if theirs == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(ProtocolError::VersionMismatch {
            theirs,
            ours: PROTOCOL_VERSION,
        })
    }
}
