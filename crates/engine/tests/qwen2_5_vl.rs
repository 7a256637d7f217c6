//! Qwen2.5-VL against mlx-vlm 0.7.10 on a tiny random checkpoint
//! (`tests/data/mlx_vlm_qwen2_5_vl.py`): the preprocessing (pixel values
//! within 1e-5, grids equal) of PNGs that round, shrink, grow and stretch,
//! the vision tower's embeddings, and the logits (within 1e-4 relative) and
//! 24 greedy tokens of prompts with one image, two images and none; the
//! same weights in mlx-vlm's own layout, and quantized by mlx-vlm; and the decoder's refusals of
//! corrupt, oversized and unsupported images.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use engine::Model;
use engine::vision::{
    DEFAULT_MAX_DECODED_PIXELS, ImageInput, ImageProcessorConfig, decode_image, prepare_prompt,
    preprocess,
};
use mlx::Array;

/// The checkpoint, images and outputs the script writes, once per binary
/// (`$MLXD_MLX_VLM_REFERENCE`: a folder it wrote before).
fn dir() -> &'static Path {
    static GIVEN: OnceLock<Option<PathBuf>> = OnceLock::new();
    if let Some(dir) =
        GIVEN.get_or_init(|| std::env::var_os("MLXD_MLX_VLM_REFERENCE").map(PathBuf::from))
    {
        return dir;
    }
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| common::mlx_lm::run_script("mlx_vlm_qwen2_5_vl.py"))
        .path()
}

fn reference() -> HashMap<String, Array> {
    mlx::io::load_safetensors(dir().join("reference.safetensors"))
        .unwrap()
        .arrays
}

#[derive(serde::Deserialize)]
struct Case {
    images: Vec<String>,
    prompt: Vec<u32>,
    greedy: Vec<u32>,
}

#[derive(serde::Deserialize)]
struct Cases {
    cases: HashMap<String, Case>,
    image_token_id: u32,
}

fn cases() -> Cases {
    let text = std::fs::read_to_string(dir().join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn image(name: &str, ext: &str) -> ImageInput {
    let bytes = std::fs::read(dir().join("images").join(format!("{name}.{ext}"))).unwrap();
    let config = ImageProcessorConfig::load_dir(&dir().join("model")).unwrap();
    let rgb = decode_image(&bytes, DEFAULT_MAX_DECODED_PIXELS).unwrap();
    preprocess(&rgb, &config).unwrap()
}

fn values(a: &Array) -> Vec<f32> {
    a.astype(mlx::Dtype::F32).unwrap().to_vec().unwrap()
}

fn max_abs(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
}

fn rel_error(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    max_abs(got, want) / scale
}

fn model() -> Model {
    Model::load_dir(&dir().join("model")).unwrap()
}

const IMAGES: [&str; 8] = [
    "gradient", "noise", "tiny", "wide", "exact", "rgba", "grey", "rotated",
];

#[test]
fn preprocessing_matches_mlx_vlm() {
    let reference = reference();
    for name in IMAGES {
        let got = image(name, "png");
        let want_grid: Vec<i32> = reference[&format!("grid.{name}")].to_vec().unwrap();
        let grid: Vec<i32> = got.grid_thw.iter().map(|&v| v as i32).collect();
        assert_eq!(grid, want_grid, "{name}");
        let want = values(&reference[&format!("pixel_values.{name}")]);
        let err = max_abs(&got.pixel_values, &want);
        assert!(err <= 1e-5, "{name}: pixel values differ by {err:e}");
    }
}

#[test]
fn lossless_webp_decodes_as_png_and_jpeg_nearly() {
    let png = image("gradient", "png");
    assert_eq!(image("gradient", "webp"), png);
    let jpeg = image("gradient", "jpg");
    assert_eq!(jpeg.grid_thw, png.grid_thw);
    // A lossy copy of a gradient: close, not equal.
    let mean = jpeg
        .pixel_values
        .iter()
        .zip(&png.pixel_values)
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / png.pixel_values.len() as f32;
    assert!(mean < 0.1, "mean difference {mean}");
}

#[test]
fn vision_embeddings_match_mlx_vlm() {
    let (model, reference) = (model(), reference());
    for name in IMAGES {
        let got = model.encode_images(&[image(name, "png")]).unwrap();
        let want = &reference[&format!("vision.{name}")];
        assert_eq!(got.shape(), want.shape(), "{name}");
        let err = rel_error(&values(&got), &values(want));
        assert!(
            err < 1e-4,
            "{name}: embeddings differ by {err:e} (relative)"
        );
    }
    // Two images in one call: each windowed and attended on its own.
    let got = model
        .encode_images(&[image("gradient", "png"), image("wide", "png")])
        .unwrap();
    let want = &reference["vision.pair"];
    assert_eq!(got.shape(), want.shape());
    let err = rel_error(&values(&got), &values(want));
    assert!(err < 1e-4, "pair: embeddings differ by {err:e} (relative)");
}

/// The prompt's logits and greedy tokens: prefilled with its images, then
/// decoded one token a step with the shifted ordinary path.
fn run(model: &Model, case: &Case) -> (Array, Vec<u32>) {
    let images: Vec<ImageInput> = case.images.iter().map(|n| image(n, "png")).collect();
    let mut caches = model.new_cache();
    let prefill = model
        .prefill_images(&case.prompt, &images, &mut caches)
        .unwrap();
    let l = case.prompt.len() as i32;
    let mut token = prefill
        .logits
        .slice_axis(1, l - 1, l)
        .unwrap()
        .argmax(-1, false)
        .unwrap()
        .to_vec::<u32>()
        .unwrap()[0];
    let mut greedy = Vec::new();
    for _ in 0..case.greedy.len() {
        greedy.push(token);
        let step = Array::from_slice(&[token], &[1, 1]).unwrap();
        let logits = model
            .forward_shifted(&step, &mut caches, prefill.rope_delta)
            .unwrap();
        token = logits.argmax(-1, false).unwrap().to_vec::<u32>().unwrap()[0];
    }
    (prefill.logits, greedy)
}

#[test]
fn prompts_with_images_match_mlx_vlm() {
    let (cases, model, reference) = (cases(), model(), reference());
    for name in ["one_image", "two_images", "text_only"] {
        let case = &cases.cases[name];
        let (logits, greedy) = run(&model, case);
        let want = &reference[&format!("logits.{name}")];
        assert_eq!(logits.shape(), want.shape(), "{name}");
        let err = rel_error(&values(&logits), &values(want));
        assert!(err < 1e-4, "{name}: logits differ by {err:e} (relative)");
        assert_eq!(greedy, case.greedy, "{name}: greedy tokens");
    }
}

#[test]
fn an_mlx_vlm_checkpoint_loads_the_same_model() {
    let cases = cases();
    let case = &cases.cases["one_image"];
    let (want, greedy) = run(&model(), case);
    let mlx_layout = Model::load_dir(&dir().join("model_mlx")).unwrap();
    let (got, got_greedy) = run(&mlx_layout, case);
    assert_eq!(values(&got), values(&want));
    assert_eq!(got_greedy, greedy);
}

#[test]
fn an_mlx_vlm_quantized_checkpoint_matches_mlx_vlm() {
    let (cases, reference) = (cases(), reference());
    let case = &cases.cases["one_image_q4"];
    let model = Model::load_dir(&dir().join("model_q4")).unwrap();
    let (logits, greedy) = run(&model, case);
    let err = rel_error(&values(&logits), &values(&reference["logits.one_image_q4"]));
    assert!(err < 1e-4, "logits differ by {err:e} (relative)");
    assert_eq!(greedy, case.greedy);
}

#[test]
fn text_only_prompts_take_the_ordinary_path() {
    let cases = cases();
    let case = &cases.cases["text_only"];
    let model = model();
    let mut caches = model.new_cache();
    let ids = Array::from_slice(&case.prompt, &[1, case.prompt.len() as i32]).unwrap();
    let logits = model.forward(&ids, &mut caches).unwrap();
    let err = rel_error(&values(&logits), &values(&reference()["logits.text_only"]));
    assert!(err < 1e-4, "logits differ by {err:e} (relative)");
}

#[test]
fn text_only_prompts_batch_and_hit_the_prompt_cache_as_a_text_model_does() {
    let model = model();
    common::batching::assert_greedy_batched_equals_alone("qwen2_5_vl", &model);
    common::batching::assert_prompt_cache_hit_equals_cold_prefill("qwen2_5_vl", &model);
}

#[test]
fn a_prompt_with_placeholders_and_image_files_is_prepared_as_the_processor_does() {
    let cases = cases();
    let case = &cases.cases["two_images"];
    let image_token = cases.image_token_id;
    // The prompt with one placeholder per image.
    let mut short = Vec::new();
    for &t in &case.prompt {
        if t != image_token || short.last() != Some(&image_token) {
            short.push(t);
        }
    }
    let files: Vec<Vec<u8>> = case
        .images
        .iter()
        .map(|n| std::fs::read(dir().join(format!("images/{n}.png"))).unwrap())
        .collect();
    let bytes: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
    let config = ImageProcessorConfig::load_dir(&dir().join("model")).unwrap();
    let prepared = prepare_prompt(
        &short,
        &bytes,
        &config,
        image_token,
        DEFAULT_MAX_DECODED_PIXELS,
    )
    .unwrap();
    assert_eq!(prepared.tokens, case.prompt);
    let want: Vec<ImageInput> = case.images.iter().map(|n| image(n, "png")).collect();
    assert_eq!(prepared.images, want);
    // One placeholder for two images.
    let one = [short[0], image_token];
    assert!(prepare_prompt(&one, &bytes, &config, image_token, 1 << 20).is_err());
}

#[test]
fn bad_images_are_refused_with_the_reason() {
    let png = std::fs::read(dir().join("images/noise.png")).unwrap();
    let err = |bytes: &[u8], limit| decode_image(bytes, limit).unwrap_err().to_string();
    // Cut short: the header reads, the pixel data does not.
    let e = err(&png[..png.len() / 2], DEFAULT_MAX_DECODED_PIXELS);
    assert!(e.contains("cannot decode"), "{e}");
    // More pixels than allowed: refused from the header alone.
    let e = err(&png, 10_000);
    assert!(e.contains("150×100") && e.contains("limit of 10000"), "{e}");
    let e = err(&png[..64], 10_000);
    assert!(e.contains("limit"), "{e}");
    let e = err(
        b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
        DEFAULT_MAX_DECODED_PIXELS,
    );
    assert!(e.contains("Gif") && e.contains("not supported"), "{e}");
    let e = err(b"plain text, no image", DEFAULT_MAX_DECODED_PIXELS);
    assert!(e.contains("unknown format"), "{e}");
}

#[test]
fn images_and_image_tokens_that_disagree_are_refused() {
    let model = model();
    assert!(model.vision().is_some());
    let cases = cases();
    let case = &cases.cases["one_image"];
    // Images without their tokens, and tokens without their images.
    let mut caches = model.new_cache();
    let err = model
        .prefill_images(&[1, 2, 3], &[image("noise", "png")], &mut caches)
        .err()
        .unwrap();
    assert!(err.to_string().contains("images"), "{err}");
    let err = model
        .prefill_images(&case.prompt, &[], &mut caches)
        .err()
        .unwrap();
    assert!(err.to_string().contains("image"), "{err}");
}
