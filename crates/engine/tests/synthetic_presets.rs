//! The synthetic Gemma 3 and gpt-oss shapes are checkpoints mlx-lm reads as
//! the engine does: the tiny presets saved (`mlxd synth` writes them the
//! same way), loaded back through the strict loader, and run by mlx-lm
//! give the engine's logits. So the GPU comparisons on the real-sized
//! presets measure the same model in both.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use engine::Model;
use engine::model::synthetic::Preset;
use mlx::Array;

const PROMPT: [u32; 12] = [1, 17, 200, 33, 4, 91, 250, 7, 64, 128, 3, 255];

#[test]
fn tiny_gemma3_and_gpt_oss_presets_run_as_under_mlx_lm() {
    for name in ["tiny-gemma3-f32", "tiny-gpt-oss-mxfp4"] {
        let dir = tempfile::tempdir().unwrap();
        Preset::find(name).unwrap().save(dir.path(), 11).unwrap();
        let model = Model::load_dir(dir.path()).unwrap();
        let ids = Array::from_slice(&PROMPT, &[1, PROMPT.len() as i32]).unwrap();
        let got: Vec<f32> = model
            .forward(&ids, &mut model.new_cache())
            .unwrap()
            .to_vec()
            .unwrap();
        let out_path = dir.path().join("logits.safetensors");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mlx_lm_logits.py");
        let ids: Vec<String> = PROMPT.iter().map(u32::to_string).collect();
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
        let want: Vec<f32> = mlx::io::load_safetensors(&out_path).unwrap().arrays["logits"]
            .to_vec()
            .unwrap();
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst <= 1e-4 * scale.max(1.0),
            "{name}: logits differ by {worst}"
        );
    }
}
