//! Loading a model and its tokenizer from a path: an MLX / Hugging Face
//! model directory (`config.json`, safetensors, `tokenizer.json`) or a
//! single GGUF file (tensors and tokenizer both from the file).

use std::path::{Path, PathBuf};

use crate::error::{EngineError, Result};
use crate::model::{Model, gguf};
use crate::tokenizer::Tokenizer;

/// The on-disk format of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    /// A directory in the mlx-community / Hugging Face layout.
    Mlx,
    /// A single llama.cpp GGUF file.
    Gguf,
}

impl ModelFormat {
    /// The format of the model at `path`, by its shape on disk.
    pub fn of(path: &Path) -> Result<ModelFormat> {
        if path.is_dir() {
            Ok(ModelFormat::Mlx)
        } else if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            Ok(ModelFormat::Gguf)
        } else if path.exists() {
            Err(EngineError::Config(format!(
                "{} is neither a model directory nor a .gguf file",
                path.display()
            )))
        } else {
            Err(EngineError::Config(format!(
                "{} does not exist",
                path.display()
            )))
        }
    }
}

/// A model with its tokenizer.
pub struct LoadedModel {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub path: PathBuf,
    pub format: ModelFormat,
}

/// Loads the model and tokenizer at `path`.
pub fn load(path: &Path) -> Result<LoadedModel> {
    let format = ModelFormat::of(path)?;
    let (model, tokenizer) = match format {
        ModelFormat::Mlx => (Model::load_dir(path)?, Tokenizer::from_dir(path)?),
        ModelFormat::Gguf => {
            let g = gguf::load(path)?;
            let tokenizer = Tokenizer::from_gguf(&g.file)?;
            (Model::from_weights(g.config, g.weights)?, tokenizer)
        }
    };
    Ok(LoadedModel {
        model,
        tokenizer,
        path: path.to_path_buf(),
        format,
    })
}
