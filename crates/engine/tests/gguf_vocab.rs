//! GGUF metadata and GGUF-built tokenizers against real files: llama.cpp's
//! vocabulary test vectors and the SmolLM2-135M-Instruct model.

mod common;

use std::sync::Arc;

use common::data_path;
use engine::gguf::GgufFile;
use engine::{ChatMessage, RenderOptions, StreamingDetokenizer, Tokenizer};

const SMOLLM2: &str = "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The strings of a llama.cpp `.inp` file and the ids of its `.out` file.
fn vectors(vocab: &str) -> Vec<(String, Vec<u32>)> {
    let read = |ext: &str| {
        let path = data_path(&format!("llama.cpp/ggml-vocab-{vocab}.gguf.{ext}"));
        std::fs::read_to_string(&path).expect("test vector file is readable")
    };
    let inputs: Vec<String> = read("inp")
        .split("\n__ggml_vocab_test__\n")
        .map(str::to_owned)
        .collect();
    let outputs: Vec<Vec<u32>> = read("out")
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|t| t.parse().expect("ids are integers"))
                .collect()
        })
        .collect();
    // The .inp file ends with a separator, leaving one empty piece.
    assert_eq!(inputs.last().map(String::as_str), Some(""));
    assert_eq!(
        inputs.len() - 1,
        outputs.len(),
        "{vocab}: inputs vs outputs"
    );
    inputs.into_iter().zip(outputs).collect()
}

/// Encodes each vector string (no special tokens, as llama.cpp's
/// test-tokenizer-0 does); returns the strings whose ids differ.
fn mismatches(vocab: &str) -> Vec<String> {
    let path = data_path(&format!("llama.cpp/ggml-vocab-{vocab}.gguf"));
    let tok = Tokenizer::from_gguf_path(&path).expect("GGUF tokenizer builds");
    let cases = vectors(vocab);
    assert!(cases.len() >= 40, "{vocab}: {} vectors", cases.len());
    let mut bad = Vec::new();
    for (text, want) in cases {
        let got = tok.encode(&text, false).expect("encodes");
        if got != want {
            bad.push(format!("{text:?}: got {got:?}, want {want:?}"));
        }
    }
    bad
}

#[test]
fn qwen2_gguf_tokenizer_matches_llama_cpp_vectors() {
    let bad = mismatches("qwen2");
    assert!(bad.is_empty(), "qwen2 mismatches:\n{}", bad.join("\n"));
}

#[test]
fn llama_bpe_gguf_tokenizer_matches_llama_cpp_vectors() {
    let bad = mismatches("llama-bpe");
    assert!(bad.is_empty(), "llama-bpe mismatches:\n{}", bad.join("\n"));
}

#[test]
fn llama_spm_gguf_tokenizer_matches_llama_cpp_vectors() {
    let bad = mismatches("llama-spm");
    assert!(bad.is_empty(), "llama-spm mismatches:\n{}", bad.join("\n"));
}

#[test]
fn smollm2_gguf_metadata_and_tensor_table() {
    let file = GgufFile::open(data_path(SMOLLM2)).expect("GGUF parses");
    assert_eq!(file.version, 3);
    assert_eq!(file.architecture(), Some("llama"));
    assert_eq!(file.get_u32("llama.block_count"), Some(30));
    assert_eq!(file.get_u32("llama.embedding_length"), Some(576));
    assert_eq!(file.get_str("tokenizer.ggml.model"), Some("gpt2"));
    assert_eq!(file.get_str("tokenizer.ggml.pre"), Some("smollm"));
    let tokens = file.get_array("tokenizer.ggml.tokens").expect("tokens");
    assert_eq!(tokens.len(), 49152);
    // 30 blocks of 9 tensors, plus embedding and final norm (tied output).
    assert_eq!(file.tensors.len(), 30 * 9 + 2);
    let embd = file
        .tensors
        .iter()
        .find(|t| t.name == "token_embd.weight")
        .expect("embedding tensor");
    assert_eq!(embd.shape, vec![576, 49152]);
    assert_eq!(embd.type_name(), Some("Q8_0"));
    let types: std::collections::BTreeSet<_> =
        file.tensors.iter().filter_map(|t| t.type_name()).collect();
    assert_eq!(types, ["F32", "Q4_1", "Q8_0"].into_iter().collect());
    assert_eq!(file.data_offset % file.alignment, 0);
    let len = std::fs::metadata(data_path(SMOLLM2)).expect("stat").len();
    assert!(
        file.tensors
            .iter()
            .all(|t| file.data_offset + t.offset < len)
    );
}

#[test]
fn smollm2_chat_template_renders_chatml() {
    let tok = Tokenizer::from_gguf_path(data_path(SMOLLM2)).expect("tokenizer builds");
    assert!(tok.has_chat_template());
    let opts = RenderOptions {
        add_generation_prompt: true,
        ..Default::default()
    };
    let user = [ChatMessage::new("user", "What is the capital of France?")];
    let text = tok.apply_chat_template(&user, &opts).expect("renders");
    // SmolLM2's template adds its default system prompt when none is given.
    assert_eq!(
        text,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    );
    let ids = tok.encode_chat(&user, &opts).expect("encodes");
    assert_eq!(ids.first(), Some(&1), "starts with <|im_start|>");
    assert_eq!(tok.id_to_token(1).as_deref(), Some("<|im_start|>"));
    assert_eq!(tok.decode(&ids, false).expect("decodes"), text);
    assert_eq!(tok.special_tokens().eos.as_deref(), Some("<|im_end|>"));
    assert!(tok.is_eos(2));
}

#[test]
fn smollm2_gguf_tokenizer_round_trips_and_streams() {
    let tok = Arc::new(Tokenizer::from_gguf_path(data_path(SMOLLM2)).expect("builds"));
    let text = "The capital of France is Paris. 12345 東京 🦙 café";
    let ids = tok.encode(text, false).expect("encodes");
    assert_eq!(tok.decode(&ids, false).expect("decodes"), text);
    // Digits are split one by one, as SmolLM2's pre-tokenizer does.
    let digits = tok.encode("12345", false).expect("encodes");
    assert_eq!(digits.len(), 5);
    let mut detok = StreamingDetokenizer::new(Arc::clone(&tok), false);
    let streamed = detok.push_all(&ids).expect("decodes") + &detok.finish().expect("finishes");
    assert_eq!(streamed, text);
}
