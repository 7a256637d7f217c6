//! The engine's error type for loading and running models.

use crate::tokenizer::TokenizerError;

/// What can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// MLX refused an operation.
    #[error(transparent)]
    Mlx(#[from] mlx::MlxError),
    /// A model file could not be read.
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// `config.json` (or GGUF metadata) does not describe a supported model.
    #[error("model config: {0}")]
    Config(String),
    /// The weights do not match the architecture.
    #[error("weights: {0}")]
    Weights(String),
    /// The tokenizer could not be built.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// A request the engine cannot run (e.g. an empty prompt).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

/// The engine's result type.
pub type Result<T> = std::result::Result<T, EngineError>;

impl EngineError {
    pub(crate) fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Self {
        EngineError::Io {
            path: path.into(),
            source,
        }
    }
}
