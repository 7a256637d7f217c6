//! Locates the test data installed by `scripts/test-data.sh` and loads the
//! tokenizers once per test binary; the mlx-lm reference checkpoints
//! (`mlx_lm`) and helpers that run the batch scheduler (`batching`).

#![allow(dead_code, clippy::unwrap_used)]

pub mod batching;
pub mod mlx_lm;

use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

use engine::Tokenizer;

/// `$MLXD_TEST_DATA`, else `<workspace root>/.cache/test-data`. Panics with
/// instructions when the data is missing: these tests never skip.
pub fn data_dir() -> PathBuf {
    let dir = std::env::var_os("MLXD_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/test-data")
        });
    assert!(
        dir.join("ref/chat_templates.json").is_file(),
        "engine test data is missing at {}: run scripts/test-data.sh",
        dir.display()
    );
    dir
}

/// A file or directory inside the test data; panics when it is missing.
pub fn data_path(rel: &str) -> PathBuf {
    let path = data_dir().join(rel);
    assert!(
        path.exists(),
        "{} is missing: run scripts/test-data.sh",
        path.display()
    );
    path
}

fn load(name: &str) -> Arc<Tokenizer> {
    let dir = data_path(&format!("npm/{name}"));
    Arc::new(Tokenizer::from_dir(&dir).unwrap_or_else(|e| panic!("loading {name}: {e}")))
}

pub static QWEN3: LazyLock<Arc<Tokenizer>> = LazyLock::new(|| load("qwen3"));
pub static LLAMA3: LazyLock<Arc<Tokenizer>> = LazyLock::new(|| load("llama3"));
pub static LLAMA2: LazyLock<Arc<Tokenizer>> = LazyLock::new(|| load("llama2"));

/// The reference file written by `scripts/ref/chat_templates.py`.
pub static REFERENCE: LazyLock<serde_json::Value> = LazyLock::new(|| {
    let path = data_path("ref/chat_templates.json");
    let text = std::fs::read_to_string(&path).expect("reference file is readable");
    serde_json::from_str(&text).expect("reference file is JSON")
});
