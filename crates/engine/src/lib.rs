//! The mlxd inference engine.
//!
//! Text side (no MLX calls, so the front-end uses it directly): tokenizers
//! loaded from a model directory or a GGUF file, chat templates, streaming
//! detokenization, stop sequences, grammars (`constraint`) and the reply's
//! structure (`output`: tool-call formats and parsers, reasoning). Model
//! side (MLX, worker only): model families and strict weight loading from
//! MLX checkpoints and GGUF files (`model`, `loader`), the KV cache,
//! sampling (`sampler`), the decode loop of one sequence (`generate`),
//! continuous batching of many (`batch`) with a prompt cache
//! (`prefix_cache`), pooled hidden states for embeddings (`embed`), and GGUF → MLX conversion (`convert`).

pub mod batch;
pub mod chat;
pub mod constraint;
pub mod convert;
pub mod detokenizer;
pub mod distributed;
pub mod embed;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod gguf_quant;
pub mod loader;
pub mod memory;
pub mod model;
pub mod output;
pub mod prefix_cache;
pub mod sampler;
pub mod speculative;
pub mod stop;
pub mod tokenizer;
pub mod vision;

pub use chat::{ChatMessage, ChatTemplate, MessageContent, RenderOptions, TemplateError};
pub use detokenizer::StreamingDetokenizer;
pub use error::{EngineError, Result};
pub use gguf::{GgufError, GgufFile, GgufValue, TensorInfo};
pub use model::{Cache, KvCache, Model, ModelConfig};
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

/// On Metal, lets MLX keep up to the GPU's recommended working set wired
/// (resident), as mlx-lm's `wired_limit` does around generation, so model
/// weights are not paged out between requests; other backends have no
/// wired memory and this does nothing. Returns the limit set.
pub fn wire_working_set() -> Result<Option<usize>> {
    if mlx::backend() != mlx::Backend::Metal {
        return Ok(None);
    }
    let device = mlx::device::default_device()?;
    let Some(limit) = device.info_size("max_recommended_working_set_size")? else {
        return Ok(None);
    };
    mlx::memory::set_wired_limit(limit)?;
    Ok(Some(limit))
}
