//! GGUF files of random but valid quantized blocks (every K-quant and legacy
//! type the engine converts), written by gguf-py (`tests/data/gguf_kquant.py`)
//! with gguf-py's own dequantization as the reference: each converted
//! tensor's MLX dequantization equals it exactly (Q8_K to f32 rounding;
//! Q2_K, Q3_K and Q6_K within half a step of the 4, 5 and 8 bits they are
//! re-quantized to), and tiny Llama models of mixed types (as llama.cpp's
//! Q4_K_M and Q3_K_M lay them out) load and generate, with logits equal to
//! the same model with the dequantized (and re-quantized) weights in f32,
//! and to mlx-lm's on the converted checkpoint
//! (`tests/data/mlx_lm_logits.py`).

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use engine::generate::{GenerateOptions, Generator};
use engine::model::gguf;
use engine::sampler::{Sampler, SamplingParams};
use engine::{GgufFile, Model};
use mlx::{Array, Dtype, QuantMode, QuantizedWeight};
use serde_json::Value;

/// The files the script writes, once per test binary.
fn data() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gguf_kquant.py");
        let out = Command::new(common::mlx_lm::python())
            .arg(&script)
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} failed (needs gguf-py: `scripts/setup.sh test`):\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
    .path()
}

fn file(name: &str) -> PathBuf {
    data().join(name)
}

fn values(a: &Array) -> Vec<f32> {
    a.astype(Dtype::F32).unwrap().to_vec().unwrap()
}

#[test]
fn converted_tensors_dequantize_to_gguf_py_values() {
    let path = file("tensors.gguf");
    let parsed = GgufFile::open(&path).unwrap();
    let mut got = engine::gguf_quant::read_tensors(&path, &parsed).unwrap();
    let want = mlx::io::load_safetensors(file("tensors.safetensors"))
        .unwrap()
        .arrays;
    assert_eq!(want.len(), 13);
    for (name, reference) in &want {
        let ty = name.split('.').nth(1).unwrap();
        let reference = values(reference);
        if let Some(dtype) = match ty {
            "F16" => Some(Dtype::F16),
            "BF16" => Some(Dtype::Bf16),
            _ => None,
        } {
            let a = got.remove(name.as_str()).unwrap();
            assert_eq!((a.dtype(), a.shape()), (dtype, vec![2, 64]), "{name}");
            assert!(values(&a) == reference, "{name}");
            continue;
        }
        let prefix = name.strip_suffix(".weight").unwrap();
        let requantized = engine::gguf_quant::REQUANTIZED_TYPES
            .iter()
            .find(|(t, _)| *t == ty)
            .map(|(_, bits)| *bits as i32);
        let bits = match ty {
            "Q4_0" | "Q4_1" | "Q4_K" => 4,
            "Q5_0" | "Q5_1" | "Q5_K" => 5,
            _ => requantized.unwrap_or(8),
        };
        let q = QuantizedWeight {
            weight: got.remove(name.as_str()).unwrap(),
            scales: got.remove(&format!("{prefix}.scales")).unwrap(),
            biases: Some(got.remove(&format!("{prefix}.biases")).unwrap()),
            group_size: 32,
            bits,
            mode: QuantMode::Affine,
        };
        assert_eq!(q.weight.shape(), vec![3, 512 * bits / 32], "{name}");
        assert_eq!(q.scales.shape(), vec![3, 16], "{name}");
        assert_eq!(q.scales.dtype(), Dtype::F32, "{name}");
        assert_eq!(
            q.biases.as_ref().map(Array::dtype),
            Some(Dtype::F32),
            "{name}"
        );
        let mine = values(&q.dequantize().unwrap());
        if let Some(bits) = requantized {
            // Within half a step of each group's range over 2^bits - 1
            // (plus float rounding).
            let levels = ((1u32 << bits) - 1) as f32;
            let mut moved = false;
            for (g, (a, b)) in mine.chunks(32).zip(reference.chunks(32)).enumerate() {
                let lo = b.iter().copied().fold(f32::INFINITY, f32::min);
                let hi = b.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let bound = (hi - lo) / (2.0 * levels) * (1.0 + 1e-4) + 1e-7;
                let err = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                assert!(err <= bound, "{name} group {g}: {err:e} > {bound:e}");
                moved |= err > 0.0;
            }
            assert!(moved, "{name} is exact?");
        } else if ty == "Q8_K" {
            // `d·(q + 128) − 128·d` against ggml's `d·q`, both in f32.
            for (i, (a, b)) in mine.iter().zip(&reference).enumerate() {
                let ulps = (a - b).abs() / (f32::EPSILON * 256.0 * b.abs().max(1e-3));
                assert!(ulps <= 1.0, "{name} weight {i}: {a} against {b}");
            }
            assert_eq!(mine.len(), reference.len(), "{name}");
        } else {
            let differ = mine.iter().zip(&reference).position(|(a, b)| a != b);
            assert_eq!(mine.len(), reference.len(), "{name}");
            assert!(
                differ.is_none(),
                "{name}: weight {differ:?} is {:?}, gguf-py says {:?}",
                differ.map(|i| mine[i]),
                differ.map(|i| reference[i])
            );
        }
    }
    assert!(got.is_empty(), "{:?}", got.keys().collect::<Vec<_>>());
}

fn rel_error(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    diff / scale
}

fn load(name: &str) -> (Model, serde_json::Value) {
    let g = gguf::load(&file(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    // The memory estimate from the tensor table is what loading takes.
    assert_eq!(
        gguf::loaded_bytes(&g.file),
        g.weights.nbytes() as u64,
        "{name}"
    );
    (
        Model::from_weights(g.config, g.weights).unwrap(),
        g.config_json,
    )
}

const PROMPT: [u32; 12] = [1, 17, 200, 33, 4, 91, 250, 7, 64, 128, 3, 255];

fn logits(model: &Model) -> Vec<f32> {
    let prompt = Array::from_slice(&PROMPT, &[1, PROMPT.len() as i32]).unwrap();
    let mut cache = model.new_cache();
    model
        .forward(&prompt, &mut cache)
        .unwrap()
        .to_vec()
        .unwrap()
}

fn greedy(model: &Model, n: usize) -> Vec<u32> {
    let params = SamplingParams {
        temperature: 0.0,
        ..SamplingParams::default()
    };
    let sampler = Sampler::new(params, model.config.vocab_size as usize, &PROMPT).unwrap();
    let options = GenerateOptions {
        max_tokens: n,
        ..GenerateOptions::default()
    };
    Generator::new(model, &PROMPT, sampler, options)
        .unwrap()
        .map(|t| t.unwrap().token)
        .collect()
}

#[test]
fn a_model_of_exactly_converted_types_matches_its_f32_weights() {
    let (model, config) = load("exact.gguf");
    let (reference, _) = load("exact_f32.gguf");
    // Per-layer widths from the tensors: 4 bits by default (8 tensors),
    // the 5- (6) and 8-bit (2) layers named.
    let q = &config["quantization"];
    assert_eq!((&q["bits"], &q["group_size"]), (&4.into(), &32.into()));
    assert_eq!(q["model.embed_tokens"]["bits"], 8);
    assert_eq!(q["lm_head"]["bits"], 5);
    assert_eq!(q["model.layers.0.self_attn.k_proj"]["bits"], 5);
    assert_eq!(q["model.layers.1.mlp.gate_proj"]["bits"], 8);
    assert!(q.get("model.layers.0.self_attn.q_proj").is_none());
    // The same weights: only the order of float sums may differ.
    let err = rel_error(&logits(&model), &logits(&reference));
    assert!(err < 1e-4, "logits differ by {err:e} (relative)");
    assert_eq!(greedy(&model, 16), greedy(&reference, 16));
}

#[test]
fn a_q4_k_m_model_loads_and_matches_its_f32_weights_within_the_q6_k_error() {
    let (model, config) = load("q4_k_m.gguf");
    let q = &config["quantization"];
    assert_eq!(q["bits"], 4);
    assert_eq!(q["lm_head"]["bits"], 8);
    assert_eq!(q["model.layers.0.mlp.down_proj"]["bits"], 8);
    assert!(q.get("model.layers.1.mlp.down_proj").is_none());
    let mine = logits(&model);
    // Against gguf-py's values with the Q6_K tensors (output, attn_v, one
    // ffn_down) re-quantized by the documented rule: the same weights.
    let (requantized, _) = load("q4_k_m_requantized.gguf");
    let err = rel_error(&mine, &logits(&requantized));
    assert!(err < 1e-4, "logits differ by {err:e} (relative)");
    // Against gguf-py's values themselves: the re-quantized weights move by
    // 0.41% of their RMS (at most an eighth of a Q6_K step each). This
    // random model amplifies that about tenfold (its Q4_K weights have
    // large group means, so its attention is peaked): 0.7%, 8.6% and 10.5%
    // of the largest logit over three draws of the blocks (this one:
    // 10.5%, 4.2% in RMS). The bound is 20%; a wrong layout or a dropped
    // group moves logits by their own size.
    let (reference, _) = load("q4_k_m_f32.gguf");
    let want = logits(&reference);
    let err = rel_error(&mine, &want);
    assert!(
        err > 0.0 && err < 0.2,
        "logits differ by {err:e} (relative)"
    );
    assert_eq!(greedy(&model, 16), greedy(&requantized, 16));
}

#[test]
fn a_q3_k_m_model_loads_and_matches_its_re_quantized_weights() {
    let (model, config) = load("q3_k_m.gguf");
    // Q3_K at 5 bits by default, Q2_K at 4, Q4_K/Q5_K as they are, the
    // Q6_K head at 8.
    let q = &config["quantization"];
    assert_eq!(q["bits"], 5);
    assert_eq!(q["lm_head"]["bits"], 8);
    assert_eq!(q["model.layers.1.mlp.gate_proj"]["bits"], 4);
    assert!(
        q.get("model.layers.0.self_attn.v_proj").is_none(),
        "Q5_K: the default 5"
    );
    assert_eq!(q["model.layers.1.self_attn.v_proj"]["bits"], 4);
    let mine = logits(&model);
    let (requantized, _) = load("q3_k_m_requantized.gguf");
    let err = rel_error(&mine, &logits(&requantized));
    assert!(err < 1e-4, "logits differ by {err:e} (relative)");
    assert_eq!(greedy(&model, 16), greedy(&requantized, 16));
    // Against gguf-py's values themselves: moved, not scrambled. Eleven of
    // the fifteen matrices are re-quantized (most to 5 bits, within 0.23 of
    // a Q3_K step per weight); this random model amplifies that as it does
    // for Q4_K_M (above): 21.8% of the largest logit for this draw. Other
    // weights altogether (the Q4_K_M model's) move them by 128%; a wrong
    // layout or a dropped group scrambles as much.
    let (reference, _) = load("q3_k_m_f32.gguf");
    let err = rel_error(&mine, &logits(&reference));
    assert!(
        err > 0.0 && err < 0.5,
        "logits differ by {err:e} (relative)"
    );
}

#[test]
fn a_truncated_k_quant_file_is_an_error_naming_the_tensor() {
    let bytes = std::fs::read(file("q4_k_m.gguf")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let err = gguf::load(&cut).err().unwrap().to_string();
    assert!(
        err.contains("GGUF tensor") && err.contains("past the end of the file"),
        "{err}"
    );
}

/// mlx-lm's logits for [`PROMPT`] on the GGUF `name` written as an MLX
/// checkpoint (what `mlxd convert` writes: weights and config; the files
/// have no tokenizer), its config changed by `edit`; and the engine's on
/// the GGUF.
fn engine_and_mlx_lm_logits(name: &str, edit: impl Fn(&mut Value)) -> (Vec<f32>, Vec<f32>) {
    let g = gguf::load(&file(&format!("{name}.gguf"))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    mlx::io::save_safetensors(
        dir.path().join("model.safetensors"),
        g.weights.iter(),
        [("format", "mlx")],
    )
    .unwrap();
    let mut config = g.config_json.clone();
    edit(&mut config);
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let ids: Vec<String> = PROMPT.iter().map(u32::to_string).collect();
    let out_path = dir.path().join("logits.safetensors");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mlx_lm_logits.py");
    let out = Command::new(common::mlx_lm::python())
        .arg(&script)
        .arg(dir.path())
        .arg(ids.join(","))
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = mlx::io::load_safetensors(&out_path).unwrap().arrays;
    let want: Vec<f32> = want["logits"].to_vec().unwrap();
    let model = Model::from_weights(g.config, g.weights).unwrap();
    (logits(&model), want)
}

#[test]
fn the_models_as_mlx_checkpoints_give_the_same_logits_under_mlx_lm() {
    // mlx-lm reads the 4-, 5- and 8-bit layers with f32 scales.
    for name in ["q4_k_m", "q3_k_m", "exact"] {
        let (got, want) = engine_and_mlx_lm_logits(name, |_| {});
        let err = rel_error(&got, &want);
        assert!(err < 1e-4, "{name}: logits differ by {err:e} (relative)");
    }
}

#[test]
fn llama_3_1_rope_freqs_rotate_as_mlx_lm_llama3_scaling() {
    // The factors llama.cpp's converter stores, against the scaling they
    // come from, as the Hugging Face config gives it to mlx-lm.
    let (got, want) = engine_and_mlx_lm_logits("llama31", |config| {
        assert_eq!(
            config["rope_scaling"]["rope_type"],
            engine::model::gguf::GGUF_FREQ_FACTORS
        );
        config["rope_scaling"] = serde_json::json!({
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64
        });
    });
    let err = rel_error(&got, &want);
    assert!(err < 1e-4, "logits differ by {err:e} (relative)");
    // Without the factors the model rotates otherwise.
    let (_, plain) = engine_and_mlx_lm_logits("llama31", |config| {
        config.as_object_mut().unwrap().remove("rope_scaling");
    });
    assert!(rel_error(&got, &plain) > 1e-3);
}

/// A GGUF of one tensor `name` of ggml type `ty` and `shape` (innermost
/// first), followed by `data_len` zero bytes of data.
fn one_tensor_gguf(path: &Path, name: &str, ty: u32, shape: &[u64], data_len: usize) {
    let mut bytes = Vec::new();
    bytes.extend(b"GGUF");
    bytes.extend(3u32.to_le_bytes());
    bytes.extend(1u64.to_le_bytes()); // tensors
    bytes.extend(0u64.to_le_bytes()); // metadata entries
    bytes.extend((name.len() as u64).to_le_bytes());
    bytes.extend(name.as_bytes());
    bytes.extend((shape.len() as u32).to_le_bytes());
    for d in shape {
        bytes.extend(d.to_le_bytes());
    }
    bytes.extend(ty.to_le_bytes());
    bytes.extend(0u64.to_le_bytes()); // offset
    while bytes.len() % 32 != 0 {
        bytes.push(0);
    }
    bytes.extend(vec![0u8; data_len]);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn k_quant_rows_that_are_not_whole_super_blocks_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short_rows.gguf");
    // Q4_K (12) rows of 128 weights: half a super-block each.
    one_tensor_gguf(&path, "blk.0.ffn_up.weight", 12, &[128, 4], 4 * 144);
    let parsed = GgufFile::open(&path).unwrap();
    let err = engine::gguf_quant::read_tensors(&path, &parsed)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("blk.0.ffn_up.weight") && err.contains("not whole blocks of 256"),
        "{err}"
    );
    // Whole blocks read; all-zero blocks are zero weights.
    one_tensor_gguf(&path, "blk.0.ffn_up.weight", 12, &[256, 2], 2 * 144);
    let parsed = GgufFile::open(&path).unwrap();
    let got = engine::gguf_quant::read_tensors(&path, &parsed).unwrap();
    assert_eq!(got["blk.0.ffn_up.weight"].shape(), vec![2, 32]);
    assert_eq!(values(&got["blk.0.ffn_up.scales"]), vec![0.0; 16]);
}
