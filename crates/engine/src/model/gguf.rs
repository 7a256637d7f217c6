//! Models from single-file GGUF checkpoints (llama.cpp's format), turned
//! into the same `config.json` values and Hugging Face tensor names as an
//! MLX checkpoint, so one model implementation serves both.
//!
//! - A file whose tensors are all F32, F16, Q4_0, Q4_1 or Q8_0 loads
//!   through MLX's GGUF reader, which maps those quantized types losslessly
//!   to MLX affine quantization with groups of 32 (packed weight, `scales`,
//!   `biases`). Any other file is read by [`crate::gguf_quant`], which
//!   converts the K-quants as well: Q4_K and Q5_K (and Q5_0, Q5_1, Q8_K,
//!   BF16) exactly, to 4, 5 and 8 bits with groups of 32; Q2_K, Q3_K and
//!   Q6_K, whose 16-weight sub-blocks MLX's groups cannot hold, re-quantized
//!   to 4, 5 and 8 bits with groups of 32. So a Q2_K, Q3_K_M, Q4_K_M or
//!   Q5_K_M file (mixed K-quant and Q8_0 layers) loads with per-layer bit
//!   widths. Any other tensor type (the IQ types, TQ1_0, ...) is refused by
//!   name before anything is read.
//! - llama.cpp's converter permutes the rows of `attn_q` and `attn_k` of
//!   `llama` models so that its interleaved RoPE works; they are un-permuted
//!   here (rows of packed weights, scales and biases alike, since groups run
//!   along rows) so that the Hugging Face layout and RoPE apply.
//! - The config is read from `{arch}.*` metadata; the quantization of each
//!   layer from its tensors' shapes; Llama 3.1's `rope_freqs` tensor (per-pair
//!   period factors) becomes the config's `rope_scaling` of type
//!   [`GGUF_FREQ_FACTORS`].

use std::collections::HashMap;
use std::path::Path;

use mlx::Array;
use serde_json::{Map, Value, json};

use super::config::ModelConfig;
use super::weights::Weights;
use crate::error::{EngineError, Result};
use crate::gguf::GgufFile;
use crate::gguf_quant;

/// ggml tensor types MLX's reader converts without loss.
const MLX_TYPES: [&str; 5] = ["F32", "F16", "Q4_0", "Q4_1", "Q8_0"];

/// Group size of every quantized GGUF type MLX reads.
const GGUF_GROUP: i32 = 32;

/// The `rope_scaling` type of a GGUF's `rope_freqs` tensor: per-pair
/// factors of the rotation periods (`factors`), which llama.cpp's converter
/// computes from Llama 3.1's scaling; not a Hugging Face type, so a
/// checkpoint converted from such a file loads in mlxd only.
pub const GGUF_FREQ_FACTORS: &str = "gguf_freq_factors";

/// The `general.architecture`s read from GGUF files (each the
/// `model_type` of the same name).
pub const ARCHITECTURES: [&str; 3] = ["llama", "qwen2", "qwen3"];

/// The metadata of a GGUF model checked and turned into `config.json`
/// values (with `model_type`, dimensions, rope and per-layer quantization).
pub fn config_json(file: &GgufFile, tensors: &HashMap<String, Array>) -> Result<Value> {
    let arch = file
        .architecture()
        .ok_or_else(|| EngineError::Config("GGUF has no general.architecture".into()))?;
    if !ARCHITECTURES.contains(&arch) {
        return Err(EngineError::Config(format!(
            "GGUF architecture {arch:?} is not supported ({})",
            ARCHITECTURES.join(", ")
        )));
    }
    let model_type = arch;
    let key = |k: &str| format!("{arch}.{k}");
    let uint = |k: &str| -> Result<i64> {
        file.get(&key(k))
            .and_then(|v| v.as_u64())
            .map(|v| v as i64)
            .ok_or_else(|| EngineError::Config(format!("GGUF lacks {}", key(k))))
    };
    // GGUF stores f32: print the shortest decimal that reads back as it
    // (1e-5, not 9.999999747378752e-6).
    let float = |k: &str| {
        file.get(&key(k))
            .and_then(|v| v.as_f64())
            .and_then(|v| (v as f32).to_string().parse::<f64>().ok())
    };
    let heads = uint("attention.head_count")?;
    let hidden = uint("embedding_length")?;
    let vocab = match uint("vocab_size") {
        Ok(v) => v,
        Err(_) => file
            .get_array("tokenizer.ggml.tokens")
            .map(|t| t.len() as i64)
            .ok_or_else(|| EngineError::Config("GGUF gives no vocabulary size".into()))?,
    };
    let mut config = json!({
        "model_type": model_type,
        "hidden_size": hidden,
        "num_hidden_layers": uint("block_count")?,
        "intermediate_size": uint("feed_forward_length")?,
        "num_attention_heads": heads,
        "num_key_value_heads": uint("attention.head_count_kv").unwrap_or(heads),
        "head_dim": uint("attention.key_length").unwrap_or(hidden / heads.max(1)),
        "rms_norm_eps": float("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
        "vocab_size": vocab,
        "rope_theta": float("rope.freq_base").unwrap_or(10000.0),
        "max_position_embeddings": uint("context_length").ok(),
        "tie_word_embeddings": !tensors.contains_key("output.weight"),
    });
    if let Some(kind) = file.get_str(&key("rope.scaling.type")) {
        let factor = float("rope.scaling.factor").unwrap_or(1.0);
        match kind {
            "none" => {}
            "linear" => config["rope_scaling"] = json!({"type": "linear", "factor": factor}),
            other => {
                return Err(EngineError::Config(format!(
                    "GGUF rope scaling {other:?} is not supported"
                )));
            }
        }
    }
    // Llama 3.1's frequency scaling as llama.cpp stores it: one factor per
    // rotated pair, each pair's period multiplied by it.
    if let Some(freqs) = tensors.get("rope_freqs.weight") {
        if config.get("rope_scaling").is_some() {
            return Err(EngineError::Config(
                "GGUF has both rope_freqs and a rope scaling type".into(),
            ));
        }
        let factors: Vec<f32> = freqs.astype(mlx::Dtype::F32)?.to_vec()?;
        config["rope_scaling"] = json!({"rope_type": GGUF_FREQ_FACTORS, "factors": factors});
    }
    if let Some(eos) = file.get_u32("tokenizer.ggml.eos_token_id") {
        config["eos_token_id"] = json!(eos);
    }
    if let Some(bos) = file.get_u32("tokenizer.ggml.bos_token_id") {
        config["bos_token_id"] = json!(bos);
    }
    if let Some(q) = quantization_json(tensors)? {
        config["quantization"] = q;
    }
    Ok(config)
}

/// `quantization` with the most common bit width as default and the
/// others as per-layer overrides; `None` when nothing is quantized.
fn quantization_json(tensors: &HashMap<String, Array>) -> Result<Option<Value>> {
    let mut layers: Vec<(String, i32)> = Vec::new();
    for (name, scales) in tensors {
        let Some(prefix) = name.strip_suffix(".scales") else {
            continue;
        };
        let packed = tensors
            .get(&format!("{prefix}.weight"))
            .ok_or_else(|| EngineError::Weights(format!("{name} without {prefix}.weight")))?;
        let inputs = scales.dim(-1)? * GGUF_GROUP;
        let bits = packed.dim(-1)? * 32 / inputs.max(1);
        layers.push((hf_name(prefix)?, bits));
    }
    if layers.is_empty() {
        return Ok(None);
    }
    let mut counts: HashMap<i32, usize> = HashMap::new();
    for (_, bits) in &layers {
        *counts.entry(*bits).or_default() += 1;
    }
    let default_bits = counts
        .into_iter()
        .max_by_key(|(bits, n)| (*n, *bits))
        .map(|(bits, _)| bits)
        .unwrap_or(4);
    let mut q = Map::new();
    q.insert("group_size".into(), json!(GGUF_GROUP));
    q.insert("bits".into(), json!(default_bits));
    layers.sort();
    for (layer, bits) in layers.into_iter().filter(|(_, b)| *b != default_bits) {
        q.insert(layer, json!({"group_size": GGUF_GROUP, "bits": bits}));
    }
    Ok(Some(Value::Object(q)))
}

/// The Hugging Face name of a llama.cpp tensor name (without suffix).
fn hf_name(gguf: &str) -> Result<String> {
    let fixed = match gguf {
        "token_embd" => Some("model.embed_tokens"),
        "output_norm" => Some("model.norm"),
        "output" => Some("lm_head"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Ok(name.to_owned());
    }
    let unknown = || EngineError::Weights(format!("unexpected GGUF tensor {gguf}"));
    let rest = gguf.strip_prefix("blk.").ok_or_else(unknown)?;
    let (layer, part) = rest.split_once('.').ok_or_else(unknown)?;
    let layer: u32 = layer.parse().map_err(|_| unknown())?;
    let part = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return Err(unknown()),
    };
    Ok(format!("model.layers.{layer}.{part}"))
}

/// Splits `blk.0.attn_q.scales` into (`blk.0.attn_q`, `scales`).
fn split_suffix(name: &str) -> Result<(&str, &str)> {
    for suffix in ["weight", "bias", "scales", "biases"] {
        if let Some(prefix) = name.strip_suffix(&format!(".{suffix}")) {
            return Ok((prefix, suffix));
        }
    }
    Err(EngineError::Weights(format!(
        "unexpected GGUF tensor {name}"
    )))
}

/// Row order that undoes llama.cpp's Q/K permutation for `heads` heads:
/// Hugging Face row `(h, s, j)` is GGUF row `(h, j, s)`.
fn unpermute_rows(rows: i32, heads: i32) -> Result<Array> {
    let head_dim = rows / heads;
    let half = head_dim / 2;
    let order: Vec<u32> = (0..heads)
        .flat_map(|h| {
            (0..2).flat_map(move |s| (0..half).map(move |j| (h * head_dim + 2 * j + s) as u32))
        })
        .collect();
    Ok(Array::from_slice(&order, &[rows])?)
}

/// Whether MLX's own reader loads every tensor of `file`.
fn mlx_reads(file: &GgufFile) -> bool {
    file.tensors
        .iter()
        .all(|t| t.type_name().is_some_and(|n| MLX_TYPES.contains(&n)))
}

/// Bytes the tensors of `file` take in memory once loaded: more than on
/// disk for K-quant files (f32 scales and biases, Q6_K at 8 bits), about
/// the same for MLX's types. Tensors of types not loaded count nothing.
pub fn loaded_bytes(file: &GgufFile) -> u64 {
    let scale_bytes = if mlx_reads(file) { 2 } else { 4 };
    file.tensors
        .iter()
        .filter_map(|t| gguf_quant::loaded_bytes(t, scale_bytes))
        .fold(0u64, u64::saturating_add)
}

/// A GGUF model read into the MLX checkpoint form.
pub struct GgufModel {
    /// The `config.json` values the metadata describes.
    pub config_json: Value,
    pub config: ModelConfig,
    /// The tensors under Hugging Face names, Q/K rows un-permuted.
    pub weights: Weights,
    /// The file's metadata (for the tokenizer).
    pub file: GgufFile,
}

/// Reads a GGUF model: its config and its tensors under Hugging Face names.
pub fn load(path: &Path) -> Result<GgufModel> {
    let file = GgufFile::open(path)
        .map_err(|e| EngineError::Weights(format!("{}: {e}", path.display())))?;
    let unsupported: Vec<String> = file
        .tensors
        .iter()
        .filter(|t| !gguf_quant::converts(t))
        .map(|t| format!("{} ({})", t.name, t.type_name().unwrap_or("unknown type")))
        .collect();
    if !unsupported.is_empty() {
        let shown = unsupported
            .iter()
            .take(6)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        return Err(EngineError::Weights(format!(
            "{}: {} tensors have types this engine cannot load (supported: {}, {}): {shown}",
            path.display(),
            unsupported.len(),
            gguf_quant::EXACT_TYPES.join(", "),
            gguf_quant::REQUANTIZED_TYPES
                .iter()
                .map(|(t, _)| *t)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let tensors = if mlx_reads(&file) {
        mlx::io::load_gguf(path)?.arrays
    } else {
        gguf_quant::read_tensors(path, &file)?
    };
    let config_value = config_json(&file, &tensors)?;
    let config = ModelConfig::from_json(&config_value.to_string())?;
    let permuted = config.model_type == "llama";
    let mut renamed = HashMap::with_capacity(tensors.len());
    for (name, array) in tensors {
        if name == "rope_freqs.weight" {
            // In the config now.
            continue;
        }
        let (prefix, suffix) = split_suffix(&name)?;
        let heads = match prefix.rsplit('.').next() {
            Some("attn_q") if permuted => Some(config.num_attention_heads),
            Some("attn_k") if permuted => Some(config.num_kv_heads()),
            _ => None,
        };
        let array = match heads {
            Some(heads) => array.take(&unpermute_rows(array.dim(0)?, heads)?, 0)?,
            None => array,
        };
        renamed.insert(format!("{}.{suffix}", hf_name(prefix)?), array);
    }
    Ok(GgufModel {
        config_json: config_value,
        config,
        weights: Weights::new(renamed),
        file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_cpp_names_map_to_hugging_face_names() {
        assert_eq!(hf_name("token_embd").unwrap(), "model.embed_tokens");
        assert_eq!(
            hf_name("blk.12.attn_k").unwrap(),
            "model.layers.12.self_attn.k_proj"
        );
        assert_eq!(
            hf_name("blk.0.ffn_down").unwrap(),
            "model.layers.0.mlp.down_proj"
        );
        assert!(hf_name("blk.x.attn_k").is_err());
        assert!(hf_name("mystery").is_err());
    }

    #[test]
    fn unpermuting_inverts_llama_cpp_permutation() {
        // llama.cpp: w.reshape(heads, 2, hd/2, ...).swapaxes(1, 2).reshape(...)
        let (heads, hd) = (3usize, 8usize);
        let hf: Vec<u32> = (0..(heads * hd) as u32).collect();
        let mut gguf = vec![0u32; hf.len()];
        for h in 0..heads {
            for s in 0..2 {
                for j in 0..hd / 2 {
                    gguf[h * hd + j * 2 + s] = hf[h * hd + s * hd / 2 + j];
                }
            }
        }
        let order = unpermute_rows((heads * hd) as i32, heads as i32).unwrap();
        let rows = Array::from_slice(&gguf, &[(heads * hd) as i32]).unwrap();
        assert_eq!(rows.take(&order, 0).unwrap().to_vec::<u32>().unwrap(), hf);
    }
}
