//! Loading a model and its tokenizer from a path: an MLX / Hugging Face
//! model directory (`config.json`, safetensors, `tokenizer.json`) or a
//! single GGUF file (tensors and tokenizer both from the file).

use std::path::{Path, PathBuf};

use crate::error::{EngineError, Result};
use crate::model::{Model, ModelConfig, Weights, gguf};
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

/// Loads the model and tokenizer at `path`, reading every weight into
/// memory before returning (MLX would otherwise read them lazily during the
/// first request).
pub fn load(path: &Path) -> Result<LoadedModel> {
    load_with_progress(path, &mut |_, _| {})
}

/// Bytes of weights read per progress report.
const PROGRESS_CHUNK: u64 = 256 << 20;

/// [`load`], calling `progress(bytes_loaded, bytes_total)` as the weights
/// are read.
pub fn load_with_progress(path: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<LoadedModel> {
    load_part(path, None, progress)
}

/// [`load`] of this rank's part of a model split over a group (`None`:
/// the whole model), see [`crate::distributed`].
pub fn load_part(
    path: &Path,
    shard: Option<crate::distributed::Shard>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<LoadedModel> {
    let format = ModelFormat::of(path)?;
    let (config, weights, tokenizer) = match format {
        ModelFormat::Mlx => {
            let config_path = path.join("config.json");
            let text = std::fs::read_to_string(&config_path)
                .map_err(|e| EngineError::io(&config_path, e))?;
            let config = ModelConfig::from_json(&text)?;
            (config, Weights::load_dir(path)?, Tokenizer::from_dir(path)?)
        }
        ModelFormat::Gguf => {
            let g = gguf::load(path)?;
            let tokenizer = Tokenizer::from_gguf(&g.file)?;
            (g.config, g.weights, tokenizer)
        }
    };
    // A split model reads its part only, once cut (see
    // `distributed::prepare`).
    if shard.is_none() {
        materialize(&weights, progress)?;
    }
    let mut config = config;
    config.shard = shard;
    let model = Model::from_weights(config, weights)?;
    Ok(LoadedModel {
        model,
        tokenizer,
        path: path.to_path_buf(),
        format,
    })
}

/// Evaluates every tensor, in batches of about [`PROGRESS_CHUNK`] bytes,
/// reporting the bytes read so far.
pub(crate) fn materialize(weights: &Weights, progress: &mut dyn FnMut(u64, u64)) -> Result<()> {
    let total = weights.nbytes() as u64;
    let mut tensors: Vec<(&str, &mlx::Array)> = weights.iter().collect();
    tensors.sort_by_key(|(name, _)| *name);
    let (mut done, mut batch, mut batch_bytes) = (0u64, Vec::new(), 0u64);
    progress(0, total);
    for (_, array) in tensors {
        batch.push(array);
        batch_bytes += array.nbytes() as u64;
        if batch_bytes >= PROGRESS_CHUNK {
            mlx::eval(&batch)?;
            done += batch_bytes;
            progress(done, total);
            (batch, batch_bytes) = (Vec::new(), 0);
        }
    }
    mlx::eval(&batch)?;
    progress(total, total);
    Ok(())
}
