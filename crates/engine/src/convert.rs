//! `mlxd convert`: a GGUF file written out as an MLX checkpoint directory
//! that mlx-lm (and this engine) load: `config.json` (with the per-layer
//! quantization the GGUF's tensor types imply), `model.safetensors` (Hugging
//! Face tensor names, Q/K rows un-permuted, quantized tensors as the engine
//! loads them: lossless except Q6_K, re-quantized to 8 bits; see
//! `gguf_quant`), `tokenizer.json`, `tokenizer_config.json`
//! (chat template, special tokens) and `generation_config.json`.

use std::path::Path;

use serde_json::{Value, json};

use crate::error::{EngineError, Result};
use crate::model::gguf;
use crate::tokenizer::Tokenizer;

/// Converts the GGUF at `gguf_path` into a checkpoint in `out_dir` (created
/// if needed; existing files of the same names are replaced).
pub fn gguf_to_mlx(gguf_path: &Path, out_dir: &Path) -> Result<()> {
    let model = gguf::load(gguf_path)?;
    let tokenizer = Tokenizer::from_gguf(&model.file)?;
    std::fs::create_dir_all(out_dir).map_err(|e| EngineError::io(out_dir, e))?;

    mlx::io::save_safetensors(
        out_dir.join("model.safetensors"),
        model.weights.iter(),
        [("format", "mlx")],
    )?;
    write_json(&out_dir.join("config.json"), &model.config_json)?;
    write_tokenizer_files(&tokenizer, out_dir)
}

/// Files of a model directory that describe its tokenizer.
const TOKENIZER_FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
];

/// Puts the tokenizer of the model at `source` (a model directory or a
/// GGUF file) into `out_dir`, as a model directory carries it.
pub fn copy_tokenizer(source: &Path, out_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(out_dir).map_err(|e| EngineError::io(out_dir, e))?;
    if source.is_dir() {
        for name in TOKENIZER_FILES {
            let from = source.join(name);
            if from.exists() {
                std::fs::copy(&from, out_dir.join(name)).map_err(|e| EngineError::io(&from, e))?;
            }
        }
        return Ok(());
    }
    let tokenizer = Tokenizer::from_gguf_path(source)?;
    write_tokenizer_files(&tokenizer, out_dir)
}

/// Writes `tokenizer.json`, `tokenizer_config.json` and
/// `generation_config.json` for `tokenizer`.
fn write_tokenizer_files(tokenizer: &Tokenizer, out_dir: &Path) -> Result<()> {
    let tokenizer_json = out_dir.join("tokenizer.json");
    tokenizer
        .inner()
        .save(&tokenizer_json, false)
        .map_err(|e| EngineError::Weights(format!("{}: {e}", tokenizer_json.display())))?;
    write_json(
        &out_dir.join("tokenizer_config.json"),
        &tokenizer_config(tokenizer),
    )?;
    let mut generation = json!({ "eos_token_id": tokenizer.eos_token_ids() });
    if let Some(bos) = tokenizer.bos_token_id() {
        generation["bos_token_id"] = json!(bos);
    }
    write_json(&out_dir.join("generation_config.json"), &generation)
}

fn tokenizer_config(tokenizer: &Tokenizer) -> Value {
    let special = tokenizer.special_tokens();
    let mut config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": false,
        "add_bos_token": tokenizer.add_bos_token().unwrap_or(false),
        "add_eos_token": false,
    });
    for (key, value) in [
        ("bos_token", &special.bos),
        ("eos_token", &special.eos),
        ("pad_token", &special.pad),
        ("unk_token", &special.unk),
    ] {
        if let Some(v) = value {
            config[key] = json!(v);
        }
    }
    if let Some(template) = tokenizer.chat_template("default") {
        config["chat_template"] = json!(template.source());
    }
    config
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| EngineError::Config(format!("{}: {e}", path.display())))?;
    std::fs::write(path, text + "\n").map_err(|e| EngineError::io(path, e))
}
