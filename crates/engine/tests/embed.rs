//! Embeddings against mlx-lm: a tiny random Qwen3 checkpoint that mlx-lm
//! writes (`tests/data/mlx_lm_embed_reference.py`), whose inner model's
//! hidden states (after the final norm) mlx-lm pools and normalizes; the
//! engine's [`EmbedJob`] over the same inputs, of lengths 1 to 700 (the
//! longest spans two chunks) in one job, gives the same vectors within
//! 1e-5 for last-token, mean and first-token pooling, normalized or not.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use engine::Model;
use engine::embed::{EMBED_CHUNK, EmbedJob, Pooling};

#[derive(serde::Deserialize)]
struct Reference {
    inputs: Vec<Vec<u32>>,
    last: Vec<Vec<f64>>,
    mean: Vec<Vec<f64>>,
    cls: Vec<Vec<f64>>,
    last_raw: Vec<Vec<f64>>,
}

fn reference(dir: &Path) -> Reference {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mlx_lm_embed_reference.py");
    let out = Command::new(common::mlx_lm::python())
        .arg(&script)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap()
}

fn assert_close(got: &[Vec<f32>], want: &[Vec<f64>], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what} input {i}");
        let worst = g
            .iter()
            .zip(w)
            .map(|(a, b)| (f64::from(*a) - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-5, "{what} input {i}: off by {worst}");
    }
}

#[test]
fn pooled_hidden_states_equal_mlx_lm_for_inputs_of_several_lengths_batched() {
    let dir = tempfile::tempdir().unwrap();
    let want = reference(dir.path());
    assert!(want.inputs.iter().any(|i| i.len() > EMBED_CHUNK));
    let model = Model::load_dir(dir.path()).unwrap();
    let run = |pooling, normalize| {
        EmbedJob::new(want.inputs.clone(), pooling, normalize)
            .unwrap()
            .run(&model)
            .unwrap()
    };
    assert_close(&run(Pooling::Last, true), &want.last, "last");
    assert_close(&run(Pooling::Mean, true), &want.mean, "mean");
    assert_close(&run(Pooling::Cls, true), &want.cls, "cls");
    assert_close(&run(Pooling::Last, false), &want.last_raw, "last, raw");
    // Different poolings give different vectors (the comparison can fail).
    assert!(want.last[2] != want.mean[2] && want.mean[2] != want.cls[2]);
}

#[test]
fn a_job_advances_one_chunk_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let want = reference(dir.path());
    let model = Model::load_dir(dir.path()).unwrap();
    let mut job = EmbedJob::new(want.inputs.clone(), Pooling::Mean, true).unwrap();
    let total = job.total_tokens();
    let (mut steps, mut tokens, mut done) = (0, 0, Vec::new());
    while !job.is_done() {
        let advanced = job.advance(&model).unwrap();
        assert!(advanced.tokens <= EMBED_CHUNK);
        tokens += advanced.tokens;
        done.extend(advanced.vector.map(|(i, _)| i));
        steps += 1;
    }
    assert_eq!((tokens, done, steps), (total, vec![0, 1, 2, 3], 5));
}
