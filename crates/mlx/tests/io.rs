//! Files written by the Python `mlx` package load with the same names,
//! dtypes, shapes and values; files written here load back; bad files are
//! errors.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use mlx::io::{GgufValue, load_gguf, load_safetensors, save_safetensors};
use mlx::{Array, Dtype, MlxError};

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("MLXD_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/setup.sh (or set MLXD_PYTHON to a Python with mlx==0.32.4)",
        venv.display()
    );
    venv
}

/// Runs the reference writer into a fresh folder.
fn reference_files() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/write_reference_files.py");
    let status = Command::new(python())
        .arg(&script)
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "{} failed", script.display());
    dir
}

#[derive(serde::Deserialize)]
struct Described {
    dtype: String,
    shape: Vec<i32>,
    values: Vec<f64>,
}

fn described(dir: &Path) -> HashMap<String, Described> {
    serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap()
}

fn values_as_f32(a: &Array) -> Vec<f32> {
    f32s(&a.astype(Dtype::F32).unwrap())
}

#[test]
fn safetensors_written_by_python_mlx_load_with_the_same_contents() {
    let dir = reference_files();
    let want = described(dir.path());
    let file = load_safetensors(dir.path().join("reference.safetensors")).unwrap();
    let mut names: Vec<_> = file.arrays.keys().cloned().collect();
    names.sort();
    let mut want_names: Vec<_> = want.keys().cloned().collect();
    want_names.sort();
    assert_eq!(names, want_names);
    for (name, d) in &want {
        let a = &file.arrays[name];
        assert_eq!(format!("{:?}", a.dtype()), d.dtype, "{name}");
        assert_eq!(a.shape(), d.shape, "{name}");
        let got = values_as_f32(a);
        let exp: Vec<f32> = d.values.iter().map(|v| *v as f32).collect();
        assert_eq!(got, exp, "{name}");
    }
    assert_eq!(file.metadata["format"], "mlx");
    assert_eq!(file.metadata["written_by"], "write_reference_files.py");
}

#[test]
fn gguf_written_by_python_mlx_loads_arrays_and_typed_metadata() {
    let dir = reference_files();
    let want = described(dir.path());
    let file = load_gguf(dir.path().join("reference.gguf")).unwrap();
    assert_eq!(file.arrays.len(), 3);
    for (name, a) in &file.arrays {
        assert_eq!(a.shape(), want[name].shape, "{name}");
        let exp: Vec<f32> = want[name].values.iter().map(|v| *v as f32).collect();
        assert_eq!(values_as_f32(a), exp, "{name}");
    }
    match &file.metadata["general.architecture"] {
        GgufValue::String(s) => assert_eq!(s, "llama"),
        other => panic!("architecture is {other:?}"),
    }
    match &file.metadata["tokenizer.ggml.tokens"] {
        GgufValue::Strings(t) => assert_eq!(t, &["<s>", "hello", "wörld", "🙂"]),
        other => panic!("tokens are {other:?}"),
    }
    match &file.metadata["llama.context_length"] {
        GgufValue::Array(a) => assert_eq!(a.item::<u32>().unwrap(), 2048),
        other => panic!("context length is {other:?}"),
    }
}

#[test]
fn saved_safetensors_load_back_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("roundtrip.safetensors");
    let (w, wv) = random_array(&[4, 3], 21);
    let ids = Array::from_slice(&[5u32, 6, 7], &[3]).unwrap();
    let half = w.astype(Dtype::Bf16).unwrap();
    save_safetensors(
        &path,
        [("w", &w), ("ids", &ids), ("half", &half)],
        [("format", "mlx")],
    )
    .unwrap();
    let back = load_safetensors(&path).unwrap();
    assert_eq!(f32s(&back.arrays["w"]), wv);
    assert_eq!(back.arrays["ids"].to_vec::<u32>().unwrap(), [5, 6, 7]);
    assert_eq!(back.arrays["half"].dtype(), Dtype::Bf16);
    assert_eq!(back.metadata["format"], "mlx");
}

#[test]
fn missing_and_corrupt_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.safetensors");
    assert!(matches!(
        load_safetensors(&missing),
        Err(MlxError::Format(_))
    ));
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}").unwrap();
    assert!(load_safetensors(&bad).is_err());
    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, b"GGUF\x03\x00\x00\x00\x01").unwrap();
    assert!(load_gguf(&truncated).is_err());
}

#[test]
fn raw_bytes_read_back_as_the_same_array_scheduled_lazy_or_strided() {
    let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
    let doubled = a.multiply(&Array::scalar(2.0f32).unwrap()).unwrap();
    let expect = |x: &Array| x.to_vec::<f32>().unwrap();
    // Lazy (never scheduled), scheduled, and a strided view (a transpose).
    let lazy = doubled.clone();
    let scheduled = a.add(&Array::scalar(1.0f32).unwrap()).unwrap();
    mlx::async_eval(&[&scheduled]).unwrap();
    let strided = a.transpose(&[1, 0]).unwrap();
    mlx::eval(&[&strided]).unwrap();
    for x in [&lazy, &scheduled, &strided] {
        let bytes = x.to_bytes().unwrap();
        assert_eq!(bytes.len(), x.nbytes());
        let back = Array::from_bytes(&bytes, &x.shape(), x.dtype()).unwrap();
        assert_eq!(expect(&back), expect(x));
    }
    let half = a.astype(Dtype::Bf16).unwrap();
    let back = Array::from_bytes(&half.to_bytes().unwrap(), &[2, 3], Dtype::Bf16).unwrap();
    assert_eq!(
        back.astype(Dtype::F32).unwrap().to_vec::<f32>().unwrap(),
        [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    );
}
