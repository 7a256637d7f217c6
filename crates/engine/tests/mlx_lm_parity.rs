//! The engine against mlx-lm on tiny random checkpoints that mlx-lm itself
//! writes (`tests/data/mlx_lm_reference.py`): every family, f32 and 4/8-bit
//! quantized (with a per-layer override), tied and untied embeddings, Llama 3
//! RoPE scaling, the Gated DeltaNet hybrids (several full-attention
//! intervals, a `text_config`-nested config), and the Mixture-of-Experts
//! families (`qwen3_moe`, `mixtral`: 3 to 7 experts, top-k 1 to 3,
//! `norm_topk_prob` on and off, dense layers by `decoder_sparse_step` and
//! `mlp_only_layers`, 4-bit experts beside an 8-bit router, one tensor per
//! expert as Hugging Face stores them; Qwen3-Next's and Qwen3.5-MoE's
//! sparse layers with their gated shared expert). Same weights, same libmlx: logits of a 64-token prompt
//! within 1e-4 relative, 48 greedy tokens identical, and cached
//! (incremental) decoding equal to the full-sequence forward pass.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;

use common::mlx_lm::reference_dir;
use engine::Model;
use engine::generate::{GenerateOptions, Generator};
use engine::sampler::{Sampler, SamplingParams};
use mlx::Array;

fn variants() -> Vec<String> {
    let text = std::fs::read_to_string(reference_dir().join("variants.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[derive(serde::Deserialize)]
struct Reference {
    prompt: Vec<u32>,
    greedy: Vec<u32>,
}

fn reference(name: &str) -> Reference {
    let text = std::fs::read_to_string(reference_dir().join(name).join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn prompt_array(ids: &[u32]) -> Array {
    Array::from_slice(ids, &[1, ids.len() as i32]).unwrap()
}

fn rel_error(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    diff / scale
}

#[test]
fn logits_match_mlx_lm_for_every_family_and_quantization() {
    let variants = variants();
    // The eighteen dense variants (two Phi-3, two Gemma 3, one with
    // sliding-window layers, one with YaRN, three in the microscaling
    // modes), four Gated
    // DeltaNet hybrids, fifteen Mixture-of-Experts variants (two GLM-4-MoE,
    // two DeepSeek-V3 with latent attention, two gpt-oss, one with mxfp4
    // experts) and four hybrids with experts at least.
    assert!(variants.len() >= 41, "{variants:?}");
    for name in variants {
        let dir = reference_dir().join(&name);
        let model = Model::load_dir(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        let r = reference(&name);
        let mut cache = model.new_cache();
        let logits = model.forward(&prompt_array(&r.prompt), &mut cache).unwrap();
        let want = mlx::io::load_safetensors(dir.join("reference.safetensors")).unwrap();
        let want = &want.arrays["logits"];
        assert_eq!(logits.shape(), want.shape(), "{name}");
        let err = rel_error(&logits.to_vec().unwrap(), &want.to_vec().unwrap());
        assert!(err < 1e-4, "{name}: logits differ by {err:e} (relative)");
    }
}

#[test]
fn greedy_tokens_match_mlx_lm_generate_step() {
    for name in variants() {
        let model = Model::load_dir(&reference_dir().join(&name)).unwrap();
        let r = reference(&name);
        let sampler = Sampler::new(
            SamplingParams {
                temperature: 0.0,
                ..SamplingParams::default()
            },
            model.config.vocab_size as usize,
            &r.prompt,
        )
        .unwrap();
        let options = GenerateOptions {
            max_tokens: r.greedy.len(),
            ..GenerateOptions::default()
        };
        let tokens: Vec<u32> = Generator::new(&model, &r.prompt, sampler, options)
            .unwrap()
            .map(|t| t.unwrap().token)
            .collect();
        assert_eq!(tokens, r.greedy, "{name}");
    }
}

#[test]
fn cached_decoding_equals_the_full_sequence_forward_pass() {
    for name in variants() {
        let model = Model::load_dir(&reference_dir().join(&name)).unwrap();
        let r = reference(&name);
        let ids = &r.prompt[..40];
        let mut cache = model.new_cache();
        let full = model.forward(&prompt_array(ids), &mut cache).unwrap();
        let full: Vec<f32> = full.to_vec().unwrap();
        let vocab = model.config.vocab_size as usize;

        // A 24-token prefill, then one token at a time.
        let mut cache = model.new_cache();
        let mut steps: Vec<f32> = model
            .forward(&prompt_array(&ids[..24]), &mut cache)
            .unwrap()
            .to_vec()
            .unwrap();
        for t in &ids[24..] {
            let step = model.forward(&prompt_array(&[*t]), &mut cache).unwrap();
            steps.extend(step.to_vec::<f32>().unwrap());
        }
        assert_eq!(cache[0].offset(), 40);
        assert_eq!(steps.len(), 40 * vocab);
        let err = rel_error(&steps, &full);
        assert!(err < 1e-4, "{name}: incremental logits differ by {err:e}");
    }
}

#[test]
fn a_missing_or_extra_tensor_is_an_error_naming_it() {
    let src = reference_dir().join("llama_f32_tied");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let mut weights = mlx::io::load_safetensors(src.join("model.safetensors")).unwrap();
    let removed = weights
        .arrays
        .remove("model.layers.1.mlp.up_proj.weight")
        .unwrap();
    let save = |arrays: &std::collections::HashMap<String, Array>| {
        mlx::io::save_safetensors(
            dir.path().join("model.safetensors"),
            arrays.iter().map(|(k, v)| (k.as_str(), v)),
            [("format", "mlx")],
        )
        .unwrap()
    };
    save(&weights.arrays);
    let err = Model::load_dir(dir.path()).err().unwrap().to_string();
    assert!(
        err.contains("missing tensor model.layers.1.mlp.up_proj.weight"),
        "{err}"
    );

    weights
        .arrays
        .insert("model.layers.1.mlp.up_proj.weight".into(), removed);
    let extra = mlx::zeros(&[2], mlx::Dtype::F32).unwrap();
    weights
        .arrays
        .insert("model.layers.9.surprise.weight".into(), extra);
    save(&weights.arrays);
    let err = Model::load_dir(dir.path()).err().unwrap().to_string();
    assert!(
        err.contains("unexpected tensors: model.layers.9.surprise.weight"),
        "{err}"
    );
}

#[test]
fn an_unsupported_model_type_is_refused_by_name() {
    let src = reference_dir().join("llama_f32_tied");
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(src.join("config.json")).unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        config.replace("\"llama\"", "\"gpt2\""),
    )
    .unwrap();
    std::fs::copy(
        src.join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let err = Model::load_dir(dir.path()).err().unwrap().to_string();
    assert!(err.contains("\"gpt2\" is not supported"), "{err}");
}

#[test]
fn a_missing_expert_or_a_wrong_router_is_an_error_naming_its_tensor() {
    let src = reference_dir().join("qwen3_moe_f32_e5_k1_step2_hf");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let mut weights = mlx::io::load_safetensors(src.join("model.safetensors")).unwrap();
    let name = "model.layers.1.mlp.experts.3.up_proj.weight";
    weights.arrays.remove(name).unwrap();
    mlx::io::save_safetensors(
        dir.path().join("model.safetensors"),
        weights.arrays.iter().map(|(k, v)| (k.as_str(), v)),
        [("format", "mlx")],
    )
    .unwrap();
    let err = Model::load_dir(dir.path()).err().unwrap().to_string();
    assert!(err.contains(&format!("missing tensor {name}")), "{err}");

    // A router for another number of experts.
    let src = reference_dir().join("mixtral_f32_e5_k2");
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let mut weights = mlx::io::load_safetensors(src.join("model.safetensors")).unwrap();
    let gate = "model.layers.1.block_sparse_moe.gate.weight";
    let wrong = mlx::zeros(&[4, 64], mlx::Dtype::F32).unwrap();
    weights.arrays.insert(gate.into(), wrong);
    mlx::io::save_safetensors(
        dir.path().join("model.safetensors"),
        weights.arrays.iter().map(|(k, v)| (k.as_str(), v)),
        [("format", "mlx")],
    )
    .unwrap();
    let err = Model::load_dir(dir.path()).err().unwrap().to_string();
    assert!(
        err.contains(&format!("{gate} has shape [4, 64], expected [5, 64]")),
        "{err}"
    );
}

#[test]
fn deepseek_v3_checkpoints_it_cannot_run_are_refused_by_name() {
    // An FP8 block-quantized tensor (DeepSeek's own release) and a
    // quantized kv_b_proj (which would have to be split and requantized).
    let src = reference_dir().join("deepseek_v3_f32_e8_g4_k3_yarn_hf");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let weights = mlx::io::load_safetensors(src.join("model.safetensors")).unwrap();
    let save_with = |name: &str| {
        let mut arrays = weights.arrays.clone();
        arrays.insert(name.into(), mlx::zeros(&[2], mlx::Dtype::F32).unwrap());
        mlx::io::save_safetensors(
            dir.path().join("model.safetensors"),
            arrays.iter().map(|(k, v)| (k.as_str(), v)),
            [("format", "mlx")],
        )
        .unwrap();
        Model::load_dir(dir.path()).err().unwrap().to_string()
    };
    let err = save_with("model.layers.0.mlp.gate_proj.weight_scale_inv");
    assert!(
        err.contains("model.layers.0.mlp.gate_proj.weight_scale_inv") && err.contains("FP8"),
        "{err}"
    );
    let err = save_with("model.layers.1.self_attn.kv_b_proj.scales");
    assert!(
        err.contains("model.layers.1.self_attn.kv_b_proj is quantized"),
        "{err}"
    );
}
