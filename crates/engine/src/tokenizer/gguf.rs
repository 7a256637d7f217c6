//! A Hugging Face `tokenizers` tokenizer built from GGUF tokenizer metadata.
//!
//! Follows llama.cpp's vocabulary handling (`llama-vocab.cpp`): the
//! `tokenizer.ggml.*` keys, token types (control and user-defined tokens are
//! matched whole in text), the pre-tokenizer chosen by `tokenizer.ggml.pre`,
//! and the two model kinds used by the supported families:
//!
//! - `gpt2`: byte-level BPE with explicit merges (Qwen2, Llama 3, SmolLM2).
//! - `llama`: SentencePiece BPE with scores and byte fallback (Llama 2,
//!   Mistral v0.1). Merges are derived from the scores the way
//!   `transformers`' `SentencePieceExtractor` does: every split of a piece
//!   into two pieces is a merge, ranked by the merged piece's score.
//!
//! The tokenizer is described as `tokenizer.json` would describe it and
//! deserialized by `tokenizers`, so it behaves exactly like the equivalent
//! Hugging Face tokenizer.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value as Json, json};

use super::config::DEFAULT_TEMPLATE_NAME;
use super::{Parts, SpecialTokens, TokenizerError};
use crate::gguf::{GgufFile, GgufValue};

/// `tokenizer.ggml.token_type` values.
const TYPE_NORMAL: i64 = 1;
const TYPE_UNKNOWN: i64 = 2;
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;
const TYPE_BYTE: i64 = 6;

/// Qwen2's split pattern (digits one at a time).
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's split pattern (digits in groups of up to three).
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The vocabulary arrays of the file.
struct Vocab<'a> {
    tokens: Vec<&'a str>,
    types: Vec<i64>,
    scores: Vec<f32>,
}

impl<'a> Vocab<'a> {
    fn read(file: &'a GgufFile) -> Result<Self, TokenizerError> {
        let tokens = file
            .get_array("tokenizer.ggml.tokens")
            .ok_or_else(|| missing("tokenizer.ggml.tokens"))?
            .iter()
            .map(|v| v.as_str().ok_or_else(|| bad("tokenizer.ggml.tokens")))
            .collect::<Result<Vec<_>, _>>()?;
        let types = match file.get_array("tokenizer.ggml.token_type") {
            None => vec![TYPE_NORMAL; tokens.len()],
            Some(a) => a
                .iter()
                .map(|v| match *v {
                    GgufValue::I32(t) => Ok(i64::from(t)),
                    _ => v
                        .as_u64()
                        .and_then(|t| i64::try_from(t).ok())
                        .ok_or_else(|| bad("tokenizer.ggml.token_type")),
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        let scores = match file.get_array("tokenizer.ggml.scores") {
            None => Vec::new(),
            Some(a) => a
                .iter()
                .map(|v| v.as_f64().map(|f| f as f32))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("tokenizer.ggml.scores"))?,
        };
        if types.len() != tokens.len() || !(scores.is_empty() || scores.len() == tokens.len()) {
            return Err(TokenizerError::GgufVocab(
                "token, token_type and scores arrays differ in length".into(),
            ));
        }
        Ok(Vocab {
            tokens,
            types,
            scores,
        })
    }

    fn text(&self, id: Option<u32>) -> Option<String> {
        id.and_then(|id| self.tokens.get(id as usize))
            .map(|s| (*s).to_owned())
    }

    fn vocab_json(&self) -> serde_json::Map<String, Json> {
        self.tokens
            .iter()
            .enumerate()
            .map(|(id, t)| ((*t).to_owned(), json!(id)))
            .collect()
    }

    /// Control and user-defined tokens, matched whole in text before the
    /// model runs; control tokens are special (skipped by
    /// `decode(skip_special_tokens = true)`), user-defined ones are not.
    fn added_tokens(&self) -> Vec<Json> {
        let mut out = Vec::new();
        for (id, (token, ty)) in self.tokens.iter().zip(&self.types).enumerate() {
            if *ty == TYPE_CONTROL || *ty == TYPE_USER_DEFINED {
                out.push(json!({
                    "id": id, "content": token, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": *ty == TYPE_CONTROL,
                }));
            }
        }
        out
    }
}

/// Gathers everything the tokenizer needs from the file's metadata.
pub(super) fn parts_from_gguf(file: &GgufFile) -> Result<Parts, TokenizerError> {
    let model = file
        .get_str("tokenizer.ggml.model")
        .ok_or_else(|| missing("tokenizer.ggml.model"))?;
    let vocab = Vocab::read(file)?;
    let id = |key: &str| file.get_u32(key);
    let bos_id = id("tokenizer.ggml.bos_token_id");
    let eos_id = id("tokenizer.ggml.eos_token_id");
    let default_add_bos = model == "llama";
    let add_bos = file
        .get_bool("tokenizer.ggml.add_bos_token")
        .unwrap_or(default_add_bos);
    let bos_text = vocab.text(bos_id);
    let post_processor = match (&bos_text, bos_id) {
        (Some(bos), Some(bos_id)) if add_bos => json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos.as_str(): {"id": bos, "ids": [bos_id], "tokens": [bos]}},
        }),
        _ => Json::Null,
    };
    let mut doc = match model {
        "gpt2" => bpe_json(file, &vocab)?,
        "llama" => spm_json(file, &vocab)?,
        other => {
            return Err(TokenizerError::GgufVocab(format!(
                "tokenizer.ggml.model {other:?} (supported: gpt2, llama)"
            )));
        }
    };
    doc["version"] = json!("1.0");
    doc["truncation"] = Json::Null;
    doc["padding"] = Json::Null;
    doc["added_tokens"] = Json::Array(vocab.added_tokens());
    doc["post_processor"] = post_processor;
    let bytes = serde_json::to_vec(&doc).map_err(|e| TokenizerError::Load(e.to_string()))?;
    let inner = tokenizers::Tokenizer::from_bytes(bytes)
        .map_err(|e| TokenizerError::Load(format!("GGUF vocabulary: {e}")))?;

    let unk_id = id("tokenizer.ggml.unknown_token_id").or_else(|| {
        vocab
            .types
            .iter()
            .position(|t| *t == TYPE_UNKNOWN)
            .map(|i| i as u32)
    });
    let special = SpecialTokens {
        bos: bos_text,
        eos: vocab.text(eos_id),
        pad: vocab.text(id("tokenizer.ggml.padding_token_id")),
        unk: vocab.text(unk_id),
        additional: Vec::new(),
    };
    // End-of-turn / end-of-message tokens also end generation in llama.cpp.
    let extra_eos_ids = ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"]
        .iter()
        .filter_map(|k| id(k))
        .collect();
    Ok(Parts {
        inner,
        special,
        extra_bos_ids: Vec::new(),
        extra_eos_ids,
        add_bos_token: Some(add_bos),
        templates: chat_templates(file),
    })
}

/// `tokenizer.chat_template` (as `default`) and `tokenizer.chat_template.NAME`.
fn chat_templates(file: &GgufFile) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, value) in &file.metadata {
        let Some(text) = value.as_str() else { continue };
        if key == "tokenizer.chat_template" {
            out.insert(DEFAULT_TEMPLATE_NAME.to_owned(), text.to_owned());
        } else if let Some(name) = key.strip_prefix("tokenizer.chat_template.") {
            out.insert(name.to_owned(), text.to_owned());
        }
    }
    out
}

/// Byte-level BPE (`tokenizer.ggml.model = "gpt2"`).
fn bpe_json(file: &GgufFile, vocab: &Vocab<'_>) -> Result<Json, TokenizerError> {
    let merges = file
        .get_array("tokenizer.ggml.merges")
        .ok_or_else(|| missing("tokenizer.ggml.merges"))?
        .iter()
        .map(|m| {
            m.as_str()
                .and_then(|s| s.split_once(' '))
                .map(|(a, b)| json!([a, b]))
                .ok_or_else(|| bad("tokenizer.ggml.merges"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let pre = file.get_str("tokenizer.ggml.pre").unwrap_or("default");
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": use_regex});
    let split_then_bytes = |pattern: &str| {
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false},
            byte_level(false),
        ]})
    };
    let (normalizer, pre_tokenizer, ignore_merges) = match pre {
        "qwen2" => (
            json!({"type": "NFC"}),
            split_then_bytes(QWEN2_PATTERN),
            false,
        ),
        "llama-bpe" | "llama3" => (Json::Null, split_then_bytes(LLAMA3_PATTERN), true),
        "smollm" => (
            Json::Null,
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level(true),
            ]}),
            false,
        ),
        // "gpt2", "default" and others: the GPT-2 pattern built into ByteLevel.
        _ => (Json::Null, byte_level(true), false),
    };
    Ok(json!({
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "decoder": byte_level(true),
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": ignore_merges,
            "vocab": vocab.vocab_json(), "merges": merges,
        },
    }))
}

/// SentencePiece BPE with byte fallback (`tokenizer.ggml.model = "llama"`).
fn spm_json(file: &GgufFile, vocab: &Vocab<'_>) -> Result<Json, TokenizerError> {
    if vocab.scores.is_empty() {
        return Err(missing("tokenizer.ggml.scores"));
    }
    let add_space_prefix = file
        .get_bool("tokenizer.ggml.add_space_prefix")
        .unwrap_or(true);
    let mut normalizers = Vec::new();
    if add_space_prefix {
        normalizers.push(json!({"type": "Prepend", "prepend": "\u{2581}"}));
    }
    normalizers.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}));
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if add_space_prefix {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    let unk = vocab
        .types
        .iter()
        .position(|t| *t == TYPE_UNKNOWN)
        .map(|i| vocab.tokens[i]);
    let has_bytes = vocab.types.contains(&TYPE_BYTE);
    Ok(json!({
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": null,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": unk,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": true, "byte_fallback": has_bytes, "ignore_merges": false,
            "vocab": vocab.vocab_json(), "merges": spm_merges(vocab),
        },
    }))
}

/// Merges for a SentencePiece BPE vocabulary: for each normal piece, every
/// split into two normal pieces; ordered by the merged piece's score
/// (highest first), then its id, then the ids of the two halves.
fn spm_merges(vocab: &Vocab<'_>) -> Vec<Json> {
    let normal: HashMap<&str, usize> = vocab
        .tokens
        .iter()
        .zip(&vocab.types)
        .enumerate()
        .filter(|(_, (_, ty))| **ty == TYPE_NORMAL)
        .map(|(id, (t, _))| (*t, id))
        .collect();
    let mut merges: Vec<(f32, usize, usize, usize)> = Vec::new();
    for (&piece, &id) in &normal {
        for (split, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(split);
            if let (Some(&l), Some(&r)) = (normal.get(left), normal.get(right)) {
                merges.push((vocab.scores[id], id, l, r));
            }
        }
    }
    merges.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(a.1.cmp(&b.1))
            .then(a.2.cmp(&b.2))
            .then(a.3.cmp(&b.3))
    });
    merges
        .into_iter()
        .map(|(_, _, l, r)| json!([vocab.tokens[l], vocab.tokens[r]]))
        .collect()
}

fn missing(key: &str) -> TokenizerError {
    TokenizerError::GgufVocab(format!("missing {key}"))
}

fn bad(key: &str) -> TokenizerError {
    TokenizerError::GgufVocab(format!("malformed {key}"))
}
