//! The mlxd inference engine.
//!
//! Text side: tokenizers loaded from a model directory or a GGUF file, chat
//! templates, streaming detokenization and stop sequences. None of it calls
//! MLX, so the front-end uses it directly.

pub mod chat;
pub mod detokenizer;
pub mod gguf;
pub mod sampler;
pub mod stop;
pub mod tokenizer;

pub use chat::{ChatMessage, ChatTemplate, MessageContent, RenderOptions, TemplateError};
pub use detokenizer::StreamingDetokenizer;
pub use gguf::{GgufError, GgufFile, GgufValue, TensorInfo};
pub use sampler::{Sampled, SampledToken, Sampler, SamplingParams, TokenLogprobs};
pub use stop::{FinishReason, StopMatch, StopMatcher, StreamStep, TextStream};
pub use tokenizer::{SpecialTokens, Tokenizer, TokenizerError};
