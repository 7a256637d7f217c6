//! The Gated DeltaNet hybrids (Qwen3-Next, Qwen3.5) in continuous batching,
//! on the tiny checkpoints mlx-lm writes (`tests/data/mlx_lm_reference.py`):
//! a sequence's tokens are the same alone, prefilled together with others
//! (left-padded: the padding must not reach the recurrent state), joining a
//! running batch, and prefilled in chunks; a prompt-cache hit at the end of
//! a cached sequence gives the logits of a cold prefill, and a prompt that
//! branches off inside one is a miss; memory is counted per kind of cache;
//! a Hugging Face layout loads as mlx-lm's, unused multi-token-prediction
//! and vision tensors are skipped, and a bad checkpoint fails naming the
//! tensor or key.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use common::batching::{
    alone, assert_greedy_batched_equals_alone, ids, nine_prompts, request, run,
};
use common::mlx_lm::{load, reference_dir};
use engine::batch::{BatchConfig, Scheduler};
use engine::model::CacheKind;
use engine::{Model, SamplingParams};

const HYBRIDS: [&str; 3] = [
    "qwen3_next_f32_interval2",
    "qwen3_5_f32_interval4_nested",
    "qwen3_5_q4_g32_interval2",
];

#[test]
fn greedy_outputs_in_a_batch_equal_the_outputs_alone() {
    for name in HYBRIDS {
        assert_greedy_batched_equals_alone(name, &load(name));
    }
}

#[test]
fn a_prompt_cache_hit_at_a_sequence_end_gives_the_logits_of_a_cold_prefill() {
    let params = SamplingParams {
        logprobs: true,
        top_logprobs: 20,
        ..SamplingParams::greedy()
    };
    let history: Vec<u32> = (0..90u32).map(|i| (i * 13 + 7) % 256).collect();
    let n = 6;
    for name in HYBRIDS {
        let model = load(name);
        assert!(!model.trimmable());
        let mut s = Scheduler::new(&model, BatchConfig::default());
        s.submit(request(&model, 1, &history, &params, n)).unwrap();
        let first = run(&mut s, HashMap::new());
        // The next turn resends the history and the answer: the state at
        // the cached sequence's end is reused.
        let mut turn2 = history.clone();
        turn2.extend(ids(&first.tokens[&1]));
        turn2.extend([9, 8, 7, 6, 5]);
        s.submit(request(&model, 2, &turn2, &params, n)).unwrap();
        let warm = run(&mut s, HashMap::new());
        assert_eq!(
            warm.reports[&2].cached_tokens,
            history.len() + n - 1,
            "{name}"
        );
        let cold = alone(&model, &turn2, &params, n);
        assert_eq!(ids(&warm.tokens[&2]), ids(&cold), "{name}");
        for (w, c) in warm.tokens[&2].iter().zip(&cold) {
            let (w, c) = (w.logprobs.as_ref().unwrap(), c.logprobs.as_ref().unwrap());
            for ((wi, wl), (ci, cl)) in w.top.iter().zip(&c.top) {
                assert_eq!(wi, ci, "{name}");
                assert!((wl - cl).abs() < 1e-4, "{name}: {wl} vs {cl}");
            }
        }
        // The history sent again (a regenerated answer) hits the entry kept
        // at its prompt's end, whole but for its last token.
        s.submit(request(&model, 4, &history, &params, n)).unwrap();
        let again = run(&mut s, HashMap::new());
        assert_eq!(again.reports[&4].cached_tokens, history.len() - 1, "{name}");
        assert_eq!(ids(&again.tokens[&4]), ids(&first.tokens[&1]), "{name}");
        // A prompt sharing only part of the history cannot use the state.
        let mut branch = history[..50].to_vec();
        branch.extend([1, 2, 3]);
        s.submit(request(&model, 3, &branch, &params, n)).unwrap();
        let miss = run(&mut s, HashMap::new());
        assert_eq!(miss.reports[&3].cached_tokens, 0, "{name}");
        assert_eq!(
            ids(&miss.tokens[&3]),
            ids(&alone(&model, &branch, &params, n)),
            "{name}"
        );
    }
}

#[test]
fn prompts_prefilled_together_are_kept_at_their_end() {
    let params = SamplingParams::greedy();
    let model = load("qwen3_next_f32_interval2");
    let prompts = &nine_prompts()[3..8];
    let mut s = Scheduler::new(&model, BatchConfig::default());
    for (i, p) in prompts.iter().enumerate() {
        s.submit(request(&model, i as u64, p, &params, 4)).unwrap();
    }
    let first = run(&mut s, HashMap::new());
    assert_eq!(s.prefill_passes(), 1, "one left-padded pass");
    for (i, p) in prompts.iter().enumerate() {
        let id = 10 + i as u64;
        s.submit(request(&model, id, p, &params, 4)).unwrap();
        let again = run(&mut s, HashMap::new());
        assert_eq!(again.reports[&id].cached_tokens, p.len() - 1, "prompt {i}");
        assert_eq!(ids(&again.tokens[&id]), ids(&first.tokens[&(i as u64)]));
    }
}

#[test]
fn memory_is_counted_per_kind_of_cache() {
    // Four layers, full attention every second: two KV layers of 2 heads
    // of 16 (f32), two recurrent states of a 3 x 128 convolution window and
    // 4 heads of 16 x 16.
    let model = load("qwen3_next_f32_interval2");
    let kinds = model.cache_kinds();
    assert_eq!(kinds.len(), 4);
    assert_eq!(kinds.iter().filter(|k| **k == CacheKind::Kv).count(), 2);
    assert_eq!(model.kv_bytes_per_position(), 2 * 2 * 2 * 16 * 4);
    assert_eq!(model.state_bytes_per_row(), 2 * (3 * 128 + 4 * 16 * 16) * 4);
    // What a sequence's caches hold after its prompt: KV per position in
    // the attention layers (in whole steps of 256), the state in the rest.
    let mut caches = model.new_cache();
    let prompt = mlx::Array::from_slice(&nine_prompts()[8], &[1, 150]).unwrap();
    model.fill_cache(&prompt, &mut caches).unwrap();
    let state: usize = caches
        .iter()
        .filter(|c| matches!(c, engine::Cache::Recurrent(_)))
        .map(engine::Cache::nbytes)
        .sum();
    assert_eq!(state, model.state_bytes_per_row());
    let kv: usize = caches
        .iter()
        .filter(|c| matches!(c, engine::Cache::Kv(_)))
        .map(engine::Cache::nbytes)
        .sum();
    assert_eq!(kv, 256 * model.kv_bytes_per_position());
    // A dense model has no recurrent state.
    assert_eq!(load("qwen3_f32_untied").state_bytes_per_row(), 0);
}

/// The tensors and config of a reference checkpoint, to edit and save.
struct Checkpoint {
    config: serde_json::Value,
    arrays: HashMap<String, mlx::Array>,
}

impl Checkpoint {
    fn read(name: &str) -> Checkpoint {
        let src = reference_dir().join(name);
        let text = std::fs::read_to_string(src.join("config.json")).unwrap();
        Checkpoint {
            config: serde_json::from_str(&text).unwrap(),
            arrays: mlx::io::load_safetensors(src.join("model.safetensors"))
                .unwrap()
                .arrays,
        }
    }

    /// The load's outcome, from a directory of its own.
    fn load(&self) -> Result<Model, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), self.config.to_string()).unwrap();
        mlx::io::save_safetensors(
            dir.path().join("model.safetensors"),
            self.arrays.iter().map(|(k, v)| (k.as_str(), v)),
            [("format", "mlx")],
        )
        .unwrap();
        Model::load_dir(dir.path()).map_err(|e| e.to_string())
    }
}

fn logits(model: &Model) -> Vec<f32> {
    let ids: Vec<u32> = (0..70u32).map(|i| (i * 11 + 2) % 256).collect();
    let tokens = mlx::Array::from_slice(&ids, &[1, 70]).unwrap();
    let mut caches = model.new_cache();
    model
        .forward(&tokens, &mut caches)
        .unwrap()
        .to_vec()
        .unwrap()
}

#[test]
fn a_hugging_face_layout_with_unused_tensors_loads_as_mlx_lm_writes_it() {
    let name = "qwen3_5_f32_interval4_nested";
    let want = logits(&load(name));
    let mut ckpt = Checkpoint::read(name);
    // As a Hugging Face checkpoint stores them: the decoder under
    // model.language_model, the kernel [C, 1, K], norms as offsets from 1.
    let norms = [
        "input_layernorm.weight",
        "post_attention_layernorm.weight",
        "model.norm.weight",
        "q_norm.weight",
        "k_norm.weight",
    ];
    let one = mlx::Array::scalar(1.0f32).unwrap();
    ckpt.arrays = ckpt
        .arrays
        .drain()
        .map(|(k, v)| {
            let v = if k.contains("conv1d.weight") {
                v.swapaxes(1, 2).unwrap()
            } else if norms.iter().any(|n| k.ends_with(n)) {
                v.subtract(&one).unwrap()
            } else {
                v
            };
            let k = match k.strip_prefix("language_model.model") {
                Some(rest) => format!("model.language_model{rest}"),
                None => k.replace("language_model.", ""),
            };
            (k, v)
        })
        .collect();
    // Multi-token prediction and vision tensors the engine does not run.
    let extra = mlx::zeros(&[4, 4], mlx::Dtype::F32).unwrap();
    for key in [
        "mtp.fc.weight",
        "model.visual.blocks.0.attn.qkv.weight",
        "vision_tower.x",
    ] {
        ckpt.arrays.insert(key.into(), extra.clone());
    }
    let model = ckpt.load().unwrap();
    let got = logits(&model);
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-5, "logits differ by {worst}");
}

#[test]
fn a_bad_hybrid_checkpoint_fails_naming_the_tensor_or_key() {
    let name = "qwen3_5_f32_interval4_nested";
    let layer0 = "language_model.model.layers.0.linear_attn";
    let expect = |ckpt: &Checkpoint, what: &str| {
        let err = ckpt.load().err().unwrap();
        assert!(err.contains(what), "{err:?} does not name {what:?}");
    };
    let mut ckpt = Checkpoint::read(name);
    ckpt.arrays.remove(&format!("{layer0}.in_proj_z.weight"));
    expect(&ckpt, &format!("missing tensor {layer0}.in_proj_z.weight"));

    let mut ckpt = Checkpoint::read(name);
    let wrong = mlx::zeros(&[5], mlx::Dtype::F32).unwrap();
    ckpt.arrays.insert(format!("{layer0}.A_log"), wrong);
    expect(
        &ckpt,
        &format!("tensor {layer0}.A_log has shape [5], expected [4]"),
    );

    // A shared block's tensor of the wrong shape, before anything runs.
    let mut ckpt = Checkpoint::read(name);
    let up = "language_model.model.layers.1.mlp.up_proj";
    let wrong = mlx::zeros(&[96, 64], mlx::Dtype::F32).unwrap();
    ckpt.arrays.insert(format!("{up}.weight"), wrong);
    expect(
        &ckpt,
        &format!("tensor {up}.weight has shape [96, 64], expected [128, 64]"),
    );

    let mut ckpt = Checkpoint::read(name);
    ckpt.config["text_config"]["num_experts"] = 4.into();
    expect(&ckpt, "num_experts");

    let mut ckpt = Checkpoint::read("qwen3_5_q4_g32_interval2");
    ckpt.config["quantization"]["mode"] = "int3".into();
    expect(&ckpt, "quantization mode \"int3\" is not supported");
    // An affine checkpoint declared mxfp4: its biases are left over.
    ckpt.config["quantization"]["mode"] = "mxfp4".into();
    expect(
        &ckpt,
        "unexpected tensors: language_model.model.embed_tokens.biases",
    );

    let mut ckpt = Checkpoint::read(name);
    ckpt.config["model_type"] = "qwen9".into();
    ckpt.config["text_config"]["model_type"] = "qwen9_text".into();
    expect(
        &ckpt,
        "model_type \"qwen9\" (text_config.model_type \"qwen9_text\")",
    );
}
