//! Versioned messages between the front-end and a model worker.
//!
//! Front-end → worker: [`Request`] (Hello, Submit, Cancel, Heartbeat,
//! Shutdown, Embed). Worker → front-end: [`Event`] (Ready, LoadProgress,
//! Tokens, Done, Error, Stats, Heartbeat, Embedding). Each message is one transport frame
//! `(kind, flags, request id, payload)` with a fixed little-endian payload
//! layout; long prompts are split over several Submit frames with the MORE
//! flag ([`Submit::encode_frames`], [`SubmitAssembler`]). Decoding untrusted
//! bytes returns a [`ProtocolError`] and never panics. The version is
//! checked at the handshake ([`check_version`]). Layouts and the reasons
//! for a hand-written encoding are in `docs/transport.md`.
//!
//! This crate knows nothing of the transport that carries the frames.

mod codec;
mod embed;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod messages;
mod route;
mod submit;

pub use embed::{
    Embed, EmbedAssembler, EmbedPart, Embedding, EmbeddingCollector, MAX_EMBED_DIMS,
    MAX_EMBED_INPUTS, Pooling,
};
pub use error::ProtocolError;
pub use messages::{
    Done, ErrorCode, ErrorMsg, Event, FinishReason, FrameMeta, Grammar, GrammarKind, Heartbeat,
    Hello, Kind, LoadProgress, MAX_EOS_TOKENS, MAX_GRAMMAR_BYTES, MAX_LOGIT_BIAS, MAX_STEP_ENTRIES,
    MAX_STOP_TOKENS, MAX_STRING, MAX_TOP_LOGPROBS, PROTOCOL_VERSION, Ready, Request,
    SamplingParams, Stats, SubmitPart, TokenEntry, Tokens, check_version, flags,
};
pub use route::Delivery;
pub use submit::{EncodedFrame, Submit, SubmitAssembler};
