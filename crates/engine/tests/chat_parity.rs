//! Chat templates and encodings compared with Python `transformers`
//! (reference outputs from `scripts/ref/chat_templates.py`).

mod common;

use common::{LLAMA2, LLAMA3, QWEN3, REFERENCE};
use engine::{ChatMessage, RenderOptions, Tokenizer};
use serde_json::Value;

fn cases(tokenizer: &str, kind: &str) -> Vec<Value> {
    REFERENCE["tokenizers"][tokenizer][kind]
        .as_array()
        .unwrap_or_else(|| panic!("reference has no {tokenizer}.{kind}"))
        .clone()
}

fn ids(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).expect("ids are a list of u32")
}

fn check_chat(name: &str, tok: &Tokenizer, min_cases: usize) {
    let cases = cases(name, "chat");
    assert!(
        cases.len() >= min_cases,
        "{name}: only {} cases",
        cases.len()
    );
    for case in cases {
        let label = format!("{name}/{}", case["name"]);
        let messages: Vec<ChatMessage> =
            serde_json::from_value(case["messages"].clone()).expect("messages parse");
        let options = RenderOptions {
            add_generation_prompt: case["add_generation_prompt"].as_bool().expect("bool"),
            tools: case["tools"].as_array().cloned(),
            kwargs: case["kwargs"].as_object().cloned().unwrap_or_default(),
        };
        let text = tok
            .apply_chat_template(&messages, &options)
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(
            text,
            case["text"].as_str().expect("text"),
            "{label}: rendered text"
        );
        let got = tok
            .encode_chat(&messages, &options)
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(got, ids(&case["ids"]), "{label}: token ids");
    }
}

/// Compares encode/decode with the Python `tokenizers` library reading the
/// same tokenizer.json, and, where `transformers` agrees with it, with
/// `transformers` too.
fn check_encode(name: &str, tok: &Tokenizer, same_as_transformers: bool) {
    let cases = cases(name, "encode");
    assert!(!cases.is_empty());
    let prefixes: &[&str] = if same_as_transformers {
        &["", "tokenizers_"]
    } else {
        &["tokenizers_"]
    };
    for case in cases {
        let text = case["text"].as_str().expect("text");
        let plain = tok.encode(text, false).expect("encodes");
        let special = tok.encode(text, true).expect("encodes");
        let decoded = tok.decode(&plain, false).expect("decodes");
        for p in prefixes {
            assert_eq!(
                plain,
                ids(&case[format!("{p}ids")]),
                "{name}: {p}ids of {text:?}"
            );
            let want = ids(&case[format!("{p}ids_with_special")]);
            assert_eq!(special, want, "{name}: {p}ids+special of {text:?}");
            let want = case[format!("{p}decoded")].as_str().expect("decoded");
            assert_eq!(decoded, want, "{name}: {p}decode of {text:?}");
        }
    }
}

#[test]
fn qwen3_chat_template_matches_transformers() {
    check_chat("qwen3", &QWEN3, 11);
}

#[test]
fn llama3_chat_template_matches_transformers() {
    check_chat("llama3", &LLAMA3, 5);
}

#[test]
fn encodings_match_transformers() {
    check_encode("qwen3", &QWEN3, true);
    check_encode("llama3", &LLAMA3, true);
    // transformers 5 rebuilds SentencePiece tokenizers from the vocabulary
    // and drops the leading-space handling of tokenizer.json's normalizer
    // (" Hello world" loses its first space), so Llama 2 is compared with the
    // tokenizers library only; docs/tokenization.md has the details.
    check_encode("llama2", &LLAMA2, false);
}

#[test]
fn special_tokens_and_eos_ids_come_from_the_configs() {
    let q = &*QWEN3;
    assert_eq!(q.special_tokens().eos.as_deref(), Some("<|im_end|>"));
    assert_eq!(q.special_tokens().pad.as_deref(), Some("<|endoftext|>"));
    assert_eq!(q.special_tokens().bos, None);
    assert_eq!(q.eos_token_ids(), &[151645]);
    assert!(q.is_eos(151645));
    assert_eq!(q.add_bos_token(), Some(false));
    let l = &*LLAMA3;
    assert_eq!(l.bos_token_id(), Some(128000));
    assert_eq!(l.eos_token_ids(), &[128001]);
    let l2 = &*LLAMA2;
    assert_eq!(l2.bos_token_id(), Some(1));
    assert_eq!(l2.eos_token_ids(), &[2]);
    assert!(!l2.has_chat_template());
}

#[test]
fn raw_prompts_get_bos_once() {
    let l2 = &*LLAMA2;
    assert_eq!(l2.encode_prompt("Hi").expect("encodes").first(), Some(&1));
    let with_bos = l2.encode_prompt("<s> Hi").expect("encodes");
    assert_eq!(with_bos.iter().filter(|&&id| id == 1).count(), 1);
    // Llama 3's template writes <|begin_of_text|>; encode_chat must not add another.
    let msgs = [ChatMessage::new("user", "Hi")];
    let ids = LLAMA3
        .encode_chat(&msgs, &RenderOptions::default())
        .expect("encodes");
    assert_eq!(ids.iter().filter(|&&id| id == 128000).count(), 1);
}

#[test]
fn missing_template_falls_back_to_chatml() {
    let opts = RenderOptions {
        add_generation_prompt: true,
        ..Default::default()
    };
    let text = LLAMA2
        .apply_chat_template(&[ChatMessage::new("user", "Hi")], &opts)
        .expect("renders");
    assert_eq!(
        text,
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}
