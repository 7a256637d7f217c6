//! The mlxd inference engine.
//!
//! Text side (no MLX calls, so the front-end uses it directly): tokenizers
//! loaded from a model directory or a GGUF file, chat templates, streaming
//! detokenization and stop sequences. Model side (MLX, worker only): model
//! families and strict weight loading from MLX checkpoints and GGUF files
//! (`model`, `loader`), the KV cache, sampling (`sampler`), the decode loop
//! (`generate`) and GGUF → MLX conversion (`convert`).

pub mod chat;
pub mod convert;
pub mod detokenizer;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod loader;
pub mod model;
pub mod sampler;
pub mod stop;
pub mod tokenizer;

pub use chat::{ChatMessage, ChatTemplate, MessageContent, RenderOptions, TemplateError};
pub use detokenizer::StreamingDetokenizer;
pub use error::{EngineError, Result};
pub use gguf::{GgufError, GgufFile, GgufValue, TensorInfo};
pub use model::{KvCache, Model, ModelConfig};
pub use sampler::{Sampled, SampledToken, Sampler, SamplingParams, TokenLogprobs};
pub use stop::{FinishReason, StopMatch, StopMatcher, StreamStep, TextStream};
pub use tokenizer::{SpecialTokens, Tokenizer, TokenizerError};

/// Makes a new stream on the default device this thread's default, as
/// mlx-lm runs generation on its own `generation_stream`. Call once on the
/// engine thread before loading and generating.
pub fn use_dedicated_stream() -> Result<()> {
    let device = mlx::device::default_device()?;
    mlx::Stream::new(device.kind)?.set_default()?;
    Ok(())
}
